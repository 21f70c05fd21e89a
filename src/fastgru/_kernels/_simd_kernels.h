/* Design: one SIMD level of the float32 gate kernels; included by _simd.h once per level with
 * FG_LEVEL (a name) and FG_TARGET (a target attribute, or nothing) defined.
 * The lane math and per-chunk gate bodies come from _simd_lanes.h, included twice below:
 * 16-lane GNU vectors for the body, plain float for the H % 16 tail (same operations, so the
 * same bits). The "rows" functions loop over batch rows and chunks and form this level's table.
 */
#define FG_STR_(a) #a
#define FG_STR(a) FG_STR_(a)
#define FG_L2_(a, b) a##_##b
#define FG_L2(a, b) FG_L2_(a, b)
#define FGL(name) FG_L2(name, FG_LEVEL)

#if defined(FG_GNU)
/* Native width per level (FG_VBYTES from _simd.h): wider generic vectors are lowered badly by
 * GCC on narrower targets (measured 15x slower), so each level uses its own register width. */
typedef float FG_L2(fg_vf, FG_LEVEL) __attribute__((vector_size(FG_VBYTES)));
typedef int32_t FG_L2(fg_vi, FG_LEVEL) __attribute__((vector_size(FG_VBYTES)));
typedef float FG_L2(fg_vu, FG_LEVEL) __attribute__((vector_size(FG_VBYTES), aligned(4), may_alias));
#define FG_VT FG_L2(fg_vf, FG_LEVEL)
#define FG_VTI FG_L2(fg_vi, FG_LEVEL)
#define FG_VTU FG_L2(fg_vu, FG_LEVEL)
#define FG_VW (FG_VBYTES / 4)
#define FG_WS v
#define FG_V FG_VT
#define FG_VI FG_VTI
#define FG_LD(p) (*(const FG_VTU *)(p))
#define FG_ST(p, v) (*(FG_VTU *)(p) = (v))
#define FG_SPLAT(c) ((FG_VT){0} + (float)(c))
#define FG_GT(a, b) ((a) > (b))
#define FG_LT(a, b) ((a) < (b))
#define FG_NE(a, b) ((a) != (b))
#define FG_ASI(x) ((FG_VTI)(x))
#define FG_ASF(i) ((FG_VT)(i))
#define FG_CVTI(x) __builtin_convertvector((x), FG_VTI)
/* min/max with x86 semantics, min(a, b) = a < b ? a : b (b when either is NaN): one
 * instruction instead of compare + blend, and the scalar tail below computes the same. */
#if defined(FG_X86) && FG_VBYTES == 64
#define FG_MIN(a, b) ((FG_VT)_mm512_min_ps((__m512)(a), (__m512)(b)))
#define FG_MAX(a, b) ((FG_VT)_mm512_max_ps((__m512)(a), (__m512)(b)))
#elif defined(FG_X86) && FG_VBYTES == 32
#define FG_MIN(a, b) ((FG_VT)_mm256_min_ps((__m256)(a), (__m256)(b)))
#define FG_MAX(a, b) ((FG_VT)_mm256_max_ps((__m256)(a), (__m256)(b)))
#elif defined(FG_X86) && FG_VBYTES == 16
#define FG_MIN(a, b) ((FG_VT)_mm_min_ps((__m128)(a), (__m128)(b)))
#define FG_MAX(a, b) ((FG_VT)_mm_max_ps((__m128)(a), (__m128)(b)))
#else
#define FG_MIN(a, b) FGF(fg_sel)(FG_LT((a), (b)), (a), (b))
#define FG_MAX(a, b) FGF(fg_sel)(FG_GT((a), (b)), (a), (b))
#endif
/* a * b + c with one rounding where the level has FMA (one instruction instead of two). */
#if defined(FG_X86) && FG_FMA_ON && FG_VBYTES == 64
#define FG_FMA(a, b, c) ((FG_VT)_mm512_fmadd_ps((__m512)(a), (__m512)(b), (__m512)(c)))
#elif defined(FG_X86) && FG_FMA_ON && FG_VBYTES == 32
#define FG_FMA(a, b, c) ((FG_VT)_mm256_fmadd_ps((__m256)(a), (__m256)(b), (__m256)(c)))
#else
#define FG_FMA(a, b, c) ((a) * (b) + (c))
#endif
#include "_simd_lanes.h"
#undef FG_FMA
#undef FG_MIN
#undef FG_MAX
#undef FG_WS
#undef FG_V
#undef FG_VI
#undef FG_LD
#undef FG_ST
#undef FG_SPLAT
#undef FG_GT
#undef FG_LT
#undef FG_NE
#undef FG_ASI
#undef FG_ASF
#undef FG_CVTI
#endif

