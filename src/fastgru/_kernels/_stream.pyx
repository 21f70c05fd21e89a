# cython: language_level=3
"""Streaming single steps (GRUCell / LSTMCell / layer.step) with the least possible overhead.

Design
  What: one time step h' = cell(x, h) for a small batch, inference only, as used token by
    token or sample by sample. At B = 1 a step is two matrix-vector products whose cost is
    streaming the weights (GRU I=64, H=256: 983 KB) through the cache, plus the gate math.
  Layout: weights in PyTorch layout as given (w_ih (G, I), w_hh (G, P), w_hr (P, H)), read in
    place through raw pointers, so in-place updates (optimizer steps, load_state_dict) are seen
    and nothing is ever stale; no transposed copies. Products x @ W^T run on dot_rows
    (_simd_kernels.h: 8-16 row dots in flight, one add tree per 8) for B = 1 and 5-16 in
    float32 on AVX2/AVX-512, else through BLAS.
  Threads: with n_threads > 1 and enough weight bytes, each thread owns a slice of the hidden
    units and computes only its rows of every gate (its share of the weights stays in its own
    L2 between steps); no barrier is needed because a unit's gates depend only on its own rows.
    Reset-before GRU and projected LSTM need every unit before the second product: one thread.
    A step runs on the calling thread instead when the team would be slower: after an idle
    gap longer than the OpenMP runtime's spin (fastgru._wait_policy) its threads sleep and
    waking them costs ~30 us (12 us alone for GRU S5 here); and while other processes hold
    the cores a team step waits for a descheduled thread (~70 us). Each stepper keeps smoothed
    times of both ways (a team step only when it follows another: the first wakes the team)
    and re-measures the unused way every PROBE_EVERY steps. One thread computes the team's
    slices one after another (BLAS rounds a slice by its width): the same bits either way
    (tested).
  Call overhead: a cdef class holds pointers; step() takes ndarrays through the NumPy C API
    (no memoryview acquisition) and allocates only the result.
  The caller guarantees C-contiguous arrays of the stepper's dtype with consistent shapes; the
  checks here are the cheap ones that keep a bad call from touching wrong memory.
"""
from libc.string cimport memcpy
from cpython.pythread cimport PyThread_get_thread_ident
from cython.parallel cimport parallel
cimport numpy as cnp
import numpy as np

from fastgru._kernels._blas cimport gemm, blas_hold, blas_release
from fastgru._kernels._openmp cimport fg_thread_num, fg_team_size, fg_wtime
from fastgru._kernels._simd cimport (fg_fp_enter, fg_fp_exit, fg_simd, fg_simd_select,
                                     gru_fwd_ra, gru_fwd_rb1, gru_fwd_rb2, lstm_fwd)
from cython cimport floating

cnp.import_array()

# Below this many weight bytes a step stays on one thread (a team start costs ~1 us).
DEF_PAR_BYTES = 262144
# Every this many steps a stepper re-measures the thread choice it is not using.
cdef enum:
    PROBE_EVERY = 256


cdef bint _dot_on = True
# Seconds since the last step's end beyond which the team is taken to be asleep (set by
# fastgru._wait_policy from the spin it gave the runtime; never, when the spin is unknown).
cdef double _wake_gap = 1e300
cdef double _last_end = -1e300


# 0: choose by idle gap and measured times; 1: always the team; -1: always one thread (also
# a forked child after the parent ran a team: libgomp cannot start one there, fastgru._threads).
cdef int _rule = 0


def _set_wake_gap(double seconds):
    """Idle gap (s) after which a step runs on the calling thread."""
    global _wake_gap
    _wake_gap = seconds


def _set_step_rule(int rule):
    """1 runs every multi-thread step on its team (tests), -1 on the calling thread (tests; a
    forked child), 0 (the default) chooses by idle gap and measured times."""
    global _rule
    _rule = rule


def _set_dot_rows(bint on):
    """Test and benchmark hook: False sends the products to BLAS (the route before dot_rows)."""
    global _dot_on
    _dot_on = on


def _select_simd(int level):
    """Select this module's SIMD level (-1: best supported); returns the level used."""
    return fg_simd_select(level)


