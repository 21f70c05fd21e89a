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

static void fg_transpose_f32(const float *s, ptrdiff_t ls, float *d, ptrdiff_t ld,
                             ptrdiff_t R, ptrdiff_t C) {
    for (ptrdiff_t r0 = 0; r0 < R; r0 += FG_TB) {
        ptrdiff_t r1 = R - r0 < FG_TB ? R : r0 + FG_TB;
        for (ptrdiff_t c0 = 0; c0 < C; c0 += FG_TB) {
            ptrdiff_t c1 = C - c0 < FG_TB ? C : c0 + FG_TB;
            ptrdiff_t r = r0, c;
#ifdef FG_TR_SSE2
            for (; r + 4 <= r1; r += 4) {
                const float *p = s + r * ls;
                for (c = c0; c + 4 <= c1; c += 4) {
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
#endif
            for (; r < r1; r++)
                for (c = c0; c < c1; c++) d[c * ld + r] = s[r * ls + c];
        }
    }
}

static void fg_transpose_f64(const double *s, ptrdiff_t ls, double *d, ptrdiff_t ld,
                             ptrdiff_t R, ptrdiff_t C) {
    for (ptrdiff_t r0 = 0; r0 < R; r0 += FG_TB) {
        ptrdiff_t r1 = R - r0 < FG_TB ? R : r0 + FG_TB;
        for (ptrdiff_t c0 = 0; c0 < C; c0 += FG_TB) {
            ptrdiff_t c1 = C - c0 < FG_TB ? C : c0 + FG_TB;
            ptrdiff_t r = r0, c;
#ifdef FG_TR_SSE2
            for (; r + 2 <= r1; r += 2) {
                const double *p = s + r * ls;
                for (c = c0; c + 2 <= c1; c += 2) {
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
#endif
            for (; r < r1; r++)
                for (c = c0; c < c1; c++) d[c * ld + r] = s[r * ls + c];
        }
    }
}

#endif