#define FG_WS s
#define FG_V float
#define FG_VI int32_t
#define FG_LD(p) (*(p))
#define FG_ST(p, v) (*(p) = (v))
#define FG_SPLAT(c) ((float)(c))
#define FG_GT(a, b) (-(int32_t)((a) > (b)))
#define FG_LT(a, b) (-(int32_t)((a) < (b)))
#define FG_NE(a, b) (-(int32_t)((a) != (b)))
#define FG_ASI(x) fg_f2i(x)
#define FG_ASF(i) fg_i2f(i)
#define FG_CVTI(x) ((int32_t)(x))
#define FG_MIN(a, b) ((a) < (b) ? (a) : (b))
#define FG_MAX(a, b) ((a) > (b) ? (a) : (b))
#if FG_FMA_ON
#define FG_FMA(a, b, c) __builtin_fmaf((a), (b), (c)) /* the same single rounding as the lanes */
#else
#define FG_FMA(a, b, c) ((a) * (b) + (c))
#endif
#include "_simd_lanes.h"
#undef FG_FMA
#undef FG_MIN
#undef FG_MAX
#undef FG_WS
#undef FG_V
#undef FG_VI
#undef FG_LD
#undef FG_ST
#undef FG_SPLAT
#undef FG_GT
#undef FG_LT
#undef FG_NE
#undef FG_ASI
#undef FG_ASF
#undef FG_CVTI

#define FGV(name) FG_L2(FG_L2(name, FG_LEVEL), v)
#define FGS(name) FG_L2(FG_L2(name, FG_LEVEL), s)

/* Loop over a row's W columns (vector chunks, then the scalar tail); gate blocks lie GS apart
 * (GS = H for whole rows; a thread owning a slice of the hidden units passes W < GS). */
#if defined(FG_GNU)
#define FG_ROW_LOOP(chunk, ...)                                                             \
    do {                                                                                    \
        int j_ = 0;                                                                         \
        for (; j_ + FG_VW <= W; j_ += FG_VW) FGV(chunk)(__VA_ARGS__, GS, j_);               \
        for (; j_ < W; j_++) FGS(chunk)(__VA_ARGS__, GS, j_);                               \
    } while (0)
#else
#define FG_ROW_LOOP(chunk, ...)                                                             \
    do {                                                                                    \
        for (int j_ = 0; j_ < W; j_++) FGS(chunk)(__VA_ARGS__, GS, j_);                     \
    } while (0)
#endif

FG_TARGET static void FGL(fg_gru_fwd_ra)(int nb, int W, int GS, const float *gx, ptrdiff_t ldgx,
                                         const float *gh, ptrdiff_t ldgh, const float *b,
                                         float *h, ptrdiff_t ldh, float *y, ptrdiff_t ldy,
                                         float *c, ptrdiff_t ldc) {
    for (int i = 0; i < nb; i++) {
        float *y_ = y ? y + i * ldy : NULL, *c_ = c ? c + i * ldc : NULL;
        FG_ROW_LOOP(fg_gru_fwd_ra_chunk, gx + i * ldgx, gh + i * ldgh, b, h + i * ldh, y_, c_);
    }
}

FG_TARGET static void FGL(fg_gru_fwd_rb1)(int nb, int W, int GS, const float *gx, ptrdiff_t ldgx,
                                          const float *gh, ptrdiff_t ldgh, const float *b,
                                          const float *h, ptrdiff_t ldh, float *o, ptrdiff_t ldo) {
    for (int i = 0; i < nb; i++)
        FG_ROW_LOOP(fg_gru_fwd_rb1_chunk, gx + i * ldgx, gh + i * ldgh, b, h + i * ldh,
                    o + i * ldo);
}

FG_TARGET static void FGL(fg_gru_fwd_rb2)(int nb, int W, int GS, const float *gx, ptrdiff_t ldgx,
                                          const float *ghn, ptrdiff_t ldghn, const float *b,
                                          const float *rz, ptrdiff_t ldrz, float *h, ptrdiff_t ldh,
                                          float *y, ptrdiff_t ldy, float *n_out, ptrdiff_t ldn) {
    for (int i = 0; i < nb; i++) {
        float *y_ = y ? y + i * ldy : NULL, *n_ = n_out ? n_out + i * ldn : NULL;
        FG_ROW_LOOP(fg_gru_fwd_rb2_chunk, gx + i * ldgx, ghn + i * ldghn, b, rz + i * ldrz,
                    h + i * ldh, y_, n_);
    }
}

FG_TARGET static void FGL(fg_gru_bwd_ra)(int nb, int W, int GS, const float *c, ptrdiff_t ldc,
                                         const float *hp, ptrdiff_t ldhp, const float *dy,
                                         ptrdiff_t lddy, float *dh, ptrdiff_t lddh, float *dan,
                                         ptrdiff_t lddan, float *dgh, ptrdiff_t lddgh) {
    for (int i = 0; i < nb; i++) {
        const float *dy_ = dy ? dy + i * lddy : NULL;
        FG_ROW_LOOP(fg_gru_bwd_ra_chunk, c + i * ldc, hp + i * ldhp, dy_, dh + i * lddh,
                    dan + i * lddan, dgh + i * lddgh);
    }
}

