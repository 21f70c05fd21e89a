# Design: Cython view of _simd.h (gate loops, lane math, FP mode, SIMD level). float32 calls go
# through the run-time selected table (fg_simd); float64 calls go to the libm versions. The
# fused wrappers below are the only `floating is float` branches outside the BLAS shim.
# Row functions: nb rows, W columns of each gate block, blocks GS apart (GS = H; W < GS for a
# thread that owns a slice of the hidden units).
from cython cimport floating

cdef extern from "_simd.h" nogil:
    ctypedef struct fg_simd_table:
        const char* name
        void (*gru_fwd_ra)(int, int, int, const float*, Py_ssize_t, const float*, Py_ssize_t,
                           const float*, float*, Py_ssize_t, float*, Py_ssize_t, float*,
                           Py_ssize_t) noexcept nogil
        void (*gru_fwd_rb1)(int, int, int, const float*, Py_ssize_t, const float*, Py_ssize_t,
                            const float*, const float*, Py_ssize_t, float*, Py_ssize_t) noexcept nogil
        void (*gru_fwd_rb2)(int, int, int, const float*, Py_ssize_t, const float*, Py_ssize_t,
                            const float*, const float*, Py_ssize_t, float*, Py_ssize_t,
                            float*, Py_ssize_t, float*, Py_ssize_t) noexcept nogil
        void (*gru_bwd_ra)(int, int, int, const float*, Py_ssize_t, const float*, Py_ssize_t,
                           const float*, Py_ssize_t, float*, Py_ssize_t, float*, Py_ssize_t,
                           float*, Py_ssize_t) noexcept nogil
        void (*gru_bwd_rb1)(int, int, int, const float*, Py_ssize_t, const float*, Py_ssize_t,
                            const float*, Py_ssize_t, float*, Py_ssize_t, float*, Py_ssize_t) noexcept nogil
        void (*gru_bwd_rb2)(int, int, int, const float*, Py_ssize_t, const float*, Py_ssize_t,
                            const float*, Py_ssize_t, float*, Py_ssize_t, float*, Py_ssize_t) noexcept nogil
        void (*lstm_fwd)(int, int, int, const float*, Py_ssize_t, const float*, Py_ssize_t,
                         const float*, float*, Py_ssize_t, float*, Py_ssize_t, float*,
                         Py_ssize_t, float*, Py_ssize_t) noexcept nogil
        void (*lstm_bwd)(int, int, int, const float*, Py_ssize_t, const float*, Py_ssize_t,
                         const float*, Py_ssize_t, float*, Py_ssize_t, float*, Py_ssize_t) noexcept nogil
        void (*exp)(Py_ssize_t, const float*, float*) noexcept nogil
        void (*sigmoid)(Py_ssize_t, const float*, float*) noexcept nogil
        void (*tanh)(Py_ssize_t, const float*, float*) noexcept nogil
        void (*mm_small)(int, int, int, const float*, Py_ssize_t, const float*, Py_ssize_t,
                         float*, Py_ssize_t, int) noexcept nogil
        void (*mm_tn)(int, int, int, const float*, Py_ssize_t, const float*, Py_ssize_t,
                      float*, Py_ssize_t, int) noexcept nogil
        void (*mm_packed)(int, int, int, const float*, Py_ssize_t, const float*, Py_ssize_t,
                          float*, Py_ssize_t, int) noexcept nogil
        void (*dot_rows)(int, int, int, const float*, Py_ssize_t, const float*, Py_ssize_t,
                         float*, Py_ssize_t) noexcept nogil

    const fg_simd_table* fg_simd
    int fg_simd_select(int requested)
    int fg_simd_supported()
    int fg_simd_level()
    int fg_mm_own_level
    int fg_mm_own_max_k
    int fg_mm_big_kn
    int fg_mm_big_kn_default()
    const char* fg_simd_name()
    unsigned long long fg_fp_enter()
    void fg_fp_exit(unsigned long long old)
    unsigned long long fg_fp_mode()

    void fg_gru_fwd_ra_f64(int, int, int, const double*, Py_ssize_t, const double*, Py_ssize_t,
                           const double*, double*, Py_ssize_t, double*, Py_ssize_t, double*,
                           Py_ssize_t)
    void fg_gru_fwd_rb1_f64(int, int, int, const double*, Py_ssize_t, const double*, Py_ssize_t,
                            const double*, const double*, Py_ssize_t, double*, Py_ssize_t)
    void fg_gru_fwd_rb2_f64(int, int, int, const double*, Py_ssize_t, const double*, Py_ssize_t,
                            const double*, const double*, Py_ssize_t, double*, Py_ssize_t,
                            double*, Py_ssize_t, double*, Py_ssize_t)
    void fg_gru_bwd_ra_f64(int, int, int, const double*, Py_ssize_t, const double*, Py_ssize_t,
                           const double*, Py_ssize_t, double*, Py_ssize_t, double*, Py_ssize_t,
                           double*, Py_ssize_t)
    void fg_gru_bwd_rb1_f64(int, int, int, const double*, Py_ssize_t, const double*, Py_ssize_t,
                            const double*, Py_ssize_t, double*, Py_ssize_t, double*, Py_ssize_t)
    void fg_gru_bwd_rb2_f64(int, int, int, const double*, Py_ssize_t, const double*, Py_ssize_t,
                            const double*, Py_ssize_t, double*, Py_ssize_t, double*, Py_ssize_t)
    void fg_lstm_fwd_f64(int, int, int, const double*, Py_ssize_t, const double*, Py_ssize_t,
                         const double*, double*, Py_ssize_t, double*, Py_ssize_t, double*,
                         Py_ssize_t, double*, Py_ssize_t)
    void fg_lstm_bwd_f64(int, int, int, const double*, Py_ssize_t, const double*, Py_ssize_t,
                         const double*, Py_ssize_t, double*, Py_ssize_t, double*, Py_ssize_t)


