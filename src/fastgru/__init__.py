"""fastgru: fast GRU and LSTM training and inference on the CPU.

Kernels in Cython over scipy's BLAS with fused SIMD gate loops and OpenMP (fastgru.ops),
checked against a pure-NumPy reference (fastgru.reference).
"""
__version__ = "0.1.0"

from fastgru import _wait_policy

with _wait_policy.before_openmp_starts():  # the OpenMP runtime reads its settings as it starts
    from fastgru._kernels import _runtime, _stream

    _runtime.omp_max_threads()  # LLVM libomp starts at its first call

from fastgru import layers as _layers  # noqa: E402
from fastgru import ops, reference  # noqa: E402
from fastgru import training as _training
from fastgru._config import (  # noqa: E402
    _init_from_env,  # noqa: E402
    available_simd_levels,
    config,
    set_simd_level,
    show_config,
    simd_level,
)
from fastgru.layers import *  # noqa: E402,F401,F403  (GRU, LSTM, cells, interop, save/load)
from fastgru.ops import empty_cache  # noqa: E402,F401
from fastgru.training import *  # noqa: E402,F401,F403  (models, losses, optimizers, trainer)

_init_from_env()
_stream._set_wake_gap(_wait_policy.step_wake_gap())

__all__ = list(_layers.__all__) + list(_training.__all__) + [
    "__version__",
    "ops",
    "reference",
    "show_config",
    "config",
    "set_simd_level",
    "simd_level",
    "available_simd_levels",
]
