"""fastgru.ops against the NumPy reference: forward outputs, final states and every gradient,
float32 and float64, odd shapes and 1s, lengths or not, h0 or not, 1/2/3 threads."""

import itertools
import platform

import numpy as np
import pytest

import fastgru
from fastgru import ops
from fastgru import reference as ref

from helpers import THREADS, call_forward, make_problem, rel_err, tol

SHAPES = [  # (T, B, I, H)
    (1, 1, 1, 1),
    (1, 3, 5, 7),
    (5, 1, 4, 17),
    (9, 4, 1, 33),
    (13, 7, 11, 16),
    (6, 5, 8, 1),
    (30, 16, 10, 24),
]


def _as64(p):
    return {
        k: (v.astype(np.float64) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v)
        for k, v in p.items()
    }


def _compare(cell, p, n_threads, dtype, reset_after=True, seed=0):
    kw = {"reset_after": reset_after} if cell == "gru" else {}
    if reset_after is None:
        kw = {}
    out = call_forward(ops, cell, p, n_threads=n_threads, **kw)
    out_r = call_forward(ref, cell, _as64(p), **kw)
    T = p["x"].shape[0]
    t = tol(dtype, T)
    names = ["y", "h_n"] + (["c_n"] if cell == "lstm" else [])
    for name, a, r in zip(names, out[:-1], out_r[:-1], strict=True):
        assert a.dtype == dtype
        assert rel_err(a, r) <= t, f"{name}: {rel_err(a, r):.3g} > {t:.3g}"
    rng = np.random.default_rng(seed + 100)
    y = out[0]
    dy = rng.standard_normal(y.shape).astype(dtype)
    dstates = [rng.standard_normal(s.shape).astype(dtype) for s in out[1:-1]]
    if cell == "gru":
        g = ops.gru_backward(out[-1], dy, *dstates)
        g_r = ref.gru_backward(
            out_r[-1], dy.astype(np.float64), *[d.astype(np.float64) for d in dstates]
        )
    else:
        g = ops.lstm_backward(out[-1], dy, *dstates)
        g_r = ref.lstm_backward(
            out_r[-1], dy.astype(np.float64), *[d.astype(np.float64) for d in dstates]
        )
    assert set(g) == set(g_r)
    for k in g_r:
        assert g[k].dtype == dtype, k
        assert g[k].shape == g_r[k].shape, k
        assert rel_err(g[k], g_r[k]) <= 4 * t, f"{k}: {rel_err(g[k], g_r[k]):.3g} > {4 * t:.3g}"
    return out, g


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("reset_after", [True, False])
def test_gru_matches_reference(dtype, shape, reset_after):
    for n_threads, lengths, h0 in itertools.product(THREADS, [False, True], [True, False]):
        p = make_problem(
            "gru", *shape, dtype=dtype, seed=hash((shape, lengths)) % 1000, lengths=lengths, h0=h0
        )
        _compare("gru", p, n_threads, dtype, reset_after)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("proj", [None, 1, 3])