cdef inline void gru_fwd_ra(int nb, int W, int GS, const floating* gx, Py_ssize_t ldgx,
                            const floating* gh, Py_ssize_t ldgh, const floating* b,
                            floating* h, Py_ssize_t ldh, floating* y, Py_ssize_t ldy,
                            floating* c, Py_ssize_t ldc) noexcept nogil:
    if floating is float:
        fg_simd.gru_fwd_ra(nb, W, GS, gx, ldgx, gh, ldgh, b, h, ldh, y, ldy, c, ldc)
    else:
        fg_gru_fwd_ra_f64(nb, W, GS, gx, ldgx, gh, ldgh, b, h, ldh, y, ldy, c, ldc)


cdef inline void gru_fwd_rb1(int nb, int W, int GS, const floating* gx, Py_ssize_t ldgx,
                             const floating* gh, Py_ssize_t ldgh, const floating* b,
                             const floating* h, Py_ssize_t ldh, floating* o,
                             Py_ssize_t ldo) noexcept nogil:
    if floating is float:
        fg_simd.gru_fwd_rb1(nb, W, GS, gx, ldgx, gh, ldgh, b, h, ldh, o, ldo)
    else:
        fg_gru_fwd_rb1_f64(nb, W, GS, gx, ldgx, gh, ldgh, b, h, ldh, o, ldo)


cdef inline void gru_fwd_rb2(int nb, int W, int GS, const floating* gx, Py_ssize_t ldgx,
                             const floating* ghn, Py_ssize_t ldghn, const floating* b,
                             const floating* rz, Py_ssize_t ldrz, floating* h, Py_ssize_t ldh,
                             floating* y, Py_ssize_t ldy, floating* n_out,
                             Py_ssize_t ldn) noexcept nogil:
    if floating is float:
        fg_simd.gru_fwd_rb2(nb, W, GS, gx, ldgx, ghn, ldghn, b, rz, ldrz, h, ldh, y, ldy, n_out, ldn)
    else:
        fg_gru_fwd_rb2_f64(nb, W, GS, gx, ldgx, ghn, ldghn, b, rz, ldrz, h, ldh, y, ldy, n_out, ldn)


