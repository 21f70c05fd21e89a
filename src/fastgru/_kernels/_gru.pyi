"""Type stub of the compiled GRU kernels (see _gru.pyx for the layout contract)."""

import numpy as np

def _select_simd(level: int) -> int: ...
def forward(x: np.ndarray, wt_ih: np.ndarray, wt_hh: np.ndarray, bias: np.ndarray,
            h: np.ndarray, y: np.ndarray, gx: np.ndarray, cache: np.ndarray | None,
            hprev: np.ndarray | None, scratch: np.ndarray, bsz: np.ndarray, off: np.ndarray,
            rev: np.ndarray, tasks: np.ndarray, reset_after: bool, n_threads: int,
            wt: bool = ..., hbuf: np.ndarray | None = ..., packed: bool = ...,
            gx_step: bool = ..., xrow: np.ndarray | None = ...,
            yrow: np.ndarray | None = ..., cols_slices: int = ...,
            ypad: np.ndarray | None = ...) -> None: ...
def backward(x: np.ndarray, w_ih: np.ndarray, w_hh: np.ndarray, cache: np.ndarray,
             hprev: np.ndarray, dy: np.ndarray | None, dh: np.ndarray, dgx: np.ndarray,
             dgh: np.ndarray | None, dx: np.ndarray, dw_ih: np.ndarray, dw_hh: np.ndarray,
             db_ih: np.ndarray, db_hh: np.ndarray, scratch: np.ndarray, bsz: np.ndarray,
             off: np.ndarray, rev: np.ndarray, tasks: np.ndarray, reset_after: bool,
             accumulate: bool, n_threads: int, cols: bool = ...,
             wp_hh: np.ndarray | None = ..., cols_slices: int = ...) -> None: ...

def _set_mm_own(level: int, max_k: int, big_kn: int) -> None: ...
def _last_bwd_chunk() -> int: ...
def _set_bwd_chunk(rows: int, max_w: int) -> tuple[int, int]: ...
