"""The layer API: fastgru.GRU and fastgru.LSTM (multi-layer, bidirectional, variable lengths,
forward and backward), the streaming cells, weight interop and save/load.

Semantics, shapes, state layout, initialisation and dropout placement follow torch.nn.GRU and
torch.nn.LSTM. Letters: T time, B batch, I input features, H hidden units, P = proj_size (LSTM)
or H, D = 2 if bidirectional else 1, L = num_layers.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from fastgru import _validation as V
from fastgru import interop
from fastgru._rnn import RNNBase
from fastgru.cells import GRUCell, LSTMCell
from fastgru.saving import load

__all__ = ["GRU", "LSTM", "GRUCell", "LSTMCell", "load", "export_onnx"]

ArrayLike = Any
LSTMState = tuple[np.ndarray, np.ndarray]


def export_onnx(layer: RNNBase, path: Any = None, **kwargs):
    """Export a GRU/LSTM layer to an ONNX model (see fastgru.onnx_export.export_onnx)."""
    from fastgru.onnx_export import export_onnx as _export

    return _export(layer, path, **kwargs)


class _LayerInterop(interop.InteropMixin):
    """Interop that only whole layers have: Keras layer objects, ONNX, ONNX export."""

    @classmethod
    def from_keras(cls, keras_layer: Any, dtype: Any = None, **kwargs):
        """A layer equivalent to a Keras GRU/LSTM layer, or a Bidirectional of one with
        merge_mode="concat", or a list of them (a Keras stack: num_layers = len(list)).
        batch_first=True (Keras data is (B, T, I)) unless given."""
        return interop.from_keras(cls, keras_layer, dtype=dtype, **kwargs)

    def to_keras(self, **kwargs: Any) -> Any:
        """Built Keras 3 layers with this layer's weights: a keras.layers.GRU/LSTM (in a
        Bidirectional with merge_mode="concat" when bidirectional) for one layer, a list for a
        stack; return_sequences=True, kwargs go to each GRU/LSTM (e.g. return_state=True).
        See fastgru.interop.to_keras."""
        return interop.to_keras(self, **kwargs)

    def to_onnx(self, layer: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """ONNX operator inputs (W [D, G, I], R [D, G, H], B [D, 2G] or None without bias) of
        one layer. GRU gates z, r, h (linear_before_reset = int(reset_after)); LSTM gates
        i, o, f, c. Directions stacked on the first axis: forward, reverse."""
        return interop.to_onnx(self, layer)

    @classmethod
    def from_onnx_model(cls, model: Any, dtype: Any = None, **kwargs):
        """A layer from the GRU (or LSTM) nodes of an ONNX model (a path, bytes or an
        onnx.ModelProto; needs the `onnx` package): the nodes in graph order become the layers,
        as written by export_onnx or torch.onnx.export. Direction, linear_before_reset and
        layout (batch_first) come from the nodes; see fastgru.interop.from_onnx_model."""
        return interop.from_onnx_model(cls, model, dtype=dtype, **kwargs)

    def export_onnx(self, path: Any = None, **kwargs):
        """Export the whole layer as an ONNX model (a chain of GRU/LSTM nodes); writes `path`
        atomically when given and returns the onnx.ModelProto. See
        fastgru.onnx_export.export_onnx for the options (initial_state, lengths, opset, dtype)."""
        return export_onnx(self, path, **kwargs)  # type: ignore[arg-type]  # a mixin of RNNBase


class GRU(_LayerInterop, RNNBase):
    """Multi-layer (bidirectional) GRU, as torch.nn.GRU, computed by fastgru's kernels.

    Per layer and direction (PyTorch gate order r, z, n):
        r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
        z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
        n = tanh(W_in x + b_in + r * (W_hn h + b_hn))      reset_after=False: W_hn (r * h) + b_hn
        h' = (1 - z) * n + z * h

    Args:
        input_size: I. hidden_size: H. num_layers: L. bias: use b_ih and b_hh.
        batch_first: x and y are (B, T, .) instead of (T, B, .).
        dropout: probability of dropping the outputs of each layer but the last (training).
        bidirectional: D = 2 directions; y holds [forward, reverse] on its last axis.
        reset_after: True = PyTorch / cuDNN / Keras default / ONNX linear_before_reset=1;
            False = Cho et al. 2014 / Keras reset_after=False / ONNX default (no PyTorch twin).
        dtype: "float32" or "float64" (parameters and every input).
        seed: seeds initialisation (U(-1/sqrt(H), 1/sqrt(H))) and the dropout masks.
        backend: "fast" (kernels) or "reference" (fastgru.reference, pure NumPy, for checks).
        n_threads: kernel threads: None (default policy), -1 (all cores) or >= 1.
        reverse: one direction that runs each sequence from its last valid step to its first,
            outputs at their own time steps (ONNX direction="reverse"; Keras go_backwards=True,
            whose return_sequences output is y reversed in time). No PyTorch counterpart.
        zero_output_for_mask: with mask= (Keras semantics), y is 0 past each sequence's end
            instead of the carried state (Keras' argument of the same name; Bidirectional
            layers always give 0 there). Calls with lengths= always give 0 there.
        train_bias_hh: False keeps bias_hh fixed in training (gradient left at zero): Keras'
            single bias, which from_keras splits into bias_ih and a zero bias_hh (set there
            for LSTM and reset_after=False GRU, so fine-tuning moves it at Keras' rate).

    Shapes: x (T, B, I) (or (B, T, I), or (T, I) unbatched); h0, h_n (L*D, B, H); y (T, B, D*H).
    Parameters (PyTorch names): weight_ih_l{k}[_reverse] (3H, I or D*H), weight_hh_l{k} (3H, H),
    bias_ih_l{k} (3H,), bias_hh_l{k} (3H,).
    """

    _cell = "gru"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 reset_after: bool = True, dtype: Any = "float32", seed: Any = None, *,
                 backend: str = "fast", n_threads: int | None = None,
                 reverse: bool = False, zero_output_for_mask: bool = False,
                 train_bias_hh: bool = True) -> None:
        self.train_bias_hh = train_bias_hh
        self._setup(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                    bidirectional, 0, reset_after, dtype, seed, backend, n_threads, reverse,
                    zero_output_for_mask)

    reset_after = property(lambda self: self._reset_after,
                           doc="True: reset gate after the recurrent product (PyTorch).")

    def forward(self, x: ArrayLike, h0: ArrayLike | None = None, lengths: Any = None, *,
                requires_grad: bool | None = None, mask: Any = None,
                hx: ArrayLike | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Run the layer. Returns (y, h_n).

        x: (T, B, I), or (B, T, I) with batch_first, or (T, I) unbatched; the layer's dtype.
        h0: (L*D, B, H) (unbatched: (L*D, H)), None for zeros.
        lengths: (B,) ints in [1, T] (list, array or tensor), any order: PackedSequence
            semantics (y is 0 past each end, h_n is the state at each sequence's last step; the
            reverse direction starts at each sequence's own last step).
        requires_grad: keep what backward() needs; None = the training mode.
        mask: instead of lengths, Keras masking semantics: booleans shaped like x's first two
            axes ((B, T) with batch_first, (T, B) without, (T,) unbatched), True at valid
            steps: right or left padding or gaps; a sequence may be fully masked. The state
            carries across the masked steps (h_n = h0 for a fully masked sequence). At a masked
            step y is what the Keras layer returns there: a forward layer repeats its previous
            output (h0 before the first valid step), a reverse=True layer the output of the
            next valid step (h0 after the last; y[:, ::-1] is Keras' go_backwards output) and a
            bidirectional layer gives 0 (Keras' Bidirectional).
        hx: another name for h0 (torch.nn.GRU's keyword); give one of them.
        y: (T, B, D*H) (batch_first: (B, T, D*H)); h_n: (L*D, B, H).
        """
        h0 = V.state_or_hx("h0", h0, hx)
        if isinstance(h0, tuple):  # an LSTM habit; torch refuses it too
            raise TypeError("h0 of a GRU is one array (num_layers * num_directions, B, H), not "
                            "a tuple (an LSTM takes (h0, c0))")
        y, hn, _ = self._run(x, h0, None, lengths, requires_grad, mask)
        return y, hn

    def __call__(self, x: ArrayLike, h0: ArrayLike | None = None, lengths: Any = None, *,
                 requires_grad: bool | None = None, mask: Any = None,
                 hx: ArrayLike | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Same as forward()."""
        return self.forward(x, h0, lengths, requires_grad=requires_grad, mask=mask, hx=hx)

    def backward(self, dy: ArrayLike | None, dh_n: ArrayLike | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Backpropagate through the last training forward. Returns (dx, dh0) and ADDS the
        parameter gradients into grads() (call zero_grad() between steps).

        dy: dL/dy, shaped like y (None: no loss on y); dh_n: dL/dh_n (L*D, B, H) or None.
        dx is shaped like x (zeros at padding); dh0 like h0. Calling backward again reuses the
        same forward cache and accumulates again (like retain_graph=True).
        """
        dx, dh0, _ = self._run_backward(dy, dh_n, None)
        return dx, dh0

    def step(self, x: ArrayLike, h: ArrayLike | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One time step for streaming inference (unidirectional layers; no dropout, no grads).

        x: (B, I) (or (I,)); h: (L, B, H) state from the previous step, None for zeros.
        Returns (y (B, H), h_new (L, B, H)): y is the last layer's new hidden state.
        Stepping through a sequence gives forward()'s numbers to rounding (~1e-7 float32)."""
        if self._reverse or self._bidirectional:
            self._streamable()
        steppers = self._steppers or self._stepper_list()
        if (len(steppers) == 1 and type(x) is np.ndarray and type(h) is np.ndarray
                and x.ndim == 2 and h.ndim == 3 and x.shape[0] and h.shape[0] == 1):
            try:  # the hot path: the stepper checks dtype, shapes and contiguity in C
                return steppers[0].step_layer(x, h)
            except ValueError:
                pass  # the checks below convert or explain
        x, unbatched = self._step_x(x)
        h = self._step_state("h", h, x.shape[0], self._H, unbatched)
        y, hn, _ = self._steps(x, h, None)
        return (y[0], hn[:, 0]) if unbatched else (y, hn)

    @classmethod
    def from_onnx(cls, W: ArrayLike, R: ArrayLike, B: ArrayLike | None = None,
                  linear_before_reset: int | None = None, direction: str = "forward",
                  dtype: Any = None, **kwargs) -> GRU:
        """A one-layer GRU from ONNX GRU inputs: W [D, 3H, I], R [D, 3H, H], B [D, 6H] (None:
        zero biases, gives bias=False), gate order z, r, h. linear_before_reset=1 gives
        reset_after=True (PyTorch's GRU, fastgru's default and to_onnx() of such a layer), 0
        reset_after=False; not given: ONNX's default 0, with a warning (the arrays cannot
        tell, and to_onnx() of a default layer needs 1; reset_after= is taken in its place).
        direction "forward", "reverse" (gives reverse=True) or "bidirectional". kwargs: extra
        constructor arguments (batch_first, n_threads, ...); sizes, bias and bidirectional come
        from the arrays and are refused here."""
        return interop.from_onnx(cls, W, R, B, linear_before_reset=linear_before_reset,
                                 direction=direction, dtype=dtype, **kwargs)


class LSTM(_LayerInterop, RNNBase):
    """Multi-layer (bidirectional) LSTM with optional projection, as torch.nn.LSTM.

    Per layer and direction (PyTorch gate order i, f, g, o):
        i, f, o = sigmoid(W_i* x + b_i* + W_h* h + b_h*),  g = tanh(...)
        c' = f * c + i * g;   h' = o * tanh(c')   (proj_size: h' = W_hr (o * tanh(c')))

    Args as GRU (no reset_after), plus proj_size: P < H, 0 for none.
    Shapes: x (T, B, I); h0, h_n (L*D, B, P); c0, c_n (L*D, B, H); y (T, B, D*P) with P = H
    without projection. Parameters: weight_ih_l{k}[_reverse] (4H, I or D*P), weight_hh_l{k}
    (4H, P), bias_ih_l{k}, bias_hh_l{k} (4H,), weight_hr_l{k} (P, H) with proj_size.
    """

    _cell = "lstm"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, dtype: Any = "float32", seed: Any = None, *,
                 backend: str = "fast", n_threads: int | None = None,
                 reverse: bool = False, zero_output_for_mask: bool = False,
                 train_bias_hh: bool = True) -> None:
        self.train_bias_hh = train_bias_hh
        self._setup(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                    bidirectional, proj_size, True, dtype, seed, backend, n_threads, reverse,
                    zero_output_for_mask)

    proj_size = property(lambda self: self._proj, doc="P, the projection size (0: none).")

    @staticmethod
    def _split_state(name: str, hx: Any) -> tuple[Any, Any]:
        if hx is None:
            return None, None
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise TypeError(f"{name} must be a tuple (h, c) of two arrays (or None), got "
                            f"{V.describe_state(hx)}")
        return hx[0], hx[1]

    def forward(self, x: ArrayLike, hx: tuple[ArrayLike, ArrayLike] | None = None,
                lengths: Any = None, *, requires_grad: bool | None = None, mask: Any = None
                ) -> tuple[np.ndarray, LSTMState]:
        """Run the layer. Returns (y, (h_n, c_n)).

        x: (T, B, I), or (B, T, I) with batch_first, or (T, I) unbatched.
        hx: (h0 (L*D, B, P), c0 (L*D, B, H)) or None for zeros (either may be None).
        lengths, requires_grad, mask: as GRU.forward (a fully masked sequence keeps h0 and c0).
        y: (T, B, D*P); h_n: (L*D, B, P); c_n: (L*D, B, H).
        """
        h0, c0 = self._split_state("hx", hx)
        y, hn, cn = self._run(x, h0, c0, lengths, requires_grad, mask)
        return y, (hn, cn)

    def __call__(self, x: ArrayLike, hx: tuple[ArrayLike, ArrayLike] | None = None,
                 lengths: Any = None, *, requires_grad: bool | None = None, mask: Any = None
                 ) -> tuple[np.ndarray, LSTMState]:
        """Same as forward()."""
        return self.forward(x, hx, lengths, requires_grad=requires_grad, mask=mask)

    def backward(self, dy: ArrayLike | None, dh_n: Any = None, dc_n: ArrayLike | None = None
                 ) -> tuple[np.ndarray, LSTMState]:
        """Backpropagate through the last training forward. Returns (dx, (dh0, dc0)) and ADDS
        the parameter gradients into grads().

        dy: shaped like y or None. dh_n (L*D, B, P) and dc_n (L*D, B, H), or None; dh_n may
        also be the tuple (dh_n, dc_n), mirroring the forward's (h_n, c_n)."""
        if isinstance(dh_n, (tuple, list)):
            if dc_n is not None:
                raise TypeError("give dc_n either inside the dh_n tuple or as dc_n, not both")
            dh_n, dc_n = self._split_state("dh_n", dh_n)
        dx, dh0, dc0 = self._run_backward(dy, dh_n, dc_n)
        return dx, (dh0, dc0)

    def step(self, x: ArrayLike, hx: tuple[ArrayLike, ArrayLike] | None = None
             ) -> tuple[np.ndarray, LSTMState]:
        """One time step for streaming inference (unidirectional layers).

        x: (B, I) (or (I,)); hx: (h (L, B, P), c (L, B, H)) or None. Returns
        (y (B, P), (h_new (L, B, P), c_new (L, B, H)))."""
        self._streamable()  # a bidirectional or reverse layer is refused first
        self._steppers or self._stepper_list()
        x, unbatched = self._step_x(x)
        h, c = self._split_state("hx", hx)
        B = x.shape[0]
        h = self._step_state("h", h, B, self._P, unbatched)
        c = self._step_state("c", c, B, self._H, unbatched)
        y, hn, cn = self._steps(x, h, c)
        if unbatched:
            return y[0], (hn[:, 0], cn[:, 0])
        return y, (hn, cn)

    @classmethod
    def from_onnx(cls, W: ArrayLike, R: ArrayLike, B: ArrayLike | None = None,
                  direction: str = "forward", dtype: Any = None, P: ArrayLike | None = None,
                  **kwargs) -> LSTM:
        """A one-layer LSTM from ONNX LSTM inputs: W [D, 4H, I], R [D, 4H, H], B [D, 8H] (None:
        zero biases, gives bias=False), gate order i, o, f, c. direction "forward", "reverse"
        (gives reverse=True) or "bidirectional". Peepholes P are not supported
        (NotImplementedError unless all zero)."""
        return interop.from_onnx(cls, W, R, B, direction=direction, dtype=dtype, P=P, **kwargs)
