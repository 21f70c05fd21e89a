# Design: the one BLAS shim. Only this file cimports scipy.linalg.cython_blas; the extension
# links no BLAS (the functions come from SciPy at import). Everything above it is row-major.
#
# Row-major C = op(A) @ op(B) is, read column-major, C^T = op(B)^T @ op(A)^T: so we pass B
# before A with their transpose flags, and M/N swapped. This identity lives here only.
# SciPy's wrappers lack const (scipy#14262): inputs are cast at the call.
from scipy.linalg.cython_blas cimport sgemm, dgemm
from cython cimport floating


cdef inline void gemm(char ta, char tb, int M, int N, int K, floating alpha,
                      const floating* A, int lda, const floating* B, int ldb,
                      floating beta, floating* C, int ldc) noexcept nogil:
    """C[M, N] = alpha * op(A)[M, K] @ op(B)[K, N] + beta * C, all row-major."""
    if M <= 0 or N <= 0:
        return
    if floating is float:
        sgemm(&tb, &ta, &N, &M, &K, &alpha, <float*>B, &ldb, <float*>A, &lda, &beta, C, &ldc)
    else:
        dgemm(&tb, &ta, &N, &M, &K, &alpha, <double*>B, &ldb, <double*>A, &lda, &beta, C, &ldc)


# Hold the BLAS at one thread around a kernel: OpenBLAS's pool beside our OpenMP team was
# measured 29x slower per step. The functions are OpenBLAS's own get/set-threads entry points,
# registered once by fastgru._threads (two C calls per kernel, no Python); without them (another
# BLAS) the Python layer falls back to threadpoolctl. blas_hold returns what to restore.
cdef int blas_hold() noexcept nogil
cdef void blas_release(int saved) noexcept nogil
