"""Keras weight interop: exact round trips (always) and the same outputs as Keras 3 layers (when
keras is importable; run on the JAX backend)."""
import os
import sys

import numpy as np
import pytest

import fastgru

from helpers import rel_err

I, H, B, T = 4, 5, 3, 6

# keras' variables warn about NumPy 2's __array__ copy keyword: not ours
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.mark.parametrize("cls,kw", [(fastgru.GRU, dict(reset_after=True)),
                                    (fastgru.GRU, dict(reset_after=False)),
                                    (fastgru.GRU, dict(bias=False)),
                                    (fastgru.LSTM, {}),
                                    (fastgru.GRUCell, {}), (fastgru.LSTMCell, {})])
def test_keras_round_trip_is_exact(cls, kw):
    m = cls(I, H, dtype="float64", seed=0, **kw)
    w = m.to_keras_weights()
    G = (3 if cls in (fastgru.GRU, fastgru.GRUCell) else 4) * H
    assert w[0].shape == (I, G) and w[1].shape == (H, G)
    if kw.get("bias", True):
        expected = (2, G) if kw.get("reset_after", True) and G == 3 * H else (G,)
        assert w[2].shape == expected
    else:
        assert len(w) == 2
    ra = kw.get("reset_after", True)
    back = cls.from_keras_weights(*w, reset_after=ra) if len(w) == 3 else \
        cls.from_keras_weights(w[0], w[1], None, reset_after=ra)
    for a, b in zip(back.to_keras_weights(), w, strict=True):
        assert np.array_equal(a, b)
    if ra and cls is not fastgru.LSTM and cls is not fastgru.LSTMCell:
        # reset-after GRU keeps both biases: fastgru -> Keras -> fastgru is exact too
        assert np.array_equal(back.flat_parameters(), m.flat_parameters())


def test_keras_gate_order_on_known_blocks():
    # fastgru/PyTorch rows r|z|n become Keras columns z|r|h
    gru = fastgru.GRU(1, 1, dtype="float64")
    gru.parameters()["weight_ih_l0"][:, 0] = [1.0, 2.0, 3.0]  # r, z, n
    gru.parameters()["bias_ih_l0"][:] = [10.0, 20.0, 30.0]
    gru.parameters()["bias_hh_l0"][:] = [0.1, 0.2, 0.3]
    kernel, _, bias = gru.to_keras_weights()
    assert kernel.tolist() == [[2.0, 1.0, 3.0]]
    assert bias.tolist() == [[20.0, 10.0, 30.0], [0.2, 0.1, 0.3]]
    lstm = fastgru.LSTM(1, 1, dtype="float64")
    lstm.parameters()["weight_ih_l0"][:, 0] = [1, 2, 3, 4]  # i f g o == Keras i f c o
    assert lstm.to_keras_weights()[0].tolist() == [[1, 2, 3, 4]]


def test_from_keras_weights_is_batch_first_like_from_keras():
    w = fastgru.GRU(I, H, seed=0).to_keras_weights()
    assert fastgru.GRU.from_keras_weights(*w).batch_first
    assert not fastgru.GRU.from_keras_weights(*w, batch_first=False).batch_first
    assert fastgru.LSTM.from_keras_weights(*fastgru.LSTM(I, H).to_keras_weights()).batch_first
    for bad in (dict(hidden_size=H + 1), dict(input_size=I)):
        with pytest.raises(ValueError, match="come from the weights"):
            fastgru.GRU.from_keras_weights(*w, **bad)
    # a constructor argument that would load the weights into another function
    for bad in (dict(reverse=True), dict(bidirectional=True), dict(num_layers=2)):
        with pytest.raises(ValueError, match="contradicts the weights"):
            fastgru.GRU.from_keras_weights(*w, **bad)


def test_keras_weight_errors():
    k = np.zeros((I, 3 * H))
    with pytest.raises(ValueError, match="reset_after=False"):
        fastgru.GRU.from_keras_weights(k, np.zeros((H, 3 * H)), np.zeros(3 * H), reset_after=True)
    with pytest.raises(ValueError, match="recurrent_kernel"):
        fastgru.GRU.from_keras_weights(k, np.zeros((H, 2 * H)), None)
    with pytest.raises(ValueError, match="arrays"):
        fastgru.GRU(I, H, num_layers=2).load_keras_weights([k])
    with pytest.raises(NotImplementedError, match="proj"):
        fastgru.LSTM(I, H, proj_size=2).to_keras_weights()


