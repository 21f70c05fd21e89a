# cython: language_level=3
"""LSTM layer kernels: forward (training or inference) and backward, over a packed batch.

Design
  What: one LSTM layer with D directions over a packed, length-sorted batch (see _gru.pyx for
    the packing and the threading; both are the same here), optionally with PyTorch's output
    projection h = (o * tanh(c)) W_hr^T of size P (proj_size; P = H without it).
  Layout (N = sum of lengths; G = 4H; row-major):
    x     (N, I)              packed input
    w_ih  (D, G, I), w_hh (D, G, P), w_hr (D, P, H)   PyTorch layout, gate rows i|f|g|o (backward)
    wt_ih (I, D*G), wt_hh (D, P, G), wt_hr (D, H, P)  transposed copies for the forward GEMMs
                              (OpenBLAS's small-matrix path wants untransposed right operands)
    bias  (D, G)              b_ih + b_hh
    h     (D, B, P), c (D, B, H)   states, sorted-batch order, updated in place
    y     (N, D*P)            packed output, direction d owns columns d*P .. d*P + P - 1
    gx    (N, D*G)            x W_ih^T of both directions, one GEMM before the time loop
    cache (N, D*6H)           training: i|f|g|o|tanh(c_t)|c_{t-1}
    hprev (N, D*P)            training: h_{t-1}
    m     (N, D*H)            training with projection: o * tanh(c_t), the input of W_hr
  GEMMs: forward = one input GEMM + one recurrent GEMM per step (+ one for the projection);
    backward = dh_prev = dG W_hh per step (+ dm = dh W_hr with a projection), then large GEMMs
    for dx, dW_ih, dW_hh (and dW_hr) over all N rows after the loop, or, on one thread with
    small weights, on each chunk of ~256 rows inside the loop while they are in cache
    (L.chunk, _bwd_sums; S2: 227 -> 206 ms a training step).
  One sequence without projection runs in cols mode as in _gru.pyx (the team shares each step,
  thread k owning a slice of the hidden units; h double-buffered, c per thread), forward and
  backward.
  The caller (fastgru/ops.py) guarantees consistent shapes, contiguous buffers, sizes < 2^31.
"""
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset
from cython.parallel cimport parallel
from cython cimport floating

from fastgru._kernels._blas cimport gemm, blas_hold, blas_release
from fastgru._kernels._matmul cimport (mm, mm_w, mm_tn, mm_packed, project, project_step,
                                      PACK_PANEL)
from fastgru._kernels._openmp cimport (fg_thread_num, fg_team_size, fg_barrier,
                                      fg_steal_spins)
from fastgru._kernels._simd cimport (fg_fp_enter, fg_fp_exit, fg_simd_select,
                                     fg_mm_own_level, fg_mm_own_max_k, fg_mm_big_kn,
                                     lstm_fwd, lstm_bwd)
from fastgru._kernels._common cimport (Seq, split, new_share, run_units, unit_fn, cols_copy,
                                      cols_panels, cols_gh, cols_dh, zero_rows,
                                      colsum_rows, bwd_chunk, chunk_extend,
                                      BWD_CHUNK_ROWS, BWD_CHUNK_MAX_W)


def _select_simd(int level):
    """Select this module's SIMD level (-1: best supported); returns the level used."""
    return fg_simd_select(level)


def _set_steal_spins(int spins):
    """Spins before a cols-mode step's unclaimed slices are taken over (tests: 0)."""
    global fg_steal_spins
    fg_steal_spins = spins


# Chunked backward (_common.pxd bwd_chunk): chunk rows and the largest G*(I+P) it is used for
cdef Py_ssize_t _bwd_chunk_rows = BWD_CHUNK_ROWS
cdef Py_ssize_t _bwd_chunk_max_w = BWD_CHUNK_MAX_W
cdef Py_ssize_t _last_chunk = 0


def _last_bwd_chunk():
    """The chunk rows of the last backward (0: not chunked), for tests."""
    return _last_chunk


def _set_bwd_chunk(Py_ssize_t rows, Py_ssize_t max_w):
    """Chunked backward rows (0: off) and the largest G*(I+P) it is used for (tests, bench)."""
    global _bwd_chunk_rows, _bwd_chunk_max_w
    old = (_bwd_chunk_rows, _bwd_chunk_max_w)
    _bwd_chunk_rows = rows
    _bwd_chunk_max_w = max_w
    return old


