"""Packed-sequence entry points of the kernels, shared by fastgru.ops and the layers.

Arrays here are already validated, C-contiguous, of one dtype, in packed layout (see _plan.py)
with D directions stacked: weights (D, G, .), states (D, B, .) in sorted-batch order. These
functions allocate the outputs, take temporaries from the workspace pool, resolve the team and
the tasks (_threads.py), hold BLAS at one thread, and make exactly one kernel call.
"""
from __future__ import annotations

import threading

import numpy as np

from fastgru import _threads, _workspace
from fastgru._kernels import _blas, _gru, _lstm, _rows, _runtime, _stream
from fastgru._plan import SeqPlan


def _sorted_lengths(plan: SeqPlan) -> np.ndarray:
    return plan.lengths if plan.identity else plan.lengths[plan.perm]


# One sequence in one direction shorter than this runs on one thread, reading the weights in
# place (_in_place): a team's per-slice weight copies cost more than the steps they
# share. Same run, 2 threads, B = 1, I = 64, inference: LSTM H = 256 T = 4 290 us on the team
# vs 76-82 on one thread, GRU H = 512 T = 16 855 vs 732 us; from T = 64 the team wins.
ONE_ROW_TEAM_MIN_T = 32


def _team(plan: SeqPlan, n_threads, D: int, flops: float, H: int = 0, cols_ok: bool = False):
    team = _threads.resolve(n_threads)
    if plan.B == 1 and D == 1 and plan.T < ONE_ROW_TEAM_MIN_T:
        team = 1
    return _threads.plan_tasks(team, D, _sorted_lengths(plan), plan.N, flops, H, cols_ok)


def fold_gru_bias(b_ih: np.ndarray, b_hh: np.ndarray, reset_after: bool) -> np.ndarray:
    """(D, 3H) x 2 -> (D, 4H): [b_ir+b_hr | b_iz+b_hz | b_in | b_hn] (reset after) or
    [b_ir+b_hr | b_iz+b_hz | b_in+b_hn | 0] (reset before)."""
    D, G = b_ih.shape
    H = G // 3
    out = np.zeros((D, 4 * H), b_ih.dtype)
    out[:, : 2 * H] = b_ih[:, : 2 * H] + b_hh[:, : 2 * H]
    if reset_after:
        out[:, 2 * H : 3 * H] = b_ih[:, 2 * H :]
        out[:, 3 * H :] = b_hh[:, 2 * H :]
    else:
        out[:, 2 * H : 3 * H] = b_ih[:, 2 * H :] + b_hh[:, 2 * H :]
    return out


def transposed(name: str, w: np.ndarray) -> np.ndarray:
    """Forward GEMMs take weights transposed (see _gru.pyx): (D, G, K) -> (D, K, G) in a
    workspace buffer; name "wt_ih" gives the 2-D (K, D*G) form for the one input GEMM."""
    D, G, K = w.shape
    if name == "wt_ih":
        out = _workspace.get(name, (K, D * G), w.dtype)
        _rows.transpose(w.reshape(D * G, K), out)
    else:
        out = _workspace.get(name, (D, K, G), w.dtype)
        for d in range(D):
            _rows.transpose(w[d], out[d])
    return out


# Transposing the weights (G*(I+H) strided moves) pays for itself only over several steps;
# over two already on one thread for float32 batches of more than 32 rows, or of more than 16
# whose untransposed products of W_hh would go to OpenBLAS's sgemm(N, T) (_blas.nt_route).
# Same run, T = 2, 1 thread, copy vs in place: LSTM H = 128, B = 64 0.33 vs 0.36 ms; LSTM
# H = 384, B = 33 1.42 vs 1.31 (dot_rows), B = 17 0.80 vs 1.04 (when it went to sgemm). Not on
# a team: the copy is not shared (GRU H = 64, B = 128 at 2 threads: 0.14 -> 0.20 ms).
TRANSPOSE_MIN_T = 3
COPY_AT_TWO_MIN_ROWS = 33


