"""The forward's input projection per step (gx_step, _packed.gx_per_step) against the one big
projection before the loop: the same sums in the same order, so bit-identical outputs, states
and gradients, for GRU (both variants) and LSTM (with and without projection), one and two
directions, variable lengths, training and inference, 1-3 threads; and against the reference."""

import numpy as np
import pytest

import fastgru
from fastgru import _packed, ops, reference

from helpers import call_forward, make_problem, rel_err, tol


def _spy(monkeypatch, taken):
    real = _packed.gx_per_step

    def spy(*a):
        on = real(*a)
        taken.append(on)
        return on
    monkeypatch.setattr(_packed, "gx_per_step", spy)


def _both(monkeypatch, fn):
    """fn() on the per-step route (asserting it was taken) and with it switched off."""
    taken: list = []
    _spy(monkeypatch, taken)
    per_step = fn()
    assert any(taken), "the per-step projection was not used"
    monkeypatch.setattr(_packed, "GX_STEP_MAX_BYTES", 0)
    taken.clear()
    whole = fn()
    assert taken and not any(taken)
    return per_step, whole


def _equal(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        return
    for u, v in zip(a, b, strict=True):
        if u is None or not isinstance(u, np.ndarray):
            continue
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("cell,variant", [("gru", True), ("gru", False), ("lstm", None),
                                          ("lstm", 24)])
@pytest.mark.parametrize("lengths", [False, True])
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("n_threads", [1, 2, 3])
@pytest.mark.parametrize("I", [70, 32])  # 32: K*N below the few-row own threshold (mm_proj)
def test_ops_per_step_projection_is_bit_identical(monkeypatch, cell, variant, lengths, training,
                                                  n_threads, I):
    if fastgru.simd_level() != "avx512":
        pytest.skip("the per-step projection runs on the own product kernel (AVX-512)")
    P = variant if cell == "lstm" and variant else None
    p = make_problem(cell, 9, 24, I, 64, dtype=np.float32, seed=n_threads, P=P,
                     lengths=lengths)
    kw = {"reset_after": variant} if cell == "gru" else {}

    def run():
        out = call_forward(ops, cell, p, training=training, n_threads=n_threads, **kw)
        if not training:
            return out[:-1], None
        dy = np.random.default_rng(0).standard_normal(out[0].shape).astype(np.float32)
        back = ops.gru_backward if cell == "gru" else ops.lstm_backward
        return out[:-1], back(out[-1], dy)

    (fwd_a, grads_a), (fwd_b, grads_b) = _both(monkeypatch, run)
    _equal(fwd_a, fwd_b)
    if training:
        _equal(grads_a, grads_b)
    ref = call_forward(reference, cell, p, training=False, **kw)
    for a, r in zip(fwd_a, ref[:-1], strict=True):
        assert rel_err(a, r) <= tol(np.float32, 9)


@pytest.mark.parametrize("cls,kw", [(fastgru.GRU, {}), (fastgru.LSTM, {}),
                                    (fastgru.LSTM, {"proj_size": 20})])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_bidirectional_layers_per_step_projection_is_bit_identical(monkeypatch, cls, kw,
                                                                     n_threads):
    if fastgru.simd_level() != "avx512":
        pytest.skip("the per-step projection runs on the own product kernel (AVX-512)")
    layer = cls(70, 64, num_layers=2, bidirectional=True, seed=1, n_threads=n_threads, **kw)
    rng = np.random.default_rng(2)
    # 20 steps: shorter sequences of 12 rows read the weights in place (_packed._in_place)
    x = rng.standard_normal((20, 12, 70)).astype(np.float32)
    lengths = rng.integers(1, 21, size=12)
    lengths[3] = 20

    def run():
        layer.zero_grad()
        y, _ = layer(x, lengths=lengths)
        dx = layer.backward(np.ones_like(y))
        return [y, dx[0] if isinstance(dx, tuple) else dx], dict(layer.grads())

    (out_a, g_a), (out_b, g_b) = _both(monkeypatch, run)
    _equal(out_a, out_b)
    _equal(g_a, g_b)