def weights_key(int kind, cnp.ndarray w_ih, cnp.ndarray w_hh, w_hr, bint reset_after,
                int n_threads):
    """What identifies a stepper's weights: data addresses, shapes and dtype. A cached stepper
    keeps its arrays alive, so an equal key means the same memory (read in place)."""
    cdef Py_ssize_t hr = 0 if w_hr is None else <Py_ssize_t>cnp.PyArray_DATA(<cnp.ndarray>w_hr)
    return (kind, <Py_ssize_t>cnp.PyArray_DATA(w_ih), <Py_ssize_t>cnp.PyArray_DATA(w_hh), hr,
            cnp.PyArray_DIM(w_ih, 0), cnp.PyArray_DIM(w_ih, 1), cnp.PyArray_DIM(w_hh, 1),
            cnp.PyArray_TYPE(w_ih), reset_after, n_threads)


cdef struct StepArgs:
    int B, nI, H, P, G, kind, reset_after, ngates
    const void* x
    const void* h
    const void* c
    const void* w_ih
    const void* w_hh
    const void* w_hr
    const void* b_ih
    const void* b_hh
    void* h_out
    void* c_out
    void* scratch          # per thread: gx (B, ngates*w) | gh (B, ngates*w) | bias (4w) | m (B, H)
    Py_ssize_t scratch_stride


cdef inline bint _dot_route(int B) noexcept nogil:
    return (B == 1 or 4 < B <= 16) and fg_simd.dot_rows != NULL and _dot_on


cdef inline void _xwt(int B, int N, int K, const floating* x, int ldx, const floating* w,
                      floating* out, int ldo) noexcept nogil:
    """out[B, N] (row stride ldo) = x[B, K] (row stride ldx) @ w[N, K].T, w rows K apart."""
    cdef floating one = 1, zero = 0
    if floating is float:
        if _dot_route(B):
            # B = 1: at the L2 bound, OpenBLAS 1.1-1.2x slower; B = 5-16: OpenBLAS's sgemm
            # 1.6-2.4x slower at 1 thread (B = 8, H = 256); B = 2-4: the same, OpenBLAS kept
            fg_simd.dot_rows(B, N, K, w, K, x, ldx, out, ldo)
            return
    gemm(c'N', c'T', B, N, K, one, x, ldx, w, K, zero, out, ldo)


cdef void _units(StepArgs* a, int j0, int j1, floating* scr, const floating* _t) noexcept nogil:
    """All gates for hidden units j0 .. j1-1 (GRU reset-after or LSTM without projection)."""
    cdef int B = a.B, nI = a.nI, H = a.H, P = a.P, w = j1 - j0, ng = a.ngates, g, i
    cdef floating* gx = scr
    cdef floating* gh = scr + <Py_ssize_t>B * ng * w
    cdef floating* b = gh + <Py_ssize_t>B * ng * w
    cdef const floating* b_ih = <const floating*>a.b_ih
    cdef const floating* b_hh = <const floating*>a.b_hh
    if w <= 0:
        return
    for g in range(ng):
        # gx[:, g-block] = x[B, I] @ W_ih[g*H + j0 : g*H + j1, :].T
        _xwt(B, w, nI, <const floating*>a.x, nI,
             <const floating*>a.w_ih + (<Py_ssize_t>g * H + j0) * nI, gx + g * w, ng * w)
        # gh[:, g-block] = h[B, P] @ W_hh[g*H + j0 : g*H + j1, :].T
        _xwt(B, w, P, <const floating*>a.h, P,
             <const floating*>a.w_hh + (<Py_ssize_t>g * H + j0) * P, gh + g * w, ng * w)
    if a.kind == 0:
        # folded bias of these units: [b_ir+b_hr | b_iz+b_hz | b_in | b_hn]
        for i in range(w):
            b[i] = b_ih[j0 + i] + b_hh[j0 + i]
            b[w + i] = b_ih[H + j0 + i] + b_hh[H + j0 + i]
            b[2 * w + i] = b_ih[2 * H + j0 + i]
            b[3 * w + i] = b_hh[2 * H + j0 + i]
        for i in range(B):   # the new state starts as the old one (updated in place)
            memcpy(<floating*>a.h_out + <Py_ssize_t>i * H + j0, <const floating*>a.h + <Py_ssize_t>i * H + j0,
                   w * sizeof(floating))
        gru_fwd_ra(B, w, w, gx, 3 * w, gh, 3 * w, b, <floating*>a.h_out + j0, H, NULL, 0, NULL, 0)
    else:
        for g in range(4):
            for i in range(w):
                b[g * w + i] = b_ih[g * H + j0 + i] + b_hh[g * H + j0 + i]
        for i in range(B):
            memcpy(<floating*>a.c_out + <Py_ssize_t>i * H + j0, <const floating*>a.c + <Py_ssize_t>i * H + j0,
                   w * sizeof(floating))
        lstm_fwd(B, w, w, gx, 4 * w, gh, 4 * w, b, <floating*>a.c_out + j0, H,
                 <floating*>a.h_out + j0, H, NULL, 0, NULL, 0)


