# Design: the per-step recurrent products of the kernels, C[M, N] (+)= A[M, K] @ W[K, N]
# (row-major, W untransposed). Few rows (float32): fastgru's small-M kernel (_simd.h), which
# streams W once with the accumulators in registers; otherwise BLAS through the shim.
from cython cimport floating
from fastgru._kernels._blas cimport gemm
from fastgru._kernels._simd cimport fg_simd

# When the small-M kernel wins (measured, bench/test_small_matmul.py): one row always (it is at
# the L2 streaming limit, ~100 GB/s, with no call set-up), and up to 4 rows when W is too big
# for L2 (OpenBLAS re-packs W per call: 2.4 ms vs 0.44-0.9 ms at K=1024, N=3072).
cdef enum:
    SMALL_M = 4
    BIG_W = 262144      # elements of W (1 MiB of float32)


cdef inline void mm(int M, int N, int K, const floating* A, int lda, const floating* W, int ldw,
                    bint accumulate, floating* C, int ldc) noexcept nogil:
    """C = A @ W, or C += A @ W when accumulate."""
    cdef floating one = 1, zero = 0
    if M <= 0 or N <= 0:
        return
    if floating is float:
        if M == 1 or (M <= SMALL_M and <Py_ssize_t>K * N >= BIG_W):
            fg_simd.mm_small(M, N, K, A, lda, W, ldw, C, ldc, accumulate)
            return
    gemm(c'N', c'N', M, N, K, one, A, lda, W, ldw, one if accumulate else zero, C, ldc)


cdef inline void mm_w(int M, int N, int K, const floating* A, int lda, const floating* W,
                      bint transposed, bint accumulate, floating* C, int ldc) noexcept nogil:
    """C (+)= A @ W.T for a weight W of PyTorch layout (N, K), given either as is
    (transposed=False: BLAS with op(W) = W.T) or as a transposed copy (K, N) (transposed=True:
    the faster small-matrix path; the copy costs G*(I+H) moves per call, so short sequences
    skip it)."""
    cdef floating one = 1, zero = 0
    if transposed:
        mm(M, N, K, A, lda, W, N, accumulate, C, ldc)
    else:
        gemm(c'N', c'T', M, N, K, one, A, lda, W, K, one if accumulate else zero, C, ldc)
