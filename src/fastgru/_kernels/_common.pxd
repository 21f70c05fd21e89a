# Design: small pieces shared by the GRU and LSTM kernels: the packed-sequence description,
# the even split of a range over the team, and a deterministic column sum (bias gradients).
from cython cimport floating
from libc.stdlib cimport malloc


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