def _set_mm_own(int level, int max_k, int big_kn):
    """Per-step products on fastgru's own kernel from SIMD level `level` up, for K <= max_k;
    weights of big_kn elements or more on BLAS from 64 rows (0: never)."""
    global fg_mm_own_level, fg_mm_own_max_k, fg_mm_big_kn
    fg_mm_own_level = level
    fg_mm_own_max_k = max_k
    fg_mm_big_kn = big_kn


cdef struct Layer:
    int nI, H, P, D, proj, training, accumulate, wt, cols, packed
    int gx_step             # input projection per step into scratch (see _packed.gx_per_step)
    const Py_ssize_t* xrow  # or NULL: x is padded, packed row p is x row xrow[p] (gx_step only)
    const Py_ssize_t* yrow  # or NULL: y is padded, packed row p goes to y row yrow[p]
    const Py_ssize_t* ypad  # with yrow: y's padding rows, zeroed after the recurrence
    int npad
    int pad_next            # zero_rows' shared counter
    Py_ssize_t whh_dstride  # elements between directions of the forward w_hh
    const void* wp_hh       # backward: W_hh packed in panels (or NULL)
    Py_ssize_t wp_dstride
    const void* x
    const void* w_ih
    const void* w_hh
    const void* w_hr
    const void* bias
    void* h
    void* c
    void* y
    void* gx
    void* cache
    void* hprev
    void* m
    void* scratch
    Py_ssize_t scratch_stride
    void* hbuf              # cols mode: (2, B, H) shared double buffer of h
    int* share              # cols mode: unit counters (_common run_units)
    int nsl                 # cols mode: slices per step (the planned team; _common run_units)
    const int* rev
    const int* tasks
    int ntasks
    # backward only
    const void* dy
    void* dh
    void* dc
    void* dg
    void* dhp
    void* dx
    void* dw_ih
    void* dw_hh
    void* dw_hr
    void* db_ih
    void* db_hh
    Py_ssize_t chunk        # one thread, one task: run _bwd_sums every chunk rows (0: off)


cdef void _fwd_task(Layer* L, const Seq* S, int k, int tid, const floating* _t) noexcept nogil:
    cdef int d = L.tasks[3 * k], r0 = L.tasks[3 * k + 1], r1 = L.tasks[3 * k + 2]
    cdef int H = L.H, P = L.P, G = 4 * L.H, D = L.D, B = S.B
    cdef int s, t, i, nb
    cdef Py_ssize_t row
    cdef const floating* wt_hh = <const floating*>L.w_hh + <Py_ssize_t>d * L.whh_dstride
    cdef const floating* wt_hr = NULL
    cdef const floating* b = <const floating*>L.bias + <Py_ssize_t>d * G
    cdef floating* hs = <floating*>L.h + (<Py_ssize_t>d * B + r0) * P
    cdef floating* cs = <floating*>L.c + (<Py_ssize_t>d * B + r0) * H
    cdef floating* scr = <floating*>L.scratch + tid * L.scratch_stride
    cdef floating* gxs = scr + <Py_ssize_t>B * 5 * H   # gx_step: this step's gx rows
    cdef floating* xg = scr + <Py_ssize_t>B * 9 * H    # xrow: this step's x rows
    cdef const floating* gxp
    cdef floating* yp = NULL
    cdef floating* yo
    cdef floating* kp = NULL
    cdef floating* hp
    cdef floating* gh
    cdef floating* mp
    cdef int ldgx = D * G, ldy = D * P, ldk = D * 6 * H, ldgh, ldm
    cdef floating one = 1, zero = 0
    if L.proj:
        wt_hr = <const floating*>L.w_hr + <Py_ssize_t>d * P * H
    for s in range(S.T):
        t = S.T - 1 - s if L.rev[d] else s
        nb = min(r1, S.bsz[t]) - r0
        if nb <= 0:
            continue
        row = S.off[t] + r0
        if L.gx_step:
            project_step(nb, G, L.nI, <const floating*>L.x, row, L.xrow,
                         <const floating*>L.w_ih + d * G, D * G, xg, gxs)
            gxp = gxs
            ldgx = G
        else:
            gxp = <const floating*>L.gx + row * ldgx + d * G
        if L.yrow == NULL:
            yp = <floating*>L.y + row * ldy + d * P
        if L.training:
            kp = <floating*>L.cache + row * ldk + d * 6 * H
            hp = <floating*>L.hprev + row * ldy + d * P
            for i in range(nb):
                memcpy(hp + <Py_ssize_t>i * ldy, hs + <Py_ssize_t>i * P, P * sizeof(floating))
            gh = kp
            ldgh = ldk
        else:
            gh = scr
            ldgh = G
        # gh[nb, 4H] = h[nb, P] @ W_hh.T[P, 4H]
        if L.packed:
            mm_packed(nb, G, P, hs, P, wt_hh, False, gh, ldgh)
        else:
            mm_w(nb, G, P, hs, P, wt_hh, L.wt, False, gh, ldgh)
        if not L.proj:
            lstm_fwd(nb, H, H, gxp, ldgx, gh, ldgh, b, cs, H, hs, H, yp, ldy, kp, ldk)
        else:
            if L.training:
                mp = <floating*>L.m + row * D * H + d * H
                ldm = D * H
            else:
                mp = scr + <Py_ssize_t>B * G
                ldm = H
            lstm_fwd(nb, H, H, gxp, ldgx, gh, ldgh, b, cs, H, mp, ldm, NULL, 0, kp, ldk)
            # h[nb, P] = m[nb, H] @ W_hr.T[H, P]
            mm_w(nb, P, H, mp, ldm, wt_hr, L.wt, False, hs, P)
        if L.proj or L.yrow != NULL:  # the gates wrote h only: copy it out
            for i in range(nb):
                yo = (<floating*>L.y + L.yrow[row + i] * ldy + d * P) if L.yrow != NULL \
                    else yp + <Py_ssize_t>i * ldy
                memcpy(yo, hs + <Py_ssize_t>i * P, P * sizeof(floating))


