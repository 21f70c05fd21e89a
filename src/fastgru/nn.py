"""Layers of the training API: Embedding, Dense, Activation, Dropout, TimePooling and the adapter
that puts a `fastgru.GRU` / `fastgru.LSTM` into a model.

Every layer has `forward(x, ctx) -> y` and `backward(dy) -> dx`; backward ADDS to the parameter
gradients (PyTorch semantics) so that gradients can be accumulated over several batches, and
`zero_grad()` clears them. Arrays are batch-first like Keras: token ids (B, T), features
(B, T, F), pooled features (B, F). `ctx.lengths` (B,) gives each sequence's valid steps: a batch
is trimmed to its longest sequence and nothing is computed for the padding of the others.

Parameters and gradients use PyTorch names and layouts (`weight` (out, in), `bias`), so that
weights move to and from torch without reshaping.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import expit

from fastgru._validation import check_int

__all__ = [
    "Layer", "Embedding", "Dense", "Activation", "Dropout", "TimePooling", "RNN",
    "GlobalAveragePooling1D", "GlobalMaxPooling1D", "LastState",
]

DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


@dataclass
class Spec:
    """What flows between layers at build time: feature size, whether there is a time axis,
    integer token input, and the number of directions of the last recurrent layer (and whether
    its one direction runs backward in time: its final state then sits at step 0)."""

    features: int
    sequence: bool = True
    integer: bool = False
    directions: int = 1
    reverse: bool = False

    def shape(self) -> tuple[int | None, ...]:
        if self.integer:
            return (None, None)
        return (None, None, self.features) if self.sequence else (None, self.features)


@dataclass
class Ctx:
    """Per-call context: valid lengths (B,) or None (all steps valid), training mode, RNG."""

    lengths: np.ndarray | None = None
    training: bool = False
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))


def check_dtype(dtype: Any) -> np.dtype:
    """float32 or float64 as a np.dtype (None: float32, as torch); TypeError otherwise."""
    if dtype is None:
        return np.dtype(np.float32)
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}")
    return dt


def _rate(name: str, v: Any) -> float:
    try:
        r = float(v)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number in [0, 1), got {v!r}") from None
    if not 0.0 <= r < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {v!r}")
    return r


def valid_mask(lengths: np.ndarray | None, B: int, T: int) -> np.ndarray | None:
    """(B, T) boolean mask of valid steps, or None when every step is valid."""
    if lengths is None or bool(np.all(lengths >= T)):
        return None
    return np.arange(T)[None, :] < lengths[:, None]


class Layer:
    """Base class. Subclasses set `self.params` / `self.grads_` (dicts of arrays) in build."""

    #: registry name used by get_config / load_model
    kind = "Layer"

    def __init__(self, name: str | None = None) -> None:
        self.name = name
        self.built = False
        self.dtype: np.dtype | None = None
        self.params: dict[str, np.ndarray] = {}
        self.grads_: dict[str, np.ndarray] = {}

    # -- build-time ---------------------------------------------------------------------------
    def build(self, spec: Spec, dtype: np.dtype, rng: np.random.Generator) -> Spec:
        """Create parameters for an input described by `spec`; return the output's spec."""
        self.dtype = dtype
        self.built = True
        return spec

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-serializable) that rebuild this layer."""
        return {"name": self.name}

    # -- run-time -----------------------------------------------------------------------------
    def forward(self, x: np.ndarray, ctx: Ctx) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dy: np.ndarray) -> np.ndarray | None:
        raise NotImplementedError

    def parameters(self) -> dict[str, np.ndarray]:
        """Parameters by name (the arrays themselves: update them in place)."""
        return self.params

    def grads(self) -> dict[str, np.ndarray]:
        """Gradients by parameter name, accumulated since the last zero_grad()."""
        return self.grads_

    def sparse_rows(self) -> dict[str, np.ndarray]:
        """For row-sparse parameters: the rows with a non-zero gradient (sorted, unique)."""
        return {}

    def zero_grad(self) -> None:
        for g in self.grads_.values():
            g[...] = 0

    def set_backend(self, backend: str) -> None:
        """Only recurrent layers have a second implementation; others ignore this."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name")
        return f"{type(self).__name__}({args})"