cdef void _serial_rest(StepArgs* a, floating* scr, const floating* _t) noexcept nogil:
    """The single-thread variants: reset-before GRU, projected LSTM."""
    cdef int B = a.B, nI = a.nI, H = a.H, P = a.P, G = a.G, i, g
    cdef floating* gx = scr
    cdef floating* gh = scr + <Py_ssize_t>B * G
    cdef floating* b = gh + <Py_ssize_t>B * G
    cdef floating* m = b + 4 * H
    cdef const floating* b_ih = <const floating*>a.b_ih
    cdef const floating* b_hh = <const floating*>a.b_hh
    # gx[B, G] = x @ W_ih.T ; gh[B, G (GRU: 2H)] = h @ W_hh.T
    _xwt(B, G, nI, <const floating*>a.x, nI, <const floating*>a.w_ih, gx, G)
    if a.kind == 0:   # GRU, reset before
        _xwt(B, 2 * H, P, <const floating*>a.h, P, <const floating*>a.w_hh, gh, G)
        for i in range(H):
            b[i] = b_ih[i] + b_hh[i]
            b[H + i] = b_ih[H + i] + b_hh[H + i]
            b[2 * H + i] = b_ih[2 * H + i] + b_hh[2 * H + i]
            b[3 * H + i] = 0
        gru_fwd_rb1(B, H, H, gx, G, gh, G, b, <const floating*>a.h, H, gh, G)
        # ghn[B, H] = (r*h) @ W_hn.T  (into m)
        _xwt(B, H, H, gh + 2 * H, G, <const floating*>a.w_hh + 2 * H * H, m, H)
        memcpy(a.h_out, a.h, <Py_ssize_t>B * H * sizeof(floating))
        gru_fwd_rb2(B, H, H, gx, G, m, H, b, gh, G, <floating*>a.h_out, H, NULL, 0, NULL, 0)
    else:             # LSTM with projection
        _xwt(B, G, P, <const floating*>a.h, P, <const floating*>a.w_hh, gh, G)
        for i in range(G):
            b[i] = b_ih[i] + b_hh[i]
        memcpy(a.c_out, a.c, <Py_ssize_t>B * H * sizeof(floating))
        lstm_fwd(B, H, H, gx, G, gh, G, b, <floating*>a.c_out, H, m, H, NULL, 0, NULL, 0)
        # h'[B, P] = m @ W_hr.T
        _xwt(B, P, H, m, H, <const floating*>a.w_hr, <floating*>a.h_out, P)


