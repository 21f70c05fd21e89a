"""Streaming cells: one GRU/LSTM step on a (B, I) input, for token-by-token or sample-by-sample
inference (fastgru.GRUCell, fastgru.LSTMCell, and the layers' step()).

The per-step cost is dominated by Python overhead at small sizes, so the hot path checks only
what it must (type, dtype, shape, contiguity) and anything else goes through the full checks.
The step itself runs on fastgru._step's steppers (one fused kernel call), which keep references
to the weight arrays, so in-place parameter updates are seen without rebuilding them.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from fastgru import _validation as V
from fastgru._module import Module, ParamStore, check_dtype, check_size, optional_seed
from fastgru._step import GRUStepper, LSTMStepper
from fastgru.interop import InteropMixin, from_keras_cell, from_onnx, to_onnx


def gru_stepper(w_ih, w_hh, b_ih, b_hh, reset_after: bool, n_threads: int | None = None):
    """A stepper with .step(x (B, I), h (B, H)) -> new h_new (B, H); inputs C-contiguous, of
    the weights' dtype, already validated."""
    return GRUStepper(w_ih, w_hh, b_ih, b_hh, reset_after, n_threads=n_threads)


def lstm_stepper(w_ih, w_hh, b_ih, b_hh, w_hr=None, n_threads: int | None = None):
    """A stepper with .step(x (B, I), h (B, P), c (B, H)) -> new (h_new, c_new)."""
    return LSTMStepper(w_ih, w_hh, b_ih, b_hh, w_hr, n_threads=n_threads)


class _CellBase(InteropMixin, Module):
    _cell = "gru"
    _L = 1  # interop treats a cell as one layer, one direction
    num_directions = 1
    _proj = 0

    def _setup(self, input_size, hidden_size, bias, reset_after, dtype, seed, n_threads) -> None:
        self._n_threads = V.check_n_threads(n_threads)
        self._I = check_size("input_size", input_size)
        self._H = check_size("hidden_size", hidden_size)
        self._bias = V.check_bool("bias", bias)
        self._reset_after = V.check_bool("reset_after", reset_after)
        dt = check_dtype(dtype)
        self._rng = np.random.default_rng(optional_seed(seed))
        G = (3 if self._cell == "gru" else 4) * self._H
        blk: dict[str, tuple[int, ...]] = {"w_ih": (1, G, self._I), "w_hh": (1, G, self._H)}
        if self._bias:
            blk.update(b_ih=(1, G), b_hh=(1, G))
        names = {r: [n] for r, n in (("w_ih", "weight_ih"), ("w_hh", "weight_hh"),
                                     ("b_ih", "bias_ih"), ("b_hh", "bias_hh"))}
        self._store = ParamStore([blk], [names], dt)
        self.reset_parameters()
        w = self._store.blocks[0]
        zeros = np.zeros(G, dt)
        self._b = (w["b_ih"][0], w["b_hh"][0]) if self._bias else (zeros, zeros)
        self.training = True

    def reset_parameters(self) -> None:
        """Draw every parameter from U(-1/sqrt(H), 1/sqrt(H)) (PyTorch's initialisation)."""
        k = 1.0 / math.sqrt(self._H)
        self._store.flat[...] = self._rng.uniform(-k, k, self._store.flat.size)

    def to_onnx(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """ONNX GRU/LSTM operator inputs W [1, G, I], R [1, G, H], B [1, 2G] (None without
        bias): GRU gates z, r, h with linear_before_reset = int(reset_after), LSTM i, o, f, c.
        One ONNX step (T = 1, direction "forward") computes this cell."""
        return to_onnx(self, 0)

    @classmethod
    def from_onnx(cls, W: Any, R: Any, B: Any = None, dtype: Any = None, **kwargs: Any):
        """A cell from forward ONNX GRU/LSTM inputs W [1, G, I], R [1, G, H], B [1, 2G] (None:
        zero biases, gives bias=False). GRU: linear_before_reset=1 gives reset_after=True, 0
        (ONNX's default; a warning when not given) reset_after=False. See fastgru.GRU.from_onnx."""
        return from_onnx(cls, W, R, B, dtype=dtype, **kwargs)

    @classmethod
    def from_keras(cls, keras_cell: Any, dtype: Any = None, **kwargs: Any):
        """A cell equal to a built keras.layers.GRUCell / LSTMCell (same weights and
        reset_after; Keras' tanh and sigmoid activations only)."""
        return from_keras_cell(cls, keras_cell, dtype=dtype, **kwargs)

    input_size = property(lambda self: self._I, doc="I, input features.")
    hidden_size = property(lambda self: self._H, doc="H, hidden units.")
    bias = property(lambda self: self._bias, doc="Whether the cell has b_ih and b_hh.")

    def __repr__(self) -> str:
        s = f"{type(self).__name__}({self._I}, {self._H}"
        if not self._bias:
            s += ", bias=False"
        if self._cell == "gru" and not self._reset_after:
            s += ", reset_after=False"
        if self.dtype != np.float32:
            s += f", dtype={self.dtype}"
        return s + ")"

    def _x(self, x: Any) -> tuple[np.ndarray, bool]:
        if (type(x) is np.ndarray and x.dtype == self._store.dtype and x.ndim == 2
                and x.shape[1] == self._I and x.shape[0] > 0 and x.flags.c_contiguous):
            return x, False  # the hot path
        x = V.float_array("x", x, lists_as=self.dtype)
        if x.dtype != self.dtype:
            raise TypeError(f"x has dtype {x.dtype} but the cell is {self.dtype}")
        if x.ndim == 1:
            V.check_shape("x", x, (self._I,), "(I,) unbatched")
            return np.ascontiguousarray(x[None]), True
        if x.ndim != 2 or x.shape[1] != self._I:
            raise ValueError(f"x must have shape (B, I) = (B, {self._I}), got {x.shape}")
        return np.ascontiguousarray(x), False

    def _s(self, name: str, s: Any, B: int, unbatched: bool) -> np.ndarray:
        if s is None:
            return np.zeros((B, self._H), self.dtype)
        if (not unbatched and type(s) is np.ndarray and s.dtype == self._store.dtype
                and s.shape == (B, self._H) and s.flags.c_contiguous):
            return s
        s = V.float_array(name, s, self.dtype)
        if unbatched:
            V.check_shape(name, s, (self._H,), "(H,) for unbatched x")
            s = s[None]
        V.check_shape(name, s, (B, self._H), "(B, H)")
        return np.ascontiguousarray(s)


class GRUCell(_CellBase):
    """One GRU step (torch.nn.GRUCell): h' = GRU(x, h), PyTorch gate order r, z, n.

    Parameters weight_ih (3H, I), weight_hh (3H, H), bias_ih (3H,), bias_hh (3H,), initialised
    from U(-1/sqrt(H), 1/sqrt(H)). reset_after as in fastgru.GRU. Inference only: train with
    fastgru.GRU and stream with its step(), or copy its weights into a cell. n_threads: threads
    of the step kernel (None: fastgru's default policy; it stays serial for small weights).
    """

    _cell = "gru"

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 reset_after: bool = True, dtype: Any = "float32", seed: Any = None, *,
                 n_threads: int | None = None) -> None:
        self._setup(input_size, hidden_size, bias, reset_after, dtype, seed, n_threads)
        w = self._store.blocks[0]
        self._stepper = gru_stepper(w["w_ih"][0], w["w_hh"][0], self._b[0], self._b[1],
                                    self._reset_after, self._n_threads)

    reset_after = property(lambda self: self._reset_after,
                           doc="True: reset gate after the recurrent product (PyTorch).")

    def get_config(self) -> dict:
        return dict(input_size=self._I, hidden_size=self._H, bias=self._bias,
                    reset_after=self._reset_after, dtype=str(self.dtype), n_threads=self._n_threads)

    def __call__(self, x: Any, h: Any | None = None, hx: Any | None = None) -> np.ndarray:
        """x (B, I) (or (I,)), h (B, H) or None for zeros -> h' (B, H) (or (H,)). hx: another
        name for h (torch.nn.GRUCell's keyword)."""
        if hx is not None:
            h = V.state_or_hx("h", h, hx)
        if type(x) is np.ndarray and type(h) is np.ndarray and x.ndim == 2 and x.shape[0]:
            try:  # the hot path: the stepper checks dtype, shapes and contiguity in C
                return self._stepper.step(x, h)
            except ValueError:
                pass  # not plain (B, I)/(B, H) arrays: the checks below convert or explain
        x, unbatched = self._x(x)
        h = self._s("h", h, x.shape[0], unbatched)
        if not x.shape[0]:  # an empty batch (as torch allows): nothing to run
            return h.copy()
        hn = self._stepper.step(x, h)
        return hn[0] if unbatched else hn

    forward = __call__


