# Design: the per-step recurrent products of the kernels, C[M, N] (+)= A[M, K] @ W[K, N]
# (row-major, W untransposed). float32 on AVX-512: fastgru's own register-tiled kernel
# (_simd_kernels.h mm_small: 4 rows x 64 columns of accumulators, W read in place, panels
# outer so each W panel is reused from L2 by every row group). Per step OpenBLAS re-packs
# both operands; the own kernel does not, and ran 1.15x (1 thread) to 1.3x (2 threads) faster
# end to end at S2/S3, up to 1.7x at B=16, H=512 (bench/ab_own_matmul.py).
# Otherwise BLAS through the shim, except for few rows (below).
from cython cimport floating
from libc.string cimport memcpy
from fastgru._kernels._blas cimport gemm
from fastgru._kernels._simd cimport (fg_simd, fg_simd_level, fg_mm_own_level, fg_mm_own_max_k,
                                     fg_mm_big_kn)

# When the own kernel is used:
# - one row always (it is at the L2 streaming limit, ~100 GB/s, with no call set-up), and up
#   to 4 rows when W is too big for L2 (OpenBLAS re-packs W per call: 2.4 ms vs 0.44-0.9 ms at
#   K=1024, N=3072); measured in bench/test_small_matmul.py;
# - any row count at SIMD level >= fg_mm_own_level (AVX-512: with AVX2's 16 registers the
#   4x4-vector tile spills and OpenBLAS was 1.2x faster) when K <= fg_mm_own_max_k (a K x 64
#   panel stays in L2; at S4's K = 4096 backward OpenBLAS's blocking wins) and the product is
#   not tiny (N >= 64, K*N >= 8192: there OpenBLAS's small-matrix kernels were up to 1.2x faster
#   at 32-64 rows; with 256 rows or more the own kernel was 1.12-1.23x faster from K*N = 2048);
# - except, on Intel AVX-512 cores, products of 64 rows or more over a weight beyond L2
#   (fg_mm_big_kn in _simd.h: there OpenBLAS's kernel was faster; few rows per task, as at 16
#   threads, stayed faster on the own kernel).
cdef enum:
    SMALL_M = 4
    BIG_W = 262144      # elements of W (1 MiB of float32)
    OWN_MIN_N = 64      # below a full AVX-512 panel (4 x 16 columns) OpenBLAS's small kernels win
    OWN_MIN_KN = 8192
    OWN_ROWS_M = 256      # a row block of the own kernel (FG_MM_MB) or more:
    OWN_ROWS_MIN_KN = 2048  # own from K*N >= 2048 (1.12-1.23x over OpenBLAS at K*N = 3-12K)
    OWN_TN_MIN_N = 16
    PACK_PANEL = 64         # columns per packed panel (4 AVX-512 vectors: one register tile)
    OWN_TN_MAX_MN = 262144  # C (1 MiB) stays in L2 across K-blocks; S4's 16 MiB C: BLAS won
    BIG_ROWS_M = 64         # rows from which weights of fg_mm_big_kn elements go to BLAS


cdef inline bint mm_big_blas(int M, Py_ssize_t kn, int big_kn) noexcept nogil:
    """Whether M rows over a weight of kn elements go to BLAS for its size (big_kn > 0)."""
    return big_kn > 0 and M >= BIG_ROWS_M and kn >= big_kn


cdef inline bint mm_own_kn(int M, int N, int K, int big_kn) noexcept nogil:
    """mm_own with the big-weight rule's threshold given (0: off)."""
    cdef Py_ssize_t kn = <Py_ssize_t>K * N
    return (M == 1 or (M <= SMALL_M and kn >= BIG_W)
            or (K <= fg_mm_own_max_k and N >= OWN_MIN_N
                and kn >= (OWN_ROWS_MIN_KN if M >= OWN_ROWS_M else OWN_MIN_KN)
                and fg_simd_level() >= fg_mm_own_level and not mm_big_blas(M, kn, big_kn)))


