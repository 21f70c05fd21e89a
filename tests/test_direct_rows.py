"""With lengths, the forward kernels read x's rows straight from the padded batch (xrow, when
the input projection runs per step) and write y's rows straight to the padded output (yrow,
tasks mode) instead of packing before and unpacking after (_packed.PaddedIO). Same sums in the
same order: bit-identical to the packing route, for layers and ops, GRU (both variants) and
LSTM (with and without projection), one and two directions, float32 and float64, training and
inference, 1-3 threads; and against the reference."""

import numpy as np
import pytest

import fastgru
from fastgru import _packed, ops, reference
from fastgru._kernels import _gru, _lstm

from helpers import call_forward, make_problem, rel_err, tol


def _spy(monkeypatch):
    """Record, per kernel call, whether xrow / yrow were given."""
    seen: list[tuple[bool, bool]] = []
    for mod in (_gru, _lstm):
        real = mod.forward

        def spy(*a, _real=real, **k):
            seen.append((a[-2] is not None, a[-1] is not None))
            return _real(*a, **k)
        monkeypatch.setattr(_packed, mod.__name__.rsplit(".", 1)[1],
                            type("K", (), {"forward": staticmethod(spy),
                                           "backward": staticmethod(mod.backward)}))
    return seen


def _both(monkeypatch, fn):
    seen = _spy(monkeypatch)
    direct = fn()
    routes = list(seen)
    monkeypatch.setattr(_packed, "DIRECT_ROWS", False)
    seen.clear()
    packed = fn()
    assert not any(x or y for x, y in seen)
    return direct, packed, routes


def _equal(a, b):
    for u, v in zip(a, b, strict=True):
        if isinstance(u, np.ndarray):
            np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("cell,variant", [("gru", True), ("gru", False), ("lstm", None),
                                          ("lstm", 24)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_ops_direct_rows_bit_identical(monkeypatch, cell, variant, dtype, training, n_threads):
    P = variant if cell == "lstm" and variant else None
    p = make_problem(cell, 9, 24, 70, 64, dtype=dtype, seed=n_threads, P=P, lengths=True)
    kw = {"reset_after": variant} if cell == "gru" else {}

    def run():
        out = call_forward(ops, cell, p, training=training, n_threads=n_threads, **kw)
        return out[:-1]

    direct, packed, routes = _both(monkeypatch, run)
    _equal(direct, packed)
    assert routes and all(y for _, y in routes), "y was not written straight to padded rows"
    if dtype == np.float32 and not training and fastgru.simd_level() == "avx512":
        assert all(x for x, _ in routes), "x rows were not gathered by the kernel"
    if training:
        assert not any(x for x, _ in routes)  # the training cache holds the packed x
    ref = call_forward(reference, cell, p, training=False, **kw)
    for a, r in zip(direct, ref[:-1], strict=True):
        assert rel_err(a, r) <= tol(dtype, 9)


@pytest.mark.parametrize("cls,kw", [(fastgru.GRU, {}), (fastgru.GRU, {"reset_after": False}),
                                    (fastgru.LSTM, {}), (fastgru.LSTM, {"proj_size": 20})])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_layers_direct_rows_bit_identical(monkeypatch, cls, kw, bidirectional, training,
                                          n_threads):
    layer = cls(70, 64, num_layers=3, bidirectional=bidirectional, seed=1, n_threads=n_threads,
                **kw)
    layer.train(training)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((11, 12, 70)).astype(np.float32)
    lengths = rng.integers(1, 12, size=12)
    lengths[3] = 11

    def run():
        layer.zero_grad()
        y, state = layer(x, lengths=lengths)
        out = [y] + list(state if isinstance(state, tuple) else (state,))
        if training:
            dx = layer.backward(np.ones_like(y))
            out += [dx[0] if isinstance(dx, tuple) else dx] + list(layer.grads().values())
        return [a.copy() for a in out]

    direct, packed, routes = _both(monkeypatch, run)
    _equal(direct, packed)
    assert routes[-1][1]  # the last layer writes y straight to the padded output
    t = np.arange(11)[:, None]
    assert not direct[0][t >= lengths[None, :]].any()  # zeros at padding


def test_non_contiguous_x_takes_the_packing_route(monkeypatch):
    layer = fastgru.GRU(70, 64, seed=0).eval()
    x = np.random.default_rng(0).standard_normal((12, 9, 140)).astype(np.float32)[:, :, ::2]
    lengths = np.arange(3, 12)
    seen = _spy(monkeypatch)
    y, _ = layer(x, lengths=lengths)
    assert seen == [(False, True)]
    y2, _ = layer(np.ascontiguousarray(x), lengths=lengths)
    np.testing.assert_array_equal(y, y2)
