"""Parameter storage shared by the layers (GRU, LSTM) and the cells (GRUCell, LSTMCell).

All parameters of a module live in ONE flat buffer and all gradients in another, so that an
optimizer can update one vector and a data-parallel trainer can allreduce one gradient buffer
per step. The kernels take each layer's weights D-stacked and C-contiguous, (D, G, K): each
(layer, role) block of the flat buffer is such an array, and PyTorch's names are views into it
(`weight_ih_l0 = blocks[0]["w_ih"][0]`, `weight_ih_l0_reverse = blocks[0]["w_ih"][1]`).

Flat layout, layer by layer: w_ih (D, G, I_l), w_hh (D, G, P), b_ih (D, G), b_hh (D, G) (when
bias), w_hr (D, P, H) (LSTM with proj_size). This is not PyTorch's parameters() order, which
interleaves the directions; use parameters() / state_dict() for names.

Parameters are only ever updated in place, so views handed out (and the kernels' caches and the
streaming steppers) always see the current values.
"""
from __future__ import annotations

import numbers
import warnings
from typing import Any

import numpy as np

from fastgru import _validation as V

# role -> PyTorch name stem; the order is PyTorch's per (layer, direction) order
ROLES = (("w_ih", "weight_ih"), ("w_hh", "weight_hh"), ("b_ih", "bias_ih"),
         ("b_hh", "bias_hh"), ("w_hr", "weight_hr"))


