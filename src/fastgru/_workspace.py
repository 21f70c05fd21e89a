"""Reusable scratch buffers for the kernels (never handed to the user).

Temporaries such as the input projection gx of an inference call, the per-thread scratch rows
and backward's dG buffers are taken from a per-Python-thread pool, so a training loop does not
pay allocation and first-touch page faults on every step. Buffers only grow.
"""
from __future__ import annotations

import threading
from typing import Dict, Tuple

import numpy as np

_local = threading.local()


def get(name: str, shape: Tuple[int, ...], dtype) -> np.ndarray:
    """A C-contiguous scratch array of `shape` (contents undefined), reused across calls."""
    pool: Dict[Tuple[str, np.dtype], np.ndarray] = getattr(_local, "pool", None)
    if pool is None:
        pool = _local.pool = {}
    dtype = np.dtype(dtype)
    size = 1
    for s in shape:
        size *= int(s)
    key = (name, dtype)
    buf = pool.get(key)
    if buf is None or buf.size < size:
        buf = np.empty(max(size, 1), dtype)
        pool[key] = buf
    return buf[:size].reshape(shape)


def clear() -> None:
    """Release this thread's scratch buffers."""
    _local.pool = {}
