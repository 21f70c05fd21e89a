# Design: the only place that touches OpenMP. The same kernels build without OpenMP: then
# every query answers "one thread" and the barrier is a no-op (setup.py, FASTGRU_NO_OPENMP=1).
cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define FG_OPENMP_ENABLED 1
    static inline int fg_thread_num(void) { return omp_get_thread_num(); }
    static inline int fg_team_size(void) { return omp_get_num_threads(); }
    static inline int fg_omp_max_threads(void) { return omp_get_max_threads(); }
    /* An orphaned barrier: binds to the parallel region the caller runs in. MSVC's C mode has
       no _Pragma operator before C11; __pragma is its spelling. */
    #if defined(_MSC_VER) && !defined(__clang__)
    static __inline void fg_barrier(void) { __pragma(omp barrier) }
    #else
    static inline void fg_barrier(void) { _Pragma("omp barrier") }
    #endif
    #else
    #define FG_OPENMP_ENABLED 0
    static inline int fg_thread_num(void) { return 0; }
    static inline int fg_team_size(void) { return 1; }
    static inline int fg_omp_max_threads(void) { return 1; }
    static inline void fg_barrier(void) { }
    #endif
    """
    int FG_OPENMP_ENABLED
    int fg_thread_num() noexcept nogil
    int fg_team_size() noexcept nogil
    int fg_omp_max_threads() noexcept nogil
    void fg_barrier() noexcept nogil
