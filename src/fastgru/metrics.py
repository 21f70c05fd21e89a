"""Metrics for `compile(metrics=...)`, with Keras' names, log keys and streaming semantics.

A metric accumulates sums over an epoch (`update` per batch) and reports `result()` at its end,
as Keras' do: accuracy is the mean over all samples seen, precision is TP / (TP + FP) over the
epoch (not a mean of per-batch ratios). `state()` / `set_state()` expose those sums so that
distributed training can add them over ranks.

`pred` is the model output in the loss's space: logits for the cross-entropies (probabilities
are taken here with sigmoid / softmax: what Keras' metrics see behind a final sigmoid /
softmax, and also what fastgru's see with a from_logits loss), values for MSE (a model ending
in a sigmoid then gives probabilities, and accuracy / AUC treat them so, as Keras does). A
`mask` (B, T) leaves padded steps of per-step outputs out. Class ids (...,) or (..., 1) and
one-hot targets (..., K) are both accepted where a metric compares classes.

    model.compile("adam", "binary_crossentropy",
                  metrics=["accuracy", "auc", fastgru.metrics.Precision(thresholds=0.3)])
"""
from __future__ import annotations

import copy
import re
from typing import Any

import numpy as np
from scipy.special import expit

__all__ = ["Metric", "MeanMetric", "Precision", "Recall", "TruePositives", "FalsePositives",
           "TrueNegatives", "FalseNegatives", "AUC", "TopKCategoricalAccuracy", "get_metric"]

_EPSILON = 1e-7  # Keras' backend.epsilon(): clipping in the cross-entropies, AUC's end points