FG_TARGET static void FGL(fg_gru_bwd_rb1)(int nb, int W, int GS, const float *c, ptrdiff_t ldc,
                                          const float *hp, ptrdiff_t ldhp, const float *dy,
                                          ptrdiff_t lddy, float *dh, ptrdiff_t lddh, float *dgx,
                                          ptrdiff_t lddgx) {
    for (int i = 0; i < nb; i++) {
        const float *dy_ = dy ? dy + i * lddy : NULL;
        FG_ROW_LOOP(fg_gru_bwd_rb1_chunk, c + i * ldc, hp + i * ldhp, dy_, dh + i * lddh,
                    dgx + i * lddgx);
    }
}

FG_TARGET static void FGL(fg_gru_bwd_rb2)(int nb, int W, int GS, const float *c, ptrdiff_t ldc,
                                          const float *hp, ptrdiff_t ldhp, const float *drh,
                                          ptrdiff_t lddrh, float *dh, ptrdiff_t lddh, float *dgx,
                                          ptrdiff_t lddgx) {
    for (int i = 0; i < nb; i++)
        FG_ROW_LOOP(fg_gru_bwd_rb2_chunk, c + i * ldc, hp + i * ldhp, drh + i * lddrh,
                    dh + i * lddh, dgx + i * lddgx);
}

FG_TARGET static void FGL(fg_lstm_fwd)(int nb, int W, int GS, const float *gx, ptrdiff_t ldgx,
                                       const float *gh, ptrdiff_t ldgh, const float *b, float *cs,
                                       ptrdiff_t ldcs, float *m, ptrdiff_t ldm, float *y,
                                       ptrdiff_t ldy, float *cache, ptrdiff_t ldcache) {
    for (int i = 0; i < nb; i++) {
        float *y_ = y ? y + i * ldy : NULL, *k_ = cache ? cache + i * ldcache : NULL;
        FG_ROW_LOOP(fg_lstm_fwd_chunk, gx + i * ldgx, gh + i * ldgh, b, cs + i * ldcs,
                    m + i * ldm, y_, k_);
    }
}

FG_TARGET static void FGL(fg_lstm_bwd)(int nb, int W, int GS, const float *cache, ptrdiff_t ldcache,
                                       const float *dm, ptrdiff_t lddm, const float *dy,
                                       ptrdiff_t lddy, float *dc, ptrdiff_t lddc, float *dg,
                                       ptrdiff_t lddg) {
    for (int i = 0; i < nb; i++) {
        const float *dy_ = dy ? dy + i * lddy : NULL;
        FG_ROW_LOOP(fg_lstm_bwd_chunk, cache + i * ldcache, dm + i * lddm, dy_, dc + i * lddc,
                    dg + i * lddg);
    }
}

/* Per-step matrix product, C[nb, N] (+)= A[nb, K] @ W[K, N], all row-major (routing in
 * _matmul.pxd: every row count on AVX-512, few rows elsewhere). OpenBLAS re-packs both operands
 * per call (at B = 1 its set-up was 38% of an LSTM run). Here W is read in place; 4 vectors of
 * columns stay in registers for up to 4 rows. FMA where the level has it (FG_MMA). Sums run over k in order, so results do not depend
 * on N's blocking, and AVX2 and AVX-512 agree bit for bit.                                      */
#if defined(FG_GNU)
#define FG_MM_ROWS(NB)                                                                         \
    FG_TARGET static void FG_L2(FGL(fg_mm_rows), NB)(int N, int K, const float *A,             \
                                                      ptrdiff_t sa, ptrdiff_t sk,              \
                                                      const float *W,                          \
                                                      ptrdiff_t ldw, float *C, ptrdiff_t ldc,  \
                                                      int beta) {                              \
        const int w = FG_VW;                                                                   \
        int j = 0;                                                                             \
        for (; j + 4 * w <= N; j += 4 * w) {                                                   \
            FG_VT acc[NB][4];                                                                  \
            for (int i = 0; i < NB; i++)                                                       \
                for (int v = 0; v < 4; v++)                                                    \
                    acc[i][v] = beta ? FG_VLD(C + i * ldc + j + w * v) : (FG_VT){0};           \
            for (int k = 0; k < K; k++) {                                                      \
                const float *wk = W + k * ldw + j;                                             \
                FG_VT w0 = FG_VLD(wk), w1 = FG_VLD(wk + w), w2 = FG_VLD(wk + 2 * w),           \
                      w3 = FG_VLD(wk + 3 * w);                                                 \
                for (int i = 0; i < NB; i++) {                                                 \
                    FG_VT a = (FG_VT){0} + A[i * sa + k * sk];                                     \
                    acc[i][0] = FG_MMA(a, w0, acc[i][0]);                                      \
                    acc[i][1] = FG_MMA(a, w1, acc[i][1]);                                      \
                    acc[i][2] = FG_MMA(a, w2, acc[i][2]);                                      \
                    acc[i][3] = FG_MMA(a, w3, acc[i][3]);                                      \
                }                                                                              \
            }                                                                                  \
            for (int i = 0; i < NB; i++)                                                       \
                for (int v = 0; v < 4; v++) FG_VST(C + i * ldc + j + w * v, acc[i][v]);       \
        }                                                                                      \
        for (; j + w <= N; j += w) {                                                           \
            FG_VT acc[NB];                                                                     \
            for (int i = 0; i < NB; i++)                                                       \
                acc[i] = beta ? FG_VLD(C + i * ldc + j) : (FG_VT){0};                          \
            for (int k = 0; k < K; k++) {                                                      \
                FG_VT w0 = FG_VLD(W + k * ldw + j);                                            \
                for (int i = 0; i < NB; i++)                                                   \
                    acc[i] = FG_MMA((FG_VT){0} + A[i * sa + k * sk], w0, acc[i]);                  \
            }                                                                                  \
            for (int i = 0; i < NB; i++) FG_VST(C + i * ldc + j, acc[i]);                      \
        }                                                                                      \
        FG_MM_TAIL(NB)                                                                         \
        for (; j < N; j++)                                                                     \
            for (int i = 0; i < NB; i++) {                                                     \
                float acc = beta ? C[i * ldc + j] : 0.0f;                                      \
                for (int k = 0; k < K; k++) acc = FG_SMA(A[i * sa + k * sk], W[k * ldw + j], acc); \
                C[i * ldc + j] = acc;                                                          \
            }                                                                                  \
    }
