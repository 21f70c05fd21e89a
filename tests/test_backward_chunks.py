"""Chunked GRU backward (one thread, float32): the weight-gradient, bias and dx products of each
chunk of packed rows run inside the reversed time loop instead of over all rows afterwards.
Chunks of 1-64 rows (so small problems take every path: flushes mid-step-range, steps of
different batch sizes, the last partial chunk) against the unchunked kernel and the float64
reference, for both GRU variants, lengths, reverse, h0/dh_n and accumulated gradients."""
import numpy as np
import pytest

import fastgru
from fastgru import ops, reference
from fastgru._kernels import _gru

from helpers import make_problem, rel_err


@pytest.fixture
def chunk_rows():
    """Set the chunk rows for a test (any problem size, any weight size); restored after."""
    old = _gru._set_bwd_chunk(0, 0)
    _gru._set_bwd_chunk(*old)

    def set_rows(rows):
        _gru._set_bwd_chunk(rows, 1 << 40)

    yield set_rows
    _gru._set_bwd_chunk(*old)


def _grads(p, dy, dh_n, reset_after, reverse, dtype="float32", backend="fast"):
    """dx, dh0 and the parameter gradients, one thread. Through ops (the kernel overwrites the
    gradients) or, for reverse, a layer (the kernel adds to the layer's zeroed gradients)."""
    H = p["w_hh"].shape[1]
    x, h0 = p["x"].astype(dtype), p["h0"].astype(dtype)
    dy, dh_n = dy.astype(dtype), dh_n.astype(dtype)
    if not reverse:
        mod = ops if backend == "fast" else reference
        w = [p[k].astype(dtype) for k in ("w_ih", "w_hh", "b_ih", "b_hh")]
        _, _, cache = mod.gru_forward(x, h0, *w, lengths=p["lengths"], reset_after=reset_after,
                                      n_threads=1)
        g = mod.gru_backward(cache, dy, dh_n)
        return {"dx": g["dx"], "dh0": g["dh0"], "weight_ih_l0": g["dw_ih"],
                "weight_hh_l0": g["dw_hh"], "bias_ih_l0": g["db_ih"], "bias_hh_l0": g["db_hh"]}
    layer = fastgru.GRU(x.shape[2], H, reset_after=reset_after, reverse=reverse, seed=0,
                        dtype=dtype, backend=backend, n_threads=1)
    layer.load_state_dict({"weight_ih_l0": p["w_ih"], "weight_hh_l0": p["w_hh"],
                           "bias_ih_l0": p["b_ih"], "bias_hh_l0": p["b_hh"]})
    y, _ = layer(x, h0[None], lengths=p["lengths"])
    dx, dh0 = layer.backward(dy, dh_n[None])
    return dict(layer.grads(), dx=dx, dh0=dh0[0])


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("lengths", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("T,B,I,H", [(9, 5, 16, 16), (13, 7, 19, 33), (1, 3, 16, 17)])
def test_chunked_backward_matches_unchunked_and_reference(chunk_rows, reset_after, lengths,
                                                          reverse, T, B, I, H):  # noqa: E741
    p = make_problem("gru", T, B, I, H, seed=T * B + H, lengths=lengths)
    rng = np.random.default_rng(3)
    dy = rng.standard_normal((T, B, H))
    dh_n = rng.standard_normal((B, H))
    chunk_rows(0)
    plain = _grads(p, dy, dh_n, reset_after, reverse)
    assert _gru._last_bwd_chunk() == 0
    want = _grads(p, dy, dh_n, reset_after, reverse, "float64", "reference")
    N = int(np.sum(p["lengths"])) if lengths else T * B
    for rows in (1, 4, 64):
        chunk_rows(rows)
        got = _grads(p, dy, dh_n, reset_after, reverse)
        assert _gru._last_bwd_chunk() == (rows if N > rows else 0)
        assert got.keys() == want.keys()
        for k in want:
            assert got[k].dtype == np.float32, k
            assert rel_err(got[k], want[k]) <= 2e-5, (rows, k)
            assert rel_err(got[k], plain[k]) <= 2e-5, (rows, k)
        if lengths:  # padded rows of dx stay exactly zero
            pad = np.arange(T)[:, None] >= p["lengths"][None, :]
            assert np.all(got["dx"][pad] == 0)


def test_chunked_backward_accumulates_like_unchunked(chunk_rows):
    """Layer gradients accumulate over backward calls: the first chunk adds to what is there."""
    x = np.random.default_rng(0).standard_normal((40, 6, 16)).astype(np.float32)
    lengths = [40, 3, 17, 40, 1, 22]
    out = {}
    for rows in (0, 8):
        chunk_rows(rows)
        layer = fastgru.GRU(16, 20, seed=4, n_threads=1)
        for seed in (1, 2):
            y, _ = layer(x, lengths=lengths)
            layer.backward(np.random.default_rng(seed).standard_normal(y.shape).astype(np.float32))
            assert _gru._last_bwd_chunk() == rows
        out[rows] = layer.grads()
    for k, v in out[0].items():
        assert np.max(np.abs(v)) > 0, k
        assert rel_err(out[8][k], v) <= 2e-5, k


def test_chunked_backward_is_the_default_route_at_one_thread():
    """The default policy chunks a long float32 batch of small weights on one thread, and not
    with a team, nor in float64."""
    if fastgru.simd_level() != "avx512":
        pytest.skip("the chunked route follows the own kernel's SIMD level (AVX-512)")
    x = np.random.default_rng(0).standard_normal((40, 16, 32)).astype(np.float32)
    for dtype, n_threads, chunked in (("float32", 1, True), ("float32", 2, False),
                                      ("float64", 1, False)):
        layer = fastgru.GRU(32, 64, seed=0, n_threads=n_threads, dtype=dtype)
        y, _ = layer(x.astype(dtype))
        layer.backward(np.ones_like(y))
        assert (_gru._last_bwd_chunk() > 0) == chunked, (dtype, n_threads)