# ------------------------------------------------------------------------------------------
class Embedding(Layer):
    """Token ids (B, T) -> vectors (B, T, E). `padding_idx` (default 0) is the `<pad>` id: its row
    is zero and never updated. Rows start as N(0, init_scale^2).

    init_scale=0.1 by default (PyTorch draws N(0, 1), Keras U(-0.05, 0.05)): small initial
    vectors let a recurrent layer trained from scratch with Adam learn much faster; measured
    on MR (GRU 128, Adam 2e-3): 77-78% test accuracy after 3 epochs at 0.1, 70% at 1.0.

    Backward adds into the rows of ids in the batch (summing repeated ids). sparse=False (the
    default, as PyTorch's nn.Embedding and Keras): the gradient is an ordinary dense one, zero
    outside those rows, and the optimizer updates every row (momentum, Adam moments and
    weight decay move rows absent from the batch too), as torch.optim and Keras do.
    sparse=True: `sparse_rows()` lists the rows, the optimizers update only them (lazy updates,
    like PyTorch's sparse=True with SparseAdam) and zero_grad clears only them, so a batch
    costs O(B*T*E), not O(V*E): much faster for a big vocabulary, but other numbers than a
    dense PyTorch/Keras training as soon as a batch misses some rows (plain SGD excepted)."""

    kind = "Embedding"

    def __init__(self, input_dim: int, output_dim: int, padding_idx: int | None = 0,
                 init_scale: float = 0.1, name: str | None = None,
                 sparse: bool = False) -> None:
        super().__init__(name)
        if not isinstance(sparse, (bool, np.bool_)):
            raise TypeError(f"sparse must be a bool, got {type(sparse).__name__}")
        self.sparse = bool(sparse)
        self.input_dim = check_int("input_dim", input_dim, 1)
        self.output_dim = check_int("output_dim", output_dim, 1)
        if padding_idx is not None and not 0 <= int(padding_idx) < self.input_dim:
            raise ValueError(f"padding_idx must be in [0, input_dim) or None, got {padding_idx!r}")
        self.padding_idx = None if padding_idx is None else int(padding_idx)
        self.init_scale = float(init_scale)
        self._rows: list = []

    def get_config(self) -> dict[str, Any]:
        return dict(name=self.name, input_dim=self.input_dim, output_dim=self.output_dim,
                    padding_idx=self.padding_idx, init_scale=self.init_scale, sparse=self.sparse)

    def build(self, spec: Spec, dtype: np.dtype, rng: np.random.Generator) -> Spec:
        super().build(spec, dtype, rng)
        w = (rng.standard_normal((self.input_dim, self.output_dim)) * self.init_scale).astype(dtype)
        if self.padding_idx is not None:
            w[self.padding_idx] = 0
        self.params = {"weight": w}
        self.grads_ = {"weight": np.zeros_like(w)}
        return Spec(self.output_dim, sequence=spec.sequence, integer=False)

    def forward(self, x: np.ndarray, ctx: Ctx) -> np.ndarray:
        if x.dtype.kind not in "iu":
            raise TypeError(f"Embedding expects integer token ids, got dtype {x.dtype}")
        if x.size and (int(x.min()) < 0 or int(x.max()) >= self.input_dim):
            raise ValueError(f"token ids must be in [0, {self.input_dim}), got values in "
                             f"[{int(x.min())}, {int(x.max())}]")
        self._x, self._lengths = x, ctx.lengths
        return self.params["weight"][x]

    def backward(self, dy: np.ndarray) -> None:
        x = self._x
        mask = valid_mask(self._lengths, *x.shape[:2]) if x.ndim == 2 else None
        ids = x[mask] if mask is not None else x.reshape(-1)
        g = dy[mask] if mask is not None else dy.reshape(-1, self.output_dim)
        if self.padding_idx is not None:
            keep = ids != self.padding_idx
            ids, g = ids[keep], g[keep]
        if ids.size == 0:
            return None
        # Sum the rows of repeated ids with one sort + reduceat (deterministic, and several
        # times faster than np.add.at on (n, E) rows).
        order = np.argsort(ids, kind="stable")
        s = ids[order]
        starts = np.flatnonzero(np.concatenate(([True], s[1:] != s[:-1])))
        rows = s[starts]
        self.grads_["weight"][rows] += np.add.reduceat(g[order], starts, axis=0)
        self._rows.append(rows)
        return None

    def touched_rows(self) -> np.ndarray:
        """The rows backward added into since zero_grad (sorted, unique)."""
        if not self._rows:
            return np.zeros(0, np.int64)
        if len(self._rows) == 1:
            return self._rows[0]
        return np.unique(np.concatenate(self._rows))

    def sparse_rows(self) -> dict[str, np.ndarray]:
        return {"weight": self.touched_rows()} if self.sparse else {}

    def zero_grad(self) -> None:
        if self.sparse:
            if self._rows:
                self.grads_["weight"][self.touched_rows()] = 0
        elif self.grads_:
            # dense: an allreduce (distributed) or a caller may have written any row
            self.grads_["weight"][...] = 0
        self._rows = []