cdef void _fwd_cols_slice(Layer* L, const Seq* S, floating* hin, floating* hout, int s, int k,
                          int team, floating* scr) noexcept nogil:
    """Step s of cols mode for slice k of the hidden units (j0 .. j1-1), on whichever thread
    claimed it (scr: that thread's scratch)."""
    cdef int H = L.H, G = 4 * L.H, B = S.B, t, i, nb, j0, j1, w
    cdef Py_ssize_t row
    cdef const floating* b = <const floating*>L.bias
    cdef floating* cs = <floating*>L.c
    cdef floating* gh
    cdef floating* kp = NULL
    cdef int ldgx = G, ldy = H, ldk = 6 * H, ldgh
    split(H, k, team, &j0, &j1)
    w = j1 - j0
    t = S.T - 1 - s if L.rev[0] else s
    nb = S.bsz[t]
    row = S.off[t]
    for i in range(B):  # own units of every row move on (finished rows keep their state)
        memcpy(hout + <Py_ssize_t>i * H + j0, hin + <Py_ssize_t>i * H + j0, w * sizeof(floating))
    if L.training:
        kp = <floating*>L.cache + row * ldk
        for i in range(nb):
            memcpy(<floating*>L.hprev + (row + i) * ldy + j0, hin + <Py_ssize_t>i * H + j0,
                   w * sizeof(floating))
        gh = kp
        ldgh = ldk
    else:
        gh = scr
        ldgh = G
    if w > 0:
        cols_gh(nb, H, 4, k, team, j0, w, hin, <const floating*>L.w_hh, L.packed, L.wt, gh,
                ldgh)
        lstm_fwd(nb, w, H, <const floating*>L.gx + row * ldgx + j0, ldgx, gh + j0, ldgh, b + j0,
                 cs + j0, H, hout + j0, H, <floating*>L.y + row * ldy + j0, ldy,
                 (kp + j0) if L.training else NULL, ldk)


cdef void _fwd_unit(Layer* L, const Seq* S, int u, int k, floating* scr) noexcept nogil:
    """cols mode forward, unit u of slice k (_common.pxd run_units): u = 0 copies h0 into the
    state's double buffer, u = 1 .. T runs step u - 1, u = T + 1 copies h_n out."""
    cdef Py_ssize_t n = <Py_ssize_t>S.B * L.H
    cdef floating* hb = <floating*>L.hbuf
    cdef int s = u - 1
    if u == 0:
        cols_copy(<const floating*>L.h, hb, S.B, L.H, k, L.nsl)
    elif u <= S.T:
        _fwd_cols_slice(L, S, hb + (s % 2) * n, hb + (1 - s % 2) * n, s, k, L.nsl, scr)
    else:
        cols_copy(hb + (S.T % 2) * n, <floating*>L.h, S.B, L.H, k, L.nsl)


