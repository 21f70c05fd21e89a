"""Keras-style training callbacks: History, EarlyStopping, ModelCheckpoint, ReduceLROnPlateau,
LearningRateScheduler, CSVLogger, BackupAndRestore, LambdaCallback.

Hooks (all optional): on_train_begin(logs), on_epoch_begin(epoch, logs),
on_train_batch_end(batch, logs), on_epoch_end(epoch, logs), on_train_end(logs). `epoch` counts
from 0; `logs` holds the epoch's Keras names (loss, accuracy, val_loss, val_accuracy, ...).
Set `self.model.stop_training = True` to stop after the current epoch.

A callback with state that matters for an exact resume implements get_state() ->
(JSON scalars, {name: array}) and set_state(scalars, arrays); BackupAndRestore saves it.
"""
from __future__ import annotations

import csv
import math
import os
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from fastgru._validation import check_int
from fastgru.checkpoint import CheckpointError

__all__ = ["Callback", "History", "EarlyStopping", "ModelCheckpoint", "ReduceLROnPlateau",
           "LearningRateScheduler", "CSVLogger", "BackupAndRestore", "LambdaCallback"]

Logs = dict[str, float]


class Callback:
    """Base class: every hook does nothing; `self.model` is set by fit()."""

    model: Any = None

    def set_model(self, model: Any) -> None:
        self.model = model

    def on_train_begin(self, logs: Logs | None = None) -> None: ...
    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None: ...
    def on_train_batch_end(self, batch: int, logs: Logs | None = None) -> None: ...
    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None: ...
    def on_train_end(self, logs: Logs | None = None) -> None: ...

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {}, {}

    def set_state(self, scalars: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        pass


class History(Callback):
    """Records each epoch's logs: `history` {name: [value per epoch]}, `epoch` [indices],
    `seconds` [training seconds per epoch]. fit() returns it (and sets model.history)."""

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []
        self.seconds: list[float] = []

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(float(v))

    def get_state(self):
        return {"history": self.history, "epoch": self.epoch, "seconds": self.seconds}, {}

    def set_state(self, scalars, arrays):
        self.history = {k: list(v) for k, v in scalars["history"].items()}
        self.epoch = list(scalars["epoch"])
        self.seconds = list(scalars.get("seconds", []))


def _mode(monitor: str, mode: str, model: Any = None) -> str:
    """"min" or "max" for `monitor`. "auto": as Keras 3, the direction of the model's metric
    of that name (AUC, precision, accuracy: max; errors, losses, false positives: min); before
    the model is known, or for other names, max for names with "acc" or "auc" / known
    increasing metrics, min otherwise (tf.keras' rule, extended)."""
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode != "auto":
        return mode
    name = monitor.removeprefix("val_")
    for m in getattr(model, "metrics", None) or ():
        if getattr(m, "name", None) == name and getattr(m, "direction", None) in ("up", "down"):
            return "max" if m.direction == "up" else "min"
    low = name.lower()
    up = ("acc" in low or low.endswith("auc") or low in _INCREASING)
    return "max" if up else "min"


_INCREASING = {"precision", "recall", "true_positives", "true_negatives"}


def _real(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return v


def _monitored(cb: Any, logs: Logs | None, who: str, consequence: str) -> float | None:
    """The monitored value, or None with a warning when the logs lack it (Keras warns and
    carries on too: a script that monitors val_loss without validation data still trains)."""
    v = (logs or {}).get(cb.monitor)
    if v is None:
        hint = "; pass validation data for val_ metrics" if cb.monitor.startswith("val_") else ""
        warnings.warn(f"{who} monitors {cb.monitor!r}, which is not in the logs "
                      f"({', '.join(sorted(logs or {}))}){hint}: it {consequence}", stacklevel=3)
    return v


def _improved(mode: str, value: float, best: float, min_delta: float) -> bool:
    return value < best - min_delta if mode == "min" else value > best + min_delta


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved by more than min_delta for `patience` epochs in a
    row (Keras' rule: patience=1 stops after the first epoch without improvement, patience=0
    too; never after the first epoch). restore_best_weights: at the end, put back the weights
    of the best epoch. baseline: as Keras, the count of epochs without improvement restarts
    only at a value better than both the best so far and the baseline. verbose=1 prints
    Keras' two lines (the stop, the restored epoch) at the end of training."""

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0,
                 verbose: int = 0, mode: str = "auto", baseline: float | None = None,
                 restore_best_weights: bool = False, start_from_epoch: int = 0) -> None:
        self.monitor = monitor
        self.patience = check_int("patience", patience, 0)
        self.min_delta = abs(_real("min_delta", min_delta))
        self.verbose = check_int("verbose", verbose, 0)
        self.mode_arg = mode
        self.mode = _mode(monitor, mode)
        self.baseline = None if baseline is None else _real("baseline", baseline)
        self.restore_best_weights = bool(restore_best_weights)
        self.start_from_epoch = check_int("start_from_epoch", start_from_epoch, 0)
        self.on_train_begin()

    def on_train_begin(self, logs=None):
        # a fresh count on every fit, as in Keras (the instance may be reused for another
        # model); BackupAndRestore puts a resumed run's state back after this
        self.mode = _mode(self.monitor, self.mode_arg, self.model)
        self.best = math.inf if self.mode == "min" else -math.inf
        self.wait, self.best_epoch, self.stopped_epoch = 0, -1, -1
        self.best_weights: dict[str, np.ndarray] | None = None

    def on_epoch_end(self, epoch, logs=None):
        v = _monitored(self, logs, "EarlyStopping", "does nothing this epoch")
        if v is None:
            return
        if epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights, self.best_epoch = self.model.get_weights(), epoch  # (a NaN first)
        if _improved(self.mode, v, self.best, self.min_delta):
            self.best, self.best_epoch = float(v), epoch
            beats_baseline = self.baseline is None or \
                _improved(self.mode, v, self.baseline, self.min_delta)
            self.wait = 0 if beats_baseline else self.wait + 1
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            return
        self.wait += 1
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose > 0:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                print("Restoring model weights from the end of the best epoch: "
                      f"{self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)

    def get_state(self):
        arrays = {} if self.best_weights is None else dict(self.best_weights)
        return {"best": self.best, "wait": self.wait, "best_epoch": self.best_epoch,
                "stopped_epoch": self.stopped_epoch}, arrays

    def set_state(self, scalars, arrays):
        self.best, self.wait = float(scalars["best"]), int(scalars["wait"])
        self.best_epoch, self.stopped_epoch = int(scalars["best_epoch"]), \
            int(scalars["stopped_epoch"])
        self.best_weights = {k: v.copy() for k, v in arrays.items()} or None


class ModelCheckpoint(Callback):
    """Save the model (fastgru.load_model can read it) at the end of epochs, or every
    `save_freq` batches (an int; batches are counted across epochs, as in Keras). filepath may
    contain {epoch} (1-based), {batch} (1-based, with an int save_freq) and log names, e.g.
    "ckpt-{epoch:02d}-{val_loss:.3f}.npz"; missing folders are created. save_best_only: write
    only when `monitor` improves (the best checkpoint), starting from initial_value_threshold
    when given; with an int save_freq the monitor comes from the batch logs (the epoch's running
    loss and metrics, no val_). save_weights_only: model.save_weights() (the parameters, for
    model.load_weights) instead of model.save(). Arguments in Keras' order."""

    def __init__(self, filepath: str, monitor: str = "val_loss", verbose: int = 0,
                 save_best_only: bool = False, save_weights_only: bool = False,
                 mode: str = "auto", save_freq: Any = "epoch",
                 initial_value_threshold: float | None = None) -> None:
        self.filepath, self.monitor = os.fspath(filepath), monitor
        self.save_best_only, self.verbose = bool(save_best_only), check_int("verbose", verbose, 0)
        self.save_weights_only = bool(save_weights_only)
        if save_freq != "epoch":
            if isinstance(save_freq, bool) or not isinstance(save_freq, (int, np.integer)) \
                    or save_freq < 1:
                raise ValueError(f"save_freq must be 'epoch' or an int >= 1 (batches), got "
                                 f"{save_freq!r}")
            save_freq = int(save_freq)
        self.save_freq = save_freq
        self.mode_arg = mode
        self.mode = _mode(monitor, mode)
        if initial_value_threshold is not None:
            self.best = _real("initial_value_threshold", initial_value_threshold)
        else:
            self.best = math.inf if self.mode == "min" else -math.inf
        self._epoch, self._since, self._last_batch = 0, 0, -1

    def on_train_begin(self, logs=None):
        # the best value carries over between fits (Keras); the direction comes from the
        # model's metric once it is known, and the "nothing yet" start follows it
        mode = _mode(self.monitor, self.mode_arg, self.model)
        if mode != self.mode and math.isinf(self.best):
            self.best = -self.best
        self.mode = mode

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.save_freq == "epoch":
            return
        # Keras' count: a batch index that does not grow starts a new epoch
        self._since += batch + 1 if batch <= self._last_batch else batch - self._last_batch
        self._last_batch = batch
        if self._since >= self.save_freq:
            self._since = 0
            self._save(self._epoch, batch, logs or {})

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq == "epoch":
            self._save(epoch, None, logs or {})

    def _save(self, epoch: int, batch: int | None, logs: Logs) -> None:
        keys = {"epoch": epoch + 1, **logs}
        if batch is not None:
            keys.setdefault("batch", batch + 1)
        try:
            path = self.filepath.format(**keys)
        except (KeyError, IndexError) as exc:
            raise ValueError(f"ModelCheckpoint filepath {self.filepath!r} names {exc}, which is "
                             f"neither 'epoch'{' nor batch' if batch is not None else ''} nor "
                             f"in the logs ({sorted(logs)})") from None
        if self.save_best_only:
            v = _monitored(self, logs, "ModelCheckpoint", "saves nothing this epoch")
            if v is None:
                return
            if not _improved(self.mode, v, self.best, 0.0):
                if self.verbose:
                    print(f"Epoch {epoch + 1}: {self.monitor} did not improve from "
                          f"{self.best:.5f}")
                return
            if self.verbose:
                print(f"Epoch {epoch + 1}: {self.monitor} improved from {self.best:.5f} to "
                      f"{v:.5f}, saving model to {path}")
            self.best = float(v)
        elif self.verbose:
            print(f"Epoch {epoch + 1}: saving model to {path}")
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)

    def get_state(self):
        return {"best": self.best, "since": self._since, "last_batch": self._last_batch}, {}

    def set_state(self, scalars, arrays):
        self.best = float(scalars["best"])
        self._since = int(scalars.get("since", 0))
        self._last_batch = int(scalars.get("last_batch", -1))


class ReduceLROnPlateau(Callback):
    """Multiply the optimizer's learning rate by `factor` when `monitor` has not improved by
    more than min_delta for `patience` epochs, down to min_lr; then wait `cooldown` epochs
    before counting again. Keras' callback (its defaults and rules; torch's ReduceLROnPlateau
    with threshold_mode="abs"). Adds "learning_rate" to the epoch's logs, so that the history
    records it. The optimizer must have a constant learning rate (not a schedule)."""

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 verbose: int = 0, mode: str = "auto", min_delta: float = 1e-4,
                 cooldown: int = 0, min_lr: float = 0.0) -> None:
        self.monitor = monitor
        self.factor = _real("factor", factor)
        if not 0.0 <= self.factor < 1.0:
            raise ValueError(f"factor must be in [0, 1) (a reduction), got {factor!r}")
        self.patience = check_int("patience", patience, 0)
        self.cooldown = check_int("cooldown", cooldown, 0)
        self.min_delta = abs(_real("min_delta", min_delta))
        self.min_lr = _real("min_lr", min_lr)
        if self.min_lr < 0:
            raise ValueError(f"min_lr must be >= 0, got {min_lr!r}")
        self.mode_arg = mode
        self.mode = _mode(monitor, mode)
        self.verbose = int(verbose)
        self.on_train_begin()

    def on_train_begin(self, logs=None):
        self.mode = _mode(self.monitor, self.mode_arg, self.model)
        self.best = math.inf if self.mode == "min" else -math.inf
        self.wait = self.cooldown_counter = 0
        opt = getattr(self.model, "optimizer", None)
        if opt is not None and getattr(opt, "schedule", None) is not None:
            raise ValueError("ReduceLROnPlateau sets the optimizer's learning rate, but it was "
                             "given a LearningRateSchedule: use a constant learning rate")

    def on_epoch_end(self, epoch, logs=None):
        opt = self.model.optimizer
        if logs is not None:
            logs["learning_rate"] = float(opt.learning_rate)
        v = _monitored(self, logs, "ReduceLROnPlateau", "leaves the learning rate alone")
        if v is None:
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if _improved(self.mode, v, self.best, self.min_delta):
            self.best, self.wait = float(v), 0
        elif self.cooldown_counter == 0:
            self.wait += 1
            if self.wait >= self.patience:
                old = float(opt.learning_rate)
                if old > float(np.float32(self.min_lr)):  # Keras' test
                    new = max(old * self.factor, self.min_lr)
                    opt.learning_rate = new
                    if self.verbose:
                        print(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate "
                              f"to {new}.")
                    self.cooldown_counter, self.wait = self.cooldown, 0

    def get_state(self):
        return {"best": self.best, "wait": self.wait, "cooldown_counter": self.cooldown_counter,
                "learning_rate": float(self.model.optimizer.learning_rate)}, {}

    def set_state(self, scalars, arrays):
        self.best, self.wait = float(scalars["best"]), int(scalars["wait"])
        self.cooldown_counter = int(scalars["cooldown_counter"])
        self.model.optimizer.learning_rate = float(scalars["learning_rate"])


