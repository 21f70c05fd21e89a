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
#ifndef FG_VEC_TYPES
#define FG_VEC_TYPES
typedef float fg_v16 __attribute__((vector_size(64)));
typedef int32_t fg_v16i __attribute__((vector_size(64)));
typedef float fg_v16u __attribute__((vector_size(64), aligned(4), may_alias));
#endif
#define FG_WS v
#define FG_V fg_v16
#define FG_VI fg_v16i
#define FG_LD(p) (*(const fg_v16u *)(p))
#define FG_ST(p, v) (*(fg_v16u *)(p) = (v))
#define FG_SPLAT(c) ((fg_v16){0} + (float)(c))
#define FG_GT(a, b) ((a) > (b))
#define FG_LT(a, b) ((a) < (b))
#define FG_NE(a, b) ((a) != (b))
#define FG_ASI(x) ((fg_v16i)(x))
#define FG_ASF(i) ((fg_v16)(i))
#define FG_CVTI(x) __builtin_convertvector((x), fg_v16i)
#include "_simd_lanes.h"
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
#include "_simd_lanes.h"
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

/* Loop over the row's H columns: 16-lane chunks, then the scalar tail. */
#if defined(FG_GNU)
#define FG_ROW_LOOP(chunk, ...)                                                             \
    do {                                                                                    \
        int j_ = 0;                                                                         \
        for (; j_ + 16 <= H; j_ += 16) FGV(chunk)(__VA_ARGS__, H, j_);                      \
        for (; j_ < H; j_++) FGS(chunk)(__VA_ARGS__, H, j_);                                \
    } while (0)
#else
#define FG_ROW_LOOP(chunk, ...)                                                             \
    do {                                                                                    \
        for (int j_ = 0; j_ < H; j_++) FGS(chunk)(__VA_ARGS__, H, j_);                      \
    } while (0)
#endif

FG_TARGET static void FGL(fg_gru_fwd_ra)(int nb, int H, const float *gx, ptrdiff_t ldgx,
                                         const float *gh, ptrdiff_t ldgh, const float *b,
                                         float *h, ptrdiff_t ldh, float *y, ptrdiff_t ldy,
                                         float *c, ptrdiff_t ldc) {
    for (int i = 0; i < nb; i++) {
        float *y_ = y ? y + i * ldy : NULL, *c_ = c ? c + i * ldc : NULL;
        FG_ROW_LOOP(fg_gru_fwd_ra_chunk, gx + i * ldgx, gh + i * ldgh, b, h + i * ldh, y_, c_);
    }
}

FG_TARGET static void FGL(fg_gru_fwd_rb1)(int nb, int H, const float *gx, ptrdiff_t ldgx,
                                          const float *gh, ptrdiff_t ldgh, const float *b,
                                          const float *h, ptrdiff_t ldh, float *o, ptrdiff_t ldo) {
    for (int i = 0; i < nb; i++)
        FG_ROW_LOOP(fg_gru_fwd_rb1_chunk, gx + i * ldgx, gh + i * ldgh, b, h + i * ldh,
                    o + i * ldo);
}

FG_TARGET static void FGL(fg_gru_fwd_rb2)(int nb, int H, const float *gx, ptrdiff_t ldgx,
                                          const float *ghn, ptrdiff_t ldghn, const float *b,
                                          const float *rz, ptrdiff_t ldrz, float *h, ptrdiff_t ldh,
                                          float *y, ptrdiff_t ldy, float *n_out, ptrdiff_t ldn) {
    for (int i = 0; i < nb; i++) {
        float *y_ = y ? y + i * ldy : NULL, *n_ = n_out ? n_out + i * ldn : NULL;
        FG_ROW_LOOP(fg_gru_fwd_rb2_chunk, gx + i * ldgx, ghn + i * ldghn, b, rz + i * ldrz,
                    h + i * ldh, y_, n_);
    }
}

