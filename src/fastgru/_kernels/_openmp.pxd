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
    static inline double fg_wtime(void) { return omp_get_wtime(); }
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
    static inline double fg_wtime(void) { return 0.0; }
    static inline void fg_barrier(void) { }
    #endif

    /* Shared step counters for cols mode (_gru/_lstm _fwd_cols): a step's slices are claimed
       with compare-and-swap and counted when done, so a thread the OS has descheduled delays
       nobody: the others compute its slice. An OpenMP barrier per step instead waits a whole
       scheduler slice for it (measured: B = 1, H = 256, 2 threads beside a busy process,
       4 s instead of 8 ms for 1000 steps). */
    /* Spins (pause instructions) a thread waits for a step's slices before it computes those
       nobody has claimed: a few us, above a step's normal skew (a running thread claims its
       slice within ns of the step before completing), far below a scheduler slice; after a
       steal the owner is likely still descheduled, so the next wait is short. Per module;
       set by _set_steal_spins (tests force 0: every slice raced for). */
    #if defined(__GNUC__) || defined(__clang__)
    #define FG_MAYBE_UNUSED __attribute__((unused))
    #else
    #define FG_MAYBE_UNUSED
    #endif
    static int fg_steal_spins FG_MAYBE_UNUSED = 256;
    static int fg_steal_spins_again FG_MAYBE_UNUSED = 16;
    #if defined(_MSC_VER) && !defined(__clang__)
    #include <intrin.h>
    static __inline int fg_load_acquire(int *p) {
        int v = *(volatile int *)p; _ReadWriteBarrier(); return v; }
    static __inline int fg_fetch_add(int *p, int v) {
        return _InterlockedExchangeAdd((volatile long *)p, v); }
    static __inline int fg_cas(int *p, int from, int to) {
        return _InterlockedCompareExchange((volatile long *)p, to, from) == from; }
    #if defined(_M_X64) || defined(_M_IX86)
    static __inline void fg_pause(void) { _mm_pause(); }
    #else
    static __inline void fg_pause(void) { __yield(); }
    #endif
    #else
    static inline int fg_load_acquire(int *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline int fg_fetch_add(int *p, int v) {
        return __atomic_fetch_add(p, v, __ATOMIC_ACQ_REL); }
    static inline int fg_cas(int *p, int from, int to) {
        return __atomic_compare_exchange_n(p, &from, to, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE); }
    #if defined(__x86_64__) || defined(__i386__)
    static inline void fg_pause(void) { __builtin_ia32_pause(); }
    #elif defined(__aarch64__) || defined(__arm__)
    static inline void fg_pause(void) { __asm__ __volatile__("yield"); }
    #else
    static inline void fg_pause(void) { }
    #endif
    #endif
    """
    int FG_OPENMP_ENABLED
    int fg_thread_num() noexcept nogil
    int fg_team_size() noexcept nogil
    int fg_omp_max_threads() noexcept nogil
    double fg_wtime() noexcept nogil
    void fg_barrier() noexcept nogil
    int fg_load_acquire(int* p) noexcept nogil
    int fg_fetch_add(int* p, int v) noexcept nogil
    bint fg_cas(int* p, int frm, int to) noexcept nogil
    void fg_pause() noexcept nogil
    int fg_steal_spins
    int fg_steal_spins_again