cdef void _fwd_unit_f(void* L, const void* S, int u, int k, void* scr) noexcept nogil:
    _fwd_unit(<Layer*>L, <const Seq*>S, u, k, <float*>scr)


cdef void _fwd_unit_d(void* L, const void* S, int u, int k, void* scr) noexcept nogil:
    _fwd_unit(<Layer*>L, <const Seq*>S, u, k, <double*>scr)


cdef void _fwd_cols(Layer* L, const Seq* S, int tid, int team, const floating* _t) noexcept nogil:
    """cols mode (one direction, no projection): the team shares each step (_common.pxd run_units)."""
    cdef unit_fn fn = _fwd_unit_f if floating is float else _fwd_unit_d
    run_units(fn, L, S, S.T + 2, tid, team, L.nsl, L.share,
              <floating*>L.scratch + tid * L.scratch_stride)


cdef void _fwd_team(Layer* L, const Seq* S, const floating* _t) noexcept nogil:
    cdef int tid = fg_thread_num(), team = fg_team_size(), k, r0, r1
    cdef int GD = 4 * L.H * L.D
    cdef unsigned long long fp = fg_fp_enter()
    if not L.gx_step:
        # gx[N, D*4H] = x[N, I] @ W_ih.T[I, D*4H]   (rows split across the team)
        split(S.N, tid, team, &r0, &r1)
        project(r1 - r0, GD, L.nI, <const floating*>L.x + <Py_ssize_t>r0 * L.nI,
                <const floating*>L.w_ih, L.wt, <floating*>L.gx + <Py_ssize_t>r0 * GD)
        fg_barrier()
    if L.cols:
        _fwd_cols(L, S, tid, team, _t)
    else:
        k = tid
        while k < L.ntasks:
            _fwd_task(L, S, k, tid, _t)
            k += team
    if L.ypad != NULL:
        zero_rows(<char*>L.y, <Py_ssize_t>L.D * L.P * sizeof(floating), L.ypad, L.npad,
                  &L.pad_next)
    fg_fp_exit(fp)


