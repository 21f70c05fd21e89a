# cython: language_level=3
"""Test hook for the BLAS shim (_blas.pxd): row-major gemm on memoryviews."""
from cython cimport floating
from fastgru._kernels._blas cimport gemm
from fastgru._kernels._matmul cimport mm
from fastgru._kernels._simd cimport fg_simd_select


def gemm_memview(str ta, str tb, double alpha, const floating[:, ::1] A,
                 const floating[:, ::1] B, double beta, floating[:, ::1] C):
    """C = alpha * op(A) @ op(B) + beta * C through the shim (tests only)."""
    cdef int M = C.shape[0], N = C.shape[1]
    cdef int K = A.shape[0] if ta == "T" else A.shape[1]
    cdef char cta = ord(ta), ctb = ord(tb)
    cdef floating a_ = <floating>alpha, b_ = <floating>beta
    with nogil:
        gemm(cta, ctb, M, N, K, a_, &A[0, 0], A.shape[1], &B[0, 0], B.shape[1], b_,
             &C[0, 0], C.shape[1])


def mm_memview(const floating[:, ::1] A, const floating[:, ::1] W, floating[:, ::1] C,
               bint accumulate):
    """C (+)= A @ W through the per-step product (small-M kernel or BLAS; tests only)."""
    with nogil:
        mm(C.shape[0], C.shape[1], A.shape[1], &A[0, 0], A.shape[1], &W[0, 0], W.shape[1],
           accumulate, &C[0, 0], C.shape[1])


def time_mm(const float[:, ::1] A, const float[:, ::1] W, float[:, ::1] C, int reps,
            bint blas):
    """Seconds per call of the per-step product (small-M kernel or forced BLAS), benchmarks."""
    cdef int r
    cdef double t0
    cdef float one = 1, zero = 0
    import time
    t0 = time.perf_counter()
    with nogil:
        for r in range(reps):
            if blas:
                gemm(c'N', c'N', C.shape[0], C.shape[1], A.shape[1], one, &A[0, 0], A.shape[1],
                     &W[0, 0], W.shape[1], zero, &C[0, 0], C.shape[1])
            else:
                mm(C.shape[0], C.shape[1], A.shape[1], &A[0, 0], A.shape[1], &W[0, 0],
                   W.shape[1], False, &C[0, 0], C.shape[1])
    return (time.perf_counter() - t0) / reps


def _select_simd(int level):
    """Select this module's SIMD level (-1: best supported); returns the level used."""
    return fg_simd_select(level)
