"""Losses, numerically stable, on logits (the metrics are in fastgru.metrics).

A loss returns the mean over samples (and over valid time steps for per-step targets) and its
gradient with respect to the model output in one call: `value, dpred = loss(pred, target,
mask)`. `mask` (B, T) marks valid steps of per-step outputs (padding contributes nothing).

Shapes: binary (B,) or (B, 1) logits with 0/1 targets, or (B, T[, 1]) per step; categorical
(..., K) logits with integer targets (...) or one-hot / probability targets (..., K); MSE any
shape (mean over the last axis when pred has one more axis than mask, Keras' convention).
"""
from __future__ import annotations

import inspect
from typing import Any

import numpy as np
from scipy.special import expit

__all__ = ["Loss", "BinaryCrossentropy", "CategoricalCrossentropy", "MeanSquaredError",
           "get_loss", "Metric", "get_metric"]


def _reduce(per: np.ndarray, mask: np.ndarray | None,
            sample_weight: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """Mean of per-element losses over valid elements, and d(mean)/d(per) as weights.
    sample_weight (B,) scales each sample's terms; the divisor stays the number of valid terms
    (Keras' "sum_over_batch_size": weights 2 and 0 average to 1, not 2)."""
    if mask is None and sample_weight is None:
        n = per.size
        return float(per.sum(dtype=np.float64) / max(n, 1)), np.full(per.shape, 1.0 / max(n, 1),
                                                                      per.dtype)
    m = mask
    if m is not None and m.shape != per.shape:
        m = m.reshape(m.shape + (1,) * (per.ndim - m.ndim))
    n = per.size if m is None else int(np.broadcast_to(m, per.shape).sum())
    if sample_weight is not None:
        sw = np.asarray(sample_weight, per.dtype)
        sw = sw.reshape(sw.shape + (1,) * (per.ndim - sw.ndim))
        m = sw if m is None else m * sw
    assert m is not None  # a mask or weights (the plain mean returned above)
    m = np.broadcast_to(m, per.shape)
    return float((per * m).sum(dtype=np.float64) / max(n, 1)), m.astype(per.dtype) / max(n, 1)

class Loss:
    """Base class: __call__(pred, target, mask=None) -> (mean loss, d mean / d pred)."""

    name = "loss"
    #: what the model output means for this loss: "binary", "multiclass" or "regression"
    task = "regression"
    from_logits = True

    def __call__(self, pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None,
                 sample_weight: np.ndarray | None = None) -> tuple[float, np.ndarray]:
        """A user's subclass may leave out sample_weight (B,) (then fit(class_weight=...,
        sample_weight=...) refuses it)."""
        raise NotImplementedError

    def on_logits(self, pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None,
                  sample_weight: np.ndarray | None = None) -> tuple[float, np.ndarray]:
        """The loss of a model output in logit space (what fit() hands over, the final
        sigmoid/softmax fused in); a user's subclass implements __call__ only."""
        return self(pred, target, mask, sample_weight)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name}


def on_model_output(loss: Loss, pred, target, mask=None,
                    sample_weight=None) -> tuple[float, np.ndarray]:
    """The loss of a model's output (logits, the final activation fused in): on_logits for the
    built-in cross-entropies, __call__ for a user's loss that defines its own (which has
    always been handed the model output as it is)."""
    if sample_weight is None:
        if isinstance(loss, _Crossentropy) and type(loss).__call__ is _Crossentropy.__call__:
            return loss.on_logits(pred, target, mask)
        return loss(pred, target, mask)
    if isinstance(loss, _Crossentropy) and type(loss).__call__ is _Crossentropy.__call__:
        return loss.on_logits(pred, target, mask, sample_weight)
    return loss(pred, target, mask, sample_weight)


def takes_sample_weight(loss: Loss) -> bool:
    """Whether loss(pred, target, mask, sample_weight) works (a user's loss may predate it)."""
    try:
        params = inspect.signature(loss.__call__).parameters
    except (TypeError, ValueError):
        return False
    kinds = [p.kind for p in params.values()]
    return inspect.Parameter.VAR_POSITIONAL in kinds or sum(
        k in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        for k in kinds) >= 4


