# cython: language_level=3
"""Test hook for the BLAS shim (_blas.pxd): row-major gemm on memoryviews."""
from cython cimport floating
from fastgru._kernels._blas cimport gemm


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
