"""Benchmark runners shared by `fastgru bench` and the pytest-benchmark suite in bench/.

Each runner is a zero-argument callable doing one GRU/LSTM call (inference, or a training step
= forward + backward of y.sum() with all parameter and input gradients) at a fixed thread count,
on the same float32 weights for every implementation:
  fastgru     fastgru.ops (n_threads=threads)
  reference   fastgru.reference (NumPy; its BLAS limited to `threads`)
  torch       torch.nn.GRU / torch.nn.LSTM (torch.set_num_threads(threads)), when installed
  onnxruntime the ONNX GRU/LSTM operator (intra_op_num_threads=threads), when installed
  sgemm       a square float32 GEMM through scipy's BLAS: the machine's ceiling at that thread count
Shapes (T, B, I, H) are the performance issue's S1..S6. Effective GFLOP/s counts the forward as
2 T B G H (I + H) with G = 3 (GRU) or 4 (LSTM), and a training step as 3 forwards.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

SHAPES: dict[str, tuple[int, int, int, int]] = {
    "S1": (200, 32, 32, 64),
    "S2": (500, 64, 64, 128),
    "S3": (100, 64, 256, 256),
    "S4": (50, 128, 512, 1024),
    "S5": (1, 1, 64, 256),
    "S6": (1000, 1, 64, 128),
}
GATES = {"gru": 3, "lstm": 4}
IMPLS = ("fastgru", "reference", "torch", "onnxruntime")
STEP_IMPL = "fastgru-step"  # the streaming cell path (T = 1, inference): fastgru._step


def flops(cell: str, mode: str, shape: tuple[int, int, int, int]) -> float:
    T, B, I, H = shape
    f = 2.0 * T * B * GATES[cell] * H * (I + H)
    return f * (3.0 if mode == "train" else 1.0)


def problem(cell: str, shape, seed: int = 0, lengths: str | None = None):
    """x (T, B, I), weights (PyTorch layout, init scale) and optional lengths, float32."""
    T, B, I, H = shape
    rng = np.random.default_rng(seed)
    G = GATES[cell] * H
    k = 1.0 / math.sqrt(H)
    w = [rng.uniform(-k, k, s).astype(np.float32) for s in [(G, I), (G, H), (G,), (G,)]]
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    L = None
    if lengths not in (None, "half-to-full"):
        raise ValueError(f"lengths must be None or 'half-to-full', got {lengths!r}")
    if lengths == "half-to-full":  # uniform in [T/2, T], one full-length sequence
        L = rng.integers(T // 2, T + 1, size=B)
        L[0] = T
    return x, w, L


def available(impl: str) -> bool:
    try:
        if impl == "torch":
            import torch  # noqa: F401
        elif impl == "onnxruntime":
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def make_runner(impl: str, cell: str, mode: str, shape, threads: int,
                lengths: str | None = None, seed: int = 0) -> Callable[[], object] | None:
    """A callable doing one call of `impl`, or None when the impl is not installed or does not
    support the case (ONNX Runtime: inference only)."""
    if not available(impl):
        return None
    x, w, L = problem(cell, shape, seed, lengths)
    if impl == "fastgru":
        return _fastgru(cell, mode, x, w, L, threads)
    if impl == STEP_IMPL:
        return _stepper(cell, x, w, threads) if (mode == "inf" and x.shape[0] == 1) else None
    if impl == "reference":
        return _reference(cell, mode, x, w, L, threads)
    if impl == "torch":
        return _torch(cell, mode, x, w, L, threads)
    if impl == "onnxruntime":
        return None if mode == "train" else _ort(cell, x, w, L, threads)
    raise ValueError(f"unknown implementation {impl!r}")


def _fastgru(cell, mode, x, w, L, threads):
    from fastgru import ops

    # dL/dy of y.sum(): a constant, made once (PyTorch's backward of sum() expands a scalar)
    dy = np.ones((x.shape[0], x.shape[1], w[1].shape[1]), x.dtype)
    if cell == "gru":
        if mode == "inf":
            return lambda: ops.gru_forward(x, None, *w, lengths=L, training=False,
                                           n_threads=threads)

        def train():
            _, _, c = ops.gru_forward(x, None, *w, lengths=L, n_threads=threads)
            assert c is not None
            return ops.gru_backward(c, dy)
        return train
    if mode == "inf":
        return lambda: ops.lstm_forward(x, None, None, *w, lengths=L, training=False,
                                        n_threads=threads)

    def train_lstm():
        _, _, _, c = ops.lstm_forward(x, None, None, *w, lengths=L, n_threads=threads)
        assert c is not None
        return ops.lstm_backward(c, dy)
    return train_lstm


def _stepper(cell, x, w, threads):
    from fastgru import _step

    B, H = x.shape[1], w[1].shape[1]
    x0 = np.ascontiguousarray(x[0])
    h = np.zeros((B, H), np.float32)
    if cell == "gru":
        gst = _step.GRUStepper(w[0], w[1], w[2], w[3], n_threads=threads)
        return lambda: gst.step(x0, h)
    lst = _step.LSTMStepper(w[0], w[1], w[2], w[3], n_threads=threads)
    c = np.zeros((B, H), np.float32)
    return lambda: lst.step(x0, h, c)


_controller: Any = None


def blas_limit(threads: int):
    """A context limiting the BLAS to `threads`: a controller found once (threadpool_limits()
    looks for the libraries again at every call, ~1 ms here, which was timed with the
    reference and the SGEMM baseline: 7% of a 1-thread SGEMM, most of a reference S5 step)."""
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
    return _controller.limit(limits=threads, user_api="blas")


def _reference(cell, mode, x, w, L, threads):
    from fastgru import reference as ref

    def run():
        with blas_limit(threads):
            if cell == "gru":
                y, _, c = ref.gru_forward(x, None, *w, lengths=L, training=mode == "train")
                return ref.gru_backward(c, np.ones_like(y)) if mode == "train" else y
            y, _, _, c = ref.lstm_forward(x, None, None, *w, lengths=L, training=mode == "train")
            return ref.lstm_backward(c, np.ones_like(y)) if mode == "train" else y
    return run


def torch_module(cell, w):
    import torch

    G, I = w[0].shape
    H = w[1].shape[1]
    m: Any = torch.nn.GRU(I, H) if cell == "gru" else torch.nn.LSTM(I, H)
    with torch.no_grad():
        params = [m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0]
        for p, a in zip(params, w, strict=True):
            p.copy_(torch.from_numpy(a))
    return m


def _torch(cell, mode, x, w, L, threads):
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    torch.set_num_threads(threads)
    m = torch_module(cell, w)
    xt = torch.from_numpy(x)
    T = x.shape[0]
    Lt = None if L is None else torch.from_numpy(L)
    params = list(m.parameters())

    def forward(inp):
        if Lt is None:
            return m(inp)[0]
        out = m(pack_padded_sequence(inp, Lt, enforce_sorted=False))[0]
        return pad_packed_sequence(out, total_length=T)[0]

    if mode == "inf":
        def inf():
            with torch.inference_mode():
                return forward(xt)
        return inf
    xg = xt.clone().requires_grad_(True)

    def train():
        for p in params:
            p.grad = None
        xg.grad = None
        forward(xg).sum().backward()
        return xg.grad
    return train


def onnx_model_bytes(cell, w, with_lengths=False):
    """A one-node ONNX GRU (linear_before_reset=1) or LSTM model for these PyTorch weights."""
    from onnx import TensorProto, helper, numpy_helper

    G, I = w[0].shape
    H = w[1].shape[1]
    order: tuple
    if cell == "gru":   # PyTorch r,z,n -> ONNX z,r,h
        order = (1, 0, 2)
    else:               # PyTorch i,f,g,o -> ONNX i,o,f,c
        order = (0, 3, 1, 2)

    def ro(a):
        return np.concatenate([a[g * H:(g + 1) * H] for g in order], axis=0)

    W = ro(w[0])[None]
    R = ro(w[1])[None]
    Bb = np.concatenate([ro(w[2]), ro(w[3])])[None]
    inits = [numpy_helper.from_array(W, "W"), numpy_helper.from_array(R, "R"),
             numpy_helper.from_array(Bb, "B")]
    inputs = ["X", "W", "R", "B"] + (["seq"] if with_lengths else [])
    attrs = dict(hidden_size=H)
    if cell == "gru":
        attrs["linear_before_reset"] = 1
    node = helper.make_node("GRU" if cell == "gru" else "LSTM", inputs, ["Y", "Y_h"], **attrs)
    graph_inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", I])]
    if with_lengths:
        graph_inputs.append(helper.make_tensor_value_info("seq", TensorProto.INT32, ["B"]))
    graph = helper.make_graph([node], "rnn", graph_inputs,
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    return model.SerializeToString()


def _ort(cell, x, w, L, threads):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(onnx_model_bytes(cell, w, L is not None), so,
                                providers=["CPUExecutionProvider"])
    feeds = {"X": x}
    if L is not None:
        feeds["seq"] = L.astype(np.int32)
    return lambda: sess.run(["Y"], feeds)


def sgemm_runner(threads: int, n: int = 1024) -> Callable[[], object]:
    """C = A @ B, float32 (n, n), through scipy's BLAS (the one fastgru calls)."""
    from scipy.linalg.blas import sgemm

    rng = np.random.default_rng(0)
    a = np.asfortranarray(rng.standard_normal((n, n)).astype(np.float32))
    b = np.asfortranarray(rng.standard_normal((n, n)).astype(np.float32))

    def run():
        with blas_limit(threads):
            return sgemm(1.0, a, b)
    return run


