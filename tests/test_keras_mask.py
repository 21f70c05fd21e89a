"""mask= (Keras masking semantics) on the layers: the same outputs and states as Keras 3 layers
given a mask (when keras is importable), the defining relations to a lengths= run (always),
finite-difference gradients in float64 (fully masked sequences and the padding fill included)
and clear errors for masks fastgru cannot run."""
import os

import numpy as np
import pytest

import fastgru

from helpers import rel_err

I, H, T, B = 3, 4, 6, 5
MASK = np.array([[1, 1, 1, 0, 0, 0], [1] * 6, [0] * 6, [1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0]],
                bool)  # (B, T): short, full, fully masked, length 1, almost full
HOLES = np.array([[0, 0, 0, 1, 1, 1], [1, 0, 1, 1, 0, 1], [0] * 6, [0, 0, 0, 0, 0, 1],
                  [0, 1, 1, 1, 1, 0]], bool)  # left padding (pad_sequences' default) and gaps

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _layer(cls, dtype="float64", **kw):
    return cls(I, H, seed=3, dtype=dtype, batch_first=True, **kw)


def _run(m, x, h0, c0, **kw):
    """(y, [h_n, (c_n)]) for either cell."""
    if isinstance(m, fastgru.LSTM):
        y, (h, c) = m(x, (h0, c0), **kw)
        return y, [h, c]
    y, h = m(x, h0, **kw)
    return y, [h]


def _problem(m, dtype="float64", seed=0):
    rng = np.random.default_rng(seed)
    LD = m.num_layers * m.num_directions
    x = rng.standard_normal((B, T, I)).astype(dtype)
    h0 = rng.standard_normal((LD, B, H)).astype(dtype)
    c0 = rng.standard_normal((LD, B, H)).astype(dtype)
    return x, h0, (c0 if isinstance(m, fastgru.LSTM) else None)


CASES = [(fastgru.GRU, {}), (fastgru.GRU, {"reset_after": False}), (fastgru.LSTM, {}),
         (fastgru.GRU, {"reverse": True}), (fastgru.LSTM, {"bidirectional": True}),
         (fastgru.GRU, {"num_layers": 2, "bidirectional": True}),
         (fastgru.LSTM, {"num_layers": 2}), (fastgru.GRU, {"zero_output_for_mask": True}),
         (fastgru.GRU, {"reverse": True, "zero_output_for_mask": True}),
         (fastgru.LSTM, {"num_layers": 2, "zero_output_for_mask": True})]


@pytest.mark.parametrize("cls,kw", CASES)
@pytest.mark.parametrize("backend", ["fast", "reference"])
def test_mask_is_lengths_plus_keras_fill(cls, kw, backend):
    m = _layer(cls, backend=backend, **kw)
    m.eval()
    x, h0, c0 = _problem(m)
    y, st = _run(m, x, h0, c0, mask=MASK)
    L = MASK.sum(1)
    rows = np.flatnonzero(L)

    def sub(s):
        return None if s is None else s[:, rows]

    y_l, st_l = _run(m, x[rows], sub(h0), sub(c0), lengths=L[rows])
    for a, b, s0 in zip(st, st_l, [h0, c0], strict=False):
        assert rel_err(a[:, rows], b) < 1e-13
        assert np.array_equal(a[:, L == 0], s0[:, L == 0])  # fully masked: the initial state
    D = m.num_directions
    for j, b in enumerate(rows):
        assert rel_err(y[b, :L[b]], y_l[j, :L[b]]) < 1e-13
    for b in range(B):
        pad = y[b, L[b]:]
        if D == 2 or m.zero_output_for_mask:
            assert not pad.any()
        elif m.reverse:  # Keras go_backwards: h0 at its first (padding) steps
            assert np.array_equal(pad, np.broadcast_to(h0[-1, b], pad.shape))
        else:  # a standalone Keras layer: the carried state h
            assert np.array_equal(pad, np.broadcast_to(st[0][-1, b], pad.shape))


