"""Streaming single steps for cells and layer.step (inference): see _kernels/_stream.pyx.

The steppers keep references to the weight arrays (PyTorch layout) and read them in place on
every step, so parameter updates are always seen. They do no validation beyond cheap shape and
dtype checks: callers (GRUCell, LSTMCell, layer.step) validate user input first.
"""
from __future__ import annotations

from typing import cast

import numpy as np

from fastgru import _threads
from fastgru._kernels import _stream


class _Base:
    def __init__(self, kind, w_ih, w_hh, b_ih, b_hh, w_hr, reset_after, n_threads):
        dt = w_ih.dtype
        G = w_ih.shape[0]
        b_ih = np.zeros(G, dt) if b_ih is None else b_ih
        b_hh = np.zeros(G, dt) if b_hh is None else b_hh
        self._c_hold = _threads.c_hold_active()
        team = _threads.resolve(n_threads)
        self._impl = _stream.Stepper(kind, w_ih, w_hh, b_ih, b_hh, w_hr, reset_after, team)


class GRUStepper(_Base):
    """h' = step(x (B, I), h (B, H)) for a GRU cell with weights w_ih (3H, I), w_hh (3H, H)."""

    def __init__(self, w_ih: np.ndarray, w_hh: np.ndarray, b_ih: np.ndarray | None,
                 b_hh: np.ndarray | None, reset_after: bool = True,
                 n_threads: int | None = None):
        super().__init__(0, w_ih, w_hh, b_ih, b_hh, None, reset_after, n_threads)

    def step(self, x: np.ndarray, h: np.ndarray) -> np.ndarray:
        if self._c_hold:
            return cast(np.ndarray, self._impl.step(x, h))
        with _threads.kernel_guard():
            return cast(np.ndarray, self._impl.step(x, h))

    def step_layer(self, x: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A one-layer GRU's step: (y (B, H), h' (1, B, H)), y a copy of h'[0]."""
        if self._c_hold:
            return self._impl.step_layer(x, h)
        with _threads.kernel_guard():
            return self._impl.step_layer(x, h)


class LSTMStepper(_Base):
    """(h', c') = step(x (B, I), h (B, P), c (B, H)) for an LSTM cell (w_hr (P, H) optional)."""

    def __init__(self, w_ih: np.ndarray, w_hh: np.ndarray, b_ih: np.ndarray | None,
                 b_hh: np.ndarray | None, w_hr: np.ndarray | None = None,
                 n_threads: int | None = None):
        super().__init__(1, w_ih, w_hh, b_ih, b_hh, w_hr, True, n_threads)

    def step(self, x: np.ndarray, h: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._c_hold:
            return cast(tuple[np.ndarray, np.ndarray], self._impl.step(x, h, c))
        with _threads.kernel_guard():
            return cast(tuple[np.ndarray, np.ndarray], self._impl.step(x, h, c))