def _probabilities(pred: np.ndarray, task: str | None) -> np.ndarray:
    if task == "binary":
        return expit(pred)
    if task == "multiclass":
        e = np.exp(pred - pred.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    return pred


def _select(v: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The valid entries of v (leading axes (B, T) when a mask is given), flattened."""
    if mask is None:
        return v.ravel()
    m = np.broadcast_to(mask.reshape(mask.shape + (1,) * (v.ndim - mask.ndim)), v.shape)
    return v[m]


class Metric:
    """Base class: reset(), update(pred, target, mask), result(); sums in state().

    Subclasses set `tasks` (the losses they make sense with), `default_name` and implement
    `_size()` (the number of sums), `update` and `result`."""

    default_name = "metric"
    tasks: tuple[str, ...] = ("binary", "multiclass", "regression")
    direction = "up"  # better when larger ("down": smaller); callbacks' mode="auto" reads it

    def __init__(self, name: str | None = None) -> None:
        if name is not None and (not isinstance(name, str) or not name):
            raise TypeError(f"name must be a non-empty str or None, got {name!r}")
        self.name = name or self.default_name
        self.task: str | None = None
        self.spec: Any = None  # what compile() was given: a name is saved as that name
        self.reset()

    def bind(self, task: str) -> Metric:
        """Attach the loss's task ("binary", "multiclass" or "regression"); compile() does."""
        if task not in self.tasks:
            need = " or ".join({"binary": "binary_crossentropy",
                                "multiclass": "categorical_crossentropy",
                                "regression": "mse"}[t] for t in self.tasks)
            raise ValueError(f"metric {self.name!r} needs a {need} loss, not a {task} one")
        self.task = task
        return self

    def _size(self) -> int:
        return 2

    def reset(self) -> None:
        self._sums = np.zeros(self._size(), np.float64)

    def state(self) -> np.ndarray:
        """The accumulated sums (float64, 1-D); summing them over ranks merges the metric."""
        return self._sums.copy()

    def set_state(self, sums: Any) -> None:
        s = np.asarray(sums, np.float64).ravel()
        if s.shape != self._sums.shape:
            raise ValueError(f"metric {self.name!r}: state must have {self._sums.size} values, "
                             f"got {s.size}")
        self._sums = s.copy()

    def update(self, pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None) -> None:
        raise NotImplementedError

    def result(self) -> float:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        return {"class": type(self).__name__, "name": self.name}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "class")
        return f"{type(self).__name__}({args})"


def _same_size_target(pred: np.ndarray, target: np.ndarray, name: str,
                      task: str | None) -> np.ndarray:
    """target shaped like pred: binary (B,) against (B, 1); multiclass needs one-hot."""
    if target.size == pred.size:
        return target.reshape(pred.shape)
    if task == "multiclass":
        raise ValueError(f"metric {name!r} with a multiclass loss needs one-hot targets "
                         f"{pred.shape}, got class ids {target.shape}")
    raise ValueError(f"metric {name!r}: target shape {target.shape} does not match the model "
                     f"output {pred.shape}")


def _has_ids(pred: np.ndarray, target: np.ndarray) -> bool:
    """Class ids (...,) or (..., 1) against K > 1 scores (..., K), not one-hot rows."""
    return pred.ndim >= 1 and pred.shape[-1] > 1 and (
        target.ndim == pred.ndim - 1 or (target.ndim == pred.ndim and target.shape[-1] == 1))


def _class_ids(pred: np.ndarray, target: np.ndarray, name: str) -> np.ndarray:
    """The target classes (...,) from ids or one-hot rows, checked against pred (..., K)."""
    if _has_ids(pred, target) and target.size == int(np.prod(pred.shape[:-1])):
        t = target.reshape(pred.shape[:-1])
    elif target.shape == pred.shape:
        t = target.argmax(-1)
    else:
        raise ValueError(f"metric {name!r}: targets {target.shape} match neither class ids "
                         f"{pred.shape[:-1]} nor one-hot rows {pred.shape}")
    if t.size and (not np.all(t == np.round(t)) or t.min() < 0 or t.max() >= pred.shape[-1]):
        raise ValueError(f"metric {name!r}: class ids must be integers in "
                         f"[0, {pred.shape[-1]}), got values from {t.min()!r} to {t.max()!r}")
    return t.astype(np.int64)


def _class_targets(pred: np.ndarray, target: np.ndarray, name: str,
                   task: str | None) -> np.ndarray:
    """target shaped like pred; multiclass class ids become one-hot rows."""
    if task == "multiclass" and _has_ids(pred, target):
        t = _class_ids(pred, target, name)
        return (t[..., None] == np.arange(pred.shape[-1])).astype(pred.dtype)
    return _same_size_target(pred, target, name, task)


class MeanMetric(Metric):
    """A mean over samples of a per-sample value (Keras' MeanMetricWrapper): accuracy, mae, mse,
    rmse (the square root of the epoch's mse), mape, msle, the cross-entropies."""

    # with an MSE loss the output is taken as probabilities (a model ending in a sigmoid), and
    # "accuracy" is binary for one output column, categorical for more: Keras' choice
    KINDS = {
        "accuracy": ("binary", "multiclass", "regression"),
        "binary_accuracy": ("binary", "regression"),
        "categorical_accuracy": ("multiclass", "regression"),
        "sparse_categorical_accuracy": ("multiclass", "regression"),
        "mae": ("binary", "multiclass", "regression"),
        "mse": ("binary", "multiclass", "regression"),
        "rmse": ("binary", "multiclass", "regression"),
        "mape": ("binary", "multiclass", "regression"),
        "msle": ("binary", "multiclass", "regression"),
        "binary_crossentropy": ("binary", "regression"),
        "categorical_crossentropy": ("multiclass", "regression"),
        "sparse_categorical_crossentropy": ("multiclass", "regression"),
    }

    def __init__(self, kind: str, name: str | None = None) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"kind must be one of {sorted(self.KINDS)}, got {kind!r}")
        self.kind = kind
        self.tasks = self.KINDS[kind]
        self.direction = "up" if kind.endswith("accuracy") else "down"
        self.default_name = kind
        super().__init__(name)

    def update(self, pred, target, mask=None):
        v = self._values(np.asarray(pred), np.asarray(target))
        v = _select(v, mask)
        self._sums += (float(v.sum(dtype=np.float64)), v.size)

    def result(self) -> float:
        mean = self._sums[0] / max(self._sums[1], 1.0)
        return float(np.sqrt(mean)) if self.kind == "rmse" else float(mean)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "kind": self.kind}

    def _values(self, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
        k, task = self.kind, self.task
        p = _probabilities(pred, task)
        if k.endswith("accuracy"):
            binary = task == "binary" or (task == "regression" and p.shape[-1:] == (1,)) or \
                k == "binary_accuracy"
            if binary:  # Keras: y_true == (p > 0.5), on the probability
                t = _same_size_target(p, target, self.name, task)
                return (t == (p > 0.5)).astype(np.float64)
            return (p.argmax(-1) == _class_ids(p, target, self.name)).astype(np.float64)
        if k == "sparse_categorical_crossentropy" or (
                k == "categorical_crossentropy" and _has_ids(p, target)):
            # -log p[class], per sample (Keras clips p to [eps, 1 - eps])
            t = _class_ids(p, target, self.name)
            pt = np.take_along_axis(p, t[..., None], -1)[..., 0]
            return -np.log(np.clip(pt, _EPSILON, 1 - _EPSILON))
        t = _same_size_target(p, target, self.name, task).astype(p.dtype, copy=False)
        if k == "categorical_crossentropy":
            return -(t * np.log(np.clip(p, _EPSILON, 1 - _EPSILON))).sum(-1)
        if k == "binary_crossentropy":
            pc = np.clip(p, _EPSILON, 1 - _EPSILON)
            return -(t * np.log(pc) + (1 - t) * np.log1p(-pc))
        d = p - t
        if k == "mae":
            return np.abs(d)
        if k in ("mse", "rmse"):
            return d * d
        if k == "mape":
            return 100.0 * np.abs(d) / np.maximum(np.abs(t), _EPSILON)
        lp = np.log(np.maximum(p, _EPSILON) + 1.0)  # msle
        lt = np.log(np.maximum(t, _EPSILON) + 1.0)
        return (lp - lt) ** 2


class TopKCategoricalAccuracy(MeanMetric):
    """Whether the target class is among the k highest scores (ties at the k-th score count as
    in, as tf.math.in_top_k does); one-hot or class-id targets."""

    def __init__(self, k: int = 5, name: str | None = None) -> None:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}")
        self.k = int(k)
        super().__init__("categorical_accuracy", name or "top_k_categorical_accuracy")

    def get_config(self) -> dict[str, Any]:
        return {"class": type(self).__name__, "name": self.name, "k": self.k}

    def _values(self, pred, target):
        p = _probabilities(pred, self.task)  # ranked on probabilities, as Keras sees them
        t = _class_ids(p, target, self.name)
        pt = np.take_along_axis(p, t[..., None], -1)
        return ((p > pt).sum(-1) < self.k).astype(np.float64)