cdef void _team(StepArgs* a, int split_units, int parts, const floating* _t) noexcept nogil:
    """Thread tid of a team computes units slice tid; a thread alone computes the `parts`
    slices a full team would, one after another: BLAS sums a slice's rows in an order that
    can depend on its width, so this keeps both ways bit-identical."""
    cdef int tid = fg_thread_num(), team = fg_team_size(), k
    cdef unsigned long long fp = fg_fp_enter()
    if split_units:
        if team == 1:
            for k in range(parts):
                _units(a, <int>(<Py_ssize_t>a.H * k // parts),
                       <int>(<Py_ssize_t>a.H * (k + 1) // parts),
                       <floating*>a.scratch + k * a.scratch_stride, _t)
        else:
            _units(a, <int>(<Py_ssize_t>a.H * tid // team),
                   <int>(<Py_ssize_t>a.H * (tid + 1) // team),
                   <floating*>a.scratch + tid * a.scratch_stride, _t)
    elif tid == 0:
        _serial_rest(a, <floating*>a.scratch, _t)
    fg_fp_exit(fp)


cdef inline double _smooth(double est, double sample) noexcept:
    """Moving average of step times; a sample counts at most twice the estimate, so one
    interrupted step moves it by 25% at most, while a lasting slowdown (other processes) still
    doubles it within three steps."""
    if est == 0.0:
        return sample
    return 0.75 * est + 0.25 * (sample if sample < 2.0 * est else 2.0 * est)


cdef class Stepper:
    """One inference step of a GRU (kind 0) or LSTM (kind 1) cell; see the module docstring."""

    cdef StepArgs a
    cdef object _keep          # the weight arrays (kept alive: pointers point into them)
    cdef object _scratch
    cdef int _dtype_num, _n_threads, _split, _max_threads
    cdef double _t_team, _t_alone  # smoothed seconds of a step on the team / on one thread
    cdef long long _calls
    cdef bint _record, _prev_team
    cdef unsigned long _owner  # the thread that made it: uses the kept scratch
    cdef public object dtype

    def __init__(self, int kind, w_ih, w_hh, b_ih, b_hh, w_hr=None, bint reset_after=True,
                 n_threads=1):
        cdef cnp.ndarray arr
        self.dtype = w_ih.dtype
        self._dtype_num = cnp.NPY_FLOAT32 if self.dtype == np.float32 else cnp.NPY_FLOAT64
        self._keep = (w_ih, w_hh, b_ih, b_hh, w_hr)
        for arr in self._keep[:4]:
            if not arr.flags.c_contiguous or arr.dtype != self.dtype:
                raise ValueError("stepper weights must be C-contiguous arrays of one dtype")
        self.a.kind = kind
        self.a.reset_after = reset_after
        self.a.ngates = 3 if kind == 0 else 4
        self.a.G = w_ih.shape[0]
        self.a.nI = w_ih.shape[1]
        self.a.P = w_hh.shape[1]
        self.a.H = self.a.G // self.a.ngates
        self.a.w_ih = cnp.PyArray_DATA(<cnp.ndarray>w_ih)
        self.a.w_hh = cnp.PyArray_DATA(<cnp.ndarray>w_hh)
        self.a.b_ih = cnp.PyArray_DATA(<cnp.ndarray>b_ih)
        self.a.b_hh = cnp.PyArray_DATA(<cnp.ndarray>b_hh)
        if w_hr is not None:
            if not w_hr.flags.c_contiguous or w_hr.dtype != self.dtype:
                raise ValueError("stepper weights must be C-contiguous arrays of one dtype")
            self.a.w_hr = cnp.PyArray_DATA(<cnp.ndarray>w_hr)
        self._split = (kind == 0 and reset_after) or (kind == 1 and w_hr is None)
        nbytes = (w_ih.nbytes + w_hh.nbytes) if self._split else 0
        self._n_threads = n_threads if (nbytes >= DEF_PAR_BYTES and self.a.H >= 2 * n_threads) else 1
        self._max_threads = self._n_threads
        self._t_team = self._t_alone = 0.0
        self._calls = 0
        self._record = self._prev_team = False
        self._scratch = None
        self._owner = PyThread_get_thread_ident()

    def set_bias(self, b_ih, b_hh):
        """Point the stepper at other bias arrays (G,) (a cached stepper serves each call's)."""
        cdef cnp.ndarray arr
        for arr in (b_ih, b_hh):
            if (cnp.PyArray_TYPE(arr) != self._dtype_num or not cnp.PyArray_ISNOTSWAPPED(arr)
                    or cnp.PyArray_NDIM(arr) != 1 or cnp.PyArray_DIM(arr, 0) != self.a.G
                    or not cnp.PyArray_IS_C_CONTIGUOUS(arr)):
                raise ValueError("stepper biases must be C-contiguous (G,) arrays of the "
                                 "weights' dtype")
        self._keep = self._keep[:2] + (b_ih, b_hh) + self._keep[4:]
        self.a.b_ih = cnp.PyArray_DATA(<cnp.ndarray>b_ih)
        self.a.b_hh = cnp.PyArray_DATA(<cnp.ndarray>b_hh)

    cdef object _scratch_into(self, int B, StepArgs* a):
        """Scratch for B rows, into a: the kept buffer for the thread that made the stepper, a
        new one per call for other threads (a call's state lives in its own StepArgs, so steps
        from several Python threads at once stay correct). Returns the array to keep alive."""
        cdef Py_ssize_t need = <Py_ssize_t>B * 2 * a.G + 4 * a.H + <Py_ssize_t>B * a.H + 64
        cdef Py_ssize_t nbytes
        cdef bint own = PyThread_get_thread_ident() == self._owner
        need = (need + 15) & ~(<Py_ssize_t>15)  # whole cache lines per thread row
        arr = self._scratch if own else None
        if arr is None or arr.shape[1] < need:
            # rows start on 64-byte boundaries (numpy promises 16)
            nbytes = self._max_threads * need * self.dtype.itemsize
            raw = np.empty(nbytes + 64, np.uint8)
            # the address through the C API (.ctypes costs ~3 us per new stepper)
            off = (64 - (<size_t>cnp.PyArray_DATA(<cnp.ndarray>raw) & 63)) & 63
            arr = raw[off:off + nbytes].view(self.dtype).reshape(self._max_threads, need)
            if own:
                self._scratch = arr
        a.scratch = cnp.PyArray_DATA(<cnp.ndarray>arr)
        a.scratch_stride = arr.shape[1]
        return arr

    cdef inline int _check(self, cnp.ndarray arr, int rows, int cols) except -1:
        # (the type number alone accepts a byte-swapped '>f4': the byte order is checked too)
        if (cnp.PyArray_TYPE(arr) != self._dtype_num or not cnp.PyArray_ISNOTSWAPPED(arr)
                or cnp.PyArray_NDIM(arr) != 2
                or not cnp.PyArray_IS_C_CONTIGUOUS(arr) or cnp.PyArray_DIM(arr, 1) != cols
                or (rows >= 0 and cnp.PyArray_DIM(arr, 0) != rows)):
            raise ValueError("stepper arrays must be C-contiguous (B, features) of the weights' dtype")
        return 0

    def step(self, cnp.ndarray x, cnp.ndarray h, cnp.ndarray c=None):
        """GRU: h' = step(x (B, I), h (B, H)); LSTM: (h', c') = step(x, h (B, P), c (B, H))."""
        cdef int B
        self._check(x, -1, self.a.nI)
        B = <int>cnp.PyArray_DIM(x, 0)
        self._check(h, B, self.a.P)
        cdef cnp.ndarray h_out = cnp.PyArray_EMPTY(2, cnp.PyArray_DIMS(h), self._dtype_num, 0)
        cdef cnp.ndarray c_out = None
        cdef StepArgs a = self.a   # this call's state (the weights' pointers copied)
        a.B = B
        a.x = cnp.PyArray_DATA(x)
        a.h = cnp.PyArray_DATA(h)
        a.h_out = cnp.PyArray_DATA(h_out)
        if a.kind == 1:
            if c is None:
                raise ValueError("LSTM step needs the cell state c")
            self._check(c, B, a.H)
            c_out = cnp.PyArray_EMPTY(2, cnp.PyArray_DIMS(c), self._dtype_num, 0)
            a.c = cnp.PyArray_DATA(c)
            a.c_out = cnp.PyArray_DATA(c_out)
        scratch = self._scratch_into(B, &a)
        self._run(&a)
        if a.kind == 1:
            return h_out, c_out
        return h_out

    def step_layer(self, cnp.ndarray x, cnp.ndarray h):
        """A one-layer GRU's step: (y (B, H), h' (1, B, H)) = step(x (B, I), h (1, B, H)); y is
        a copy of h'[0] (torch's output and h_n never share memory: y *= mask must not change
        the state), made here for ~0.1 us instead of a NumPy copy's ~0.4."""
        cdef int B
        if self.a.kind != 0:
            raise ValueError("step_layer is for GRU steppers")
        self._check(x, -1, self.a.nI)
        B = <int>cnp.PyArray_DIM(x, 0)
        if (cnp.PyArray_NDIM(h) != 3 or cnp.PyArray_DIM(h, 0) != 1
                or cnp.PyArray_TYPE(h) != self._dtype_num or not cnp.PyArray_ISNOTSWAPPED(h)
                or not cnp.PyArray_IS_C_CONTIGUOUS(h) or cnp.PyArray_DIM(h, 1) != B
                or cnp.PyArray_DIM(h, 2) != self.a.P):
            raise ValueError("stepper arrays must be C-contiguous (1, B, H) of the weights' dtype")
        cdef cnp.ndarray h_out = cnp.PyArray_EMPTY(3, cnp.PyArray_DIMS(h), self._dtype_num, 0)
        cdef cnp.ndarray y = cnp.PyArray_EMPTY(2, cnp.PyArray_DIMS(h) + 1, self._dtype_num, 0)
        cdef StepArgs a = self.a
        a.B = B
        a.x = cnp.PyArray_DATA(x)
        a.h = cnp.PyArray_DATA(h)
        a.h_out = cnp.PyArray_DATA(h_out)
        scratch = self._scratch_into(B, &a)
        self._run(&a)
        memcpy(cnp.PyArray_DATA(y), cnp.PyArray_DATA(h_out), cnp.PyArray_NBYTES(h_out))
        return y, h_out

    cdef int _choose(self, double now) noexcept:
        """Threads for this step: the team, unless it sleeps (idle gap) or has been measured
        slower than one thread (other processes holding the cores: a team step then waits for
        a descheduled thread, 70 us against 12 us alone for GRU S5 here). Sets _record: whether
        this step's time is a fair sample of its way (not after a gap; a team step only right
        after another, when the team is awake)."""
        cdef bint team
        self._calls += 1
        self._record = False
        if _rule != 0:
            return self._n_threads if _rule > 0 else 1
        if now - _last_end > _wake_gap:
            return 1  # the team sleeps: waking it costs more than this step
        self._record = True
        if self._t_alone == 0.0:
            return 1  # measure both ways first
        if self._t_team == 0.0:
            return self._n_threads
        team = self._t_team <= self._t_alone
        if self._calls % PROBE_EVERY < 2:
            team = not team  # re-measure the other way (twice: the first wakes a team)
        return self._n_threads if team else 1

    cdef void _run(self, StepArgs* a):
        global _last_end
        cdef int nt = self._n_threads, split = self._split, parts = self._n_threads
        cdef double t0 = 0.0, dt
        if nt > 1:
            t0 = fg_wtime()
            nt = self._choose(t0)
        # no BLAS call on the dot_rows route: skip the thread hold
        # (toggling OpenBLAS's thread count each step woke its pool: ~4% of a step)
        cdef bint uses_blas = not (self._dtype_num == cnp.NPY_FLOAT32 and _dot_route(a.B))
        cdef int saved = blas_hold() if uses_blas else 0
        with nogil:
            if self._dtype_num == cnp.NPY_FLOAT32:
                if nt <= 1:
                    _team(a, split, parts, <const float*>NULL)
                else:
                    with parallel(num_threads=nt):
                        _team(a, split, parts, <const float*>NULL)
            else:
                if nt <= 1:
                    _team(a, split, parts, <const double*>NULL)
                else:
                    with parallel(num_threads=nt):
                        _team(a, split, parts, <const double*>NULL)
        if self._n_threads > 1:
            _last_end = fg_wtime()
            dt = _last_end - t0
            if nt > 1:
                if self._record and self._prev_team:
                    self._t_team = _smooth(self._t_team, dt)
                self._prev_team = True
            else:
                if self._record:
                    self._t_alone = _smooth(self._t_alone, dt)
                self._prev_team = False
        if uses_blas:
            blas_release(saved)
