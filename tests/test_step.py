"""Streaming steppers (fastgru._step) against the NumPy reference: GRU both variants, LSTM with
and without projection, float32/float64, B = 1 and more, 1 and 2 threads; in-place weight updates
are seen; cheap argument checks reject a bad call instead of reading wrong memory."""

import numpy as np
import pytest

import fastgru
from fastgru import _step
from fastgru import reference as ref

from helpers import rel_err


def _w(rng, G, I, H, P, dtype):
    k = 1 / np.sqrt(H)
    return [
        rng.uniform(-k, k, s).astype(dtype) for s in [(G * H, I), (G * H, P), (G * H,), (G * H,)]
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B,I,H", [(1, 64, 256), (1, 1, 1), (3, 5, 7), (2, 33, 40)])
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_gru_step_matches_reference(dtype, B, I, H, reset_after, n_threads):
    rng = np.random.default_rng(B * 100 + H)
    w = _w(rng, 3, I, H, H, dtype)
    x = rng.standard_normal((B, I)).astype(dtype)
    h = rng.standard_normal((B, H)).astype(dtype)
    h_copy = h.copy()
    hn = _step.GRUStepper(*w, reset_after=reset_after, n_threads=n_threads).step(x, h)
    _, hr, _ = ref.gru_forward(
        x[None].astype(np.float64),
        h.astype(np.float64),
        *[a.astype(np.float64) for a in w],
        reset_after=reset_after,
        training=False,
    )
    assert hn.dtype == dtype and hn.shape == (B, H)
    assert rel_err(hn, hr) <= (1e-13 if dtype == np.float64 else 2e-6)
    np.testing.assert_array_equal(h, h_copy)  # the input state is not modified


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B,I,H,P", [(1, 64, 256, None), (2, 5, 8, 3), (1, 3, 5, None)])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_lstm_step_matches_reference(dtype, B, I, H, P, n_threads):
    rng = np.random.default_rng(H)
    Pw = H if P is None else P
    w = _w(rng, 4, I, H, Pw, dtype)
    w_hr = None if P is None else rng.uniform(-0.3, 0.3, (P, H)).astype(dtype)
    x, h, c = (rng.standard_normal(s).astype(dtype) for s in [(B, I), (B, Pw), (B, H)])
    hn, cn = _step.LSTMStepper(*w, w_hr=w_hr, n_threads=n_threads).step(x, h, c)
    _, hr, cr, _ = ref.lstm_forward(x[None], h, c, *w, w_hr=w_hr, training=False)
    t = 1e-13 if dtype == np.float64 else 2e-6
    assert rel_err(hn, hr) <= t and rel_err(cn, cr) <= t


def test_stepper_sees_in_place_weight_updates():
    rng = np.random.default_rng(0)
    w = _w(rng, 3, 4, 6, 6, np.float64)
    st = _step.GRUStepper(*w)
    x, h = rng.standard_normal((1, 4)), rng.standard_normal((1, 6))
    before = st.step(x, h)
    w[1] *= 0.5  # an optimizer step, in place
    w[3] += 0.1
    after = st.step(x, h)
    _, want, _ = ref.gru_forward(x[None], h, *w, training=False)
    np.testing.assert_allclose(after, want, rtol=1e-13, atol=1e-14)
    assert np.max(np.abs(after - before)) > 1e-3


def test_stepper_rejects_bad_arrays():
    rng = np.random.default_rng(0)
    st = _step.GRUStepper(*_w(rng, 3, 4, 6, 6, np.float32))
    x, h = np.zeros((1, 4), np.float32), np.zeros((1, 6), np.float32)
    for bad_x, bad_h in [
        (x.astype(np.float64), h),
        (np.zeros((1, 5), np.float32), h),
        (x, np.zeros((2, 6), np.float32)),
        (np.zeros((4, 2), np.float32).T, h),
        (x[0], h),
    ]:
        with pytest.raises((ValueError, TypeError)):
            st.step(bad_x, bad_h)
    lstm = _step.LSTMStepper(*_w(rng, 4, 4, 6, 6, np.float32))
    with pytest.raises(ValueError):
        lstm.step(x, h, None)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("L", [1, 2])
def test_step_output_does_not_share_memory_with_the_state(cell, L):
    """As torch's output and h_n: changing y in place (y *= mask) leaves the state alone."""
    cls = fastgru.GRU if cell == "gru" else fastgru.LSTM
    g = cls(5, 7, num_layers=L, seed=0).eval()
    x = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    for h0 in (None, np.zeros((L, 3, 7), np.float32)):
        st = h0 if (h0 is None or cell == "gru") else (h0, h0)
        y, s = g.step(x, st)
        h = s if cell == "gru" else s[0]
        assert not np.shares_memory(y, h)
        kept = h.copy()
        y *= 0
        np.testing.assert_array_equal(h, kept)