def _check_threshold(t: Any, name: str) -> float:
    if isinstance(t, bool) or not isinstance(t, (int, float, np.integer, np.floating)) \
            or not 0.0 <= float(t) <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {t!r}")
    return float(t)


class _Confusion(Metric):
    """Confusion counts at thresholds on the predicted probability (positive: p > threshold;
    a target counts as positive when it is nonzero, as in Keras). Multiclass outputs with
    one-hot targets are flattened: every (sample, class) entry is one binary decision."""

    thresholds: Any  # one number; AUC: its listed thresholds or None

    def __init__(self, thresholds: Any = None, class_id: int | None = None,
                 name: str | None = None, top_k: int | None = None) -> None:
        if top_k is not None:
            raise ValueError(f"{type(self).__name__}(top_k={top_k!r}) is not supported: the "
                             "metric thresholds every class's probability (top_k=None)")
        if class_id is not None and (isinstance(class_id, bool)
                                     or not isinstance(class_id, (int, np.integer))
                                     or class_id < 0):
            raise ValueError(f"class_id must be None or an int >= 0, got {class_id!r}")
        self.class_id = None if class_id is None else int(class_id)
        self._set_thresholds(thresholds)
        super().__init__(name)

    def _set_thresholds(self, thresholds: Any) -> None:
        if thresholds is None:
            thresholds = 0.5
        if isinstance(thresholds, (list, tuple, np.ndarray)) and len(thresholds) == 1:
            thresholds = thresholds[0]  # Keras returns a scalar for one threshold too
        if isinstance(thresholds, (list, tuple, np.ndarray)):
            raise ValueError(f"{type(self).__name__}: thresholds must be one number (fastgru "
                             f"reports one value per metric), got {thresholds!r}")
        self.thresholds = _check_threshold(thresholds, "thresholds")
        self._thr = np.array([self.thresholds])
        self._even = False

    def _size(self) -> int:
        return 4 * len(self._thr)  # TP | FP | TN | FN per threshold

    def _counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        n = len(self._thr)
        s = self._sums
        return s[:n], s[n:2 * n], s[2 * n:3 * n], s[3 * n:]

    def update(self, pred, target, mask=None):
        pred, target = np.asarray(pred), np.asarray(target)
        p = _probabilities(pred, self.task)
        t = _class_targets(p, target, self.name, self.task)
        if self.class_id is not None:
            if p.ndim < 2 or self.class_id >= p.shape[-1]:
                raise ValueError(f"metric {self.name!r}: class_id {self.class_id} needs a model "
                                 f"output with more than {self.class_id} classes, got {p.shape}")
            p, t = p[..., self.class_id:self.class_id + 1], t[..., self.class_id:self.class_id + 1]
        p = _select(p, mask)
        pos = (_select(t, mask) != 0).astype(np.float64)
        n = len(self._thr)
        # b: how many thresholds p counts as positive at (the lowest b of them)
        if self._even:
            # Keras' bucketing for evenly spaced thresholds: p in [0, 1] (NaN as 0, Keras'
            # result there being unspecified) is in bucket ceil(p (n-1)) - 1 >= 0 and positive
            # at the thresholds up to that bucket's
            p = np.clip(np.nan_to_num(p, nan=0.0), 0.0, 1.0)
            b = np.maximum(np.ceil(p * p.dtype.type(n - 1)) - 1, 0).astype(np.int64) + 1
        else:  # the thresholds strictly below p; NaN is below none (NaN > t is False)
            b = np.searchsorted(self._thr, np.where(np.isnan(p), -np.inf, p), side="left")
        # tp[i] = positives with b > i: a reverse cumulative sum over the b histogram
        tp = np.cumsum(np.bincount(b, weights=pos, minlength=n + 1)[::-1])[::-1][1:]
        fp = np.cumsum(np.bincount(b, weights=1.0 - pos, minlength=n + 1)[::-1])[::-1][1:]
        P, N = pos.sum(), pos.size - pos.sum()
        self._sums += np.concatenate([tp, fp, N - fp, P - tp])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "thresholds": self.thresholds, "class_id": self.class_id}


