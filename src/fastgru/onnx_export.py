"""Export a fastgru.GRU / fastgru.LSTM layer as an ONNX model (needs the `onnx` package).

ONNX's GRU and LSTM operators are single-layer, time-major and output Y as [T, D, B, H], so a
layer becomes a chain, per layer:  GRU/LSTM node -> Transpose [T, B, D, H] -> Reshape
[T, B, D*H]. batch_first adds a Transpose at each end; lengths map to `sequence_lens` (ONNX
Runtime zero-fills Y past each length and runs the reverse direction from each sequence's own
last step, as fastgru does). proj_size has no ONNX equivalent.

Graph inputs:  x [T, B, I] (or [B, T, I]); lengths int32 [B] (lengths=True); h0 [L*D, B, P]
               and, for LSTM, c0 [L*D, B, H] (initial_state=True).
Graph outputs: y [T, B, D*P] (or [B, T, D*P]); h_n [L*D, B, P]; for LSTM c_n [L*D, B, H].
"""
from __future__ import annotations

from typing import Any

import numpy as np

from fastgru._module import check_dtype
from fastgru.interop import to_onnx
from fastgru.saving import write_atomic

DEFAULT_OPSET = 17
_IR_FOR_OPSET = {14: 7, 15: 8, 16: 8, 17: 8, 18: 8, 19: 9, 20: 9, 21: 10, 22: 10}


def export_onnx(layer, path: Any = None, *, initial_state: bool = False, lengths: bool = False,
                opset: int = DEFAULT_OPSET, dtype: Any | None = None):
    """Build (and, with `path`, write atomically) an ONNX model computing `layer` in eval mode.

    initial_state: add graph inputs h0 (and c0); without them the states start at zero.
    lengths: add the int32 graph input `lengths` (B,) -> sequence_lens.
    opset: ONNX opset, 14 to 22. dtype: cast the weights (ONNX Runtime's CPU GRU/LSTM run
    float32 only; None keeps the layer's dtype). Returns the onnx.ModelProto.
    """
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("export_onnx needs the onnx package: pip install onnx") from None
    from fastgru.layers import GRU, LSTM

    if not isinstance(layer, (GRU, LSTM)):
        raise TypeError(f"layer must be a fastgru.GRU or fastgru.LSTM, got {type(layer).__name__}")
    if isinstance(layer, LSTM) and layer.proj_size:
        raise NotImplementedError("ONNX LSTM has no projection (proj_size); cannot export")
    if isinstance(opset, bool) or not isinstance(opset, int) or opset not in _IR_FOR_OPSET:
        raise ValueError(f"opset must be an int in [14, 22], got {opset!r}")
    for name, v in (("initial_state", initial_state), ("lengths", lengths)):
        if not isinstance(v, bool):
            raise TypeError(f"{name} must be True or False, got {v!r}")
    dt = layer.dtype if dtype is None else check_dtype(dtype)
    elem = TensorProto.FLOAT if dt == np.float32 else TensorProto.DOUBLE
    lstm = isinstance(layer, LSTM)
    L, D, H, I = layer.num_layers, layer.num_directions, layer.hidden_size, layer.input_size
    op = "LSTM" if lstm else "GRU"
    direction = ("bidirectional" if D == 2 else
                 "reverse" if getattr(layer, "reverse", False) else "forward")

    nodes, inits = [], []

    def const(name: str, a: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(a), name))
        return name

    x_shape = ["B", "T", I] if layer.batch_first else ["T", "B", I]
    inputs = [helper.make_tensor_value_info("x", elem, x_shape)]
    x = "x"
    if layer.batch_first:
        nodes.append(helper.make_node("Transpose", ["x"], ["x_tm"], perm=[1, 0, 2]))
        x = "x_tm"
    seq = ""
    if lengths:
        inputs.append(helper.make_tensor_value_info("lengths", TensorProto.INT32, ["B"]))
        seq = "lengths"
    if initial_state:
        inputs.append(helper.make_tensor_value_info("h0", elem, [L * D, "B", H]))
        if lstm:
            inputs.append(helper.make_tensor_value_info("c0", elem, [L * D, "B", H]))
    flat = const("shape_tb_", np.array([0, 0, -1], np.int64))
    hs, cs = [], []
    for l in range(L):
        W, R, B = to_onnx(layer, l)
        ins = [x, const(f"W{l}", W.astype(dt)), const(f"R{l}", R.astype(dt)),
               const(f"B{l}", B.astype(dt)) if B is not None else "", seq]
        if initial_state:
            starts = const(f"start{l}", np.array([l * D], np.int64))
            ends = const(f"end{l}", np.array([(l + 1) * D], np.int64))
            axes = const(f"axes{l}", np.array([0], np.int64))
            nodes.append(helper.make_node("Slice", ["h0", starts, ends, axes], [f"h0_{l}"]))
            ins.append(f"h0_{l}")
            if lstm:
                nodes.append(helper.make_node("Slice", ["c0", starts, ends, axes], [f"c0_{l}"]))
                ins.append(f"c0_{l}")
        else:
            ins += ["", ""] if lstm else [""]
        while ins and ins[-1] == "":  # trailing optional inputs are left out
            ins.pop()
        outs = [f"Y{l}", f"Yh{l}"] + ([f"Yc{l}"] if lstm else [])
        attrs = dict(hidden_size=H, direction=direction)
        if not lstm:
            attrs["linear_before_reset"] = int(layer.reset_after)
        nodes.append(helper.make_node(op, ins, outs, name=f"{op.lower()}_l{l}", **attrs))
        # [T, D, B, H] -> [T, B, D, H] -> [T, B, D*H]
        nodes.append(helper.make_node("Transpose", [f"Y{l}"], [f"Yt{l}"], perm=[0, 2, 1, 3]))
        x = f"y{l}"
        nodes.append(helper.make_node("Reshape", [f"Yt{l}", flat], [x]))
        hs.append(f"Yh{l}")
        cs.append(f"Yc{l}")
    if layer.batch_first:
        nodes.append(helper.make_node("Transpose", [x], ["y"], perm=[1, 0, 2]))
    else:
        nodes.append(helper.make_node("Identity", [x], ["y"]))
    states = [("h_n", hs)] + ([("c_n", cs)] if lstm else [])
    for name, parts in states:
        if len(parts) == 1:
            nodes.append(helper.make_node("Identity", parts, [name]))
        else:
            nodes.append(helper.make_node("Concat", parts, [name], axis=0))
    y_shape = ["B", "T", D * H] if layer.batch_first else ["T", "B", D * H]
    outputs = [helper.make_tensor_value_info("y", elem, y_shape)]
    outputs += [helper.make_tensor_value_info(n, elem, [L * D, "B", H]) for n, _ in states]
    graph = helper.make_graph(nodes, f"fastgru_{op.lower()}", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="fastgru")
    model.ir_version = _IR_FOR_OPSET[opset]
    onnx.checker.check_model(model)
    if path is not None:
        data = model.SerializeToString()
        write_atomic(path, lambda f: f.write(data))
    return model