# ------------------------------------------------------------------------------------------
def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


ACTIVATIONS: dict[str, tuple[Callable, Callable]] = {
    # name: (f(x), df given (x, y=f(x), dy) -> dx)
    "linear": (lambda x: x, lambda x, y, dy: dy),
    "relu": (lambda x: np.maximum(x, 0), lambda x, y, dy: dy * (x > 0)),
    "tanh": (np.tanh, lambda x, y, dy: dy * (1 - y * y)),
    "sigmoid": (expit, lambda x, y, dy: dy * y * (1 - y)),
    "softmax": (_softmax, lambda x, y, dy: y * (dy - (dy * y).sum(axis=-1, keepdims=True))),
}


def _activation_name(a: str | None) -> str:
    a = "linear" if a is None else a
    if a not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)} or None, got {a!r}")
    return a


class Activation(Layer):
    """Elementwise activation (softmax: over the last axis). Same shape in and out."""

    kind = "Activation"

    def __init__(self, activation: str, name: str | None = None) -> None:
        super().__init__(name)
        self.activation = _activation_name(activation)

    def get_config(self) -> dict[str, Any]:
        return dict(name=self.name, activation=self.activation)

    def forward(self, x: np.ndarray, ctx: Ctx) -> np.ndarray:
        self._x = x
        self._y = ACTIVATIONS[self.activation][0](x)
        return self._y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return ACTIVATIONS[self.activation][1](self._x, self._y, dy)


