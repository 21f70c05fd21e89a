"""fastgru's own per-step product kernel (_kernels/_matmul.pxd, mm_small in _simd_kernels.h):
exact enough against float64 at every shape class it takes (full 64-column panels, 16-column
vectors, masked tails, 1-6 row groups, accumulate), and whole layers running on it agree with the
reference and with the BLAS route."""
import contextlib

import numpy as np
import pytest

import fastgru
from fastgru import _config, ops, reference
from fastgru._kernels import _blas

from helpers import call_forward, make_problem, rel_err, tol

HAVE_AVX512 = "avx512" in fastgru.available_simd_levels()
needs_avx512 = pytest.mark.skipif(not HAVE_AVX512, reason="own route is AVX-512 only")


@contextlib.contextmanager
def own_matmul(*args, **kwargs):
    """The product route of _config._set_own_matmul(*args, **kwargs) inside, the default after."""
    _config._set_own_matmul(*args, **kwargs)
    try:
        yield
    finally:
        _config._set_own_matmul()


def _at_level(level, hook, A, W, C0, accumulate):
    """hook(A, W, C, accumulate) on a copy C of C0 with SIMD level `level` forced; returns C."""
    fastgru.set_simd_level(level)
    try:
        C = C0.copy()
        hook(A, W, C, accumulate)
    finally:
        fastgru.set_simd_level(None)
    return C


@pytest.mark.parametrize("level", fastgru.available_simd_levels())
@pytest.mark.parametrize("M,N,K", [(5, 64, 128), (13, 100, 64), (8, 192, 64), (64, 512, 128),
                                   (7, 300, 257), (33, 1000, 96), (6, 77, 1024), (9, 65, 200),
                                   (600, 130, 300), (513, 64, 64), (257, 100, 513)])
@pytest.mark.parametrize("accumulate", [False, True])
def test_product_against_float64(level, M, N, K, accumulate):
    """Row groups of 1-6, row blocks of 256 (input projection, dx), K-blocks of 256, tails."""
    rng = np.random.default_rng(M * 1000 + N + K)
    A = rng.standard_normal((M, K)).astype(np.float32)
    W = rng.standard_normal((K, N)).astype(np.float32)
    C0 = rng.standard_normal((M, N)).astype(np.float32)
    want = A.astype(np.float64) @ W.astype(np.float64) + (C0 if accumulate else 0)
    C = _at_level(level, _blas.mm_memview, A, W, C0, accumulate)
    # the standard bound of a float32 dot product: K * eps * sum |terms|
    scale = (np.abs(A).astype(np.float64) @ np.abs(W) + np.abs(C0)).max()
    assert np.abs(C - want).max() <= K * np.finfo(np.float32).eps * scale
    assert np.isfinite(C).all()


@needs_avx512
@pytest.mark.parametrize("M", [4, 5, 6, 7, 9, 11, 13, 33])
def test_row_groups_do_not_change_a_row(M):
    """However the rows are grouped (AVX-512 takes the last 5 or 6 as one group), each row's
    result is the bits it gets alone (one row also runs on the own kernel)."""
    level = "avx512"
    assert _blas.mm_route(M, 150, 300) == _blas.mm_route(1, 150, 300) == "own"
    rng = np.random.default_rng(M)
    A = rng.standard_normal((M, 300)).astype(np.float32)
    W = rng.standard_normal((300, 150)).astype(np.float32)
    C0 = rng.standard_normal((M, 150)).astype(np.float32)
    for accumulate in (False, True):
        together = _at_level(level, _blas.mm_memview, A, W, C0, accumulate)
        for i in range(M):
            alone = _at_level(level, _blas.mm_memview, A[i:i + 1], W, C0[i:i + 1], accumulate)
            assert np.array_equal(together[i], alone[0]), (accumulate, i)


