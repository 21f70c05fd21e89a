/* Design: fused, vectorized gate loops for the GRU and LSTM kernels.
 *
 * What: one function per gate step ("rows" functions): for nb batch rows of length H they turn
 *   gate pre-activations (input projection + recurrent projection + bias) into the new state, the
 *   layer output and, when training, the per-step values that backward needs; and the matching
 *   backward functions. The time loop, the GEMMs and the threading live in _gru.pyx/_lstm.pyx.
 * Layout: row-major; each argument is a base pointer plus a row stride (ld*), gate blocks in
 *   PyTorch order (GRU r|z|n, LSTM i|f|g|o) GS floats apart (GS = H); a call covers W <= GS
 *   columns of each block (a thread owning a slice of the hidden units passes its slice).
 * SIMD: float32 code is written once (_simd_kernels.h) with GCC/Clang vector extensions and
 *   compiled three times, for AVX-512 (16 lanes), AVX2 (8) and the x86-64 baseline (SSE2, 4), by
 *   including it under three `target` attributes. The level is chosen at run time (cpu support,
 *   FASTGRU_SIMD) through a table of function pointers, so wheels need no -march. Tails run the
 *   same code on plain floats. Fused multiply-adds are explicit (FG_FMA: an FMA instruction on
 *   AVX2/AVX-512, and fmaf on their scalar tails; multiply then add on the baseline) and the
 *   extension is built with -ffp-contract=off, so AVX2 and AVX-512 give bit-identical results
 *   and the baseline differs from them only by rounding (no cross-lane operations anywhere).
 *   float64 uses libm (it is the accuracy dtype, not the speed dtype).
 * Accuracy (float32, measured in tests over the whole float range against float64 libm):
 *   exp: <= 2 ulp; sigmoid = 1/(1+exp(-x)): <= 3 ulp relative wherever the result is a normal
 *   float; tanh: <= 4 ulp (odd Taylor series below |x| = 0.35, (1-u)/(1+u), u = exp(-2|x|),
 *   above). Results below FLT_MIN flush to 0 (the kernels run with FTZ/DAZ on). NaN propagates.
 * The caller guarantees: pointers valid for the rows and strides given, nb >= 0, H >= 1.
 */
#ifndef FASTGRU_SIMD_H
#define FASTGRU_SIMD_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__) || defined(_M_IX86)
#include <xmmintrin.h>
#define FG_X86 1
#if defined(__GNUC__) || defined(__clang__)
#include <immintrin.h>
#endif
#endif
#if defined(__GNUC__) || defined(__clang__)
#define FG_GNU 1
#define FG_INL static inline __attribute__((always_inline))
#else
#define FG_INL static __inline
#endif

#define FG_CAT_(a, b) a##b
#define FG_CAT(a, b) FG_CAT_(a, b)

/* ------------------------------------------------------------------------------------------ */
/* Floating-point environment: flush denormals to zero inside the kernels, restore afterwards. */
/* Denormals made oneDNN's LSTM training 18-26x slower in a reported case (oneDNN#561).        */

static inline unsigned long long fg_fp_enter(void) {
#if defined(FG_X86)
    unsigned int old = _mm_getcsr();
    _mm_setcsr(old | 0x8040u); /* FTZ (bit 15) | DAZ (bit 6) */
    return old;
#elif defined(__aarch64__) && defined(FG_GNU)
    unsigned long long fpcr;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(fpcr));
    __asm__ __volatile__("msr fpcr, %0" : : "r"(fpcr | (1ull << 24)));
    return fpcr;
#else
    return 0;
#endif
}

static inline void fg_fp_exit(unsigned long long old) {
#if defined(FG_X86)
    _mm_setcsr((unsigned int)old);
#elif defined(__aarch64__) && defined(FG_GNU)
    __asm__ __volatile__("msr fpcr, %0" : : "r"(old));
#else
    (void)old;
#endif
}

static inline unsigned long long fg_fp_mode(void) {
#if defined(FG_X86)
    return _mm_getcsr();
#elif defined(__aarch64__) && defined(FG_GNU)
    unsigned long long fpcr;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(fpcr));
    return fpcr;
#else
    return 0;
#endif
}

/* ------------------------------------------------------------------------------------------ */
/* Scalar bit casts (the 1-lane type is plain float/int32, usable by every compiler).          */