@pytest.fixture(scope="module")
def keras():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    return pytest.importorskip("keras")


def _keras_layer(keras, layer, x):
    layer(x)  # build
    rng = np.random.default_rng(1)  # Keras starts biases at 0: randomise everything
    layer.set_weights([rng.uniform(-0.5, 0.5, w.shape).astype(np.float32)
                       for w in layer.get_weights()])
    return layer


@pytest.mark.parametrize("kind", ["gru", "gru-reset-before", "gru-nobias", "lstm", "bi-gru",
                                  "bi-lstm"])
def test_matches_keras_layer(keras, kind):
    x = np.random.default_rng(0).standard_normal((B, T, I)).astype(np.float32)
    if "lstm" in kind:
        inner = keras.layers.LSTM(H, return_sequences=True, return_state=True)
        cls = fastgru.LSTM
    else:
        inner = keras.layers.GRU(H, return_sequences=True, return_state=True,
                                 reset_after="reset-before" not in kind,
                                 use_bias="nobias" not in kind)
        cls = fastgru.GRU
    klayer = keras.layers.Bidirectional(inner) if kind.startswith("bi") else inner
    klayer = _keras_layer(keras, klayer, x)
    outs = [np.asarray(o) for o in klayer(x)]
    m = cls.from_keras(klayer)
    assert m.batch_first and m.bidirectional == kind.startswith("bi")
    y, state = m(x)
    assert rel_err(y, outs[0]) < 1e-5
    h = state[0] if cls is fastgru.LSTM else state
    if kind.startswith("bi"):  # Keras: [y, h_fwd, (c_fwd,) h_bwd, (c_bwd)]
        assert rel_err(h[0], outs[1]) < 1e-5
        assert rel_err(h[1], outs[3 if cls is fastgru.LSTM else 2]) < 1e-5
    else:
        assert rel_err(h[0], outs[1]) < 1e-5
        if cls is fastgru.LSTM:
            assert rel_err(state[1][0], outs[2]) < 1e-5
    # plain weights path, and fastgru -> Keras is exact
    if not kind.startswith("bi"):
        ra = "reset-before" not in kind
        w = klayer.get_weights()
        m2 = cls.from_keras_weights(w[0], w[1], w[2] if len(w) == 3 else None,
                                    reset_after=ra, batch_first=True)
        assert np.array_equal(m2(x)[0], y)
    klayer.set_weights(m.to_keras_weights())
    pairs = zip(klayer.get_weights(), m.to_keras_weights(), strict=True)
    assert all(np.array_equal(a, b) for a, b in pairs)


@pytest.mark.parametrize("cls,kw", [(fastgru.GRU, {}), (fastgru.GRU, dict(reset_after=False)),
                                    (fastgru.LSTM, dict(bias=False)),
                                    (fastgru.GRU, dict(bidirectional=True, num_layers=2)),
                                    (fastgru.LSTM, dict(bidirectional=True, num_layers=3)),
                                    (fastgru.GRU, dict(reverse=True)),
                                    (fastgru.LSTM, dict(num_layers=2))])
def test_to_keras_builds_the_same_layers(keras, cls, kw):
    m = cls(I, H, batch_first=True, seed=3, **kw)
    x = np.random.default_rng(2).standard_normal((B, T, I)).astype(np.float32)
    y, state = m(x)
    kl = m.to_keras(return_state=True)
    stack = kl if isinstance(kl, list) else [kl]
    assert len(stack) == m.num_layers
    # return_state goes to the stack's last layer only: the inner ones feed their sequence
    z = x
    for layer in stack[:-1]:
        z = np.asarray(layer(z))
    out = [np.asarray(o) for o in stack[-1](z)]
    z = out[0]
    if kw.get("reverse"):  # Keras' go_backwards returns the outputs reversed in time
        z = z[:, ::-1]
    assert rel_err(z, y) < 1e-5
    h = state[0] if cls is fastgru.LSTM else state
    # the last layer's final states: Keras [y, h, (c)] or [y, h_fwd, (c_fwd), h_bwd, (c_bwd)]
    per = 2 if cls is fastgru.LSTM else 1
    assert rel_err(h[-1], out[1 + per] if kw.get("bidirectional") else out[1]) < 1e-5
    if m.num_layers > 1:  # the list is a working Keras stack, with unique names
        seq = keras.Sequential([keras.Input((None, I))] + m.to_keras(name="enc",
                                                                     return_sequences=False))
        assert [lay.name for lay in seq.layers] == [f"enc_{k}" for k in range(m.num_layers)] \
            or all(lay.name.startswith("bidirectional") for lay in seq.layers)
        last = np.concatenate([h[-2], h[-1]], -1) if m.bidirectional else h[-1]
        assert rel_err(np.asarray(seq(x)), last) < 1e-5
    back = cls.from_keras(kl)
    if cls is fastgru.GRU and kw.get("reset_after", True):  # both biases kept: exact
        assert np.array_equal(back.flat_parameters(), m.flat_parameters())
    assert np.array_equal(back(x)[0], y)


