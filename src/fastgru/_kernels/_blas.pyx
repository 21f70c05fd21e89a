# cython: language_level=3
"""BLAS thread hold (shared by all kernel modules) and test hooks for the BLAS shim."""
from cython cimport floating
from fastgru._kernels._blas cimport gemm
from fastgru._kernels._matmul cimport (mm, mm_own_kn, mm_big_blas, mm_tn, nt_dot,
                                      PACK_PANEL as _PACK_PANEL)

PACK_PANEL = _PACK_PANEL  # columns per panel of packed recurrent weights (_packed.pack_panels)
from fastgru._kernels._simd cimport (fg_simd_select, fg_mm_own_level, fg_mm_own_max_k,
                                     fg_mm_big_kn, fg_mm_big_kn_default)


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


def mm_tn_memview(const floating[:, ::1] A, const floating[:, ::1] W, floating[:, ::1] C,
                  bint accumulate):
    """C (+)= A.T @ W through the weight-gradient product (A (K, M); tests only)."""
    cdef floating beta = 1 if accumulate else 0
    with nogil:
        mm_tn(C.shape[0], C.shape[1], A.shape[0], &A[0, 0], A.shape[1], &W[0, 0], W.shape[1],
              beta, &C[0, 0], C.shape[1])


def mm_route(int M, int N, int K, bint big=True):
    """"own" or "blas": where a float32 per-step product of this shape runs; big=False: as if
    the big-weight rule were off (_packed decides it by the rows of a task)."""
    return "own" if mm_own_kn(M, N, K, fg_mm_big_kn if big else 0) else "blas"


def mm_big(int M, int N, int K):
    """Whether the big-weight rule sends this product to BLAS (Intel cores; _matmul.pxd)."""
    return mm_big_blas(M, <Py_ssize_t>K * N, fg_mm_big_kn)


def nt_route(int M, int N, int K):
    """"dot" or "blas": where a float32 product with an untransposed weight (N, K) runs."""
    return "dot" if nt_dot(M, N, K) else "blas"


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


def _set_mm_own(int level, int max_k, int big_kn):
    """Per-step products on fastgru's own kernel from SIMD level `level` up, for K <= max_k;
    weights of big_kn elements or more on BLAS from 64 rows (0: never)."""
    global fg_mm_own_level, fg_mm_own_max_k, fg_mm_big_kn
    fg_mm_own_level = level
    fg_mm_own_max_k = max_k
    fg_mm_big_kn = big_kn


def mm_big_kn():
    """(in use, this CPU's default): weight elements from which 64+ rows go to BLAS (0: never)."""
    return fg_mm_big_kn, fg_mm_big_kn_default()


ctypedef int (*get_threads_t)() noexcept nogil
ctypedef void (*set_threads_t)(int) noexcept nogil
cdef get_threads_t _get_threads = NULL
cdef set_threads_t _set_threads = NULL
cdef int _holders = 0      # kernel calls in flight (changed with the GIL held)
cdef int _saved = 0        # the BLAS thread count when the first of them started


def set_thread_functions(size_t get_addr, size_t set_addr):
    """Register OpenBLAS's get/set-num-threads entry points (addresses; 0, 0 to clear)."""
    global _get_threads, _set_threads
    _get_threads = <get_threads_t>get_addr
    _set_threads = <set_threads_t>set_addr


def have_thread_functions():
    return _get_threads != NULL and _set_threads != NULL


def blas_threads():
    """The BLAS thread count as the registered functions see it (-1 when none)."""
    return _get_threads() if _get_threads != NULL else -1


cdef int blas_hold() noexcept nogil:
    """BLAS at one thread while a kernel runs; callers hold the GIL. With calls from several
    Python threads in flight, the first saves the count and the last to finish (whichever it
    is) restores it."""
    global _holders, _saved
    cdef int n
    if _get_threads == NULL or _set_threads == NULL:
        return 0
    _holders += 1
    if _holders > 1:          # another call already holds it
        return 0
    n = _get_threads()
    _saved = n
    if n != 1:
        _set_threads(1)
    return n


cdef void blas_release(int saved) noexcept nogil:
    global _holders
    if _get_threads == NULL or _set_threads == NULL:
        return
    _holders -= 1
    if _holders == 0 and _saved > 1:
        _set_threads(_saved)