FG_INL int32_t fg_f2i(float x) { int32_t i; memcpy(&i, &x, sizeof i); return i; }
FG_INL float fg_i2f(int32_t i) { float x; memcpy(&x, &i, sizeof x); return x; }

/* Signature shared by every level's float32 functions, so one table can hold any level. */
typedef void (*fg_gru_fwd_ra_t)(int, int, int, const float *, ptrdiff_t, const float *, ptrdiff_t,
                                const float *, float *, ptrdiff_t, float *, ptrdiff_t, float *,
                                ptrdiff_t);
typedef void (*fg_gru_fwd_rb1_t)(int, int, int, const float *, ptrdiff_t, const float *, ptrdiff_t,
                                 const float *, const float *, ptrdiff_t, float *, ptrdiff_t);
typedef void (*fg_gru_fwd_rb2_t)(int, int, int, const float *, ptrdiff_t, const float *, ptrdiff_t,
                                 const float *, const float *, ptrdiff_t, float *, ptrdiff_t,
                                 float *, ptrdiff_t, float *, ptrdiff_t);
typedef void (*fg_gru_bwd_ra_t)(int, int, int, const float *, ptrdiff_t, const float *, ptrdiff_t,
                                const float *, ptrdiff_t, float *, ptrdiff_t, float *, ptrdiff_t,
                                float *, ptrdiff_t);
typedef void (*fg_gru_bwd_rb1_t)(int, int, int, const float *, ptrdiff_t, const float *, ptrdiff_t,
                                 const float *, ptrdiff_t, float *, ptrdiff_t, float *, ptrdiff_t);
typedef void (*fg_gru_bwd_rb2_t)(int, int, int, const float *, ptrdiff_t, const float *, ptrdiff_t,
                                 const float *, ptrdiff_t, float *, ptrdiff_t, float *, ptrdiff_t);
typedef void (*fg_lstm_fwd_t)(int, int, int, const float *, ptrdiff_t, const float *, ptrdiff_t,
                              const float *, float *, ptrdiff_t, float *, ptrdiff_t, float *,
                              ptrdiff_t, float *, ptrdiff_t);
typedef void (*fg_lstm_bwd_t)(int, int, int, const float *, ptrdiff_t, const float *, ptrdiff_t,
                              const float *, ptrdiff_t, float *, ptrdiff_t, float *, ptrdiff_t);
typedef void (*fg_map_t)(ptrdiff_t, const float *, float *);
typedef void (*fg_mm_small_t)(int, int, int, const float *, ptrdiff_t, const float *, ptrdiff_t,
                              float *, ptrdiff_t, int);

typedef void (*fg_mm_packed_t)(int, int, int, const float *, ptrdiff_t, const float *, ptrdiff_t,
                               float *, ptrdiff_t, int);

typedef void (*fg_dot_rows_t)(int, int, int, const float *, ptrdiff_t, const float *, ptrdiff_t,
                              float *, ptrdiff_t);

typedef struct {
    const char *name;
    fg_gru_fwd_ra_t gru_fwd_ra;
    fg_gru_fwd_rb1_t gru_fwd_rb1;
    fg_gru_fwd_rb2_t gru_fwd_rb2;
    fg_gru_bwd_ra_t gru_bwd_ra;
    fg_gru_bwd_rb1_t gru_bwd_rb1;
    fg_gru_bwd_rb2_t gru_bwd_rb2;
    fg_lstm_fwd_t lstm_fwd;
    fg_lstm_bwd_t lstm_bwd;
    fg_map_t exp, sigmoid, tanh;
    fg_mm_small_t mm_small;
    fg_mm_small_t mm_tn; /* C (+)= A.T @ W, A given (K, M): weight gradients */
    fg_mm_packed_t mm_packed; /* C (+)= A @ W, W packed in panels of pw columns */
    fg_dot_rows_t dot_rows;   /* Y = X @ W.T, W (N, K) row-major; NULL at the baseline */
} fg_simd_table;

/* ------------------------------------------------------------------------------------------ */
/* Instantiate the float32 kernels once per SIMD level.                                       */

#if defined(FG_GNU) && defined(FG_X86)
#define FG_LEVEL avx512
#define FG_VBYTES 64
#define FG_FMA_ON 1
#define FG_TARGET __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,fma")))
#include "_simd_kernels.h"
#undef FG_LEVEL
#undef FG_VBYTES
#undef FG_FMA_ON
#undef FG_TARGET

