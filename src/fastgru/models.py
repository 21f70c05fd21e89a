"""Models: `Sequential` (a stack of layers with Keras' compile / fit / evaluate / predict /
summary / save) and four ready-made stacks:

    TextClassifier      token ids -> Embedding -> GRU/LSTM -> pooling -> Dense (sigmoid/softmax)
    SequenceClassifier  float sequences (B, T, F) -> GRU/LSTM -> pooling -> Dense
    SequenceRegressor   (B, T, F) -> GRU/LSTM -> Dense at every step (or at the last) -> MSE
    LanguageModel       token ids -> Embedding -> GRU/LSTM -> Dense softmax over the vocabulary,
                        with temperature sampling (generate)

Recurrent layers are issue 4's `fastgru.GRU` / `fastgru.LSTM`, used as they are:

    model = fastgru.Sequential([
        fastgru.Embedding(20000, 128),
        fastgru.GRU(128, 128, batch_first=True),
        fastgru.LastState(),
        fastgru.Dense(1, activation="sigmoid"),
    ])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, epochs=5, batch_size=64, validation_split=0.1)

Parameters are visible by name as "<layer>.<parameter>" (`model.parameters()`), e.g.
"embedding.weight", "gru.weight_ih_l0", "dense.bias".
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from fastgru import checkpoint as ckpt
from fastgru._validation import check_bool, check_int
from fastgru.losses import Loss, get_loss
from fastgru.metrics import Metric, get_metric, unique_names
from fastgru.nn import (
    RNN,
    Activation,
    Ctx,
    Dense,
    Dropout,
    Embedding,
    Layer,
    Spec,
    TimePooling,
    check_dtype,
)
from fastgru.optim import Optimizer, get_optimizer
from fastgru.text import Vocabulary

__all__ = ["Sequential", "TextClassifier", "SequenceClassifier", "SequenceRegressor",
           "LanguageModel", "load_model"]

LAYER_KINDS = {c.kind: c for c in (Embedding, Dense, Activation, Dropout, TimePooling)}


def sub_seed(seed: int | None, k: int) -> int | None:
    """An independent integer seed for component k of a model seeded with `seed`."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise TypeError(f"seed must be None or an int >= 0, got {seed!r}")
    return int(np.random.SeedSequence([int(seed), k]).generate_state(1, np.uint64)[0] >> 1)


def make_rnn(cell: str, input_size: int, hidden_size: int, num_layers: int = 1,
             bidirectional: bool = False, dropout: float = 0.0, dtype: Any = "float32",
             seed: int | None = None, **kw: Any) -> RNN:
    """An RNN adapter around a new batch-first fastgru.GRU ("gru") or fastgru.LSTM ("lstm")."""
    import fastgru

    cls = {"gru": fastgru.GRU, "lstm": fastgru.LSTM}.get(str(cell).lower())
    if cls is None:
        raise ValueError(f"cell must be 'gru' or 'lstm', got {cell!r}")
    layer = cls(input_size, hidden_size, num_layers=num_layers, batch_first=True,
                dropout=dropout if num_layers > 1 else 0.0, bidirectional=bidirectional,
                dtype=dtype, seed=seed, **kw)
    return RNN(layer, name=str(cell).lower())


def _pair_callbacks(path: str, saved: list[dict[str, Any]], callbacks: Sequence[Any],
                    arrays: dict[str, np.ndarray]) -> list[tuple[Any, dict, dict]]:
    """(callback, scalars, arrays) to restore: the k-th saved callback of a type goes to the
    k-th of that type in this run, so the list may be reordered, and callbacks without state
    (loggers, a LambdaCallback) may come or go. A stateful one on one side only is warned
    about: it starts afresh, or its saved state is left unused."""
    from fastgru.callbacks import Callback

    def has_state(cb: Any) -> bool:
        return type(cb).get_state is not Callback.get_state

    pending: dict[str, list[tuple[int, dict]]] = {}
    for i, m in enumerate(saved):
        pending.setdefault(m["type"], []).append((i, m))
    out, fresh = [], []
    for cb in callbacks:
        queue = pending.get(type(cb).__name__)
        if not queue:
            if has_state(cb):
                fresh.append(type(cb).__name__)
            continue
        i, m = queue.pop(0)
        pre = f"callback/{i}/"
        out.append((cb, m["state"], {k[len(pre):]: v for k, v in arrays.items()
                                     if k.startswith(pre)}))
    unused = [m["type"] for q in pending.values() for i, m in q
              if m["state"] or any(k.startswith(f"callback/{i}/") for k in arrays)]
    if fresh or unused:
        warnings.warn(f"resuming from {path!r} with other callbacks than it was written with: "
                      + "; ".join(([f"{', '.join(fresh)} start(s) afresh"] if fresh else [])
                                  + ([f"the saved state of {', '.join(unused)} is not used"]
                                     if unused else [])), stacklevel=4)
    return out