class Dense(Layer):
    """y = activation(x @ weight.T + bias) on the last axis: (B, F) -> (B, units) and
    (B, T, F) -> (B, T, units) (a Dense at every time step, Keras' TimeDistributed(Dense)).
    weight (units, F) Glorot-uniform, bias (units,) zeros (Keras defaults)."""

    kind = "Dense"

    def __init__(self, units: int, activation: str | None = None, use_bias: bool = True,
                 name: str | None = None) -> None:
        super().__init__(name)
        self.units = check_int("units", units, 1)
        self.activation = _activation_name(activation)
        self.use_bias = bool(use_bias)
        self.skip_activation = False  # set by a model that fuses the activation into the loss

    def get_config(self) -> dict[str, Any]:
        return dict(name=self.name, units=self.units, activation=self.activation,
                    use_bias=self.use_bias)

    def build(self, spec: Spec, dtype: np.dtype, rng: np.random.Generator) -> Spec:
        super().build(spec, dtype, rng)
        if spec.integer:
            raise ValueError("Dense cannot take token ids: put an Embedding first")
        fan_in = spec.features
        lim = np.sqrt(6.0 / (fan_in + self.units))
        self.params = {"weight": rng.uniform(-lim, lim, (self.units, fan_in)).astype(dtype)}
        if self.use_bias:
            self.params["bias"] = np.zeros(self.units, dtype)
        self.grads_ = {k: np.zeros_like(v) for k, v in self.params.items()}
        return Spec(self.units, sequence=spec.sequence)

    def forward(self, x: np.ndarray, ctx: Ctx) -> np.ndarray:
        self._x = x
        z = x @ self.params["weight"].T
        if self.use_bias:
            z += self.params["bias"]
        if self.activation == "linear" or self.skip_activation:
            self._z = self._y = z
            return z
        self._z = z
        self._y = ACTIVATIONS[self.activation][0](z)
        return self._y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        if not (self.activation == "linear" or self.skip_activation):
            dy = ACTIVATIONS[self.activation][1](self._z, self._y, dy)
        x2 = self._x.reshape(-1, self._x.shape[-1])
        dy2 = dy.reshape(-1, self.units)
        self.grads_["weight"] += dy2.T @ x2
        if self.use_bias:
            self.grads_["bias"] += dy2.sum(axis=0)
        return dy @ self.params["weight"]


class Dropout(Layer):
    """Inverted dropout: in training, zero each element with probability `rate` and scale the
    rest by 1 / (1 - rate); identity at inference. The mask comes from the model's RNG, so a
    seeded run is reproducible."""

    kind = "Dropout"

    def __init__(self, rate: float, name: str | None = None) -> None:
        super().__init__(name)
        self.rate = _rate("rate", rate)

    def get_config(self) -> dict[str, Any]:
        return dict(name=self.name, rate=self.rate)

    def forward(self, x: np.ndarray, ctx: Ctx) -> np.ndarray:
        if not ctx.training or self.rate == 0.0:
            self._mask = None
            return x
        keep = ctx.rng.random(x.shape, dtype=np.float32 if x.dtype == np.float32 else np.float64)
        self._mask = (keep >= self.rate).astype(x.dtype) * x.dtype.type(1.0 / (1.0 - self.rate))
        return x * self._mask

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy if self._mask is None else dy * self._mask