def forward(const floating[:, ::1] x, const floating[:, ::1] wt_ih,
            const floating[:, :, ::1] wt_hh, const floating[:, :, ::1] wt_hr,
            const floating[:, ::1] bias, floating[:, :, ::1] h, floating[:, :, ::1] c,
            floating[:, ::1] y, floating[:, ::1] gx, floating[:, ::1] cache,
            floating[:, ::1] hprev, floating[:, ::1] m, floating[:, ::1] scratch,
            const int[::1] bsz, const Py_ssize_t[::1] off, const int[::1] rev,
            const int[:, ::1] tasks, int n_threads, bint wt=True,
            floating[:, :, ::1] hbuf=None, bint packed=False, bint gx_step=False,
            const Py_ssize_t[::1] xrow=None, const Py_ssize_t[::1] yrow=None,
            int cols_slices=0, const Py_ssize_t[::1] ypad=None):
    """Run one LSTM layer forward; see the module docstring for the layout.
    wt: weights given transposed; False: PyTorch layout (w_ih as (D*G, I), w_hh, w_hr as is).
    hbuf (2, B, H): selects cols mode (one direction, no projection). packed: wt_hh holds each
    direction's W_hh.T packed in panels (_packed.pack_panels; float32), or in cols mode each of
    cols_slices slices' columns (_packed.pack_cols; cols_slices: slices per step in cols mode,
    default n_threads; any team computes them all). gx_step: each
    task projects its rows of each step into its scratch (B*(5H + 4H) per thread) instead of
    one gx GEMM over all rows before the loop (gx unused; tasks mode, wt only).
    xrow (N,): x is the padded (T*B, I) batch and packed row p is its row xrow[p] (gx_step
    only; scratch B*(9H + I)). yrow (N,): y is the padded (T*B, D*P) output (padding rows left
    as they are) and packed row p is written to its row yrow[p] (tasks mode). ypad (with
    yrow): y's padding rows, zeroed by the team after the recurrence.

    w_hr: None without projection. cache/hprev: None for inference; m: None unless training with
    a projection. scratch: (threads, B*5H) per-thread workspace.
    """
    cdef Layer L
    cdef Seq S
    memset(&L, 0, sizeof(L))
    S.T = bsz.shape[0]
    S.B = h.shape[1]
    S.N = x.shape[0] if xrow is None else xrow.shape[0]
    S.bsz = &bsz[0]
    S.off = &off[0]
    L.nI = x.shape[1]
    L.H = c.shape[2]
    L.P = h.shape[2]
    L.D = h.shape[0]
    L.proj = wt_hr is not None
    L.training = cache is not None
    if xrow is not None:
        if not gx_step or scratch.shape[1] < c.shape[1] * (9 * c.shape[2] + x.shape[1]):
            raise ValueError("xrow needs gx_step and B*(9H + I) of scratch")
        L.xrow = &xrow[0]
    if yrow is not None:
        if hbuf is not None:
            raise ValueError("yrow needs tasks mode")
        L.yrow = &yrow[0]
        if ypad is not None and ypad.shape[0] > 0:
            L.ypad = &ypad[0]
            L.npad = ypad.shape[0]
    elif ypad is not None:
        raise ValueError("ypad needs yrow")
    L.wt = wt
    L.x = &x[0, 0]
    L.w_ih = &wt_ih[0, 0]
    L.w_hh = &wt_hh[0, 0, 0]
    L.whh_dstride = wt_hh.shape[1] * wt_hh.shape[2]
    if packed and sizeof(floating) != sizeof(float):
        raise ValueError("packed weights are float32 only")
    L.packed = packed
    if gx_step and (not wt or hbuf is not None
                    or scratch.shape[1] < c.shape[1] * 9 * c.shape[2]):
        raise ValueError("gx_step needs transposed weights, tasks mode and B*9H of scratch")
    L.gx_step = gx_step
    if L.proj:
        L.w_hr = &wt_hr[0, 0, 0]
    L.bias = &bias[0, 0]
    L.h = &h[0, 0, 0]
    L.c = &c[0, 0, 0]
    L.y = &y[0, 0]
    L.gx = &gx[0, 0]
    if L.training:
        L.cache = &cache[0, 0]
        L.hprev = &hprev[0, 0]
        if L.proj:
            L.m = &m[0, 0]
    L.scratch = &scratch[0, 0]
    L.scratch_stride = scratch.shape[1]
    L.rev = &rev[0]
    L.tasks = &tasks[0, 0]
    L.ntasks = tasks.shape[0]
    if hbuf is not None:
        L.cols = 1
        L.hbuf = &hbuf[0, 0, 0]
        L.nsl = cols_slices if cols_slices > 0 else max(n_threads, 1)
        if packed and (<Py_ssize_t>wt_hh.shape[1] * wt_hh.shape[2]
                       < cols_panels(L.nsl, L.nsl, L.H, 4, PACK_PANEL)):
            raise ValueError("cols mode's packed wt_hh is too small (_packed.pack_cols)")
        L.share = new_share(L.nsl)
    cdef int saved = blas_hold()
    with nogil:
        if n_threads <= 1:
            _fwd_team(&L, &S, &x[0, 0])
        else:
            with parallel(num_threads=n_threads):
                _fwd_team(&L, &S, &x[0, 0])
    blas_release(saved)
    free(L.share)


