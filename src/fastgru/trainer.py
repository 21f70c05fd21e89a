"""fit / evaluate / predict for fastgru models (Keras' semantics), with batching by length.

Inputs may be: a padded int array (N, T) of token ids (0 = `<pad>`: each row's tokens are
moved to the front and its length counted, so Keras' pre- or post-padding both work); a float
array (N, T, F) (all steps valid); a list of variable-length sequences; or a list of texts when
the model has a vocabulary. Every batch is trimmed to its longest sequence and the lengths go
to the recurrent layers, which compute nothing past each sequence's end; with bucket=True
(the default when shuffling) sequences of similar length share a batch, so little padding
is even stored.

verify=True recomputes the first training batch (verify=N: also every N-th batch) with the
recurrent layers on fastgru.reference and raises VerificationError when a gradient deviates
beyond a dtype-aware tolerance. backend="reference" trains entirely on the reference.

distributed=True (or an mpi4py communicator) trains data-parallel over MPI ranks, batch_size
per rank: see fastgru.distributed. Without it nothing here touches MPI.
"""
from __future__ import annotations

import contextlib
import math
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from scipy.special import expit

from fastgru._validation import check_bool, check_int
from fastgru.callbacks import BackupAndRestore, Callback, History
from fastgru.data import encode_labels, length_batches, pad_ragged
from fastgru.losses import on_model_output
from fastgru.nn import Embedding, valid_mask

__all__ = ["fit", "evaluate", "predict", "VerificationError", "verify_tolerance"]


class VerificationError(RuntimeError):
    """fit(verify=...) found the fast kernels' gradients away from fastgru.reference's."""


# ------------------------------------------------------------------------------------------
# data preparation


@dataclass
class Prepared:
    """x padded to the longest sequence, lengths (N,) (0: a row of padding only), y aligned
    with x (or None).
    order: the per-row permutation that moved tokens to the front (None: not needed)."""

    x: np.ndarray
    lengths: np.ndarray | None
    y: np.ndarray | None = None
    order: np.ndarray | None = None
    sw: np.ndarray | None = None  # per-sample loss weights (N,) (sample_weight, class_weight)

    def __len__(self) -> int:
        return len(self.x)


def _is_texts(x: Any) -> bool:
    return isinstance(x, (list, tuple)) and len(x) > 0 and isinstance(x[0], str)


def prepare_x(model: Any, x: Any) -> Prepared:
    """Validate and pad the inputs of `model` (see the module docstring)."""
    if x is None:
        raise ValueError("x is None")
    if isinstance(x, str):
        raise TypeError("x must be a list of texts or an array, not one string")
    if isinstance(x, (dict, set)) or not hasattr(x, "__len__"):
        raise TypeError(f"x must be an array, a list of sequences or a list of texts, got "
                        f"{type(x).__name__}")
    if isinstance(x, np.ndarray) and x.dtype == object:  # e.g. Keras' imdb arrays of lists
        x = list(x)
    model._try_build(x)
    model._need_built()
    spec = model.input_spec
    if isinstance(x, (list, tuple)):
        if len(x) == 0:
            raise ValueError("x is empty")
        if _is_texts(x):
            if not all(isinstance(t, str) for t in x):
                raise TypeError("x mixes texts and other values")
            if model.vocab is None:
                raise ValueError("texts as x need a model with a vocabulary (vocab=...); "
                                 "encode them with Vocabulary.encode first")
            ids, L = model.vocab.encode(x, max_len=model.max_len)
            return _check_ids(model, Prepared(ids, L))
        if spec.sequence:
            xs, L = pad_ragged(x, np.int64 if spec.integer else model.dtype)
            if spec.integer and model.max_len is not None and xs.shape[1] > model.max_len:
                xs, L = _truncate(xs, L, model.max_len)
            p = Prepared(xs, L)
            return _check_ids(model, p) if spec.integer else _check_float(model, p)
        x = np.asarray(x)
    x = np.asarray(x)
    if x.shape[0] == 0 if x.ndim else True:
        raise ValueError(f"x is empty (shape {x.shape})")
    if spec.integer:
        if x.dtype.kind not in "iu":
            raise TypeError(f"x must hold integer token ids for a model that starts with an "
                            f"Embedding, got dtype {x.dtype}")
        if x.ndim != 2:
            raise ValueError(f"x must be (N, T) token ids, got shape {x.shape}")
        if x.shape[1] == 0:
            raise ValueError(f"x has no time steps (shape {x.shape}): each row needs at least "
                             "one token id (or padding)")
        return _check_ids(model, _compact(model, x))
    if x.dtype.kind not in "fiu":
        raise TypeError(f"x must be a float array, got dtype {x.dtype}")
    want = 3 if spec.sequence else 2
    if x.ndim != want or x.shape[-1] != spec.features:
        shape = "(N, T, F)" if spec.sequence else "(N, F)"
        raise ValueError(f"x must be {shape} with F = {spec.features}, got shape {x.shape}")
    x = np.ascontiguousarray(x, dtype=model.dtype)
    L = np.full(len(x), x.shape[1], np.int64) if spec.sequence else None
    return _check_float(model, Prepared(x, L))