# ------------------------------------------------------------------------------------------
class TimePooling(Layer):
    """(B, T, F) -> (B, F) over each sequence's valid steps only.

    mode "last": the state at the last valid step. After a bidirectional recurrent layer
    (F = 2H) the second half is the reverse direction, whose final state sits at step 0: the
    result is then [forward state at lengths-1 | reverse state at 0], i.e. the layer's h_n.
    After a reverse (go_backwards) layer it is step 0, again the layer's h_n.
    mode "mean": the mean over valid steps; "max": the maximum over valid steps."""

    kind = "TimePooling"
    MODES = ("last", "mean", "max")

    def __init__(self, mode: str = "last", name: str | None = None) -> None:
        super().__init__(name)
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        self.mode = mode
        self.directions = 1
        self.reverse = False

    def get_config(self) -> dict[str, Any]:
        return dict(name=self.name, mode=self.mode)

    def build(self, spec: Spec, dtype: np.dtype, rng: np.random.Generator) -> Spec:
        super().build(spec, dtype, rng)
        if not spec.sequence or spec.integer:
            raise ValueError(f"{type(self).__name__} needs a (B, T, F) sequence input")
        self.directions, self.reverse = spec.directions, spec.reverse
        return Spec(spec.features, sequence=False)

    def forward(self, x: np.ndarray, ctx: Ctx) -> np.ndarray:
        if x.ndim != 3:
            raise ValueError(f"TimePooling expects (B, T, F), got shape {x.shape}")
        B, T, F = x.shape
        L = np.full(B, T, np.int64) if ctx.lengths is None else np.asarray(ctx.lengths, np.int64)
        self._shape, self._L = x.shape, L
        rows = np.arange(B)
        if self.mode == "last":
            last = np.maximum(L - 1, 0)
            if self.directions == 2:
                h = F // 2
                out = np.concatenate([x[rows, last, :h], x[:, 0, h:]], axis=1)
            else:
                out = x[:, 0].copy() if self.reverse else x[rows, last]
        else:
            mask = valid_mask(L, B, T)
            if self.mode == "mean":
                s = (x.sum(axis=1) if mask is None else
                     np.einsum("btf,bt->bf", x, mask.astype(x.dtype)))
                out = s / np.maximum(L, 1)[:, None].astype(x.dtype)
            else:
                xm = x if mask is None else np.where(mask[:, :, None], x, -np.inf)
                self._arg = xm.argmax(axis=1)  # (B, F): the step each maximum came from
                out = np.take_along_axis(x, self._arg[:, None, :], axis=1)[:, 0]
        if not L.all():  # a row without valid steps (L = 0) pools to zeros
            out[L < 1] = 0
        return out

    def backward(self, dy: np.ndarray) -> np.ndarray:
        B, T, F = self._shape
        L = self._L
        dx = np.zeros((B, T, F), dy.dtype)
        rows = np.arange(B)
        if not L.all():  # rows without valid steps pooled to constant zeros
            dy = np.where((L > 0)[:, None], dy, 0)
        if self.mode == "last":
            last = np.maximum(L - 1, 0)
            if self.directions == 2:
                h = F // 2
                dx[rows, last, :h] = dy[:, :h]
                dx[:, 0, h:] += dy[:, h:]
            elif self.reverse:
                dx[:, 0] = dy
            else:
                dx[rows, last] = dy
        elif self.mode == "mean":
            mask = valid_mask(L, B, T)
            g = dy / np.maximum(L, 1)[:, None].astype(dy.dtype)
            dx[...] = g[:, None, :]
            if mask is not None:
                dx *= mask[:, :, None]
        else:
            np.put_along_axis(dx, self._arg[:, None, :], dy[:, None, :], axis=1)
        return dx


def LastState(name: str | None = None) -> TimePooling:
    """The last valid state of each sequence (Keras' return_sequences=False):
    TimePooling("last")."""
    return TimePooling("last", name=name)


def GlobalAveragePooling1D(name: str | None = None) -> TimePooling:
    """Keras name for TimePooling("mean") (the mean over valid steps, as Keras with a mask)."""
    return TimePooling("mean", name=name)


def GlobalMaxPooling1D(name: str | None = None) -> TimePooling:
    """Keras name for TimePooling("max") (the maximum over valid steps)."""
    return TimePooling("max", name=name)


# ------------------------------------------------------------------------------------------
RNN_ATTRS = ("input_size", "hidden_size", "num_layers", "bias", "dropout", "bidirectional")