cdef inline bint mm_own(int M, int N, int K) noexcept nogil:
    """Whether a float32 product of this shape runs on the own kernel (else BLAS)."""
    return mm_own_kn(M, N, K, fg_mm_big_kn)


cdef inline void mm(int M, int N, int K, const floating* A, int lda, const floating* W, int ldw,
                    bint accumulate, floating* C, int ldc) noexcept nogil:
    """C = A @ W, or C += A @ W when accumulate."""
    cdef floating one = 1, zero = 0
    if M <= 0 or N <= 0:
        return
    if floating is float:
        if mm_own(M, N, K):
            fg_simd.mm_small(M, N, K, A, lda, W, ldw, C, ldc, accumulate)
            return
    gemm(c'N', c'N', M, N, K, one, A, lda, W, ldw, one if accumulate else zero, C, ldc)


cdef inline void mm_proj(int M, int N, int K, const floating* A, int lda, const floating* W,
                         int ldw, floating* C, int ldc) noexcept nogil:
    """C = A @ W for one step's rows of the input projection (gx_step), routed as the one
    projection over all rows that it replaces: per-step products on the own kernel keep gx
    in L2 (OpenBLAS's per-call set-up would be paid every step)."""
    cdef floating one = 1, zero = 0
    if M <= 0 or N <= 0:
        return
    if floating is float:
        if mm_own(max(M, <int>OWN_ROWS_M), N, K):
            fg_simd.mm_small(M, N, K, A, lda, W, ldw, C, ldc, False)
            return
    gemm(c'N', c'N', M, N, K, one, A, lda, W, ldw, zero, C, ldc)


cdef inline void project(int M, int N, int K, const floating* x, const floating* w_ih, bint wt,
                         floating* gx) noexcept nogil:
    """gx[M, N] = x[M, K] @ W_ih.T, the input projection of M packed rows: W_ih given
    transposed (K, N) (wt: mm_proj, the same sums as the per-step projection) or in PyTorch
    layout (N, K) (short sequences)."""
    if wt:
        mm_proj(M, N, K, x, K, w_ih, N, gx, N)
    else:
        mm_nt(M, N, K, x, K, w_ih, gx, N)


cdef inline void project_step(int M, int N, int K, const floating* x, Py_ssize_t row,
                              const Py_ssize_t* xrow, const floating* wt_ih, int ldw,
                              floating* xg, floating* gx) noexcept nogil:
    """gx[M, N] = x[M, K] @ W_ih.T for one step's M packed rows row .. row+M-1 (gx_step): read
    from the packed x, or, with xrow, from the padded batch's rows x[xrow[row + i]], gathered
    into xg (M, K) while they are needed instead of in a packing pass. wt_ih: W_ih.T (K, ldw),
    this direction's columns."""
    cdef int i
    if xrow == NULL:
        x = x + row * K
    else:
        for i in range(M):
            memcpy(xg + <Py_ssize_t>i * K, x + xrow[row + i] * K, K * sizeof(floating))
        x = xg
    # gx[M, N] = x[M, K] @ W_ih.T[K, N]   (this step's rows: read back from L2)
    mm_proj(M, N, K, x, K, wt_ih, ldw, gx, N)


cdef enum:
    NT_DOT_MAX_M = 16       # dot_rows for up to this many rows at any size,
    NT_DOT_BIG_MAX_M = 64   # and up to this many for a weight of at least
    NT_DOT_BIG_KN = 32768   # this many elements (128 KiB of float32)


cdef inline bint nt_dot(int M, int N, int K) noexcept nogil:
    """Whether a float32 mm_nt of this shape runs on dot_rows (else BLAS)."""
    return fg_simd.dot_rows != NULL and (M <= NT_DOT_MAX_M or (
        M <= NT_DOT_BIG_MAX_M and <Py_ssize_t>K * N >= NT_DOT_BIG_KN))