class LearningRateScheduler(Callback):
    """Set the optimizer's learning rate at the start of each epoch to schedule(epoch, lr)
    (or schedule(epoch)), epoch from 0, lr the current rate: Keras' callback. Adds
    "learning_rate" to the epoch's logs."""

    def __init__(self, schedule: Callable[..., float], verbose: int = 0) -> None:
        if not callable(schedule):
            raise TypeError(f"schedule must be a function of (epoch, lr), got {schedule!r}")
        self.schedule, self.verbose = schedule, int(verbose)

    def on_epoch_begin(self, epoch, logs=None):
        opt = self.model.optimizer
        lr = float(opt.learning_rate)
        try:
            new = self.schedule(epoch, lr)
        except TypeError:  # Keras' fallback for a function of the epoch alone
            new = self.schedule(epoch)
        if isinstance(new, (bool, np.bool_)) or not isinstance(new, (int, float, np.number)):
            raise TypeError(f"LearningRateScheduler: the schedule returned {new!r} for epoch "
                            f"{epoch}; it must return a number")
        opt.learning_rate = float(new)  # a positive finite number, or the setter says so
        if self.verbose:
            print(f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to "
                  f"{float(new)}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(self.model.optimizer.learning_rate)

    def get_state(self):  # a schedule of the current rate needs it back on resume
        return {"learning_rate": float(self.model.optimizer.learning_rate)}, {}

    def set_state(self, scalars, arrays):
        self.model.optimizer.learning_rate = float(scalars["learning_rate"])


class CSVLogger(Callback):
    """Append each epoch's logs to a CSV file, as Keras' CSVLogger writes it: a header
    "epoch" + the sorted log names (and val_ columns holding "NA" when there is no
    validation), then one row per epoch. append: continue an existing file (no second
    header). Runs on rank 0 only in distributed training."""

    rank0_only = True

    def __init__(self, filename: str, separator: str = ",", append: bool = False) -> None:
        self.filename, self.sep, self.append = os.fspath(filename), separator, bool(append)
        if not isinstance(separator, str) or len(separator) != 1:
            raise ValueError(f"separator must be one character, got {separator!r}")
        self._file: Any = None
        self.keys: list[str] | None = None

    def on_train_begin(self, logs=None):
        header = True
        if self.append and os.path.exists(self.filename):
            with open(self.filename, encoding="utf-8") as f:
                header = not f.readline()
        self._close()
        self._file = open(self.filename, "a" if self.append else "w", newline="",
                          encoding="utf-8")
        self._header, self.keys = header, None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.keys is None:
            self.keys = sorted(logs)
            if self.keys and not any(k.startswith("val_") for k in self.keys):
                self.keys += [f"val_{k}" for k in self.keys]
        w = csv.writer(self._file, delimiter=self.sep, lineterminator="\r\n")
        if self._header:
            w.writerow(["epoch"] + self.keys)
            self._header = False
        w.writerow([epoch] + [logs.get(k, "NA") for k in self.keys])
        self._file.flush()

    def on_train_end(self, logs=None):
        self._close()

    def _close(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()
        self._file = None


class BackupAndRestore(Callback):
    """Resumable training (Keras' BackupAndRestore): at the end of every epoch, write the whole
    training state (weights, optimizer state, RNG state, epoch, history, the other callbacks'
    state) atomically. If the backup exists when fit() starts, restore it and continue after
    its epoch: an interrupted run then ends exactly as an uninterrupted one would.

    backup_dir: a file ending in .npz, or (as in Keras) a folder, existing or not, that gets
    `backup.npz` (and `backup.prev.npz`). save_freq: "epoch" only (fastgru resumes at epoch
    boundaries). double_checkpoint: keep the previous backup too, and restore it when the
    latest cannot be read. delete_checkpoint: remove the backups once training completes
    (Keras' default: a later fit() with the same path starts afresh); delete_on_end is the same
    switch under its former name; path= is backup_dir's former name."""

    def __init__(self, backup_dir: str | None = None, save_freq: Any = "epoch",
                 double_checkpoint: bool = False, delete_checkpoint: bool = True, *,
                 path: str | None = None, delete_on_end: bool | None = None) -> None:
        if (backup_dir is None) == (path is None):
            raise TypeError("BackupAndRestore needs backup_dir (a .npz file or a folder)")
        where = os.fspath(backup_dir if backup_dir is not None else path)  # type: ignore[arg-type]
        if not isinstance(where, str) or not where:
            raise ValueError(f"backup_dir must be a non-empty path, got {where!r}")
        if save_freq != "epoch":
            raise ValueError(f"save_freq={save_freq!r}: fastgru's BackupAndRestore backs up at "
                             "the end of every epoch (save_freq='epoch') and resumes there")
        if os.path.isdir(where) or not where.lower().endswith(".npz"):
            self.path = os.path.join(where, "backup.npz")
        else:
            self.path = where
        self.prev_path = self.path[:-4] + ".prev.npz"
        self.save_freq = save_freq
        self.double_checkpoint = bool(double_checkpoint)
        self.delete_on_end = bool(delete_checkpoint if delete_on_end is None else delete_on_end)
        self.callbacks: list[Callback] = []  # set by fit(): every callback of the run
        self.restored_epoch: int | None = None

    def on_train_begin(self, logs=None):
        if not os.path.exists(self.path):
            if self.double_checkpoint and os.path.exists(self.prev_path):
                self.restored_epoch = self.model.load_training_state(self.prev_path,
                                                                     self.callbacks)
            return
        try:
            self.restored_epoch = self.model.load_training_state(self.path, self.callbacks)
        except CheckpointError as exc:
            if not (self.double_checkpoint and os.path.exists(self.prev_path)):
                raise
            warnings.warn(f"BackupAndRestore: the latest backup cannot be read ({exc}); "
                          f"restoring the previous one, {self.prev_path!r}", stacklevel=2)
            self.restored_epoch = self.model.load_training_state(self.prev_path,
                                                                 self.callbacks)

    def on_epoch_end(self, epoch, logs=None):
        folder = os.path.dirname(self.path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        if self.double_checkpoint and os.path.exists(self.path):
            os.replace(self.path, self.prev_path)
        self.model.save_training_state(self.path, epoch + 1, self.callbacks)

    def on_train_end(self, logs=None):
        if self.delete_on_end:
            for p in (self.path, self.prev_path):
                if os.path.exists(p):
                    os.unlink(p)


class LambdaCallback(Callback):
    """A callback from functions: on_epoch_end=lambda epoch, logs: ..., etc."""

    def __init__(self, on_train_begin: Callable | None = None,
                 on_epoch_begin: Callable | None = None,
                 on_train_batch_end: Callable | None = None,
                 on_epoch_end: Callable | None = None,
                 on_train_end: Callable | None = None) -> None:
        for name, fn in list(locals().items()):
            if name.startswith("on_") and fn is not None:
                setattr(self, name, fn)