@pytest.mark.parametrize("level", fastgru.available_simd_levels())
@pytest.mark.parametrize("M,N,K", [(5, 64, 1), (13, 100, 700), (192, 32, 6400), (7, 16, 255),
                                   (64, 300, 257), (3, 5, 20)])
@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weight_gradient_product_against_float64(level, M, N, K, accumulate, dtype):
    """C (+)= A.T @ W with A (K, M): K-blocks of 256 (and K not a multiple), N tails."""
    rng = np.random.default_rng(M + N + K)
    A = rng.standard_normal((K, M)).astype(dtype)
    W = rng.standard_normal((K, N)).astype(dtype)
    C0 = rng.standard_normal((M, N)).astype(dtype)
    want = A.T.astype(np.float64) @ W.astype(np.float64) + (C0 if accumulate else 0)
    C = _at_level(level, _blas.mm_tn_memview, A, W, C0, accumulate)
    scale = (np.abs(A.T).astype(np.float64) @ np.abs(W) + np.abs(C0)).max()
    assert np.abs(C - want).max() <= K * np.finfo(dtype).eps * scale


@needs_avx512
def test_routing_thresholds():
    assert _blas.mm_route(64, 512, 128) == "own"       # S2 LSTM step
    assert _blas.mm_route(13, 300, 100) == "own"       # masked tail
    assert _blas.mm_route(1, 10, 10) == "own"          # one row: always own
    assert _blas.mm_route(8, 48, 144) == "blas"        # N below a panel
    assert _blas.mm_route(8, 99, 33) == "blas"         # tiny
    assert _blas.mm_route(128, 1024, 4096) == "blas"   # K beyond L2 panels
    assert _blas.mm_route(256, 192, 32) == "own"       # many rows: own from K*N >= 2048
    assert _blas.mm_route(6400, 64, 32) == "own"
    assert _blas.mm_route(255, 192, 32) == "blas"      # fewer rows: K*N >= 8192 needed
    assert _blas.mm_route(256, 64, 31) == "blas"
    with own_matmul(99, 0):
        assert _blas.mm_route(64, 512, 128) == "blas"
    assert _blas.mm_route(64, 512, 128) == "own"


@needs_avx512
@pytest.mark.parametrize("cell,variant", [("gru", True), ("gru", False), ("lstm", None),
                                          ("lstm", 70)])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_layers_on_the_own_route(cell, variant, n_threads):
    """H = 100 (tails in every panel), B = 13 (row groups of 4 + 1), lengths; reset-before
    GRU and projected LSTM included."""
    T, B, I, H = 9, 13, 24, 100
    P = variant if cell == "lstm" and variant else None
    p = make_problem(cell, T, B, I, H, dtype=np.float32, seed=3, lengths=True, P=P)
    p64 = {k: (v.astype(np.float64) if isinstance(v, np.ndarray) and v.dtype == np.float32
               else v) for k, v in p.items()}
    kw = {"reset_after": variant} if cell == "gru" else {}
    assert _blas.mm_route(B, (3 if cell == "gru" else 4) * H, P or H) == "own"

    def run(mod, prob, **extra):
        out = call_forward(mod, cell, prob, **kw, **extra)
        dy = np.cos(np.arange(out[0].size)).reshape(out[0].shape).astype(out[0].dtype)
        g = (mod.gru_backward if cell == "gru" else mod.lstm_backward)(out[-1], dy)
        return list(out[:-1]) + [g[k] for k in sorted(g)]

    own = run(ops, p, n_threads=n_threads)
    ref = run(reference, p64)
    with own_matmul(99, 0):
        blas = run(ops, p, n_threads=n_threads)
    for a, r, b in zip(own, ref, blas, strict=True):
        assert rel_err(a, r) <= 10 * tol(np.float32, T)
        assert rel_err(a, b) <= 10 * tol(np.float32, T)