cdef void _bwd_task(Layer* L, const Seq* S, int k, int tid, const floating* _t) noexcept nogil:
    cdef int d = L.tasks[3 * k], r0 = L.tasks[3 * k + 1], r1 = L.tasks[3 * k + 2]
    cdef int H = L.H, P = L.P, G = 4 * L.H, D = L.D, B = S.B
    cdef int s, t, i, j, nb
    cdef Py_ssize_t row
    cdef const floating* w_hh = <const floating*>L.w_hh + <Py_ssize_t>d * G * P
    cdef const floating* w_hr = NULL
    cdef floating* dh = <floating*>L.dh + (<Py_ssize_t>d * B + r0) * P
    cdef floating* dc = <floating*>L.dc + (<Py_ssize_t>d * B + r0) * H
    cdef floating* scr = <floating*>L.scratch + tid * L.scratch_stride
    cdef const floating* kp
    cdef const floating* dyp
    cdef floating* dgp
    cdef floating* dhpp
    cdef int ldg = D * G, ldy = D * P, ldk = D * 6 * H
    cdef floating one = 1, zero = 0
    cdef Py_ssize_t lo = 0, hi = 0   # chunked: rows whose sums are pending (steps adjoin)
    cdef bint first = True
    if L.proj:
        w_hr = <const floating*>L.w_hr + <Py_ssize_t>d * P * H
    for s in range(S.T):
        t = s if L.rev[d] else S.T - 1 - s
        nb = min(r1, S.bsz[t]) - r0
        if nb <= 0:
            continue
        row = S.off[t] + r0
        if L.chunk:
            if hi - lo >= L.chunk:
                _bwd_sums(L, lo, hi, 0, 1, first, _t)
                first = False
                lo = hi
            chunk_extend(&lo, &hi, row, nb)
        kp = <const floating*>L.cache + row * ldk + d * 6 * H
        dyp = (<const floating*>L.dy + row * ldy + d * P) if L.dy != NULL else NULL
        dgp = <floating*>L.dg + row * ldg + d * G
        if not L.proj:
            lstm_bwd(nb, H, H, kp, ldk, dh, H, dyp, ldy, dc, H, dgp, ldg)
        else:
            # dL/dh_t = carried dh + dy, kept for dW_hr
            dhpp = <floating*>L.dhp + row * ldy + d * P
            for i in range(nb):
                for j in range(P):
                    dhpp[<Py_ssize_t>i * ldy + j] = dh[<Py_ssize_t>i * P + j] + (
                        dyp[<Py_ssize_t>i * ldy + j] if dyp != NULL else 0)
            # dm[nb, H] = dh_t[nb, P] @ W_hr[P, H]
            mm(nb, H, P, dhpp, ldy, w_hr, H, False, scr, H)
            lstm_bwd(nb, H, H, kp, ldk, scr, H, NULL, 0, dc, H, dgp, ldg)
        # dh[nb, P] = dG[nb, 4H] @ W_hh[4H, P]
        if L.wp_hh != NULL:
            mm_packed(nb, P, G, dgp, ldg,
                      <const floating*>L.wp_hh + <Py_ssize_t>d * L.wp_dstride, False, dh, P)
        else:
            mm(nb, P, G, dgp, ldg, w_hh, P, False, dh, P)
    if L.chunk and (hi > lo or first):  # (first: no rows at all, the gradients are zeroed)
        _bwd_sums(L, lo, hi, 0, 1, first, _t)


cdef void _bwd_unit(Layer* L, const Seq* S, int u, int k, const floating* _t) noexcept nogil:
    """cols mode backward (no projection), unit u of slice k (_common.pxd run_units):
    dh[:, units of slice k] = dG W_hh of step u - 1 (it reads all of that step's dG: the unit
    before), then the gate gradients of step u for the same units (they read only this
    slice's dh and dc)."""
    cdef int H = L.H, G = 4 * L.H, s, t, nb, j0, j1
    cdef Py_ssize_t row
    cdef floating* dh = <floating*>L.dh
    cdef floating* dc = <floating*>L.dc
    cdef const floating* dyp
    cdef int ldg = G, ldy = H, ldk = 6 * H
    if u > 0:
        s = u - 1
        t = s if L.rev[0] else S.T - 1 - s
        # dh[nb, slice k's units] = dG[nb, 4H] @ W_hh[4H, slice k's units]
        cols_dh(S.bsz[t], H, 4, <const floating*>L.dg + S.off[t] * ldg, ldg,
                <const floating*>L.w_hh, <const floating*>L.wp_hh, k, L.nsl, L.nsl, False, dh)
    if u < S.T:
        t = u if L.rev[0] else S.T - 1 - u
        nb = S.bsz[t]
        row = S.off[t]
        split(H, k, L.nsl, &j0, &j1)
        dyp = (<const floating*>L.dy + row * ldy + j0) if L.dy != NULL else NULL
        if j1 > j0:
            lstm_bwd(nb, j1 - j0, H, <const floating*>L.cache + row * ldk + j0, ldk, dh + j0,
                     H, dyp, ldy, dc + j0, H, <floating*>L.dg + row * ldg + j0, ldg)


cdef void _bwd_unit_f(void* L, const void* S, int u, int k, void* scr) noexcept nogil:
    _bwd_unit(<Layer*>L, <const Seq*>S, u, k, <const float*>NULL)