cdef inline void mm_nt(int M, int N, int K, const floating* A, int lda, const floating* W,
                       floating* C, int ldc) noexcept nogil:
    """C = A @ W.T for W (N, K) in PyTorch layout (rows K apart): float32 with 1-16 rows (1-64
    for a weight of 32768 elements or more) on the streaming steps' dot_rows (_simd_kernels.h),
    else BLAS. OpenBLAS's sgemm with op(W) = W.T was 3-5.5x slower at 1-2 rows, H = 512 (short
    sequences, T = 1 training steps, one sequence read in place); at T = 1, 1 thread, LSTM
    H = 384, I = 128 B = 33: 0.82 vs 0.65 ms, GRU H = 256 B = 17: 0.19 vs 0.13 ms. At 128 rows
    (GRU H = 256: 0.75 vs 0.80 ms) and for small weights (GRU H = 64, B = 64: 0.058 vs 0.066 ms)
    OpenBLAS was faster. The stepper keeps 2-4 rows on BLAS (_stream.pyx _xwt: measured equal)."""
    cdef floating one = 1, zero = 0
    if M <= 0 or N <= 0:
        return
    if floating is float:
        if nt_dot(M, N, K):
            fg_simd.dot_rows(M, N, K, W, K, A, lda, C, ldc)
            return
    gemm(c'N', c'T', M, N, K, one, A, lda, W, K, zero, C, ldc)


cdef inline void mm_w(int M, int N, int K, const floating* A, int lda, const floating* W,
                      bint transposed, bint accumulate, floating* C, int ldc) noexcept nogil:
    """C (+)= A @ W.T for a weight W of PyTorch layout (N, K), given either as is
    (transposed=False: BLAS with op(W) = W.T) or as a transposed copy (K, N) (transposed=True:
    the faster small-matrix path; the copy costs G*(I+H) moves per call, so short sequences
    skip it)."""
    cdef floating one = 1
    if transposed:
        mm(M, N, K, A, lda, W, N, accumulate, C, ldc)
    elif not accumulate:
        mm_nt(M, N, K, A, lda, W, C, ldc)
    else:
        gemm(c'N', c'T', M, N, K, one, A, lda, W, K, one, C, ldc)


cdef inline void mm_tn(int M, int N, int K, const floating* A, int lda, const floating* W,
                       int ldw, floating beta, floating* C, int ldc) noexcept nogil:
    """C = A.T @ W + beta * C (beta 0 or 1) with A given (K, M): the weight gradients over all
    K packed rows. Own kernel (K-blocked, no packing) on the own route's SIMD levels when C
    fits L2 (at S1-S3 training: 1.1-1.35x faster end to end than OpenBLAS, which spent 40% of
    these calls packing A.T)."""
    cdef floating one = 1
    if M <= 0 or N <= 0:
        return
    if floating is float:
        if (fg_simd_level() >= fg_mm_own_level and N >= OWN_TN_MIN_N
                and <Py_ssize_t>M * N <= OWN_TN_MAX_MN):
            fg_simd.mm_tn(M, N, K, A, lda, W, ldw, C, ldc, beta != 0)
            return
    gemm(c'T', c'N', M, N, K, one, A, lda, W, ldw, beta, C, ldc)


cdef inline void mm_packed(int M, int N, int K, const floating* A, int lda, const floating* P,
                           bint accumulate, floating* C, int ldc) noexcept nogil:
    """C (+)= A @ W with W (K, N) packed in panels of PACK_PANEL columns (_packed.pack_panels,
    _packed.pack_panels_bwd). The caller packs float32 weights only, and only where the own
    kernel wins (_packed.packs)."""
    if M <= 0 or N <= 0:
        return
    if floating is float:
        fg_simd.mm_packed(M, N, K, A, lda, P, PACK_PANEL, C, ldc, accumulate)