def _same_shape(pred: np.ndarray, target: np.ndarray, name: str) -> None:
    """target matches pred, or pred without its trailing axis of 1 ((N,) targets, (N, 1) out)."""
    if target.shape != pred.shape and not (pred.shape[-1:] == (1,)
                                           and target.shape == pred.shape[:-1]):
        raise ValueError(f"{name}: target has shape {target.shape}, expected {pred.shape}"
                         + (f" or {pred.shape[:-1]}" if pred.shape[-1:] == (1,) else ""))


EPSILON = 1e-7  # Keras' backend epsilon: probabilities are clipped to [eps, 1 - eps]


class _Crossentropy(Loss):
    """from_logits=False (Keras' default) means the model ends with the matching sigmoid or
    softmax; the model then fuses that activation into the loss and hands it logits
    (on_logits). Called directly, loss(pred, target) takes probabilities when from_logits is
    False, clipped to [1e-7, 1 - 1e-7] as Keras does, and logits when it is True."""

    def __init__(self, from_logits: bool = False) -> None:
        self.from_logits = bool(from_logits)

    def __call__(self, pred, target, mask=None, sample_weight=None):
        pred = np.asarray(pred)
        if pred.dtype.kind in "biu":  # most likely Keras' order, (y_true, y_pred)
            raise TypeError(f"{self.name}: pred has integer dtype {pred.dtype}; a fastgru loss "
                            "is called as loss(pred, target), the model's output first "
                            "(Keras' order is (y_true, y_pred))")
        if self.from_logits:
            return self.on_logits(pred, target, mask, sample_weight)
        return self._on_probabilities(pred, np.asarray(target), mask, sample_weight)

    def _on_probabilities(self, pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None,
                          sample_weight: np.ndarray | None) -> tuple[float, np.ndarray]:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "from_logits": self.from_logits}


class BinaryCrossentropy(_Crossentropy):
    """-y log s(z) - (1 - y) log(1 - s(z)) with s = sigmoid, computed from logits z as
    max(z, 0) - z y + log1p(exp(-|z|)) (no overflow for any z). Gradient: s(z) - y."""

    name = "binary_crossentropy"
    task = "binary"

    def _on_probabilities(self, pred, target, mask, sample_weight):
        p = np.clip(pred, EPSILON, 1 - EPSILON)
        value, g = self.on_logits(np.log(p) - np.log1p(-p), target, mask, sample_weight)
        inside = (pred > EPSILON) & (pred < 1 - EPSILON)
        return value, np.where(inside, g / (p * (1 - p)), 0).astype(pred.dtype)

    def on_logits(self, pred, target, mask=None, sample_weight=None):
        _same_shape(pred, target, self.name)
        if target.size and not (target.min() >= 0 and target.max() <= 1):  # (NaN fails too)
            raise ValueError(f"{self.name}: targets must be in [0, 1], got values in "
                             f"[{target.min()}, {target.max()}]")
        z = pred.reshape(target.shape) if pred.size == target.size else pred
        y = target.astype(z.dtype, copy=False)
        per = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
        value, w = _reduce(per, mask, sample_weight)
        return value, ((expit(z) - y) * w).reshape(pred.shape)