cdef void _bwd_unit_d(void* L, const void* S, int u, int k, void* scr) noexcept nogil:
    _bwd_unit(<Layer*>L, <const Seq*>S, u, k, <const double*>NULL)


cdef void _bwd_cols(Layer* L, const Seq* S, int tid, int team, const floating* _t) noexcept nogil:
    """cols mode backward (one direction, no projection): the team shares each step with one
    sync between steps and no barrier (_common.pxd run_units; T + 1 units)."""
    cdef unit_fn fn = _bwd_unit_f if floating is float else _bwd_unit_d
    run_units(fn, L, S, S.T + 1, tid, team, L.nsl, L.share, NULL)


cdef void _bwd_sums(Layer* L, Py_ssize_t r0, Py_ssize_t r1, int tid, int team, bint first,
                    const floating* _t) noexcept nogil:
    """Everything after the time loop for packed rows r0 .. r1 - 1: dx, dW_ih, dW_hh (dW_hr)
    and the bias sums, this thread's share. The team runs it once over all rows; chunked
    (L.chunk), the one thread runs it on each chunk of rows while they are still in cache.
    first: the first call of a backward (it overwrites the parameter gradients unless
    L.accumulate)."""
    cdef int d, a0, a1, H = L.H, P = L.P, G = 4 * L.H, D = L.D, nI = L.nI, GD = 4 * L.H * L.D
    cdef Py_ssize_t n = r1 - r0
    cdef int acc = L.accumulate or not first
    cdef floating beta = 1 if acc else 0
    cdef const floating* dg = <const floating*>L.dg + r0 * GD
    # dx[n, I] = dG[n, D*4H] @ W_ih[D*4H, I]
    split(n, tid, team, &a0, &a1)
    mm(a1 - a0, nI, GD, dg + <Py_ssize_t>a0 * GD, GD,
       <const floating*>L.w_ih, nI, False, <floating*>L.dx + (r0 + a0) * nI, nI)
    # dW_ih[D*4H, I] (+)= dG[n, D*4H].T @ x[n, I]
    split(GD, tid, team, &a0, &a1)
    mm_tn(a1 - a0, nI, n, dg + a0, GD, <const floating*>L.x + r0 * nI, nI, beta,
          <floating*>L.dw_ih + <Py_ssize_t>a0 * nI, nI)
    for d in range(D):
        # dW_hh[d][4H, P] (+)= dG_d[n, 4H].T @ hprev_d[n, P]
        split(G, tid, team, &a0, &a1)
        mm_tn(a1 - a0, P, n, dg + d * G + a0, GD,
              <const floating*>L.hprev + r0 * D * P + d * P, D * P, beta,
              <floating*>L.dw_hh + (<Py_ssize_t>d * G + a0) * P, P)
        if L.proj:
            # dW_hr[d][P, H] (+)= dh_d[n, P].T @ m_d[n, H]
            split(P, tid, team, &a0, &a1)
            mm_tn(a1 - a0, H, n, <const floating*>L.dhp + r0 * D * P + d * P + a0, D * P,
                  <const floating*>L.m + r0 * D * H + d * H, D * H, beta,
                  <floating*>L.dw_hr + (<Py_ssize_t>d * P + a0) * H, H)
    # db_ih = db_hh = column sums of dG (one pass for both)
    split(GD, tid, team, &a0, &a1)
    colsum_rows(dg, n, GD, a0, a1, <floating*>L.db_ih, <floating*>L.db_hh, acc)


cdef void _bwd_team(Layer* L, const Seq* S, const floating* _t) noexcept nogil:
    cdef int tid = fg_thread_num(), team = fg_team_size(), k
    cdef unsigned long long fp = fg_fp_enter()
    if L.cols:
        _bwd_cols(L, S, tid, team, _t)
    else:
        k = tid
        while k < L.ntasks:
            _bwd_task(L, S, k, tid, _t)
            k += team
    if not L.chunk:
        fg_barrier()
        _bwd_sums(L, 0, S.N, tid, team, True, _t)
    fg_fp_exit(fp)