/* The last N % lanes columns as one masked vector (a scalar loop per column there was 1.5x
 * slower at H = 100). Masked lanes give the same bits as the scalar FG_SMA lanes would. */
#if defined(FG_X86) && FG_FMA_ON && (FG_VBYTES == 64 || FG_VBYTES == 32)
#if FG_VBYTES == 64
#define FG_MASK_T __mmask16
#define FG_MASK(n) ((__mmask16)((1u << (n)) - 1u))
#define FG_VLDM(p, m) ((FG_VT)_mm512_maskz_loadu_ps((m), (p)))
#define FG_VSTM(p, m, v) _mm512_mask_storeu_ps((p), (m), (__m512)(v))
#else
#define FG_MASK_T __m256i
#define FG_MASK(n) _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
#define FG_VLDM(p, m) ((FG_VT)_mm256_maskload_ps((p), (m)))
#define FG_VSTM(p, m, v) _mm256_maskstore_ps((p), (m), (__m256)(v))
#endif
#define FG_MM_TAIL(NB)                                                                         \
        if (j < N) {                                                                           \
            const FG_MASK_T m = FG_MASK(N - j);                                                \
            FG_VT acc[NB];                                                                     \
            for (int i = 0; i < NB; i++)                                                       \
                acc[i] = beta ? FG_VLDM(C + i * ldc + j, m) : (FG_VT){0};                      \
            for (int k = 0; k < K; k++) {                                                      \
                FG_VT w0 = FG_VLDM(W + k * ldw + j, m);                                        \
                for (int i = 0; i < NB; i++)                                                   \
                    acc[i] = FG_MMA((FG_VT){0} + A[i * sa + k * sk], w0, acc[i]);                  \
            }                                                                                  \
            for (int i = 0; i < NB; i++) FG_VSTM(C + i * ldc + j, m, acc[i]);                  \
            j = N;                                                                             \
        }
#else
#define FG_MM_TAIL(NB)
#endif
#define FG_VLD(p) ((FG_VT)(*(const FG_VTU *)(p)))
#define FG_VST(p, v) (*(FG_VTU *)(p) = (v))
#if defined(FG_X86) && FG_FMA_ON && FG_VBYTES == 64
#define FG_MMA(a, b, c) ((FG_VT)_mm512_fmadd_ps((__m512)(a), (__m512)(b), (__m512)(c)))
#define FG_SMA(a, b, c) __builtin_fmaf((a), (b), (c))
#elif defined(FG_X86) && FG_FMA_ON && FG_VBYTES == 32
#define FG_MMA(a, b, c) ((FG_VT)_mm256_fmadd_ps((__m256)(a), (__m256)(b), (__m256)(c)))
#define FG_SMA(a, b, c) __builtin_fmaf((a), (b), (c))
#else
#define FG_MMA(a, b, c) ((a) * (b) + (c))
#define FG_SMA(a, b, c) ((a) * (b) + (c))
#endif
FG_MM_ROWS(1)
FG_MM_ROWS(2)
FG_MM_ROWS(3)
FG_MM_ROWS(4)
#if defined(FG_X86) && FG_VBYTES == 64
/* 5-6 rows: 24 accumulators + 4 weight vectors fit AVX-512's 32 registers (not AVX2's 16) */
FG_MM_ROWS(5)
FG_MM_ROWS(6)
#endif
#undef FG_VLD
#undef FG_VST
#undef FG_MMA
#undef FG_SMA
#undef FG_MM_ROWS
#undef FG_MM_TAIL
#undef FG_MASK_T
#undef FG_MASK
#undef FG_VLDM
#undef FG_VSTM

