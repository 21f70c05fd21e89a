"""Weight interop with PyTorch, Keras and ONNX (both directions, lossless).

fastgru stores weights in PyTorch's layout and gate order. Converting is a transpose and/or a
permutation of gate blocks (research: feature-anchors.md, section 2):

    GRU   PyTorch / fastgru  r, z, n   rows of (3H, I)
          Keras              z, r, h   columns of kernel (I, 3H)
          ONNX               z, r, h   rows of W [D, 3H, I]
    LSTM  PyTorch / fastgru  i, f, g, o
          Keras              i, f, c, o  (same order, transposed)
          ONNX               i, o, f, c

GRU biases: PyTorch has b_ih and b_hh (3H each). Keras reset_after=True has bias (2, 3H) =
[input bias; recurrent bias]; reset_after=False has only the input-side bias (3H,), and its
formula uses b_in + b_hn, so fastgru -> Keras sums them (exact function). ONNX B [D, 6H] =
[Wb_zrh, Rb_zrh]; linear_before_reset=1 is reset_after=True, 0 is reset_after=False.
LSTM biases: Keras has one bias (4H,) = b_ih + b_hh (Keras -> fastgru puts it in b_ih and
zeros b_hh); ONNX B [D, 8H] = [Wb_iofc, Rb_iofc].

These functions work on any fastgru module (layer or cell); the classes expose them as methods.
"""
from __future__ import annotations

import os
import sys
import warnings
from typing import Any

import numpy as np

from fastgru._module import check_dtype, rebuild, to_numpy, torch_sd_arg

GRU_TO_GATES = (1, 0, 2)  # PyTorch r,z,n <-> Keras/ONNX z,r,h (its own inverse)
LSTM_TO_ONNX = (0, 3, 1, 2)  # PyTorch i,f,g,o -> ONNX i,o,f,c
LSTM_FROM_ONNX = (0, 2, 3, 1)  # ONNX i,o,f,c -> PyTorch i,f,g,o

DIRECTIONS = {"forward": 1, "bidirectional": 2, "reverse": 1}


def permute_gates(a: np.ndarray, order, axis: int = 0) -> np.ndarray:
    """Reorder the len(order) equal gate blocks of `a` along `axis` (a new contiguous array)."""
    parts = np.split(a, len(order), axis=axis)
    return np.ascontiguousarray(np.concatenate([parts[i] for i in order], axis=axis))


def _dtype_of(arrays, dtype) -> np.dtype:
    """The explicit dtype, else that of the first array when float32/64, else float32."""
    if dtype is not None:
        return check_dtype(dtype)
    dt = arrays[0].dtype
    return dt if dt in (np.dtype(np.float32), np.dtype(np.float64)) else np.dtype(np.float32)


def _units(m) -> list[tuple[int, int]]:
    return [(l, d) for l in range(m._L) for d in range(m.num_directions)]


# ---------------------------------------------------------------------------------------------
# PyTorch

_TORCH_CLASSES = {"GRU": "GRU", "LSTM": "LSTM", "GRUCell": "GRUCell", "LSTMCell": "LSTMCell"}


def _torch_class(cls):
    import torch

    for klass in cls.__mro__:
        if klass.__name__ in _TORCH_CLASSES:
            return getattr(torch.nn, _TORCH_CLASSES[klass.__name__])
    raise TypeError(f"{cls.__name__} has no PyTorch counterpart")


def _refuse_reset_before(m, what: str) -> None:
    if m._cell == "gru" and not m._reset_after:
        raise ValueError(
            f"{what}: this GRU has reset_after=False (Cho et al. 2014 / Keras reset_after=False "
            "/ ONNX linear_before_reset=0), a different function from PyTorch's GRU, which has "
            "no such variant. Use state_dict()/load_state_dict() for raw fastgru arrays.")


# constructor arguments that define the function a converted layer computes: a kwarg may
# repeat what the source says, never contradict it (the weights would load and give other
# numbers); defaults for the ones a source config may leave out
_DEFINING = {"input_size": None, "hidden_size": None, "num_layers": 1, "bias": True,
             "bidirectional": False, "reset_after": True, "reverse": False, "proj_size": 0}


def _with_kwargs(where: str, cfg: dict, kwargs: dict, source: str) -> dict:
    """cfg updated with kwargs; a kwarg in _DEFINING that differs from cfg raises ValueError."""
    for k, v in kwargs.items():
        if k not in _DEFINING or (k not in cfg and _DEFINING[k] is None):
            continue
        have = cfg.get(k, _DEFINING[k])
        if k == "reset_after" and "reset_after" not in cfg:
            continue  # an LSTM: the constructor refuses it
        if v != have:
            raise ValueError(f"{where}: {k}={v!r} contradicts the {source} ({k}={have!r}); "
                             f"leave it out")
    return {**cfg, **kwargs}


def from_torch(cls, module: Any, dtype: Any = None, **kwargs):
    """A new fastgru module with the configuration, weights and train/eval mode of a PyTorch
    module (torch.nn.GRU/LSTM/GRUCell/LSTMCell). dtype: None keeps float32/float64 weights
    (other float types become float32). kwargs go to the constructor (backend, n_threads)."""
    tcls = _torch_class(cls)
    if not isinstance(module, tcls):
        raise TypeError(f"module must be a {tcls.__module__}.{tcls.__name__}, got "
                        f"{type(module).__module__}.{type(module).__qualname__}")
    cfg: dict[str, Any] = dict(input_size=int(module.input_size),
                               hidden_size=int(module.hidden_size), bias=bool(module.bias))
    if hasattr(module, "num_layers"):  # layers, not cells
        cfg.update(num_layers=int(module.num_layers), batch_first=bool(module.batch_first),
                   dropout=float(module.dropout), bidirectional=bool(module.bidirectional))
        if getattr(module, "proj_size", 0):
            cfg["proj_size"] = int(module.proj_size)
    if cls._cell == "gru":
        cfg["reset_after"] = True  # PyTorch's only GRU
    sd = {k: to_numpy(k, v) for k, v in module.state_dict().items()}
    cfg["dtype"] = _dtype_of(list(sd.values()), dtype)
    cfg = _with_kwargs("from_torch", cfg, kwargs, "PyTorch module")
    m = rebuild(cls, cfg)  # torch warned already about dropout with one layer
    m.load_state_dict(sd)
    return m.train(bool(module.training))


def to_torch(m, device: Any = None):
    """The equivalent PyTorch module (same config, weights, dtype and train/eval mode)."""
    import torch

    _refuse_reset_before(m, "to_torch")
    _refuse_reverse(m, "to_torch")
    tcls = _torch_class(type(m))
    cfg = dict(input_size=m.input_size, hidden_size=m.hidden_size, bias=m.bias)
    if hasattr(m, "num_layers"):
        cfg.update(num_layers=m.num_layers, batch_first=m.batch_first, dropout=m.dropout,
                   bidirectional=m.bidirectional)
        if getattr(m, "proj_size", 0):
            cfg["proj_size"] = m.proj_size
    tdt = torch.float64 if m.dtype == np.float64 else torch.float32
    mod = tcls(**cfg, dtype=tdt, device=device)
    mod.load_state_dict(to_torch_state_dict(m, tensors=True))
    return mod.train(m.training)


def _refuse_reverse(m, what: str) -> None:
    if getattr(m, "reverse", False):
        raise NotImplementedError(f"{what}: a reverse=True layer has no PyTorch counterpart "
                                  "(torch runs reverse directions only inside bidirectional)")


def to_torch_state_dict(m, tensors: bool = False) -> dict[str, Any]:
    """PyTorch state dict: name -> copy of the parameter (NumPy arrays, or CPU tensors when
    tensors=True; torch is imported only then)."""
    _refuse_reset_before(m, "to_torch_state_dict")
    _refuse_reverse(m, "to_torch_state_dict")  # torch would load it as a forward layer
    sd = m.state_dict()
    if tensors:
        import torch

        sd = {k: torch.from_numpy(v) for k, v in sd.items()}
    return sd


