"""The steppers' own row-dot products (dot_rows in _simd_kernels.h, used at B = 1 and 5-16 in
float32 on AVX2/AVX-512) against the float64 NumPy reference and against the BLAS route they
replace, at every SIMD level: batch groups of 4, 2 and 1 (and a group of 3 that repeats its
last row), row tails (N % 8), masked K tails (K % 16), 1-3 threads, every cell variant."""

import numpy as np
import pytest

import fastgru
from fastgru import _step
from fastgru import reference as ref
from fastgru._kernels import _stream

from helpers import rel_err

LEVELS = fastgru.available_simd_levels()
BATCHES = [1, 2, 3, 5, 6, 7, 8, 11, 16, 17]


def _weights(rng, G, I, H, P):
    k = 1 / np.sqrt(H)
    return [rng.uniform(-k, k, s).astype(np.float32) for s in [(G * H, I), (G * H, P), (G * H,),
                                                                 (G * H,)]]


def _run(level, make, args, dot):
    fastgru.set_simd_level(level)
    _stream._set_dot_rows(dot)
    try:
        return make().step(*args)
    finally:
        _stream._set_dot_rows(True)
        fastgru.set_simd_level(None)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("B", BATCHES)
@pytest.mark.parametrize("I,H", [(13, 70), (64, 256), (1, 9), (16, 8)])
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_gru_dot_rows_matches_reference_and_blas(level, B, I, H, reset_after, n_threads):
    rng = np.random.default_rng(B * 1000 + I * 10 + H)
    w = _weights(rng, 3, I, H, H)
    x = rng.standard_normal((B, I)).astype(np.float32)
    h = rng.standard_normal((B, H)).astype(np.float32)

    def make():
        return _step.GRUStepper(*w, reset_after=reset_after, n_threads=n_threads)

    own = _run(level, make, (x, h), True)
    blas = _run(level, make, (x, h), False)
    _, hr, _ = ref.gru_forward(x[None].astype(np.float64), h.astype(np.float64),
                               *[a.astype(np.float64) for a in w], reset_after=reset_after,
                               training=False)
    assert own.shape == (B, H) and np.isfinite(own).all()
    assert rel_err(own, hr) <= 2e-6
    np.testing.assert_allclose(own, blas, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("B", BATCHES)
@pytest.mark.parametrize("I,H,P", [(13, 70, None), (64, 256, None), (5, 24, 7), (33, 40, 17)])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_lstm_dot_rows_matches_reference_and_blas(level, B, I, H, P, n_threads):
    rng = np.random.default_rng(B * 1000 + I * 10 + H)
    Pw = H if P is None else P
    w = _weights(rng, 4, I, H, Pw)
    w_hr = None if P is None else rng.uniform(-0.3, 0.3, (P, H)).astype(np.float32)
    x, h, c = (rng.standard_normal(s).astype(np.float32) for s in [(B, I), (B, Pw), (B, H)])

    def make():
        return _step.LSTMStepper(*w, w_hr=w_hr, n_threads=n_threads)

    own_h, own_c = _run(level, make, (x, h, c), True)
    blas_h, blas_c = _run(level, make, (x, h, c), False)
    d = [a.astype(np.float64) for a in (x, h, c)]
    _, hr, cr, _ = ref.lstm_forward(d[0][None], d[1], d[2], *[a.astype(np.float64) for a in w],
                                    w_hr=None if w_hr is None else w_hr.astype(np.float64),
                                    training=False)
    assert own_h.shape == (B, Pw) and own_c.shape == (B, H)
    assert rel_err(own_h, hr) <= 2e-6 and rel_err(own_c, cr) <= 2e-6
    np.testing.assert_allclose(own_h, blas_h, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(own_c, blas_c, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("level", LEVELS)
def test_dot_rows_long_sequence_matches_forward(level):
    """Stepping a 1-layer GRU and LSTM through 40 steps at B = 1 gives forward()'s outputs."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, 1, 13)).astype(np.float32)
    fastgru.set_simd_level(level)
    try:
        for layer in (fastgru.GRU(13, 70, seed=1), fastgru.LSTM(13, 70, seed=1)):
            layer.eval()
            y_full, _ = layer(x)
            state = None
            for t in range(x.shape[0]):
                y, state = layer.step(x[t], state)
                np.testing.assert_allclose(y, y_full[t], rtol=1e-5, atol=1e-6)
    finally:
        fastgru.set_simd_level(None)
