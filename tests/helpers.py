"""Shared helpers for the fastgru tests: random problems, tolerances, optional torch."""
from __future__ import annotations

import numpy as np
import pytest

try:  # torch is an optional test dependency (installed by .ci/run)
    import torch  # noqa: F401

    HAVE_TORCH = True
except ImportError:  # pragma: no cover - depends on the environment
    HAVE_TORCH = False

requires_torch = pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed")

GATES = {"gru": 3, "lstm": 4}


def make_problem(cell, T, B, I, H, dtype=np.float64, seed=0, P=None, lengths=False, h0=True):
    """Random x, states, weights (PyTorch init scale) and optionally lengths."""
    rng = np.random.default_rng(seed)
    G = GATES[cell] * H
    Pw = H if P is None else P
    k = 1.0 / np.sqrt(H)

    def u(*shape):
        return rng.uniform(-k, k, size=shape).astype(dtype)

    p = dict(x=rng.standard_normal((T, B, I)).astype(dtype),
             w_ih=u(G, I), w_hh=u(G, Pw), b_ih=u(G), b_hh=u(G))
    p["h0"] = rng.standard_normal((B, Pw)).astype(dtype) * 0.5 if h0 else None
    if cell == "lstm":
        p["c0"] = rng.standard_normal((B, H)).astype(dtype) * 0.5 if h0 else None
        if P is not None:
            p["w_hr"] = u(P, H)
    if lengths:
        L = rng.integers(1, T + 1, size=B)
        L[rng.integers(B)] = T  # at least one full-length sequence
        p["lengths"] = L
    else:
        p["lengths"] = None
    return p


def call_forward(mod, cell, p, **kw):
    """mod.gru_forward / mod.lstm_forward on a problem dict."""
    if cell == "gru":
        return mod.gru_forward(p["x"], p["h0"], p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"],
                               lengths=p["lengths"], **kw)
    return mod.lstm_forward(p["x"], p["h0"], p["c0"], p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"],
                            lengths=p["lengths"], w_hr=p.get("w_hr"), **kw)


def rel_err(a, b):
    """max |a - b| scaled by max(1, max |b|)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))


def tol(dtype, T):
    """Tolerance of a kernel result against the float64 reference."""
    if np.dtype(dtype) == np.float64:
        return 1e-10
    return 3e-6 * (1.0 + np.sqrt(T))


THREADS = [1, 2, 3]


def onnx_model(graph, opset=17):
    """helper.make_model with the IR version pinned as fastgru's exporter pins it: make_model
    stamps the onnx package's newest IR version (14 with onnx 1.23), which an older ONNX Runtime
    refuses ("Unsupported model IR version: 14, max supported IR version: 13")."""
    from onnx import helper

    from fastgru.onnx_export import _IR_FOR_OPSET

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = _IR_FOR_OPSET[opset]
    return model