def test_lstm_matches_reference(dtype, shape, proj):
    T, B, I, H = shape
    if proj is not None and proj >= H:
        pytest.skip("projection must be smaller than H")
    for n_threads, lengths, h0 in itertools.product(THREADS, [False, True], [True, False]):
        p = make_problem(
            "lstm",
            *shape,
            dtype=dtype,
            seed=hash((shape, lengths)) % 1000,
            P=proj,
            lengths=lengths,
            h0=h0,
        )
        _compare("lstm", p, n_threads, dtype)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_results_do_not_depend_on_thread_count(cell, dtype):
    p = make_problem(cell, 40, 37, 12, 20, dtype=dtype, seed=7, lengths=True)
    base = None
    for n in (1, 2, 3, 4):
        out, g = _compare(cell, p, n, dtype, seed=1)
        vals = list(out[:-1]) + [g[k] for k in sorted(g)]
        if base is None:
            base = vals
            continue
        for a, b in zip(vals, base, strict=True):
            assert rel_err(a, b) <= (1e-13 if dtype == np.float64 else 1e-5)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_padding_is_zero_and_lengths_any_order(monkeypatch, cell):
    from fastgru import _packed

    # the padded output is allocated uninitialized and its padding zeroed by the kernel: NaN
    # where nothing wrote would show
    monkeypatch.setattr(_packed, "_uninitialized", lambda shape, dt: np.full(shape, np.nan, dt))
    p = make_problem(cell, 8, 5, 3, 6, seed=4)
    p["lengths"] = np.array([3, 8, 1, 5, 8])
    for training in (False, True):
        for n_threads in (1, 2, 3):
            y = call_forward(ops, cell, p, training=training, n_threads=n_threads)[0]
            for b, n in enumerate(p["lengths"]):
                assert np.all(y[n:, b] == 0)
                assert not np.isnan(y[:n, b]).any()
    # layers: two directions (y rows of 2H), an LSTM projection (rows of P)
    kw = {"proj_size": 2} if cell == "lstm" else {}
    layer = (fastgru.LSTM if cell == "lstm" else fastgru.GRU)(
        3, 6, num_layers=2, bidirectional=True, dtype="float64", seed=0, **kw)
    for n_threads in (1, 2):
        layer.n_threads = n_threads
        y = layer(p["x"], lengths=p["lengths"])[0]
        for b, n in enumerate(p["lengths"]):
            assert np.all(y[n:, b] == 0)
            assert not np.isnan(y[:n, b]).any()
    out = call_forward(ops, cell, p)
    y = out[0]
    for b, n in enumerate(p["lengths"]):
        assert np.all(y[n:, b] == 0)
    # the same sequences one by one give the same outputs and final states
    for b, n in enumerate(p["lengths"]):
        q = dict(p, x=p["x"][:n, b : b + 1], h0=p["h0"][b : b + 1], lengths=None)
        if cell == "lstm":
            q["c0"] = p["c0"][b : b + 1]
        ob = call_forward(ops, cell, q)
        np.testing.assert_allclose(y[:n, b], ob[0][:, 0], rtol=1e-12, atol=1e-13)
        for s, sb in zip(out[1:-1], ob[1:-1], strict=True):
            np.testing.assert_allclose(s[b], sb[0], rtol=1e-12, atol=1e-13)
    # gradients of padded positions of dy are ignored
    dy = np.random.default_rng(0).standard_normal(y.shape)
    dy2 = dy.copy()
    dy2[np.arange(8)[:, None] >= p["lengths"][None, :]] = 123.0
    bwd = ops.gru_backward if cell == "gru" else ops.lstm_backward
    g1, g2 = bwd(out[-1], dy), bwd(out[-1], dy2)
    for k in g1:
        np.testing.assert_array_equal(g1[k], g2[k])
    assert np.all(g1["dx"][np.arange(8)[:, None] >= p["lengths"][None, :]] == 0)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_inference_matches_training_and_keeps_no_cache(cell):
    p = make_problem(cell, 12, 6, 5, 9, dtype=np.float32, seed=2, lengths=True)
    tr = call_forward(ops, cell, p, training=True)
    inf = call_forward(ops, cell, p, training=False)
    assert inf[-1] is None
    for a, b in zip(tr[:-1], inf[:-1], strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_read_only_and_non_contiguous_inputs(cell):
    p = make_problem(cell, 7, 4, 6, 5, dtype=np.float64, seed=9, lengths=True)
    q = {}
    for k, v in p.items():
        if isinstance(v, np.ndarray) and v.dtype.kind == "f":
            big = np.zeros(v.shape + (2,), v.dtype)
            big[..., 0] = v
            w = big[..., 0]  # non-contiguous view
            w.flags.writeable = False
            q[k] = w
        else:
            q[k] = v
    assert not q["x"].flags.c_contiguous
    a, b = call_forward(ops, cell, p), call_forward(ops, cell, q)
    for u, v in zip(a[:-1], b[:-1], strict=True):
        np.testing.assert_array_equal(u, v)
    dy = np.ones_like(a[0])[..., ::1]
    dyr = np.asfortranarray(dy)
    dyr.flags.writeable = False
    bwd = ops.gru_backward if cell == "gru" else ops.lstm_backward
    ga, gb = bwd(a[-1], dy), bwd(b[-1], dyr)
    for k in ga:
        np.testing.assert_array_equal(ga[k], gb[k])


def test_gru_variants_differ():
    """reset_after=True and False are different functions (guards against a flag ignored)."""
    p = make_problem("gru", 5, 3, 4, 6, seed=1)
    a = call_forward(ops, "gru", p, reset_after=True)[0]
    b = call_forward(ops, "gru", p, reset_after=False)[0]
    assert np.max(np.abs(a - b)) > 1e-3


def test_denormal_inputs_are_correct_and_fp_mode_restored():
    from fastgru._kernels import _runtime

    # control bits only: MXCSR's low 6 bits are sticky status flags, which NumPy's ufuncs
    # clear and set on their own between our calls (the kernels restore the whole register)
    control = ~0x3F if platform.machine().lower() in ("x86_64", "amd64", "i686", "x86") else ~0
    before = _runtime.fp_mode() & control
    p = make_problem("lstm", 20, 4, 3, 8, dtype=np.float32, seed=3)
    p["x"] = np.full_like(p["x"], 1e-39)  # denormal float32 inputs
    p["h0"] = np.full_like(p["h0"], -1e-40)
    _compare("lstm", p, 2, np.float32)
    assert _runtime.fp_mode() & control == before
    inside = _runtime.fp_mode_inside_kernel()
    if before != 0:  # x86 MXCSR / aarch64 FPCR: the kernels flush denormals
        assert inside & control != before


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "cell,variant", [("gru", True), ("gru", False), ("lstm", None), ("lstm", 3)]
)
@pytest.mark.parametrize("H", [5, 17, 100])
@pytest.mark.parametrize("B", [1, 2])
def test_single_sequence_shared_steps(monkeypatch, dtype, cell, variant, H, B):
    """B <= 2 runs in cols mode (the team shares every step, each thread a slice of the
    units) where supported; forced here for small H too. Must match the reference at 2 and 3
    threads, also with lengths shorter than T (B = 2: different ones, unsorted), and agree
    with 1 thread."""
    from fastgru import _threads

    monkeypatch.setattr(_threads, "COLS_MIN_UNITS", 1)
    monkeypatch.setattr(_threads, "SERIAL_FLOPS", 0)  # small calls would run on one thread
    assert _threads.plan_tasks(2, 1, np.array([9] * B), 9 * B, 1e3, H, True)[2]  # cols mode
    kw = {"reset_after": variant} if cell == "gru" else {}
    proj = variant if (cell == "lstm" and variant and variant < H) else None
    for lengths in (None, np.array([4, 9][:B])):
        p = make_problem(cell, 9, B, 6, H, dtype=dtype, seed=H, P=proj)
        p["lengths"] = lengths
        outs = []
        for n_threads in (1, 2, 3):
            out, g = _compare(cell, p, n_threads, dtype, seed=3, **kw)
            outs.append(list(out[:-1]) + [g[k] for k in sorted(g)])
        for other in outs[1:]:
            for a, b in zip(outs[0], other, strict=True):
                assert rel_err(a, b) <= (1e-13 if dtype == np.float64 else 1e-5)


