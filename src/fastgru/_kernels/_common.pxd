# Design: small pieces shared by the GRU and LSTM kernels: the packed-sequence description,
# the even split of a range over the team, a deterministic column sum (bias gradients), and
# cols mode's step loop (one sequence shared by the team, no barrier per step).
from cython cimport floating
from libc.stdlib cimport malloc
from libc.string cimport memcpy, memset

from fastgru._kernels._blas cimport gemm
from fastgru._kernels._matmul cimport mm, mm_packed, PACK_PANEL
from fastgru._kernels._openmp cimport (fg_load_acquire, fg_fetch_add, fg_cas, fg_pause,
                                      fg_steal_spins, fg_steal_spins_again)


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


cdef inline int* new_share(int n_threads) except NULL:
    """cols mode's step counters (_gru/_lstm _fwd_cols; free() them after the call):
    done = 0, init = 0, claimed[n_threads] = -1."""
    cdef int k, n = n_threads if n_threads > 1 else 1
    cdef int* p = <int*>malloc((n + 2) * sizeof(int))
    if p == NULL:
        raise MemoryError()
    p[0] = 0
    p[1] = 0
    for k in range(n):
        p[2 + k] = -1
    return p


# One slice of one cols-mode step: (layer, seq, h_{t-1} in, h_t out, step, slice, team, scratch
# of the thread computing it). Each kernel module wraps its fused-type slice function in one.
ctypedef void (*cols_slice_fn)(void* L, const void* S, const void* hin, void* hout, int s, int k,
                               int team, void* scr) noexcept nogil


cdef inline void run_cols(cols_slice_fn fn, void* L, const void* S, int T, int tid, int team,
                          int nsl, int* share, char* h, char* hbuf, Py_ssize_t nbytes,
                          void* scr) noexcept nogil:
    """cols mode's step loop on thread tid of `team`: each step's hidden units are split in
    nsl slices (the planned team, which the packed weights follow: cols_panels) and thread tid
    computes slices tid, tid + team, ..., with no barrier: a step starts once every slice of
    the one before is counted done, and a slice left unclaimed for fg_steal_spins (its thread
    descheduled by the OS) is computed by a waiting thread (_openmp.pxd). hbuf holds two
    states of nbytes (h is double-buffered: every slice reads all of h_{t-1}); h (h0 in, h_n
    out). share (new_share(nsl)): done (slices completed), init (h0 copied to hbuf),
    claimed[nsl] (the last step each slice was claimed for)."""
    cdef int s, k, spins, target, last = T * nsl - 1
    cdef int patience = fg_steal_spins
    cdef int* done = share
    cdef int* init = share + 1
    cdef int* claimed = share + 2
    cdef char* hb[2]
    hb[0] = hbuf
    hb[1] = hbuf + nbytes
    if tid >= nsl:  # a bigger team than planned: the planned threads have every slice
        return
    if fg_cas(init, 0, 1):
        memcpy(hb[0], h, nbytes)
        fg_fetch_add(init, 1)
    else:
        while fg_load_acquire(init) != 2:
            fg_pause()
    for s in range(T):
        target = s * nsl
        spins = 0
        while fg_load_acquire(done) < target:  # step s - 1 still running
            spins += 1
            if spins < patience:
                fg_pause()
                continue
            spins = 0
            for k in range(nsl):
                if fg_cas(&claimed[k], s - 2, s - 1):
                    fn(L, S, hb[(s - 1) % 2], hb[s % 2], s - 1, k, nsl, scr)
                    fg_fetch_add(done, 1)  # (s - 1 < T - 1: not the last slice)
                    patience = min(fg_steal_spins_again, fg_steal_spins)
        if spins and patience != fg_steal_spins and fg_load_acquire(done) >= target:
            patience = fg_steal_spins  # the others kept up again
        k = tid
        while k < nsl:
            if fg_cas(&claimed[k], s - 1, s):
                fn(L, S, hb[s % 2], hb[1 - s % 2], s, k, nsl, scr)
                if fg_fetch_add(done, 1) == last:  # the last slice of the last step: h_n out
                    memcpy(h, hb[T % 2], nbytes)
            k += team


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