@pytest.mark.parametrize("cls,kw", CASES)
@pytest.mark.parametrize("backend", ["fast", "reference"])
@pytest.mark.parametrize("holes", [False, True])
def test_mask_gradients_match_finite_differences(cls, kw, backend, holes):
    m = _layer(cls, backend=backend, **kw)
    m.train()
    x, h0, c0 = _problem(m, seed=1)
    rng = np.random.default_rng(2)
    mask = HOLES if holes else MASK
    y, st = _run(m, x, h0, c0, mask=mask)
    wy = rng.standard_normal(y.shape)
    ws = [rng.standard_normal(s.shape) for s in st]

    def loss():
        yy, ss = _run(m, x, h0, c0, mask=mask, requires_grad=False)
        return float((yy * wy).sum() + sum((s * w).sum() for s, w in zip(ss, ws, strict=True)))

    m.zero_grad()
    _run(m, x, h0, c0, mask=mask)
    if isinstance(m, fastgru.LSTM):
        dx, (dh0, dc0) = m.backward(wy, ws[0], ws[1])
        inputs = [(x, dx), (h0, dh0), (c0, dc0)]
    else:
        dx, dh0 = m.backward(wy, ws[0])
        inputs = [(x, dx), (h0, dh0)]
    inputs += [(m.parameters()[k], g) for k, g in m.grads().items()]
    eps = 1e-6
    for arr, grad in inputs:
        fd = np.empty_like(arr)
        for i in np.ndindex(arr.shape):
            old = arr[i]
            arr[i] = old + eps
            up = loss()
            arr[i] = old - eps
            fd[i] = (up - loss()) / (2 * eps)
            arr[i] = old
        assert np.abs(fd - grad).max() < 1e-6 * max(1.0, np.abs(fd).max())


@pytest.mark.parametrize("cls,kw", CASES)
def test_holes_are_the_valid_steps_moved_to_the_front(cls, kw):
    """A left-padded or gapped mask computes the right-padded run of each sequence's valid
    steps; masked steps repeat the previous output (a forward layer; h0 before the first),
    the next one (reverse; h0 after the last) or give 0 (bidirectional, zero_output_for_mask)."""
    m = _layer(cls, **kw)
    m.eval()
    x, h0, c0 = _problem(m)
    y, st = _run(m, x, h0, c0, mask=HOLES)
    front = np.zeros_like(x)
    packed = np.zeros_like(HOLES)
    for b in range(B):
        v = np.flatnonzero(HOLES[b])
        front[b, :v.size], packed[b, :v.size] = x[b, v], True
    y_f, st_f = _run(m, front, h0, c0, mask=packed)
    for a, ref in zip(st, st_f, strict=True):
        assert np.array_equal(a, ref)
    for b in range(B):
        v = np.flatnonzero(HOLES[b])
        assert np.array_equal(y[b, v], y_f[b, :v.size])
        for t in np.flatnonzero(~HOLES[b]):
            if m.num_directions == 2 or m.zero_output_for_mask:
                want = np.zeros_like(y[b, t])
            elif m.reverse:
                later = np.flatnonzero(v > t)
                want = y_f[b, later[0]] if later.size else h0[-1, b]
            else:
                earlier = np.flatnonzero(v < t)
                want = y_f[b, earlier[-1]] if earlier.size else h0[-1, b]
            assert np.array_equal(y[b, t], want)


@pytest.mark.parametrize("batch_first", [True, False])
def test_mask_layouts_and_dtypes(batch_first):
    m = fastgru.GRU(I, H, seed=0, batch_first=batch_first)
    m.eval()
    x = np.random.default_rng(0).standard_normal((B, T, I)).astype(np.float32)
    ref, _ = m(x if batch_first else x.transpose(1, 0, 2), mask=MASK if batch_first else MASK.T)
    for mk in [MASK.astype(np.int64), MASK.astype(np.float32), MASK.tolist()]:
        xin = x if batch_first else x.transpose(1, 0, 2)
        got, _ = m(xin, mask=mk if batch_first else np.asarray(mk).T)
        assert np.array_equal(got, ref)
    # unbatched x (T, I) takes a (T,) mask; all True is the plain forward
    mu = fastgru.GRU(I, H, seed=0)
    mu.eval()
    y1, h1 = mu(x[0], mask=MASK[0])
    y2, h2 = mu(x[0, :3])
    assert np.array_equal(h1, h2) and np.array_equal(y1[:3], y2)
    y3, _ = mu(x[0], mask=np.ones(T, bool))
    assert rel_err(y3, mu(x[0])[0]) < 1e-6


