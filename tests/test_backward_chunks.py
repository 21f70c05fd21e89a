"""Chunked backward (one thread, float32): the weight-gradient, bias and dx products of each
chunk of packed rows run inside the reversed time loop instead of over all rows afterwards.
Chunks of 1-64 rows (so small problems take every path: flushes mid-step-range, steps of
different batch sizes, the last partial chunk) against the unchunked kernel and the float64
reference, for both GRU variants, the LSTM with and without projection, lengths, reverse,
h0/dh_n and accumulated gradients."""
import numpy as np
import pytest

import fastgru
from fastgru import ops, reference
from fastgru._kernels import _gru, _lstm

from helpers import make_problem, rel_err

KERNELS = {"gru": _gru, "lstm": _lstm}


@pytest.fixture
def chunk_rows():
    """Set the chunk rows of both kernels for a test (any problem size, any weight size);
    restored after."""
    old = {k: m._set_bwd_chunk(0, 0) for k, m in KERNELS.items()}
    for k, m in KERNELS.items():
        m._set_bwd_chunk(*old[k])

    def set_rows(rows):
        for m in KERNELS.values():
            m._set_bwd_chunk(rows, 1 << 40)

    yield set_rows
    for k, m in KERNELS.items():
        m._set_bwd_chunk(*old[k])


def _grads(cell, p, dy, dh_n, variant, reverse, dtype="float32", backend="fast"):
    """dx, dh0 (dc0) and the parameter gradients, one thread. Through ops (the kernel overwrites
    the gradients) or, for reverse, a layer (the kernel adds to the layer's zeroed gradients).
    variant: GRU reset_after; LSTM projection size (0: none)."""
    H = p["w_hh"].shape[1] if cell == "gru" else p["w_hh"].shape[0] // 4
    x = p["x"].astype(dtype)
    st = {k: p[k].astype(dtype) for k in ("h0", "c0") if p.get(k) is not None}
    dy, dh_n = dy.astype(dtype), dh_n.astype(dtype)
    names = ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
    keys = ["w_ih", "w_hh", "b_ih", "b_hh"]
    if cell == "lstm" and variant:
        names.append("weight_hr_l0")
        keys.append("w_hr")
    if not reverse:
        mod = ops if backend == "fast" else reference
        w = [p[k].astype(dtype) for k in keys[:4]]
        if cell == "gru":
            _, _, cache = mod.gru_forward(x, st["h0"], *w, lengths=p["lengths"],
                                          reset_after=variant, n_threads=1)
            g = mod.gru_backward(cache, dy, dh_n)
        else:
            w_hr = p["w_hr"].astype(dtype) if variant else None
            *_, cache = mod.lstm_forward(x, st["h0"], st["c0"], *w, lengths=p["lengths"],
                                         w_hr=w_hr, n_threads=1)
            g = mod.lstm_backward(cache, dy, dh_n)
        out = {n: g["d" + k] for n, k in zip(names, keys, strict=True)}
        out.update((k, g[k]) for k in ("dx", "dh0", "dc0") if k in g)
        return out
    kw = dict(reset_after=variant) if cell == "gru" else dict(proj_size=variant)
    layer = (fastgru.GRU if cell == "gru" else fastgru.LSTM)(
        x.shape[2], H, reverse=True, seed=0, dtype=dtype, backend=backend, n_threads=1, **kw)
    layer.load_state_dict({n: p[k] for n, k in zip(names, keys, strict=True)})
    state = st["h0"][None] if cell == "gru" else (st["h0"][None], st["c0"][None])
    y, _ = layer(x, state, lengths=p["lengths"])
    grads_in = layer.backward(dy, dh_n[None])
    return dict(layer.grads(), dx=grads_in[0])


CASES = [("gru", True), ("gru", False), ("lstm", 0), ("lstm", 5)]


@pytest.mark.parametrize("cell,variant", CASES)
@pytest.mark.parametrize("lengths", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("T,B,I,H", [(9, 5, 16, 16), (13, 7, 19, 33), (1, 3, 16, 17)])
def test_chunked_backward_matches_unchunked_and_reference(chunk_rows, cell, variant, lengths,
                                                          reverse, T, B, I, H):  # noqa: E741
    P = variant if cell == "lstm" and variant else None
    p = make_problem(cell, T, B, I, H, seed=T * B + H, lengths=lengths, P=P)
    rng = np.random.default_rng(3)
    dy = rng.standard_normal((T, B, P or H))
    dh_n = rng.standard_normal((B, P or H))
    kernel = KERNELS[cell]
    chunk_rows(0)
    plain = _grads(cell, p, dy, dh_n, variant, reverse)
    assert kernel._last_bwd_chunk() == 0
    want = _grads(cell, p, dy, dh_n, variant, reverse, "float64", "reference")
    N = int(np.sum(p["lengths"])) if lengths else T * B
    for rows in (1, 4, 64):
        chunk_rows(rows)
        got = _grads(cell, p, dy, dh_n, variant, reverse)
        assert kernel._last_bwd_chunk() == (rows if N > rows else 0)
        assert got.keys() == want.keys()
        for k in want:
            assert got[k].dtype == np.float32, k
            assert rel_err(got[k], want[k]) <= 2e-5, (rows, k)
            assert rel_err(got[k], plain[k]) <= 2e-5, (rows, k)
        if lengths:  # padded rows of dx stay exactly zero
            pad = np.arange(T)[:, None] >= p["lengths"][None, :]
            assert np.all(got["dx"][pad] == 0)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_chunked_backward_accumulates_like_unchunked(chunk_rows, cell):
    """Layer gradients accumulate over backward calls: the first chunk adds to what is there."""
    x = np.random.default_rng(0).standard_normal((40, 6, 16)).astype(np.float32)
    lengths = [40, 3, 17, 40, 1, 22]
    out = {}
    for rows in (0, 8):
        chunk_rows(rows)
        layer = (fastgru.GRU if cell == "gru" else fastgru.LSTM)(16, 20, seed=4, n_threads=1)
        for seed in (1, 2):
            y, _ = layer(x, lengths=lengths)
            layer.backward(np.random.default_rng(seed).standard_normal(y.shape).astype(np.float32))
            assert KERNELS[cell]._last_bwd_chunk() == rows
        out[rows] = layer.grads()
    for k, v in out[0].items():
        assert np.max(np.abs(v)) > 0, k
        assert rel_err(out[8][k], v) <= 2e-5, k


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_chunked_backward_is_the_default_route_at_one_thread(cell):
    """The default policy chunks a long float32 batch of small weights on one thread, and not
    with a team, nor in float64, nor for big weights."""
    if fastgru.simd_level() != "avx512":
        pytest.skip("the chunked route follows the own kernel's SIMD level (AVX-512)")
    x = np.random.default_rng(0).standard_normal((40, 16, 32)).astype(np.float32)
    for dtype, n_threads, H, chunked in (("float32", 1, 64, True), ("float32", 2, 64, False),
                                         ("float64", 1, 64, False), ("float32", 1, 384, False)):
        layer = (fastgru.GRU if cell == "gru" else fastgru.LSTM)(
            32, H, seed=0, n_threads=n_threads, dtype=dtype)
        y, _ = layer(x.astype(dtype))
        layer.backward(np.ones_like(y))
        assert (KERNELS[cell]._last_bwd_chunk() > 0) == chunked, (dtype, n_threads, H)
