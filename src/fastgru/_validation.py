"""Argument checks at the Python boundary: every public entry point validates here, so the
kernels can trust their inputs. Errors name the argument and the expected shape or dtype.

Letters: T time steps, B batch, I input features, H hidden units, G = 3H (GRU) or 4H (LSTM),
P = projection size (LSTM proj_size; P = H without projection).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
BLAS_INT_MAX = 2**31 - 1  # scipy's cython_blas takes 32-bit ints (LP64)

GATES = {"gru": 3, "lstm": 4}


def float_array(name: str, a: Any, dtype: np.dtype | None = None,
                lists_as: np.dtype | None = None) -> np.ndarray:
    """`a` as a float32/float64 ndarray (no copy when already one); TypeError otherwise.
    A Python list or tuple becomes an array of `lists_as` (or `dtype`): it has no dtype of its
    own, and NumPy's float64 default would not match a float32 layer."""
    if a is None:
        raise TypeError(f"{name} must be an array, got None")
    to = lists_as if lists_as is not None else dtype
    if isinstance(a, (list, tuple)) and to is not None:
        try:
            a = np.asarray(a, dtype=to)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be a numeric array: {exc}") from None
    if not isinstance(a, np.ndarray):
        if hasattr(a, "detach") and hasattr(a, "cpu"):  # a torch tensor: take its data
            t = a.detach().cpu()
            try:
                a = t.numpy()
            except TypeError:  # bfloat16 and friends have no NumPy dtype (not upcast: as
                # float16, the caller chooses the precision)
                raise TypeError(f"{name} must be float32 or float64, got torch dtype "
                                f"{str(t.dtype).removeprefix('torch.')}") from None
        try:
            a = np.asarray(a)
        except Exception as exc:  # ragged lists and other non-arrays
            raise TypeError(f"{name} must be a numeric array: {exc}") from None
    if a.dtype not in FLOAT_DTYPES:
        if a.dtype.kind == "f" and not a.dtype.isnative and a.dtype.newbyteorder() in FLOAT_DTYPES:
            raise TypeError(f"{name} must be float32 or float64 in this machine's byte order, "
                            f"got dtype {a.dtype.str} (convert with .astype("
                            f"{a.dtype.newbyteorder().name!r}))")
        raise TypeError(f"{name} must be float32 or float64, got dtype {a.dtype}")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(
            f"{name} has dtype {a.dtype} but x is {dtype}: all arrays must share one dtype"
        )
    return a


def contiguous(a: np.ndarray) -> np.ndarray:
    """C-contiguous (copies non-contiguous views; read-only arrays are fine as they are)."""
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def check_shape(name: str, a: np.ndarray, shape: tuple, desc: str) -> None:
    if a.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {desc} = {tuple(shape)}, got {a.shape}")


def check_n_threads(n_threads: Any) -> int | None:
    if n_threads is None:
        return None
    if isinstance(n_threads, (bool, np.bool_)) or not isinstance(n_threads, (int, np.integer)):
        raise TypeError(f"n_threads must be None or an int, got {type(n_threads).__name__}")
    n = int(n_threads)
    if n == 0 or n < -1 or n > MAX_THREADS:
        raise ValueError(f"n_threads must be 1 to {MAX_THREADS}, or -1 for all cores, or None; "
                         f"got {n}")
    return n


# Far above any machine's cores; a bigger team is a typo (2**31 asked for 40 TiB of scratch).
MAX_THREADS = 4096


def check_lengths(lengths: Any, T: int, B: int) -> np.ndarray | None:
    """lengths as int64 (B,) with 1 <= length <= T, or None."""
    if lengths is None:
        return None
    if hasattr(lengths, "detach") and hasattr(lengths, "cpu"):
        lengths = lengths.detach().cpu().numpy()
    try:
        arr = np.asarray(lengths)
    except Exception as exc:
        raise TypeError(f"lengths must be an integer array of shape (B,): {exc}") from None
    if arr.dtype == np.bool_:
        raise TypeError("lengths must be integers, got booleans")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise ValueError("lengths must be finite integers, got NaN or inf")
        if not np.all(arr == np.round(arr)):
            raise ValueError("lengths must be whole numbers")
    elif arr.dtype.kind not in "iu":
        raise TypeError(f"lengths must be an integer array, got dtype {arr.dtype}")
    if arr.shape != (B,):
        raise ValueError(f"lengths must have shape (B,) = ({B},), got {arr.shape}")
    if B == 0:
        return arr.astype(np.int64)
    lo, hi = int(arr.min()), int(arr.max())  # before the cast: uint64 above 2**63 would wrap
    if lo < 1 or hi > T:
        def show(v: int) -> str:  # integers as given; a float such as 1e300 shortly
            return f"{float(v):.3g}" if arr.dtype.kind == "f" and abs(v) >= 10**15 else str(v)
        raise ValueError(f"lengths must lie in [1, T] = [1, {T}], got values in "
                         f"[{show(lo)}, {show(hi)}]")
    return arr.astype(np.int64)