def backward(const floating[:, ::1] x, const floating[:, :, ::1] w_ih,
             const floating[:, :, ::1] w_hh, const floating[:, :, ::1] w_hr,
             const floating[:, ::1] cache, const floating[:, ::1] hprev,
             const floating[:, ::1] m, const floating[:, ::1] dy,
             floating[:, :, ::1] dh, floating[:, :, ::1] dc, floating[:, ::1] dg,
             floating[:, ::1] dhp, floating[:, ::1] dx, floating[:, :, ::1] dw_ih,
             floating[:, :, ::1] dw_hh, floating[:, :, ::1] dw_hr, floating[:, ::1] db_ih,
             floating[:, ::1] db_hh, floating[:, ::1] scratch,
             const int[::1] bsz, const Py_ssize_t[::1] off, const int[::1] rev,
             const int[:, ::1] tasks, bint accumulate, int n_threads, bint cols=False,
             const floating[:, :, ::1] wp_hh=None, int cols_slices=0):
    """Backward of one LSTM layer; dh/dc hold dh_n/dc_n on entry, dh0/dc0 on return.

    w_hr, m, dhp, dw_hr: None without projection. dy: None when no output gradient.
    wp_hh: W_hh packed in panels for the per-step product (float32; _packed.pack_panels_bwd; in
    cols mode each of cols_slices slices' columns, _packed.pack_cols), or None.
    cols_slices: slices per step in cols mode (default n_threads; any team computes them all).
    """
    cdef Layer L
    cdef Seq S
    memset(&L, 0, sizeof(L))
    S.T = bsz.shape[0]
    S.B = dh.shape[1]
    S.N = x.shape[0]
    S.bsz = &bsz[0]
    S.off = &off[0]
    L.nI = x.shape[1]
    L.H = dc.shape[2]
    L.P = dh.shape[2]
    L.D = dh.shape[0]
    L.proj = w_hr is not None
    L.accumulate = accumulate
    L.training = 1
    L.cols = cols
    L.nsl = cols_slices if cols_slices > 0 else max(n_threads, 1)
    if cols and wp_hh is not None and (<Py_ssize_t>wp_hh.shape[1] * wp_hh.shape[2]
                                       < cols_panels(L.nsl, L.nsl, w_hh.shape[2], 4, PACK_PANEL)):
        raise ValueError("cols mode's packed wp_hh is too small (_packed.pack_cols)")
    L.x = &x[0, 0]
    L.w_ih = &w_ih[0, 0, 0]
    L.w_hh = &w_hh[0, 0, 0]
    if wp_hh is not None:
        if sizeof(floating) != sizeof(float):
            raise ValueError("packed weights are float32 only")
        L.wp_hh = &wp_hh[0, 0, 0]
        L.wp_dstride = wp_hh.shape[1] * wp_hh.shape[2]
    L.cache = <void*>&cache[0, 0]
    L.hprev = <void*>&hprev[0, 0]
    if L.proj:
        L.w_hr = &w_hr[0, 0, 0]
        L.m = <void*>&m[0, 0]
        L.dhp = &dhp[0, 0]
        L.dw_hr = &dw_hr[0, 0, 0]
    L.dy = &dy[0, 0] if dy is not None else NULL
    L.dh = &dh[0, 0, 0]
    L.dc = &dc[0, 0, 0]
    L.dg = &dg[0, 0]
    L.dx = &dx[0, 0]
    L.dw_ih = &dw_ih[0, 0, 0]
    L.dw_hh = &dw_hh[0, 0, 0]
    L.db_ih = &db_ih[0, 0]
    L.db_hh = &db_hh[0, 0]
    L.scratch = &scratch[0, 0]
    L.scratch_stride = scratch.shape[1]
    L.rev = &rev[0]
    L.tasks = &tasks[0, 0]
    L.ntasks = tasks.shape[0]
    if cols:
        L.share = new_share(L.nsl)
    if floating is float and n_threads <= 1 and not cols and L.ntasks == 1:
        L.chunk = bwd_chunk(S.N, 4 * L.H, L.nI + L.P, L.H, L.nI, _bwd_chunk_rows,
                            _bwd_chunk_max_w)
    global _last_chunk
    _last_chunk = L.chunk
    cdef int saved = blas_hold()
    with nogil:
        if n_threads <= 1:
            _bwd_team(&L, &S, &x[0, 0])
        else:
            with parallel(num_threads=n_threads):
                _bwd_team(&L, &S, &x[0, 0])
    blas_release(saved)
    free(L.share)