#define FG_LEVEL avx2
#define FG_VBYTES 32
#define FG_FMA_ON 1
#define FG_TARGET __attribute__((target("avx2,fma")))
#include "_simd_kernels.h"
#undef FG_LEVEL
#undef FG_VBYTES
#undef FG_FMA_ON
#undef FG_TARGET
#endif

#define FG_LEVEL base
#define FG_VBYTES 16 /* SSE2 on x86-64, NEON on aarch64 */
#define FG_FMA_ON 0
#define FG_TARGET
#include "_simd_kernels.h"
#undef FG_LEVEL
#undef FG_VBYTES
#undef FG_FMA_ON
#undef FG_TARGET

/* Level numbers: 0 baseline, 1 AVX2, 2 AVX-512 (x86 with GCC/Clang only). */
static const fg_simd_table *fg_tables[3] = {
    &fg_table_base,
#if defined(FG_GNU) && defined(FG_X86)
    &fg_table_avx2, &fg_table_avx512,
#else
    &fg_table_base, &fg_table_base,
#endif
};

static const fg_simd_table *fg_simd = &fg_table_base;
static int fg_simd_level_now = 0;

/* Per-step products: fastgru's own kernel (mm_small) for every row count when the level is at
 * least fg_mm_own_level and K <= fg_mm_own_max_k; else only for the few-row cases. */
#if defined(FG_GNU)
#define FG_UNUSED __attribute__((unused))
#else
#define FG_UNUSED
#endif
static int fg_mm_own_level FG_UNUSED = 2;
static int fg_mm_own_max_k FG_UNUSED = 1024;
/* Weights of at least this many elements go to BLAS when 64 or more rows share them (0: never;
 * -1: not chosen yet, set by fg_simd_select). On Intel AVX-512 cores (two 512-bit FMA units)
 * the own 4 x 64 tile needs 32 bytes of W per cycle from L2 and reached ~80 GFLOP/s against
 * OpenBLAS's 107-120, and all-BLAS was 1.4-1.5x faster end to end at S4, 1 thread (a 16-core
 * Xeon); on Zen 4 (one 512-bit FMA per cycle) the own tile wins. 2 MiB of float32. */
#define FG_MM_BIG_KN_INTEL 524288
static int fg_mm_big_kn FG_UNUSED = -1;

static int fg_mm_big_kn_default(void) {
#if defined(FG_GNU) && defined(FG_X86)
    __builtin_cpu_init();
    if (__builtin_cpu_is("intel")) return FG_MM_BIG_KN_INTEL;
#endif
    return 0;
}

/* Highest level this CPU (and build) supports. */
static int fg_simd_supported(void) {
#if defined(FG_GNU) && defined(FG_X86)
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("fma")) return 0;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw"))
        return 2;
    if (__builtin_cpu_supports("avx2")) return 1;
#endif
    return 0;
}

/* Select a level: requested < 0 means the best supported; otherwise capped at support. */
static int fg_simd_select(int requested) {
    int sup = fg_simd_supported();
    int lvl = (requested < 0 || requested > sup) ? sup : requested;
    fg_simd = fg_tables[lvl];
    fg_simd_level_now = lvl;
    if (fg_mm_big_kn < 0) fg_mm_big_kn = fg_mm_big_kn_default();
    return lvl;
}

static int fg_simd_level(void) { return fg_simd_level_now; }

static const char *fg_simd_name(void) { return fg_simd->name; }

/* ------------------------------------------------------------------------------------------ */
/* float64: the same gate equations on libm (numbered as in _simd_kernels.h).                */

static inline double fg_sigmoid_f64(double x) { return 1.0 / (1.0 + exp(-x)); }