@pytest.mark.parametrize("cell,variant", [("gru", True), ("lstm", None)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B", [1, 2])
def test_single_sequence_slices_taken_over(monkeypatch, cell, variant, dtype, B):
    """cols mode never waits on a descheduled thread: a waiting thread computes the slices
    nobody has claimed, forward and backward. With no patience at all every slice of every
    step is raced for (any thread may compute any slice): still the reference's numbers and
    gradients, at 2 and 3 threads, with and without a length shorter than T, in training and
    inference."""
    from fastgru import _threads
    from fastgru._kernels import _gru, _lstm

    monkeypatch.setattr(_threads, "COLS_MIN_UNITS", 1)
    monkeypatch.setattr(_threads, "SERIAL_FLOPS", 0)
    assert _threads.plan_tasks(3, 1, np.array([40]), 40, 1e3, 33, True)[2]
    kw = {"reset_after": variant} if cell == "gru" else {}
    try:
        for mod in (_gru, _lstm):
            mod._set_steal_spins(0)
        for lengths in (None, np.array([7, 31][:B])):
            p = make_problem(cell, 40, B, 6, 33, dtype=dtype, seed=5)
            p["lengths"] = lengths
            for n_threads in (2, 3):
                for _ in range(3):  # the races differ from run to run
                    _compare(cell, p, n_threads, dtype, seed=3, **kw)
                    out = call_forward(ops, cell, p, n_threads=n_threads, training=False, **kw)
                    out_r = call_forward(ref, cell, _as64(p), **kw)
                    for a, r in zip(out[:-1], out_r[:-1], strict=True):
                        assert rel_err(a, r) <= tol(dtype, 40)
    finally:
        for mod in (_gru, _lstm):
            mod._set_steal_spins(256)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("H", [33, 100, 130])
@pytest.mark.parametrize("B", [1, 2])
def test_single_sequence_packed_slices_exact(monkeypatch, cell, H, B):
    """cols mode with the slices' weights packed (float32, T >= 3): for a given team, outputs
    and every gradient are bit for bit the same whether the slices match the team or not
    (same sums in the same order): more slices than threads (a thread takes several), fewer
    (threads left idle), and unequal slices (H not divisible) with a partial last panel. The
    products over all rows split by team (x's projection, dx) may round differently per team
    through BLAS, so teams are compared with each other and with one thread within 1e-5."""
    from fastgru import _packed, _threads

    monkeypatch.setattr(_threads, "COLS_MIN_UNITS", 1)
    monkeypatch.setattr(_threads, "SERIAL_FLOPS", 0)
    # (13 steps of 1-2 rows would read the weights in place: the packed slices are tested here)
    monkeypatch.setattr(_packed, "_in_place", lambda plan, w_hh, team: False)
    for lengths in (None, np.array([9, 12][:B])):
        p = make_problem(cell, 13, B, 7, H, dtype=np.float32, seed=H)
        p["lengths"] = lengths
        rng = np.random.default_rng(1)
        dy = rng.standard_normal((13, B, H)).astype(np.float32)
        runs = {}
        for n_threads, slices in ((1, None), (2, None), (3, None), (2, 3), (2, 5), (3, 2)):
            monkeypatch.setattr(_packed, "cols_slices", lambda team, n=slices: n or team)
            out = call_forward(ops, cell, p, n_threads=n_threads)
            back = ops.gru_backward if cell == "gru" else ops.lstm_backward
            g = back(out[-1], dy)
            runs[n_threads, slices] = [*out[:-1], *(g[k] for k in sorted(g))]
        for (team, _), run in runs.items():
            for a, b, c in zip(runs[team, None], run, runs[1, None], strict=True):
                np.testing.assert_array_equal(a, b)
                assert rel_err(a, c) <= 1e-5
    # the packed layout was used: one slice's part per block of PANEL-wide panels
    G = (4 if cell == "lstm" else 3) * 5
    w = np.arange(G * 5, dtype=np.float32).reshape(1, G, 5)
    fw = _packed.pack_cols(w, 2)
    assert fw.shape[0] == 1 and fw.shape[2] == 64
    assert np.array_equal(fw[0, :5, :2], w[0, :2, :].T)  # slice 0 (units 0-1), gate 0
    assert np.array_equal(fw[0, :5, 2:], np.zeros((5, 62), np.float32))
    assert np.array_equal(fw[0, 5:10, :2], w[0, 5:7, :].T)  # slice 0, gate 1
    assert np.array_equal(fw[0, G : G + 5, :3], w[0, 2:5, :].T)  # slice 1, gate 0
    bw = _packed.pack_cols(w, 2, bwd=True)
    assert np.array_equal(bw[0, :G, :2], w[0, :, :2])  # slice 0: W_hh's columns 0-1
    assert np.array_equal(bw[0, G : 2 * G, :3], w[0, :, 2:])  # slice 1: columns 2-4


@pytest.mark.parametrize("level", fastgru.available_simd_levels())
@pytest.mark.parametrize("cell,variant", [("gru", True), ("gru", False), ("lstm", None),
                                          ("lstm", 3)])
@pytest.mark.parametrize("T", [1, 2, 7, 40])
def test_short_sequences_untransposed_products(level, cell, variant, T):
    """T < TRANSPOSE_MIN_T, and short sequences of few rows (_packed._in_place: T = 7 with up
    to 16 rows, T = 40 with 1 row, and 2 rows on two threads), read the weights in PyTorch
    layout: 1-16 rows go to dot_rows (_matmul.pxd mm_nt; groups of 4, 2, 1, K and N tails),
    more to BLAS. Training forward and backward against the reference at every SIMD level,
    lengths and thread counts included."""
    fastgru.set_simd_level(level)
    batches = [1, 2, 3, 4, 5, 8, 16, 17] if T < 8 else [1, 2]
    try:
        for B, n_threads, lengths in itertools.product(batches, [1, 2], [False, True]):
            kw = {"P": variant} if cell == "lstm" and variant else {}
            p = make_problem(cell, T, B, 13, 70, dtype=np.float32, seed=B * 10 + T,
                             lengths=lengths, **kw)
            _compare(cell, p, n_threads, np.float32, variant if cell == "gru" else None)
    finally:
        fastgru.set_simd_level(None)


@pytest.mark.parametrize("level", fastgru.available_simd_levels())
@pytest.mark.parametrize("cell,variant", [("gru", True), ("lstm", None), ("lstm", 50)])
def test_many_rows_untransposed_products(level, cell, variant):
    """17-64 rows against a weight of 32768 elements or more also go to dot_rows
    (_matmul.pxd nt_dot; here H = 128: G*H = 49152 / 65536): T = 1 and 2, training against
    the reference, with lengths, on 1 and 2 threads."""
    fastgru.set_simd_level(level)
    try:
        for T, B, n_threads, lengths in itertools.product([1, 2], [17, 33, 64], [1, 2],
                                                          [False, True]):
            kw = {"P": variant} if cell == "lstm" and variant else {}
            p = make_problem(cell, T, B, 13, 128, dtype=np.float32, seed=B + T,
                             lengths=lengths, **kw)
            _compare(cell, p, n_threads, np.float32, variant if cell == "gru" else None)
    finally:
        fastgru.set_simd_level(None)


def test_in_place_rule():
    """Which forwards read the weights in place (the table IN_PLACE_MAX_T): float32 only, at
    most 16 rows, longer limits on a team, never at the baseline SIMD level."""
    from fastgru import _packed
    from fastgru._kernels import _blas
    from fastgru._plan import SeqPlan
    w32 = np.zeros((1, 12, 4), np.float32)
    cases = [(1, 511, 1, True), (1, 512, 1, False), (2, 15, 1, True), (2, 16, 1, False),
             (16, 7, 1, True), (16, 8, 1, False), (17, 3, 1, False), (1, 255, 2, True),
             (1, 256, 2, False), (2, 63, 2, True), (2, 64, 2, False), (8, 31, 2, True),
             (8, 32, 2, False), (16, 15, 2, True), (16, 16, 2, False), (17, 3, 2, False),
             (5, 7, 0, True)]
    for B, T, team, want in cases:
        assert _packed._in_place(SeqPlan(T, B), w32, team) is want, (B, T, team)
    assert not _packed._in_place(SeqPlan(3, 2), w32.astype(np.float64), 1)
    fastgru.set_simd_level("base")
    try:
        assert not _packed._in_place(SeqPlan(3, 2), w32, 1)
    finally:
        fastgru.set_simd_level(None)
    # two steps of more than 32 float32 rows, or of 17-32 whose products would go to BLAS,
    # are copied transposed on one thread only
    w_ih = np.zeros((1, 12, 3), np.float32)
    big = np.zeros((1, 1536, 384), np.float32)  # dot_rows takes up to 64 rows of it
    assert _blas.nt_route(17, 12, 4) == "blas" and _blas.nt_route(64, 1536, 384) == "dot"
    for B, T, team, w, want in [(17, 2, 1, w32, True), (17, 2, 2, w32, False),
                                (16, 2, 1, w32, False), (17, 1, 1, w32, False),
                                (17, 3, 2, w32, True), (17, 2, 1, big, False),
                                (32, 2, 1, big, False), (33, 2, 1, big, True),
                                (33, 2, 2, big, False)]:
        wi = w_ih if w is w32 else np.zeros((1, 1536, 3), np.float32)
        wt = _packed.forward_weights(SeqPlan(T, B), wi, w, team=team)[0]
        assert wt is want, (B, T, team, w.shape)
    wt = _packed.forward_weights(SeqPlan(2, 17), w_ih.astype(np.float64),
                                 w32.astype(np.float64), team=1)[0]
    assert wt is False