def load_torch_state_dict(m, state_dict: dict[str, Any], strict: bool = True,
                          prefix: str = "") -> None:
    """Copy a PyTorch state dict (arrays or tensors) into m, in place, cast to m's dtype.
    prefix: keep only keys starting with it, stripped (e.g. "encoder.rnn.")."""
    _refuse_reset_before(m, "load_torch_state_dict")
    m.load_state_dict(torch_sd_arg(state_dict, prefix), strict=strict)


# ---------------------------------------------------------------------------------------------
# Keras


def _keras_unit(m, l: int, d: int) -> list[np.ndarray]:
    blk = m._store.blocks[l]
    w_ih, w_hh = blk["w_ih"][d], blk["w_hh"][d]
    if m._cell == "gru":
        out = [permute_gates(w_ih, GRU_TO_GATES).T.copy(),
               permute_gates(w_hh, GRU_TO_GATES).T.copy()]
        if m.bias:
            b_ih, b_hh = blk["b_ih"][d], blk["b_hh"][d]
            if m._reset_after:
                out.append(np.stack([permute_gates(b_ih, GRU_TO_GATES),
                                     permute_gates(b_hh, GRU_TO_GATES)]))
            else:  # Keras reset-before uses b_in + b_hn; r and z add their biases anyway
                out.append(permute_gates(b_ih + b_hh, GRU_TO_GATES))
        return out
    out = [w_ih.T.copy(), w_hh.T.copy()]
    if m.bias:
        out.append(blk["b_ih"][d] + blk["b_hh"][d])
    return out


def to_keras_weights(m) -> list[np.ndarray]:
    """Keras weights, [kernel (I, G), recurrent_kernel (H, G), bias] for each layer and
    direction in order (forward then backward, as Keras' Bidirectional.get_weights()): for one
    unidirectional layer exactly keras_layer.get_weights(). GRU bias: (2, 3H) with reset_after,
    (3H,) without; LSTM bias (4H,); no bias entry when bias=False."""
    if getattr(m, "_proj", 0):
        raise NotImplementedError("Keras LSTM has no projection (proj_size); cannot convert")
    out: list[np.ndarray] = []
    for l, d in _units(m):
        out += _keras_unit(m, l, d)
    return out


def _keras_hidden(gk: int, kernel: np.ndarray, rk: np.ndarray, where: str = "") -> int:
    """H of Keras weights: kernel (I, G*H), recurrent_kernel (H, G*H); H is read from the
    square-by-gates recurrent kernel, so that a transposed kernel is the one blamed."""
    hint = " (PyTorch's layout? transpose it)"
    if rk.ndim == 2 and rk.shape[0] > 0 and rk.shape[1] == gk * rk.shape[0]:
        H = rk.shape[0]
        if kernel.ndim != 2 or kernel.shape[1] != gk * H or kernel.shape[0] == 0:
            t = hint if kernel.ndim == 2 and kernel.shape[0] == gk * H else ""
            raise ValueError(f"kernel{where} must have shape (I, {gk}H) with {gk}H = "
                             f"recurrent_kernel{where}.shape[1] = {gk * H}, got "
                             f"{kernel.shape}{t}")
        return H
    if kernel.ndim == 2 and kernel.shape[1] % gk == 0 and kernel.shape[1] > 0:
        H = kernel.shape[1] // gk
        t = hint if rk.shape == (gk * H, H) else ""
        raise ValueError(f"recurrent_kernel{where} must have shape (H, {gk}H) = "
                         f"{(H, gk * H)}, got {rk.shape}{t}")
    raise ValueError(f"recurrent_kernel{where} must have shape (H, {gk}H) and kernel{where} "
                     f"(I, {gk}H), got {rk.shape} and {kernel.shape}")