def test_mask_threads_agree():
    x = np.random.default_rng(0).standard_normal((B, T, I)).astype(np.float32)
    out = []
    for n in (1, 2, 3):
        m = fastgru.LSTM(I, H, seed=0, batch_first=True, n_threads=n, bidirectional=True)
        m.train()
        y, _ = m(x, mask=MASK)
        dx, _ = m.backward(np.ones_like(y))
        out.append((y, dx, m.grads()["weight_hh_l0"]))
    for y, dx, g in out[1:]:
        assert rel_err(y, out[0][0]) < 1e-6 and rel_err(dx, out[0][1]) < 1e-5
        assert rel_err(g, out[0][2]) < 1e-5


def test_fully_masked_batch():
    m = fastgru.LSTM(I, H, seed=0, batch_first=True)
    m.train()
    x = np.ones((2, T, I), np.float32)
    h0 = np.full((1, 2, H), 0.5, np.float32)
    c0 = np.full((1, 2, H), -0.5, np.float32)
    y, (h, c) = m(x, (h0, c0), mask=np.zeros((2, T), bool))
    assert np.array_equal(h, h0) and np.array_equal(c, c0)
    assert np.array_equal(y, np.full((2, T, H), 0.5, np.float32))
    dx, (dh0, dc0) = m.backward(np.ones_like(y), np.ones_like(h))
    assert not dx.any() and np.array_equal(dh0, np.full_like(h0, T + 1))
    assert not dc0.any() and not any(g.any() for g in m.grads().values())


def test_bad_masks():
    m = fastgru.GRU(I, H, seed=0, batch_first=True)
    x = np.zeros((B, T, I), np.float32)
    with pytest.raises(ValueError, match="lengths .* or mask .*not both"):
        m(x, lengths=[1] * B, mask=MASK)
    with pytest.raises(ValueError, match=r"mask must have shape \(B, T\)"):
        m(x, mask=MASK.T)
    with pytest.raises(ValueError, match=r"mask must have shape \(T, B\)"):
        fastgru.GRU(I, H)(x.transpose(1, 0, 2), mask=MASK)
    with pytest.raises(ValueError, match="only True/False"):
        m(x, mask=MASK * 2)
    with pytest.raises(TypeError, match="mask must be a boolean array"):
        m(x, mask=np.full((B, T), "a"))


@pytest.fixture(scope="module")
def keras():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    return pytest.importorskip("keras")


