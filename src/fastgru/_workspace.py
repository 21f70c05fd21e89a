"""Reusable buffers for the kernels, so a training loop does not pay allocation and first-touch
page faults on every step (measured: 12% of a GRU training step at S2 went to the kernel
zeroing fresh pages of the ~100 MB of per-call buffers).

- get(name, shape, dtype): per-Python-thread scratch reused by every call (temporaries that
  never leave a call: the input projection, backward's dG, per-thread rows).
- take(shape, dtype) / give(array): a process-wide pool for buffers that live from a forward to
  its backward (the training cache). A cache returns its buffers when it is deleted, and the
  next forward takes them back. The pool keeps at most POOL_MAX_BYTES.
Arrays handed to the user (outputs, gradients) are never pooled.
Every buffer starts on a 64-byte (cache-line, AVX-512 vector) boundary: numpy only promises 16,
and a row that straddles cache lines made the B=1 kernels measurably slower (S6: ~10%).
"""
from __future__ import annotations

import threading
import weakref

import numpy as np

_local = threading.local()
_lock = threading.Lock()
_free: list[np.ndarray] = []   # pooled 1-D uint8 buffers not in use
_ours: weakref.WeakValueDictionary[int, np.ndarray] = weakref.WeakValueDictionary()  # made here
POOL_MAX_BYTES = 2 << 30
ALIGN = 64


def _raw(nbytes: int) -> np.ndarray:
    return np.empty(nbytes + ALIGN, np.uint8)


def _aligned(raw: np.ndarray, nbytes: int) -> np.ndarray:
    """The first `nbytes` of `raw` from its first 64-byte boundary on (a view)."""
    off = (-raw.ctypes.data) % ALIGN
    return raw[off:off + nbytes]


def _size(shape: tuple[int, ...]) -> int:
    size = 1  # not np.prod: ~1.5 us a call, three takes per training forward
    for s in shape:
        size *= int(s)
    return size


def get(name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """A C-contiguous scratch array of `shape` (contents undefined), reused across calls."""
    pool = getattr(_local, "pool", None)
    if pool is None:
        pool = _local.pool = {}
    dtype = np.dtype(dtype)
    size = _size(shape)
    key = (name, dtype)
    buf = pool.get(key)
    if buf is None or buf.size < size:
        n = max(size, 1)
        buf = _aligned(_raw(n * dtype.itemsize), n * dtype.itemsize).view(dtype)
        pool[key] = buf
    return buf[:size].reshape(shape)


def take(shape: tuple[int, ...], dtype) -> np.ndarray:
    """An array for data kept from a forward to its backward (contents undefined)."""
    dtype = np.dtype(dtype)
    need = _size(shape) * dtype.itemsize
    buf = None
    with _lock:
        best = -1
        for i, b in enumerate(_free):  # smallest free buffer that fits without much waste
            fits = need + ALIGN <= b.nbytes <= 2 * need + 4096 + ALIGN
            if fits and (best < 0 or b.nbytes < _free[best].nbytes):
                best = i
        if best >= 0:
            buf = _free.pop(best)
    if buf is None:
        buf = _raw(max(need, 1))
        with _lock:
            _ours[id(buf)] = buf
    return _aligned(buf, need).view(dtype).reshape(shape)


def give(*arrays) -> None:
    """Return arrays from take() to the pool (others are ignored)."""
    with _lock:
        for a in arrays:
            if a is None:
                continue
            base: np.ndarray = a
            while isinstance(base.base, np.ndarray):
                base = base.base
            if _ours.get(id(base)) is base and not any(b is base for b in _free):
                _free.append(base)
        total = sum(b.nbytes for b in _free)
        while _free and total > POOL_MAX_BYTES:
            b = _free.pop(0)
            total -= b.nbytes
            _ours.pop(id(b), None)


def clear() -> None:
    """Release this thread's scratch and the free part of the pool."""
    _local.pool = {}
    with _lock:
        for b in _free:
            _ours.pop(id(b), None)
        _free.clear()
