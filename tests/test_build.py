"""The build did what it should: OpenMP is in (unless deliberately off), every SIMD level gives
the same bits, the lane math is accurate over the whole float range, the BLAS shim is right, and
BLAS thread settings are restored after a call."""

import os

import numpy as np
import pytest
from scipy.special import expit

import fastgru
from fastgru import ops
from fastgru._kernels import _blas, _runtime

from helpers import call_forward, make_problem


@pytest.mark.skipif(
    os.environ.get("FASTGRU_SKIP_OPENMP_TEST", "") not in ("", "0"),
    reason="FASTGRU_SKIP_OPENMP_TEST set: OpenMP deliberately off",
)
def test_openmp_is_enabled():
    """Fails when a build silently lost OpenMP (set FASTGRU_SKIP_OPENMP_TEST=1 to build without)."""
    assert _runtime.openmp_enabled(), "fastgru was built without OpenMP"
    assert _runtime.team_size(2) == 2


def _float_grid():
    rng = np.random.default_rng(0)
    specials = np.array(
        [
            0.0,
            -0.0,
            np.inf,
            -np.inf,
            np.nan,
            1e-45,
            -1e-45,
            1e-38,
            1e-30,
            1e-7,
            0.35,
            -0.35,
            0.3499999,
            9.0,
            -9.0,
            20.0,
            -20.0,
            87.3,
            -87.3,
            88.3,
            88.72,
            -88.72,
            88.73,
            -88.73,
            103.9,
            -103.9,
            110.0,
            -110.0,
            3.4e38,
            -3.4e38,
        ],
        np.float32,
    )
    # every binade from 1e-30 to 1e38, both signs, plus dense sampling of [-20, 20]
    mags = np.exp(rng.uniform(np.log(1e-30), np.log(3e38), 400_000)).astype(np.float32)
    signs = np.where(rng.random(mags.size) < 0.5, -1, 1).astype(np.float32)
    dense = rng.uniform(-20, 20, 400_000).astype(np.float32)
    return np.concatenate([specials, mags * signs, dense])


ULP_BOUND = {"exp": 1.0, "sigmoid": 3.0, "tanh": 3.0}
REFERENCE = {"exp": np.exp, "sigmoid": expit, "tanh": np.tanh}


@pytest.mark.parametrize("level", fastgru.available_simd_levels())
@pytest.mark.parametrize("fname", ["exp", "sigmoid", "tanh"])
def test_lane_math_accuracy_over_the_float_range(level, fname):
    """Stated bounds (_simd.h): sigmoid <= 3 ulp and tanh <= 3 ulp relative wherever the true
    result is a normal float32 (the whole range); values below FLT_MIN flush to 0; NaN and inf
    behave. The gates' exp is <= 1 ulp on its domain [-87, 88.3] and clamps (finitely) outside."""
    x = _float_grid()
    fastgru.set_simd_level(level)
    try:
        out = np.empty_like(x)
        _runtime.vmath(fname, x, out)
    finally:
        fastgru.set_simd_level(None)
    with np.errstate(all="ignore"):
        ref = REFERENCE[fname](x.astype(np.float64))
    tiny = np.finfo(np.float32).tiny
    normal = np.isfinite(ref) & (np.abs(ref) >= tiny) & (np.abs(ref) <= np.finfo(np.float32).max)
    if fname == "exp":
        normal &= (x >= -87.0) & (x <= 88.3)
    ulp = np.spacing(np.abs(ref[normal]).astype(np.float32)).astype(np.float64)
    err = np.abs(out[normal].astype(np.float64) - ref[normal]) / ulp
    assert err.max() <= ULP_BOUND[fname], f"{fname}: {err.max():.2f} ulp"
    sub = np.isfinite(ref) & (np.abs(ref) < tiny)
    if fname != "exp":  # exp clamps instead (checked below)
        assert np.all(np.abs(out[sub]) <= tiny)
    assert np.all(np.isnan(out[np.isnan(x)]))
    if fname == "exp":  # clamped, finite, monotone at both ends
        hi, lo = out[x == np.float32(88.3)][0], out[x == np.float32(-87.3)][0]
        assert np.all(out[x > 88.3] == hi) and np.isfinite(hi)
        assert np.all((out[x < -87.0] > 0) & (out[x < -87.0] < 2 * tiny))
        assert lo > 0
    if fname == "sigmoid":
        assert out[x == np.inf][0] == 1.0 and out[x == -np.inf][0] == 0.0
        assert np.all((out[~np.isnan(x)] >= 0) & (out[~np.isnan(x)] <= 1))
    if fname == "tanh":
        assert out[x == np.inf][0] == 1.0 and out[x == -np.inf][0] == -1.0
        normal_x = np.isfinite(x) & (np.abs(x) >= tiny)  # denormal inputs read as 0 (DAZ)
        np.testing.assert_array_equal(np.sign(out[normal_x]), np.sign(x[normal_x]))


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_every_simd_level_gives_identical_results(cell):
    """Forcing each available level (as FASTGRU_SIMD does): AVX2 and AVX-512 give bit-identical
    outputs and gradients (the same explicit FMAs in every lane and in the scalar tail, no
    contraction elsewhere); the baseline (no FMA) agrees with them to float32 rounding."""
    p = make_problem(cell, 11, 5, 7, 21, dtype=np.float32, seed=8, lengths=True)  # H % 16 != 0
    results = {}
    try:
        for level in fastgru.available_simd_levels():
            assert fastgru.set_simd_level(level) == level
            out = call_forward(ops, cell, p)
            dy = np.cos(np.arange(out[0].size, dtype=np.float32)).reshape(out[0].shape)
            g = (ops.gru_backward if cell == "gru" else ops.lstm_backward)(out[-1], dy)
            results[level] = list(out[:-1]) + [g[k] for k in sorted(g)]
    finally:
        fastgru.set_simd_level(None)
    if "avx2" in results and "avx512" in results:
        for a, b in zip(results["avx2"], results["avx512"], strict=True):
            np.testing.assert_array_equal(a, b)
    for level, res in results.items():
        for a, b in zip(results["base"], res, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=level)