static void fg_gru_fwd_ra_f64(int nb, int W, int H, const double *gx, ptrdiff_t ldgx, const double *gh,
                              ptrdiff_t ldgh, const double *b, double *h, ptrdiff_t ldh,
                              double *y, ptrdiff_t ldy, double *c, ptrdiff_t ldc) {
    for (int i = 0; i < nb; i++) {
        const double *x_ = gx + i * ldgx, *g_ = gh + i * ldgh;
        double *h_ = h + i * ldh, *y_ = y ? y + i * ldy : NULL, *c_ = c ? c + i * ldc : NULL;
        for (int j = 0; j < W; j++) {
            double r = fg_sigmoid_f64(x_[j] + g_[j] + b[j]);
            double z = fg_sigmoid_f64(x_[H + j] + g_[H + j] + b[H + j]);
            double hn = g_[2 * H + j] + b[3 * H + j];
            double n = tanh(x_[2 * H + j] + b[2 * H + j] + r * hn);
            double hp = h_[j];
            double hy = n + z * (hp - n);
            h_[j] = hy;
            if (y_) y_[j] = hy;
            if (c_) { c_[j] = r; c_[H + j] = z; c_[2 * H + j] = hn; c_[3 * H + j] = n; }
        }
    }
}

static void fg_gru_fwd_rb1_f64(int nb, int W, int H, const double *gx, ptrdiff_t ldgx, const double *gh,
                               ptrdiff_t ldgh, const double *b, const double *h, ptrdiff_t ldh,
                               double *o, ptrdiff_t ldo) {
    for (int i = 0; i < nb; i++) {
        const double *x_ = gx + i * ldgx, *g_ = gh + i * ldgh, *h_ = h + i * ldh;
        double *o_ = o + i * ldo;
        for (int j = 0; j < W; j++) {
            double r = fg_sigmoid_f64(x_[j] + g_[j] + b[j]);
            double z = fg_sigmoid_f64(x_[H + j] + g_[H + j] + b[H + j]);
            o_[j] = r; o_[H + j] = z; o_[2 * H + j] = r * h_[j];
        }
    }
}

static void fg_gru_fwd_rb2_f64(int nb, int W, int H, const double *gx, ptrdiff_t ldgx, const double *ghn,
                               ptrdiff_t ldghn, const double *b, const double *rz, ptrdiff_t ldrz,
                               double *h, ptrdiff_t ldh, double *y, ptrdiff_t ldy, double *n_out,
                               ptrdiff_t ldn) {
    for (int i = 0; i < nb; i++) {
        const double *x_ = gx + i * ldgx, *g_ = ghn + i * ldghn, *rz_ = rz + i * ldrz;
        double *h_ = h + i * ldh, *y_ = y ? y + i * ldy : NULL;
        double *n_ = n_out ? n_out + i * ldn : NULL;
        for (int j = 0; j < W; j++) {
            double n = tanh(x_[2 * H + j] + b[2 * H + j] + g_[j]);
            double z = rz_[H + j];
            double hy = n + z * (h_[j] - n);
            h_[j] = hy;
            if (y_) y_[j] = hy;
            if (n_) n_[j] = n;
        }
    }
}

static void fg_gru_bwd_ra_f64(int nb, int W, int H, const double *c, ptrdiff_t ldc, const double *hp,
                              ptrdiff_t ldhp, const double *dy, ptrdiff_t lddy, double *dh,
                              ptrdiff_t lddh, double *dan, ptrdiff_t lddan, double *dgh,
                              ptrdiff_t lddgh) {
    for (int i = 0; i < nb; i++) {
        const double *c_ = c + i * ldc, *hp_ = hp + i * ldhp, *dy_ = dy ? dy + i * lddy : NULL;
        double *dh_ = dh + i * lddh, *da_ = dan + i * lddan, *dg_ = dgh + i * lddgh;
        for (int j = 0; j < W; j++) {
            double r = c_[j], z = c_[H + j], hn = c_[2 * H + j], n = c_[3 * H + j];
            double g = dh_[j] + (dy_ ? dy_[j] : 0.0);
            double dan = g * (1.0 - z) * (1.0 - n * n);
            double daz = g * (hp_[j] - n) * z * (1.0 - z);
            double dar = dan * hn * r * (1.0 - r);
            da_[j] = dan;
            dg_[j] = dar; dg_[H + j] = daz; dg_[2 * H + j] = dan * r;
            dh_[j] = g * z;
        }
    }
}

