"""The backward's scratch: gate gradients reuse the forward's input-projection buffer, and the GRU
(reset after) keeps one (N, 3H) gate buffer plus an (N, H) one instead of two (N, 3H) ones. These
buffers made fastgru's peak training memory at S4 higher than PyTorch's (performance issue)."""
import numpy as np
import pytest

import fastgru
from fastgru import _workspace

T, B, I, H = 50, 16, 8, 16  # noqa: E741  (N * 3H far above any weight-sized scratch)
LAYERS = [
    pytest.param(lambda **k: fastgru.GRU(I, H, **k), id="gru"),
    pytest.param(lambda **k: fastgru.GRU(I, H, reset_after=False, **k), id="gru-reset-before"),
    pytest.param(lambda **k: fastgru.LSTM(I, H, **k), id="lstm"),
    pytest.param(lambda **k: fastgru.GRU(I, H, bidirectional=True, **k), id="bigru"),
]


def _x(seed, dtype):
    return np.random.default_rng(seed).standard_normal((T, B, I)).astype(dtype)


@pytest.mark.parametrize("make", LAYERS)
@pytest.mark.parametrize("n_threads", [1, 2])
def test_one_gate_sized_scratch_buffer_per_training_step(make, n_threads):
    layer = make(seed=0, dtype="float32", n_threads=n_threads)
    _workspace.clear()
    y, _ = layer(_x(0, np.float32))
    layer.backward(np.ones_like(y))
    gates = 4 if isinstance(layer, fastgru.LSTM) else 3
    big = T * B * layer.num_directions * gates * H * 4
    pool = getattr(_workspace._local, "pool", {})
    sizes = sorted(buf.nbytes for buf in pool.values())
    assert sum(s >= big for s in sizes) == 1, sizes
    # what else the step keeps is at most an (N, D*H) buffer (GRU's dan) and small scratch
    assert sum(sizes) - sizes[-1] <= T * B * layer.num_directions * H * 4 + big // 4, sizes


@pytest.mark.parametrize("make", LAYERS)
@pytest.mark.parametrize("lengths", [None, [50, 7, 31, 50, 1, 12, 50, 49, 2, 3, 4, 5, 6, 8, 9, 10]])
def test_training_steps_of_two_layers_may_interleave(make, lengths):
    """Forward A, forward B, backward A, backward B: the second forward reuses the scratch the
    first backward then reuses; gradients equal those of steps run one after the other."""
    dt = np.float64

    def step(layer, seed):
        y, _ = layer(_x(seed, dt), lengths=lengths)
        return y

    def grads(layer, y, seed):
        dy = np.random.default_rng(seed + 10).standard_normal(y.shape)
        layer.zero_grad()
        dx = layer.backward(dy)[0]
        return dx, layer.flat_grads().copy()

    a, b = make(seed=1, dtype="float64"), make(seed=2, dtype="float64")
    alone = []
    for layer, seed in ((a, 0), (b, 1)):
        alone.append(grads(layer, step(layer, seed), seed))
    ya, yb = step(a, 0), step(b, 1)
    together = [grads(a, ya, 0), grads(b, yb, 1)]
    for (dx1, g1), (dx2, g2) in zip(alone, together, strict=True):
        assert np.array_equal(dx1, dx2)
        assert np.array_equal(g1, g2)
        assert np.any(g1)