cdef inline void gru_bwd_ra(int nb, int W, int GS, const floating* c, Py_ssize_t ldc,
                            const floating* hp, Py_ssize_t ldhp, const floating* dy,
                            Py_ssize_t lddy, floating* dh, Py_ssize_t lddh, floating* dan,
                            Py_ssize_t lddan, floating* dgh, Py_ssize_t lddgh) noexcept nogil:
    if floating is float:
        fg_simd.gru_bwd_ra(nb, W, GS, c, ldc, hp, ldhp, dy, lddy, dh, lddh, dan, lddan, dgh, lddgh)
    else:
        fg_gru_bwd_ra_f64(nb, W, GS, c, ldc, hp, ldhp, dy, lddy, dh, lddh, dan, lddan, dgh, lddgh)


cdef inline void gru_bwd_rb1(int nb, int W, int GS, const floating* c, Py_ssize_t ldc,
                             const floating* hp, Py_ssize_t ldhp, const floating* dy,
                             Py_ssize_t lddy, floating* dh, Py_ssize_t lddh, floating* dgx,
                             Py_ssize_t lddgx) noexcept nogil:
    if floating is float:
        fg_simd.gru_bwd_rb1(nb, W, GS, c, ldc, hp, ldhp, dy, lddy, dh, lddh, dgx, lddgx)
    else:
        fg_gru_bwd_rb1_f64(nb, W, GS, c, ldc, hp, ldhp, dy, lddy, dh, lddh, dgx, lddgx)


cdef inline void gru_bwd_rb2(int nb, int W, int GS, const floating* c, Py_ssize_t ldc,
                             const floating* hp, Py_ssize_t ldhp, const floating* drh,
                             Py_ssize_t lddrh, floating* dh, Py_ssize_t lddh, floating* dgx,
                             Py_ssize_t lddgx) noexcept nogil:
    if floating is float:
        fg_simd.gru_bwd_rb2(nb, W, GS, c, ldc, hp, ldhp, drh, lddrh, dh, lddh, dgx, lddgx)
    else:
        fg_gru_bwd_rb2_f64(nb, W, GS, c, ldc, hp, ldhp, drh, lddrh, dh, lddh, dgx, lddgx)


cdef inline void lstm_fwd(int nb, int W, int GS, const floating* gx, Py_ssize_t ldgx,
                          const floating* gh, Py_ssize_t ldgh, const floating* b,
                          floating* cs, Py_ssize_t ldcs, floating* m, Py_ssize_t ldm,
                          floating* y, Py_ssize_t ldy, floating* k, Py_ssize_t ldk) noexcept nogil:
    if floating is float:
        fg_simd.lstm_fwd(nb, W, GS, gx, ldgx, gh, ldgh, b, cs, ldcs, m, ldm, y, ldy, k, ldk)
    else:
        fg_lstm_fwd_f64(nb, W, GS, gx, ldgx, gh, ldgh, b, cs, ldcs, m, ldm, y, ldy, k, ldk)


cdef inline void lstm_bwd(int nb, int W, int GS, const floating* k, Py_ssize_t ldk,
                          const floating* dm, Py_ssize_t lddm, const floating* dy,
                          Py_ssize_t lddy, floating* dc, Py_ssize_t lddc, floating* dg,
                          Py_ssize_t lddg) noexcept nogil:
    if floating is float:
        fg_simd.lstm_bwd(nb, W, GS, k, ldk, dm, lddm, dy, lddy, dc, lddc, dg, lddg)
    else:
        fg_lstm_bwd_f64(nb, W, GS, k, ldk, dm, lddm, dy, lddy, dc, lddc, dg, lddg)