@pytest.mark.parametrize("kind", ["gru", "gru_rb", "lstm"])
@pytest.mark.parametrize("wrap", ["plain", "go_backwards", "bidirectional"])
@pytest.mark.parametrize("initial", [False, True])
@pytest.mark.parametrize("zero", [False, True])
@pytest.mark.parametrize("mask", [MASK, HOLES], ids=["right_padded", "holes"])
def test_mask_matches_keras(keras, kind, wrap, initial, zero, mask):
    """zero: Keras' zero_output_for_mask=True (Bidirectional sets it on its inner layers)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    K = keras.layers.LSTM if kind == "lstm" else keras.layers.GRU
    kw = {"reset_after": False} if kind == "gru_rb" else {}
    kw["zero_output_for_mask"] = zero
    n_states = 2 if kind == "lstm" else 1
    if wrap == "bidirectional":
        kl = keras.layers.Bidirectional(K(H, return_sequences=True, return_state=True, **kw))
        n_dir = 2
    else:
        kl = K(H, return_sequences=True, return_state=True,
               go_backwards=wrap == "go_backwards", **kw)
        n_dir = 1
    states = [rng.standard_normal((B, H)).astype(np.float32) for _ in range(n_dir * n_states)]
    out = kl(x, mask=mask, initial_state=states if initial else None)
    yk, sk = np.asarray(out[0]), [np.asarray(s) for s in out[1:]]
    m = (fastgru.LSTM if kind == "lstm" else fastgru.GRU).from_keras(kl)
    assert m.zero_output_for_mask == (zero and wrap != "bidirectional")
    m.eval()
    if initial:  # Keras: [h_fwd, (c_fwd), h_bwd, (c_bwd)]; fastgru: (D, B, H) per state
        h0 = np.stack(states[::n_states])
        c0 = np.stack(states[1::n_states]) if n_states == 2 else None
    else:
        h0 = c0 = None
    y, st = _run(m, x, h0, c0, mask=mask)
    if wrap == "go_backwards":  # Keras returns the sequence in processing order
        y = y[:, ::-1]
    assert rel_err(y, yk) < 1e-5
    ours = [s[d] for d in range(n_dir) for s in st]  # Keras' order of the final states
    for a, b in zip(ours, sk, strict=True):
        assert rel_err(a, b) < 1e-5


@pytest.mark.parametrize("kind", ["gru", "gru_rb", "lstm"])
@pytest.mark.parametrize("bidi", [False, True])
@pytest.mark.parametrize("masked", [None, "right_padded", "holes"])
def test_keras_stack_is_one_layer(keras, kind, bidi, masked):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    K = keras.layers.LSTM if kind == "lstm" else keras.layers.GRU
    kw = {"reset_after": False} if kind == "gru_rb" else {}

    def rnn(last):
        layer = K(H, return_sequences=True, return_state=last, **kw)
        return keras.layers.Bidirectional(layer) if bidi else layer

    stack = [rnn(False), rnn(False), rnn(True)]
    inp = keras.Input((T, I))
    m_in = keras.Input((T,), dtype="bool")
    h = inp
    for layer in stack:
        h = layer(h, mask=m_in)
    model = keras.Model([inp, m_in], h)
    mask = {None: None, "right_padded": MASK, "holes": HOLES}[masked]
    out = model([x, np.ones((B, T), bool) if mask is None else mask])
    m = (fastgru.LSTM if kind == "lstm" else fastgru.GRU).from_keras(stack)
    assert m.num_layers == 3 and m.bidirectional == bidi
    m.eval()
    y, st = _run(m, x, None, None, mask=mask)
    assert rel_err(y, np.asarray(out[0])) < 1e-5
    D = 2 if bidi else 1
    ours = [s[d - D] for d in range(D) for s in st]  # the last layer's states
    for a, b in zip(ours, [np.asarray(s) for s in out[1:]], strict=True):
        assert rel_err(a, b) < 1e-5


def test_keras_stack_refusals(keras):
    x = np.zeros((2, 3, I), np.float32)
    g1, g2 = keras.layers.GRU(H, return_sequences=True), keras.layers.GRU(H + 1)
    g2(g1(x))
    with pytest.raises(ValueError, match=r"keras_layer\[1\] has units=5 but keras_layer\[0\]"):
        fastgru.GRU.from_keras([g1, g2])
    b1 = keras.layers.GRU(H, return_sequences=True, go_backwards=True)
    b2 = keras.layers.GRU(H)
    b2(b1(x))
    with pytest.raises(ValueError, match="go_backwards"):
        fastgru.GRU.from_keras([b1, b2])
    with pytest.raises(ValueError, match="empty list"):
        fastgru.GRU.from_keras([])
    s = keras.layers.Bidirectional(keras.layers.GRU(H), merge_mode="sum")
    s(x)
    with pytest.raises(ValueError, match=r"merge_mode='sum'.*y\[\.\.\., :H\] \+ y\[\.\.\., H:\]"):
        fastgru.GRU.from_keras(s)
    with pytest.raises(TypeError, match=r"keras_layer\[1\] must be a keras.layers.GRU"):
        fastgru.GRU.from_keras([g1, keras.layers.Dense(3)])


def test_inner_layer_of_bidirectional_gives_zeros(keras):
    """Keras' Bidirectional sets zero_output_for_mask=True on its inner layers: one taken out
    and converted on its own gives zeros at masked steps, as it does in Keras."""
    x = np.random.default_rng(0).standard_normal((B, T, I)).astype(np.float32)
    bl = keras.layers.Bidirectional(keras.layers.LSTM(H, return_sequences=True))
    bl(x, mask=MASK)
    inner = bl.forward_layer
    m = fastgru.LSTM.from_keras(inner)
    assert m.zero_output_for_mask
    assert rel_err(m(x, mask=MASK)[0], np.asarray(inner(x, mask=MASK))) < 1e-5
    back = m.to_keras()
    assert back.zero_output_for_mask
    assert rel_err(np.asarray(back(x, mask=MASK)), np.asarray(inner(x, mask=MASK))) < 1e-5


def test_zero_output_for_mask_is_saved_and_validated(tmp_path):
    m = _layer(fastgru.GRU, zero_output_for_mask=True)
    m.save(tmp_path / "z.npz")
    assert fastgru.load(tmp_path / "z.npz").zero_output_for_mask
    assert "zero_output_for_mask" not in _layer(fastgru.GRU).get_config()
    with pytest.raises(TypeError, match="zero_output_for_mask"):
        _layer(fastgru.LSTM, zero_output_for_mask="yes")