class CategoricalCrossentropy(_Crossentropy):
    """Softmax cross-entropy from logits (..., K): logsumexp(z) - z[y]. Targets are integer
    class ids (...) (Keras' sparse_categorical_crossentropy) or one-hot / probabilities (..., K)
    (categorical_crossentropy). Gradient: softmax(z) - onehot(y)."""

    name = "categorical_crossentropy"
    task = "multiclass"

    def _on_probabilities(self, pred, target, mask, sample_weight):
        # Keras: q = pred / sum(pred), clipped to [eps, 1 - eps]; loss -sum(t log q)
        tot = pred.sum(axis=-1, keepdims=True)
        q = pred / tot
        qc = np.clip(q, EPSILON, 1 - EPSILON)
        self._check_target(pred, target)
        if target.ndim == pred.ndim:
            t = target.astype(pred.dtype, copy=False)
        else:
            t = np.zeros_like(qc)
            np.put_along_axis(t, target.astype(np.intp)[..., None], 1, -1)
        value, w = _reduce(-(t * np.log(qc)).sum(axis=-1), mask, sample_weight)
        dq = np.where((q > EPSILON) & (q < 1 - EPSILON), -t / qc, 0) * w[..., None]
        return value, ((dq - (dq * q).sum(axis=-1, keepdims=True)) / tot).astype(pred.dtype)

    def _check_target(self, pred, target) -> None:
        """One-hot / probability targets (..., K) >= 0, or integer class ids (...) in [0, K)."""
        if target.ndim == pred.ndim:
            if target.shape != pred.shape:
                raise ValueError(f"{self.name}: one-hot target has shape {target.shape}, "
                                 f"expected {pred.shape}")
            if target.size and not target.min() >= 0:
                raise ValueError(f"{self.name}: target probabilities must be >= 0, got "
                                 f"{target.min()}")
            return
        K = pred.shape[-1]
        if target.shape != pred.shape[:-1]:
            raise ValueError(f"{self.name}: class-id target has shape {target.shape}, "
                             f"expected {pred.shape[:-1]}")
        if target.size and not (target.min() >= 0 and target.max() < K and (
                target.dtype.kind in "iu" or np.array_equal(target, np.floor(target)))):
            raise ValueError(f"{self.name}: class ids must be integers in [0, {K}), got "
                             f"values in [{target.min()}, {target.max()}]")

    def on_logits(self, pred, target, mask=None, sample_weight=None):
        zmax = pred.max(axis=-1, keepdims=True)
        e = np.exp(pred - zmax)
        s = e.sum(axis=-1, keepdims=True)
        lse = np.log(s) + zmax  # (..., 1)
        p = e / s
        self._check_target(pred, target)
        if target.ndim == pred.ndim:  # one-hot or probabilities
            t = target.astype(pred.dtype, copy=False)
            per = (t * (lse - pred)).sum(axis=-1)
            g = p * t.sum(axis=-1, keepdims=True) - t
        else:
            t = target.astype(np.intp, copy=False)
            zy = np.take_along_axis(pred, t[..., None], axis=-1)
            per = (lse - zy)[..., 0]
            g = p
            np.put_along_axis(g, t[..., None], np.take_along_axis(g, t[..., None], -1) - 1, -1)
        value, w = _reduce(per, mask, sample_weight)
        return value, g * w[..., None]


class MeanSquaredError(Loss):
    """mean((pred - target)^2); with per-step (B, T, O) outputs the mean runs over valid
    steps and the O outputs."""

    name = "mean_squared_error"
    task = "regression"

    def __call__(self, pred, target, mask=None, sample_weight=None):
        _same_shape(pred, target, self.name)
        t = target.astype(pred.dtype, copy=False).reshape(pred.shape)
        d = pred - t
        per = d * d
        value, w = _reduce(per, mask, sample_weight)
        return value, 2 * d * w


_LOSSES = {
    "binary_crossentropy": BinaryCrossentropy, "bce": BinaryCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": CategoricalCrossentropy,
    "cross_entropy": CategoricalCrossentropy,
    "mean_squared_error": MeanSquaredError, "mse": MeanSquaredError,
}


def get_loss(loss: Any) -> Loss:
    """A Loss from a Loss instance or a Keras name (binary_crossentropy, categorical_crossentropy,
    sparse_categorical_crossentropy, mean_squared_error / mse)."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str) and loss.lower() in _LOSSES:
        return _LOSSES[loss.lower()]()
    raise ValueError(f"loss must be a fastgru Loss or one of {sorted(_LOSSES)}, got {loss!r}")


# metrics moved to fastgru.metrics; these names stay importable from here
from fastgru.metrics import Metric, get_metric  # noqa: E402
