"""Compiled kernels (Cython over scipy's BLAS, OpenMP, SIMD gate loops). Private."""
