"""The layer API without torch: parameters and flat buffers, modes, backward rules, the
reference backend agreeing with the fast one, dropout, streaming (step and cells) and bad input."""
import warnings

import numpy as np
import pytest

import fastgru

from helpers import rel_err

T, B, I, H = 6, 4, 3, 5


def _x(dtype=np.float64, shape=(T, B, I), seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# -- parameters ---------------------------------------------------------------------------------


def test_parameters_names_shapes_and_init():
    gru = fastgru.GRU(I, H, num_layers=2, bidirectional=True, seed=0)
    p = gru.parameters()
    assert list(p)[:5] == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0",
                           "weight_ih_l0_reverse"]
    assert p["weight_ih_l0"].shape == (3 * H, I)
    assert p["weight_ih_l1_reverse"].shape == (3 * H, 2 * H)
    assert p["weight_hh_l1"].shape == (3 * H, H) and p["bias_hh_l1"].shape == (3 * H,)
    assert gru.num_parameters == sum(v.size for v in p.values()) == gru.flat_parameters().size
    k = 1 / np.sqrt(H)
    flat = gru.flat_parameters()
    assert flat.dtype == np.float32 and flat.min() >= -k and flat.max() <= k
    assert flat.std() > 0.5 * k / np.sqrt(3)  # really uniform over the range, not zeros
    lstm = fastgru.LSTM(I, H, num_layers=2, proj_size=2, bias=False, dtype="float64")
    q = lstm.parameters()
    assert set(q) == {"weight_ih_l0", "weight_hh_l0", "weight_hr_l0", "weight_ih_l1",
                      "weight_hh_l1", "weight_hr_l1"}
    assert q["weight_hh_l0"].shape == (4 * H, 2) and q["weight_hr_l0"].shape == (2, H)
    assert q["weight_ih_l1"].shape == (4 * H, 2) and lstm.dtype == np.float64
    assert gru.weight_ih_l0 is not None and gru.weight_ih_l0.shape == (3 * H, I)


def test_named_arrays_are_views_of_one_flat_buffer():
    gru = fastgru.GRU(I, H, num_layers=2, bidirectional=True)
    flat, gflat = gru.flat_parameters(), gru.flat_grads()
    for name, v in gru.parameters().items():
        assert np.shares_memory(v, flat), name
        assert np.shares_memory(gru.grads()[name], gflat), name
    gru.flat_parameters()[:] = 0.25
    assert np.all(gru.parameters()["weight_hh_l1_reverse"] == 0.25)
    gru.parameters()["bias_ih_l0"][:] = 2
    assert np.count_nonzero(flat == 2) == 3 * H
    gflat[:] = 1
    gru.zero_grad()
    assert not np.any(gru.flat_grads())


def test_same_seed_same_weights():
    a, b = fastgru.LSTM(I, H, seed=7), fastgru.LSTM(I, H, seed=7)
    assert np.array_equal(a.flat_parameters(), b.flat_parameters())
    assert not np.array_equal(a.flat_parameters(), fastgru.LSTM(I, H, seed=8).flat_parameters())


def test_repr_train_eval_and_attributes():
    gru = fastgru.GRU(10, 20, num_layers=2, batch_first=True, bidirectional=True)
    assert repr(gru) == "GRU(10, 20, num_layers=2, batch_first=True, bidirectional=True)"
    assert repr(fastgru.LSTM(3, 4, proj_size=2, bias=False, dtype="float64")) == \
        "LSTM(3, 4, proj_size=2, bias=False, dtype=float64)"
    assert repr(fastgru.GRU(3, 4, reset_after=False)) == "GRU(3, 4, reset_after=False)"
    assert repr(fastgru.GRUCell(3, 4)) == "GRUCell(3, 4)"
    assert gru.eval() is gru and not gru.training
    assert gru.train() is gru and gru.training
    assert (gru.input_size, gru.hidden_size, gru.num_layers, gru.num_directions) == (10, 20, 2, 2)
    assert gru.dtype == np.float32 and gru.backend == "fast" and gru.reset_after


# -- backward rules -----------------------------------------------------------------------------