def check_int(name: str, v: Any, lo: int) -> int:
    """v as an int >= lo (bools and floats refused); ValueError naming `name` otherwise."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    return int(v)


def check_bool(name: str, v: Any) -> bool:
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {v!r}")
    return bool(v)


@dataclass
class RNNArgs:
    """Validated arguments of one (unidirectional) GRU/LSTM call; arrays C-contiguous."""

    cell: str
    x: np.ndarray
    h0: np.ndarray | None
    c0: np.ndarray | None
    w_ih: np.ndarray
    w_hh: np.ndarray
    b_ih: np.ndarray | None
    b_hh: np.ndarray | None
    w_hr: np.ndarray | None
    lengths: np.ndarray | None
    T: int
    B: int
    I: int  # noqa: E741 - the project's dimension letter
    H: int
    P: int

    @property
    def dtype(self) -> np.dtype:
        return self.x.dtype


def rnn_args(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, w_hr=None) -> RNNArgs:
    """Validate the arguments of gru_forward / lstm_forward (ops and reference alike)."""
    Gk = GATES[cell]
    x = float_array("x", x)
    if x.ndim != 3:
        raise ValueError(f"x must have shape (T, B, I), got ndim={x.ndim} shape {x.shape}")
    T, B, I = (int(s) for s in x.shape)
    if T < 1 or B < 1 or I < 1:
        raise ValueError(f"x must have T, B, I >= 1, got shape (T, B, I) = {x.shape}")
    dt = x.dtype
    w_hh = float_array("w_hh", w_hh, dt)
    if w_hh.ndim != 2:
        raise ValueError(f"w_hh must have shape ({Gk}H, H), got {w_hh.shape}")
    P = int(w_hh.shape[1])
    if w_hr is not None:
        w_hr = float_array("w_hr", w_hr, dt)
        if cell != "lstm":
            raise ValueError("w_hr (projection) exists for LSTM only")
        if w_hr.ndim != 2 or w_hr.shape[0] != P:
            raise ValueError(
                f"w_hr must have shape (P, H) with P = w_hh.shape[1] = {P}, got {w_hr.shape}")
        H = int(w_hr.shape[1])
        if P >= H:
            raise ValueError(f"projection size P={P} must be smaller than hidden size H={H}")
    else:
        H = P
    if H < 1:
        raise ValueError(f"hidden size must be >= 1, got w_hh shape {w_hh.shape}")
    G = Gk * H
    if w_hr is not None and w_hh.shape[0] != G:
        raise ValueError(f"w_hh has {w_hh.shape[0]} rows but w_hr of shape (P, H) = {w_hr.shape} "
                         f"needs {Gk}H = {G}")
    check_shape("w_hh", w_hh, (G, P), f"({Gk}H, P)" if w_hr is not None else
                f"({Gk}H, H) for H = {P} (its column count)")
    w_ih = float_array("w_ih", w_ih, dt)
    check_shape("w_ih", w_ih, (G, I), f"({Gk}H, I)")
    if b_ih is not None:
        b_ih = contiguous(float_array("b_ih", b_ih, dt))
        check_shape("b_ih", b_ih, (G,), f"({Gk}H,)")
    if b_hh is not None:
        b_hh = contiguous(float_array("b_hh", b_hh, dt))
        check_shape("b_hh", b_hh, (G,), f"({Gk}H,)")
    if h0 is not None:
        h0 = contiguous(float_array("h0", h0, dt))
        check_shape("h0", h0, (B, P), "(B, P)" if w_hr is not None else "(B, H)")
    if c0 is not None:
        c0 = contiguous(float_array("c0", c0, dt))
        check_shape("c0", c0, (B, H), "(B, H)")
    lengths = check_lengths(lengths, T, B)
    check_blas_sizes(T, B, I, H, D=1, cell=cell)
    return RNNArgs(cell, contiguous(x), h0, c0, contiguous(w_ih), contiguous(w_hh), b_ih, b_hh,
                   None if w_hr is None else contiguous(w_hr), lengths, T, B, I, H, P)


def check_blas_sizes(T: int, B: int, I: int, H: int, D: int, cell: str) -> None:  # noqa: E741
    """Every BLAS dimension and leading dimension must fit a 32-bit int."""
    width = max(I, D * 6 * H)  # widest row: the LSTM training cache, D * 6H
    for what, v in (("T*B (rows)", T * B), ("I", I), ("row width", width)):
        if v > BLAS_INT_MAX:
            raise ValueError(
                f"x of shape (T, B, I) = ({T}, {B}, {I}) with H={H}: {what} = {v} exceeds "
                f"2^31-1, the limit of 32-bit BLAS"
            )


def state_or_hx(name: str, state: Any, hx: Any) -> Any:
    """The initial state given as `name` (fastgru) or as hx (PyTorch's keyword), not both."""
    if hx is None:
        return state
    if state is not None:
        raise TypeError(f"give the initial state as {name} or as hx, not both")
    return hx


def describe_state(hx: Any) -> str:
    """How a bad (h, c) state reads in a message: "a tuple of 1 array", "ndarray"."""
    if isinstance(hx, (tuple, list)):
        n = len(hx)
        return f"a {type(hx).__name__} of {n} item" + "s" * (n != 1)
    return type(hx).__name__