def test_pack_panels_layout():
    from fastgru import _packed

    pw = _blas.PACK_PANEL
    rng = np.random.default_rng(0)
    w = rng.standard_normal((2, 2 * pw + 7, 5)).astype(np.float32)  # D=2, G with a tail, K=5
    P = _packed.pack_panels(w).reshape(2, 3, 5, pw)
    for d in range(2):
        for p in range(3):
            cols = w[d, p * pw:(p + 1) * pw].T          # (K, up to pw)
            np.testing.assert_array_equal(P[d, p, :, :cols.shape[1]], cols)
            assert not P[d, p, :, cols.shape[1]:].any()  # zero padding


def test_pack_panels_bwd_layout():
    from fastgru import _packed

    pw = _blas.PACK_PANEL
    rng = np.random.default_rng(0)
    w = rng.standard_normal((2, 9, pw + 3)).astype(np.float32)  # D=2, G=9, K with a tail
    P = _packed.pack_panels_bwd(w).reshape(2, 2, 9, pw)
    for d in range(2):
        np.testing.assert_array_equal(P[d, 0], w[d, :, :pw])
        np.testing.assert_array_equal(P[d, 1, :, :3], w[d, :, pw:])
        assert not P[d, 1, :, 3:].any()


@needs_avx512
@pytest.mark.parametrize("cls,kw", [(fastgru.GRU, {}), (fastgru.LSTM, {}),
                                    (fastgru.LSTM, {"proj_size": 70})])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_packed_recurrent_weights_bidirectional(cls, kw, n_threads, monkeypatch):
    """Both directions and two layers on packed weights (per-direction stride of the packed
    array) give the results of the unpacked BLAS route, forward and backward."""
    from fastgru import _packed

    calls, bwd_calls = [], []
    real, real_bwd = _packed.pack_panels, _packed.pack_panels_bwd
    monkeypatch.setattr(_packed, "pack_panels", lambda w: calls.append(w.shape) or real(w))
    monkeypatch.setattr(_packed, "pack_panels_bwd",
                        lambda w: bwd_calls.append(w.shape) or real_bwd(w))
    # (7 steps of 11 rows would read the forward's weights in place: packing is tested here)
    monkeypatch.setattr(_packed, "_in_place", lambda plan, w_hh, team: False)
    layer = cls(24, 100, num_layers=2, bidirectional=True, seed=0, n_threads=n_threads, **kw)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((7, 11, 24)).astype(np.float32)
    lengths = rng.integers(1, 8, size=11)
    lengths[0] = 7

    def run():
        layer.zero_grad()
        y, _ = layer(x, lengths=lengths)
        layer.backward(np.cos(y))
        return [y] + [g.copy() for g in layer.grads().values()]

    own = run()
    assert calls and all(s[0] == 2 for s in calls)  # both directions packed, every layer
    assert len(bwd_calls) == 2 and all(s[0] == 2 for s in bwd_calls)
    with own_matmul(99, 0):
        n, nb = len(calls), len(bwd_calls)
        blas = run()
        assert len(calls) == n and len(bwd_calls) == nb  # the BLAS route does not pack
    for a, b in zip(own, blas, strict=True):
        assert rel_err(a, b) <= 10 * tol(np.float32, 7)