def test_backward_needs_a_training_forward():
    gru = fastgru.GRU(I, H, dtype="float64")
    with pytest.raises(RuntimeError, match="training mode"):
        gru.backward(np.zeros((T, B, H)))
    gru.eval()
    y, _ = gru(_x())
    with pytest.raises(RuntimeError, match="training mode"):
        gru.backward(y)
    y, _ = gru(_x(), requires_grad=True)  # eval mode but keep the cache
    dx, dh0 = gru.backward(np.ones_like(y))
    assert dx.shape == (T, B, I) and dh0.shape == (1, B, H)


@pytest.mark.parametrize("cls", [fastgru.GRU, fastgru.LSTM])
def test_backward_twice_accumulates_like_retain_graph(cls):
    layer = cls(I, H, num_layers=2, bidirectional=True, dtype="float64", seed=1)
    y, _ = layer(_x(), lengths=[6, 2, 3, 6])
    dy = _x(shape=y.shape, seed=2)
    dx1 = layer.backward(dy)[0]
    g1 = layer.flat_grads().copy()
    assert np.any(g1)
    dx2 = layer.backward(dy)[0]
    assert np.array_equal(dx1, dx2)
    assert np.allclose(layer.flat_grads(), 2 * g1, rtol=1e-14, atol=0)
    layer.zero_grad()
    layer.backward(dy)
    assert np.allclose(layer.flat_grads(), g1, rtol=1e-14, atol=0)


def test_eval_forward_keeps_the_training_cache():
    gru = fastgru.GRU(I, H, dtype="float64", seed=0)
    y, _ = gru(_x())
    dy = np.ones_like(y)
    dx = gru.backward(dy)[0]
    gru.eval()(_x(seed=5))  # a validation pass in between
    gru.zero_grad()
    assert np.array_equal(gru.train().backward(dy)[0], dx)


# -- backends -----------------------------------------------------------------------------------

CONFIGS = [
    dict(cls=fastgru.GRU, num_layers=1),
    dict(cls=fastgru.GRU, num_layers=3, bidirectional=True, lengths=True),
    dict(cls=fastgru.GRU, num_layers=2, reset_after=False, bias=False, lengths=True),
    dict(cls=fastgru.GRU, num_layers=2, bidirectional=True, batch_first=True, dropout=0.3),
    dict(cls=fastgru.LSTM, num_layers=2, bidirectional=True, lengths=True),
    dict(cls=fastgru.LSTM, num_layers=2, proj_size=2, bidirectional=True, dropout=0.5,
         lengths=True),
    dict(cls=fastgru.LSTM, num_layers=1, bias=False),
]


def _run(layer, x, lengths, seed=0):
    """forward + backward with random upstream gradients; returns everything as a flat list."""
    layer.zero_grad()
    layer.manual_seed(123)
    y, st = layer(x, lengths=lengths)
    states = list(st) if isinstance(st, tuple) else [st]
    rng = np.random.default_rng(seed)
    dy = rng.standard_normal(y.shape)
    ds = [rng.standard_normal(s.shape) for s in states]
    if isinstance(st, tuple):
        dx, (dh0, dc0) = layer.backward(dy, *ds)
        grads_in = [dx, dh0, dc0]
    else:
        dx, dh0 = layer.backward(dy, ds[0])
        grads_in = [dx, dh0]
    return [y] + states + grads_in + [layer.flat_grads().copy()]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(f"{k}={getattr(v, '__name__', v)}"
                                                               for k, v in c.items()))