def check_size(name: str, v: Any, minimum: int = 1) -> int:
    """A size argument: an int (not bool) >= minimum."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (numbers.Integral,)):
        raise TypeError(f"{name} must be an int, got {type(v).__name__} {v!r}")
    v = int(v)
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return v


def check_dtype(dtype: Any) -> np.dtype:
    """"float32"/"float64" (or a NumPy/torch float dtype) as a NumPy dtype; TypeError otherwise.
    None is float32, as torch's dtype=None (NumPy's np.dtype(None) would be float64)."""
    if dtype is None:
        return np.dtype(np.float32)
    if not isinstance(dtype, (str, type, np.dtype)):
        dtype = str(dtype).replace("torch.", "")  # torch.float32 -> "float32"
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be 'float32' or 'float64', got {dtype!r}") from None
    if dt not in V.FLOAT_DTYPES:
        raise TypeError(f"dtype must be 'float32' or 'float64', got {dt}")
    return dt


def to_numpy(name: str, a: Any) -> np.ndarray:
    """An array-like or a torch tensor (any device, any float dtype) as an ndarray.

    torch is never imported here: a tensor is recognised by its methods."""
    if hasattr(a, "detach") and hasattr(a, "cpu") and hasattr(a, "numpy"):
        if getattr(a, "is_meta", False):
            raise ValueError(f"{name} is a tensor on the 'meta' device (no data): materialise "
                             f"the module first (e.g. module.to_empty(device='cpu') and load "
                             f"its weights)")
        t = a.detach().cpu()
        try:
            return t.numpy()
        except TypeError:  # bfloat16 and friends have no NumPy dtype
            return t.float().numpy()
    try:
        arr = np.asarray(a)
    except Exception as exc:
        raise TypeError(f"{name} must be a numeric array: {exc}") from None
    if arr.dtype.name in ("bfloat16", "float8_e4m3fn", "float8_e5m2"):  # ml_dtypes (JAX, Keras)
        return arr.astype(np.float32)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    return arr


class ParamStore:
    """Flat parameter and gradient buffers with D-stacked per-layer blocks and named views."""

    def __init__(self, layout: list[dict[str, tuple[int, ...]]], names: list[dict[str, list[str]]],
                 dtype: np.dtype):
        """layout[l][role] = block shape (D, ...); names[l][role][d] = public name."""
        total = sum(int(np.prod(s)) for blk in layout for s in blk.values())
        self.dtype = dtype
        self.flat = np.zeros(total, dtype)
        self.gflat = np.zeros(total, dtype)
        self.blocks: list[dict[str, np.ndarray]] = []
        self.gblocks: list[dict[str, np.ndarray]] = []
        self.named: dict[str, np.ndarray] = {}
        self.gnamed: dict[str, np.ndarray] = {}
        self.where: dict[str, tuple[int, str, int]] = {}  # name -> (layer, role, direction)
        off = 0
        for blk in layout:
            w, g = {}, {}
            for role, shape in blk.items():
                n = int(np.prod(shape))
                w[role] = self.flat[off:off + n].reshape(shape)
                g[role] = self.gflat[off:off + n].reshape(shape)
                off += n
            self.blocks.append(w)
            self.gblocks.append(g)
        # named views in PyTorch's order: layer, direction, role
        for l, blk in enumerate(layout):
            D = next(iter(blk.values()))[0]
            for d in range(D):
                for role, _ in ROLES:
                    if role in blk:
                        name = names[l][role][d]
                        self.named[name] = self.blocks[l][role][d]
                        self.gnamed[name] = self.gblocks[l][role][d]
                        self.where[name] = (l, role, d)

    def load(self, sd: dict[str, Any], strict: bool = True, what: str = "state_dict") -> None:
        """Copy named arrays (or tensors) into the parameters in place, casting to our dtype.

        Everything is validated before anything is written, so a bad dict changes nothing."""
        if not isinstance(sd, dict):
            raise TypeError(f"{what} must be a dict of name -> array, got {type(sd).__name__}")
        missing = [k for k in self.named if k not in sd]
        unexpected = [k for k in sd if k not in self.named]
        if strict and (missing or unexpected):
            hint = ("; the module has parametrizations (e.g. weight_norm): call "
                    "torch.nn.utils.parametrize.remove_parametrizations(module, name) for each "
                    "parametrized weight first" if any(".original" in k or "parametrizations."
                                                       in k for k in unexpected) else "")
            raise ValueError(f"{what} does not match this layer: missing keys {missing}, "
                             f"unexpected keys {unexpected}{hint}")
        staged = []
        for name, dst in self.named.items():
            if name not in sd:
                continue
            src = to_numpy(f"{what}[{name!r}]", sd[name])
            if src.shape != dst.shape:
                raise ValueError(f"{what}[{name!r}] must have shape {dst.shape}, got {src.shape}")
            if src.dtype.kind != "f":
                raise TypeError(f"{what}[{name!r}] must be a float array, got dtype {src.dtype}")
            staged.append((dst, src))
        for dst, src in staged:
            dst[...] = src


class Module:
    """Base of layers and cells: parameters, gradients, modes, state dicts, save."""

    _store: ParamStore
    training: bool

    # -- parameters -----------------------------------------------------------------------------
    def parameters(self) -> dict[str, np.ndarray]:
        """name -> parameter array, PyTorch names and shapes (live views: writes update the
        module)."""
        return dict(self._store.named)

    def grads(self) -> dict[str, np.ndarray]:
        """name -> accumulated gradient, same keys and shapes as parameters() (live views)."""
        return dict(self._store.gnamed)

    def flat_parameters(self) -> np.ndarray:
        """All parameters as one 1-D view (num_parameters,): update it in place to train."""
        return self._store.flat

    def flat_grads(self) -> np.ndarray:
        """All gradients as one 1-D view aligned with flat_parameters()."""
        return self._store.gflat

    def zero_grad(self) -> None:
        """Set every accumulated gradient to zero."""
        self._store.gflat.fill(0)

    @property
    def num_parameters(self) -> int:
        """Number of scalar parameters."""
        return int(self._store.flat.size)

    @property
    def dtype(self) -> np.dtype:
        """The NumPy dtype of the parameters and of every input (float32 or float64)."""
        return self._store.dtype

    def __getattr__(self, name: str):
        # gru.weight_ih_l0 as in PyTorch; only reached when normal lookup fails
        store = self.__dict__.get("_store")
        if store is not None and name in store.named:
            return store.named[name]
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        # gru.weight_ih_l0 = array writes INTO the parameter (shape checked, cast to the dtype):
        # an instance attribute would shadow the view while the kernels keep the old values
        store = self.__dict__.get("_store")
        if store is not None and name in store.named:
            store.load({name: value}, strict=False, what="parameter")
            return
        object.__setattr__(self, name, value)

    # -- modes ----------------------------------------------------------------------------------
    def train(self, mode: bool = True):
        """Training mode (dropout on, forward keeps what backward needs). Returns self."""
        self.training = V.check_bool("mode", mode)
        return self

    def eval(self):
        """Inference mode (no dropout, no cache for backward). Returns self."""
        return self.train(False)

    # -- state dicts ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """name -> copy of the parameter (PyTorch names)."""
        return {k: v.copy() for k, v in self._store.named.items()}

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> None:
        """Copy arrays (or tensors) into the parameters in place, cast to this module's dtype.
        strict: the keys must match exactly. Shapes are always checked."""
        self._store.load(state_dict, strict=V.check_bool("strict", strict))

    # -- save --------------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this module (JSON-serialisable)."""
        raise NotImplementedError

    def save(self, path) -> None:
        """Write config + parameters to `path` (.npz, no pickle), atomically. See fastgru.load."""
        from fastgru.saving import save

        save(self, path)

    def copy(self):
        """An independent copy (same config, parameters copied, gradients zero)."""
        new = rebuild(type(self), self.get_config())
        new._store.flat[...] = self._store.flat
        return new.train(self.training)

    def astype(self, dtype):
        """A copy with parameters cast to `dtype` ("float32" or "float64")."""
        cfg = self.get_config()
        cfg["dtype"] = str(check_dtype(dtype))
        new = rebuild(type(self), cfg)
        new._store.flat[...] = self._store.flat
        return new.train(self.training)

    def __reduce__(self):
        # copy.copy / deepcopy / pickle rebuild the module so that the named arrays stay views
        # of one flat buffer (copying the views one by one would cut them loose)
        # (and the dropout generator's position: a copy draws the masks the original would)
        rng = getattr(self, "_rng", None)
        return (_restore, (type(self), self.get_config(), self._store.flat.copy(),
                           self._store.gflat.copy(), self.training,
                           None if rng is None else rng.bit_generator.state))


def _restore(cls, config, flat, gflat, training, rng_state=None):
    m = rebuild(cls, config)
    m._store.flat[...] = flat
    m._store.gflat[...] = gflat
    if rng_state is not None:
        m._rng.bit_generator.state = rng_state
    return m.train(training)


def rebuild(cls, config: dict[str, Any]):
    """cls(**config) without the construction-time warnings (they were given the first time)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return cls(**config)


def torch_sd_arg(sd: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Strip `prefix` from the keys of a (PyTorch) state dict, dropping other keys."""
    if not isinstance(sd, dict) and not hasattr(sd, "items"):
        raise TypeError(f"state_dict must be a dict of name -> array, got {type(sd).__name__}")
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
    if not prefix:
        return dict(sd.items())
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def optional_seed(seed: Any) -> Any | None:
    """None, an int >= 0 or a np.random.Generator."""
    if seed is None or isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be None, an int or a numpy Generator, got {seed!r}")
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return int(seed)