/* One panel (n <= 4 vectors of columns) for nb rows in groups: C[nb, n] (+)= A'[nb, K] @
 * W[K, n] with A'[i, k] = A[i * sa + k * sk]. Every group streams the panel from L2 again,
 * and a group of one or two rows has too few FMAs per k to hide that: one row cost 44% of a
 * four-row group (LSTM H = 384, B = 5 vs 4). So on AVX-512 the last 5 or 6 rows go as one
 * group (AVX2 has too few registers): LSTM T = 300, I = 40, H = 384 inference at 1 thread,
 * B = 5 23.2 -> 19.6 ms, B = 9 38.1 -> 34.6, B = 13 53.0 -> 49.3. Groups of 4 stay the
 * rule: 6-row groups throughout made LSTM S2 training 7% slower. Each row's sums are the same
 * in any group. */
FG_TARGET static void FGL(fg_mm_groups)(int nb, int n, int K, const float *a, ptrdiff_t sa,
                                        ptrdiff_t sk, const float *w, ptrdiff_t ldw, float *c,
                                        ptrdiff_t ldc, int beta) {
    for (int left = nb; left > 0;) {
#if defined(FG_X86) && FG_VBYTES == 64
        int g = left == 5 || left == 6 ? left : left >= 4 ? 4 : left;
#else
        int g = left >= 4 ? 4 : left;
#endif
        switch (g) {
#if defined(FG_X86) && FG_VBYTES == 64
        case 6: FG_L2(FGL(fg_mm_rows), 6)(n, K, a, sa, sk, w, ldw, c, ldc, beta); break;
        case 5: FG_L2(FGL(fg_mm_rows), 5)(n, K, a, sa, sk, w, ldw, c, ldc, beta); break;
#endif
        case 4: FG_L2(FGL(fg_mm_rows), 4)(n, K, a, sa, sk, w, ldw, c, ldc, beta); break;
        case 3: FG_L2(FGL(fg_mm_rows), 3)(n, K, a, sa, sk, w, ldw, c, ldc, beta); break;
        case 2: FG_L2(FGL(fg_mm_rows), 2)(n, K, a, sa, sk, w, ldw, c, ldc, beta); break;
        default: FG_L2(FGL(fg_mm_rows), 1)(n, K, a, sa, sk, w, ldw, c, ldc, beta); break;
        }
        left -= g;
        a += g * sa;
        c += g * ldc;
    }
}

/* C[nb, N] (+)= A'[nb, K] @ W[K, N]: column panels outer, row groups inner, so a panel of W
 * (K x 4 vectors) is read from L2 once and reused by every row group, instead of all of W per
 * row group. */
FG_TARGET static void FGL(fg_mm_panels)(int nb, int N, int K, const float *A, ptrdiff_t sa,
                                        ptrdiff_t sk, const float *W, ptrdiff_t ldw, float *C,
                                        ptrdiff_t ldc, int beta) {
    const int pw = 4 * FG_VW;
    for (int j = 0; j < N; j += pw)
        FGL(fg_mm_groups)(nb, N - j < pw ? N - j : pw, K, A, sa, sk, W + j, ldw, C + j, ldc,
                          beta);
}

/* K in blocks of FG_MM_KB rows: a block of a panel spans FG_MM_KB rows of W, each ldw floats
 * apart (16 KiB at N = 4096: one 4 KiB page per row), so blocking keeps the panel's pages
 * within the TLB and its 64 KiB in L2. The sums still run over k in order (C holds the
 * partial sum between blocks, exactly), so blocking does not change a bit. */
#define FG_MM_KB 256
#define FG_MM_MB 256
FG_TARGET static void FGL(fg_mm_small)(int nb, int N, int K, const float *A, ptrdiff_t lda,
                                       const float *W, ptrdiff_t ldw, float *C, ptrdiff_t ldc,
                                       int beta) {
    /* Many rows (the input projection and dx over all packed rows): blocks of FG_MM_MB rows,
     * so a block of A stays in L2 while every panel of W passes over it. */
    for (int i0 = 0; i0 < nb; i0 += FG_MM_MB) {
        const int mb = nb - i0 < FG_MM_MB ? nb - i0 : FG_MM_MB;
        const float *a = A + (ptrdiff_t)i0 * lda;
        float *c = C + (ptrdiff_t)i0 * ldc;
        if (K <= FG_MM_KB || mb == 1) { /* one row streams W once anyway */
            FGL(fg_mm_panels)(mb, N, K, a, lda, 1, W, ldw, c, ldc, beta);
            continue;
        }
        for (int k0 = 0; k0 < K; k0 += FG_MM_KB) {
            int kb = K - k0 < FG_MM_KB ? K - k0 : FG_MM_KB;
            FGL(fg_mm_panels)(mb, N, kb, a + k0, lda, 1, W + (ptrdiff_t)k0 * ldw, ldw, c, ldc,
                              beta || k0 > 0);
        }
    }
}