FG_TARGET static void FGL(fg_gru_bwd_ra)(int nb, int H, const float *c, ptrdiff_t ldc,
                                         const float *hp, ptrdiff_t ldhp, const float *dy,
                                         ptrdiff_t lddy, float *dh, ptrdiff_t lddh, float *dgx,
                                         ptrdiff_t lddgx, float *dgh, ptrdiff_t lddgh) {
    for (int i = 0; i < nb; i++) {
        const float *dy_ = dy ? dy + i * lddy : NULL;
        FG_ROW_LOOP(fg_gru_bwd_ra_chunk, c + i * ldc, hp + i * ldhp, dy_, dh + i * lddh,
                    dgx + i * lddgx, dgh + i * lddgh);
    }
}

FG_TARGET static void FGL(fg_gru_bwd_rb1)(int nb, int H, const float *c, ptrdiff_t ldc,
                                          const float *hp, ptrdiff_t ldhp, const float *dy,
                                          ptrdiff_t lddy, float *dh, ptrdiff_t lddh, float *dgx,
                                          ptrdiff_t lddgx) {
    for (int i = 0; i < nb; i++) {
        const float *dy_ = dy ? dy + i * lddy : NULL;
        FG_ROW_LOOP(fg_gru_bwd_rb1_chunk, c + i * ldc, hp + i * ldhp, dy_, dh + i * lddh,
                    dgx + i * lddgx);
    }
}

FG_TARGET static void FGL(fg_gru_bwd_rb2)(int nb, int H, const float *c, ptrdiff_t ldc,
                                          const float *hp, ptrdiff_t ldhp, const float *drh,
                                          ptrdiff_t lddrh, float *dh, ptrdiff_t lddh, float *dgx,
                                          ptrdiff_t lddgx) {
    for (int i = 0; i < nb; i++)
        FG_ROW_LOOP(fg_gru_bwd_rb2_chunk, c + i * ldc, hp + i * ldhp, drh + i * lddrh,
                    dh + i * lddh, dgx + i * lddgx);
}

FG_TARGET static void FGL(fg_lstm_fwd)(int nb, int H, const float *gx, ptrdiff_t ldgx,
                                       const float *gh, ptrdiff_t ldgh, const float *b, float *cs,
                                       ptrdiff_t ldcs, float *m, ptrdiff_t ldm, float *y,
                                       ptrdiff_t ldy, float *cache, ptrdiff_t ldcache) {
    for (int i = 0; i < nb; i++) {
        float *y_ = y ? y + i * ldy : NULL, *k_ = cache ? cache + i * ldcache : NULL;
        FG_ROW_LOOP(fg_lstm_fwd_chunk, gx + i * ldgx, gh + i * ldgh, b, cs + i * ldcs,
                    m + i * ldm, y_, k_);
    }
}

FG_TARGET static void FGL(fg_lstm_bwd)(int nb, int H, const float *cache, ptrdiff_t ldcache,
                                       const float *dm, ptrdiff_t lddm, const float *dy,
                                       ptrdiff_t lddy, float *dc, ptrdiff_t lddc, float *dg,
                                       ptrdiff_t lddg) {
    for (int i = 0; i < nb; i++) {
        const float *dy_ = dy ? dy + i * lddy : NULL;
        FG_ROW_LOOP(fg_lstm_bwd_chunk, cache + i * ldcache, dm + i * lddm, dy_, dc + i * lddc,
                    dg + i * lddg);
    }
}

/* Elementwise maps, for the accuracy tests of the lane math. */
#define FG_MAP(fname)                                                                       \
    FG_TARGET static void FGL(fg_map_##fname)(ptrdiff_t n, const float *in, float *out) {   \
        int H = (int)n; /* callers pass n < 2^31 */                                         \
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
};

#undef FG_ROW_LOOP
#undef FGV
#undef FGS
#undef FGL
#undef FG_L2
#undef FG_L2_
#undef FG_STR
#undef FG_STR_
