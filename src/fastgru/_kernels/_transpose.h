/* Design: out-of-place transposes d[c*ld + r] = s[r*ls + c] of an R x C matrix, for the weight
 * copies the kernels read (fastgru._packed: W.T, W.T in panels, per-slice panels).
 * Blocks of FG_TB x FG_TB (both blocks fit L1 together) made of 4 x 4 (float) or 2 x 2 (double)
 * register transposes in SSE2, which every x86-64 has; elsewhere, and at the edges, plain
 * loops. Measured on a GRU's W_hh at H = 256 (768 x 256 float32): NumPy's strided copy of the
 * transposed view 184-218 us, this 40 us (memcpy: 16 us); an LSTM's W_hh at S4 (4096 x 1024):
 * 29 ms and 4.2 ms. Block sizes 16-128 measured the same. Only moves values: exact.
 */
#ifndef FASTGRU_TRANSPOSE_H
#define FASTGRU_TRANSPOSE_H

#include <stddef.h>
#if defined(__x86_64__) || defined(_M_X64)
#include <emmintrin.h>
#define FG_TR_SSE2 1
#endif

#define FG_TB 32

/* The register tiles of one block, rows r0 .. r1-1 and columns c0 .. c1-1; each returns the
 * first row it left to the plain loop (the rows below a whole tile, or r0 without SSE2). */
static ptrdiff_t fg_tiles_f32(const float *s, ptrdiff_t ls, float *d, ptrdiff_t ld,
                              ptrdiff_t r0, ptrdiff_t r1, ptrdiff_t c0, ptrdiff_t c1) {
    ptrdiff_t r = r0;
#ifdef FG_TR_SSE2
    for (; r + 4 <= r1; r += 4) {
        const float *p = s + r * ls;
        ptrdiff_t c = c0;
        for (; c + 4 <= c1; c += 4) {
            __m128 a0 = _mm_loadu_ps(p + c), a1 = _mm_loadu_ps(p + ls + c);
            __m128 a2 = _mm_loadu_ps(p + 2 * ls + c), a3 = _mm_loadu_ps(p + 3 * ls + c);
            _MM_TRANSPOSE4_PS(a0, a1, a2, a3);
            float *q = d + c * ld + r;
            _mm_storeu_ps(q, a0);
            _mm_storeu_ps(q + ld, a1);
            _mm_storeu_ps(q + 2 * ld, a2);
            _mm_storeu_ps(q + 3 * ld, a3);
        }
        for (; c < c1; c++)
            for (ptrdiff_t k = 0; k < 4; k++) d[c * ld + r + k] = p[k * ls + c];
    }
#else
    (void)s, (void)ls, (void)d, (void)ld, (void)r1, (void)c0, (void)c1;
#endif
    return r;
}

static ptrdiff_t fg_tiles_f64(const double *s, ptrdiff_t ls, double *d, ptrdiff_t ld,
                              ptrdiff_t r0, ptrdiff_t r1, ptrdiff_t c0, ptrdiff_t c1) {
    ptrdiff_t r = r0;
#ifdef FG_TR_SSE2
    for (; r + 2 <= r1; r += 2) {
        const double *p = s + r * ls;
        ptrdiff_t c = c0;
        for (; c + 2 <= c1; c += 2) {
            __m128d a0 = _mm_loadu_pd(p + c), a1 = _mm_loadu_pd(p + ls + c);
            double *q = d + c * ld + r;
            _mm_storeu_pd(q, _mm_unpacklo_pd(a0, a1));
            _mm_storeu_pd(q + ld, _mm_unpackhi_pd(a0, a1));
        }
        for (; c < c1; c++) {
            d[c * ld + r] = p[c];
            d[c * ld + r + 1] = p[ls + c];
        }
    }
#else
    (void)s, (void)ls, (void)d, (void)ld, (void)r1, (void)c0, (void)c1;
#endif
    return r;
}

/* Blocks of FG_TB x FG_TB: the tiles, then the rows left below them one value at a time. */
#define FG_TRANSPOSE(NAME, T, TILES)                                                         \
    static void NAME(const T *s, ptrdiff_t ls, T *d, ptrdiff_t ld, ptrdiff_t R, ptrdiff_t C) { \
        for (ptrdiff_t r0 = 0; r0 < R; r0 += FG_TB) {                                        \
            ptrdiff_t r1 = R - r0 < FG_TB ? R : r0 + FG_TB;                                  \
            for (ptrdiff_t c0 = 0; c0 < C; c0 += FG_TB) {                                    \
                ptrdiff_t c1 = C - c0 < FG_TB ? C : c0 + FG_TB;                              \
                for (ptrdiff_t r = TILES(s, ls, d, ld, r0, r1, c0, c1); r < r1; r++)         \
                    for (ptrdiff_t c = c0; c < c1; c++) d[c * ld + r] = s[r * ls + c];       \
            }                                                                                \
        }                                                                                    \
    }
FG_TRANSPOSE(fg_transpose_f32, float, fg_tiles_f32)
FG_TRANSPOSE(fg_transpose_f64, double, fg_tiles_f64)
#undef FG_TRANSPOSE

#endif
