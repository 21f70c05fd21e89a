# cython: language_level=3
"""GRU layer kernels: forward (training or inference) and backward, over a packed batch.

Design
  What: one GRU layer with D directions (1, or 2 for bidirectional) over a batch of sequences
    stored packed, as PyTorch's PackedSequence: the batch is sorted by length (descending), step
    t works on its first bsz[t] rows, which sit at packed rows off[t] .. off[t] + bsz[t] - 1.
    Padding is never computed on; without lengths the packing is the identity (no copy).
  Layout (N = sum of lengths; G = 3H; row-major):
    x     (N, I)             packed input
    w_ih  (D, G, I), w_hh (D, G, H)   PyTorch layout, gate rows r|z|n (backward)
    wt_ih (I, D*G), wt_hh (D, H, G)   forward weights: transposed copies when T is long enough
                             (with the weights on the right and untransposed, OpenBLAS takes
                             its small-matrix path: 115 vs 69 GFLOP/s at B=32, H=64), else the
                             PyTorch layout as is (flag wt)
    bias  (D, 4H)            folded: [b_ir+b_hr | b_iz+b_hz | b_in | b_hn] (reset after) or
                             [b_ir+b_hr | b_iz+b_hz | b_in+b_hn | 0] (reset before)
    h     (D, B, H)          state, sorted-batch order: h0 in, h_n out (updated in place)
    y     (N, D*H)           packed output; direction d owns columns d*H .. d*H + H - 1
    gx    (N, D*G)           x W_ih^T of both directions, one GEMM before the time loop
    cache (N, D*4H)          training only: r|z|hn|n (reset after) or r|z|rh|n (reset before)
    hprev (N, D*H)           training only: h_{t-1} of every packed row
    dgx   (N, D*G)           backward: gate gradients on the input side [dar|daz|dan]
                             (_packed.py hands it the forward's gx buffer, idle by then)
    dan   (N, D*H)           backward, reset after: the time loop writes the recurrent side
                             dgh = [dar|daz|dan*r] into dgx's buffer and dan here; once dW_hh
                             and the bias sums have read dgh, dan is copied over its n blocks,
                             turning it into dgx: one (N, 3H) buffer, not two (S4: -75 MB)
  GEMMs: forward = one input GEMM + one recurrent GEMM per step (two with reset before);
    backward = one GEMM per step (dh += dG W_hh; reset before: two) and, after the reversed
    loop, large GEMMs for dx, dW_ih, dW_hh over all N rows; on one thread with small weights
    these run inside the loop on each chunk of ~256 rows while those are still in cache
    (L.chunk, _bwd_sums; S2: 112 -> 97 ms).
  Threads: one OpenMP team runs everything. Big GEMMs are split by rows across the team (BLAS
    is kept single-threaded: OpenBLAS's pool beside ours was measured 29x slower).
    The recurrence is split into tasks (direction, row block): each thread runs whole time loops
    for its tasks, with no barrier per step. Work is assigned by thread number modulo the team
    actually obtained, so a smaller team (or a build without OpenMP) still does everything.
    One or two sequences (B <= 2, one direction; _threads.COLS_MAX_B): the team shares every step
    instead (cols mode), each thread owning a slice of the hidden units (its rows of every gate's
    weights stay in its own cache); h is double-buffered (hbuf) because each thread's product
    reads all of h_{t-1}. The forward has no barrier per step: a step starts when all slices of
    the one before are counted done, and a slice still unclaimed after a short spin (its thread
    descheduled by the OS) is computed by a waiting thread (_common.pxd run_units), so a busy
    machine costs a late thread's work, not a scheduler slice per step. The backward shares
    its steps the same way (_bwd_unit).
  Kernels never allocate, raise or touch Python objects; they run with FTZ/DAZ set and restore
  the caller's floating-point mode. The caller (fastgru/ops.py, fastgru/_plan.py) guarantees
  consistent shapes, contiguous buffers and sizes below 2^31.
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
                                     gru_fwd_ra, gru_fwd_rb1, gru_fwd_rb2,
                                     gru_bwd_ra, gru_bwd_rb1, gru_bwd_rb2)
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


# Chunked backward (_common.pxd bwd_chunk): chunk rows and the largest G*(I+H) it is used for
# (per module: the kernels read them; _set_bwd_chunk changes them)
cdef Py_ssize_t _bwd_chunk_rows = BWD_CHUNK_ROWS
cdef Py_ssize_t _bwd_chunk_max_w = BWD_CHUNK_MAX_W


cdef Py_ssize_t _last_chunk = 0


def _last_bwd_chunk():
    """The chunk rows of the last backward (0: not chunked), for tests."""
    return _last_chunk


def _set_bwd_chunk(Py_ssize_t rows, Py_ssize_t max_w):
    """Chunked backward rows (0: off) and the largest G*(H+I) it is used for (tests, bench)."""
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
    int nI, H, D, reset_after, training, accumulate, wt, cols, packed
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
    const void* bias
    void* h
    void* y
    void* gx
    void* cache
    void* hprev
    void* scratch
    Py_ssize_t scratch_stride
    void* hbuf              # cols mode: (2, B, H) shared double buffer of the state
    int* share              # cols mode: unit counters (_common run_units)
    int nsl                 # cols mode: slices per step (the planned team; _common run_units)
    const int* rev
    const int* tasks
    int ntasks
    # backward only
    const void* dy
    void* dh
    void* dgx               # reset after: holds dgh until the time loop's sums are done (dan)
    void* dan
    void* dx
    void* dw_ih
    void* dw_hh
    void* db_ih
    void* db_hh
    Py_ssize_t chunk        # one thread, one task: run _bwd_sums every chunk rows (0: off)


# ------------------------------------------------------------------------------------------
# Forward


cdef void _fwd_task(Layer* L, const Seq* S, int k, int tid, const floating* _t) noexcept nogil:
    """Time loop of one task: direction d, batch rows r0 .. r1-1 (sorted order)."""
    cdef int d = L.tasks[3 * k], r0 = L.tasks[3 * k + 1], r1 = L.tasks[3 * k + 2]
    cdef int H = L.H, G = 3 * L.H, D = L.D, B = S.B
    cdef int s, t, i, nb
    cdef Py_ssize_t row
    cdef const floating* wt_hh = <const floating*>L.w_hh + <Py_ssize_t>d * L.whh_dstride
    cdef const floating* b = <const floating*>L.bias + <Py_ssize_t>d * 4 * H
    cdef floating* hs = <floating*>L.h + (<Py_ssize_t>d * B + r0) * H
    cdef floating* scr = <floating*>L.scratch + tid * L.scratch_stride
    cdef floating* ghn = scr + <Py_ssize_t>B * 4 * H
    cdef floating* gxs = scr + <Py_ssize_t>B * 5 * H   # gx_step: this step's gx rows
    cdef floating* xg = scr + <Py_ssize_t>B * 8 * H    # xrow: this step's x rows
    cdef const floating* gxp
    cdef floating* yp = NULL
    cdef floating* cp = NULL
    cdef floating* hp
    cdef floating* gh
    cdef int ldgx = D * G, ldy = D * H, ldc = D * 4 * H, ldgh
    cdef floating one = 1, zero = 0
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
            yp = <floating*>L.y + row * ldy + d * H
        if L.training:
            cp = <floating*>L.cache + row * ldc + d * 4 * H
            hp = <floating*>L.hprev + row * ldy + d * H
            for i in range(nb):
                memcpy(hp + <Py_ssize_t>i * ldy, hs + <Py_ssize_t>i * H, H * sizeof(floating))
            gh = cp
            ldgh = ldc
        else:
            gh = scr
            ldgh = 4 * H
        if L.reset_after:
            # gh[nb, 3H] = h[nb, H] @ W_hh.T[H, 3H]      (all three gates, one GEMM)
            if L.packed:
                mm_packed(nb, G, H, hs, H, wt_hh, False, gh, ldgh)
            else:
                mm_w(nb, G, H, hs, H, wt_hh, L.wt, False, gh, ldgh)
            gru_fwd_ra(nb, H, H, gxp, ldgx, gh, ldgh, b, hs, H, yp, ldy, cp, ldc)
        else:
            # gh[nb, 2H] = h[nb, H] @ W_h{r,z}.T[H, 2H]
            if L.wt:
                mm(nb, 2 * H, H, hs, H, wt_hh, G, False, gh, ldgh)
            else:
                mm_w(nb, 2 * H, H, hs, H, wt_hh, False, False, gh, ldgh)
            gru_fwd_rb1(nb, H, H, gxp, ldgx, gh, ldgh, b, hs, H, gh, ldgh)
            # ghn[nb, H] = (r*h)[nb, H] @ W_hn.T[H, H]
            if L.wt:
                mm(nb, H, H, gh + 2 * H, ldgh, wt_hh + 2 * H, G, False, ghn, H)
            else:
                mm_w(nb, H, H, gh + 2 * H, ldgh, wt_hh + 2 * H * H, False, False, ghn, H)
            gru_fwd_rb2(nb, H, H, gxp, ldgx, ghn, H, b, gh, ldgh, hs, H, yp, ldy,
                        (cp + 3 * H) if L.training else NULL, ldc)
        if L.yrow != NULL:  # straight to the padded output (the gates wrote h only)
            for i in range(nb):
                memcpy(<floating*>L.y + L.yrow[row + i] * ldy + d * H, hs + <Py_ssize_t>i * H,
                       H * sizeof(floating))


cdef void _fwd_cols_slice(Layer* L, const Seq* S, floating* hin, floating* hout, int s, int k,
                          int team, floating* scr) noexcept nogil:
    """Step s of cols mode for slice k of the hidden units (j0 .. j1-1), on whichever thread
    claimed it (scr: that thread's scratch)."""
    cdef int H = L.H, G = 3 * L.H, B = S.B, t, i, nb, j0, j1, w
    cdef Py_ssize_t row
    cdef const floating* b = <const floating*>L.bias
    cdef floating* gh
    cdef floating* cp = NULL
    cdef int ldgx = G, ldy = H, ldc = 4 * H, ldgh
    split(H, k, team, &j0, &j1)
    w = j1 - j0
    t = S.T - 1 - s if L.rev[0] else s
    nb = S.bsz[t]
    row = S.off[t]
    for i in range(B):  # own units of every row move on (finished rows keep their state)
        memcpy(hout + <Py_ssize_t>i * H + j0, hin + <Py_ssize_t>i * H + j0, w * sizeof(floating))
    if L.training:
        cp = <floating*>L.cache + row * ldc
        for i in range(nb):
            memcpy(<floating*>L.hprev + (row + i) * ldy + j0, hin + <Py_ssize_t>i * H + j0,
                   w * sizeof(floating))
        gh = cp
        ldgh = ldc
    else:
        gh = scr
        ldgh = G
    if w > 0:
        cols_gh(nb, H, 3, k, team, j0, w, hin, <const floating*>L.w_hh, L.packed, L.wt, gh,
                ldgh)
        gru_fwd_ra(nb, w, H, <const floating*>L.gx + row * ldgx + j0, ldgx, gh + j0, ldgh,
                   b + j0, hout + j0, H, <floating*>L.y + row * ldy + j0, ldy,
                   (cp + j0) if L.training else NULL, ldc)


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
    """cols mode (one direction, reset after): the team shares each step (_common.pxd run_units)."""
    cdef unit_fn fn = _fwd_unit_f if floating is float else _fwd_unit_d
    run_units(fn, L, S, S.T + 2, tid, team, L.nsl, L.share,
              <floating*>L.scratch + tid * L.scratch_stride)


cdef void _fwd_team(Layer* L, const Seq* S, const floating* _t) noexcept nogil:
    cdef int tid = fg_thread_num(), team = fg_team_size(), k, r0, r1
    cdef int GD = 3 * L.H * L.D
    cdef unsigned long long fp = fg_fp_enter()
    if not L.gx_step:
        # gx[N, D*3H] = x[N, I] @ W_ih.T[I, D*3H]   (rows split across the team)
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
        zero_rows(<char*>L.y, <Py_ssize_t>L.D * L.H * sizeof(floating), L.ypad, L.npad,
                  &L.pad_next)
    fg_fp_exit(fp)


def forward(const floating[:, ::1] x, const floating[:, ::1] wt_ih,
            const floating[:, :, ::1] wt_hh, const floating[:, ::1] bias,
            floating[:, :, ::1] h, floating[:, ::1] y, floating[:, ::1] gx,
            floating[:, ::1] cache, floating[:, ::1] hprev, floating[:, ::1] scratch,
            const int[::1] bsz, const Py_ssize_t[::1] off, const int[::1] rev,
            const int[:, ::1] tasks, bint reset_after, int n_threads, bint wt=True,
            floating[:, :, ::1] hbuf=None, bint packed=False, bint gx_step=False,
            const Py_ssize_t[::1] xrow=None, const Py_ssize_t[::1] yrow=None,
            int cols_slices=0, const Py_ssize_t[::1] ypad=None):
    """Run one GRU layer forward; see the module docstring for the layout.

    cache/hprev: None for inference. scratch: (threads, B*5H) per-thread workspace.
    wt: weights given transposed (wt_ih (I, D*G), wt_hh (D, H, G)); False: PyTorch layout
    (w_ih (D, G, I) passed as (D*G, I), w_hh (D, G, H)). hbuf (2, B, H): selects cols mode
    (one direction, reset after; see the module docstring). packed (float32): wt_hh holds each
    direction's W_hh.T packed in panels (_packed.pack_panels; reset after), or in cols mode
    each of cols_slices slices' columns (_packed.pack_cols). cols_slices: slices per step in
    cols mode (default n_threads; any team computes them all).
    gx_step: each task projects its rows of each step into its scratch (B*(5H + 3H) per thread)
    instead of one gx GEMM over all rows before the loop (gx unused; tasks mode, wt only).
    xrow (N,): x is the padded (T*B, I) batch and packed row p is its row xrow[p] (gx_step
    only; scratch B*(8H + I)). yrow (N,): y is the padded (T*B, D*H) output (padding rows left
    as they are) and packed row p is written to its row yrow[p] (tasks mode). ypad (with
    yrow): y's padding rows, zeroed by the team after the recurrence.
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
    L.H = h.shape[2]
    L.D = h.shape[0]
    L.reset_after = reset_after
    L.training = cache is not None
    if xrow is not None:
        if not gx_step or scratch.shape[1] < h.shape[1] * (8 * h.shape[2] + x.shape[1]):
            raise ValueError("xrow needs gx_step and B*(8H + I) of scratch")
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
                    or scratch.shape[1] < h.shape[1] * 8 * h.shape[2]):
        raise ValueError("gx_step needs transposed weights, tasks mode and B*8H of scratch")
    L.gx_step = gx_step
    L.bias = &bias[0, 0]
    L.h = &h[0, 0, 0]
    L.y = &y[0, 0]
    L.gx = &gx[0, 0]
    if L.training:
        L.cache = &cache[0, 0]
        L.hprev = &hprev[0, 0]
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
                       < cols_panels(L.nsl, L.nsl, L.H, 3, PACK_PANEL)):
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


# ------------------------------------------------------------------------------------------
# Backward


cdef void _bwd_task(Layer* L, const Seq* S, int k, int tid, const floating* _t) noexcept nogil:
    """Reversed time loop of one task; fills dgx (reset after: dgh and dan) rows, carries dh
    in place."""
    cdef int d = L.tasks[3 * k], r0 = L.tasks[3 * k + 1], r1 = L.tasks[3 * k + 2]
    cdef int H = L.H, G = 3 * L.H, D = L.D, B = S.B
    cdef int s, t, nb
    cdef Py_ssize_t row
    cdef const floating* w_hh = <const floating*>L.w_hh + <Py_ssize_t>d * G * H
    cdef floating* dh = <floating*>L.dh + (<Py_ssize_t>d * B + r0) * H
    cdef floating* scr = <floating*>L.scratch + tid * L.scratch_stride
    cdef const floating* cp
    cdef const floating* hp
    cdef const floating* dyp
    cdef floating* dgxp
    cdef int ldg = D * G, ldy = D * H, ldc = D * 4 * H
    cdef floating one = 1, zero = 0
    cdef Py_ssize_t lo = 0, hi = 0   # chunked: rows whose sums are pending (steps adjoin)
    cdef bint first = True
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
        cp = <const floating*>L.cache + row * ldc + d * 4 * H
        hp = <const floating*>L.hprev + row * ldy + d * H
        dyp = (<const floating*>L.dy + row * ldy + d * H) if L.dy != NULL else NULL
        dgxp = <floating*>L.dgx + row * ldg + d * G
        if L.reset_after:
            # dgx's rows take the recurrent side dgh here (_bwd_team assembles dgx later)
            gru_bwd_ra(nb, H, H, cp, ldc, hp, ldy, dyp, ldy, dh, H,
                       <floating*>L.dan + row * ldy + d * H, ldy, dgxp, ldg)
            # dh[nb, H] += dgh[nb, 3H] @ W_hh[3H, H]
            if L.wp_hh != NULL:
                mm_packed(nb, H, G, dgxp, ldg,
                          <const floating*>L.wp_hh + <Py_ssize_t>d * L.wp_dstride, True, dh, H)
            else:
                mm(nb, H, G, dgxp, ldg, w_hh, H, True, dh, H)
        else:
            gru_bwd_rb1(nb, H, H, cp, ldc, hp, ldy, dyp, ldy, dh, H, dgxp, ldg)
            # drh[nb, H] = dan[nb, H] @ W_hn[H, H]
            mm(nb, H, H, dgxp + 2 * H, ldg, w_hh + 2 * H * H, H, False, scr, H)
            gru_bwd_rb2(nb, H, H, cp, ldc, hp, ldy, scr, H, dh, H, dgxp, ldg)
            # dh[nb, H] += [dar|daz][nb, 2H] @ W_h{r,z}[2H, H]
            mm(nb, H, 2 * H, dgxp, ldg, w_hh, H, True, dh, H)
    if L.chunk and (hi > lo or first):  # (first: no rows at all, the gradients are zeroed)
        _bwd_sums(L, lo, hi, 0, 1, first, _t)


cdef void _bwd_unit(Layer* L, const Seq* S, int u, int k, const floating* _t) noexcept nogil:
    """cols mode backward, unit u of slice k (_common.pxd run_units): dh[:, units of slice k]
    += dgh W_hh of step u - 1 (it reads all of that step's dgh: the unit before), then the
    gate gradients of step u for the same units (they read only this slice's dh)."""
    cdef int H = L.H, G = 3 * L.H, s, t, nb, j0, j1
    cdef Py_ssize_t row
    cdef floating* dh = <floating*>L.dh
    cdef const floating* dyp
    cdef int ldg = G, ldy = H, ldc = 4 * H
    if u > 0:
        s = u - 1
        t = s if L.rev[0] else S.T - 1 - s
        # dh[nb, slice k's units] += dgh[nb, 3H] @ W_hh[3H, slice k's units]
        cols_dh(S.bsz[t], H, 3, <const floating*>L.dgx + S.off[t] * ldg, ldg,
                <const floating*>L.w_hh, <const floating*>L.wp_hh, k, L.nsl, L.nsl, True, dh)
    if u < S.T:
        t = u if L.rev[0] else S.T - 1 - u
        nb = S.bsz[t]
        row = S.off[t]
        split(H, k, L.nsl, &j0, &j1)
        dyp = (<const floating*>L.dy + row * ldy + j0) if L.dy != NULL else NULL
        if j1 > j0:
            gru_bwd_ra(nb, j1 - j0, H, <const floating*>L.cache + row * ldc + j0, ldc,
                       <const floating*>L.hprev + row * ldy + j0, ldy, dyp, ldy, dh + j0, H,
                       <floating*>L.dan + row * ldy + j0, ldy,
                       <floating*>L.dgx + row * ldg + j0, ldg)


cdef void _bwd_unit_f(void* L, const void* S, int u, int k, void* scr) noexcept nogil:
    _bwd_unit(<Layer*>L, <const Seq*>S, u, k, <const float*>NULL)


cdef void _bwd_unit_d(void* L, const void* S, int u, int k, void* scr) noexcept nogil:
    _bwd_unit(<Layer*>L, <const Seq*>S, u, k, <const double*>NULL)


cdef void _bwd_cols(Layer* L, const Seq* S, int tid, int team, const floating* _t) noexcept nogil:
    """cols mode backward (one direction, reset after): the team shares each step with one
    sync between steps and no barrier (_common.pxd run_units; T + 1 units)."""
    cdef unit_fn fn = _bwd_unit_f if floating is float else _bwd_unit_d
    run_units(fn, L, S, S.T + 1, tid, team, L.nsl, L.share, NULL)


cdef void _dw_hh(Layer* L, Py_ssize_t r0, Py_ssize_t n, int tid, int team,
                 floating beta) noexcept nogil:
    """dW_hh of every direction over packed rows r0 .. r0 + n - 1, this thread's share of its
    rows."""
    cdef int d, a0, a1, H = L.H, G = 3 * L.H, D = L.D, GD = 3 * L.H * L.D
    cdef const floating* dgh
    cdef const floating* hp = <const floating*>L.hprev + r0 * D * H
    cdef const floating* hsrc
    for d in range(D):
        split(G, tid, team, &a0, &a1)
        dgh = <const floating*>L.dgx + r0 * GD + d * G  # reset after: still dgh (_bwd_sums)
        if L.reset_after or a1 <= 2 * H:
            # dW_hh[d][3H, H] (+)= dgh_d[n, 3H].T @ hprev_d[n, H]
            mm_tn(a1 - a0, H, n, dgh + a0, GD, hp + d * H, D * H, beta,
                  <floating*>L.dw_hh + (<Py_ssize_t>d * G + a0) * H, H)
        else:
            # reset before: rows of W_hr, W_hz see h_{t-1}; rows of W_hn see r*h_{t-1}
            if a0 < 2 * H:
                mm_tn(2 * H - a0, H, n, dgh + a0, GD, hp + d * H, D * H, beta,
                      <floating*>L.dw_hh + (<Py_ssize_t>d * G + a0) * H, H)
                a0 = 2 * H
            hsrc = <const floating*>L.cache + r0 * D * 4 * H + d * 4 * H + 2 * H
            mm_tn(a1 - a0, H, n, dgh + a0, GD, hsrc, D * 4 * H, beta,
                  <floating*>L.dw_hh + (<Py_ssize_t>d * G + a0) * H, H)


cdef void _bias_sums(Layer* L, Py_ssize_t r0, Py_ssize_t n, int tid, int team, int accumulate,
                     const floating* _t) noexcept nogil:
    """db_ih = column sums of dgx over packed rows r0 .. r0 + n - 1; db_hh: the same sums,
    except reset after's n blocks, which are the sums of dgh (dgh equals dgx in the r and z
    blocks): one pass over dG, not two. Reset after runs this before dgx is assembled: dgx's n
    blocks are read from dan."""
    cdef int d, k, a0, a1, c0, c1, H = L.H, G = 3 * L.H, D = L.D, GD = 3 * L.H * L.D
    cdef const floating* dg = <const floating*>L.dgx + r0 * GD  # reset after: still dgh
    for d in range(D):
        for k in range(3):
            split(H, tid, team, &a0, &a1)
            c0 = d * G + k * H + a0
            c1 = d * G + k * H + a1
            if L.reset_after and k == 2:
                # db_ih[d, 2H + j] (+)= dan[:, d*H + j].sum(0)
                colsum_rows(<const floating*>L.dan + r0 * D * H, n, D * H, d * H + a0,
                            d * H + a1, <floating*>L.db_ih + d * G + 2 * H - d * H, NULL,
                            accumulate)
                colsum_rows(dg, n, GD, c0, c1, <floating*>L.db_hh, NULL, accumulate)
            else:
                colsum_rows(dg, n, GD, c0, c1, <floating*>L.db_ih, <floating*>L.db_hh,
                            accumulate)


cdef void _bwd_sums(Layer* L, Py_ssize_t r0, Py_ssize_t r1, int tid, int team, bint first,
                    const floating* _t) noexcept nogil:
    """Everything after the time loop for packed rows r0 .. r1 - 1: dW_hh, the bias sums, dx
    and dW_ih, this thread's share. The team runs it once over all rows; chunked (L.chunk),
    the one thread runs it on each chunk of rows while they are still in cache. first: the
    first call of a backward (it overwrites the parameter gradients unless L.accumulate)."""
    cdef int d, a0, a1, H = L.H, G = 3 * L.H, D = L.D, nI = L.nI, GD = 3 * L.H * L.D
    cdef Py_ssize_t n = r1 - r0, i
    cdef int acc = L.accumulate or not first
    cdef floating beta = 1 if acc else 0
    if L.reset_after:
        # everything that reads dgh first, then dgx[:, n blocks] = dan in the same buffer
        _dw_hh(L, r0, n, tid, team, beta)
        _bias_sums(L, r0, n, tid, team, acc, _t)
        fg_barrier()
        split(n, tid, team, &a0, &a1)
        for i in range(r0 + a0, r0 + a1):
            for d in range(D):
                memcpy(<floating*>L.dgx + i * GD + d * G + 2 * H,
                       <const floating*>L.dan + (i * D + d) * H, H * sizeof(floating))
        fg_barrier()
    # dx[n, I] = dgx[n, D*3H] @ W_ih[D*3H, I]       (both directions summed by the GEMM)
    split(n, tid, team, &a0, &a1)
    mm(a1 - a0, nI, GD, <const floating*>L.dgx + (r0 + a0) * GD, GD,
       <const floating*>L.w_ih, nI, False, <floating*>L.dx + (r0 + a0) * nI, nI)
    # dW_ih[D*3H, I] (+)= dgx[n, D*3H].T @ x[n, I]
    split(GD, tid, team, &a0, &a1)
    mm_tn(a1 - a0, nI, n, <const floating*>L.dgx + r0 * GD + a0, GD,
          <const floating*>L.x + r0 * nI, nI, beta, <floating*>L.dw_ih + <Py_ssize_t>a0 * nI,
          nI)
    if not L.reset_after:
        _dw_hh(L, r0, n, tid, team, beta)
        _bias_sums(L, r0, n, tid, team, acc, _t)


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
             const floating[:, :, ::1] w_hh, const floating[:, ::1] cache,
             const floating[:, ::1] hprev, const floating[:, ::1] dy,
             floating[:, :, ::1] dh, floating[:, ::1] dgx, floating[:, ::1] dan,
             floating[:, ::1] dx, floating[:, :, ::1] dw_ih, floating[:, :, ::1] dw_hh,
             floating[:, ::1] db_ih, floating[:, ::1] db_hh, floating[:, ::1] scratch,
             const int[::1] bsz, const Py_ssize_t[::1] off, const int[::1] rev,
             const int[:, ::1] tasks, bint reset_after, bint accumulate, int n_threads,
             bint cols=False, const floating[:, :, ::1] wp_hh=None, int cols_slices=0):
    """Backward of one GRU layer; dh holds dh_n on entry and dh0 on return (in place).

    dy: None when no output gradient. dgx: (N, D*3H) scratch. dan: (N, D*H) scratch with
    reset_after, None without. accumulate: add the parameter gradients into dw_*/db_* instead
    of overwriting them. dx is always overwritten.
    cols: the team shares each step (one direction, reset after; see the module docstring).
    wp_hh: W_hh packed in panels for the per-step product (float32; _packed.pack_panels_bwd,
    reset after; in cols mode each of cols_slices slices' columns, _packed.pack_cols), or None.
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
    L.H = dh.shape[2]
    L.D = dh.shape[0]
    L.reset_after = reset_after
    L.accumulate = accumulate
    L.training = 1
    L.cols = cols
    L.nsl = cols_slices if cols_slices > 0 else max(n_threads, 1)
    if cols and wp_hh is not None and (<Py_ssize_t>wp_hh.shape[1] * wp_hh.shape[2]
                                       < cols_panels(L.nsl, L.nsl, w_hh.shape[2], 3, PACK_PANEL)):
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
    L.dy = &dy[0, 0] if dy is not None else NULL
    L.dh = &dh[0, 0, 0]
    L.dgx = &dgx[0, 0]
    if reset_after:
        if dan is None:
            raise ValueError("reset_after needs the dan buffer")
        L.dan = &dan[0, 0]
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
        L.chunk = bwd_chunk(S.N, 3 * L.H, L.nI + L.H, L.H, L.nI, _bwd_chunk_rows,
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