def _keras_to_torch(cell: str, kernel, rk, bias, reset_after: bool, where: str,
                    want: tuple[int, int] | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """One Keras unit -> (w_ih, w_hh, b_ih, b_hh) in PyTorch layout, with shape checks. want:
    the (I, H) of the unit the weights go into, when known."""
    kernel = to_numpy(f"kernel{where}", kernel)
    rk = to_numpy(f"recurrent_kernel{where}", rk)
    gk = 3 if cell == "gru" else 4
    if want is not None and kernel.shape != (want[0], gk * want[1]):
        raise ValueError(f"kernel{where} must have shape (I, {gk}H) = "
                         f"{(want[0], gk * want[1])}, got {kernel.shape}")
    H = _keras_hidden(gk, kernel, rk, where)
    b_ih = b_hh = None
    if bias is not None:
        bias = to_numpy(f"bias{where}", bias)
    if cell == "gru":
        w_ih, w_hh = permute_gates(kernel.T, GRU_TO_GATES), permute_gates(rk.T, GRU_TO_GATES)
        if bias is not None:
            if reset_after:
                if bias.shape != (2, 3 * H):
                    raise ValueError(
                        f"bias{where} must have shape (2, 3H) = {(2, 3 * H)} for reset_after="
                        f"True, got {bias.shape}" + (" (a (3H,) bias means reset_after=False)"
                                                     if bias.shape == (3 * H,) else ""))
                b_ih = permute_gates(bias[0], GRU_TO_GATES)
                b_hh = permute_gates(bias[1], GRU_TO_GATES)
            else:
                if bias.shape != (3 * H,):
                    raise ValueError(
                        f"bias{where} must have shape (3H,) = {(3 * H,)} for reset_after=False, "
                        f"got {bias.shape}" + (" (a (2, 3H) bias means reset_after=True)"
                                               if bias.shape == (2, 3 * H) else ""))
                b_ih, b_hh = permute_gates(bias, GRU_TO_GATES), np.zeros_like(bias)
    else:
        w_ih, w_hh = kernel.T, rk.T
        if bias is not None:
            if bias.shape != (4 * H,):
                raise ValueError(f"bias{where} must have shape (4H,) = {(4 * H,)}, got "
                                 f"{bias.shape}")
            b_ih, b_hh = bias, np.zeros_like(bias)
    return w_ih, w_hh, b_ih, b_hh


def load_keras_weights(m, weights: list[Any]) -> None:
    """Copy Keras weights (the list to_keras_weights() returns, or keras' get_weights() of the
    same architecture) into m, in place. Everything is checked before anything is written."""
    if getattr(m, "_proj", 0):
        raise NotImplementedError("Keras LSTM has no projection (proj_size); cannot convert")
    if not isinstance(weights, (list, tuple)):
        raise TypeError(f"weights must be a list of arrays, got {type(weights).__name__}")
    per = 3 if m.bias else 2
    units = _units(m)
    if len(weights) != per * len(units):
        raise ValueError(f"weights must hold {per} arrays (kernel, recurrent_kernel"
                         f"{', bias' if m.bias else ''}) per layer and direction = "
                         f"{per * len(units)} arrays, got {len(weights)}")
    sd = {}
    for k, (l, d) in enumerate(units):
        w = weights[per * k:per * (k + 1)]
        where = f" (weights[{per * k}:{per * (k + 1)}], layer {l}, direction {d})"
        n_in = m.input_size if l == 0 else m.hidden_size * (2 if m.bidirectional else 1)
        w_ih, w_hh, b_ih, b_hh = _keras_to_torch(m._cell, w[0], w[1], w[2] if m.bias else None,
                                                 getattr(m, "_reset_after", True), where,
                                                 (n_in, m.hidden_size))
        for role, a in (("w_ih", w_ih), ("w_hh", w_hh), ("b_ih", b_ih), ("b_hh", b_hh)):
            if a is not None:
                sd[_name(m, l, role, d)] = a
    m.load_state_dict(sd)


def _name(m, l: int, role: str, d: int) -> str:
    for name, where in m._store.where.items():
        if where == (l, role, d):
            return name
    raise KeyError((l, role, d))


def from_keras_weights(cls, kernel, recurrent_kernel, bias=None, reset_after: bool = True,
                       dtype: Any = None, **kwargs):
    """A one-layer fastgru module from Keras weights (see load_keras_weights); a layer is
    batch_first=True (Keras data is (B, T, I)) unless kwargs say otherwise."""
    kernel_np = to_numpy("kernel", kernel)
    gk = 3 if cls._cell == "gru" else 4
    H = _keras_hidden(gk, kernel_np, to_numpy("recurrent_kernel", recurrent_kernel))
    cfg = dict(input_size=kernel_np.shape[0], hidden_size=H,
               bias=bias is not None, dtype=_dtype_of([kernel_np], dtype))
    if cls._cell == "gru":
        cfg["reset_after"] = reset_after
    if not cls.__name__.endswith("Cell"):
        cfg["batch_first"] = True  # Keras data is (B, T, I), as from_keras gives
        if bias is not None and not cfg.get("reset_after", False):
            cfg["train_bias_hh"] = False  # Keras' one bias: see RNNBase.train_bias_hh
    clash = sorted(k for k in kwargs if k in ("input_size", "hidden_size"))
    if clash:
        raise ValueError(f"from_keras_weights: {', '.join(clash)} come from the weights; "
                         "do not pass them")
    cfg = _with_kwargs("from_keras_weights", cfg, kwargs, "weights")
    m = cls(**cfg)
    load_keras_weights(m, [kernel, recurrent_kernel] + ([bias] if bias is not None else []))
    return m


# functions equal to Keras' tanh / sigmoid in the frameworks a Keras model may be built with
# (looked up only in modules already imported)
_SAME_ACTIVATION = {"tanh": (("keras.ops", "tanh"), ("jax.numpy", "tanh"), ("numpy", "tanh"),
                             ("tensorflow", "tanh"), ("tensorflow.math", "tanh"),
                             ("torch", "tanh")),
                    "sigmoid": (("keras.ops", "sigmoid"), ("jax.nn", "sigmoid"),
                                ("tensorflow", "sigmoid"), ("tensorflow.math", "sigmoid"),
                                ("tensorflow.nn", "sigmoid"), ("torch", "sigmoid"))}


def _is_keras_activation(fn: Any, expected: str) -> bool:
    """Whether the function object fn is Keras' `expected` activation (or the same function of
    a backend): by identity, not by name (a user function named "tanh" may compute another)."""
    import keras

    if fn is keras.activations.get(expected):
        return True
    for mod, attr in _SAME_ACTIVATION[expected]:
        m = sys.modules.get(mod)
        if m is not None and fn is getattr(m, attr, None):
            return True
    return False


def _check_keras_inner(cls, inner, go_backwards: bool | None, where: str) -> dict:
    """The config of one Keras GRU/LSTM (of a Bidirectional) after checking that fastgru
    computes the same function."""
    want = "GRU" if cls._cell == "gru" else "LSTM"
    cell = inner  # where the activations live: the layer, or the cell of an RNN(cell)
    if type(inner).__name__ == "RNN" and type(getattr(inner, "cell", None)).__name__ == \
            want + "Cell":
        cell = inner.cell  # keras.layers.RNN(GRUCell(...)) computes what GRU(...) does
    elif type(inner).__name__ != want:
        hint = ""
        if isinstance(getattr(inner, "layers", None), list):  # a keras Model / Sequential
            rnn = [type(l).__name__ for l in inner.layers
                   if type(l).__name__ in (want, "Bidirectional")]
            hint = (f"; for the {want} layers of a model pass them: from_keras(["
                    f"layer for layer in model.layers if ...]) (this model has "
                    f"{', '.join(rnn) or f'no {want} layer'})")
        elif type(inner).__name__ == "RNN":
            hint = (f" of {type(getattr(inner, 'cell', None)).__name__} (an RNN of one "
                    f"{want}Cell is accepted; for stacked cells convert a list of "
                    f"{want} layers)")
        raise TypeError(f"keras_layer{where} must be a keras.layers.{want} (or a Bidirectional "
                        f"of one, or an RNN of a {want}Cell), got {type(inner).__name__}{hint}")
    cfg = inner.get_config()
    if cell is not inner:  # the RNN's own options (go_backwards, ...) over its cell's
        cfg = {**cell.get_config(), **{k: v for k, v in cfg.items() if k != "cell"}}
    _check_keras_settings(cell, cfg, want, where, go_backwards)
    drops = {k: cfg.get(k, 0.0) for k in ("dropout", "recurrent_dropout") if cfg.get(k, 0.0)}
    if drops:
        told = ", ".join(f"{k}={v}" for k, v in drops.items())
        warnings.warn(f"Keras {want}{where} has {told}: fastgru has no dropout inside a layer's "
                      f"steps (its dropout= acts between stacked layers, as in PyTorch), so the "
                      f"converted layer computes the same outputs at inference but trains "
                      f"without this dropout", UserWarning, stacklevel=5)
    if cfg.get("stateful", False):
        warnings.warn(f"Keras {want}{where} has stateful=True: fastgru layers keep no state "
                      f"between calls and its current states are not copied; pass h_n (and "
                      f"c_n) back as the next call's initial state", UserWarning, stacklevel=5)
    compute, variable = (getattr(inner, "compute_dtype", None),
                         getattr(inner, "variable_dtype", None))
    if compute is not None and variable is not None and compute != variable:
        warnings.warn(f"Keras {want}{where} computes in {compute} (a mixed-precision policy); "
                      f"fastgru computes in the weights' {variable}, so outputs agree to "
                      f"{compute} rounding only", UserWarning, stacklevel=5)
    return cfg


def _check_keras_settings(cell: Any, cfg: dict, want: str, where: str = "",
                          go_backwards: bool | None = None) -> None:
    """Refuse Keras settings fastgru does not compute: activations other than Keras' tanh and
    sigmoid (read from `cell`, the layer or its cell) and, unless None, another go_backwards."""
    checks: tuple = (("activation", "tanh"), ("recurrent_activation", "sigmoid"))
    if go_backwards is not None:  # None: either (a standalone layer maps it to reverse=True)
        checks += (("go_backwards", go_backwards),)
    for key, expected in checks:
        fn = getattr(cell, key, None) if key.endswith("activation") else None
        if (cfg.get(key, expected) != expected if fn is None
                else not _is_keras_activation(fn, expected)):
            got = repr(cfg.get(key))
            got = got if len(got) <= 80 else got[:77] + "..."  # a lambda serialises as bytecode
            if cfg.get(key) == expected:  # the name only: another function called so
                got = (f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', fn)} "
                       f"(a function named {expected!r} that is not Keras' {expected})")
            raise ValueError(f"Keras {want}{where} with {key}={got} is not supported "
                             f"(fastgru computes {key}={expected!r})")


def _keras_one(cls, keras_layer: Any, where: str = "") -> tuple[dict, bool, list]:
    """(inner config, bidirectional, weights) of one Keras GRU/LSTM or Bidirectional layer,
    after checking that fastgru computes the same function."""
    inner, bidirectional = keras_layer, False
    if hasattr(keras_layer, "forward_layer") and hasattr(keras_layer, "backward_layer"):
        if keras_layer.merge_mode != "concat":
            raise ValueError(
                f"keras_layer{where}: only Bidirectional(merge_mode='concat') maps to "
                f"bidirectional=True, got merge_mode={keras_layer.merge_mode!r}. Convert the "
                f"same layer with merge_mode='concat' (the weights are the same) and merge "
                f"fastgru's y yourself: y[..., :H] + y[..., H:] for 'sum', their mean for "
                f"'ave', their product for 'mul', the two halves for None")
        inner, bidirectional = keras_layer.forward_layer, True
    cfg = _check_keras_inner(cls, inner, False if bidirectional else None,
                             where + (" (forward layer)" if bidirectional else ""))
    if bidirectional:  # a custom backward_layer must compute the same kind of cell
        bcfg = _check_keras_inner(cls, keras_layer.backward_layer, True,
                                  where + " (backward layer)")
        for key, default in (("units", None), ("use_bias", True), ("reset_after", True)):
            if key == "reset_after" and cls._cell != "gru":
                continue
            if bcfg.get(key, default) != cfg.get(key, default):
                raise ValueError(f"the Bidirectional's backward layer{where} has {key}="
                                 f"{bcfg.get(key, default)!r} but its forward layer has "
                                 f"{key}={cfg.get(key, default)!r}: fastgru needs both the same")
    weights = keras_layer.get_weights()
    if not weights:
        raise ValueError(f"keras_layer{where} has no weights yet: build it first (call it on "
                         f"data, or keras_layer.build(input_shape))")
    return cfg, bidirectional, list(weights)


def from_keras_cell(cls, keras_cell: Any, dtype: Any = None, **kwargs):
    """A fastgru cell equal to a built keras.layers.GRUCell / LSTMCell (Keras' tanh and
    sigmoid activations; dropout is not carried over, with a warning)."""
    want = "GRUCell" if cls._cell == "gru" else "LSTMCell"
    if type(keras_cell).__name__ != want:
        raise TypeError(f"keras_cell must be a keras.layers.{want}, got "
                        f"{type(keras_cell).__name__}")
    cfg = keras_cell.get_config()
    _check_keras_settings(keras_cell, cfg, want)
    if cfg.get("dropout", 0.0) or cfg.get("recurrent_dropout", 0.0):
        warnings.warn(f"Keras {want} has dropout: fastgru's cells have none, so the converted "
                      f"cell computes the same outputs at inference only", UserWarning,
                      stacklevel=3)
    weights = list(keras_cell.get_weights())
    if not weights:
        raise ValueError("keras_cell has no weights yet: build it first "
                         "(keras_cell.build((None, input_size)))")
    extra = {"reset_after": bool(cfg.get("reset_after", True))} if cls._cell == "gru" else {}
    return from_keras_weights(cls, weights[0], weights[1],
                              weights[2] if len(weights) > 2 else None, dtype=dtype,
                              **extra, **kwargs)


def from_keras(cls, keras_layer: Any, dtype: Any = None, **kwargs):
    """A fastgru layer equivalent to a Keras GRU/LSTM layer or a Bidirectional(GRU/LSTM)
    (merge_mode="concat"), with batch_first=True (Keras is batch-major) unless given. A
    go_backwards=True layer gives reverse=True: the same final state, and the same outputs
    with fastgru's y at their own time steps (Keras returns them reversed in time). For a
    Keras mask, call the layer with mask= (Keras masking semantics, any padding or gaps).

    A list or tuple of such layers (a Keras stack: each feeding the next, return_sequences
    on all but the last) gives one fastgru layer with num_layers = len(list); the layers must
    agree in type, units, use_bias, reset_after and bidirectional, and go_backwards is refused
    there (Keras feeds the next layer the reversed sequence)."""
    stack = isinstance(keras_layer, (list, tuple))
    layers = list(keras_layer) if stack else [keras_layer]
    if not layers:
        raise ValueError("keras_layer is an empty list: give a Keras GRU/LSTM layer or a list "
                         "of them")
    parts = [_keras_one(cls, kl, f"[{k}]" if stack else "") for k, kl in enumerate(layers)]
    cfg, bidirectional, weights = parts[0]
    for k, (ck, bk, wk) in enumerate(parts[1:], start=1):
        for key, a, b in (("bidirectional", bk, bidirectional),
                          ("units", ck["units"], cfg["units"]),
                          ("use_bias", ck.get("use_bias", True), cfg.get("use_bias", True)),
                          ("reset_after", ck.get("reset_after", True),
                           cfg.get("reset_after", True))):
            if a != b:
                raise ValueError(f"keras_layer[{k}] has {key}={a!r} but keras_layer[0] has "
                                 f"{key}={b!r}: one fastgru layer needs the same in every "
                                 f"layer of the stack (convert them one by one instead)")
        weights = weights + wk
    if stack and len(layers) > 1 and any(p[0].get("go_backwards", False) for p in parts):
        raise ValueError("a Keras stack with go_backwards=True layers does not map to one "
                         "fastgru layer (Keras feeds the next layer the time-reversed "
                         "sequence): convert the layers one by one")
    new = dict(input_size=int(np.shape(weights[0])[0]), hidden_size=int(cfg["units"]),
               num_layers=len(layers), bias=bool(cfg.get("use_bias", True)),
               bidirectional=bidirectional, batch_first=True,
               dtype=_dtype_of([np.asarray(weights[0])], dtype))
    if not bidirectional and cfg.get("go_backwards", False):
        new["reverse"] = True
    # Bidirectional gives zeros at masked steps whatever its inner layers say
    if not bidirectional and parts[-1][0].get("zero_output_for_mask", False):
        new["zero_output_for_mask"] = True
    if cls._cell == "gru":
        new["reset_after"] = bool(cfg.get("reset_after", True))
    if new["bias"] and not new.get("reset_after", False):  # Keras' one bias: see train_bias_hh
        new["train_bias_hh"] = False
    new = _with_kwargs("from_keras", new, kwargs, "Keras layer")
    m = cls(**new)
    load_keras_weights(m, weights)
    return m


# to_keras kwargs that would make the Keras layer compute another function than the fastgru
# layer (its weights' shapes, its cell, its direction or its masked outputs)
_KERAS_DEFINING = ("units", "activation", "recurrent_activation", "use_bias", "reset_after",
                   "go_backwards", "zero_output_for_mask", "time_major")


def to_keras(m, **kwargs) -> Any:
    """Built Keras layers computing the same function as m, with m's weights: a keras.layers.GRU
    or LSTM (Bidirectional(..., merge_mode="concat") when bidirectional, go_backwards=True for a
    reverse=True layer) for one layer, a list of them (a Keras stack, each feeding the next)
    for num_layers > 1 (not for reverse=True: NotImplementedError). Each has
    return_sequences=True; kwargs go to the GRU/LSTM constructors (e.g. return_state=True).
    In a stack, the options that shape the stack's output (return_sequences, return_state)
    go to its last layer only, and a name becomes name_0, name_1, ... (Keras needs unique
    names). Dropout between layers is not part of the list (Keras puts it in Dropout layers);
    Keras data is batch-major (B, T, I)."""
    if getattr(m, "_proj", 0):
        raise NotImplementedError("Keras LSTM has no projection (proj_size); cannot convert")
    bad = sorted(k for k in kwargs if k in _KERAS_DEFINING)
    if bad:
        raise ValueError(f"to_keras: {', '.join(bad)} would make the Keras layer compute "
                         f"another function than this layer (they come from the layer: "
                         f"hidden_size, bias, reset_after, reverse, zero_output_for_mask); "
                         f"give only arguments such as return_state, return_sequences, name")
    try:
        import keras
    except ImportError:
        raise ImportError("to_keras needs Keras 3: pip install keras (and a backend)") from None
    if getattr(m, "reverse", False) and m.num_layers > 1:
        raise NotImplementedError(
            "to_keras: a multi-layer reverse=True layer has no Keras stack counterpart (a "
            "go_backwards layer hands the next one its outputs in reversed time order); "
            "convert a one-layer reverse layer, or use bidirectional")
    D = 2 if m.bidirectional else 1
    per = (3 if m.bias else 2) * D
    weights = to_keras_weights(m)
    out = []
    for l in range(m.num_layers):
        cfg: dict[str, Any] = dict(units=m.hidden_size, use_bias=m.bias, return_sequences=True,
                                   dtype=np.dtype(m.dtype).name)
        if m._cell == "gru":
            cfg["reset_after"] = bool(m._reset_after)
        if getattr(m, "reverse", False):
            cfg["go_backwards"] = True
        if getattr(m, "zero_output_for_mask", False) and not m.bidirectional:
            cfg["zero_output_for_mask"] = True
        kw = dict(kwargs)
        if l < m.num_layers - 1:  # inner layers of a stack feed the next one its sequence
            kw.pop("return_sequences", None)
            kw.pop("return_state", None)
        if m.num_layers > 1 and kw.get("name") is not None:
            kw["name"] = f"{kw['name']}_{l}"
        cfg.update(kw)
        layer = (keras.layers.GRU if m._cell == "gru" else keras.layers.LSTM)(**cfg)
        if m.bidirectional:
            layer = keras.layers.Bidirectional(layer, merge_mode="concat")
        layer.build((None, None, m.input_size if l == 0 else D * m.hidden_size))
        layer.set_weights(weights[per * l:per * (l + 1)])
        out.append(layer)
    held = np.asarray(out[0].get_weights()[0]).dtype
    if held != m.dtype:
        warnings.warn(f"to_keras: the Keras backend holds the {np.dtype(m.dtype).name} weights "
                      f"as {held.name} (JAX needs JAX_ENABLE_X64=1 for float64), so the Keras "
                      f"layer computes in {held.name}", RuntimeWarning, stacklevel=3)
    return out[0] if m.num_layers == 1 else out


# ---------------------------------------------------------------------------------------------
# ONNX


def to_onnx(m, layer: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """ONNX GRU/LSTM inputs (W, R, B) of one layer: W [D, G, I], R [D, G, H], B [D, 2G]
    (None without bias). GRU gates z, r, h with linear_before_reset = int(reset_after); LSTM
    gates i, o, f, c. Directions stacked on the first axis (forward, reverse)."""
    if getattr(m, "_proj", 0):
        raise NotImplementedError("ONNX LSTM has no projection (proj_size); cannot convert")
    L = getattr(m, "_L", 1)
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 0 <= layer < L:
        raise ValueError(f"layer must be an int in [0, num_layers) = [0, {L}), got {layer!r}")
    blk = m._store.blocks[layer]
    order = GRU_TO_GATES if m._cell == "gru" else LSTM_TO_ONNX
    W = permute_gates(blk["w_ih"], order, axis=1)  # (D, G, I): gates on axis 1
    R = permute_gates(blk["w_hh"], order, axis=1)
    B = None
    if m.bias:
        B = np.concatenate([permute_gates(blk["b_ih"], order, 1),
                            permute_gates(blk["b_hh"], order, 1)], axis=1)
    return W, R, B


def _check_onnx(cls, W, R, B, direction: str, where: str = ""):
    """(W, R, B, D, H, I) after checking ONNX GRU/LSTM inputs against `direction`."""
    if not isinstance(direction, str) or direction not in DIRECTIONS:
        raise ValueError(f"{where}direction must be 'forward', 'reverse' or 'bidirectional', "
                         f"got {direction!r}")
    D = DIRECTIONS[direction]
    gk = 3 if cls._cell == "gru" else 4
    W, R = to_numpy("W", W), to_numpy("R", R)
    if W.ndim != 3 or W.shape[0] != D or W.shape[1] % gk or W.shape[1] == 0:
        raise ValueError(f"{where}W must have shape [D, {gk}H, I] with D = {D} for direction="
                         f"{direction!r}, got {W.shape}")
    for name, a in (("W", W), ("R", R)):
        if a.dtype.kind != "f":
            raise TypeError(f"{where}{name} must be a float array, got dtype {a.dtype}")
    H, I = W.shape[1] // gk, W.shape[2]
    if R.shape != (D, gk * H, H):
        raise ValueError(f"{where}R must have shape [D, {gk}H, H] = {[D, gk * H, H]}, got "
                         f"{list(R.shape)}")
    if B is not None:
        B = to_numpy("B", B)
        if B.dtype.kind != "f":
            raise TypeError(f"{where}B must be a float array, got dtype {B.dtype}")
        if B.shape != (D, 2 * gk * H):
            raise ValueError(f"{where}B must have shape [D, {2 * gk}H] = {[D, 2 * gk * H]}, got "
                             f"{list(B.shape)}")
    return W, R, B, D, H, I


def _check_lbr(linear_before_reset) -> bool:
    if linear_before_reset not in (0, 1) or isinstance(linear_before_reset, float):
        raise ValueError(f"linear_before_reset must be 0 or 1, got {linear_before_reset!r}")
    return bool(linear_before_reset)


def _onnx_order(cls) -> tuple[int, ...]:
    return GRU_TO_GATES if cls._cell == "gru" else LSTM_FROM_ONNX


def from_onnx(cls, W, R, B=None, linear_before_reset: int | None = None,
              direction: str = "forward", dtype: Any = None, P=None, **kwargs):
    """A one-layer fastgru module from ONNX GRU/LSTM inputs (see to_onnx). ONNX B=None means
    zero biases (gives bias=False). direction "forward", "bidirectional" or "reverse" (gives
    reverse=True)."""
    cell = cls.__name__.endswith("Cell")
    if cell and (not isinstance(direction, str) or direction != "forward"):
        raise ValueError(f"direction must be 'forward' for a cell (one step, one direction), "
                         f"got {direction!r}")
    W, R, B, D, H, I = _check_onnx(cls, W, R, B, direction)
    cfg = dict(input_size=I, hidden_size=H, bias=B is not None, dtype=_dtype_of([W], dtype))
    if not cell:
        cfg["bidirectional"] = D == 2
    if direction == "reverse":
        cfg["reverse"] = True
    if cls._cell == "gru":
        if linear_before_reset is None and "reset_after" not in kwargs:
            warnings.warn("from_onnx: linear_before_reset not given, so ONNX's default 0 "
                          "(reset_after=False) is used; the weights cannot tell. GRUs from "
                          "PyTorch, from Keras' reset_after=True and from to_onnx() of a "
                          "default fastgru.GRU need linear_before_reset=1: pass it explicitly",
                          UserWarning, stacklevel=3)
        if "reset_after" in kwargs:
            ra = kwargs.pop("reset_after")
            if linear_before_reset is not None and bool(ra) != _check_lbr(linear_before_reset):
                raise ValueError(f"from_onnx: reset_after={ra!r} contradicts "
                                 f"linear_before_reset={linear_before_reset!r}; give one of them")
            linear_before_reset = 1 if ra else 0
        cfg["reset_after"] = _check_lbr(0 if linear_before_reset is None
                                        else linear_before_reset)
    if cls._cell != "gru" and linear_before_reset is not None:
        raise TypeError("from_onnx: linear_before_reset is an ONNX GRU attribute; an LSTM has "
                        "none")
    if cls._cell == "gru" and P is not None:
        raise TypeError("from_onnx: P (peepholes) is an ONNX LSTM input; a GRU has none")
    if P is not None:
        P = to_numpy("P", P)
        if P.shape != (D, 3 * H):
            raise ValueError(f"P must have shape (num_directions, 3*hidden_size) = "
                             f"{(D, 3 * H)}, got {P.shape}")
        if np.any(P):
            raise NotImplementedError("ONNX LSTM peepholes (input P) have no fastgru/PyTorch "
                                      "counterpart")
    clash = sorted(k for k in kwargs if k in ("input_size", "hidden_size"))
    if clash:
        raise ValueError(f"from_onnx: {', '.join(clash)} come from W, R, B and direction; "
                         "do not pass them")
    cfg = _with_kwargs("from_onnx", cfg, kwargs, "ONNX weights and direction")
    m = cls(**cfg)
    m.load_state_dict(_onnx_state(m, 0, W, R, B, _onnx_order(cls)))
    return m


def _onnx_state(m, l: int, W, R, B, order) -> dict[str, np.ndarray]:
    """Layer l's parameters (PyTorch names) from ONNX W, R, B (None: zeros when m has biases)."""
    sd = {}
    G = W.shape[1]
    for d in range(W.shape[0]):
        sd[_name(m, l, "w_ih", d)] = permute_gates(W[d], order)
        sd[_name(m, l, "w_hh", d)] = permute_gates(R[d], order)
        if m.bias:
            b = np.zeros(2 * G, W.dtype) if B is None else B[d]
            sd[_name(m, l, "b_ih", d)] = permute_gates(b[:G], order)
            sd[_name(m, l, "b_hh", d)] = permute_gates(b[G:], order)
    return sd


_ONNX_ACTIVATIONS = {"gru": ["sigmoid", "tanh"], "lstm": ["sigmoid", "tanh", "tanh"]}
_ONNX_COMMON = {"activation_alpha", "activation_beta", "activations", "clip", "direction",
                "hidden_size", "layout"}
_ONNX_ATTRIBUTES = {"GRU": _ONNX_COMMON | {"linear_before_reset"},
                    "LSTM": _ONNX_COMMON | {"input_forget"}}


def _onnx_text(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, list):
        return [_onnx_text(u) for u in v]
    return v


# ops that take part of a state input (with layout ops) on its way to one node
_ONNX_SLICE_OPS = frozenset({"Slice", "Gather", "Split", "Squeeze", "Unsqueeze", "Reshape",
                             "Identity", "Transpose"})

# ops that only move or reshape values (or do nothing at inference) between stacked RNN nodes,
# as torch.onnx.export and export_onnx write them (Squeeze; Transpose + Reshape)
_ONNX_LAYOUT_OPS = frozenset({"Squeeze", "Unsqueeze", "Transpose", "Reshape", "Identity",
                              "Flatten", "Dropout"})


def _check_onnx_chain(prev: Any, node: Any, made_by: dict, op: str, consts: dict,
                      layout: int, D: int, H: int, tb: tuple[int, int] | None = None) -> None:
    """node must read prev's output Y through layout ops only: then the two are consecutive
    layers of one stack (anything else between them, or another source, is not a fastgru
    layer's computation)."""
    y = prev.output[0] if prev.output else ""
    name, path, chain = node.input[0], list[str](), list[Any]()
    while name != y:
        src = made_by.get(name)
        if src is None or src.op_type not in _ONNX_LAYOUT_OPS:
            what = "a graph input or constant" if src is None else f"a {src.op_type} node"
            raise ValueError(
                f"{op} node {node.name!r} does not read the output Y of the {op} node before it "
                f"({prev.name!r}) through layout ops only: its input comes from {what}"
                + (f" (after {' <- '.join(path)})" if path else "") + ". Only a plain stack of "
                f"{op} nodes maps to one fastgru layer: import the nodes one by one with "
                f"from_onnx(W, R, B, ...) and apply the ops between them yourself")
        path.append(src.op_type)
        chain.append(src)
        name = src.input[0]
    if chain and not _chain_stacks(chain[::-1], consts, layout, D, H, tb):
        raise ValueError(
            f"the ops between {op} nodes {prev.name!r} and {node.name!r} "
            f"({' -> '.join(path[::-1])}) do not turn Y into the next layer's input as a stack "
            f"does (Y [T, D, B, H] -> [T, B, D*H], the directions side by side): import the "
            f"nodes one by one with from_onnx(W, R, B, ...) and apply those ops yourself")


# most elements of the Y that _chain_stacks replays (a Reshape to a fixed [T, B, ...] needs
# the model's own T and B)
_CHAIN_MAX_ELEMENTS = 1 << 24


def _chain_stacks(chain: list, consts: dict, layout: int, D: int, H: int,
                  tb: tuple[int, int] | None = None) -> bool:
    """Whether the layout ops `chain` (in graph order) map a Y of distinct values to the stack's
    next input, by running them on a small Y in NumPy. A Reshape to a shape computed in the
    graph (as exporters write [T, B, -1]) is taken, when it is the last op, to keep the first
    axis and give D*H features: the next node needs a 3-D input of that width, and a shape
    that moves the first axis would not be a stack. Other computed shapes or axes: False.
    A Reshape to a fixed shape (an exporter's static T and B) is replayed at the T and B its
    first two entries give in the node's layout ([T, B, .] for layout 0, [B, T, .] for 1).
    tb: the model's own (T, B) when its input declares them: then only those count (a fixed
    Reshape to [B, T, .] of a [T, B, .] input reorders the data, it is no stack)."""
    if tb is not None and tb[0] * tb[1] * D * H <= _CHAIN_MAX_ELEMENTS:
        return _chain_stacks_at(chain, consts, layout, D, H, *tb)
    sizes = [(2, 3)]
    for n in chain:
        shape = consts.get(n.input[1]) if n.op_type == "Reshape" and len(n.input) > 1 else None
        if shape is not None and np.size(shape) >= 2:
            u, v = (int(w) for w in np.ravel(shape)[:2])
            if u > 0 and v > 0 and u * v * D * H <= _CHAIN_MAX_ELEMENTS:
                sizes.append((u, v) if layout == 0 else (v, u))
    for T, B in sizes:
        if _chain_stacks_at(chain, consts, layout, D, H, T, B):
            if (T, B) != sizes[0]:
                warnings.warn(f"a Reshape between stacked nodes fixes the shape to T = {T}, "
                              f"B = {B} (the model's input does not declare its shape): the "
                              f"model is a stack at that T and B, which the fastgru layer "
                              f"computes; at other T and B the ONNX model reorders (or "
                              f"refuses) its data", UserWarning, stacklevel=5)
            return True
    return False


def _transpose_perm(node: Any) -> list[int] | None:
    """The perm of a Transpose node (None for anything else, or a Transpose without one)."""
    if node is None or node.op_type != "Transpose":
        return None
    from onnx import helper

    perms = [list(helper.get_attribute_value(x)) for x in node.attribute if x.name == "perm"]
    return perms[0] if perms else None


def _declared_tb(graph: Any, made_by: dict, name: str, layout: int) -> tuple[int, int] | None:
    """(T, B) of the first node's input when the graph declares them (a static shape on a
    graph input or value_info, or on the graph input that a (1, 0, 2) Transpose feeds in)."""

    shapes = {}
    for v in list(graph.input) + list(graph.value_info):
        dims = v.type.tensor_type.shape.dim if v.type.HasField("tensor_type") else []
        if len(dims) == 3 and all(d.HasField("dim_value") and d.dim_value > 0 for d in dims):
            shapes[v.name] = tuple(int(d.dim_value) for d in dims)
    swap = layout == 1
    if name not in shapes:
        src = made_by.get(name)
        if src is None or _transpose_perm(src) != [1, 0, 2] or src.input[0] not in shapes:
            return None
        name, swap = src.input[0], not swap
    d0, d1, _ = shapes[name]
    return (d1, d0) if swap else (d0, d1)


def _chain_stacks_at(chain: list, consts: dict, layout: int, D: int, H: int, T: int,
                     B: int) -> bool:
    from onnx import helper

    y = np.arange(T * D * B * H).reshape(T, D, B, H)
    want = y.transpose(0, 2, 1, 3).reshape(T, B, D * H)
    if layout == 1:  # Y [B, T, D, H], X [B, T, I]
        y = y.transpose(2, 0, 1, 3)
        want = want.transpose(1, 0, 2)
    a: np.ndarray = y
    for n in chain:
        at = {x.name: helper.get_attribute_value(x) for x in n.attribute}

        def arg(k: int, n=n):
            name = n.input[k] if len(n.input) > k else ""
            return None if not name else consts.get(name, "computed")

        try:
            if n.op_type == "Transpose":
                perm = at.get("perm")
                a = a.transpose(list(perm)) if perm is not None else a.T
            elif n.op_type == "Reshape":
                shape = arg(1)
                if shape is None or (isinstance(shape, str) and n is not chain[-1]):
                    return False
                shape = ([a.shape[0], -1, D * H] if isinstance(shape, str)
                         else [int(v) for v in np.asarray(shape).ravel()])
                if not at.get("allowzero", 0):
                    shape = [a.shape[i] if v == 0 else v for i, v in enumerate(shape)]
                a = a.reshape(shape)
            elif n.op_type in ("Squeeze", "Unsqueeze"):
                axes = at.get("axes", arg(1))
                if isinstance(axes, str):
                    return False
                if n.op_type == "Squeeze":
                    a = (np.squeeze(a) if axes is None
                         else np.squeeze(a, axis=tuple(int(v) for v in np.ravel(axes))))
                else:
                    a = np.expand_dims(a, tuple(int(v) for v in np.ravel(axes)))
            elif n.op_type == "Flatten":
                ax = int(at.get("axis", 1)) % max(a.ndim, 1)
                a = a.reshape(int(np.prod(a.shape[:ax])), -1)
        except (ValueError, TypeError, IndexError):  # numpy AxisError is both
            return False
    return a.shape == want.shape and bool(np.array_equal(a, want))


def _from_graph_input(name: str, made_by: dict, inputs: set, consts: dict) -> bool:
    """Whether name is a graph input, or a slice of one (per-layer Slice/Gather/Split of the
    (L*D, B, H) state, as torch.onnx.export and export_onnx write it): the caller's h0 then."""
    for _ in range(16):
        if name in inputs and name not in consts:
            return True
        src = made_by.get(name)
        if src is None or src.op_type not in _ONNX_SLICE_OPS:
            return False
        name = src.input[0]
    return False


# ops whose output is all zeros when their first input is (torch.onnx.export builds the zero
# state of a call without h0 as Expand / ConstantOfShape, sliced per layer)
_ONNX_ZERO_KEEPING_OPS = _ONNX_SLICE_OPS | {"Expand", "Tile", "Cast"}


def _zeros_in_graph(name: str, made_by: dict, consts: dict, depth: int = 16) -> bool:
    """Whether name is provably all zeros: a zero constant, ConstantOfShape of 0 (its
    default), or such a value expanded, tiled, cast, sliced, reshaped or concatenated."""
    if name in consts:
        return not np.any(consts[name])
    src = made_by.get(name)
    if src is None or depth <= 0:
        return False
    if src.op_type == "ConstantOfShape":
        from onnx import numpy_helper

        value = [a.t for a in src.attribute if a.name == "value"]
        return not value or not np.any(numpy_helper.to_array(value[0]))
    if src.op_type == "Concat":
        return all(_zeros_in_graph(i, made_by, consts, depth - 1) for i in src.input)
    return (src.op_type in _ONNX_ZERO_KEEPING_OPS and len(src.input) > 0
            and _zeros_in_graph(src.input[0], made_by, consts, depth - 1))


def _warn_onnx_state_constants(n: Any, consts: dict, inputs: set, where: str,
                               made_by: dict) -> None:
    """A sequence_lens / initial_h / initial_c that the graph supplies (a constant, or computed:
    a learned initial state expanded to the batch) is not part of a fastgru layer (they are
    per-call arguments): say so instead of dropping it silently. All-zero initial states
    (constant, or built in the graph as torch.onnx.export does for a call without h0) are what
    a call without them uses; graph inputs are the caller's anyway."""
    for k, what, arg in ((4, "sequence_lens", "lengths"), (5, "initial_h", "h0"),
                         (6, "initial_c", "c0")):
        name = n.input[k] if len(n.input) > k else ""
        if not name or _from_graph_input(name, made_by, inputs, consts):
            continue
        if k > 4 and _zeros_in_graph(name, made_by, consts):
            continue
        if name not in consts:
            eg = ", e.g. a learned initial state expanded to the batch" if k > 4 else ""
            warnings.warn(f"{where}input {what} is computed in the graph ({name!r}{eg}); a "
                          f"fastgru layer takes it per call: compute it and pass it as "
                          f"{arg}=... (layer(x, {arg}=...)) to get the model's outputs",
                          UserWarning, stacklevel=4)
            continue
        v = consts[name]
        warnings.warn(f"{where}input {what} is a constant of the graph (shape {list(v.shape)}); "
                      f"a fastgru layer takes it per call: pass it as {arg}=... (layer(x, "
                      f"{arg}=...)) to get the model's outputs", UserWarning, stacklevel=4)


def from_onnx_model(cls, model: Any, dtype: Any = None, **kwargs):
    """A fastgru layer from the GRU (or LSTM) nodes of an ONNX model: a path, bytes or an
    onnx.ModelProto (needs the `onnx` package). The nodes, in graph order, become the layers
    (each one's input size must be the previous one's D*H, as in fastgru's export_onnx and
    torch.onnx.export of a multi-layer nn.GRU/nn.LSTM). W, R, B (and P) must be initializers
    or Constant outputs. Read from the nodes: direction, hidden_size, linear_before_reset and
    layout (batch_first=True for layout=1, or for an input transposed (1, 0, 2) straight into
    the first node, as export_onnx and torch write batch_first layers: the layer takes what the
    Transpose takes); direction="reverse" gives
    reverse=True. Attributes with no fastgru counterpart (clip, non-default activations,
    input_forget=1, non-zero peepholes P) raise NotImplementedError. kwargs: extra
    constructor arguments."""
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("from_onnx_model needs the onnx package: pip install onnx") from None
    if not isinstance(model, (bytes, bytearray, str, os.PathLike, onnx.ModelProto)):
        raise TypeError(f"model must be a path, bytes or an onnx.ModelProto, got "
                        f"{type(model).__name__}")
    if not isinstance(model, onnx.ModelProto):
        try:
            model = (onnx.load_from_string(bytes(model)) if isinstance(model, (bytes, bytearray))
                     else onnx.load(os.fspath(model)))
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            raise
        except Exception as exc:  # protobuf's DecodeError and friends: not an ONNX model
            what = "the bytes" if isinstance(model, (bytes, bytearray)) else repr(os.fspath(model))
            raise ValueError(f"cannot read an ONNX model from {what} ({type(exc).__name__}: "
                             f"{exc})") from None
    op = "GRU" if cls._cell == "gru" else "LSTM"
    graph = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    graph_inputs = {v.name for v in graph.input}
    if not graph.node:
        raise ValueError("the ONNX model has an empty graph (no nodes): is it an ONNX model?")
    nodes = [n for n in graph.node if n.op_type == op]
    if not nodes:
        raise ValueError(f"the ONNX model has no {op} node (it has "
                         f"{sorted({n.op_type for n in graph.node})})")
    made_by = {o: n for n in graph.node for o in n.output}
    layers = []
    for n in nodes:
        where = f"{op} node {n.name!r}: "

        def const(k: int, what: str, n=n, where=where):
            name = n.input[k] if len(n.input) > k else ""
            if not name:
                return None
            if name not in consts and name in graph_inputs:
                raise ValueError(f"{where}input {what} ({name!r}) is an input of the graph, "
                                 "not a constant: fastgru needs the weights in the model "
                                 "(as initializers; export with the parameters included)")
            if name not in consts:
                raise ValueError(f"{where}input {what} ({name!r}) is computed in the graph, "
                                 "not a constant (export with constant folding)")
            return consts[name]

        a = {x.name: _onnx_text(helper.get_attribute_value(x)) for x in n.attribute}
        unknown = sorted(set(a) - _ONNX_ATTRIBUTES[op])
        if unknown:  # onnx.checker and ONNX Runtime refuse the model too
            raise ValueError(f"{where}attribute{'s' * (len(unknown) > 1)} {', '.join(unknown)} "
                             f"{'are' if len(unknown) > 1 else 'is'} not in the ONNX {op} "
                             f"operator (it has {', '.join(sorted(_ONNX_ATTRIBUTES[op]))})")
        direction = a.get("direction", "forward")
        if "clip" in a:
            raise NotImplementedError(f"{where}clip={a['clip']} has no fastgru/PyTorch "
                                      "counterpart")
        acts = [str(v).lower() for v in a.get("activations", [])]
        want = _ONNX_ACTIVATIONS[cls._cell] * DIRECTIONS.get(direction, 1)
        if acts and len(acts) != len(want):  # an invalid model: ONNX Runtime refuses it too
            raise ValueError(f"{where}activations lists {len(acts)} functions; the ONNX {op} "
                             f"operator needs {len(_ONNX_ACTIVATIONS[cls._cell])} per "
                             f"direction, {len(want)} for direction={direction!r}")
        if acts and acts != want:
            raise NotImplementedError(f"{where}activations {a['activations']} (fastgru "
                                      f"computes {want})")
        if a.get("input_forget", 0):
            raise NotImplementedError(f"{where}input_forget=1 has no fastgru/PyTorch "
                                      "counterpart")
        P = const(7, "P") if op == "LSTM" else None
        if P is not None and np.any(P):
            raise NotImplementedError(f"{where}peepholes (input P) have no fastgru/PyTorch "
                                      "counterpart")
        W, R, B, D, H, I = _check_onnx(cls, const(1, "W"), const(2, "R"), const(3, "B"),
                                       direction, where)
        if P is not None and P.shape != (D, 3 * H):
            raise ValueError(f"{where}P must have shape [num_directions, 3*hidden_size] = "
                             f"{[D, 3 * H]}, got {list(P.shape)}")
        if "hidden_size" in a and a["hidden_size"] != H:
            raise ValueError(f"{where}hidden_size={a['hidden_size']} but W has shape "
                             f"{list(W.shape)}")
        layout = a.get("layout", 0)
        if layout not in (0, 1):
            raise ValueError(f"{where}layout must be 0 or 1, got {layout!r}")
        lbr = _check_lbr(a.get("linear_before_reset", 0)) if op == "GRU" else None
        _warn_onnx_state_constants(n, consts, graph_inputs, where, made_by)
        layers.append(dict(where=where, W=W, R=R, B=B, D=D, H=H, I=I, lbr=lbr, layout=layout,
                           direction=direction))
    tb = _declared_tb(graph, made_by, nodes[0].input[0], layers[0]["layout"])
    for (prev, node), ly in zip(zip(nodes, nodes[1:], strict=False), layers, strict=False):
        _check_onnx_chain(prev, node, made_by, op, consts, ly["layout"], ly["D"], ly["H"], tb)
    first = layers[0]
    for prev, ly in zip(layers, layers[1:], strict=False):
        for key in ("direction", "H", "lbr", "layout"):
            if ly[key] != first[key]:
                raise ValueError(f"{ly['where']}its {key} differs from the first {op} node's: "
                                 f"the {op} nodes must be the layers of one stack")
        if ly["I"] != prev["D"] * prev["H"]:
            raise ValueError(f"{ly['where']}input size {ly['I']} is not the previous node's "
                             f"D*H = {prev['D'] * prev['H']}")
    # batch_first: layout=1, or (as export_onnx and torch write it) the input transposed from
    # (B, T, I) to (T, B, I) right before the first node: the layer then takes what the
    # Transpose takes (a graph input, or another op's batch-major output)
    perm = _transpose_perm(made_by.get(nodes[0].input[0]))
    if first["layout"] == 1 and perm == [1, 0, 2]:
        raise NotImplementedError(
            f"{first['where']}layout=1 reads a (1, 0, 2) Transpose of the graph's input: the "
            f"two cancel, so the model takes time-major input but gives batch-major outputs; "
            f"a fastgru layer has one layout for both (batch_first): import the node with "
            f"from_onnx(W, R, B, ...) and transpose yourself")
    batch_first = first["layout"] == 1 or perm == [1, 0, 2]
    cfg = dict(input_size=first["I"], hidden_size=first["H"], num_layers=len(layers),
               bidirectional=first["D"] == 2, batch_first=batch_first,
               bias=any(ly["B"] is not None for ly in layers),
               dtype=_dtype_of([first["W"]], dtype))
    if first["direction"] == "reverse":
        cfg["reverse"] = True
    if op == "GRU":
        cfg["reset_after"] = first["lbr"]
    cfg = _with_kwargs("from_onnx_model", cfg, kwargs, f"ONNX model's {op} nodes")
    m = cls(**cfg)
    sd: dict[str, np.ndarray] = {}
    for l, ly in enumerate(layers):
        sd.update(_onnx_state(m, l, ly["W"], ly["R"], ly["B"], _onnx_order(cls)))
    m.load_state_dict(sd)
    return m


# ---------------------------------------------------------------------------------------------
# Methods shared by the layers and the cells


class InteropMixin:
    """PyTorch and Keras conversions as methods (see the module docstring for the recipes)."""

    @classmethod
    def from_torch(cls, module: Any, dtype: Any = None, **kwargs):
        """A new module with the configuration, weights and train/eval mode of the matching
        PyTorch module (torch.nn.GRU, LSTM, GRUCell or LSTMCell). dtype: None keeps float32 /
        float64 (other float types become float32). kwargs: extra constructor arguments."""
        return from_torch(cls, module, dtype=dtype, **kwargs)

    def to_torch(self, device: Any = None):
        """The equivalent PyTorch module: same config, weights, dtype and train/eval mode."""
        return to_torch(self, device=device)

    def to_torch_state_dict(self, tensors: bool = False) -> dict[str, Any]:
        """PyTorch state dict (copies): NumPy arrays, or CPU tensors with tensors=True. Loads
        into the matching torch module with module.load_state_dict(...)."""
        return to_torch_state_dict(self, tensors=tensors)

    def load_torch_state_dict(self, state_dict: dict[str, Any], strict: bool = True,
                              prefix: str = "") -> None:
        """Copy a PyTorch state dict (arrays or tensors, any float dtype) into this module in
        place. strict: keys must match exactly. prefix: keep only keys that start with it,
        stripped (e.g. "encoder.rnn."). Shapes are checked before anything is written."""
        load_torch_state_dict(self, state_dict, strict=strict, prefix=prefix)

    @classmethod
    def from_keras_weights(cls, kernel: Any, recurrent_kernel: Any, bias: Any = None,
                           reset_after: bool = True, dtype: Any = None, **kwargs):
        """A one-layer module from Keras weights: kernel (I, G), recurrent_kernel (H, G), bias
        (GRU: (2, 3H) with reset_after=True, (3H,) with False; LSTM: (4H,); None when the Keras
        layer has use_bias=False). GRU gates z, r, h; LSTM i, f, c, o. reset_after applies to GRU
        only. Layers come out batch_first=True (Keras data is (B, T, I)), as from from_keras.
        kwargs: extra constructor arguments (batch_first=False for time-major data)."""
        return from_keras_weights(cls, kernel, recurrent_kernel, bias, reset_after=reset_after,
                                  dtype=dtype, **kwargs)

    def to_keras_weights(self) -> list[np.ndarray]:
        """Keras weights [kernel, recurrent_kernel, bias] per layer and direction, in order
        (forward then backward of each layer): for one unidirectional layer exactly what
        keras_layer.set_weights() takes; for a stack of Keras layers, model.set_weights()."""
        return to_keras_weights(self)

    def load_keras_weights(self, weights: list[Any]) -> None:
        """Copy Keras weights (in the to_keras_weights() order) into this module in place."""
        load_keras_weights(self, weights)