def test_to_keras_refuses_projection(keras):
    with pytest.raises(NotImplementedError, match="proj"):
        fastgru.LSTM(I, H, proj_size=2).to_keras()


def test_to_keras_refuses_a_reverse_stack(keras):
    """Keras hands the next layer a go_backwards layer's outputs reversed in time; fastgru's
    reverse stack keeps each output at its own step: no Keras stack computes it."""
    with pytest.raises(NotImplementedError, match="reverse"):
        fastgru.GRU(I, H, num_layers=2, reverse=True).to_keras()
    assert fastgru.GRU(I, H, reverse=True).to_keras().go_backwards


@pytest.mark.filterwarnings("ignore:The object being serialized includes a `lambda`")
def test_keras_configs_that_differ_warn_or_explain(keras):
    x = np.zeros((2, 3, I), np.float32)
    stateful = keras.layers.GRU(H, stateful=True)
    stateful(x)
    with pytest.warns(UserWarning, match="stateful=True"):
        fastgru.GRU.from_keras(stateful)
    for cls, kcls in ((fastgru.GRU, keras.layers.GRU), (fastgru.LSTM, keras.layers.LSTM)):
        dropped = kcls(H, dropout=0.3, recurrent_dropout=0.5)
        dropped(x)
        with pytest.warns(UserWarning, match="dropout=0.3, recurrent_dropout=0.5"):
            m = cls.from_keras(dropped)
        y = np.random.default_rng(0).standard_normal((2, 3, I)).astype(np.float32)
        assert rel_err(m(y)[0][:, -1], np.asarray(dropped(y))) < 1e-5  # same at inference
    mixed = keras.layers.LSTM(H, dtype="mixed_float16")
    mixed(x)
    with pytest.warns(UserWarning, match="float16"):
        m = fastgru.LSTM.from_keras(mixed)
    assert m.dtype == np.float32
    odd = keras.layers.GRU(H, activation=lambda t: 2 * t)
    odd(x)
    with pytest.raises(ValueError, match="activation=") as info:
        fastgru.GRU.from_keras(odd)
    assert len(str(info.value)) < 250  # a lambda's serialised bytecode is cut short


def test_keras_activations_are_checked_by_function_not_name(keras):
    """A user function named "tanh" (a scaled tanh) is refused although it serialises as
    'tanh'; the backend's own tanh/sigmoid (jax.numpy.tanh, keras.ops.sigmoid) are accepted
    and give Keras' numbers."""
    x = np.random.default_rng(0).standard_normal((2, 5, I)).astype(np.float32)

    def tanh(t):
        return 1.7159 * keras.ops.tanh(2.0 * t / 3.0)

    def sigmoid(t):
        return keras.ops.hard_sigmoid(t)

    for kw in ({"activation": tanh}, {"recurrent_activation": sigmoid}):
        layer = keras.layers.GRU(H, **kw)
        layer(x)
        with pytest.raises(ValueError, match="not Keras'"):
            fastgru.GRU.from_keras(layer)
    same = [{"recurrent_activation": keras.ops.sigmoid}, {"activation": keras.ops.tanh}]
    jnp = sys.modules.get("jax.numpy")
    if jnp is not None:
        same.append({"activation": jnp.tanh})
    for kw in same:
        layer = keras.layers.LSTM(H, return_sequences=True, **kw)
        y = np.asarray(layer(x))
        assert rel_err(fastgru.LSTM.from_keras(layer)(x)[0], y) < 1e-5


def test_to_keras_refuses_arguments_that_change_the_function(keras):
    """kwargs that would make the built Keras layer another function (its cell, direction,
    weights' shapes or masked outputs) are refused; the others reach the constructor."""
    m = fastgru.GRU(I, H)
    for kw in ({"activation": "relu"}, {"recurrent_activation": "hard_sigmoid"},
               {"go_backwards": True}, {"use_bias": False}, {"units": 3},
               {"reset_after": False}, {"zero_output_for_mask": True}):
        with pytest.raises(ValueError, match=f"{next(iter(kw))} would make the Keras layer"):
            m.to_keras(**kw)
    assert m.to_keras(return_state=True, name="g").return_state


