"""Inference over one time step of a small batch (T = 1, B <= 8) takes the stepper kernel
(ops: fastgru/ops.py; layers: fastgru/_packed.py). Same results as the reference and as the
sequence kernels, for every variant: biases or none, h0 or none, reset before, projection,
float64, several thread counts; layers with several layers, against the same layer on T = 2."""
import numpy as np
import pytest

import fastgru
from fastgru import _packed, ops, reference

from helpers import call_forward, make_problem, rel_err, tol


@pytest.mark.parametrize("cell,variant", [("gru", True), ("gru", False), ("lstm", None),
                                          ("lstm", 5)])
@pytest.mark.parametrize("B", [1, 3, _packed.STEP_MAX_B])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_threads", [1, 2, 3])
@pytest.mark.parametrize("h0,bias", [(True, True), (False, False)])
def test_ops_one_step_matches_reference(cell, variant, B, dtype, n_threads, h0, bias):
    H = 300 if n_threads > 1 else 13  # H = 300: big enough for the units split
    P = variant if cell == "lstm" and variant else None
    p = make_problem(cell, 1, B, 7, H, dtype=dtype, seed=B + n_threads, P=P, h0=h0)
    if not bias:
        p["b_ih"] = p["b_hh"] = None
    kw = {"reset_after": variant} if cell == "gru" else {}
    out = call_forward(ops, cell, p, training=False, n_threads=n_threads, **kw)
    ref = call_forward(reference, cell, p, training=False, **kw)
    assert out[-1] is None
    for a, r in zip(out[:-1], ref[:-1], strict=True):
        assert a.dtype == dtype and a.shape == r.shape
        assert rel_err(a, r) <= tol(dtype, 1)
    assert not np.shares_memory(out[0], out[1])  # y and h_n are separate arrays
    # the same step through the sequence kernels (training=True takes them)
    seq = call_forward(ops, cell, p, training=True, n_threads=n_threads, **kw)
    for a, s in zip(out[:-1], seq[:-1], strict=True):
        assert rel_err(a, s) <= tol(dtype, 1)


@pytest.mark.parametrize("cls,kw", [(fastgru.GRU, {}), (fastgru.GRU, {"reset_after": False}),
                                    (fastgru.LSTM, {}), (fastgru.LSTM, {"proj_size": 3})])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_layers_one_step_equal_first_step_of_two(cls, kw, dtype, monkeypatch):
    """eval() with T = 1 (stepper route) equals the first output step of the same input with
    T = 2 (sequence kernels), through 2 stacked layers, with and without an initial state."""
    calls = []
    name = "_step_gru" if cls is fastgru.GRU else "_step_lstm"
    real = getattr(_packed, name)
    monkeypatch.setattr(_packed, name, lambda *a: calls.append(1) or real(*a))
    layer = cls(6, 9, num_layers=2, dtype=dtype, seed=0, **kw).eval()
    rng = np.random.default_rng(1)
    x2 = rng.standard_normal((2, 4, 6)).astype(dtype)
    y1, s1 = layer(x2[:1])
    assert len(calls) == 2  # both layers took the stepper route
    y2, _ = layer(x2)
    assert len(calls) == 2
    t = tol(np.dtype(dtype), 2)
    assert y1.shape == (1, 4, kw.get("proj_size", 9))
    assert rel_err(y1[0], y2[0]) <= t
    s1 = s1 if isinstance(s1, tuple) else (s1,)
    # the final state of the 1-step run feeds the next step: same as step 2 of the 2-step run
    y_next, _ = layer(x2[1:], s1 if len(s1) > 1 else s1[0])
    assert rel_err(y_next[0], y2[1]) <= t
