"""Run-time configuration: SIMD level (mirrored into every kernel module) and show_config()."""
from __future__ import annotations

import os
import platform
import sys
import warnings
from typing import Any

from fastgru._kernels import _blas, _gru, _lstm, _runtime, _stream

_LEVELS = {"base": 0, "baseline": 0, "sse2": 0, "generic": 0, "avx2": 1, "avx512": 2}


def set_simd_level(level: Any = None) -> str:
    """Select the SIMD level of the gate loops: "avx512", "avx2", "base", or None for the best
    this CPU supports (capped at what it supports). Returns the name of the level in use."""
    if level is None or level == "auto":
        n = -1
    elif isinstance(level, str) and level.lower() in _LEVELS:
        n = _LEVELS[level.lower()]
    else:
        raise ValueError(f"SIMD level must be one of {sorted(set(_LEVELS))} or None, got {level!r}")
    used = _runtime.select_simd(n)
    for mod in (_blas, _gru, _lstm, _stream):
        mod._select_simd(used)
    return _runtime.simd_name()


OWN_MATMUL_DEFAULT = (2, 1024)


def _set_own_matmul(level: int = OWN_MATMUL_DEFAULT[0],
                    max_k: int = OWN_MATMUL_DEFAULT[1], big_kn: int | None = None) -> None:
    """Route the per-step float32 products to fastgru's own kernel from SIMD level `level` up
    for K <= max_k (see _kernels/_matmul.pxd); level 99 keeps them on BLAS. big_kn: weights of
    this many elements or more go to BLAS from 64 rows (0: never; None: this CPU's default,
    Intel cores only). Tests and A/B benchmarks only: the default is the measured best."""
    kn = _blas.mm_big_kn()[1] if big_kn is None else int(big_kn)
    for mod in (_blas, _gru, _lstm):
        mod._set_mm_own(int(level), int(max_k), kn)


def simd_level() -> str:
    return _runtime.simd_name()


def available_simd_levels() -> list:
    return list(_runtime.SIMD_NAMES[: _runtime.simd_supported() + 1])


def _init_from_env() -> None:
    level = os.environ.get("FASTGRU_SIMD", "").strip() or None
    try:
        set_simd_level(level)
    except ValueError:  # a typo must not pass for a choice (as bad FASTGRU_NUM_THREADS warns)
        warnings.warn(f"FASTGRU_SIMD={level!r} is not one of "
                      f"{', '.join(sorted(set(_LEVELS)) + ['auto'])}: ignored, the best level "
                      "this CPU supports is used", RuntimeWarning, stacklevel=2)
        set_simd_level(None)


def config() -> dict[str, Any]:
    """Build and run-time facts as a dict (see show_config)."""
    import numpy as np
    import scipy

    from fastgru import __version__, _threads, _wait_policy

    try:
        from threadpoolctl import threadpool_info

        blas = [
            {k: d.get(k) for k in ("internal_api", "version", "num_threads", "architecture",
                                   "threading_layer", "filepath")}
            for d in threadpool_info() if d.get("user_api") == "blas"
        ]
    except Exception as exc:  # threadpoolctl missing or failing: report, do not crash
        blas = [{"error": str(exc)}]
    return {
        "fastgru": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "compiler": platform.python_compiler(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "openmp": _runtime.openmp_enabled(),
        "omp_max_threads": _runtime.omp_max_threads(),
        "omp_wait_policy": _wait_policy.describe(),
        "default_n_threads": _threads.default_n_threads(),
        "physical_cores": _threads.physical_cores(),
        "simd_level": simd_level(),
        "simd_available": available_simd_levels(),
        "dtypes": ["float32", "float64"],
        "blas": blas,
        "blas_guard": _threads._GUARD["enabled"],
        # products of 64+ rows over a weight of this many elements run on BLAS (Intel cores)
        "blas_big_weights": (f">= {_blas.mm_big_kn()[0]} elements, 64+ rows"
                             if _blas.mm_big_kn()[0] > 0 else "off"),
    }


def show_config() -> None:
    """Print version, compiler, OpenMP and threads, SIMD level, BLAS and its threads."""
    c = config()
    width = max(len(k) for k in c)
    for k, v in c.items():
        if k == "blas":
            for i, lib in enumerate(v):
                label = f"blas[{i}]"
                print(f"{label:<{width}}  " + ", ".join(f"{a}={b}" for a, b in lib.items()))
        else:
            print(f"{k:<{width}}  {v}")
