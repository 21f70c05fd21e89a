"""Multi-layer (bi)directional GRU/LSTM layers: the machinery behind fastgru.GRU and fastgru.LSTM.

Letters: T time steps, B batch, I input features, H hidden units, P output/state width (LSTM
proj_size, else H), D directions, L layers, G = 3H (GRU) or 4H (LSTM), N = packed rows.

Fast backend (default): the batch is packed once (fastgru._plan.SeqPlan) and every layer runs
as ONE kernel call over both directions (fastgru._packed), which run concurrently on the OpenMP
team; the reverse direction starts at each sequence's own last step. Reference backend: the same
maths, layer by layer and direction by direction, on fastgru.reference (for debugging and for
checking gradients). Both draw identical dropout masks from the layer's generator, so with the
same seed they agree to rounding.

Dropout (as torch.nn.GRU/LSTM): in training mode, on the outputs of every layer but the last,
with inverted scaling 1/(1-p).
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from fastgru import _masking, _packed, reference
from fastgru import _validation as V
from fastgru._module import Module, ParamStore, check_dtype, check_size, optional_seed
from fastgru._plan import SeqPlan, make_plan

BACKENDS = ("fast", "reference")


def check_backend(backend: Any) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def check_dropout(p: Any) -> float:
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, (int, float, np.integer, np.floating)):
        raise TypeError(f"dropout must be a number in [0, 1], got {p!r}")
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout must be in [0, 1], got {p}")
    return p


class _ForwardCache:
    """What backward needs from the last training forward (kept until the next one)."""

    __slots__ = ("backend", "plan", "layers", "masks", "T", "B", "unbatched", "batch_first",
                 "keras", "probe")
    backend: str
    plan: SeqPlan | None  # None for an empty batch
    layers: list
    masks: list
    T: int
    B: int
    unbatched: bool
    batch_first: bool
    keras: tuple | None  # mask= forwards: (lengths, rows run or None for all, carry, holes)
    probe: bytes  # sampled weights at forward time (_weight_probe)

    def __init__(self, **kw):
        for k in self.__slots__:
            setattr(self, k, kw.get(k))


class RNNBase(Module):
    """Shared implementation of GRU and LSTM (see their docstrings)."""

    _cell = "gru"

    # -- construction ---------------------------------------------------------------------------
    def _setup(self, input_size, hidden_size, num_layers, bias, batch_first, dropout,
               bidirectional, proj_size, reset_after, dtype, seed, backend, n_threads,
               reverse=False, zero_output_for_mask=False) -> None:
        self._I = check_size("input_size", input_size)
        self._H = check_size("hidden_size", hidden_size)
        self._L = check_size("num_layers", num_layers)
        self._bias = V.check_bool("bias", bias)
        self._bidirectional = V.check_bool("bidirectional", bidirectional)
        self._reverse = V.check_bool("reverse", reverse)
        self._zero_masked = V.check_bool("zero_output_for_mask", zero_output_for_mask)
        if self._reverse and self._bidirectional:
            raise ValueError("reverse=True is for one direction (bidirectional already runs "
                             "both)")
        self._reset_after = V.check_bool("reset_after", reset_after)
        self._proj = check_size("proj_size", proj_size, minimum=0)
        if self._proj and self._cell != "lstm":
            raise ValueError("proj_size exists for LSTM only")
        if self._proj >= self._H:
            raise ValueError(f"proj_size must be smaller than hidden_size = {self._H}, "
                             f"got {self._proj}")
        self.batch_first = batch_first
        self.dropout = dropout
        self.backend = backend
        self.n_threads = n_threads
        if self._dropout > 0 and self._L == 1:
            warnings.warn("dropout > 0 with num_layers=1 has no effect: dropout acts between "
                          "layers only", UserWarning, stacklevel=3)
        dt = check_dtype(dtype)
        self._seed = optional_seed(seed)
        self._rng = np.random.default_rng(self._seed)
        D, H, P = self.num_directions, self._H, self._P
        G = (3 if self._cell == "gru" else 4) * H
        layout: list[dict[str, tuple[int, ...]]] = []
        names: list[dict[str, list[str]]] = []
        for l in range(self._L):
            I_l = self._I if l == 0 else D * P
            blk: dict[str, tuple[int, ...]] = {"w_ih": (D, G, I_l), "w_hh": (D, G, P)}
            if self._bias:
                blk.update(b_ih=(D, G), b_hh=(D, G))
            if self._proj:
                blk["w_hr"] = (D, P, H)
            layout.append(blk)
            sfx = ["", "_reverse"][:D]
            names.append({role: [f"{stem}_l{l}{s}" for s in sfx]
                          for role, stem in (("w_ih", "weight_ih"), ("w_hh", "weight_hh"),
                                             ("b_ih", "bias_ih"), ("b_hh", "bias_hh"),
                                             ("w_hr", "weight_hr"))})
        self._store = ParamStore(layout, names, dt)
        self.reset_parameters()
        # direction flags: [0], [0, 1], or [1] (reverse: ONNX direction="reverse", Keras
        # go_backwards with the outputs left at their time steps)
        self._rev = np.array([1] if self._reverse else range(D), dtype=np.int32)
        self._G = G
        self._cache: _ForwardCache | None = None
        self._steppers: list | None = None
        self.training = True

    def reset_parameters(self) -> None:
        """Draw every parameter from U(-1/sqrt(H), 1/sqrt(H)) (PyTorch's initialisation)."""
        k = 1.0 / math.sqrt(self._H)
        flat = self._store.flat
        flat[...] = self._rng.uniform(-k, k, flat.size)

    def manual_seed(self, seed: Any) -> None:
        """Restart the dropout generator from `seed` (the next forwards draw the same masks as
        after any other manual_seed(seed)): reproducible runs and fixed-mask gradient checks."""
        self._rng = np.random.default_rng(optional_seed(seed))

    # -- hyper-parameters -----------------------------------------------------------------------
    input_size = property(lambda self: self._I, doc="I, features per input step.")
    hidden_size = property(lambda self: self._H, doc="H, hidden units per direction.")
    num_layers = property(lambda self: self._L, doc="L, stacked layers.")
    bias = property(lambda self: self._bias, doc="Whether the layer has b_ih and b_hh.")
    bidirectional = property(lambda self: self._bidirectional, doc="Two directions per layer.")
    zero_output_for_mask = property(
        lambda self: self._zero_masked,
        doc="With mask= (Keras semantics): y is 0 past each sequence's end (Keras' argument).")
    reverse = property(lambda self: self._reverse,
                       doc="One direction, run from each sequence's last step to its first.")
    num_directions = property(lambda self: 2 if self._bidirectional else 1, doc="D, 1 or 2.")
    _P = property(lambda self: self._proj or self._H)

    @property
    def batch_first(self) -> bool:
        """x and y are (B, T, .) instead of (T, B, .); states are always (L*D, B, .)."""
        return self._batch_first

    @batch_first.setter
    def batch_first(self, v: bool) -> None:
        self._batch_first = V.check_bool("batch_first", v)

    @property
    def dropout(self) -> float:
        """Dropout probability on the outputs of every layer but the last (training mode)."""
        return self._dropout

    @dropout.setter
    def dropout(self, p: float) -> None:
        self._dropout = check_dropout(p)

    @property
    def backend(self) -> str:
        """"fast" (the kernels) or "reference" (fastgru.reference, pure NumPy)."""
        return self._backend

    @backend.setter
    def backend(self, b: str) -> None:
        self._backend = check_backend(b)

    @property
    def n_threads(self) -> int | None:
        """Threads of the kernels: None (fastgru's default policy), -1 (all cores) or >= 1."""
        return self._n_threads

    @n_threads.setter
    def n_threads(self, n: int | None) -> None:
        self._n_threads = V.check_n_threads(n)
        self._steppers = None  # rebuilt with the new team size on the next step()

    @property
    def train_bias_hh(self) -> bool:
        """False: bias_hh keeps its value in training (its gradient is left at zero). Keras'
        LSTM and reset_after=False GRU have ONE bias, which fastgru splits into bias_ih and a
        zero bias_hh; training both would move their sum at twice Keras' rate, so from_keras
        and from_keras_weights set this for those layers."""
        return self._train_bias_hh

    @train_bias_hh.setter
    def train_bias_hh(self, v: bool) -> None:
        self._train_bias_hh = V.check_bool("train_bias_hh", v)

    def get_config(self) -> dict:
        cfg: dict[str, Any] = dict(input_size=self._I, hidden_size=self._H, num_layers=self._L,
                                   bias=self._bias,
                   batch_first=self._batch_first, dropout=self._dropout,
                   bidirectional=self._bidirectional)
        if self._reverse:
            cfg["reverse"] = True
        if self._zero_masked:
            cfg["zero_output_for_mask"] = True
        if self._cell == "gru":
            cfg["reset_after"] = self._reset_after
        else:
            cfg["proj_size"] = self._proj
        cfg.update(dtype=str(self.dtype), backend=self._backend, n_threads=self._n_threads)
        if not self._train_bias_hh:
            cfg["train_bias_hh"] = False
        if isinstance(self._seed, int):  # a loaded layer's dropout masks start from it again
            cfg["seed"] = self._seed
        return cfg

    def __repr__(self) -> str:
        s = f"{type(self).__name__}({self._I}, {self._H}"
        if self._proj:
            s += f", proj_size={self._proj}"
        if self._L != 1:
            s += f", num_layers={self._L}"
        if not self._bias:
            s += ", bias=False"
        if self._batch_first:
            s += ", batch_first=True"
        if self._dropout:
            s += f", dropout={self._dropout}"
        if self._bidirectional:
            s += ", bidirectional=True"
        if self._reverse:
            s += ", reverse=True"
        if self._cell == "gru" and not self._reset_after:
            s += ", reset_after=False"
        if self.dtype != np.float32:
            s += f", dtype={self.dtype}"
        if self._backend != "fast":
            s += f", backend={self._backend!r}"
        return s + ")"

    # -- argument checks ------------------------------------------------------------------------
    def _input(self, x: Any) -> tuple[np.ndarray, bool]:
        """x as time-major (T, B, I) (a view when possible) and whether it was unbatched."""
        if type(x).__name__ == "PackedSequence":  # torch's, recognised without importing torch
            raise TypeError("x is a torch PackedSequence: pass the padded tensor (e.g. from "
                            "torch.nn.utils.rnn.pad_packed_sequence) and lengths=... instead; "
                            "fastgru applies PackedSequence semantics to it")
        x = V.float_array("x", x, lists_as=self.dtype)
        if x.dtype != self.dtype:
            raise TypeError(f"x has dtype {x.dtype} but the layer is {self.dtype}: convert x "
                            f"with x.astype(np.{self.dtype}) or the layer with "
                            f"layer.astype('{x.dtype}')")
        layout = "(B, T, I)" if self._batch_first else "(T, B, I)"
        if x.ndim == 2:
            unbatched, x3 = True, x[:, None, :]
        elif x.ndim == 3:
            unbatched, x3 = False, (x.transpose(1, 0, 2) if self._batch_first else x)
        else:
            raise ValueError(f"x must have shape {layout} (or (T, I) unbatched), got shape "
                             f"{x.shape}")
        T, B, I = x3.shape
        if T < 1:  # B = 0 is allowed (as in torch): empty outputs
            raise ValueError(f"x must have T >= 1 steps, got shape {x.shape} "
                             f"{'(T, I)' if unbatched else layout}")
        if I != self._I:
            raise ValueError(f"x must have I = input_size = {self._I} features in its last axis, "
                             f"got shape {x.shape}")
        V.check_blas_sizes(T, B, I, self._H, self.num_directions, self._cell)
        return x3, unbatched

    def _state(self, name: str, s: Any, B: int, F: int, unbatched: bool) -> np.ndarray:
        """A (L*D, B, F) state (zeros for None), validated."""
        LD = self._L * self.num_directions
        if s is None:
            return np.zeros((LD, B, F), self.dtype)
        s = V.float_array(name, s, self.dtype)
        letter = "H" if F == self._H else "P"
        if unbatched:
            V.check_shape(name, s, (LD, F), f"(num_layers * num_directions, {letter}) for "
                                              f"unbatched x")
            return s[:, None, :]
        V.check_shape(name, s, (LD, B, F), f"(num_layers * num_directions, B, {letter})")
        return s

    def _lengths(self, lengths: Any, T: int, B: int, unbatched: bool) -> np.ndarray | None:
        if lengths is not None and unbatched:
            raise ValueError("lengths needs a batched x of shape (T, B, I) or (B, T, I); "
                             "slice an unbatched sequence instead")
        return V.check_lengths(lengths, T, B)

    def _output(self, y: np.ndarray, unbatched: bool, batch_first: bool) -> np.ndarray:
        if unbatched:
            return y[:, 0]
        return y.transpose(1, 0, 2) if batch_first else y

    # -- forward --------------------------------------------------------------------------------
    def _run(self, x, h0, c0, lengths, requires_grad, mask=None):
        """Validate, run the backend, keep the cache. Returns y and sorted-out final states."""
        if (lengths is None and mask is None and self._backend == "fast"
                and not self._bidirectional
                and (requires_grad is False or (requires_grad is None and not self.training))
                and (not self.training or self._dropout == 0 or self._L == 1)):
            out = self._one_step(x, h0, c0)
            if out is not None:
                return out
        keep = self.training if requires_grad is None else V.check_bool("requires_grad",
                                                                        requires_grad)
        x3, unbatched = self._input(x)
        T, B, _ = x3.shape
        if mask is not None:
            if lengths is not None:
                raise ValueError("give lengths (PyTorch semantics) or mask (Keras semantics), "
                                 "not both")
            lengths, holes = _masking.mask_lengths(mask, T, B, unbatched, self._batch_first)
        else:
            lengths = self._lengths(lengths, T, B, unbatched)
        P, H = self._P, self._H
        h0 = self._state("h0", h0, B, P, unbatched)
        c0 = self._state("c0", c0, B, H, unbatched) if self._cell == "lstm" else None
        if keep:  # inputs are valid: release the old cache so its pooled pages are reused now
            self._cache = None
        if B == 0:
            return self._empty_batch(x3, h0, c0, keep, unbatched)
        drop = self._dropout if (self.training and self._dropout > 0) else 0.0
        keras = None
        if mask is None:
            y, hn, cn, fwd = self._forward_rows(x3, lengths, h0, c0, keep, drop)
        else:
            y, hn, cn, fwd, keras = self._forward_masked(x3, lengths, h0, c0, keep, drop, holes)
        if keep:
            plan, layers, masks = fwd
            self._cache = _ForwardCache(backend=self._backend, plan=plan, layers=layers,
                                        masks=masks, T=T, B=B, unbatched=unbatched,
                                        batch_first=self._batch_first, keras=keras,
                                        probe=self._weight_probe())
        y = self._output(y, unbatched, self._batch_first)
        if unbatched:
            hn = hn[:, 0]
            cn = None if cn is None else cn[:, 0]
        return y, hn, cn

    def _empty_batch(self, x3, h0, c0, keep, unbatched):
        """B = 0 (torch accepts it): nothing runs; y is empty, the final states are the
        (empty) initial ones, and backward gives empty input gradients."""
        T = x3.shape[0]
        if keep:
            self._cache = _ForwardCache(backend=self._backend, plan=None, layers=[], masks=[],
                                        T=T, B=0, unbatched=unbatched,
                                        batch_first=self._batch_first, keras=None,
                                        probe=self._weight_probe())
        y = np.zeros((T, 0, self.num_directions * self._P), self.dtype)
        return (self._output(y, unbatched, self._batch_first), h0.copy(),
                None if c0 is None else c0.copy())

    def _forward_rows(self, x3, lengths, h0, c0, keep, drop):
        """The backend's forward of x3 (T, B, I) with PyTorch lengths: y (T, B, D*P), states,
        and (plan, per-layer caches, dropout masks) for the training cache."""
        plan = make_plan(x3.shape[0], x3.shape[1], lengths)
        run = self._forward_fast if self._backend == "fast" else self._forward_reference
        y, hn, cn, layers, masks = run(x3, plan, lengths, h0, c0, keep, drop)
        return y, hn, cn, (plan, layers, masks)

    def _forward_masked(self, x3, lengths, h0, c0, keep, drop, holes_mask=None):
        """Keras masking (fastgru._masking): sequences of length 0 keep their initial state
        (not run); the rest run with lengths; y's padding is filled as the Keras layer fills
        it. A mask with left padding or gaps (holes_mask (T, B)) runs on the valid steps moved
        to the front, and y is read back from that run. Returns the forward's results plus
        (lengths, rows run or None for all, carry: 1 = h_n, -1 = h0 written over y's padding,
        0 = zeros; Holes or None)."""
        # Keras writes the carried h of the last layer at masked steps (a standalone forward
        # layer: h_n past the end; go_backwards: h0 first, the padding once flipped back);
        # Bidirectional, or zero_output_for_mask=True, writes zeros
        carry = (0 if self.num_directions == 2 or self._zero_masked
                 else (-1 if self._rev[0] else 1))
        holes = None
        if holes_mask is not None:
            holes = _masking.Holes(holes_mask, carry)
            x3 = holes.gather(x3)
        T, B = x3.shape[:2]
        rows = np.flatnonzero(lengths)
        if rows.size == B:
            y, hn, cn, fwd = self._forward_rows(x3, lengths, h0, c0, keep, drop)
            rows_run = None
        else:
            y = np.zeros((T, B, self.num_directions * self._P), self.dtype)
            hn, cn = h0.copy(), (None if c0 is None else c0.copy())
            fwd = (None, None, None)
            if rows.size:
                ys, hs, cs, fwd = self._forward_rows(
                    x3[:, rows], lengths[rows], h0[:, rows],
                    None if c0 is None else c0[:, rows], keep, drop)
                y[:, rows], hn[:, rows] = ys, hs
                if cn is not None:
                    cn[:, rows] = cs
            rows_run = rows
        if carry:
            y = _masking.fill_padding(y, lengths, (hn if carry > 0 else h0)[-1])
        if holes is not None:
            y = holes.read(y, h0[-1] if carry else None)
        return y, hn, cn, fwd, (lengths, rows_run, carry, holes)

    def _mask(self, plan: SeqPlan, width: int, p: float) -> np.ndarray:
        """Inverted-dropout mask of the packed rows (N, width): 0 or 1/(1-p)."""
        keep = self._rng.random((plan.N, width), dtype=self.dtype) >= p
        scale = 0.0 if p >= 1.0 else 1.0 / (1.0 - p)
        return keep * self.dtype.type(scale)

    def _biases(self, blk: dict) -> tuple[np.ndarray, np.ndarray]:
        if self._bias:
            return blk["b_ih"], blk["b_hh"]
        z = np.zeros((self.num_directions, self._G), self.dtype)
        return z, z

    def _forward_fast(self, x3, plan, lengths, h0, c0, keep, drop):
        D, L, P = self.num_directions, self._L, self._P
        padded = not plan.identity  # the first layer reads x3 and the last one writes y padded
        padded_in = padded and not keep  # (a training cache holds the packed input)
        inp = x3 if padded_in else plan.pack(x3)
        if keep:
            inp = _packed.keep_input(inp, x3)
        hs = _sorted_copy(plan, h0)  # updated in place by the kernels: h0 in, h_n out
        cs = None if c0 is None else _sorted_copy(plan, c0)
        layers: list = []
        masks: list[np.ndarray | None] = []
        for l in range(L):
            blk = self._store.blocks[l]
            b_ih, b_hh = self._biases(blk)
            h = hs[l * D:(l + 1) * D]
            io = dict(padded_in=padded_in and l == 0, padded_out=padded and l == L - 1)
            if self._cell == "gru":
                bias = _packed.fold_gru_bias(b_ih, b_hh, self._reset_after)
                y, pc = _packed.gru_forward(inp, plan, blk["w_ih"], blk["w_hh"], bias, h,
                                            self._rev, self._reset_after, keep, self._n_threads,
                                            **io)
            else:
                assert cs is not None  # LSTM: a cell state always exists
                y, pc = _packed.lstm_forward(inp, plan, blk["w_ih"], blk["w_hh"], blk.get("w_hr"),
                                             b_ih + b_hh, h, cs[l * D:(l + 1) * D], self._rev,
                                             keep, self._n_threads, **io)
            layers.append(pc)
            if drop and l < L - 1:
                m = self._mask(plan, D * P, drop)
                y *= m  # y is not referenced by the cache; the next layer's input is
                masks.append(m)
            else:
                masks.append(None)
            inp = y
        if not padded:
            inp = inp.reshape(plan.T, plan.B, -1)
        return (inp, plan.unsort_state(hs),
                None if cs is None else plan.unsort_state(cs), layers, masks)

    def _forward_reference(self, x3, plan, lengths, h0, c0, keep, drop):
        D, L, P = self.num_directions, self._L, self._P
        hn, cn = np.empty_like(h0), (None if c0 is None else np.empty_like(c0))
        inp = x3.copy() if keep else x3  # the cache holds it (see _packed.keep_input)
        layers: list = []
        masks: list[np.ndarray | None] = []
        for l in range(L):
            blk = self._store.blocks[l]
            ys, caches = [], []
            for d in range(D):
                k = l * D + d
                b_ih = blk["b_ih"][d] if self._bias else None
                b_hh = blk["b_hh"][d] if self._bias else None
                if self._cell == "gru":
                    y, hn[k], c = reference.gru_forward(
                        inp, h0[k], blk["w_ih"][d], blk["w_hh"][d], b_ih, b_hh, lengths=lengths,
                        reset_after=self._reset_after, training=keep,
                        reverse=bool(self._rev[d]))
                else:
                    assert cn is not None
                    w_hr = blk["w_hr"][d] if self._proj else None
                    y, hn[k], cn[k], c = reference.lstm_forward(
                        inp, h0[k], c0[k], blk["w_ih"][d], blk["w_hh"][d], b_ih, b_hh,
                        lengths=lengths, training=keep, w_hr=w_hr,
                        reverse=bool(self._rev[d]))
                ys.append(y)
                caches.append(c)
            y = np.concatenate(ys, axis=2) if D > 1 else ys[0]
            layers.append(caches)
            if drop and l < L - 1:
                m = plan.unpack(self._mask(plan, D * P, drop))  # same draws as the fast path
                y = y * m
                masks.append(m)
            else:
                masks.append(None)
            inp = y
        return inp, hn, cn, layers, masks

    def _weight_probe(self) -> bytes:
        """~512 weights sampled across the flat buffer, as bytes: an optimizer step or a
        load_state_dict changes them, so backward can refuse a stale cache (as torch's
        "modified by an inplace operation" error); ~1 us."""
        flat = self._store.flat
        idx = self.__dict__.get("_probe_idx")
        if idx is None or idx[-1:].tolist() != [max(flat.size - 1, 0)] or not flat.size:
            idx = np.unique(np.linspace(0, flat.size - 1, min(flat.size, 512)).astype(np.intp))
            self.__dict__["_probe_idx"] = idx
        return flat.take(idx).tobytes() if flat.size else b""

    # -- backward -------------------------------------------------------------------------------
    def _run_backward(self, dy, dh_n, dc_n):
        c = self._cache
        if c is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward() needs a forward in training mode first "
                "(layer.train(); y, state = layer(x)): no forward since construction ran in "
                "training mode (eval() forwards keep nothing; pass requires_grad=True to keep it)")
        if c.probe != self._weight_probe():
            raise RuntimeError(
                f"{type(self).__name__}.backward(): the weights changed since the training "
                "forward (an optimizer step, load_state_dict or an in-place edit), so the "
                "gradients would mix old and new weights; run backward before updating the "
                "weights, or run the forward again")
        T, B, D, P, H = c.T, c.B, self.num_directions, self._P, self._H
        dy3 = None
        if dy is not None:
            dy = V.float_array("dy", dy, self.dtype)
            u = "P" if P != H else "H"  # an LSTM with proj_size gives y of D*P features
            if c.unbatched:
                V.check_shape("dy", dy, (T, D * P), f"(T, D*{u}) like y")
                dy3 = dy[:, None, :]
            elif c.batch_first:
                V.check_shape("dy", dy, (B, T, D * P), f"(B, T, D*{u}) like y")
                dy3 = dy.transpose(1, 0, 2)
            else:
                V.check_shape("dy", dy, (T, B, D * P), f"(T, B, D*{u}) like y")
                dy3 = dy
        dh = self._state("dh_n", dh_n, B, P, c.unbatched)
        dc = self._state("dc_n", dc_n, B, H, c.unbatched) if self._cell == "lstm" else None
        if B == 0:  # an empty batch: no parameter gradient, empty input gradients
            dx, dh0 = np.zeros((T, 0, self._I), self.dtype), np.zeros_like(dh)
            dc0 = None if dc is None else np.zeros_like(dc)
        elif c.keras is None:
            dx, dh0, dc0 = self._backward_rows(c, dy3, dh, dc)
        else:
            dx, dh0, dc0 = self._backward_masked(c, dy3, dh, dc)
        if self._bias and not self._train_bias_hh:
            for g in self._store.gblocks:
                g["b_hh"].fill(0)
        dx = self._output(dx, c.unbatched, c.batch_first)
        if c.unbatched:
            dh0 = dh0[:, 0]
            dc0 = None if dc0 is None else dc0[:, 0]
        return dx, dh0, dc0

    def _backward_rows(self, c, dy3, dh, dc):
        run = self._backward_fast if c.backend == "fast" else self._backward_reference
        return run(c, dy3, dh, dc)

    def _backward_masked(self, c, dy3, dh, dc):
        """Backward of _forward_masked: the fill's gradient goes to each last valid step;
        sequences of length 0 pass dh_n (dc_n) to dh0 (dc0) and get dx = 0."""
        lengths, rows, carry, holes = c.keras
        dextra = None
        if holes is not None and dy3 is not None:
            dy3, dextra = holes.read_grad(dy3)
        pad = None
        if dy3 is not None and carry:
            pad = _masking.padding_grad(dy3, lengths)  # reaches the state written there
            if carry > 0:
                dh = dh.copy()
                dh[-1] += pad
        if rows is None:
            dx, dh0, dc0 = self._backward_rows(c, dy3, dh, dc)
        else:
            dx = np.zeros((c.T, c.B, self._I), self.dtype)
            dh0, dc0 = dh.copy(), (None if dc is None else dc.copy())
            if rows.size:
                dxs, dhs, dcs = self._backward_rows(
                    c, None if dy3 is None else dy3[:, rows], dh[:, rows],
                    None if dc is None else dc[:, rows])
                dx[:, rows], dh0[:, rows] = dxs, dhs
                if dc0 is not None:
                    dc0[:, rows] = dcs
        if pad is not None and carry < 0:
            dh0[-1] += pad
        if holes is not None:
            dx = holes.scatter(dx)
            if dextra is not None and carry:
                dh0[-1] += dextra
        return dx, dh0, dc0

    def _grad_blocks(self, l: int) -> dict:
        g = dict(self._store.gblocks[l])
        if not self._bias:  # the kernels always produce bias gradients: give them scratch
            g["b_ih"] = np.zeros((self.num_directions, self._G), self.dtype)
            g["b_hh"] = np.zeros((self.num_directions, self._G), self.dtype)
        return g

    def _backward_fast(self, c, dy3, dh, dc):
        D, plan = self.num_directions, c.plan
        dyp = None if dy3 is None else plan.pack(dy3)
        dhs = _sorted_copy(plan, dh)  # dh_n in, dh0 out (in place, per layer slice)
        dcs = None if dc is None else _sorted_copy(plan, dc)
        for l in reversed(range(self._L)):
            g = self._grad_blocks(l)
            sl = slice(l * D, (l + 1) * D)
            if self._cell == "gru":
                dx, _ = _packed.gru_backward(c.layers[l], dyp, dhs[sl], grads=g, accumulate=True)
            else:
                assert dcs is not None
                dx, _ = _packed.lstm_backward(c.layers[l], dyp, dhs[sl], dcs[sl], grads=g,
                                              accumulate=True)
            if l > 0:
                m = c.masks[l - 1]
                dyp = dx * m if m is not None else dx
        return (plan.unpack(dx), plan.unsort_state(dhs),
                None if dcs is None else plan.unsort_state(dcs))

    def _backward_reference(self, c, dy3, dh, dc):
        D, P = self.num_directions, self._P
        dh0 = np.empty_like(dh)
        dc0 = None if dc is None else np.empty_like(dc)
        dy_l = dy3
        for l in reversed(range(self._L)):
            gb = self._store.gblocks[l]
            dx = None
            for d in range(D):
                k = l * D + d
                dyd = None if dy_l is None else dy_l[:, :, d * P:(d + 1) * P]
                if self._cell == "gru":
                    g = reference.gru_backward(c.layers[l][d], dyd, dh[k])
                else:
                    assert dc is not None and dc0 is not None
                    g = reference.lstm_backward(c.layers[l][d], dyd, dh[k], dc[k])
                    dc0[k] = g["dc0"]
                dh0[k] = g["dh0"]
                for role in gb:
                    gb[role][d] += g["d" + role]
                dx = g["dx"] if dx is None else dx + g["dx"]
            if l > 0:
                m = c.masks[l - 1]
                dy_l = dx * m if m is not None else dx
        return dx, dh0, dc0

    def _one_step(self, x, h0, c0):
        """Inference over one time step of a small batch on the layer's steppers (as step()):
        the general path's checks, packing, bias folding and state sorting cost ~14 us of a
        ~30 us call at S5. None when the call is not plain arrays of that form (the general
        path then takes it, and explains bad input)."""
        dt = self._store.dtype
        if type(x) is not np.ndarray or x.dtype != dt or x.ndim != 3 or x.shape[2] != self._I:
            return None
        T, B = (x.shape[1], x.shape[0]) if self._batch_first else (x.shape[0], x.shape[1])
        if T != 1 or not 1 <= B <= _packed.STEP_MAX_B:
            return None
        L, P, H = self._L, self._P, self._H
        h = _plain_state(h0, (L, B, P), dt)
        c = _plain_state(c0, (L, B, H), dt) if self._cell == "lstm" else None
        if h is None or (self._cell == "lstm" and c is None):
            return None
        x2 = x.reshape(B, self._I)
        if not x2.flags.c_contiguous:
            x2 = np.ascontiguousarray(x2)
        y, hn, cn = self._steps(x2, h, c)
        # y and h_n are separate arrays, as in PyTorch (with one layer h_n is a view of y)
        return (y[:, None] if self._batch_first else y[None]), (hn.copy() if L == 1 else hn), cn

    def _steps(self, x, h, c):
        """One step of every layer on the steppers, inputs already checked: x (B, I), h (L, B, P),
        c (L, B, H) or None (GRU). Returns (y (B, P), h_new (L, B, P), c_new or None); y never
        shares memory with h_new (as in torch: y *= mask must not change the state)."""
        if not x.shape[0]:  # an empty batch (as torch allows): nothing to run
            return (np.zeros((0, self._P), self.dtype), h.copy(),
                    None if c is None else c.copy())
        steppers = self._steppers or self._stepper_list()
        hs, cs = [], []
        for l, st in enumerate(steppers):
            if c is None:
                x = st.step(x, h[l])
            else:
                x, cl = st.step(x, h[l], c[l])
                cs.append(cl)
            hs.append(x)
        if len(hs) == 1:  # (np.stack costs ~1.5 us, a copy ~0.4)
            return x, x[None].copy(), (cs[0][None] if cs else None)
        return x, np.stack(hs), (np.stack(cs) if cs else None)

    # -- streaming ------------------------------------------------------------------------------
    def _streamable(self) -> None:
        """step() refuses layers that do not run forward in time (a one-step call of a reverse
        layer is the same step, and _one_step takes it)."""
        if self._bidirectional or self._reverse:
            raise ValueError("step() streams forward in time; a bidirectional or reverse "
                             "layer needs the whole sequence: call the layer on it instead")

    def _stepper_list(self) -> list:
        if self._steppers is None:
            if self._bidirectional:
                self._streamable()
            from fastgru.cells import gru_stepper, lstm_stepper

            steppers = []
            for l in range(self._L):
                blk = self._store.blocks[l]
                b_ih, b_hh = self._biases(blk)
                if self._cell == "gru":
                    steppers.append(gru_stepper(blk["w_ih"][0], blk["w_hh"][0], b_ih[0],
                                                b_hh[0], self._reset_after, self._n_threads))
                else:
                    w_hr = blk["w_hr"][0] if self._proj else None
                    steppers.append(lstm_stepper(blk["w_ih"][0], blk["w_hh"][0], b_ih[0],
                                                 b_hh[0], w_hr, self._n_threads))
            self._steppers = steppers
        return self._steppers

    def _step_x(self, x: Any) -> tuple[np.ndarray, bool]:
        """x_t as a C-contiguous (B, I) array and whether it was unbatched (I,)."""
        if (type(x) is np.ndarray and x.dtype == self._store.dtype and x.ndim == 2
                and x.shape[1] == self._I and x.shape[0] > 0 and x.flags.c_contiguous):
            return x, False  # the hot path: nothing to convert
        x = V.float_array("x", x, lists_as=self.dtype)
        if x.dtype != self.dtype:
            raise TypeError(f"x has dtype {x.dtype} but the layer is {self.dtype}")
        if x.ndim == 1:
            V.check_shape("x", x, (self._I,), "(I,) unbatched")
            return np.ascontiguousarray(x[None]), True
        if x.ndim != 2 or x.shape[1] != self._I:
            raise ValueError(f"x must have shape (B, I) = (B, {self._I}) (one time step), got "
                             f"{x.shape}")
        return np.ascontiguousarray(x), False

    def _step_state(self, name: str, s: Any, B: int, F: int, unbatched: bool) -> np.ndarray:
        L = self._L
        if s is None:
            return np.zeros((L, B, F), self.dtype)
        if unbatched or not (type(s) is np.ndarray and s.dtype == self._store.dtype
                             and s.shape == (L, B, F) and s.flags.c_contiguous):
            s = V.float_array(name, s, self.dtype)
            letter = "H" if F == self._H else "P"  # LSTM h with proj_size: P wide
            if unbatched:
                V.check_shape(name, s, (L, F), f"(num_layers, {letter}) for unbatched x")
                s = s[:, None, :]
            V.check_shape(name, s, (L, B, F), f"(num_layers, B, {letter})")
            s = np.ascontiguousarray(s)
        return s


def _plain_state(s, shape: tuple, dt) -> np.ndarray | None:
    """A state for _one_step: zeros for None, s itself when a C-contiguous array of this shape
    and dtype, else None (not plain: the general path checks or converts it)."""
    if s is None:
        return np.zeros(shape, dt)
    if type(s) is np.ndarray and s.dtype == dt and s.shape == shape and s.flags.c_contiguous:
        return s
    return None


def _sorted_copy(plan: SeqPlan, s: np.ndarray) -> np.ndarray:
    """A new C-contiguous (..., B, F) array in the plan's sorted batch order."""
    return s.copy() if plan.identity else np.ascontiguousarray(s[..., plan.perm, :])