def test_simd_level_names_and_errors():
    assert fastgru.simd_level() in ("base", "avx2", "avx512")
    with pytest.raises(ValueError, match="SIMD level"):
        fastgru.set_simd_level("sse9")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ta,tb", [("N", "N"), ("N", "T"), ("T", "N"), ("T", "T")])
def test_blas_shim_row_major_gemm(dtype, ta, tb):
    rng = np.random.default_rng(0)
    M, N, K = 5, 7, 3
    A = rng.standard_normal((K, M) if ta == "T" else (M, K)).astype(dtype)
    Bm = rng.standard_normal((N, K) if tb == "T" else (K, N)).astype(dtype)
    C = rng.standard_normal((M, N)).astype(dtype)
    want = 1.5 * (A.T if ta == "T" else A) @ (Bm.T if tb == "T" else Bm) + 0.5 * C
    _blas.gemm_memview(ta, tb, dtype(1.5), A, Bm, dtype(0.5), C)
    np.testing.assert_allclose(C, want, rtol=1e-5 if dtype == np.float32 else 1e-13)


def test_blas_threads_restored_after_a_call():
    from threadpoolctl import threadpool_info, threadpool_limits

    p = make_problem("gru", 10, 8, 4, 16, dtype=np.float32)
    with threadpool_limits(limits=2, user_api="blas"):
        before = [d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"]
        call_forward(ops, "gru", p, n_threads=2)
        after = [d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"]
    assert before == after


def test_show_config_runs(capsys):
    fastgru.show_config()
    out = capsys.readouterr().out
    for word in ("openmp", "simd_level", "blas", "default_n_threads"):
        assert word in out
    c = fastgru.config()
    assert c["dtypes"] == ["float32", "float64"]


def test_workspace_buffers_start_on_cache_lines():
    from fastgru import _workspace

    for shape, dt in [((3, 5), np.float32), ((7,), np.float64), ((1,), np.float32)]:
        a = _workspace.get("align-test", shape, dt)
        b = _workspace.take(shape, dt)
        assert a.shape == shape and b.shape == shape and a.dtype == dt and b.dtype == dt
        assert a.ctypes.data % 64 == 0 and b.ctypes.data % 64 == 0
        b[...] = 1  # writable, own memory
        _workspace.give(b)
        c = _workspace.take(shape, dt)  # reused from the pool, still aligned
        assert c.ctypes.data % 64 == 0
        _workspace.give(c)


def test_full_length_plans_are_shared_and_read_only():
    from fastgru._plan import make_plan

    p, q = make_plan(4, 3), make_plan(4, 3, None)
    assert p is q and p.identity and p.N == 12
    with pytest.raises(ValueError):
        p.bsz[0] = 0
    r = make_plan(4, 3, np.array([4, 2, 3]))
    assert not r.identity and r.N == 9
