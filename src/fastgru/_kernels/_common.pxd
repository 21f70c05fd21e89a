# Design: small pieces shared by the GRU and LSTM kernels: the packed-sequence description,
# the even split of a range over the team, a deterministic column sum (bias gradients), and
# cols mode's unit loop (one sequence shared by the team, no barrier per step).
from cython cimport floating
from libc.stdlib cimport malloc
from libc.string cimport memcpy, memset

from fastgru._kernels._blas cimport gemm
from fastgru._kernels._matmul cimport mm, mm_packed, PACK_PANEL
from fastgru._kernels._openmp cimport (fg_load_acquire, fg_fetch_add, fg_cas, fg_pause,
                                      fg_steal_spins, fg_steal_spins_again)
from fastgru._kernels._simd cimport fg_simd_level, fg_mm_own_level


cdef struct Seq:
    int T                   # time steps
    int B                   # batch size
    Py_ssize_t N            # packed rows = sum of lengths
    const int* bsz          # bsz[t]: rows active at step t (batch sorted by length, descending)
    const Py_ssize_t* off   # off[t]: first packed row of step t


cdef inline void split(Py_ssize_t n, int tid, int team, int* a0, int* a1) noexcept nogil:
    """Thread tid's share [a0, a1) of range(n), n < 2^31."""
    a0[0] = <int>(n * tid // team)
    a1[0] = <int>(n * (tid + 1) // team)


cdef enum:
    BWD_CHUNK_ROWS = 256        # default rows per chunk of the chunked backward (bwd_chunk)
    BWD_CHUNK_MAX_W = 262144    # default largest G*K it is used for (1 MiB of float32)


cdef inline void chunk_extend(Py_ssize_t* lo, Py_ssize_t* hi, Py_ssize_t row,
                              int nb) noexcept nogil:
    """Add a step's packed rows [row, row + nb) to the chunked backward's pending rows
    [lo, hi): one task's steps are adjacent rows in either time direction, so the range stays
    contiguous; an empty range starts at the step."""
    if hi[0] == lo[0]:
        lo[0] = row
        hi[0] = row + nb
    else:
        if row < lo[0]:
            lo[0] = row
        if row + nb > hi[0]:
            hi[0] = row + nb


cdef inline Py_ssize_t bwd_chunk(Py_ssize_t N, Py_ssize_t G, Py_ssize_t K, int H, int nI,
                                 Py_ssize_t rows, Py_ssize_t max_w) noexcept nogil:
    """Rows per chunk of the chunked backward (0: none) for N packed rows and gate weights of
    G x K (K = I + H, or I + P): the weight-gradient and dx products of each chunk run inside
    the reversed time loop, while its gate gradients are in cache, instead of over all N rows
    after it (they come back from memory: GRU S2 49 MB, read three times; 112 -> 97 ms). Only
    where those products run on the own kernel and the weights stay cache-resident (at GRU S1
    and S3 it changed nothing)."""
    if (rows > 0 and N > rows and G * K <= max_w and H >= 16 and nI >= 16
            and fg_simd_level() >= fg_mm_own_level):
        return rows
    return 0


cdef inline Py_ssize_t cols_panels(int k, int nsl, int H, int gates, int pw) noexcept nogil:
    """Offset (elements) of slice k's weights in cols mode's packed W_hh.T (_packed.pack_cols):
    the slices before it, each gates blocks of ceil(w / pw) panels of H x pw."""
    cdef Py_ssize_t n = 0
    cdef int kk, a0, a1
    for kk in range(k):
        split(H, kk, nsl, &a0, &a1)
        n += gates * ((a1 - a0 + pw - 1) // pw)
    return n * H * pw


cdef inline void cols_gh(int nb, int H, int gates, int k, int nsl, int j0, int w,
                         const floating* h, const floating* w_hh, bint packed, bint wt,
                         floating* gh, int ldgh) noexcept nogil:
    """cols mode forward: gh[nb, g*H + j0 : g*H + j0 + w] = h[nb, H] @ W_hg[units of slice k].T
    for every gate g. w_hh: each slice's columns of W_hh.T packed (packed, _packed.pack_cols),
    W_hh.T (H, G) (wt) or W_hh (G, H) as is."""
    cdef int G = gates * H, g
    cdef floating one = 1, zero = 0
    cdef const floating* wp = w_hh + cols_panels(k, nsl, H, gates, PACK_PANEL) if packed else NULL
    cdef Py_ssize_t npw = (w + PACK_PANEL - 1) // PACK_PANEL * H * PACK_PANEL
    for g in range(gates):
        # gh[:nb, g*H + j0 : g*H + j0 + w] = h[:nb] @ W_hh[g*H + j0 : g*H + j0 + w].T
        if packed:
            mm_packed(nb, w, H, h, H, wp + g * npw, False, gh + g * H + j0, ldgh)
        elif wt:
            mm(nb, w, H, h, H, w_hh + g * H + j0, G, False, gh + g * H + j0, ldgh)
        else:
            gemm(c'N', c'T', nb, w, H, one, h, H, w_hh + (<Py_ssize_t>g * H + j0) * H, H,
                 zero, gh + g * H + j0, ldgh)


cdef inline void cols_dh(int nb, int H, int gates, const floating* dg, int ldg,
                         const floating* w_hh, const floating* wp, int tid, int team, int nsl,
                         bint accumulate, floating* dh) noexcept nogil:
    """cols mode backward: dh[nb, units of slice k] (+)= dG[nb, G] @ W_hh[G, units of slice k]
    for thread tid's slices k = tid, tid + team, ... of nsl; W_hh (G, H) as is, or each
    slice's columns packed (wp, _packed.pack_cols)."""
    cdef int G = gates * H, k = tid, j0, j1
    while k < nsl:
        split(H, k, nsl, &j0, &j1)
        # dh[:nb, j0:j1] (+)= dg[:nb, :G] @ W_hh[:G, j0:j1]
        if j1 > j0 and wp != NULL:
            mm_packed(nb, j1 - j0, G, dg, ldg, wp + cols_panels(k, nsl, H, gates, PACK_PANEL),
                      accumulate, dh + j0, H)
        elif j1 > j0:
            mm(nb, j1 - j0, G, dg, ldg, w_hh + j0, H, accumulate, dh + j0, H)
        k += team


cdef inline int* new_share(int nsl) except NULL:
    """cols mode's unit counters (run_units; free() them after the call): done = 0,
    claimed[nsl] = -1."""
    cdef int k, n = nsl if nsl > 1 else 1
    cdef int* p = <int*>malloc((n + 1) * sizeof(int))
    if p == NULL:
        raise MemoryError()
    p[0] = 0
    for k in range(n):
        p[1 + k] = -1
    return p


# One slice of one unit of cols-mode work: (layer, seq, unit, slice, scratch of the thread
# computing it). Each kernel module wraps its fused-type unit functions in one.
ctypedef void (*unit_fn)(void* L, const void* S, int u, int k, void* scr) noexcept nogil


cdef inline void run_units(unit_fn fn, void* L, const void* S, int U, int tid, int team,
                           int nsl, int* share, void* scr) noexcept nogil:
    """cols mode's loop on thread tid of `team`: units u = 0 .. U-1 of nsl slices each (the
    planned team, which the packed weights follow: cols_panels), where a unit's slices need
    every slice of the unit before (a step reads all of h_{t-1}; the backward's dh += dG W_hh
    reads all of dG). Thread tid computes slices tid, tid + team, ... with no barrier: a unit
    starts once every slice of the one before is counted done, and a slice left unclaimed for
    fg_steal_spins (its thread descheduled by the OS) is computed by a waiting thread
    (_openmp.pxd), so nobody waits a scheduler slice for it. share (new_share(nsl)): done
    (slices completed), claimed[nsl] (the last unit each slice was claimed for)."""
    cdef int u, k, spins, target
    cdef int patience = fg_steal_spins
    cdef int* done = share
    cdef int* claimed = share + 1
    if tid >= nsl:  # a bigger team than planned: the planned threads have every slice
        return
    for u in range(U):
        target = u * nsl
        spins = 0
        while fg_load_acquire(done) < target:  # unit u - 1 still running
            spins += 1
            if spins < patience:
                fg_pause()
                continue
            spins = 0
            for k in range(nsl):
                if fg_cas(&claimed[k], u - 2, u - 1):
                    fn(L, S, u - 1, k, scr)
                    fg_fetch_add(done, 1)
                    patience = min(fg_steal_spins_again, fg_steal_spins)
        if spins and patience != fg_steal_spins and fg_load_acquire(done) >= target:
            patience = fg_steal_spins  # the others kept up again
        k = tid
        while k < nsl:
            if fg_cas(&claimed[k], u - 1, u):
                fn(L, S, u, k, scr)
                fg_fetch_add(done, 1)
            k += team


cdef inline void cols_copy(const floating* src, floating* dst, int B, int H, int k,
                           int nsl) noexcept nogil:
    """dst[:B, units of slice k] = src[:B, units of slice k] ((B, H) each)."""
    cdef int i, j0, j1
    split(H, k, nsl, &j0, &j1)
    for i in range(B):
        memcpy(dst + <Py_ssize_t>i * H + j0, src + <Py_ssize_t>i * H + j0,
               (j1 - j0) * sizeof(floating))


cdef inline void zero_rows(char* y, Py_ssize_t rowbytes, const Py_ssize_t* rows, int n,
                           int* next) noexcept nogil:
    """Zero rows[0:n] of y (rowbytes each; a padded output's padding), in chunks claimed from
    the shared counter next (0 at the start): called after the recurrence, so the threads
    whose tasks finish first take the most."""
    cdef int k0, k
    while True:
        k0 = fg_fetch_add(next, 64)
        if k0 >= n:
            return
        for k in range(k0, min(k0 + 64, n)):
            memset(y + rows[k] * rowbytes, 0, rowbytes)


cdef inline void colsum_rows(const floating* m, Py_ssize_t N, int C, int c0, int c1,
                             floating* out, floating* out2, int accumulate) noexcept nogil:
    """out[c0:c1] (+)= m[:, c0:c1].sum(0) for m of shape (N, C); the same sums also go to out2
    when it is not NULL (bias gradients that are equal: one pass over m for both).

    Sums in double, rows in order: the result does not depend on the thread count."""
    cdef double acc[64]
    cdef int a = c0, j, w
    cdef Py_ssize_t n
    cdef const floating* row
    while a < c1:
        w = c1 - a if c1 - a < 64 else 64
        for j in range(w):
            acc[j] = 0.0
        for n in range(N):
            row = m + n * C + a
            for j in range(w):
                acc[j] += row[j]
        for j in range(w):
            if accumulate:
                out[a + j] = <floating>(out[a + j] + acc[j])
                if out2 != NULL:
                    out2[a + j] = <floating>(out2[a + j] + acc[j])
            else:
                out[a + j] = <floating>acc[j]
                if out2 != NULL:
                    out2[a + j] = <floating>acc[j]
        a += w