def _truncate(x: np.ndarray, L: np.ndarray, T: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep the last T tokens of each left-aligned row (Keras' truncating='pre')."""
    out = np.zeros((len(x), T), x.dtype)
    for i, n in enumerate(L):
        s = x[i, max(0, n - T):n]
        out[i, :len(s)] = s
    return out, np.minimum(L, T)


def _compact(model: Any, x: np.ndarray) -> Prepared:
    """Token rows with padding anywhere -> tokens first, lengths = number of tokens."""
    emb = model.layers[0]
    pad = emb.padding_idx if isinstance(emb, Embedding) else None
    N, T = x.shape
    if pad is None:
        return Prepared(np.ascontiguousarray(x), np.full(N, T, np.int64))
    valid = x != pad
    L = valid.sum(axis=1).astype(np.int64)
    order = None
    if not np.array_equal(valid, np.arange(T)[None, :] < L[:, None]):
        order = np.argsort(~valid, axis=1, kind="stable")  # valid steps first, in order
        x = np.take_along_axis(x, order, axis=1)
    Tm = max(int(L.max()), 1)
    x = np.ascontiguousarray(x[:, :Tm])
    if model.max_len is not None and Tm > model.max_len:
        x, L = _truncate(x, L, model.max_len)
    return Prepared(x, L, order=order)


def _check_ids(model: Any, p: Prepared) -> Prepared:
    V = model.layers[0].input_dim
    lo, hi = int(p.x.min()), int(p.x.max())
    if lo < 0 or hi >= V:
        raise ValueError(f"token ids must be in [0, {V}) (the Embedding's input_dim), got "
                         f"values in [{lo}, {hi}]")
    return p


def _check_float(model: Any, p: Prepared) -> Prepared:
    if not np.all(np.isfinite(p.x)):
        raise ValueError("x contains NaN or infinity")
    return p


def prepare_y(model: Any, y: Any, p: Prepared, fit: bool = False) -> np.ndarray:
    """Targets aligned with prepared inputs, validated against the loss and the output size.
    Classification labels may be strings or any integers: fit() maps them to 0..K-1 and
    keeps the labels in model.classes_."""
    if y is None:
        raise ValueError("y is None: fit/evaluate need targets")
    task = model.loss.task
    out = model.output_spec
    units, N = out.features, len(p)
    if out.sequence:
        if isinstance(y, (list, tuple)) and len(y) and np.ndim(y[0]) >= 1 and \
                not isinstance(y, np.ndarray):
            y, _ = pad_ragged(y, np.int64 if task != "regression" else model.dtype)
        y = np.asarray(y)
        if len(y) != N:
            raise ValueError(f"x has {N} samples but y has {len(y)}")
        if task == "regression" and y.ndim == 2 and units == 1:
            y = y[:, :, None]
        want = 2 if task != "regression" else 3
        if y.ndim != want:
            raise ValueError(f"per-step targets must have shape (N, T{', O' if want == 3 else ''})"
                             f", got {y.shape}")
        if p.order is not None:
            y = np.take_along_axis(y, p.order.reshape(p.order.shape + (1,) * (y.ndim - 2)), 1)
        T = p.x.shape[1]
        if y.shape[1] < T:
            raise ValueError(f"y has {y.shape[1]} steps but x has {T}")
        y = np.ascontiguousarray(y[:, :T])
        if task == "regression":
            if y.shape[2] != units:
                raise ValueError(f"y has {y.shape[2]} outputs per step, the model {units}")
            return _finite(y.astype(model.dtype, copy=False))
        return _int_labels(y, units if task == "multiclass" else 2)
    y = np.asarray(y) if not isinstance(y, np.ndarray) else y
    if len(y) != N:
        raise ValueError(f"x has {N} samples but y has {len(y)}")
    if task == "regression":
        y = y.reshape(N, -1) if y.ndim == 1 else y
        if y.ndim != 2 or y.shape[1] != units:
            raise ValueError(f"y must be (N, {units}), got shape {y.shape}")
        if y.dtype.kind not in "fiu":
            raise TypeError(f"regression targets must be numbers, got dtype {y.dtype}")
        return _finite(y.astype(model.dtype))
    if task == "multiclass" and y.ndim == 2 and y.shape[1] == units and y.dtype.kind in "fiub":
        return _finite(y.astype(model.dtype))  # one-hot (any number dtype) / probabilities
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        if task == "multiclass" and y.ndim == 2:
            raise ValueError(f"y has {y.shape[1]} columns but the model has {units} outputs: "
                             f"give class labels (N,) or one-hot rows (N, {units})")
        raise ValueError(f"class labels must be (N,), got shape {y.shape}")
    K = 2 if task == "binary" else units
    ids = _map_labels(model, y, K, fit)
    return ids.astype(model.dtype) if task == "binary" else ids


def prepare_sample_weight(model: Any, sample_weight: Any, N: int,
                          name: str = "sample_weight") -> np.ndarray | None:
    """(N,) finite non-negative weights in the model's dtype, or None."""
    if sample_weight is None:
        return None
    _check_loss_takes_weights(model, name)
    if isinstance(sample_weight, (str, bytes, dict)):
        raise TypeError(f"{name} must be an array of N = {N} numbers, got "
                        f"{type(sample_weight).__name__}")
    w = np.asarray(sample_weight)
    if w.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold numbers, got dtype {w.dtype}")
    if w.ndim == 2 and w.shape[1] == 1:
        w = w[:, 0]
    if w.shape != (N,):
        raise ValueError(f"{name} must have shape (N,) = ({N},), one weight per sample, got "
                         f"{w.shape}")
    w = w.astype(model.dtype)
    if not np.all(np.isfinite(w)) or (w.size and w.min() < 0):
        raise ValueError(f"{name} must be finite and >= 0")
    return w


def _check_loss_takes_weights(model: Any, name: str) -> None:
    from fastgru.losses import takes_sample_weight

    if not takes_sample_weight(model.loss):
        raise TypeError(f"{name}: the loss {type(model.loss).__name__} does not take a "
                        "sample_weight argument (loss(pred, target, mask, sample_weight))")


def class_sample_weight(model: Any, class_weight: Any, y: np.ndarray) -> np.ndarray | None:
    """Per-sample weights from {class: weight} (Keras: unlisted classes weigh 1). Keys are the
    labels given to fit (model.classes_ when it mapped them) or class ids."""
    if class_weight is None:
        return None
    if not isinstance(class_weight, dict):
        raise TypeError(f"class_weight must be a dict {{class: weight}}, got "
                        f"{type(class_weight).__name__}")
    task = model.loss.task
    if task == "regression":
        raise ValueError("class_weight needs a classification loss (binary_crossentropy or "
                         "categorical_crossentropy); use sample_weight for regression")
    if model.output_spec.sequence:
        raise ValueError("class_weight is for one label per sample; per-step targets are not "
                         "supported (as in Keras)")
    K = 2 if task == "binary" else model.output_spec.features
    labels = list(model.classes_) if model.classes_ is not None else None
    table = np.ones(K, np.float64)
    for key, weight in class_weight.items():
        if labels is not None and key in labels:
            k = labels.index(key)
        elif (isinstance(key, (int, np.integer)) and not isinstance(key, bool)
              and 0 <= key < K and labels is None):
            k = int(key)
        else:
            have = labels if labels is not None else f"class ids 0..{K - 1}"
            raise ValueError(f"class_weight has key {key!r}, which is not a class of the "
                             f"training data ({have})")
        try:
            wk = float(weight)
        except (TypeError, ValueError):
            raise TypeError(f"class_weight[{key!r}] must be a number, got {weight!r}") from None
        if not (math.isfinite(wk) and wk >= 0):
            raise ValueError(f"class_weight[{key!r}] must be finite and >= 0, got {weight!r}")
        table[k] = wk
    _check_loss_takes_weights(model, "class_weight")
    ids = (y.argmax(-1) if y.ndim == 2 else np.round(y)).astype(np.int64)
    return table[ids].astype(model.dtype)


def _finite(y: np.ndarray) -> np.ndarray:
    if not np.all(np.isfinite(y)):
        raise ValueError("y contains NaN or infinity")
    return y


def _int_labels(y: np.ndarray, K: int) -> np.ndarray:
    if y.dtype.kind not in "iu":
        raise TypeError(f"per-step class targets must be integers, got dtype {y.dtype}")
    if y.size and (int(y.min()) < 0 or int(y.max()) >= K):
        raise ValueError(f"per-step class targets must be in [0, {K}), got values in "
                         f"[{int(y.min())}, {int(y.max())}]")
    return y.astype(np.int64)


def _map_labels(model: Any, y: np.ndarray, K: int, fit: bool) -> np.ndarray:
    from fastgru.data import DataError

    if model.classes_ is not None:
        ids, _ = encode_labels(cast(Sequence[Any], y), model.classes_)
        return ids
    if y.dtype.kind in "iub" or (y.dtype.kind == "f" and np.all(np.isfinite(y)) and
                                 np.all(y == np.round(y))):
        yi = y.astype(np.int64)
        if yi.size and yi.min() >= 0 and yi.max() < K:
            return yi
    if not fit:
        raise DataError(f"labels must be integers in [0, {K}) (or the classes seen by fit)")
    ids, classes = encode_labels(cast(Sequence[Any], y))  # an array: data.py says Sequence
    if len(classes) > K:
        raise DataError(f"y has {len(classes)} classes but the model predicts {K}")
    model.classes_ = classes
    return ids


def _batch(p: Prepared, idx: np.ndarray, seq_y: bool):
    """(x, lengths, y, mask) of one batch, trimmed to its longest sequence."""
    if p.lengths is None:
        return p.x[idx], None, None if p.y is None else p.y[idx], None
    L = p.lengths[idx]
    T = max(int(L.max()), 1)  # a batch of empty token rows still runs one (discarded) step
    xb = p.x[idx, :T]
    yb = None
    mask = None
    if p.y is not None:
        yb = p.y[idx, :T] if seq_y else p.y[idx]
    if seq_y:
        mask = valid_mask(L, len(idx), T)
    return xb, L, yb, mask


# ------------------------------------------------------------------------------------------
# verification


def verify_tolerance(dtype: Any, T: int) -> float:
    """Largest accepted max|g_fast - g_ref| / max|g_ref| per parameter: rounding of the
    kernels' summation order, growing with the sequence length for float32."""
    # Measured on MR batches (T ~ 20-60, GRU/LSTM, 2 layers, bidirectional): float32 errors
    # ~1e-6, float64 ~1e-13; the bounds leave two orders of magnitude for longer sequences.
    if np.dtype(dtype) == np.float64:
        return 1e-9 * (1.0 + math.sqrt(T))
    return 2e-4 * (1.0 + math.sqrt(T) / 4)


def _verify_batch(model: Any, step, rng: np.random.Generator, rng_state: dict[str, Any],
                  batch_no: int, T: int) -> None:
    """Recompute the batch just run (`step` reruns forward + backward, drawing dropout from
    `rng`, reset to `rng_state`) on the reference and compare every gradient; then put the
    fast gradients back (they drive the update)."""
    fast = {k: v.copy() for k, v in model._grads.items()}
    prev = model.backend
    model.zero_grad()
    rng.bit_generator.state = rng_state
    model.set_backend("reference")
    try:
        step()
    finally:
        model.set_backend(prev)
    tol = verify_tolerance(model.dtype, T)
    worst = ("", 0.0)
    for k, g_ref in model._grads.items():
        g = fast[k]
        scale = float(np.max(np.abs(g_ref))) if g_ref.size else 0.0
        err = float(np.max(np.abs(g - g_ref))) / max(scale, 1e-30) if g.size else 0.0
        if not np.isfinite(err):
            err = math.inf
        if err > worst[1]:
            worst = (k, err)
        if err > tol:
            raise VerificationError(
                f"verify: batch {batch_no}: the gradient of {k!r} from the fast kernels deviates "
                f"from fastgru.reference by {err:.3g} (max abs difference / max abs value; "
                f"tolerance {tol:.3g} for {np.dtype(model.dtype)}, T={T})")
    for k, g in model._grads.items():
        np.copyto(g, fast[k])
    # fit() resets last_verification; keep the worst batch and count the checked ones
    prev = model.last_verification or {"batches_checked": 0, "worst_error": -1.0}
    if worst[1] >= prev["worst_error"]:
        prev = {"batch": batch_no, "worst_parameter": worst[0], "worst_error": worst[1],
                "tolerance": tol, "batches_checked": prev["batches_checked"]}
    prev["batches_checked"] += 1
    model.last_verification = prev


# ------------------------------------------------------------------------------------------
# fit


def _logs_str(logs: dict[str, float]) -> str:
    return " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())


def _resolve_verbose(verbose: Any) -> int:
    if verbose == "auto":
        return 1 if sys.stderr.isatty() else 2
    if verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 0, 1, 2 or 'auto', got {verbose!r}")
    return int(verbose)


def loss_count(loss: Any, pred: np.ndarray, target: np.ndarray,
               mask: np.ndarray | None) -> int:
    """The number of terms `loss` averages over for one batch: samples, or valid time steps
    for per-step targets (times the outputs per step for MSE). It weighs the batch's mean
    loss in the epoch's mean, and a rank's gradient in a distributed step."""
    from fastgru.losses import BinaryCrossentropy, CategoricalCrossentropy

    if isinstance(loss, CategoricalCrossentropy):
        shape = pred.shape[:-1]
    elif isinstance(loss, BinaryCrossentropy) and pred.size == target.size:
        shape = target.shape
    else:
        shape = pred.shape
    if mask is None:
        return int(np.prod(shape))
    m = mask.reshape(mask.shape + (1,) * (len(shape) - mask.ndim))
    return int(np.broadcast_to(m, shape).sum())


# -- distributed helpers: all of them no-ops without `distributed` --------------------------


def _data_parallel(distributed: Any) -> Any:
    """None for a single process, else a fastgru.distributed.DataParallel (starts MPI)."""
    if distributed is None or distributed is False:
        return None
    from fastgru import distributed as D

    return D.DataParallel(D.context(distributed))


def _agreed(dist: Any, what: str) -> Any:
    """Errors in this block are raised on every rank (see Context.agreed)."""
    return contextlib.nullcontext() if dist is None else dist.ctx.agreed(what)


def _guard(dist: Any, what: str) -> Any:
    """An error in this block aborts every rank (see Context.abort_on_error)."""
    return contextlib.nullcontext() if dist is None else dist.ctx.abort_on_error(what)


def fit(model: Any, x: Any, y: Any = None, batch_size: int = 32, epochs: int = 1,
        verbose: int | str = "auto", callbacks: Sequence[Callback] | None = None,
        validation_split: float = 0.0, validation_data: tuple[Any, Any] | None = None,
        shuffle: bool = True, initial_epoch: int = 0, bucket: bool | None = None,
        validation_batch_size: int | None = None, verify: bool | int = False,
        backend: str | None = None, distributed: Any = None, class_weight: Any = None,
        sample_weight: Any = None) -> History:
    """Train `model` (compiled) on (x, y). Keras' arguments and behaviour, plus:

    class_weight: {class: weight} for classification (labels as given to fit, or class ids;
        unlisted classes weigh 1), or sample_weight: (N,) non-negative weights. Either scales
        each sample's loss term (not the divisor: Keras' sum_over_batch_size); metrics stay
        unweighted (Keras' metrics=, not weighted_metrics=). validation_split splits
        sample_weight too; validation_data may be (x_val, y_val, sample_weight_val).
        class_weight weighs the training data only, as in Keras.

    bucket: batch sequences of similar length (no compute on padding either way). None (the
        default) buckets when shuffling; shuffle=False then keeps the data's order in the
        batches, as Keras does.
    verify: True checks the first batch's gradients against fastgru.reference; an int N
        checks the first and every N-th batch (VerificationError on a deviation).
    backend: "reference" trains on fastgru.reference for this call (slow; debugging).
    distributed: data-parallel training over MPI ranks (fastgru.distributed): True for
        MPI.COMM_WORLD, or an mpi4py communicator or a fastgru.distributed.Context. Every rank
        calls fit with the same data; batch_size is PER RANK (a step consumes batch_size x
        ranks samples); History, logs and callbacks see the global values on every rank; only
        rank 0 prints and runs BackupAndRestore / ModelCheckpoint.

    Returns the History (also model.history): history.history["loss"], ["val_accuracy"], ...
    one value per epoch; history.seconds: training seconds per epoch (validation excluded).
    """
    if not model.compiled:
        raise RuntimeError("compile() the model before fit()")
    dist = _data_parallel(distributed)
    with _agreed(dist, "before training"):
        batch_size = check_int("batch_size", batch_size, 1)
        epochs = check_int("epochs", epochs, 1)
        initial_epoch = check_int("initial_epoch", initial_epoch, 0)
        verbose = _resolve_verbose(verbose)
        if isinstance(verify, bool) or verify is None:
            verify_every = 0 if not verify else -1  # -1: first batch only
        else:
            verify_every = check_int("verify", verify, 1)
        if isinstance(callbacks, Callback):  # one callback, as Keras takes it
            callbacks = [callbacks]
        callbacks = list(callbacks or [])
        shuffle = check_bool("shuffle", shuffle)
        bucket = shuffle if bucket is None else check_bool("bucket", bucket)
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be fastgru Callback instances, got {cb!r}")
        p, val = _fit_data(model, x, y, validation_split, validation_data, class_weight,
                           sample_weight)

    history = History()
    # History last, as in Keras: it records what the others add to the logs (learning_rate)
    all_cbs: list[Callback] = callbacks + [history]
    for cb in all_cbs:
        cb.set_model(model)
        if isinstance(cb, BackupAndRestore):
            cb.callbacks = [c for c in all_cbs if c is not cb]
    # backups run after every other callback at train begin (so a callback's own reset cannot
    # undo the restore) and at epoch end (so the backup holds every callback's view of that
    # epoch and the stop decision): resuming is then exact whatever the list's order
    all_cbs = ([c for c in all_cbs if not isinstance(c, BackupAndRestore)]
               + [c for c in all_cbs if isinstance(c, BackupAndRestore)])
    run_cbs = all_cbs
    if dist is not None:
        from fastgru.distributed import is_rank0_only

        verbose = verbose if dist.is_root else 0
        run_cbs = [cb for cb in all_cbs if dist.is_root or not is_rank0_only(cb)]
    model.history = history
    model.stop_training = False
    model.last_verification = None
    seq_y = model.output_spec.sequence
    lengths = p.lengths if p.lengths is not None else np.ones(len(p), np.int64)
    vbs = validation_batch_size or max(batch_size, 256)
    steps = math.ceil(len(p) / (batch_size * (1 if dist is None else dist.size)))
    if dist is not None:
        dist.setup(model, p, val, dict(batch_size=batch_size, epochs=epochs, shuffle=shuffle,
                                       bucket=bucket, verify=verify_every, backend=backend,
                                       validation_batch_size=vbs), all_cbs)
    prev_backend = model.backend
    if backend is not None:
        model.set_backend(backend)
    try:
        with _agreed(dist, "starting the training"):
            for cb in run_cbs:
                cb.on_train_begin({})
            for cb in run_cbs:
                r = getattr(cb, "restored_epoch", None)
                if r is not None:
                    initial_epoch = max(initial_epoch, r)
        if dist is not None:  # rank 0's (possibly restored) state to every rank
            initial_epoch = dist.sync_start(model, all_cbs, initial_epoch)
        with _guard(dist, "training"):
            batch_counter = int(initial_epoch) * steps
            for epoch in range(int(initial_epoch), epochs):
                if model.stop_training:
                    break
                for cb in run_cbs:
                    cb.on_epoch_begin(epoch, {})
                logs, seconds = _train_epoch(model, p, lengths, batch_size, shuffle, bucket,
                                             seq_y, verbose, epoch, epochs, verify_every,
                                             batch_counter, run_cbs, dist)
                batch_counter += steps
                if val is not None:
                    vl = _evaluate_prepared(model, val, vbs, seq_y, dist)
                    logs.update({f"val_{k}": v for k, v in vl.items()})
                if dist is not None:
                    dist.check_parameters(model)
                history.seconds.append(seconds)
                if verbose == 2:
                    print(f"Epoch {epoch + 1}/{epochs} - {seconds:.1f}s - "
                          f"{len(p) / max(seconds, 1e-9):,.0f} samples/s - {_logs_str(logs)}",
                          flush=True)
                elif verbose == 1 and val is not None:
                    print(f"  {_logs_str({k: v for k, v in logs.items() if k.startswith('val_')})}",
                          file=sys.stderr, flush=True)
                for cb in run_cbs:
                    if not isinstance(cb, BackupAndRestore):
                        cb.on_epoch_end(epoch, logs)
                if dist is not None:
                    model.stop_training = dist.stop_training(model.stop_training)
                for cb in run_cbs:
                    if isinstance(cb, BackupAndRestore):
                        cb.on_epoch_end(epoch, logs)
            for cb in run_cbs:
                cb.on_train_end({})
    finally:
        if backend is not None:
            model.set_backend(prev_backend)
        if dist is not None and dist.reducer is not None:
            dist.reducer.clear()
    return history


def _fit_data(model: Any, x: Any, y: Any, validation_split: float,
              validation_data: tuple[Any, ...] | None, class_weight: Any = None,
              sample_weight: Any = None) -> tuple[Prepared, Prepared | None]:
    """The prepared training data and validation data (None without)."""
    if class_weight is not None and sample_weight is not None:
        raise ValueError("give class_weight or sample_weight, not both (as in Keras)")
    try:
        vs = float(validation_split)
    except (TypeError, ValueError):
        raise TypeError(f"validation_split must be a number in [0, 1), got "
                        f"{validation_split!r}") from None
    if not 0.0 <= vs < 1.0:
        raise ValueError(f"validation_split must be in [0, 1), got {validation_split!r}")
    p = prepare_x(model, x)
    p.y = prepare_y(model, y, p, fit=True)
    p.sw = (prepare_sample_weight(model, sample_weight, len(p)) if class_weight is None
            else class_sample_weight(model, class_weight, p.y))
    val = None
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
            raise ValueError("validation_data must be a tuple (x_val, y_val) or (x_val, y_val, "
                             "sample_weight_val)")
        val = prepare_x(model, validation_data[0])
        val.y = prepare_y(model, validation_data[1], val)
        if len(validation_data) == 3:
            val.sw = prepare_sample_weight(model, validation_data[2], len(val),
                                           "validation_data's sample_weight")
    elif validation_split > 0:
        # Keras: the last samples, before any shuffling, from floor(N * (1 - split)) on
        cut = int(math.floor(len(p) * (1.0 - vs)))
        if cut < 1 or cut >= len(p):
            raise ValueError(f"validation_split={validation_split} leaves no validation or no "
                             f"training samples out of {len(p)}")
        sl = lambda a, s: None if a is None else a[s]  # noqa: E731
        val = Prepared(p.x[cut:], sl(p.lengths, slice(cut, None)), p.y[cut:],
                       sw=None if sample_weight is None else sl(p.sw, slice(cut, None)))
        p = Prepared(p.x[:cut], sl(p.lengths, slice(None, cut)), p.y[:cut],
                     sw=sl(p.sw, slice(None, cut)))
        _warn_one_class_validation(model, p.y, val.y)
    return p, val


def _warn_one_class_validation(model: Any, y_fit: Any, y_val: Any) -> None:
    """validation_split takes the last samples (Keras); on class-sorted data they are often
    one class, and early stopping then follows the wrong loss."""
    if model.loss is None or model.loss.task == "regression" or len(y_val) == 0:
        return
    yv, yf = np.asarray(y_val), np.asarray(y_fit)
    if yv.size != len(yv):  # per-step or one-hot targets: no single label per sample
        return
    if len(np.unique(yv)) == 1 and len(np.unique(yf)) > 1:
        warnings.warn(f"validation_split: the last {len(yv)} samples, which validate, are all "
                      "of one class (class-sorted data?): shuffle x and y first, or pass "
                      "validation_data", stacklevel=4)


def _train_epoch(model, p, lengths, batch_size, shuffle, bucket, seq_y, verbose, epoch, epochs,
                 verify_every, batch_counter, callbacks, dist=None):
    """One pass over the training data; returns (logs, training seconds).

    With `dist` (fastgru.distributed.DataParallel) the batches are global (batch_size per
    rank, the same on every rank), this rank runs forward/backward on its shard of each, the
    gradients are reduced with one allreduce per step, and the logs are summed over ranks."""
    W = 1 if dist is None else dist.size
    batches = length_batches(lengths, batch_size * W, model.rng if shuffle else None,
                             shuffle=shuffle, bucket=bucket)
    # one process draws dropout from the shuffling generator; ranks draw their own masks
    rng = model.rng if dist is None else dist.dropout_rng(model.rng, epoch)
    bar = None
    if verbose == 1:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(p), desc=f"Epoch {epoch + 1}/{epochs}", unit="sample",
                   file=sys.stderr, dynamic_ncols=True, mininterval=0.2, leave=True)
    for m in model.metrics:
        m.reset()
    # the epoch's loss: the batches' mean losses weighted by their sizes, as Keras reports it
    # (for per-step targets that is not the mean over all valid steps); with `dist`, the
    # global batches', the same on every rank
    seen_sum, seen_n = 0.0, 0
    t0 = time.perf_counter()
    for b, gidx in enumerate(batches):
        idx = gidx if dist is None else dist.shard(gidx)
        gb = batch_counter + b
        check = verify_every != 0 and (gb == 0 or (verify_every > 0 and gb % verify_every == 0))
        out = yb = mask = None
        value, n = 0.0, 0
        if dist is not None:
            dist.reducer.clear()
        if len(idx):
            xb, Lb, yb, mask = _batch(p, idx, seq_y)
            swb = None if p.sw is None else p.sw[idx]
            state: dict[str, Any] = rng.bit_generator.state if check else {}

            def step(xb=xb, Lb=Lb, yb=yb, mask=mask, swb=swb):
                model.zero_grad()
                out = model.forward(xb, Lb, training=True, rng=rng)
                value, dout = on_model_output(model.loss, out, yb, mask, swb)
                model.backward(dout)
                return out, value

            out, value = step()
            if not math.isfinite(value):
                if bar is not None:
                    bar.close()
                raise FloatingPointError(
                    f"the loss became {value} at epoch {epoch + 1}, batch {b}: lower the "
                    "learning rate or clip gradients (optimizer global_clipnorm)")
            if check:
                _verify_batch(model, step, rng, state, gb, xb.shape[1] if xb.ndim > 1 else 1)
            n = loss_count(model.loss, out, yb, mask)
        else:  # a rank's empty shard of a small last batch: zero gradients, weight 0
            model.zero_grad()
        if dist is None:
            rows, g_value, g_n = model.sparse_rows(), value, n
        else:
            g_n, g_value = dist.reducer.allreduce(n, value * n,
                                                  dist.touched_rows(model, p, gidx))
            rows = dist.reducer.rows
        model.optimizer.step(model._params, model._grads, rows)
        seen_sum += g_value * len(gidx)
        seen_n += len(gidx)
        if out is not None:
            for m in model.metrics:
                m.update(out, yb, mask)
        if bar is not None:
            bar.update(len(gidx))
            if b % 8 == 0 or b == len(batches) - 1:
                post = {"loss": f"{seen_sum / max(seen_n, 1):.4f}"}
                post.update({m.name: f"{m.result():.4f}" for m in model.metrics})
                bar.set_postfix(post, refresh=False)
        if len(callbacks) > 1:  # Keras' batch logs: the epoch's running loss and metrics
            logs = {"loss": seen_sum / max(seen_n, 1)}
            logs.update({m.name: m.result() for m in model.metrics})
            for cb in callbacks:
                cb.on_train_batch_end(b, logs)
            # a stop asked for in a batch ends the epoch there (Keras); distributed
            # training takes it at the epoch's end, where the ranks agree on it
            if model.stop_training and dist is None:
                break
    seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    if dist is not None:
        dist.reduce_metrics(model.metrics)
    logs = {"loss": seen_sum / max(seen_n, 1)}
    logs.update({m.name: m.result() for m in model.metrics})
    return logs, seconds


# ------------------------------------------------------------------------------------------
# evaluate / predict


def _evaluate_prepared(model: Any, p: Prepared, batch_size: int, seq_y: bool,
                       dist: Any = None) -> dict[str, float]:
    """Loss and metrics over p; with `dist`, each rank takes its shard of every (global)
    batch and the sums are reduced, so every rank gets the result for all of p.

    The loss is the batches' mean losses weighted by their sizes (Keras' Mean tracker); with
    `dist`, each global batch's mean is put together from the ranks' shards first (one
    reduction at the end), so that it equals one process's value."""
    for m in model.metrics:
        m.reset()
    W = 1 if dist is None else dist.size
    lengths = p.lengths if p.lengths is not None else np.ones(len(p), np.int64)
    batches = length_batches(lengths, batch_size * W, None, shuffle=False)
    terms = np.zeros((2, len(batches)))  # per global batch: sum of loss terms, their count
    for j, gidx in enumerate(batches):
        idx = gidx if dist is None else dist.shard(gidx)
        if len(idx) == 0:
            continue
        xb, Lb, yb, mask = _batch(p, idx, seq_y)
        out = model.forward(xb, Lb, training=False)
        value, _ = on_model_output(model.loss, out, yb, mask,
                                   None if p.sw is None else p.sw[idx])
        if dist is None:
            terms[:, j] = value, 1
        else:
            n = loss_count(model.loss, out, yb, mask)
            terms[:, j] = value * n, n
        for m in model.metrics:
            m.update(out, yb, mask)
    if dist is not None:
        terms = dist.reduce_metrics(model.metrics, terms).reshape(2, -1)
    sizes = np.array([len(g) for g in batches], np.float64)
    means = terms[0] / np.maximum(terms[1], 1)
    res = {"loss": float(means @ sizes / max(sizes.sum(), 1))}
    res.update({m.name: m.result() for m in model.metrics})
    return res


def evaluate(model: Any, x: Any, y: Any = None, batch_size: int = 256, verbose: int = 0,
             return_dict: bool = False, distributed: Any = None, sample_weight: Any = None
             ) -> float | list[float] | dict[str, float]:
    """Loss and metrics on (x, y) in inference mode (no dropout). Keras' return: the loss alone
    without metrics, else [loss, *metrics]; return_dict=True gives {"loss": .., "accuracy": ..}.
    sample_weight (N,): weighs the loss as in fit (metrics stay unweighted).
    distributed: as in fit: every rank passes the same data, evaluates its share (batch_size
    per rank) and gets the result for all of it."""
    if not model.compiled:
        raise RuntimeError("compile() the model before evaluate()")
    dist = _data_parallel(distributed)
    with _agreed(dist, "preparing the evaluation"):
        batch_size = check_int("batch_size", batch_size, 1)
        p = prepare_x(model, x)
        p.y = prepare_y(model, y, p)
        p.sw = prepare_sample_weight(model, sample_weight, len(p))
    with _guard(dist, "evaluation"):
        res = _evaluate_prepared(model, p, batch_size, model.output_spec.sequence, dist)
    if verbose and (dist is None or dist.is_root):
        print(_logs_str(res))
    if return_dict:
        return res
    return res["loss"] if len(res) == 1 else list(res.values())


def predict(model: Any, x: Any, batch_size: int = 256, verbose: int = 0) -> np.ndarray:
    """Model outputs for x, in x's order (see Sequential.predict)."""
    batch_size = check_int("batch_size", batch_size, 1)
    p = prepare_x(model, x)
    seq = model.output_spec.sequence
    lengths = p.lengths if p.lengths is not None else np.ones(len(p), np.int64)
    out: np.ndarray | None = None
    for idx in length_batches(lengths, batch_size, None, shuffle=False):
        xb, Lb, _, mask = _batch(p, idx, seq)
        o = model.forward(xb, Lb, training=False)
        if model.head == "sigmoid":
            o = expit(o)
        elif model.head == "softmax":
            o = np.exp(o - o.max(axis=-1, keepdims=True))
            o /= o.sum(axis=-1, keepdims=True)
        if out is None:
            shape = (len(p), p.x.shape[1]) + o.shape[2:] if seq else (len(p),) + o.shape[1:]
            out = np.zeros(shape, o.dtype)
        if seq:
            if mask is not None:
                o = o * mask.reshape(mask.shape + (1,) * (o.ndim - 2))
            out[idx, :o.shape[1]] = o
        else:
            out[idx] = o
    assert out is not None
    if seq and p.order is not None:  # tokens were moved to the front: put outputs back
        back = np.zeros((len(p), p.order.shape[1]) + out.shape[2:], out.dtype)
        order = p.order[:, :out.shape[1]]
        np.put_along_axis(back, order.reshape(order.shape + (1,) * (out.ndim - 2)),
                          out, axis=1)
        out = back
    return out