def test_big_weight_rule_routing():
    """The big-weight rule (on by default on Intel cores only): 64 or more rows over a weight
    of big_kn elements or more go to BLAS; fewer rows, smaller weights, or the rule off keep
    the other routing rules; packing follows the rows of a task, not the batch."""
    from fastgru import _packed

    default = _blas.mm_big_kn()[1]
    _config._set_own_matmul(big_kn=8192)
    try:
        assert _blas.mm_big_kn()[0] == 8192
        assert _blas.mm_big(64, 256, 32) and not _blas.mm_big(63, 256, 32)
        assert not _blas.mm_big(64, 255, 32)
        if HAVE_AVX512:
            assert _blas.mm_route(64, 256, 32) == "blas"
            assert _blas.mm_route(64, 256, 32, big=False) == "own"
            assert _blas.mm_route(63, 256, 32) == "own"
            assert _blas.mm_route(1, 256, 32) == "own"  # one row: always own
            w = np.zeros((1, 256, 32), np.float32)
            assert not _packed.packs(w, 64, True)
            assert _packed.packs(w, 64, True, rows=32)  # a team's tasks of 32 rows
            assert not _packed.packs(w, 64, True, rows=64)
            wb = np.zeros((1, 256, 64), np.float32)  # backward: dh (M, 64) = dG (M, 256) @ W
            assert _packed.packs_bwd(wb, True, rows=63)
            assert not _packed.packs_bwd(wb, True, rows=64)
        _config._set_own_matmul(big_kn=0)
        assert not _blas.mm_big(10**6, 4096, 4096)
    finally:
        _config._set_own_matmul()
    assert _blas.mm_big_kn() == (default, default)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_layers_under_the_big_weight_rule(cell, n_threads, monkeypatch):
    """With the rule forced on at a small threshold (as on Intel cores at S4), a layer of 70
    rows runs its products on BLAS at one thread (W_hh not packed) and on the own kernel in
    tasks of 35 rows at two (packed), forward and backward, with lengths: both agree with the
    float64 reference and with the rule off."""
    from fastgru import _packed

    calls = []
    real, real_bwd = _packed.pack_panels, _packed.pack_panels_bwd
    monkeypatch.setattr(_packed, "pack_panels", lambda w: calls.append("f") or real(w))
    monkeypatch.setattr(_packed, "pack_panels_bwd", lambda w: calls.append("b") or real_bwd(w))
    T, B, I, H = 6, 70, 40, 64
    p = make_problem(cell, T, B, I, H, dtype=np.float32, seed=5, lengths=True)
    p64 = {k: (v.astype(np.float64) if isinstance(v, np.ndarray) and v.dtype == np.float32
               else v) for k, v in p.items()}

    def run(mod, prob, **extra):
        out = call_forward(mod, cell, prob, **extra)
        dy = np.sin(np.arange(out[0].size)).reshape(out[0].shape).astype(out[0].dtype)
        g = (mod.gru_backward if cell == "gru" else mod.lstm_backward)(out[-1], dy)
        return list(out[:-1]) + [g[k] for k in sorted(g)]

    ref = run(reference, p64)
    with own_matmul(big_kn=8192):
        big = run(ops, p, n_threads=n_threads)
    if HAVE_AVX512:
        assert calls == ([] if n_threads == 1 else ["f", "b"])
    with own_matmul(big_kn=0):
        off = run(ops, p, n_threads=n_threads)
    for a, r, b in zip(big, ref, off, strict=True):
        assert rel_err(a, r) <= 10 * tol(np.float32, T)
        assert rel_err(a, b) <= 10 * tol(np.float32, T)


def test_packed_weights_refused_for_float64():
    """The packed product exists for float32 only: the kernels refuse a float64 call that asks
    for it instead of leaving the output unwritten."""
    from fastgru._kernels import _gru, _lstm

    z = np.zeros
    common = (np.ones(3, np.int32), np.arange(3, dtype=np.intp), np.zeros(1, np.int32),
              np.zeros((1, 3), np.int32))
    with pytest.raises(ValueError, match="float32 only"):
        _gru.forward(z((3, 2)), z((2, 9)), z((1, 3, 9)), z((1, 12)), z((1, 1, 3)), z((3, 3)),
                     z((3, 9)), None, None, z((1, 15)), *common, True, 1, True, None, True)
    with pytest.raises(ValueError, match="float32 only"):
        _lstm.forward(z((3, 2)), z((2, 12)), z((1, 3, 12)), None, z((1, 12)), z((1, 1, 3)),
                      z((1, 1, 3)), z((3, 3)), z((3, 12)), None, None, None, z((1, 15)),
                      *common, 1, True, None, True)