class RNN(Layer):
    """Puts a `fastgru.GRU` or `fastgru.LSTM` (issue 4's layers) into a model.

    (B, T, I) -> (B, T, D*H) (D*P for an LSTM with a projection), zeros at padding; the model's
    lengths go to the recurrent layer, so no step is computed past a sequence's end. Follow it
    with a TimePooling for classification, or a Dense for a per-step output. A Sequential wraps
    GRU/LSTM instances in this adapter by itself.
    """

    kind = "RNN"

    def __init__(self, layer: Any, name: str | None = None) -> None:
        super().__init__(name)
        for a in ("forward", "backward", "parameters", "grads", "zero_grad"):
            if not callable(getattr(layer, a, None)):
                raise TypeError(f"layer must be a fastgru.GRU or fastgru.LSTM, got "
                                f"{type(layer).__name__} (no {a}())")
        self.layer = layer
        self.cell = type(layer).__name__.lower()

    @property
    def directions(self) -> int:
        return 2 if getattr(self.layer, "bidirectional", False) else 1

    @property
    def reverse(self) -> bool:
        """One direction that runs backward in time (reverse=True, Keras' go_backwards)."""
        return self.directions == 1 and bool(getattr(self.layer, "reverse", False))

    @property
    def output_size(self) -> int:
        p = int(getattr(self.layer, "proj_size", 0) or 0)
        return self.directions * (p if p > 0 else int(self.layer.hidden_size))

    def get_config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"name": self.name, "cell": self.cell}
        for a in RNN_ATTRS + ("reset_after", "proj_size"):
            if hasattr(self.layer, a):
                v = getattr(self.layer, a)
                cfg[a] = v.item() if isinstance(v, np.generic) else v
        return cfg

    def build(self, spec: Spec, dtype: np.dtype, rng: np.random.Generator) -> Spec:
        super().build(spec, dtype, rng)
        if spec.integer or not spec.sequence:
            raise ValueError(f"{self.cell.upper()} needs a (B, T, F) sequence input; put an "
                             "Embedding before it for token ids")
        if int(self.layer.input_size) != spec.features:
            raise ValueError(f"{self.cell.upper()} has input_size={self.layer.input_size} but "
                             f"the previous layer gives {spec.features} features")
        ldt = np.dtype(getattr(self.layer, "dtype", dtype))
        if ldt != dtype:
            raise TypeError(f"{self.cell.upper()} has dtype {ldt} but the model is {dtype}: "
                            "create it with the same dtype")
        return Spec(self.output_size, sequence=True, directions=self.directions,
                    reverse=self.reverse)

    def parameters(self) -> dict[str, np.ndarray]:
        return self.layer.parameters()

    def grads(self) -> dict[str, np.ndarray]:
        return self.layer.grads()

    def zero_grad(self) -> None:
        self.layer.zero_grad()

    def set_backend(self, backend: str) -> None:
        self.layer.backend = backend

    def forward(self, x: np.ndarray, ctx: Ctx) -> np.ndarray:
        # Dropout between stacked layers is the recurrent layer's own (train/eval switch).
        # Its generator is reseeded from the model's for every training batch, so the masks
        # follow the model's RNG state: a resumed run and verify's reference pass draw the
        # very same masks.
        (self.layer.train if ctx.training else self.layer.eval)()
        if ctx.training and self.layer.dropout > 0 and self.layer.num_layers > 1:
            self.layer.manual_seed(int(ctx.rng.integers(2**63 - 1)))
        bf = bool(getattr(self.layer, "batch_first", False))
        xin = x if bf else np.ascontiguousarray(x.transpose(1, 0, 2))
        L, self._empty = ctx.lengths, None
        if L is not None and bool(np.any(L < 1)):
            # A row of padding only (Keras: a fully masked row) keeps its zero initial state:
            # the layer runs one step there, whose outputs are zeroed here and whose gradient
            # is cut in backward, so it changes neither the result nor the weights.
            self._empty, L = L < 1, np.maximum(L, 1)
        y = self.layer(xin, None, L)[0]
        y = y if bf else y.transpose(1, 0, 2)
        if self._empty is not None:
            y = y.copy()
            y[self._empty] = 0
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        bf = bool(getattr(self.layer, "batch_first", False))
        if getattr(self, "_empty", None) is not None:
            dy = dy.copy()
            dy[self._empty] = 0
        dyin = dy if bf else np.ascontiguousarray(dy.transpose(1, 0, 2))
        dx = self.layer.backward(dyin)
        if isinstance(dx, tuple):  # (dx, dh0)
            dx = dx[0]
        return dx if bf else dx.transpose(1, 0, 2)