static void fg_gru_bwd_rb1_f64(int nb, int W, int H, const double *c, ptrdiff_t ldc, const double *hp,
                               ptrdiff_t ldhp, const double *dy, ptrdiff_t lddy, double *dh,
                               ptrdiff_t lddh, double *dgx, ptrdiff_t lddgx) {
    for (int i = 0; i < nb; i++) {
        const double *c_ = c + i * ldc, *hp_ = hp + i * ldhp, *dy_ = dy ? dy + i * lddy : NULL;
        double *dh_ = dh + i * lddh, *dx_ = dgx + i * lddgx;
        for (int j = 0; j < W; j++) {
            double z = c_[H + j], n = c_[3 * H + j];
            double g = dh_[j] + (dy_ ? dy_[j] : 0.0);
            dx_[2 * H + j] = g * (1.0 - z) * (1.0 - n * n);
            dx_[H + j] = g * (hp_[j] - n) * z * (1.0 - z);
            dh_[j] = g * z;
        }
    }
}

static void fg_gru_bwd_rb2_f64(int nb, int W, int H, const double *c, ptrdiff_t ldc, const double *hp,
                               ptrdiff_t ldhp, const double *drh, ptrdiff_t lddrh, double *dh,
                               ptrdiff_t lddh, double *dgx, ptrdiff_t lddgx) {
    for (int i = 0; i < nb; i++) {
        const double *c_ = c + i * ldc, *hp_ = hp + i * ldhp, *d_ = drh + i * lddrh;
        double *dh_ = dh + i * lddh, *dx_ = dgx + i * lddgx;
        for (int j = 0; j < W; j++) {
            double r = c_[j];
            dx_[j] = d_[j] * hp_[j] * r * (1.0 - r);
            dh_[j] += d_[j] * r;
        }
    }
}

static void fg_lstm_fwd_f64(int nb, int W, int H, const double *gx, ptrdiff_t ldgx, const double *gh,
                            ptrdiff_t ldgh, const double *b, double *cs, ptrdiff_t ldcs, double *m,
                            ptrdiff_t ldm, double *y, ptrdiff_t ldy, double *cache,
                            ptrdiff_t ldcache) {
    for (int i = 0; i < nb; i++) {
        const double *x_ = gx + i * ldgx, *g_ = gh + i * ldgh;
        double *cs_ = cs + i * ldcs, *m_ = m + i * ldm, *y_ = y ? y + i * ldy : NULL;
        double *k_ = cache ? cache + i * ldcache : NULL;
        for (int j = 0; j < W; j++) {
            double ig = fg_sigmoid_f64(x_[j] + g_[j] + b[j]);
            double fg = fg_sigmoid_f64(x_[H + j] + g_[H + j] + b[H + j]);
            double gg = tanh(x_[2 * H + j] + g_[2 * H + j] + b[2 * H + j]);
            double og = fg_sigmoid_f64(x_[3 * H + j] + g_[3 * H + j] + b[3 * H + j]);
            double cp = cs_[j];
            double cn = fg * cp + ig * gg;
            double tc = tanh(cn);
            double hy = og * tc;
            cs_[j] = cn;
            m_[j] = hy;
            if (y_) y_[j] = hy;
            if (k_) {
                k_[j] = ig; k_[H + j] = fg; k_[2 * H + j] = gg; k_[3 * H + j] = og;
                k_[4 * H + j] = tc; k_[5 * H + j] = cp;
            }
        }
    }
}

static void fg_lstm_bwd_f64(int nb, int W, int H, const double *cache, ptrdiff_t ldcache,
                            const double *dm, ptrdiff_t lddm, const double *dy, ptrdiff_t lddy,
                            double *dc, ptrdiff_t lddc, double *dg, ptrdiff_t lddg) {
    for (int i = 0; i < nb; i++) {
        const double *k_ = cache + i * ldcache, *dm_ = dm + i * lddm;
        const double *dy_ = dy ? dy + i * lddy : NULL;
        double *dc_ = dc + i * lddc, *dg_ = dg + i * lddg;
        for (int j = 0; j < W; j++) {
            double ig = k_[j], fg = k_[H + j], gg = k_[2 * H + j], og = k_[3 * H + j];
            double tc = k_[4 * H + j], cp = k_[5 * H + j];
            double g = dm_[j] + (dy_ ? dy_[j] : 0.0);
            double dct = dc_[j] + g * og * (1.0 - tc * tc);
            dg_[j] = dct * gg * ig * (1.0 - ig);
            dg_[H + j] = dct * cp * fg * (1.0 - fg);
            dg_[2 * H + j] = dct * ig * (1.0 - gg * gg);
            dg_[3 * H + j] = g * tc * og * (1.0 - og);
            dc_[j] = dct * fg;
        }
    }
}

#endif /* FASTGRU_SIMD_H */