def _copy_at_two(plan: SeqPlan, w_hh: np.ndarray, team: int) -> bool:
    D, G, K = w_hh.shape
    return (plan.T == TRANSPOSE_MIN_T - 1 and team <= 1 and w_hh.dtype == np.float32
            and plan.B > 16 and (plan.B >= COPY_AT_TWO_MIN_ROWS
                                 or _blas.nt_route(plan.B, G, K) == "blas"))


def _panels(name: str, m: np.ndarray) -> np.ndarray:
    """m (D, R, C), any strides, split along C into panels of PANEL columns: (D, n*R, PANEL)
    with out[d, p*R + r, j] = m[d, r, p*PANEL + j], zero past C, in workspace `name`. One
    pass over m (a transpose per panel when m is a transposed view), like transposed()."""
    D, R, C = m.shape
    pw = _blas.PACK_PANEL
    n = -(-C // pw)
    out = _workspace.get(name, (D, n, R, pw), m.dtype)
    for d in range(D):
        _panels_into(out[d], m[d])
    return out.reshape(D, n * R, pw)


def _panels_into(out: np.ndarray, m: np.ndarray) -> None:
    """out (n, R, PANEL)[p, r, j] = m (R, C)[r, p*PANEL + j], zero past C."""
    n, R, pw = out.shape
    C = m.shape[1]
    full = C // pw
    if m.strides[0] == m.itemsize and R > 1:  # m = W.T of a row-major W: a transpose per panel
        mt = m.T
        for p in range(n):
            _rows.transpose(mt[p * pw : (p + 1) * pw], out[p, :, : min(pw, C - p * pw)])
        if n > full:
            out[full, :, C - full * pw:] = 0
        return
    if full:
        np.copyto(out[:full], m[:, : full * pw].reshape(R, full, pw).transpose(1, 0, 2))
    if n > full:
        r = C - full * pw
        np.copyto(out[full, :, :r], m[:, full * pw:])
        out[full, :, r:] = 0


def pack_panels(w: np.ndarray) -> np.ndarray:
    """Recurrent weights (D, G, K) as the forward's packed W.T (mm_packed in _matmul.pxd):
    (D, n*K, PANEL) with P[d, p*K + k, j] = w[d, p*PANEL + j, k]; rows of a panel become
    adjacent (at S4 they were a 4 KiB page apart)."""
    return _panels("wt_hh", w.transpose(0, 2, 1))


def pack_panels_bwd(w: np.ndarray) -> np.ndarray:
    """Recurrent weights (D, G, K) for the backward's dh = dG @ W_hh (K_mm = G rows, N = K
    columns) packed in panels: (D, n*G, PANEL) with P[d, p*G + g, j] = w[d, g, p*PANEL + j]."""
    return _panels("wp_hh", w)


def pack_cols(w_hh: np.ndarray, slices: int, bwd: bool = False) -> np.ndarray:
    """One direction's recurrent weights (1, G, H) for cols mode's per-slice products (slices
    share each step; offsets: _common.pxd cols_panels), each slice's part (units j0 .. j1-1 of
    _common.pxd split) in panels of PANEL columns, zero-padded: forward, for each gate g, the
    columns g*H + j0 .. g*H + j1 - 1 of W_hh.T (H rows); bwd, the columns j0 .. j1 - 1 of W_hh
    (G rows). Unpacked, a slice reads a few hundred bytes per row of a matrix whose rows are
    G or H floats apart (4 KiB for the LSTM's W_hh.T at H = 256: L1 set conflicts); packed,
    each slice streams its weights in order."""
    _, G, H = w_hh.shape
    pw = _blas.PACK_PANEL
    bounds = [H * k // slices for k in range(slices + 1)]
    spans = list(zip(bounds[:-1], bounds[1:], strict=True))
    npan = [-(-(b - a) // pw) for a, b in spans]
    out = _workspace.get("wcb_hh" if bwd else "wc_hh", (1, sum(npan) * G, pw), w_hh.dtype)
    pos = 0
    for (a, b), n in zip(spans, npan, strict=True):
        if bwd:
            _panels_into(out[0, pos : pos + n * G].reshape(n, G, pw), w_hh[0, :, a:b])
            pos += n * G
            continue
        for g0 in range(0, G, H):
            _panels_into(out[0, pos : pos + n * H].reshape(n, H, pw), w_hh[0, g0 + a : g0 + b].T)
            pos += n * H
    return out


def packs_bwd(w_hh: np.ndarray, ok: bool, rows: int = 5) -> bool:
    """Whether the backward's per-step product dh = dG @ W_hh runs on packed panels: float32,
    a full-width variant (reset-after GRU / LSTM, not cols), the own kernel's level, N = K of
    w_hh >= 64 and a product that is not tiny. Any G (K-blocked in the kernel): at S4's
    G = 4096 OpenBLAS was the alternative. rows: the most rows of a task (M > 4 stands for
    any batch but where big weights go to BLAS from many rows: _matmul.pxd mm_own)."""
    D, G, K = w_hh.shape
    return (ok and w_hh.dtype == np.float32 and _blas.mm_route(5, K, min(G, 1024)) == "own"
            and not _blas.mm_big(rows, K, G))


def packs(w_hh: np.ndarray, B: int, ok: bool, rows: int | None = None) -> bool:
    """Whether the forward's per-step product runs on packed weights: float32, every full-width
    product on the own kernel (_matmul.pxd mm_own; M > 4 stands for any batch; the big-weight
    rule by the most rows of a task), and the caller's variant uses full-width products
    (reset-after GRU / LSTM, tasks not cols mode)."""
    D, G, K = w_hh.shape
    return (ok and w_hh.dtype == np.float32
            and _blas.mm_route(max(B, 5), G, K, big=False) == "own"
            and not _blas.mm_big(B if rows is None else rows, G, K))


# Input projection per step (gx_step in the forward kernels): each task multiplies its rows of
# each step by W_ih into its scratch just before the gates, instead of one GEMM over all T*B
# rows whose output (gx: 49 MB at S2's GRU) makes a round trip through memory. Same sums in the
# same order, so the same bits. Same-run A/B (bench shapes through ops, 1 / 2 threads):
# inference GRU S2 1.13 / 1.12x, S3 1.07 / 1.05x; LSTM S1 1.11 / 1.21x, S2 1.16 / 1.10x,
# S3 1.05 / 1.04x; training 0.99-1.06x. Not where W_ih is re-read from L3 every step (S4's
# 6 MB: 0.95x) or few rows share it (B = 1: 0.84x).
GX_STEP_MAX_BYTES = 1 << 20
GX_STEP_MIN_ROWS = 4


def task_rows(tasks: np.ndarray) -> int:
    """The most batch rows of one task (tasks: rows (direction, first row, end row))."""
    return int((tasks[:, 2] - tasks[:, 1]).max())


def gx_per_step(I: int, dt: np.dtype, G: int, tasks: np.ndarray, cols: bool,  # noqa: E741
                wt: bool) -> bool:
    """Whether the forward projects x per step (see GX_STEP_MAX_BYTES): float32 on the own
    product kernel, tasks mode with transposed weights, W_ih (I, G) small enough for L2, and
    at least GX_STEP_MIN_ROWS rows in every task."""
    if cols or not wt or dt != np.float32 or I * G * 4 > GX_STEP_MAX_BYTES:
        return False
    rows = int((tasks[:, 2] - tasks[:, 1]).min())
    # the kernels route the per-step projection as the whole projection (mm_proj)
    return rows >= GX_STEP_MIN_ROWS and _blas.mm_route(max(rows, 256), G, I) == "own"


def cols_slices(team: int) -> int:
    """Slices per step in cols mode: one per thread of the team (tests vary it: the kernels
    then give a thread several slices, or leave threads idle)."""
    return team


# Few rows per step over a short sequence read the weights in place (PyTorch layout) instead of
# copying them transposed (and packed): products of 1-16 rows then run on dot_rows
# (_matmul.pxd mm_nt). Its steps are slower than the packed product's from B = 2 (LSTM
# H = 384, B = 5, 1 thread: 95 vs 66 us) but the copy costs 0.17-0.2 ms at 1 thread and
# 0.26-0.33 ms at 2 (2.4 MB there). Longest T read in place, by team and rows per step (B up
# to the key), from one same-run sweep of copy vs in place (GRU H = 128, 256, 512, LSTM
# H = 384, B = 1, 2, 5, 16, T = 3-512, uni- and bidirectional; the limit is the first T
# measured where the copy won). E.g. 2 threads, LSTM H = 384, B = 5: T = 3 0.457 -> 0.210 ms,
# T = 8 0.691 -> 0.513; GRU H = 512, B = 2, T = 32: 1.100 -> 0.885 ms. One sequence on one
# thread: H = 256, T = 16 399 -> 181 us, T = 256 2.68 -> 2.38 ms; over 1000 steps the packed
# product wins (H = 512: 39.1 vs 43.5 ms; S6 the same either way).
IN_PLACE_MAX_T = {1: ((1, 511), (2, 15), (16, 7)), 2: ((1, 255), (2, 63), (8, 31), (16, 15))}
ONE_ROW_MAX_T = IN_PLACE_MAX_T[1][0][1] + 1  # (tests)


def _in_place(plan: SeqPlan, w_hh: np.ndarray, team: int) -> bool:
    """Whether the forward reads the weights in place at T >= TRANSPOSE_MIN_T (above): float32
    on a SIMD level with dot_rows, at most 16 rows per step, T within IN_PLACE_MAX_T."""
    if w_hh.dtype != np.float32 or plan.B > 16 or _runtime.simd_name() == "base":
        return False
    for rows, max_t in IN_PLACE_MAX_T[1 if team <= 1 else 2]:
        if plan.B <= rows:
            return plan.T <= max_t
    return False


def forward_weights(plan: SeqPlan, w_ih, w_hh, w_hr=None, pack_ok: bool = False,
                    cols_slices: int = 0, team: int = 0, rows: int | None = None):
    """(wt flag, w_ih, w_hh, w_hr, packed) as the forward kernels take them: transposed copies
    for sequences of TRANSPOSE_MIN_T steps or more (two where _copy_at_two says so; w_hh
    packed in panels where packs() says so, or per slice in cols mode: cols_slices > 0,
    float32), else (also for short sequences of few rows: _in_place) the PyTorch layout as is
    (no copy). rows: the most rows of a task (default: the batch)."""
    if ((plan.T >= TRANSPOSE_MIN_T or _copy_at_two(plan, w_hh, team))
            and not _in_place(plan, w_hh, team)):
        if cols_slices and w_hh.dtype == np.float32:
            whh, packed = pack_cols(w_hh, cols_slices), True
        else:
            packed = packs(w_hh, plan.B, pack_ok, rows)
            whh = pack_panels(w_hh) if packed else transposed("wt_hh", w_hh)
        return (True, transposed("wt_ih", w_ih), whh,
                None if w_hr is None else transposed("wt_hr", w_hr), packed)
    D, G, I = w_ih.shape
    return False, w_ih.reshape(D * G, I), w_hh, w_hr, False


def backward_weights(plan: SeqPlan, w_hh: np.ndarray, team: int, cols: bool,
                     full_width: bool, rows: int = 5) -> tuple[int, np.ndarray | None]:
    """(cols slices, packed W_hh or None) for the backward's per-step product dh = dG @ W_hh:
    in cols mode each slice's columns (pack_cols, float32, TRANSPOSE_MIN_T steps or more, as
    in the forward), else panels where packs_bwd says so (TRANSPOSE_MIN_T steps or more)."""
    if cols:
        nsl = cols_slices(team)
        ok = w_hh.dtype == np.float32 and plan.T >= TRANSPOSE_MIN_T
        return nsl, pack_cols(w_hh, nsl, bwd=True) if ok else None
    # packing is one pass over W_hh: worth it only over several steps (T = 1 training at S5:
    # the pack was 33 of 193 us)
    pack = plan.T >= TRANSPOSE_MIN_T and packs_bwd(w_hh, full_width, rows)
    return 0, pack_panels_bwd(w_hh) if pack else None


# Inference over a single step of a small batch (T = 1: streaming through ops or the layers)
# runs on the stepper kernel (_kernels/_stream.pyx) instead of the sequence kernels: no
# memoryview set-up of a dozen buffers, no workspaces, and the weights split by units over the
# team (measured at S5, B=1, I=64, H=256, 2 threads: ops 36 -> 28 us GRU, 40 -> 29 us LSTM).
STEP_MAX_B = 8
_ZEROS: dict = {}


def zeros(n: int, dt) -> np.ndarray:
    """A shared read-only zero vector (biases given as None)."""
    z = _ZEROS.get((n, dt))
    if z is None:
        z = _ZEROS[(n, dt)] = np.zeros(n, dt)
        z.flags.writeable = False
    return z


# Steppers of recent weights, per Python thread (a stepper's call state is not shared): a new
# stepper and its scratch cost ~3.5 us of a 16 us step (S5, 1 thread).
_STEPPERS = threading.local()
_STEPPERS_KEPT = 4


def _stepper(kind: int, w_ih, w_hh, b_ih, b_hh, w_hr, reset_after: bool, nt: int):
    cache = getattr(_STEPPERS, "d", None)
    if cache is None:
        cache = _STEPPERS.d = {}
    key = _stream.weights_key(kind, w_ih, w_hh, w_hr, reset_after, nt)
    st = cache.get(key)
    if st is None:
        st = _stream.Stepper(kind, w_ih, w_hh, b_ih, b_hh, w_hr, reset_after, nt)
        if len(cache) >= _STEPPERS_KEPT:
            del cache[next(iter(cache))]
        cache[key] = st
    else:
        st.set_bias(b_ih, b_hh)
    return st


def clear_steppers() -> None:
    """Drop this thread's kept steppers (fastgru.ops.clear_step_cache)."""
    cache = getattr(_STEPPERS, "d", None)
    if cache is not None:
        cache.clear()


def one_step(kind: int, x, w_ih, w_hh, b_ih, b_hh, w_hr, reset_after: bool, n_threads,
             h, c=None):
    """One inference step on the stepper kernel: GRU (kind 0) h', LSTM (kind 1) (h', c').
    2-D C-contiguous arrays of one dtype, weights in PyTorch layout (the caller validated)."""
    st = _stepper(kind, w_ih, w_hh, b_ih, b_hh, w_hr, reset_after, _threads.resolve(n_threads))
    if _threads.c_hold_active():
        return st.step(x, h) if kind == 0 else st.step(x, h, c)
    with _threads.kernel_guard():
        return st.step(x, h) if kind == 0 else st.step(x, h, c)


def _single_step(plan: SeqPlan, D: int, training: bool) -> bool:
    return not training and D == 1 and plan.T == 1 and plan.B <= STEP_MAX_B


def _step_gru(x, w_ih, w_hh, bias, h, reset_after, n_threads):
    """T = 1 through the stepper: h (1, B, H) updated in place, returns y (B, H)."""
    G = w_hh.shape[1]
    H = G // 3
    # the stepper folds b_ih + b_hh itself (reset after: b_hn apart): un-fold bias (1, 4H)
    b_ih = bias[0, : 3 * H]
    if reset_after:
        b_hh = np.concatenate([zeros(2 * H, bias.dtype), bias[0, 3 * H:]])
    else:
        b_hh = zeros(G, bias.dtype)
    y = one_step(0, x, w_ih[0], w_hh[0], b_ih, b_hh, None, reset_after, n_threads, h[0])
    h[0] = y
    return y


def _step_lstm(x, w_ih, w_hh, w_hr, bias, h, cs, n_threads):
    """T = 1 through the stepper: h (1, B, P), cs (1, B, H) updated in place, returns y."""
    y, c = one_step(1, x, w_ih[0], w_hh[0], bias[0], zeros(bias.shape[1], bias.dtype),
                    None if w_hr is None else w_hr[0], True, n_threads, h[0], cs[0])
    h[0] = y
    cs[0] = c
    return y


class PackedCache:
    """What a backward needs from a training forward (one layer, D directions)."""

    __slots__ = ("cell", "plan", "x", "w_ih", "w_hh", "w_hr", "cache", "hprev", "m", "rev",
                 "reset_after", "n_threads", "H", "P", "D")
    cell: str
    plan: SeqPlan
    x: np.ndarray
    w_ih: np.ndarray
    w_hh: np.ndarray
    w_hr: np.ndarray | None
    cache: np.ndarray
    hprev: np.ndarray
    m: np.ndarray | None
    rev: np.ndarray
    reset_after: bool
    n_threads: int | None
    H: int
    P: int
    D: int

    def __init__(self, **kw):
        for k in self.__slots__:
            setattr(self, k, kw.get(k))

    def __del__(self):  # the next forward reuses these pages
        _workspace.give(self.cache, self.hprev, self.m, self.x)


def keep_input(xp: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The packed input a training cache may hold: a pooled copy when xp is (a view of) the
    caller's x, so refilling that buffer before backward() cannot change the gradients (torch
    raises for such an in-place change; a copy makes it harmless). Copying costs ~0.1% of a
    training step."""
    if not np.shares_memory(xp, x):
        return xp
    out = _workspace.take(xp.shape, xp.dtype)
    np.copyto(out, xp)
    return out


# False: always pack before and unpack after (tests and A/B timings compare the two routes).
DIRECT_ROWS = True


def _uninitialized(shape: tuple[int, int], dt) -> np.ndarray:
    """An output the kernel writes every row of (tests poison it)."""
    return np.empty(shape, dt)


class PaddedIO:
    """How a forward meets the padded (T, B, F) layout when the plan is not the identity: the
    kernels gather x's rows per step (xrow, with gx_step) and write y's rows straight to the
    padded output (yrow, tasks mode), instead of a packing pass before and an unpacking pass
    after (with lengths at S2: ~2.7 ms of cold row moves in a 40 ms inference)."""

    def __init__(self, plan: SeqPlan, x: np.ndarray, padded_in: bool, padded_out: bool,
                 gxs: bool, cols: bool, F: int, dt):
        self.plan, self.padded_out = plan, padded_out
        self.xrow = self.yrow = None
        if padded_in and gxs and x.flags.c_contiguous and DIRECT_ROWS:
            self.x = x.reshape(plan.T * plan.B, x.shape[2])
            self.xrow = plan.src
        else:
            self.x = plan.pack(x) if padded_in else x
        self.ypad = None
        if padded_out and not cols and DIRECT_ROWS:
            # padding rows zeroed by the kernel's team once its tasks are done (a np.zeros of
            # the whole output was a 16 MB memset at S2, 0.7 ms of a 20 ms call at 2 threads)
            self.y = _uninitialized((plan.T * plan.B, F), dt)
            self.yrow, self.ypad = plan.src, plan.pad
        else:
            self.y = np.empty((plan.N, F), dt)

    def scratch_width(self, B: int, per_row: int) -> int:
        """Per-thread scratch: per_row values per batch row, plus an x row when gathering."""
        return B * (per_row + (self.x.shape[1] if self.xrow is not None else 0))

    def result(self) -> np.ndarray:
        """y as asked for: packed (N, F), or padded (T, B, F) with zeros at padding."""
        if not self.padded_out:
            return self.y
        if self.yrow is not None:
            return self.y.reshape(self.plan.T, self.plan.B, -1)
        return self.plan.unpack(self.y)


def gru_forward(x: np.ndarray, plan: SeqPlan, w_ih: np.ndarray, w_hh: np.ndarray,
                bias: np.ndarray, h: np.ndarray, rev: np.ndarray, reset_after: bool,
                training: bool, n_threads: int | None, padded_in: bool = False,
                padded_out: bool = False):
    """y (N, D*H) and a PackedCache (or None). h (D, B, H): h0 in, h_n out, sorted order.
    bias: folded (D, 4H), see fold_gru_bias. padded_in (inference, plan not the identity): x
    is the padded (T, B, I) batch; padded_out (plan not the identity): y comes back padded
    (T, B, D*H), zeros at padding (see PaddedIO)."""
    D, G, I = w_ih.shape
    H = G // 3
    N, B, dt = plan.N, plan.B, x.dtype
    assert not (padded_in and training)  # a training cache holds the packed x
    if _single_step(plan, D, training) and not (padded_in or padded_out):
        return _step_gru(x, w_ih, w_hh, bias, h, reset_after, n_threads), None
    team, tasks, cols = _team(plan, n_threads, D, 2.0 * N * D * G * (I + H), H, reset_after)
    cache: np.ndarray | None = None
    hprev: np.ndarray | None = None
    if training:
        cache = _workspace.take((N, D * 4 * H), dt)
        hprev = _workspace.take((N, D * H), dt)
    hbuf = _workspace.get("hbuf", (2, B, H), dt) if cols else None
    nsl = cols_slices(team) if cols else 0
    wt, fw_ih, fw_hh, _, packed = forward_weights(plan, w_ih, w_hh,
                                                  pack_ok=reset_after and not cols,
                                                  cols_slices=nsl, team=team,
                                                  rows=task_rows(tasks))
    gxs = gx_per_step(I, x.dtype, G, tasks, cols, wt)
    io = PaddedIO(plan, x, padded_in, padded_out, gxs, cols, D * H, dt)
    x = io.x
    gx = _workspace.get("gx", (1, D * G) if gxs else (N, D * G), dt)
    scratch = _workspace.get("scratch", (team, io.scratch_width(B, (8 if gxs else 5) * H)), dt)
    with _threads.kernel_guard():
        _gru.forward(x, fw_ih, fw_hh, bias, h, io.y, gx, cache, hprev, scratch,
                     plan.bsz, plan.off, rev, tasks, reset_after, team, wt, hbuf, packed, gxs,
                     io.xrow, io.yrow, cols_slices=nsl, ypad=io.ypad)
    y = io.result()
    if not training:
        return y, None
    return y, PackedCache(cell="gru", plan=plan, x=x, w_ih=w_ih, w_hh=w_hh, cache=cache,
                          hprev=hprev, rev=rev, reset_after=reset_after, n_threads=n_threads,
                          H=H, P=H, D=D)


def gru_backward(c: PackedCache, dy: np.ndarray | None, dh: np.ndarray,
                 grads: dict[str, np.ndarray] | None = None, accumulate: bool = False):
    """dx (N, I) and the parameter gradients (D-stacked). dh (D, B, H): dh_n in, dh0 out.
    grads: arrays to write (or, with accumulate, add) into; allocated when None."""
    plan, x = c.plan, c.x
    D, G, I = c.w_ih.shape
    H, N, B, dt = c.H, plan.N, plan.B, x.dtype
    team, tasks, cols = _team(plan, c.n_threads, D, 4.0 * N * D * G * (I + H), H, c.reset_after)
    if grads is None:
        grads = dict(w_ih=np.empty_like(c.w_ih), w_hh=np.empty_like(c.w_hh),
                     b_ih=np.empty((D, G), dt), b_hh=np.empty((D, G), dt))
        accumulate = False
    dgx = _workspace.get("gx", (N, D * G), dt)  # the forward's input projection is free now
    dan = _workspace.get("dan", (N, D * H), dt) if c.reset_after else None
    dx = np.empty((N, I), dt)
    scratch = _workspace.get("scratch", (team, B * 5 * H), dt)
    nsl, wp = backward_weights(plan, c.w_hh, team, cols, c.reset_after, task_rows(tasks))
    with _threads.kernel_guard():
        _gru.backward(x, c.w_ih, c.w_hh, c.cache, c.hprev, dy, dh, dgx, dan, dx,
                      grads["w_ih"], grads["w_hh"], grads["b_ih"], grads["b_hh"], scratch,
                      plan.bsz, plan.off, c.rev, tasks, c.reset_after, accumulate, team, cols,
                      wp, cols_slices=nsl)
    return dx, grads


def lstm_forward(x: np.ndarray, plan: SeqPlan, w_ih: np.ndarray, w_hh: np.ndarray,
                 w_hr: np.ndarray | None, bias: np.ndarray, h: np.ndarray, cs: np.ndarray,
                 rev: np.ndarray, training: bool, n_threads: int | None,
                 padded_in: bool = False, padded_out: bool = False):
    """y (N, D*P) and a PackedCache (or None). h (D, B, P), cs (D, B, H): states in/out,
    sorted order. bias (D, 4H) = b_ih + b_hh. w_hr (D, P, H) or None. padded_in, padded_out:
    as gru_forward's."""
    D, G, I = w_ih.shape
    H = G // 4
    P = w_hh.shape[2]
    N, B, dt = plan.N, plan.B, x.dtype
    assert not (padded_in and training)  # a training cache holds the packed x
    if _single_step(plan, D, training) and not (padded_in or padded_out):
        return _step_lstm(x, w_ih, w_hh, w_hr, bias, h, cs, n_threads), None
    flops = 2.0 * N * D * (G * (I + P) + (P * H if w_hr is not None else 0))
    team, tasks, cols = _team(plan, n_threads, D, flops, H, w_hr is None)
    cache: np.ndarray | None = None
    hprev: np.ndarray | None = None
    m: np.ndarray | None = None
    if training:
        cache = _workspace.take((N, D * 6 * H), dt)
        hprev = _workspace.take((N, D * P), dt)
        m = _workspace.take((N, D * H), dt) if w_hr is not None else None
    hbuf = _workspace.get("hbuf", (2, B, H), dt) if cols else None
    nsl = cols_slices(team) if cols else 0
    wt, fw_ih, fw_hh, fw_hr, packed = forward_weights(plan, w_ih, w_hh, w_hr, pack_ok=not cols,
                                                      cols_slices=nsl, team=team,
                                                      rows=task_rows(tasks))
    gxs = gx_per_step(I, x.dtype, G, tasks, cols, wt)
    io = PaddedIO(plan, x, padded_in, padded_out, gxs, cols, D * P, dt)
    x = io.x
    gx = _workspace.get("gx", (1, D * G) if gxs else (N, D * G), dt)
    scratch = _workspace.get("scratch", (team, io.scratch_width(B, (9 if gxs else 5) * H)), dt)
    with _threads.kernel_guard():
        _lstm.forward(x, fw_ih, fw_hh, fw_hr, bias, h, cs, io.y, gx, cache, hprev, m, scratch,
                      plan.bsz, plan.off, rev, tasks, team, wt, hbuf, packed, gxs, io.xrow,
                      io.yrow, cols_slices=nsl, ypad=io.ypad)
    y = io.result()
    if not training:
        return y, None
    return y, PackedCache(cell="lstm", plan=plan, x=x, w_ih=w_ih, w_hh=w_hh, w_hr=w_hr,
                          cache=cache, hprev=hprev, m=m, rev=rev, n_threads=n_threads,
                          H=H, P=P, D=D)


def lstm_backward(c: PackedCache, dy: np.ndarray | None, dh: np.ndarray, dc: np.ndarray,
                  grads: dict[str, np.ndarray] | None = None, accumulate: bool = False):
    """dx (N, I) and parameter gradients. dh (D, B, P), dc (D, B, H): final-state gradients in,
    initial-state gradients out."""
    plan, x = c.plan, c.x
    D, G, I = c.w_ih.shape
    H, P, N, B, dt = c.H, c.P, plan.N, plan.B, x.dtype
    flops = 4.0 * N * D * (G * (I + P) + (P * H if c.w_hr is not None else 0))
    team, tasks, cols = _team(plan, c.n_threads, D, flops, H, c.w_hr is None)
    if grads is None:
        grads = dict(w_ih=np.empty_like(c.w_ih), w_hh=np.empty_like(c.w_hh),
                     b_ih=np.empty((D, G), dt), b_hh=np.empty((D, G), dt))
        if c.w_hr is not None:
            grads["w_hr"] = np.empty_like(c.w_hr)
        accumulate = False
    dg = _workspace.get("gx", (N, D * G), dt)  # the forward's input projection is free now
    dhp = _workspace.get("dhp", (N, D * P), dt) if c.w_hr is not None else None
    dx = np.empty((N, I), dt)
    scratch = _workspace.get("scratch", (team, B * 5 * H), dt)
    nsl, wp = backward_weights(plan, c.w_hh, team, cols, True, task_rows(tasks))
    with _threads.kernel_guard():
        _lstm.backward(x, c.w_ih, c.w_hh, c.w_hr, c.cache, c.hprev, c.m, dy, dh, dc, dg, dhp, dx,
                       grads["w_ih"], grads["w_hh"], grads.get("w_hr"), grads["b_ih"],
                       grads["b_hh"], scratch, plan.bsz, plan.off, c.rev, tasks, accumulate, team,
                       cols, wp, cols_slices=nsl)
    return dx, grads
