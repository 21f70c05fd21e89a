"""Inference over one time step of a small batch (T = 1, B <= 8) takes the stepper kernel
(ops: fastgru/ops.py; layers: fastgru/_packed.py). Same results as the reference and as the
sequence kernels, for every variant: biases or none, h0 or none, reset before, projection,
float64, several thread counts; layers with several layers, against the same layer on T = 2."""
import numpy as np
import pytest

import fastgru
from fastgru import _packed, _rnn, ops, reference

from helpers import call_forward, make_problem, rel_err, tol


@pytest.mark.parametrize("cell,variant", [("gru", True), ("gru", False), ("lstm", None),
                                          ("lstm", 5)])
@pytest.mark.parametrize("B", [1, 3, _packed.STEP_MAX_B])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_threads", [1, 2, 3])
@pytest.mark.parametrize("h0,bias", [(True, True), (False, False)])
def test_ops_one_step_matches_reference(cell, variant, B, dtype, n_threads, h0, bias):
    H = 300 if n_threads > 1 else 13  # H = 300: big enough for the units split
    P = variant if cell == "lstm" and variant else None
    p = make_problem(cell, 1, B, 7, H, dtype=dtype, seed=B + n_threads, P=P, h0=h0)
    if not bias:
        p["b_ih"] = p["b_hh"] = None
    kw = {"reset_after": variant} if cell == "gru" else {}
    out = call_forward(ops, cell, p, training=False, n_threads=n_threads, **kw)
    ref = call_forward(reference, cell, p, training=False, **kw)
    assert out[-1] is None
    for a, r in zip(out[:-1], ref[:-1], strict=True):
        assert a.dtype == dtype and a.shape == r.shape
        assert rel_err(a, r) <= tol(dtype, 1)
    assert not np.shares_memory(out[0], out[1])  # y and h_n are separate arrays
    # the same step through the sequence kernels (training=True takes them)
    seq = call_forward(ops, cell, p, training=True, n_threads=n_threads, **kw)
    for a, s in zip(out[:-1], seq[:-1], strict=True):
        assert rel_err(a, s) <= tol(dtype, 1)


@pytest.mark.parametrize("cls,kw", [(fastgru.GRU, {}), (fastgru.GRU, {"reset_after": False}),
                                    (fastgru.LSTM, {}), (fastgru.LSTM, {"proj_size": 3})])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("plain", [True, False])
@pytest.mark.parametrize("batch_first", [False, True])
def test_layers_one_step_equal_first_step_of_two(cls, kw, dtype, plain, batch_first,
                                                 monkeypatch):
    """eval() with T = 1 equals the first output step of the same input with T = 2 (sequence
    kernels), through 2 stacked layers, with and without an initial state. Plain arrays take
    the layer's steppers (_one_step); other input (a strided state here) the general path's
    stepper route (_packed._step_gru / _step_lstm)."""
    fast, general = [], []
    name = "_step_gru" if cls is fastgru.GRU else "_step_lstm"
    real = getattr(_packed, name)
    monkeypatch.setattr(_packed, name, lambda *a: general.append(1) or real(*a))
    real_one = _rnn.RNNBase._one_step
    monkeypatch.setattr(_rnn.RNNBase, "_one_step",
                        lambda self, *a: (lambda out: fast.append(out is not None) or out)(
                            real_one(self, *a)))
    layer = cls(6, 9, num_layers=2, dtype=dtype, seed=0, batch_first=batch_first, **kw).eval()
    rng = np.random.default_rng(1)
    x2 = rng.standard_normal((2, 4, 6)).astype(dtype)
    if batch_first:
        x2 = np.ascontiguousarray(x2.transpose(1, 0, 2))
    first = x2[:, :1] if batch_first else x2[:1]
    state = None
    if not plain:  # zeros, but a strided view: not plain
        P = kw.get("proj_size", 9)
        h0 = np.zeros((2, 4, 2 * P), dtype)[..., ::2]
        state = h0 if cls is fastgru.GRU else (h0, np.zeros((2, 4, 9), dtype))
    y1, s1 = layer(first, state)
    if plain:
        assert fast == [True] and not general  # the layer's steppers
    else:
        assert len(general) == 2  # both layers on the general path's stepper route
    fast.clear()
    y2, _ = layer(x2)
    assert fast == [False] or not fast
    t = tol(np.dtype(dtype), 2)
    P = kw.get("proj_size", 9)
    assert y1.shape == ((4, 1, P) if batch_first else (1, 4, P))
    step0 = (lambda y: y[:, 0]) if batch_first else (lambda y: y[0])
    assert rel_err(step0(y1), step0(y2)) <= t
    s1 = s1 if isinstance(s1, tuple) else (s1,)
    assert not any(np.shares_memory(y1, s) for s in s1)  # separate arrays, as in PyTorch
    # the final state of the 1-step run feeds the next step: same as step 2 of the 2-step run
    second = x2[:, 1:] if batch_first else x2[1:]
    y_next, _ = layer(second, s1 if len(s1) > 1 else s1[0])
    y2_1 = y2[:, 1] if batch_first else y2[1]
    assert rel_err(step0(y_next), y2_1) <= t