def test_reference_backend_agrees_with_fast(cfg):
    cfg = dict(cfg)
    cls, with_lengths = cfg.pop("cls"), cfg.pop("lengths", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fast = cls(I, H, dtype="float64", seed=4, **cfg)
    ref = fast.copy()
    ref.backend = "reference"
    assert ref.backend == "reference" and "reference" in repr(ref)
    x = _x(shape=(B, T, I) if cfg.get("batch_first") else (T, B, I))
    lengths = [T, 2, 5, 1] if with_lengths else None
    for a, b in zip(_run(fast, x, lengths), _run(ref, x, lengths), strict=True):
        assert a.shape == b.shape
        assert rel_err(a, b) < 1e-11


# -- dropout ------------------------------------------------------------------------------------


def test_dropout_between_layers_only_and_reproducible():
    gru = fastgru.GRU(I, H, num_layers=2, dropout=1.0, dtype="float64", seed=0)
    x = _x()
    y, hn = gru(x)
    # p = 1 zeroes the first layer's output: layer 2 sees zeros; its own output is not dropped
    top = fastgru.GRU(H, H, dtype="float64")
    top.load_state_dict({k.replace("_l1", "_l0"): v for k, v in gru.parameters().items()
                         if k.endswith("_l1")})
    y_top, _ = top(np.zeros((T, B, H)))
    assert np.allclose(y, y_top, rtol=0, atol=1e-15) and np.all(y != 0)
    # p = 0.5: train mode random but reproducible with a seed; eval deterministic
    a = fastgru.LSTM(I, H, num_layers=3, dropout=0.5, seed=11, dtype="float64")
    b = fastgru.LSTM(I, H, num_layers=3, dropout=0.5, seed=11, dtype="float64")
    ya, yb = a(x)[0], b(x)[0]
    assert np.array_equal(ya, yb)
    assert not np.array_equal(ya, a(x)[0])  # a new mask each forward
    a.eval()
    assert np.array_equal(a(x)[0], a(x)[0])
    assert not np.allclose(a(x)[0], ya)
    with pytest.warns(UserWarning, match="num_layers=1"):
        fastgru.GRU(I, H, dropout=0.2)


@pytest.mark.parametrize("backend", ["fast", "reference"])
@pytest.mark.parametrize("cls", [fastgru.GRU, fastgru.LSTM])
def test_dropout_gradient_finite_differences(cls, backend):
    layer = cls(I, 3, num_layers=2, bidirectional=True, dropout=0.4, dtype="float64", seed=2,
                backend=backend)
    x = _x(shape=(4, 2, I))
    lengths = [4, 3]
    dy = _x(shape=(4, 2, 6), seed=9)

    def loss(xx):
        layer.manual_seed(5)  # the same mask every call
        return float(np.sum(layer(xx, lengths=lengths)[0] * dy))

    loss(x)
    layer.zero_grad()
    dx = layer.backward(dy)[0]
    flat, g = layer.flat_parameters(), layer.flat_grads().copy()
    eps = 1e-6
    rng = np.random.default_rng(0)
    for idx in rng.choice(x.size, 6, replace=False):
        e = np.zeros(x.size)
        e[idx] = eps
        e = e.reshape(x.shape)
        num = (loss(x + e) - loss(x - e)) / (2 * eps)
        assert abs(num - dx.flat[idx]) < 1e-7 * max(1, abs(num))
    for idx in rng.choice(flat.size, 10, replace=False):
        old = flat[idx]
        flat[idx] = old + eps
        up = loss(x)
        flat[idx] = old - eps
        down = loss(x)
        flat[idx] = old
        num = (up - down) / (2 * eps)
        assert abs(num - g[idx]) < 1e-7 * max(1, abs(num))


# -- threads, lengths forms, layouts ------------------------------------------------------------


def test_results_do_not_depend_on_threads():
    gru = fastgru.GRU(I, 16, num_layers=2, bidirectional=True, dtype="float64", seed=0)
    x = _x(shape=(20, 8, I))
    gru.n_threads = 1
    r1 = _run(gru, x, None)
    gru.n_threads = 2
    r2 = _run(gru, x, None)
    for a, b in zip(r1, r2, strict=True):
        assert rel_err(a, b) < 1e-12


def test_lengths_forms_readonly_and_noncontiguous_inputs():
    gru = fastgru.GRU(I, H, num_layers=2, dtype="float64", seed=0)
    x = _x()
    ref = gru(x, lengths=np.array([6, 1, 3, 6]))[0]
    for lengths in ([6, 1, 3, 6], (6, 1, 3, 6), np.array([6, 1, 3, 6], np.int32),
                    np.array([6.0, 1.0, 3.0, 6.0])):
        assert np.array_equal(gru(x, lengths=lengths)[0], ref)
    ro = x.copy()
    ro.setflags(write=False)
    assert np.array_equal(gru(ro)[0], gru(x)[0])
    big = np.zeros((T, B, 2 * I))
    big[:, :, ::2] = x  # a strided view
    assert np.array_equal(gru(big[:, :, ::2])[0], gru(x)[0])
    # lengths all == T is the same as no lengths
    assert np.array_equal(gru(x, lengths=[T] * B)[0], gru(x)[0])


def test_batch_first_is_a_transpose():
    a = fastgru.LSTM(I, H, num_layers=2, bidirectional=True, dtype="float64", seed=3)
    b = a.copy()
    b.batch_first = True
    x = _x()
    ya, (ha, ca) = a(x, lengths=[6, 2, 4, 5])
    yb, (hb, cb) = b(x.transpose(1, 0, 2), lengths=[6, 2, 4, 5])
    assert np.array_equal(ya.transpose(1, 0, 2), yb)
    assert np.array_equal(ha, hb) and np.array_equal(ca, cb)
    dxb, _ = b.backward(np.ones_like(yb))
    assert dxb.shape == (B, T, I)


# -- streaming ----------------------------------------------------------------------------------


@pytest.mark.parametrize("cls,kw", [(fastgru.GRU, {}), (fastgru.GRU, dict(reset_after=False)),
                                    (fastgru.LSTM, {}), (fastgru.LSTM, dict(proj_size=2))])
@pytest.mark.parametrize("num_layers", [1, 3])
def test_step_matches_forward(cls, kw, num_layers):
    layer = cls(I, H, num_layers=num_layers, dtype="float64", seed=1, **kw).eval()
    x = _x()
    y, state = layer(x)
    st = None
    for t in range(T):
        yt, st = layer.step(x[t], st)
        assert np.allclose(yt, y[t], rtol=1e-12, atol=1e-13)
    if cls is fastgru.LSTM:
        assert np.allclose(st[0], state[0], atol=1e-13) and np.allclose(st[1], state[1], atol=1e-13)
    else:
        assert np.allclose(st, state, atol=1e-13)
    # unbatched steps
    y1, s1 = layer(x[:, 0])
    st = None
    for t in range(T):
        yt, st = layer.step(x[t, 0], st)
    assert np.allclose(yt, y1[-1], atol=1e-13)
    # a batched (L, 1, F) state with an unbatched x is refused, as forward and torch do
    batched = np.zeros((num_layers, 1, st[0].shape[-1] if cls is fastgru.LSTM else H))
    with pytest.raises(ValueError, match="for unbatched x"):
        layer.step(x[0, 0], (batched, np.zeros((num_layers, 1, H)))
                   if cls is fastgru.LSTM else batched)


def test_step_sees_parameter_updates_and_rejects_bidirectional():
    gru = fastgru.GRU(I, H, dtype="float64", seed=0)
    x = _x()[0]
    y0, _ = gru.step(x)
    gru.flat_parameters()[:] *= 0.5  # an optimizer step, in place
    y1, _ = gru.step(x)
    assert not np.allclose(y0, y1)
    assert np.allclose(y1, gru(x[None])[0][0], atol=1e-14)
    with pytest.raises(ValueError, match="bidirectional"):
        fastgru.GRU(I, H, bidirectional=True).step(x.astype(np.float32))


def test_cells_match_one_layer_step():
    gru = fastgru.GRU(I, H, dtype="float64", seed=0).eval()
    cell = fastgru.GRUCell(I, H, dtype="float64")
    cell.load_state_dict({k[:-3]: v for k, v in gru.parameters().items()})
    x = _x()
    h = np.zeros((B, H))
    for t in range(T):
        h = cell(x[t], h)
    assert np.allclose(h, gru(x)[1][0], atol=1e-13)
    assert cell(x[0, 0]).shape == (H,)
    lstm = fastgru.LSTMCell(I, H, seed=0)
    h, c = lstm(x[0].astype(np.float32))
    assert h.shape == c.shape == (B, H) and h.dtype == np.float32
    nb = fastgru.GRUCell(I, H, bias=False, reset_after=False)
    assert set(nb.parameters()) == {"weight_ih", "weight_hh"}
    assert nb(x[0].astype(np.float32)).shape == (B, H)


# -- bad input ----------------------------------------------------------------------------------

BAD_CALLS = [
    ("wrong state shape", lambda g, x: g(x, np.zeros((1, B, H), np.float32)), ValueError, "h0"),
    ("state dtype", lambda g, x: g(x, np.zeros((4, B, H))), TypeError, "h0"),
    ("lengths longer than T", lambda g, x: g(x, lengths=[T + 1] * B), ValueError, "lengths"),
    ("lengths count", lambda g, x: g(x, lengths=[1, 2]), ValueError, "lengths"),
    ("lengths zero", lambda g, x: g(x, lengths=[0] * B), ValueError, "lengths"),
    ("wrong input size", lambda g, x: g(x[:, :, :2]), ValueError, "input_size"),
    ("wrong dtype", lambda g, x: g(x.astype(np.float64)), TypeError, "x"),
    ("int input", lambda g, x: g(x.astype(np.int32)), TypeError, "x"),
    ("x 4-D", lambda g, x: g(x[None]), ValueError, "x"),
    ("x None", lambda g, x: g(None), TypeError, "x"),
    ("empty time", lambda g, x: g(x[:0]), ValueError, "x"),
    ("requires_grad str", lambda g, x: g(x, requires_grad="yes"), TypeError, "requires_grad"),
    ("dy shape", lambda g, x: (g(x), g.backward(np.zeros((T, B, H), np.float32)))[1],
     ValueError, "dy"),
    ("dy dtype", lambda g, x: (g(x), g.backward(np.zeros((T, B, 2 * H))))[1], TypeError, "dy"),
    ("dh_n shape", lambda g, x: (g(x), g.backward(None, np.zeros((4, B, H + 1), np.float32)))[1],
     ValueError, "dh_n"),
    ("step x shape", lambda g, x: fastgru.GRU(I, H, num_layers=2).step(x[0, :, :2]),
     ValueError, "x"),
]


@pytest.mark.parametrize("desc,call,exc,word", BAD_CALLS, ids=[b[0] for b in BAD_CALLS])
def test_bad_calls(desc, call, exc, word):
    gru = fastgru.GRU(I, H, num_layers=2, bidirectional=True)
    with pytest.raises(exc, match=word):
        call(gru, _x(np.float32))


def test_bad_lstm_state():
    lstm = fastgru.LSTM(I, H, proj_size=2)
    x = _x(np.float32)
    with pytest.raises(TypeError, match="hx"):
        lstm(x, np.zeros((1, B, 2), np.float32))
    with pytest.raises(ValueError, match="c0"):
        lstm(x, (np.zeros((1, B, 2), np.float32), np.zeros((1, B, 2), np.float32)))
    with pytest.raises(ValueError, match="h0"):
        lstm(x, (np.zeros((1, B, H), np.float32), np.zeros((1, B, H), np.float32)))
    with pytest.raises(TypeError, match="hx"):
        fastgru.LSTMCell(I, H)(x[0], np.zeros((B, H), np.float32))


BAD_CONFIGS = [
    (dict(hidden_size=0), ValueError, "hidden_size"),
    (dict(input_size=2.5), TypeError, "input_size"),
    (dict(num_layers=True), TypeError, "num_layers"),
    (dict(dropout=1.5), ValueError, "dropout"),
    (dict(dropout="x"), TypeError, "dropout"),
    (dict(dtype="int32"), TypeError, "dtype"),
    (dict(dtype="float16"), TypeError, "dtype"),
    (dict(backend="gpu"), ValueError, "backend"),
    (dict(bidirectional=1), TypeError, "bidirectional"),
    (dict(n_threads=0), ValueError, "n_threads"),
    (dict(seed=-1), ValueError, "seed"),
]


@pytest.mark.parametrize("kw,exc,word", BAD_CONFIGS, ids=[str(b[0]) for b in BAD_CONFIGS])
def test_bad_constructor_arguments(kw, exc, word):
    args = dict(input_size=I, hidden_size=H)
    args.update(kw)
    with pytest.raises(exc, match=word):
        fastgru.GRU(**args)


def test_bad_proj_size():
    with pytest.raises(ValueError, match="proj_size"):
        fastgru.LSTM(I, H, proj_size=H)
    with pytest.raises(ValueError, match="proj_size"):
        fastgru.LSTM(I, H, proj_size=-1)


def test_bad_cell_calls():
    cell = fastgru.GRUCell(I, H)
    x = _x(np.float32)[0]
    with pytest.raises(ValueError, match="x"):
        cell(x[:, :2])
    with pytest.raises(TypeError, match="x"):
        cell(x.astype(np.float64))
    with pytest.raises(ValueError, match="h"):
        cell(x, np.zeros((B + 1, H), np.float32))
    with pytest.raises(TypeError, match="h"):
        cell(x, np.zeros((B, H)))
    with pytest.raises(ValueError, match="c"):
        fastgru.LSTMCell(I, H)(x, (np.zeros((B, H), np.float32), np.zeros((B, 1), np.float32)))
    # non-contiguous and read-only inputs take the slow path and give the same result
    ro = np.array(x)
    ro.setflags(write=False)
    strided = np.repeat(x, 2, axis=1)[:, ::2]
    assert np.array_equal(cell(ro), cell(x)) and np.array_equal(cell(strided), cell(x))


def test_copy_and_astype_keep_weights_quietly():
    with pytest.warns(UserWarning):
        gru = fastgru.GRU(I, H, dropout=0.1, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c = gru.copy()
        d = gru.astype("float64")
    assert np.array_equal(c.flat_parameters(), gru.flat_parameters())
    assert d.dtype == np.float64 and np.allclose(d.flat_parameters(), gru.flat_parameters())
    c.flat_parameters()[:] = 0
    assert np.any(gru.flat_parameters())


def test_copy_deepcopy_and_pickle_keep_one_flat_buffer():
    import copy
    import pickle

    gru = fastgru.LSTM(I, H, num_layers=2, proj_size=2, seed=0).eval()
    gru.flat_grads()[:] = 3
    for c in (copy.copy(gru), copy.deepcopy(gru), pickle.loads(pickle.dumps(gru))):
        assert np.array_equal(c.flat_parameters(), gru.flat_parameters())
        assert np.all(c.flat_grads() == 3) and not c.training
        for v in c.parameters().values():
            assert np.shares_memory(v, c.flat_parameters())
        assert not np.shares_memory(c.flat_parameters(), gru.flat_parameters())
        x = _x(np.float32)
        assert np.array_equal(c(x)[0], gru(x)[0])


@pytest.mark.parametrize("backend", ["fast", "reference"])
@pytest.mark.parametrize("cls", [fastgru.GRU, fastgru.LSTM])
def test_refilling_x_before_backward_leaves_gradients_alone(cls, backend):
    """A data loader that refills its batch buffer between forward and backward: the training
    cache holds a copy of x (torch raises for that in-place change; we make it harmless)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 3, 4)).astype(np.float32)
    dy = rng.standard_normal((6, 3, 5)).astype(np.float32)
    grads = []
    for refill in (False, True):
        m = cls(4, 5, seed=1, backend=backend)
        buf = x.copy()
        m(buf)
        if refill:
            buf[...] = rng.standard_normal(buf.shape)
        dx = m.backward(dy)
        grads.append((dx if isinstance(dx, np.ndarray) else dx[0], m.grads()))
    np.testing.assert_array_equal(grads[0][0], grads[1][0])
    for k in grads[0][1]:
        np.testing.assert_array_equal(grads[0][1][k], grads[1][1][k])


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_ops_cache_holds_a_copy_of_x(cell):
    from fastgru import ops

    rng = np.random.default_rng(0)
    T, B, I, H = 5, 2, 3, 4
    G = (3 if cell == "gru" else 4) * H
    x = rng.standard_normal((T, B, I))
    w_ih, w_hh = rng.standard_normal((G, I)), rng.standard_normal((G, H))
    b = rng.standard_normal(G)
    h0 = np.zeros((B, H))
    dy = rng.standard_normal((T, B, H))
    out = []
    for refill in (False, True):
        buf = x.copy()
        if cell == "gru":
            cache = ops.gru_forward(buf, h0, w_ih, w_hh, b, b, training=True)[-1]
        else:
            cache = ops.lstm_forward(buf, h0, h0, w_ih, w_hh, b, b, training=True)[-1]
        if refill:
            buf[...] = 7.0
        back = ops.gru_backward if cell == "gru" else ops.lstm_backward
        out.append(back(cache, dy))
    for k in out[0]:
        np.testing.assert_array_equal(out[0][k], out[1][k])


def test_hx_keyword_like_torch():
    # torch.nn.GRU(input, hx=...), torch.nn.GRUCell(input, hx=...)
    rng = np.random.default_rng(0)
    gru = fastgru.GRU(3, 4, num_layers=2, seed=0)
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    h0 = rng.standard_normal((2, 2, 4)).astype(np.float32)
    y, hn = gru(x, hx=h0)
    y2, hn2 = gru(x, h0)
    assert np.array_equal(y, y2) and np.array_equal(hn, hn2)
    assert np.array_equal(gru.forward(x, hx=h0)[0], y)
    with pytest.raises(TypeError, match="h0 or as hx"):
        gru(x, h0, hx=h0)
    cell = fastgru.GRUCell(3, 4, seed=0)
    assert np.array_equal(cell(x[0], hx=h0[0]), cell(x[0], h0[0]))
    with pytest.raises(TypeError, match="h or as hx"):
        cell(x[0], h0[0], hx=h0[0])


def test_concurrent_calls_restore_the_blas_threads():
    """The kernels hold scipy's BLAS at one thread while they run; with calls from several
    Python threads in flight, the last to finish (not necessarily the first to start)
    restores the count (it used to stay at 1 for good)."""
    import concurrent.futures as cf

    from threadpoolctl import threadpool_limits

    from fastgru import _threads
    from fastgru._kernels import _blas

    if not _threads.c_hold_active():
        pytest.skip("the kernels do not hold this BLAS themselves")
    g = fastgru.GRU(32, 64, seed=0, n_threads=1).eval()
    x = np.ones((50, 8, 32), np.float32)
    with threadpool_limits(limits=2, user_api="blas"):
        if _blas.blas_threads() != 2:
            pytest.skip("scipy's BLAS is not the one threadpoolctl limited")
        for _ in range(5):
            with cf.ThreadPoolExecutor(4) as ex:
                ys = list(ex.map(lambda _: g(x)[0], range(16)))
            assert _blas.blas_threads() == 2
        for y in ys[1:]:
            np.testing.assert_array_equal(y, ys[0])


def test_empty_cache_releases_pooled_training_buffers():
    from fastgru import _workspace

    g = fastgru.GRU(16, 32, seed=0)
    y, _ = g(np.ones((20, 4, 16), np.float32))
    g.backward(np.ones_like(y))
    del g, y
    import gc

    gc.collect()
    assert _workspace._free  # the training cache's buffers went back to the pool
    fastgru.empty_cache()
    assert not _workspace._free
    g = fastgru.GRU(16, 32, seed=0)  # and everything still works afterwards
    y, _ = g(np.ones((20, 4, 16), np.float32))
    assert np.isfinite(g.backward(np.ones_like(y))[0]).all()


def test_dtype_none_is_float32_as_in_torch():
    """torch.nn.GRU(dtype=None) is float32 (NumPy's np.dtype(None) would be float64)."""
    for m in (fastgru.GRU(3, 4, dtype=None), fastgru.LSTM(3, 4, dtype=None),
              fastgru.GRUCell(3, 4, dtype=None), fastgru.LSTMCell(3, 4, dtype=None)):
        assert m.dtype == np.float32
    assert fastgru.Sequential([fastgru.Dense(2)], dtype=None).dtype == np.float32


def test_projected_lstm_dy_error_says_d_times_p():
    lstm = fastgru.LSTM(3, 5, proj_size=2)
    y, _ = lstm(np.ones((4, 2, 3), np.float32))
    with pytest.raises(ValueError, match=r"dy must have shape \(T, B, D\*P\) like y = \(4, 2, 2\)"):
        lstm.backward(np.ones((4, 2, 5), np.float32))


@pytest.mark.parametrize("cls", ["GRU", "LSTM"])
def test_backward_refuses_weights_changed_since_the_forward(cls):
    """torch raises "modified by an inplace operation"; a stale cache would mix weights."""
    rng = np.random.default_rng(0)
    m = getattr(fastgru, cls)(4, 16, num_layers=2, dtype="float64", seed=0)
    x = rng.standard_normal((6, 3, 4))
    y, _ = m(x)
    dy = np.ones_like(y)
    m.backward(dy)  # unchanged weights: fine, and again (retain_graph semantics)
    m.backward(dy)
    for change in ("load", "inplace", "step"):
        m(x)
        sd = m.state_dict()
        if change == "load":
            m.load_state_dict({k: v * 1.5 for k, v in sd.items()})
        elif change == "inplace":
            m.flat_parameters()[:] *= 0.9
        else:
            m.flat_parameters()[:] -= 0.01 * np.sign(m.flat_grads() + 1e-3)
        with pytest.raises(RuntimeError, match="weights changed since the training forward"):
            m.backward(dy)
    m(x)
    m.backward(dy)  # a new forward takes the new weights
    with pytest.raises(TypeError, match=r"got a tuple of 1 item"):
        fastgru.LSTM(3, 4)(np.ones((1, 2, 3), np.float32), (np.zeros((1, 2, 4), np.float32),))