def measure(fn: Callable[[], object], budget: float = 1.0, min_reps: int = 3,
            max_reps: int = 30, min_rep_s: float = 0.02) -> dict[str, float]:
    """Median and minimum seconds per call (warm-up call untimed; fast calls are batched so
    each timed repetition lasts at least min_rep_s)."""
    if not 0 < budget < math.inf:
        raise ValueError(f"budget must be a positive number of seconds, got {budget!r}")
    fn()
    t = time.perf_counter()
    fn()
    t1 = max(time.perf_counter() - t, 1e-7)
    inner = max(1, int(math.ceil(min_rep_s / t1)))
    reps = max(min_reps, min(max_reps, int(budget / (t1 * inner))))
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t) / inner)
    times.sort()
    return {"median_s": float(np.median(times)), "min_s": times[0], "reps": reps, "inner": inner}


def training_memory_bytes(impl: str, cell: str, shape, lengths=None) -> int | None:
    """Bytes kept between forward and backward for one training step: fastgru's cache arrays, or
    the tensors PyTorch's autograd saves (measured with saved_tensors_hooks)."""
    x, w, L = problem(cell, shape, lengths=lengths)
    if impl == "fastgru":
        from fastgru import ops

        if cell == "gru":
            y, _, c = ops.gru_forward(x, None, *w, lengths=L)
        else:
            y, _, _, c = ops.lstm_forward(x, None, None, *w, lengths=L)
        assert c is not None
        pc = c.packed
        # every array the cache holds that is not the caller's x or weights (the packed copy
        # of x counts: torch keeps x by reference)
        kept = [getattr(pc, k) for k in pc.__slots__]
        return int(sum(a.nbytes for a in kept if isinstance(a, np.ndarray)
                       and not any(np.shares_memory(a, b) for b in [x, *w])))
    if impl == "torch" and available("torch"):
        import torch

        m = torch_module(cell, w)
        total = [0]
        xg = torch.from_numpy(x).requires_grad_(True)
        # x and the weights are saved by reference (as fastgru's cache keeps them): not counted
        seen = {p.untyped_storage().data_ptr() for p in list(m.parameters()) + [xg]}

        def pack(t):
            key = t.untyped_storage().data_ptr()
            if key not in seen and key != 0:
                seen.add(key)
                total[0] += t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y = m(xg)[0]
        y.sum().backward()
        return total[0]
    return None