def _div(a: Any, b: Any) -> Any:
    """a / b, 0 where b == 0 (Keras' divide_no_nan)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.where(b == 0, 0.0, a / np.where(b == 0, 1.0, b))


class Precision(_Confusion):
    """TP / (TP + FP) over the epoch at `thresholds` (default 0.5) on the probability."""
    default_name = "precision"

    def result(self) -> float:
        tp, fp, _, _ = self._counts()
        return float(_div(tp, tp + fp)[0])


class Recall(_Confusion):
    """TP / (TP + FN) over the epoch at `thresholds` (default 0.5) on the probability."""
    default_name = "recall"

    def result(self) -> float:
        tp, _, _, fn = self._counts()
        return float(_div(tp, tp + fn)[0])


class _Count(_Confusion):
    """One confusion count over the epoch; `which` indexes TP | FP | TN | FN."""
    which = 0

    def result(self) -> float:
        return float(self._counts()[self.which][0])


class TruePositives(_Count):
    default_name, which = "true_positives", 0


class FalsePositives(_Count):
    default_name, which, direction = "false_positives", 1, "down"


class TrueNegatives(_Count):
    default_name, which = "true_negatives", 2


class FalseNegatives(_Count):
    default_name, which, direction = "false_negatives", 3, "down"


class AUC(_Confusion):
    """Area under the ROC or precision-recall curve, Keras' AUC: confusion counts at
    `num_thresholds` evenly spaced thresholds (or the given `thresholds`, plus -eps and 1 + eps),
    summed by the trapezoidal rule ("interpolation"; for PR, Davis & Goadrich's interpolation),
    "minoring" or "majoring". An approximation of the exact AUC, as Keras' is."""
    default_name = "auc"

    def __init__(self, num_thresholds: int = 200, curve: str = "ROC",
                 summation_method: str = "interpolation", name: str | None = None,
                 thresholds: Any = None, multi_label: bool = False, num_labels: Any = None,
                 label_weights: Any = None, from_logits: bool = False) -> None:
        # from_logits: fastgru's metrics always see probabilities (sigmoid / softmax of a
        # logit output), so either value computes the same
        if multi_label or num_labels is not None or label_weights is not None:
            raise ValueError("AUC(multi_label=True / num_labels / label_weights) is not "
                             "supported: fastgru's AUC flattens every (sample, class) entry, "
                             "as Keras' multi_label=False does; score predict()'s columns for "
                             "per-label AUCs")
        if isinstance(num_thresholds, bool) or not isinstance(num_thresholds, (int, np.integer)) \
                or num_thresholds < 2:
            raise ValueError(f"num_thresholds must be an int > 1, got {num_thresholds!r}")
        if not isinstance(curve, str) or curve.upper() not in ("ROC", "PR"):
            raise ValueError(f"curve must be 'ROC' or 'PR', got {curve!r}")
        if not isinstance(summation_method, str) or summation_method.lower() not in (
                "interpolation", "minoring", "majoring"):
            raise ValueError("summation_method must be 'interpolation', 'minoring' or "
                             f"'majoring', got {summation_method!r}")
        self.num_thresholds = int(num_thresholds)
        self.curve = curve.upper()
        self.summation_method = summation_method.lower()
        super().__init__(thresholds, None, name)
        self.from_logits = bool(from_logits)

    def _set_thresholds(self, thresholds: Any) -> None:
        if thresholds is None:
            n = self.num_thresholds
            inner = [(i + 1) * 1.0 / (n - 1) for i in range(n - 2)]
            self.thresholds = None
            self._even = True
        else:
            if not isinstance(thresholds, (list, tuple, np.ndarray)) or len(thresholds) == 0:
                raise ValueError(f"thresholds must be a non-empty list of numbers in [0, 1], "
                                 f"got {thresholds!r}")
            inner = sorted(_check_threshold(t, "thresholds") for t in thresholds)
            self.thresholds = inner
            self.num_thresholds = len(inner) + 2
            d = np.diff([0.0] + inner + [1.0])
            self._even = bool(np.allclose(d, d[0], atol=_EPSILON))  # Keras' test, as it decides
        self._thr = np.array([-_EPSILON] + inner + [1.0 + _EPSILON])

    def get_config(self) -> dict[str, Any]:
        return {"class": "AUC", "name": self.name, "num_thresholds": self.num_thresholds,
                "curve": self.curve, "summation_method": self.summation_method,
                "thresholds": self.thresholds}

    def result(self) -> float:
        tp, fp, tn, fn = self._counts()
        if self.curve == "PR" and self.summation_method == "interpolation":
            dtp = tp[:-1] - tp[1:]
            p = tp + fp
            dp = p[:-1] - p[1:]
            slope = _div(dtp, np.maximum(dp, 0))
            intercept = tp[1:] - slope * p[1:]
            both = (p[:-1] > 0) & (p[1:] > 0)
            ratio = np.where(both, _div(p[:-1], np.maximum(p[1:], 0)), 1.0)
            inc = _div(slope * (dtp + intercept * np.log(ratio)), np.maximum(tp[1:] + fn[1:], 0))
            return float(inc.sum())
        recall = _div(tp, tp + fn)
        if self.curve == "ROC":
            x, y = _div(fp, fp + tn), recall
        else:
            x, y = recall, _div(tp, tp + fp)
        if self.summation_method == "interpolation":
            heights = (y[:-1] + y[1:]) / 2.0
        elif self.summation_method == "minoring":
            heights = np.minimum(y[:-1], y[1:])
        else:
            heights = np.maximum(y[:-1], y[1:])
        return float(((x[:-1] - x[1:]) * heights).sum())


# Keras' names (compile(metrics=[...]) strings) -> a factory; the log key is the name as given
_NAMES: dict[str, Any] = {
    "accuracy": lambda: MeanMetric("accuracy"), "acc": lambda: MeanMetric("accuracy"),
    "binary_accuracy": lambda: MeanMetric("binary_accuracy"),
    "categorical_accuracy": lambda: MeanMetric("categorical_accuracy"),
    "sparse_categorical_accuracy": lambda: MeanMetric("sparse_categorical_accuracy"),
    "mae": lambda: MeanMetric("mae"), "mean_absolute_error": lambda: MeanMetric("mae"),
    "mse": lambda: MeanMetric("mse"), "mean_squared_error": lambda: MeanMetric("mse"),
    "rmse": lambda: MeanMetric("rmse"), "root_mean_squared_error": lambda: MeanMetric("rmse"),
    "mape": lambda: MeanMetric("mape"),
    "mean_absolute_percentage_error": lambda: MeanMetric("mape"),
    "msle": lambda: MeanMetric("msle"),
    "mean_squared_logarithmic_error": lambda: MeanMetric("msle"),
    "bce": lambda: MeanMetric("binary_crossentropy"),
    "binary_crossentropy": lambda: MeanMetric("binary_crossentropy"),
    "categorical_crossentropy": lambda: MeanMetric("categorical_crossentropy"),
    "sparse_categorical_crossentropy": lambda: MeanMetric("sparse_categorical_crossentropy"),
    "top_k_categorical_accuracy": TopKCategoricalAccuracy,
    "sparse_top_k_categorical_accuracy": TopKCategoricalAccuracy,
    "precision": Precision, "recall": Recall, "auc": AUC,
    "true_positives": TruePositives, "false_positives": FalsePositives,
    "true_negatives": TrueNegatives, "false_negatives": FalseNegatives,
}

_CLASSES = {c.__name__: c for c in (MeanMetric, TopKCategoricalAccuracy, Precision, Recall,
                                    TruePositives, FalsePositives, TrueNegatives,
                                    FalseNegatives, AUC)}


def _snake(name: str) -> str:
    """Keras' to_snake_case: "RootMeanSquaredError" -> "root_mean_squared_error"."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def get_metric(spec: Any, task: str) -> Metric:
    """A metric bound to the loss's task from a Keras name ("accuracy", "auc", "precision",
    "rmse", "RootMeanSquaredError", ...; its log key is the name as given), a Metric instance
    (one already bound to another task, e.g. a list shared by two models, is copied), or a
    saved config."""
    if isinstance(spec, Metric):
        if spec.task is not None and spec.task != task:
            spec = copy.deepcopy(spec)
            spec.reset()
        return spec.bind(task)
    if isinstance(spec, dict):  # get_config() of a saved model
        cfg = dict(spec)
        cls = _CLASSES.get(str(cfg.pop("class", None)))
        if cls is None:
            raise ValueError(f"unknown metric class in {spec!r}")
        m = cls(**cfg)
        m.spec = spec
        return m.bind(task)
    if isinstance(spec, str):
        key = spec.lower() if spec.lower() in _NAMES else _snake(spec)
        if key in _NAMES:
            m = _NAMES[key]()
            m.name, m.spec = spec, spec
            return m.bind(task)
        raise ValueError(f"unknown metric {spec!r}: use a name among {sorted(_NAMES)} or a "
                         "fastgru.metrics object")
    if isinstance(spec, type) and issubclass(spec, Metric):
        raise TypeError(f"metrics takes instances: {spec.__name__}(), not the class")
    mod = type(spec).__module__ or ""
    if mod.startswith(("keras", "tensorflow", "tf_keras", "torchmetrics", "sklearn")):
        raise TypeError(f"metrics got a {mod.split('.')[0]} object "
                        f"({type(spec).__name__}): fastgru computes its own metrics; pass a "
                        f"name or a fastgru.metrics object, e.g. "
                        f"fastgru.metrics.{type(spec).__name__}(...) where it exists")
    raise TypeError(f"metrics must be names or fastgru.metrics objects, got "
                    f"{type(spec).__name__} {spec!r}"[:300])


def unique_names(metrics: list[Metric]) -> list[Metric]:
    """Keras' renaming of repeated log keys: the second "auc" logs as "auc_1", the third as
    "auc_2" (the same object given twice is copied first)."""
    seen: dict[str, int] = {}
    out: list[Metric] = []
    for m in metrics:
        if any(m is o for o in out):
            m = copy.deepcopy(m)
        base = m.name
        if base in seen:
            k = seen[base]
            while f"{base}_{k}" in seen:
                k += 1
            seen[base] = k + 1
            m.name = f"{base}_{k}"
        seen.setdefault(m.name, 1)
        out.append(m)
    return out