/* Weight gradients, C[M, N] (+)= A[K, M].T @ W[K, N] (K = all packed rows, thousands): blocks
 * of FG_MM_KB rows keep a K-block of W's panel (64 KiB) and of A in L2; C is revisited once per
 * block. OpenBLAS spent 40% of such a call packing A.T (measured at S1 training). */
FG_TARGET static void FGL(fg_mm_tn)(int M, int N, int K, const float *A, ptrdiff_t lda,
                                    const float *W, ptrdiff_t ldw, float *C, ptrdiff_t ldc,
                                    int beta) {
    for (int k0 = 0; k0 < K || k0 == 0; k0 += FG_MM_KB) {
        int kb = K - k0 < FG_MM_KB ? K - k0 : FG_MM_KB;
        FGL(fg_mm_panels)(M, N, kb, A + (ptrdiff_t)k0 * lda, 1, lda, W + (ptrdiff_t)k0 * ldw,
                          ldw, C, ldc, beta || k0 > 0);
    }
}
#undef FG_MM_KB
#undef FG_MM_MB

/* The per-step product with W packed in panels (the forward's recurrent weights, packed once
 * per call): panel p holds columns p*pw .. p*pw + pw - 1 of W for every k, contiguous
 * (P[p][k][0:pw], zero-padded). Rows of a panel are then adjacent instead of a page apart at
 * large N: 110 vs 90 GFLOP/s at S4's (128 x 1024) @ (1024 x 4096). Same sums as fg_mm_small. */
FG_TARGET static void FGL(fg_mm_packed)(int nb, int N, int K, const float *A, ptrdiff_t lda,
                                        const float *P, ptrdiff_t pw, float *C, ptrdiff_t ldc,
                                        int beta) {
    /* K in blocks of 1024 rows (256 KiB of a panel stays in L2 while the row groups pass;
     * the backward's K = 4H reaches 4096 at S4); C holds the partial sums, exactly */
    for (int j = 0; j < N; j += (int)pw) {
        const int n = N - j < pw ? N - j : (int)pw;
        for (int k0 = 0; k0 < K || k0 == 0; k0 += 1024) {
            const int kb = K - k0 < 1024 ? K - k0 : 1024;
            const float *w = P + (ptrdiff_t)(j / pw) * K * pw + (ptrdiff_t)k0 * pw;
            FGL(fg_mm_groups)(nb, n, kb, A + k0, lda, 1, w, pw, C + j, ldc, beta || k0 > 0);
        }
    }
}
#else
FG_TARGET static void FGL(fg_mm_small)(int nb, int N, int K, const float *A, ptrdiff_t lda,
                                       const float *W, ptrdiff_t ldw, float *C, ptrdiff_t ldc,
                                       int beta) {
    for (int i = 0; i < nb; i++)
        for (int j = 0; j < N; j++) {
            float acc = beta ? C[i * ldc + j] : 0.0f;
            for (int k = 0; k < K; k++) acc += A[i * lda + k] * W[k * ldw + j];
            C[i * ldc + j] = acc;
        }
}

FG_TARGET static void FGL(fg_mm_tn)(int M, int N, int K, const float *A, ptrdiff_t lda,
                                    const float *W, ptrdiff_t ldw, float *C, ptrdiff_t ldc,
                                    int beta) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float acc = beta ? C[i * ldc + j] : 0.0f;
            for (int k = 0; k < K; k++) acc += A[k * lda + i] * W[k * ldw + j];
            C[i * ldc + j] = acc;
        }
}

FG_TARGET static void FGL(fg_mm_packed)(int nb, int N, int K, const float *A, ptrdiff_t lda,
                                        const float *P, ptrdiff_t pw, float *C, ptrdiff_t ldc,
                                        int beta) {
    for (int i = 0; i < nb; i++)
        for (int j = 0; j < N; j++) {
            const float *w = P + (ptrdiff_t)(j / pw) * K * pw + j % pw;
            float acc = beta ? C[i * ldc + j] : 0.0f;
            for (int k = 0; k < K; k++) acc += A[i * lda + k] * w[k * pw];
            C[i * ldc + j] = acc;
        }
}
#endif

/* Streaming steps (B <= 8): y[n] = W[n, :K] . x for PyTorch-layout rows (the stepper reads the
 * weights in place). A step is two matrix-vector products bound by streaming W from L2
 * (983 KB at I = 64, H = 256); OpenBLAS's gemv and small gemm ran 1.5-2x slower than that
 * bound, and 4-5x slower at B = 8 (a path with per-call packing). Here 8 (row, batch row)
 * pairs are in flight, each with its own accumulator over k (16 or 8 lanes, masked tail), then
 * one transposing add tree per 8 pairs. NULL at the baseline level. */