class LSTMCell(_CellBase):
    """One LSTM step (torch.nn.LSTMCell): (h', c') = LSTM(x, (h, c)), gate order i, f, g, o.

    Parameters weight_ih (4H, I), weight_hh (4H, H), bias_ih (4H,), bias_hh (4H,). Inference only.
    """

    _cell = "lstm"

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 dtype: Any = "float32", seed: Any = None, *,
                 n_threads: int | None = None) -> None:
        self._setup(input_size, hidden_size, bias, True, dtype, seed, n_threads)
        w = self._store.blocks[0]
        self._stepper = lstm_stepper(w["w_ih"][0], w["w_hh"][0], self._b[0], self._b[1], None,
                                     self._n_threads)

    def get_config(self) -> dict:
        return dict(input_size=self._I, hidden_size=self._H, bias=self._bias,
                    dtype=str(self.dtype), n_threads=self._n_threads)

    def __call__(self, x: Any, hx: tuple[Any, Any] | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """x (B, I) (or (I,)), hx (h (B, H), c (B, H)) or None -> (h', c')."""
        if type(x) is np.ndarray and type(hx) is tuple and x.ndim == 2 and x.shape[0]:
            try:  # the hot path, as in GRUCell
                h, c = hx
                if type(h) is np.ndarray and type(c) is np.ndarray:
                    return self._stepper.step(x, h, c)
            except ValueError:
                pass
        x, unbatched = self._x(x)
        if hx is None:
            h = c = None
        elif isinstance(hx, (tuple, list)) and len(hx) == 2:
            h, c = hx
        else:
            raise TypeError(f"hx must be a tuple (h, c) of two arrays (or None), got "
                            f"{V.describe_state(hx)}")
        B = x.shape[0]
        h, c = self._s("h", h, B, unbatched), self._s("c", c, B, unbatched)
        if not B:  # an empty batch: nothing to run
            return h.copy(), c.copy()
        hn, cn = self._stepper.step(x, h, c)
        return (hn[0], cn[0]) if unbatched else (hn, cn)

    forward = __call__