def test_from_keras_takes_bfloat16_layers(keras):
    x = np.random.default_rng(0).standard_normal((2, 5, I)).astype(np.float32)
    kl = keras.layers.GRU(H, dtype="bfloat16", recurrent_initializer="glorot_uniform")
    kl(x)
    m = fastgru.GRU.from_keras(kl)
    assert m.dtype == np.float32
    for a, b in zip(m.to_keras_weights(), kl.get_weights(), strict=True):
        np.testing.assert_array_equal(a, np.asarray(b, np.float32))


def test_load_keras_weights_names_the_wrong_kernel():
    """A transposed kernel is reported as the kernel (with the layer's (I, 3H)), not as a
    recurrent_kernel of a size derived from it."""
    for m in (fastgru.GRU(I, H), fastgru.LSTM(I, H, num_layers=2), fastgru.GRUCell(I, H)):
        w = m.to_keras_weights()
        gk = 3 if m._cell == "gru" else 4
        with pytest.raises(ValueError, match=rf"kernel \(weights\[0:3\].* must have shape "
                                             rf"\(I, {gk}H\) = \({I}, {gk * H}\)"):
            m.load_keras_weights([w[0].T] + list(w[1:]))


@pytest.mark.parametrize("kind", ["lstm", "gru_reset_before", "gru_reset_after"])
@pytest.mark.parametrize("route", ["layer", "weights"])
def test_keras_layer_fine_tunes_at_keras_rate(kind, route, tmp_path):
    """Keras' LSTM and reset_after=False GRU have one bias; fastgru splits it into bias_ih and
    a zero bias_hh. Training both moved their sum at twice Keras' rate (every bias update
    exactly 2x after one SGD step); from_keras keeps bias_hh fixed for those layers."""
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 5, 3)).astype(np.float32)
    t = rng.standard_normal((8, 4)).astype(np.float32)
    kl = (keras.layers.LSTM(4) if kind == "lstm"
          else keras.layers.GRU(4, reset_after=kind == "gru_reset_after"))
    km = keras.Sequential([keras.Input((5, 3)), kl])
    km.compile(keras.optimizers.SGD(0.5), "mse")
    cls = fastgru.LSTM if kind == "lstm" else fastgru.GRU
    if route == "layer":
        layer = cls.from_keras(kl)
    else:
        kw = {} if kind == "lstm" else dict(reset_after=kind == "gru_reset_after")
        layer = cls.from_keras_weights(*kl.get_weights(), **kw)
    assert layer.train_bias_hh == (kind == "gru_reset_after")
    fm = fastgru.Sequential([layer, fastgru.LastState()], seed=0)
    fm.compile(fastgru.SGD(0.5), "mse")
    for _ in range(2):
        km.fit(x, t, batch_size=8, verbose=0, shuffle=False)
        fm.fit(x, t, batch_size=8, verbose=0, shuffle=False)
    for got, want in zip(layer.to_keras_weights(), kl.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # kept through save / load (the layer config)
    layer.save(tmp_path / "l.npz")
    assert fastgru.load(tmp_path / "l.npz").train_bias_hh == layer.train_bias_hh


def test_train_bias_hh_false_leaves_bias_hh_unchanged():
    m = fastgru.LSTM(3, 4, num_layers=2, bidirectional=True, seed=0, train_bias_hh=False)
    x = np.random.default_rng(1).standard_normal((5, 2, 3)).astype(np.float32)
    y, _ = m(x)
    m.backward(np.ones_like(y))
    g = m.grads()
    assert all(not np.any(v) for k, v in g.items() if k.startswith("bias_hh"))
    assert all(np.any(v) for k, v in g.items() if not k.startswith("bias_hh"))
    with pytest.raises(TypeError, match="train_bias_hh must be True or False"):
        fastgru.GRU(3, 4, train_bias_hh="no")


def test_from_keras_of_a_whole_model_says_to_pass_its_layers():
    keras = pytest.importorskip("keras")
    m = keras.Sequential([keras.Input((5, 3)), keras.layers.GRU(4, return_sequences=True),
                          keras.layers.Dense(2)])
    with pytest.raises(TypeError, match=r"got Sequential; for the GRU layers of a model pass "
                                        r"them.*\(this model has GRU\)"):
        fastgru.GRU.from_keras(m)


def test_keras_weight_mistakes_name_the_wrong_array():
    """H is read from the recurrent kernel, so a kernel in PyTorch's layout is the one blamed."""
    rng = np.random.default_rng(0)
    kernel, rk = rng.standard_normal((3, 12)), rng.standard_normal((4, 12))
    with pytest.raises(ValueError, match=r"kernel must have shape \(I, 3H\) with 3H = "
                       r"recurrent_kernel.shape\[1\] = 12, got \(12, 3\) \(PyTorch's layout"):
        fastgru.GRU.from_keras_weights(kernel.T, rk)
    with pytest.raises(ValueError, match=r"recurrent_kernel must have shape \(H, 3H\) = "
                       r"\(4, 12\), got \(12, 4\) \(PyTorch's layout"):
        fastgru.GRU.from_keras_weights(kernel, rk.T)
    m = fastgru.LSTM(3, 4)
    with pytest.raises(ValueError, match=r"kernel \(weights\[0:3\], layer 0, direction 0\) "
                       r"must have shape \(I, 4H\) = \(3, 16\), got \(16, 3\)"):
        m.load_keras_weights([np.zeros((16, 3)), np.zeros((4, 16)), np.zeros(16)])


def test_float64_to_keras_warns_when_the_backend_holds_float32(keras):
    import warnings

    m = fastgru.GRU(I, H, dtype="float64", seed=0)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        kl = m.to_keras()
    held = np.asarray(kl.get_weights()[0]).dtype
    ours = [r for r in rec if "to_keras" in str(r.message)]
    assert len(ours) == (held != np.float64)
    if ours:
        assert "holds the float64 weights as float32" in str(ours[0].message)


@pytest.mark.parametrize("cell,variant", [("gru", "plain"), ("gru", "no_bias"),
                                          ("gru", "reset_before"), ("lstm", "plain"),
                                          ("lstm", "no_bias")])
def test_keras_rnn_of_a_cell_and_keras_cells(keras, cell, variant):
    """keras.layers.RNN(GRUCell(...)) is Keras' GRU: from_keras takes it (with the RNN's own
    go_backwards / return_sequences); GRUCell/LSTMCell.from_keras take Keras' cells."""
    kw = {"no_bias": dict(use_bias=False), "reset_before": dict(reset_after=False)}.get(
        variant, {})
    kcls, fcls, fcell = ((keras.layers.GRUCell, fastgru.GRU, fastgru.GRUCell) if cell == "gru"
                         else (keras.layers.LSTMCell, fastgru.LSTM, fastgru.LSTMCell))
    x = np.random.default_rng(4).standard_normal((B, T, I)).astype(np.float32)
    for go_backwards in (False, True):
        rnn = keras.layers.RNN(kcls(H, **kw), return_sequences=True, go_backwards=go_backwards)
        want = np.asarray(rnn(x))
        m = fcls.from_keras(rnn)
        y = m(x)[0]
        assert rel_err(y[:, ::-1] if go_backwards else y, want) < 1e-5
        assert m.bias == ("use_bias" not in kw)
    bi = keras.layers.Bidirectional(keras.layers.RNN(kcls(H, **kw), return_sequences=True))
    want = np.asarray(bi(x))
    assert rel_err(fcls.from_keras(bi)(x)[0], want) < 1e-5
    # the cells, one step against the Keras cell's call
    kc = kcls(H, **kw)
    kc.build((None, I))
    c = fcell.from_keras(kc)
    h0 = np.random.default_rng(5).standard_normal((B, H)).astype(np.float32)
    if cell == "gru":
        got, ref = c(x[:, 0], h0), np.asarray(kc(x[:, 0], [h0])[0])
    else:
        got, ref = c(x[:, 0], (h0, h0))[0], np.asarray(kc(x[:, 0], [h0, h0])[0])
    assert rel_err(got, ref) < 1e-5
    with pytest.raises(TypeError, match="RNN of StackedRNNCells"):
        fcls.from_keras(keras.layers.RNN([kcls(H), kcls(H)]))
    with pytest.raises(TypeError, match=f"keras_cell must be a keras.layers.{kcls.__name__}"):
        fcell.from_keras(rnn)
    with pytest.raises(ValueError, match="activation='relu' is not supported"):
        relu = kcls(H, activation="relu")
        relu.build((None, I))
        fcell.from_keras(relu)
    with pytest.raises(ValueError, match="no weights yet"):
        fcell.from_keras(kcls(H))
