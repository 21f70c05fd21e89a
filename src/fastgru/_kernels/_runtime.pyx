# cython: language_level=3
"""Build and run-time facts of the kernels: OpenMP, SIMD level, floating-point mode, and the
vectorized lane math exposed for its accuracy tests.

Design: no compute here beyond the elementwise maps; the SIMD level chosen in this module is
mirrored into the kernel modules by fastgru._config (each extension holds its own table pointer).
"""
from cython.parallel cimport parallel
from fastgru._kernels._openmp cimport (FG_OPENMP_ENABLED, fg_omp_max_threads, fg_thread_num,
                                       fg_team_size)
from fastgru._kernels._simd cimport (fg_simd, fg_simd_select, fg_simd_supported, fg_simd_level,
                                     fg_simd_name, fg_fp_enter, fg_fp_exit, fg_fp_mode)

SIMD_NAMES = ("base", "avx2", "avx512")


def openmp_enabled():
    """True when the kernels were compiled with OpenMP."""
    return bool(FG_OPENMP_ENABLED)


def omp_max_threads():
    """omp_get_max_threads() (1 without OpenMP)."""
    return fg_omp_max_threads()


def team_size(int n_threads):
    """Size of the team an OpenMP parallel region of n_threads actually gets."""
    cdef int got = 1
    cdef int* out = &got    # parallel blocks make assigned locals private; write through memory
    with nogil, parallel(num_threads=n_threads):
        if fg_thread_num() == 0:
            out[0] = fg_team_size()
    return got


def simd_supported():
    """Highest SIMD level this CPU and build support: 0 base, 1 AVX2, 2 AVX-512."""
    return fg_simd_supported()


def select_simd(int level):
    """Select this module's SIMD level (-1: best supported); returns the level used."""
    return fg_simd_select(level)


def simd_level():
    return fg_simd_level()


def simd_name():
    return fg_simd_name().decode()


def fp_mode():
    """The calling thread's floating-point control word (MXCSR on x86, FPCR on aarch64)."""
    return fg_fp_mode()


def fp_mode_inside_kernel():
    """The control word as a kernel sees it (FTZ/DAZ set), restored before returning."""
    cdef unsigned long long old = fg_fp_enter()
    cdef unsigned long long inside = fg_fp_mode()
    fg_fp_exit(old)
    return inside


def vmath(str name, const float[::1] x, float[::1] out):
    """out = f(x) for f in exp, sigmoid, tanh, with the float32 lane math of the kernels."""
    cdef Py_ssize_t n = x.shape[0]
    cdef unsigned long long old
    if out.shape[0] != n:
        raise ValueError("out must have the shape of x")
    if n == 0:
        return
    old = fg_fp_enter()
    if name == "exp":
        fg_simd.exp(n, &x[0], &out[0])
    elif name == "sigmoid":
        fg_simd.sigmoid(n, &x[0], &out[0])
    elif name == "tanh":
        fg_simd.tanh(n, &x[0], &out[0])
    else:
        fg_fp_exit(old)
        raise ValueError(f"unknown function {name!r}")
    fg_fp_exit(old)