def test_layer_one_step_fast_path_declines_what_it_cannot_take():
    """Training mode with dropout between layers, lengths, bidirectional, B > STEP_MAX_B and
    T > 1 all leave the fast path; results still match the reference backend."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 3, 5)).astype(np.float32)
    layer = fastgru.GRU(5, 7, num_layers=2, dropout=0.5, seed=2)
    assert layer._one_step(x, None, None) is not None  # qualifies by shape...
    layer.train()
    y, _ = layer(x, requires_grad=False)  # ...but dropout applies in training mode
    assert layer._cache is None
    layer.eval()
    y_eval, _ = layer(x)
    assert not np.array_equal(y, y_eval)
    ref = fastgru.GRU(5, 7, num_layers=2, seed=2, backend="reference").eval()
    ref.load_state_dict(layer.state_dict())
    assert rel_err(y_eval, ref(x)[0]) <= tol(np.float32, 2)
    big = rng.standard_normal((1, _packed.STEP_MAX_B + 1, 5)).astype(np.float32)
    assert layer._one_step(big, None, None) is None
    assert layer._one_step(np.concatenate([x, x]), None, None) is None
    assert layer._one_step(x.astype(np.float64), None, None) is None
    assert layer._one_step(x, np.zeros((2, 3, 7), np.float64), None) is None


def test_cached_steppers_see_new_weights_biases_and_in_place_updates():
    """one_step reuses a stepper per weights (same memory, shapes, dtype, variant, threads):
    in-place weight updates, other biases, other weights of the same shape and other variants
    all give the reference's numbers, never a stale stepper's."""
    rng = np.random.default_rng(5)
    p = make_problem("gru", 1, 2, 7, 13, dtype=np.float32, seed=3, h0=True)
    for _ in range(2):
        for ra in (True, False):
            out = call_forward(ops, "gru", p, training=False, reset_after=ra)
            ref = call_forward(reference, "gru", p, training=False, reset_after=ra)
            assert rel_err(out[0], ref[0]) <= tol(np.float32, 1)
        p["w_hh"] *= 0.5                                   # in place: same memory
        p["b_ih"] = rng.standard_normal(p["b_ih"].shape).astype(np.float32)  # new biases
        p["w_ih"] = p["w_ih"].copy()[::-1].copy()          # new weights, same shape
    for _ in range(2 * _packed._STEPPERS_KEPT):             # more weights than the cache keeps
        q = make_problem("lstm", 1, 1, 5, 11, dtype=np.float32, seed=int(rng.integers(1 << 30)))
        out = call_forward(ops, "lstm", q, training=False)
        ref = call_forward(reference, "lstm", q, training=False)
        assert rel_err(out[0], ref[0]) <= tol(np.float32, 1)
    assert len(_packed._STEPPERS.d) <= _packed._STEPPERS_KEPT


def test_cached_steppers_are_per_thread():
    """Steps on the same weights from several Python threads at once stay correct."""
    import threading

    p = make_problem("gru", 1, 1, 16, 300, dtype=np.float32, seed=9, h0=True)
    ref = call_forward(reference, "gru", p, training=False)[0]
    errors = []

    def work(seed):
        rng = np.random.default_rng(seed)
        for _ in range(200):
            q = dict(p)
            if rng.random() < 0.5:   # a different state: a different answer
                q["h0"] = p["h0"] * 0.5
                r = call_forward(reference, "gru", q, training=False)[0]
            else:
                r = ref
            out = call_forward(ops, "gru", q, training=False, n_threads=1)[0]
            if rel_err(out, r) > tol(np.float32, 1):
                errors.append(seed)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


@pytest.mark.parametrize("n_threads", [1, 2])
def test_shared_steppers_from_several_python_threads(n_threads):
    """A cell, layer.step and a layer's T = 1 forward share one stepper per layer: calls from
    several Python threads at once (each its own inputs) give the single-threaded answers."""
    import threading

    rng = np.random.default_rng(11)
    cell = fastgru.GRUCell(16, 300, seed=1, n_threads=n_threads)
    lstm = fastgru.LSTM(16, 300, num_layers=2, seed=2, n_threads=n_threads).eval()
    xs = [rng.standard_normal((2, 16)).astype(np.float32) for _ in range(6)]
    hs = [rng.standard_normal((2, 300)).astype(np.float32) for _ in range(6)]
    want = [(cell(x, h), lstm(x[None])[0], lstm.step(x)[0]) for x, h in zip(xs, hs, strict=True)]
    errors = []

    def work(k):
        for r in range(60):
            i = (k + r) % len(xs)
            got = (cell(xs[i], hs[i]), lstm(xs[i][None])[0], lstm.step(xs[i])[0])
            if not all(np.array_equal(g, w) for g, w in zip(got, want[i], strict=True)):
                errors.append((k, r))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_ops_plain_one_step_skips_the_general_checks_but_not_bad_input(cell, monkeypatch):
    """Plain C-contiguous arrays with consistent shapes take the short route (no rnn_args);
    anything else (a strided state, a wrong shape, a list) still gets the general checks and
    their errors; both routes give the same bits."""
    from fastgru import _validation

    calls = []
    real = _validation.rnn_args
    monkeypatch.setattr(_validation, "rnn_args", lambda *a, **k: calls.append(1) or real(*a, **k))
    p = make_problem(cell, 1, 3, 7, 20, dtype=np.float32, seed=6, h0=True)
    plain = call_forward(ops, cell, p, training=False)
    assert not calls
    q = dict(p)
    q["h0"] = np.repeat(p["h0"], 2, axis=1)[:, ::2]  # the same values, strided
    general = call_forward(ops, cell, q, training=False)
    assert calls
    for a, b in zip(plain[:-1], general[:-1], strict=True):
        np.testing.assert_array_equal(a, b)
    bad = dict(p)
    bad["b_ih"] = p["b_ih"][:-1]
    with pytest.raises(ValueError, match="b_ih"):
        call_forward(ops, cell, bad, training=False)
    bad = dict(p)
    bad["h0"] = p["h0"][:, :-1].copy()
    with pytest.raises(ValueError, match="h0"):
        call_forward(ops, cell, bad, training=False)
    bad = dict(p)
    bad["w_ih"] = p["w_ih"].astype(np.float64)
    with pytest.raises(TypeError, match="w_ih"):
        call_forward(ops, cell, bad, training=False)


def test_clear_step_cache_releases_the_weights():
    """T = 1 calls keep a stepper (and so the weight arrays); clear_step_cache lets them go."""
    import gc
    import weakref

    p = make_problem("gru", 1, 2, 7, 13, dtype=np.float32, seed=8, h0=True)
    call_forward(ops, "gru", p, training=False)
    ref = weakref.ref(p["w_hh"])
    del p
    gc.collect()
    assert ref() is not None  # kept by the cached stepper
    ops.clear_step_cache()
    gc.collect()
    assert ref() is None


def test_one_step_routes_take_read_only_and_strided_arrays():
    """Read-only x, state and weights and a strided x go through the T = 1 routes unchanged."""
    p = make_problem("lstm", 1, 3, 6, 10, dtype=np.float32, seed=12, h0=True)
    want = call_forward(ops, "lstm", p, training=False)
    ro = {k: v for k, v in p.items()}
    for k in ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh"):
        ro[k] = p[k].copy()
        ro[k].flags.writeable = False
    got = call_forward(ops, "lstm", ro, training=False)
    for a, b in zip(got[:-1], want[:-1], strict=True):
        np.testing.assert_array_equal(a, b)
    layer = fastgru.GRU(6, 10, seed=3).eval()
    x = np.random.default_rng(2).standard_normal((1, 3, 12)).astype(np.float32)
    strided, dense = x[..., ::2], np.ascontiguousarray(x[..., ::2])
    dense.flags.writeable = False
    np.testing.assert_array_equal(layer(strided)[0], layer(dense)[0])
    y0, h0 = layer(np.zeros((1, 0, 6), np.float32))  # an empty batch, as torch allows
    assert y0.shape == (1, 0, 10) and h0.shape == (1, 0, 10)
    with pytest.raises(ValueError):
        layer(np.zeros((0, 3, 6), np.float32))
    with pytest.raises(TypeError):
        layer(x[..., :6].astype(np.float64))