class Sequential:
    """A linear stack of layers; see the module docstring.

    layers: nn layers and/or fastgru.GRU / fastgru.LSTM instances (wrapped in nn.RNN).
    input_dim: features of a float input when the first layer does not tell (a Dense); left
    None, it is read from the first data seen. dtype: float32 (default) or float64 for every
    layer. seed: seeds the initialisation of the layers the model builds, shuffling and dropout
    (None: fresh entropy); a fastgru.GRU/LSTM instance passed in keeps the weights it has (seed
    it with its own `seed=` for reproducible runs).
    """

    def __init__(self, layers: Sequence[Any] = (), input_dim: int | None = None,
                 dtype: Any = "float32", seed: int | None = None,
                 name: str | None = None) -> None:
        self.dtype = check_dtype(dtype)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise TypeError(f"seed must be an int or None, got {seed!r}")
        self.seed = None if seed is None else int(seed)
        self.name = name or _snake(type(self).__name__)
        self.layers: list[Layer] = []
        self.input_dim = None if input_dim is None else check_int("input_dim", input_dim, 1)
        self.built = False
        self._init_rng = np.random.default_rng(sub_seed(self.seed, 0))
        #: the training generator: shuffling, dropout masks, recurrent-dropout seeds
        self.rng = np.random.default_rng(sub_seed(self.seed, 1))
        self.optimizer: Optimizer | None = None
        self.loss: Loss | None = None
        self.metrics: list[Metric] = []
        self.head: str | None = None  # "sigmoid"/"softmax" fused into the loss
        self.classes_: list[Any] | None = None
        self.vocab: Vocabulary | None = None
        self.max_len: int | None = None
        self.history: Any = None
        self.stop_training = False
        #: fit(verify=...)'s result: the worst gradient deviation seen, per fit
        self.last_verification: dict[str, Any] | None = None
        self._params: dict[str, np.ndarray] = {}
        self._grads: dict[str, np.ndarray] = {}
        for layer in layers:
            self.add(layer)

    # -- structure ------------------------------------------------------------------------
    def add(self, layer: Any) -> None:
        """Append a layer (a fastgru.GRU/LSTM is wrapped in nn.RNN)."""
        if self.built:
            raise RuntimeError("cannot add layers to a built model")
        if not isinstance(layer, Layer):
            layer = RNN(layer)
        base = layer.name or (layer.cell if isinstance(layer, RNN) else _snake(layer.kind))
        name, k = base, 0
        while any(l.name == name for l in self.layers):
            k += 1
            name = f"{base}_{k}"
        layer.name = name
        self.layers.append(layer)

    def _input_spec(self, x: Any = None) -> Spec | None:
        first = self.layers[0]
        if isinstance(first, Embedding):
            return Spec(1, sequence=True, integer=True)
        if isinstance(first, RNN):
            return Spec(int(first.layer.input_size), sequence=True)
        if self.input_dim is not None:  # sequences when something consumes the time axis
            seq = any(isinstance(l, (RNN, TimePooling)) for l in self.layers)
            return Spec(int(self.input_dim), sequence=seq)
        if x is not None:
            a = np.asarray(x[0]) if isinstance(x, (list, tuple)) else x
            if a.ndim >= 1:
                seq = (a.ndim == 3) if isinstance(x, np.ndarray) else (a.ndim == 2)
                return Spec(int(a.shape[-1]), sequence=seq)
        return None

    def _try_build(self, x: Any = None) -> None:
        if self.built or not self.layers:
            return
        spec = self._input_spec(x)
        if spec is None:
            return
        self.input_spec = spec
        for layer in self.layers:
            spec = layer.build(spec, self.dtype, self._init_rng)
        self.output_spec = spec
        self.built = True
        self._params = {f"{l.name}.{k}": v for l in self.layers for k, v in l.parameters().items()}
        self._grads = {f"{l.name}.{k}": v for l in self.layers for k, v in l.grads().items()}

    def build(self, input_dim: Any = None) -> None:
        """Create the parameters now (automatic when the input size is known). input_dim: the
        features of the input, or a Keras input shape such as (None, T, F) (F is used)."""
        if input_dim is not None:
            if isinstance(input_dim, (tuple, list)) and len(input_dim):
                input_dim = input_dim[-1]
            self.input_dim = check_int("input_dim", input_dim, 1)
        self._try_build()
        if not self.built:
            raise ValueError("cannot build: give input_dim (features of the input)")

    def _need_built(self) -> None:
        self._try_build()
        if not self.built:
            raise RuntimeError("the model is not built yet: call build(input_dim) or fit()")

    # -- parameters -----------------------------------------------------------------------
    def parameters(self) -> dict[str, np.ndarray]:
        """"<layer>.<param>" -> array (the live arrays: update in place)."""
        self._need_built()
        return dict(self._params)

    def grads(self) -> dict[str, np.ndarray]:
        """"<layer>.<param>" -> accumulated gradient (same keys as parameters())."""
        self._need_built()
        return dict(self._grads)

    def sparse_rows(self) -> dict[str, np.ndarray]:
        """Row-sparse gradients (Embedding): parameter name -> rows touched since zero_grad."""
        return {f"{l.name}.{k}": r for l in self.layers for k, r in l.sparse_rows().items()}

    def zero_grad(self) -> None:
        for layer in self.layers:
            layer.zero_grad()

    def count_params(self) -> int:
        return int(sum(p.size for p in self._params.values()))

    def get_weights(self) -> dict[str, np.ndarray]:
        """Copies of all parameters by name."""
        self._need_built()
        return {k: v.copy() for k, v in self._params.items()}

    def set_weights(self, weights: dict[str, np.ndarray] | Sequence[np.ndarray]) -> None:
        """Copy arrays into the parameters (names and shapes must match exactly): a dict as
        get_weights() returns, or (as Keras) a list in get_weights()' order."""
        self._need_built()
        if isinstance(weights, (list, tuple)):
            if len(weights) != len(self._params):
                raise ValueError(f"weights is a list of {len(weights)} arrays; the model has "
                                 f"{len(self._params)} (in order: {list(self._params)})")
            weights = dict(zip(self._params, weights, strict=True))
        elif not isinstance(weights, dict):
            raise TypeError(f"weights must be a dict name -> array (as get_weights() returns) "
                            f"or a list of arrays, got {type(weights).__name__}")
        if set(weights) != set(self._params):
            missing = sorted(set(self._params) - set(weights))
            extra = sorted(set(weights) - set(self._params))
            raise ValueError(f"weights do not match the model: missing {missing}, unexpected "
                             f"{extra}")
        for k, v in weights.items():
            p = self._params[k]
            v = np.asarray(v)
            if v.shape != p.shape:
                raise ValueError(f"weight {k!r} has shape {v.shape}, the model needs {p.shape}")
            p[...] = v

    def set_backend(self, backend: str) -> None:
        """"fast" (fastgru's kernels) or "reference" (fastgru.reference, pure NumPy, slow: for
        debugging) for every recurrent layer."""
        if backend not in ("fast", "reference"):
            raise ValueError(f"backend must be 'fast' or 'reference', got {backend!r}")
        for layer in self.layers:
            layer.set_backend(backend)

    @property
    def backend(self) -> str:
        for layer in self.layers:
            if isinstance(layer, RNN):
                return layer.layer.backend
        return "fast"

    def set_threads(self, n_threads: int | None) -> None:
        """Kernel threads of every recurrent layer (None: fastgru's default policy)."""
        for layer in self.layers:
            if isinstance(layer, RNN):
                layer.layer.n_threads = n_threads

    # -- forward / backward ---------------------------------------------------------------
    def forward(self, x: np.ndarray, lengths: np.ndarray | None = None,
                training: bool = False, rng: np.random.Generator | None = None
                ) -> np.ndarray:
        """Model output for a prepared batch: x (B, T) ids or (B, T, F) features, lengths (B,).
        With a fused head (sigmoid/softmax + cross-entropy) the output is the logits.
        rng: the generator of dropout masks (default self.rng, the training generator;
        data-parallel training gives each rank its own)."""
        self._need_built()
        ctx = Ctx(lengths=lengths, training=training, rng=self.rng if rng is None else rng)
        for layer in self._run_layers():
            x = layer.forward(x, ctx)
        return x

    def backward(self, dout: np.ndarray) -> None:
        """Backpropagate d loss / d output through every layer, ADDING to the gradients."""
        d: Any = dout
        for layer in reversed(self._run_layers()):
            d = layer.backward(d)

    def _run_layers(self) -> list[Layer]:
        if self.head is not None and isinstance(self.layers[-1], Activation):
            return self.layers[:-1]
        return self.layers

    # -- compile --------------------------------------------------------------------------
    def compile(self, optimizer: Any = "adam", loss: Any = None,
                metrics: Sequence[Any] | None = None) -> None:
        """Choose the optimizer (instance or "sgd"/"adam"/"adamw"), the loss (instance or Keras
        name) and metrics (Keras names: "accuracy", "auc", "precision", "recall", "mae", "mse",
        "rmse", ..., or fastgru.metrics objects such as AUC(curve="PR")). A final sigmoid
        (softmax) with binary (categorical) cross-entropy is fused: the loss is computed from
        the logits, which is exact and stable, and predict() still returns probabilities."""
        if loss is None:
            raise ValueError("compile() needs a loss, e.g. loss='binary_crossentropy'")
        if not self.layers:
            raise ValueError("the model has no layers")
        self._try_build()
        self.optimizer = get_optimizer(optimizer)
        self.loss = get_loss(loss)
        if isinstance(metrics, (str, Metric)):  # one (Keras wants a list; the intent is clear)
            metrics = [metrics]
        self.metrics = unique_names([get_metric(m, self.loss.task) for m in (metrics or [])])
        self._setup_head()

    def _setup_head(self) -> None:
        last = self.layers[-1] if self.layers else None
        if isinstance(last, Dense):
            last.skip_activation = False
        act = getattr(last, "activation", None)
        self.head = None
        loss = self.loss
        assert loss is not None
        task = loss.task
        if task in ("binary", "multiclass"):
            want = "sigmoid" if task == "binary" else "softmax"
            if loss.from_logits:
                if act in ("sigmoid", "softmax"):
                    raise ValueError(f"the loss takes logits (from_logits=True) but the model "
                                     f"ends with a {act}: remove the activation")
            elif act == want:
                self.head = want
                if isinstance(last, Dense):
                    last.skip_activation = True
            else:
                raise ValueError(f"{loss.name} expects probabilities: end the model with "
                                 f"Dense(..., activation={want!r}), or pass a loss with "
                                 "from_logits=True")

    @property
    def compiled(self) -> bool:
        return self.loss is not None

    def _compile_config(self) -> dict[str, Any] | None:
        if self.optimizer is None or self.loss is None:
            return None
        return {"optimizer": self.optimizer.get_config(), "loss": self.loss.get_config(),
                "metrics": [m.spec if isinstance(m.spec, str) else m.get_config()
                            for m in self.metrics]}

    # -- training API (fastgru.trainer) ---------------------------------------------------
    def fit(self, x: Any, y: Any = None, **kwargs: Any):
        """Train; Keras' signature: fit(x, y, batch_size=32, epochs=1, verbose=1, callbacks=None,
        validation_split=0.0, validation_data=None, shuffle=True, initial_epoch=0, ...).
        distributed=True trains data-parallel over MPI ranks (fastgru.distributed; batch_size
        per rank). See fastgru.trainer.fit. Returns a History."""
        from fastgru import trainer

        return trainer.fit(self, x, y, **kwargs)

    def evaluate(self, x: Any, y: Any = None, **kwargs: Any):
        """Loss (and metrics) on data: a float, or [loss, *metrics], or a dict with
        return_dict=True; distributed=True splits the data over MPI ranks. See
        fastgru.trainer.evaluate."""
        from fastgru import trainer

        return trainer.evaluate(self, x, y, **kwargs)

    def predict(self, x: Any, **kwargs: Any) -> np.ndarray:
        """Outputs for x in the input order: probabilities for classifiers (sigmoid (N, 1) or
        softmax (N, K)), values for regressors; per-step models give (N, T, .) with zeros past
        each sequence's end. See fastgru.trainer.predict."""
        from fastgru import trainer

        return trainer.predict(self, x, **kwargs)

    # Keras' single-batch API: all of x is one batch
    _ONE_BATCH = 1 << 30

    def train_on_batch(self, x: Any, y: Any = None, sample_weight: Any = None,
                       class_weight: Any = None, return_dict: bool = False
                       ) -> float | list[float] | dict[str, float]:
        """One optimizer step on all of (x, y) as one batch (Keras). Returns the loss (and
        metrics) of that step's forward pass, before the update: a float, [loss, *metrics],
        or a dict with return_dict=True."""
        from fastgru import trainer

        h = trainer.fit(self, x, y, batch_size=self._ONE_BATCH, epochs=1, verbose=0,
                        shuffle=False, sample_weight=sample_weight, class_weight=class_weight)
        res = {k: v[-1] for k, v in h.history.items()}
        if return_dict:
            return res
        return res["loss"] if len(res) == 1 else list(res.values())

    def test_on_batch(self, x: Any, y: Any = None, sample_weight: Any = None,
                      return_dict: bool = False) -> float | list[float] | dict[str, float]:
        """evaluate() on all of (x, y) as one batch (Keras)."""
        return self.evaluate(x, y, batch_size=self._ONE_BATCH, sample_weight=sample_weight,
                             return_dict=return_dict)

    def predict_on_batch(self, x: Any) -> np.ndarray:
        """predict() on all of x as one batch (Keras)."""
        return self.predict(x, batch_size=self._ONE_BATCH)

    def __call__(self, x: Any) -> np.ndarray:
        """model(x): the outputs of predict_on_batch(x), as a NumPy array."""
        return self.predict_on_batch(x)

    def predict_classes(self, x: Any, **kwargs: Any) -> np.ndarray:
        """Predicted class labels (the original labels when fit() mapped strings)."""
        p = self.predict(x, **kwargs)
        if self.loss is None or self.loss.task == "regression":
            raise ValueError("predict_classes needs a classifier")
        if self.loss.task == "binary":  # predict gives logits when the loss takes logits
            ids = (p[..., 0] > (0.0 if self.loss.from_logits else 0.5)).astype(np.int64)
        else:
            ids = p.argmax(-1)
        if self.classes_ is not None:
            return _label_array(self.classes_)[ids]
        return ids

    # -- description ----------------------------------------------------------------------
    def summary(self, print_fn: Any = print) -> None:
        """Print a Keras-style table of layers, output shapes and parameter counts."""
        self._need_built()
        rows = [("Layer (type)", "Output Shape", "Param #")]
        spec = self.input_spec
        for layer in self.layers:
            spec = _out_spec(layer, spec)
            n = sum(p.size for p in layer.parameters().values())
            typ = type(layer.layer).__name__ if isinstance(layer, RNN) else type(layer).__name__
            rows.append((f"{layer.name} ({typ})", str(spec.shape()), f"{n:,}"))
        w = [max(len(r[i]) for r in rows) + 2 for i in range(3)]
        line = "-" * sum(w)
        out = [f'Model: "{self.name}"', line]
        for i, r in enumerate(rows):
            out.append("".join(c.ljust(w[j]) for j, c in enumerate(r)).rstrip())
            if i == 0:
                out.append("=" * sum(w))
        out += [line, f"Total params: {self.count_params():,}",
                f"dtype: {self.dtype}, backend: {self.backend}", line]
        print_fn("\n".join(out))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(repr(l) for l in self.layers)})"

    # -- config ---------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        layers = []
        for l in self.layers:
            if isinstance(l, RNN):
                cfg = dict(l.layer.get_config(), cell=l.cell, name=l.name)
                layers.append({"kind": "RNN", "config": cfg})
            else:
                layers.append({"kind": l.kind, "config": l.get_config()})
        return {"class": "Sequential", "dtype": str(self.dtype), "seed": self.seed,
                "name": self.name, "input_dim": self.input_spec.features
                if self.built and not self.input_spec.integer else self.input_dim,
                "layers": layers}

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> Sequential:
        import fastgru

        layers: list[Layer] = []
        for item in cfg["layers"]:
            kind, lc = item["kind"], dict(item["config"])
            if kind == "RNN":
                cell, name = lc.pop("cell"), lc.pop("name", None)
                rnn_cls = {"gru": fastgru.GRU, "lstm": fastgru.LSTM}[cell]
                layers.append(RNN(rnn_cls(**lc), name=name))
            elif kind in LAYER_KINDS:
                layers.append(LAYER_KINDS[kind](**lc))
            else:
                raise ValueError(f"unknown layer kind {kind!r} in the model config")
        return cls(layers, input_dim=cfg.get("input_dim"), dtype=cfg["dtype"],
                   seed=cfg.get("seed"), name=cfg.get("name"))

    # -- saving ---------------------------------------------------------------------------
    def _file_meta(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        self._need_built()
        meta: dict[str, Any] = {"model": self.get_config(), "compile": self._compile_config(),
                                "classes": self.classes_, "max_len": self.max_len,
                                "vocab": self.vocab.to_json() if self.vocab else None}
        arrays = {f"param/{k}": np.ascontiguousarray(v) for k, v in self._params.items()}
        if self.optimizer is not None:
            scalars, slots = self.optimizer.state_dict()
            meta["optimizer_state"] = scalars
            arrays.update({f"opt/{k}": v for k, v in slots.items()})
        return meta, arrays

    def save(self, path: str | os.PathLike) -> None:
        """Write the model (config, weights, compile settings and optimizer state, class names,
        vocabulary) to one .npz file, atomically, without pickle. Read it with
        fastgru.load_model(path)."""
        meta, arrays = self._file_meta()
        ckpt.save_arrays(os.fspath(path), arrays, meta)

    def save_weights(self, path: str | os.PathLike) -> None:
        """Write the parameters only (and the config they belong to) to one .npz file,
        atomically, without pickle. Read them back with load_weights(path)."""
        self._need_built()
        arrays = {f"param/{k}": np.ascontiguousarray(v) for k, v in self._params.items()}
        ckpt.save_arrays(os.fspath(path), arrays, {"model": self.get_config(),
                                                   "weights_only": True})

    def load_weights(self, path: str | os.PathLike) -> None:
        """Load the weights of a file written by save(), save_weights() or a checkpoint into
        this model."""
        arrays, _ = ckpt.load_arrays(os.fspath(path))
        self.set_weights({k[6:]: v for k, v in arrays.items() if k.startswith("param/")})

    def save_training_state(self, path: str, epoch: int, callbacks: Sequence[Any] = ()) -> None:
        """A resumable checkpoint: save() plus the epoch count, the training RNG state and
        the callbacks' state (History included)."""
        meta, arrays = self._file_meta()
        cb_meta = []
        for i, cb in enumerate(callbacks):
            s, a = cb.get_state()
            cb_meta.append({"type": type(cb).__name__, "state": s})
            arrays.update({f"callback/{i}/{k}": v for k, v in a.items()})
        # PCG64's state is a dict of Python ints: JSON keeps them exactly
        meta["training"] = {"epoch": int(epoch), "rng": self.rng.bit_generator.state,
                            "callbacks": cb_meta,
                            "stopped": bool(getattr(self, "stop_training", False))}
        ckpt.save_arrays(path, arrays, meta)

    def load_training_state(self, path: str, callbacks: Sequence[Any] = ()) -> int:
        """Restore a save_training_state() file into this (compiled) model and the callbacks;
        returns the number of completed epochs. A run that had stopped early (EarlyStopping)
        comes back with stop_training set, so fit() ends it as the uninterrupted run ended."""
        arrays, meta = ckpt.load_arrays(path)
        tr = meta.get("training")
        if tr is None:
            raise ckpt.CheckpointError(f"{path!r} holds a model but no training state")
        pairs = _pair_callbacks(path, tr.get("callbacks", []), callbacks, arrays)
        self._restore(arrays, meta)
        self.rng.bit_generator.state = tr["rng"]
        for cb, state, cb_arrays in pairs:
            cb.set_state(state, cb_arrays)
        self.stop_training = bool(tr.get("stopped", False))
        return int(tr["epoch"])

    def _restore(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.set_weights({k[6:]: v for k, v in arrays.items() if k.startswith("param/")})
        if meta.get("classes") is not None:
            self.classes_ = list(meta["classes"])
        if meta.get("vocab") is not None:
            self.vocab = Vocabulary.from_json(meta["vocab"])
        if meta.get("max_len") is not None:
            self.max_len = int(meta["max_len"])
        if self.optimizer is not None and "optimizer_state" in meta:
            self.optimizer.load_state_dict(
                meta["optimizer_state"],
                {k[4:]: v for k, v in arrays.items() if k.startswith("opt/")}, self._params)


def _snake(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and (not name[i - 1].isupper() or
                                   (i + 1 < len(name) and name[i + 1].islower())):
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def _out_spec(layer: Layer, spec: Spec) -> Spec:
    """Output spec of an already built layer (for summary)."""
    if isinstance(layer, Embedding):
        return Spec(layer.output_dim)
    if isinstance(layer, RNN):
        return Spec(layer.output_size, directions=layer.directions, reverse=layer.reverse)
    if isinstance(layer, TimePooling):
        return Spec(spec.features, sequence=False)
    if isinstance(layer, Dense):
        return Spec(layer.units, sequence=spec.sequence)
    return spec


# ------------------------------------------------------------------------------------------
# ready-made models


class _Preset(Sequential):
    """A Sequential built from constructor arguments (kept in `args` for save/load)."""

    def __init__(self, layers: Sequence[Any], args: dict[str, Any]) -> None:
        # NumPy scalars (x.max() + 1 as vocab_size) would not survive the JSON config
        self.args = {k: v.item() if isinstance(v, np.generic) else v for k, v in args.items()}
        super().__init__(layers, dtype=args["dtype"], seed=args["seed"], name=args.get("name"))

    def get_config(self) -> dict[str, Any]:
        return {"class": type(self).__name__, "args": dict(self.args)}

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> Sequential:
        return cls(**cfg["args"])


def _rnn_stack(args: dict[str, Any], input_size: int) -> RNN:
    return make_rnn(args["cell"], input_size, args["hidden_size"], args["num_layers"],
                    args["bidirectional"], args["dropout"], args["dtype"],
                    sub_seed(args["seed"], 2))


def _classifier_head(args: dict[str, Any]) -> list[Layer]:
    k = int(args["num_classes"])
    if k < 2:
        raise ValueError(f"num_classes must be >= 2, got {k}")
    layers: list[Layer] = [TimePooling(args["pooling"], name="pool")]
    if args["dropout"] > 0:
        layers.append(Dropout(args["dropout"], name="dropout"))
    layers.append(Dense(1, "sigmoid", name="classifier") if k == 2
                  else Dense(k, "softmax", name="classifier"))
    return layers


def _default_compile(model: Sequential, learning_rate: float, loss: str, metric: str) -> None:
    from fastgru.optim import Adam

    model.compile(optimizer=Adam(learning_rate), loss=loss, metrics=[metric])


class TextClassifier(_Preset):
    """Embedding -> GRU/LSTM -> pooling over valid steps -> Dense, compiled with Adam and
    binary (num_classes=2, sigmoid) or categorical (softmax) cross-entropy and accuracy.

    Input: token ids (B, T) padded with 0 (or lists of ids, or texts when `vocab` is set).
    predict(): (N, 1) P(class 1) for two classes, (N, K) softmax otherwise.
    dropout: on the embeddings, between stacked recurrent layers and before the Dense.
    pooling: "last" (final state; [forward last, reverse first] when bidirectional), "mean"
    or "max" over valid steps. sparse_embedding: lazy updates of the embedding rows in each
    batch (Embedding(sparse=True); False: every row, as a dense PyTorch/Keras training). The
    defaults are `fastgru train`'s text recipe (tuned on MR: 78.8-80.3% test accuracy over 5
    seeds)."""

    def __init__(self, vocab_size: int, embed_dim: int = 128, hidden_size: int = 64,
                 cell: str = "gru", num_layers: int = 1, bidirectional: bool = True,
                 dropout: float = 0.5, pooling: str = "max", num_classes: int = 2,
                 learning_rate: float = 2e-3, dtype: Any = "float32",
                 seed: int | None = None, name: str | None = None,
                 vocab: Vocabulary | dict[str, Any] | None = None,
                 max_len: int | None = None, sparse_embedding: bool = True) -> None:
        args: dict[str, Any]
        args = dict(vocab_size=vocab_size, embed_dim=embed_dim, hidden_size=hidden_size,
                    cell=cell, num_layers=num_layers, bidirectional=bidirectional,
                    dropout=float(dropout), pooling=pooling, num_classes=num_classes,
                    learning_rate=learning_rate, dtype=str(check_dtype(dtype)), seed=seed,
                    name=name, max_len=max_len,
                    sparse_embedding=check_bool("sparse_embedding", sparse_embedding))
        layers: list[Layer] = [Embedding(vocab_size, embed_dim, name="embedding",
                                         sparse=args["sparse_embedding"])]
        if args["dropout"] > 0:
            layers.append(Dropout(args["dropout"], name="embedding_dropout"))
        layers.append(_rnn_stack(args, embed_dim))
        layers += _classifier_head(args)
        super().__init__(layers, args)
        if isinstance(vocab, dict):
            vocab = Vocabulary.from_json(vocab)
        if vocab is not None and len(vocab) > vocab_size:
            raise ValueError(f"the vocabulary has {len(vocab)} tokens, more than "
                             f"vocab_size={vocab_size}")
        self.vocab, self.max_len = vocab, max_len
        _default_compile(self, learning_rate, "binary_crossentropy" if num_classes == 2
                         else "sparse_categorical_crossentropy", "accuracy")

    def get_config(self) -> dict[str, Any]:
        cfg = super().get_config()
        cfg["args"].pop("vocab", None)  # stored separately
        return cfg


class SequenceClassifier(_Preset):
    """Float sequences (B, T, input_size) -> GRU/LSTM -> pooling -> Dense; as TextClassifier
    without the embedding (e.g. the digits read row by row)."""

    def __init__(self, input_size: int, hidden_size: int = 64, cell: str = "gru",
                 num_layers: int = 1, bidirectional: bool = False, dropout: float = 0.0,
                 pooling: str = "last", num_classes: int = 2, learning_rate: float = 1e-3,
                 dtype: Any = "float32", seed: int | None = None,
                 name: str | None = None) -> None:
        args: dict[str, Any]
        args = dict(input_size=input_size, hidden_size=hidden_size, cell=cell,
                    num_layers=num_layers, bidirectional=bidirectional, dropout=float(dropout),
                    pooling=pooling, num_classes=num_classes, learning_rate=learning_rate,
                    dtype=str(check_dtype(dtype)), seed=seed, name=name)
        super().__init__([_rnn_stack(args, input_size)] + _classifier_head(args), args)
        _default_compile(self, learning_rate, "binary_crossentropy" if num_classes == 2
                         else "sparse_categorical_crossentropy", "accuracy")


class SequenceRegressor(_Preset):
    """(B, T, input_size) -> GRU/LSTM -> Dense(output_size) at every step (return_sequences,
    the default: targets (B, T, output_size)) or on the last valid state (targets
    (B, output_size)); compiled with Adam, MSE and MAE."""

    def __init__(self, input_size: int, output_size: int = 1, hidden_size: int = 64,
                 cell: str = "gru", num_layers: int = 1, bidirectional: bool = False,
                 dropout: float = 0.0, return_sequences: bool = True,
                 learning_rate: float = 1e-3, dtype: Any = "float32",
                 seed: int | None = None, name: str | None = None) -> None:
        args: dict[str, Any]
        args = dict(input_size=input_size, output_size=output_size, hidden_size=hidden_size,
                    cell=cell, num_layers=num_layers, bidirectional=bidirectional,
                    dropout=float(dropout), return_sequences=bool(return_sequences),
                    learning_rate=learning_rate, dtype=str(check_dtype(dtype)), seed=seed,
                    name=name)
        layers: list[Layer] = [_rnn_stack(args, input_size)]
        if not return_sequences:
            layers.append(TimePooling("last", name="pool"))
        layers.append(Dense(output_size, name="output"))
        super().__init__(layers, args)
        _default_compile(self, learning_rate, "mse", "mae")


class LanguageModel(_Preset):
    """Next-token model: token ids (B, T) -> Embedding -> GRU/LSTM -> Dense softmax over the
    vocabulary at every step, trained with (sparse) categorical cross-entropy on targets
    (B, T) = the inputs shifted by one. generate() samples text with a temperature.
    sparse_embedding: as in TextClassifier (lazy updates of the rows in each batch)."""

    def __init__(self, vocab_size: int, embed_dim: int = 64, hidden_size: int = 128,
                 cell: str = "gru", num_layers: int = 1, dropout: float = 0.0,
                 learning_rate: float = 3e-3, dtype: Any = "float32",
                 seed: int | None = None, name: str | None = None,
                 vocab: Vocabulary | dict[str, Any] | None = None,
                 sparse_embedding: bool = True) -> None:
        args: dict[str, Any]
        args = dict(vocab_size=vocab_size, embed_dim=embed_dim, hidden_size=hidden_size,
                    cell=cell, num_layers=num_layers,
                    dropout=float(dropout), learning_rate=learning_rate,
                    dtype=str(check_dtype(dtype)), seed=seed, name=name,
                    sparse_embedding=check_bool("sparse_embedding", sparse_embedding))
        layers: list[Layer] = [Embedding(vocab_size, embed_dim, name="embedding",
                                         sparse=args["sparse_embedding"])]
        if args["dropout"] > 0:
            layers.append(Dropout(args["dropout"], name="embedding_dropout"))
        layers.append(_rnn_stack(dict(args, bidirectional=False), embed_dim))
        if args["dropout"] > 0:
            layers.append(Dropout(args["dropout"], name="dropout"))
        layers.append(Dense(vocab_size, "softmax", name="output"))
        super().__init__(layers, args)
        if isinstance(vocab, dict):
            vocab = Vocabulary.from_json(vocab)
        self.vocab = vocab
        _default_compile(self, learning_rate, "sparse_categorical_crossentropy", "accuracy")

    def get_config(self) -> dict[str, Any]:
        cfg = super().get_config()
        cfg["args"].pop("vocab", None)
        return cfg

    def generate(self, prompt: str | Sequence[int], length: int = 100,
                 temperature: float = 1.0, seed: int | None = None,
                 skip_special: bool = True) -> str | list[int]:
        """Continue `prompt` by `length` tokens sampled from softmax(logits / temperature)
        (temperature -> 0: greedy). A str prompt needs `vocab` and returns text; a list of ids
        returns the generated ids. Runs the recurrent layer one step at a time (layer.step).
        skip_special: with a vocabulary, never sample `<pad>` or `<unk>` (decoded text would
        drop the one and spell out the other)."""
        if not float(temperature) >= 0:
            raise ValueError(f"temperature must be >= 0, got {temperature!r}")
        if int(length) < 0:
            raise ValueError(f"length must be >= 0, got {length!r}")
        vocab = None  # set for a text prompt: the result is text too
        if isinstance(prompt, str):
            if self.vocab is None:
                raise ValueError("a text prompt needs the model's vocabulary (vocab=...)")
            vocab = self.vocab
            ids = vocab.ids(vocab.tokenizer(prompt))
        else:
            ids = [int(i) for i in prompt]
        if not ids:
            raise ValueError("prompt is empty")
        banned: list[int] = []
        if skip_special and self.vocab is not None:
            banned = [Vocabulary.PAD_ID, Vocabulary.UNK_ID]
            if len(self.vocab.tokens) <= len(banned):
                raise ValueError("the vocabulary holds only <pad> and <unk>: nothing to sample "
                                 "(skip_special=False samples them)")
        rng = np.random.default_rng(seed)
        emb = next(l for l in self.layers if isinstance(l, Embedding))
        rnn = next(l for l in self.layers if isinstance(l, RNN)).layer
        out = self.layers[-1]
        W = emb.params["weight"]
        rnn.eval()
        state = None
        logits = None
        new: list[int] = []
        for i in range(len(ids) + int(length)):
            tok = ids[i] if i < len(ids) else new[-1]
            y, state = rnn.step(W[[tok]], state)
            if i >= len(ids) - 1 and len(new) < int(length):
                logits = (y @ out.params["weight"].T + out.params["bias"])[0].astype(np.float64)
                logits[banned] = -np.inf
                new.append(_sample(logits, float(temperature), rng))
        if vocab is not None:
            sep = "" if vocab.tokenizer.char_level else " "
            return sep.join(vocab.decode(new))
        return new


def _sample(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    if temperature == 0:
        return int(np.argmax(logits))
    z = logits / temperature  # -inf (a banned id) stays -inf: probability 0
    p = np.exp(z - z.max())
    p /= p.sum()
    return int(rng.choice(len(p), p=p))


_PRESETS = {c.__name__: c for c in (TextClassifier, SequenceClassifier, SequenceRegressor,
                                     LanguageModel)}


def load_model(path: str | os.PathLike, compile: bool = True) -> Sequential:
    """Rebuild a model written by model.save() (or a training checkpoint): architecture,
    weights, class names, vocabulary and, with compile=True, the loss, metrics and optimizer
    with its state, so that training can continue."""
    from fastgru.optim import get_optimizer

    arrays, meta = ckpt.load_arrays(os.fspath(path))
    cfg = meta.get("model") or {}
    cls = Sequential if cfg.get("class") == "Sequential" else \
        _PRESETS.get(str(cfg.get("class")))
    if cls is None:
        raise ckpt.CheckpointError(f"{os.fspath(path)!r} holds an unknown model class "
                                   f"{cfg.get('class')!r}")
    model = cls.from_config(cfg)
    model._try_build()
    if not model.built:
        model.build(cfg.get("input_dim"))
    comp = meta.get("compile")
    if compile and comp:
        loss_cfg = comp["loss"]
        loss = get_loss(loss_cfg["name"])
        loss.from_logits = bool(loss_cfg.get("from_logits", loss.from_logits))
        model.compile(get_optimizer(comp["optimizer"]), loss, comp.get("metrics"))
    elif not compile:
        model.optimizer = model.loss = None
        model.metrics, model.head = [], None
        if isinstance(model.layers[-1], Dense):
            model.layers[-1].skip_activation = False
    model._restore(arrays, meta)
    return model


def _label_array(classes: list[Any]) -> np.ndarray:
    """The classes as an array for indexing: int64 when all are integers, str when all are
    strings (as the labels fit() was given), object only for a mix."""
    if all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in classes):
        return np.asarray(classes, dtype=np.int64)
    if all(isinstance(c, str) for c in classes):
        return np.asarray(classes, dtype=str)
    return np.asarray(classes, dtype=object)