#if defined(FG_X86) && FG_FMA_ON && FG_VBYTES == 64
FG_TARGET static inline __m256 FGL(fg_sum8)(__m512 a0, __m512 a1, __m512 a2, __m512 a3,
                                           __m512 a4, __m512 a5, __m512 a6, __m512 a7) {
    /* pairs of rows: 128-bit quarters q0+q2 | q1+q3 of row a, then of row b */
    __m512 b0 = _mm512_add_ps(_mm512_shuffle_f32x4(a0, a1, 0x44), _mm512_shuffle_f32x4(a0, a1, 0xEE));
    __m512 b1 = _mm512_add_ps(_mm512_shuffle_f32x4(a2, a3, 0x44), _mm512_shuffle_f32x4(a2, a3, 0xEE));
    __m512 b2 = _mm512_add_ps(_mm512_shuffle_f32x4(a4, a5, 0x44), _mm512_shuffle_f32x4(a4, a5, 0xEE));
    __m512 b3 = _mm512_add_ps(_mm512_shuffle_f32x4(a6, a7, 0x44), _mm512_shuffle_f32x4(a6, a7, 0xEE));
    /* quarter r of c0 holds 4 partial sums of row r (rows 0-3); c1 rows 4-7 */
    __m512 c0 = _mm512_add_ps(_mm512_shuffle_f32x4(b0, b1, 0x88), _mm512_shuffle_f32x4(b0, b1, 0xDD));
    __m512 c1 = _mm512_add_ps(_mm512_shuffle_f32x4(b2, b3, 0x88), _mm512_shuffle_f32x4(b2, b3, 0xDD));
    __m512 d = _mm512_add_ps(_mm512_unpacklo_ps(c0, c1), _mm512_unpackhi_ps(c0, c1));
    __m512 e = _mm512_add_ps(d, _mm512_permute_ps(d, 0x4E)); /* quarter r: [r, r+4, r, r+4] */
    __m512 f = _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 0, 0, 0, 0, 0, 0, 0, 0), e);
    return _mm512_castps512_ps256(f);
}
#define FG_DV __m512
#define FG_DW 16
#define FG_DZERO _mm512_setzero_ps()
#define FG_DMASK_T __mmask16
#define FG_DMASK(n) ((__mmask16)((1u << (n)) - 1u))
#define FG_DLD(p) _mm512_loadu_ps(p)
#define FG_DLDM(p, m) _mm512_maskz_loadu_ps((m), (p))
#define FG_DFMA(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define FG_DSUM1(a) _mm512_reduce_add_ps(a)
#elif defined(FG_X86) && FG_FMA_ON && FG_VBYTES == 32
FG_TARGET static inline __m256 FGL(fg_sum8)(__m256 a0, __m256 a1, __m256 a2, __m256 a3,
                                           __m256 a4, __m256 a5, __m256 a6, __m256 a7) {
    __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
    __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(a4, a5), _mm256_hadd_ps(a6, a7));
    /* u0: [rows 0-3 of the low 128 bits | rows 0-3 of the high]; u1 likewise for rows 4-7 */
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}
FG_TARGET static inline float FGL(fg_sum1)(__m256 a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
#define FG_DV __m256
#define FG_DW 8
#define FG_DZERO _mm256_setzero_ps()
#define FG_DMASK_T __m256i
#define FG_DMASK(n) _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
#define FG_DLD(p) _mm256_loadu_ps(p)
#define FG_DLDM(p, m) _mm256_maskload_ps((p), (m))
#define FG_DFMA(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define FG_DSUM1(a) FGL(fg_sum1)(a)
#endif
#if defined(FG_DV)
/* NB batch rows (1, 2 or 4) against R rows of W (8 or 16 accumulators; 16 with 2 or 4 batch
 * rows: 86-93 against 72-81 GFLOP/s with 8), W read once per group of batch rows. Row i of the group reads x row xi[i] and writes y row yi[i]; a group
 * of 3 repeats its last row (same sums to the same place). */
#define FG_DOT_GROUP(NB, R)                                                                    \
    FG_TARGET static void FG_L2(FGL(fg_dot_group), NB)(int N, int K, const float *W,          \
                                                       ptrdiff_t ldw, const float *const *xi,  \
                                                       float *const *yi) {                     \
        const int kv = K - K % FG_DW;                                                          \
        const FG_DMASK_T m = FG_DMASK(K % FG_DW);                                              \
        int n = 0;                                                                             \
        for (; n + R <= N; n += R) {                                                           \
            const float *w = W + (ptrdiff_t)n * ldw;                                           \
            FG_DV a[R * NB];                                                                   \
            float s[R * NB];                                                                   \
            for (int r = 0; r < R * NB; r++) a[r] = FG_DZERO;                                  \
            int k = 0;                                                                         \
            for (; k < kv; k += FG_DW) {                                                       \
                FG_DV xv[NB];                                                                  \
                for (int b = 0; b < NB; b++) xv[b] = FG_DLD(xi[b] + k);                        \
                for (int r = 0; r < R; r++) {                                                  \
                    const FG_DV wv = FG_DLD(w + r * ldw + k);                                  \
                    for (int b = 0; b < NB; b++) a[r * NB + b] = FG_DFMA(wv, xv[b], a[r * NB + b]); \
                }                                                                              \
            }                                                                                  \
            if (k < K) {                                                                       \
                FG_DV xv[NB];                                                                  \
                for (int b = 0; b < NB; b++) xv[b] = FG_DLDM(xi[b] + k, m);                    \
                for (int r = 0; r < R; r++) {                                                  \
                    const FG_DV wv = FG_DLDM(w + r * ldw + k, m);                              \
                    for (int b = 0; b < NB; b++) a[r * NB + b] = FG_DFMA(wv, xv[b], a[r * NB + b]); \
                }                                                                              \
            }                                                                                  \
            for (int q = 0; q < R * NB; q += 8)                                                \
                _mm256_storeu_ps(NB == 1 ? yi[0] + n + q : s + q,                              \
                                 FGL(fg_sum8)(a[q], a[q + 1], a[q + 2], a[q + 3], a[q + 4],     \
                                              a[q + 5], a[q + 6], a[q + 7]));                   \
            if (NB > 1)                                                                        \
                for (int r = 0; r < R; r++)                                                    \
                    for (int b = 0; b < NB; b++) yi[b][n + r] = s[r * NB + b];                 \
        }                                                                                      \
        for (; n < N; n++) {                                                                   \
            const float *w = W + (ptrdiff_t)n * ldw;                                           \
            for (int b = 0; b < NB; b++) {                                                     \
                FG_DV a = FG_DZERO;                                                            \
                int k = 0;                                                                     \
                for (; k < kv; k += FG_DW) a = FG_DFMA(FG_DLD(w + k), FG_DLD(xi[b] + k), a);   \
                if (k < K) a = FG_DFMA(FG_DLDM(w + k, m), FG_DLDM(xi[b] + k, m), a);           \
                yi[b][n] = FG_DSUM1(a);                                                        \
            }                                                                                  \
        }                                                                                      \
    }
FG_DOT_GROUP(1, 8)
FG_DOT_GROUP(2, 8)
FG_DOT_GROUP(4, 4)
#undef FG_DOT_GROUP

/* Y[nb, N] = X[nb, K] @ W[N, K].T (row strides ldx, ldy): batch rows in groups of 4, 2, 1. */
FG_TARGET static void FGL(fg_dot_rows)(int nb, int N, int K, const float *W, ptrdiff_t ldw,
                                       const float *X, ptrdiff_t ldx, float *Y, ptrdiff_t ldy) {
    for (int i = 0; i < nb;) {
        const int left = nb - i, g = left >= 3 ? 4 : left;
        const float *xi[4];
        float *yi[4];
        for (int b = 0; b < g; b++) {
            const int row = i + (b < left ? b : left - 1);
            xi[b] = X + (ptrdiff_t)row * ldx;
            yi[b] = Y + (ptrdiff_t)row * ldy;
        }
        if (g == 4) FG_L2(FGL(fg_dot_group), 4)(N, K, W, ldw, xi, yi);
        else if (g == 2) FG_L2(FGL(fg_dot_group), 2)(N, K, W, ldw, xi, yi);
        else FG_L2(FGL(fg_dot_group), 1)(N, K, W, ldw, xi, yi);
        i += left >= 4 ? 4 : left;
    }
}
#define FG_DOT_ROWS FGL(fg_dot_rows)
#undef FG_DV
#undef FG_DW
#undef FG_DZERO
#undef FG_DMASK_T
#undef FG_DMASK
#undef FG_DLD
#undef FG_DLDM
#undef FG_DFMA
#undef FG_DSUM1
#else
#define FG_DOT_ROWS NULL
#endif

/* Elementwise maps, for the accuracy tests of the lane math. */
#define FG_MAP(fname)                                                                       \
    FG_TARGET static void FGL(fg_map_##fname)(ptrdiff_t n, const float *in, float *out) {   \
        int W = (int)n, GS = W; /* callers pass n < 2^31 */                                 \
        FG_ROW_LOOP(fg_map_##fname##_chunk, in, out);                                       \
    }
FG_MAP(exp)
FG_MAP(sigmoid)
FG_MAP(tanh)
#undef FG_MAP

static const fg_simd_table FG_L2(fg_table, FG_LEVEL) = {
    FG_STR(FG_LEVEL),     FGL(fg_gru_fwd_ra),  FGL(fg_gru_fwd_rb1), FGL(fg_gru_fwd_rb2),
    FGL(fg_gru_bwd_ra),   FGL(fg_gru_bwd_rb1), FGL(fg_gru_bwd_rb2), FGL(fg_lstm_fwd),
    FGL(fg_lstm_bwd),     FGL(fg_map_exp),     FGL(fg_map_sigmoid), FGL(fg_map_tanh),
    FGL(fg_mm_small),     FGL(fg_mm_tn),        FGL(fg_mm_packed),   FG_DOT_ROWS,
};
#undef FG_DOT_ROWS

#undef FG_ROW_LOOP
#if defined(FG_GNU)
#undef FG_VT
#undef FG_VTI
#undef FG_VTU
#undef FG_VW
#endif
#undef FGV
#undef FGS
#undef FGL
#undef FG_L2
#undef FG_L2_
#undef FG_STR
#undef FG_STR_
