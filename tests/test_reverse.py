"""reverse=True: one direction run from each sequence's last valid step to its first, outputs at
their own time steps (ONNX direction="reverse"; Keras go_backwards). Checked against the
reference, against a forward layer on each sequence reversed within its length, against ONNX
Runtime's reverse GRU/LSTM, Keras' go_backwards layers, and through save/load."""
import os

import numpy as np
import pytest

import fastgru

from helpers import onnx_model, rel_err

I, H, T, B = 5, 7, 9, 4


def _flip(x, lengths):
    """Each sequence reversed within its length (padding stays in place)."""
    out = x.copy()
    for b, n in enumerate(lengths):
        out[:n, b] = x[:n, b][::-1]
    return out


@pytest.mark.parametrize("cls,kw", [(fastgru.GRU, {}), (fastgru.GRU, {"reset_after": False}),
                                    (fastgru.LSTM, {}), (fastgru.LSTM, {"proj_size": 3})])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("lengths", [None, [9, 3, 6, 1]])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_reverse_is_forward_on_flipped_sequences(cls, kw, dtype, lengths, n_threads):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    L = [T] * B if lengths is None else lengths
    rev = cls(I, H, num_layers=2, seed=1, dtype=dtype, reverse=True, n_threads=n_threads, **kw)
    fwd = cls(I, H, num_layers=2, seed=1, dtype=dtype, n_threads=n_threads, **kw)
    ref = cls(I, H, num_layers=2, seed=1, dtype=dtype, reverse=True, backend="reference", **kw)
    y, st = rev(x, lengths=lengths)
    y_f, st_f = fwd(_flip(x, L), lengths=lengths)
    y_r, st_r = ref(x, lengths=lengths)
    tol = 1e-5 if dtype == "float32" else 1e-12
    assert rel_err(y, _flip(y_f, L)) < tol
    assert rel_err(y, y_r) < tol
    def states(s):
        return list(s) if isinstance(s, tuple) else [s]

    for a, b_, c in zip(states(st), states(st_f), states(st_r), strict=True):
        assert rel_err(a, b_) < tol and rel_err(a, c) < tol
    # gradients against the reference backend
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = rev.backward(dy)
    dx_r = ref.backward(dy)
    assert rel_err(dx[0], dx_r[0]) < 10 * tol
    for k, g in rev.grads().items():
        assert rel_err(g, ref.grads()[k]) < 10 * tol, k


def test_reverse_config_and_refusals(tmp_path):
    m = fastgru.GRU(I, H, reverse=True, seed=0)
    assert m.reverse and "reverse=True" in repr(m) and m.get_config()["reverse"] is True
    assert not fastgru.GRU(I, H).reverse and "reverse" not in fastgru.GRU(I, H).get_config()
    m.save(tmp_path / "m.npz")
    back = fastgru.load(tmp_path / "m.npz")
    x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
    np.testing.assert_array_equal(back.eval()(x)[0], m.eval()(x)[0])
    assert back.reverse
    with pytest.raises(ValueError, match="reverse"):
        fastgru.LSTM(I, H, reverse=True, bidirectional=True)
    with pytest.raises(TypeError, match="reverse"):
        fastgru.GRU(I, H, reverse=1)
    with pytest.raises(ValueError, match="reverse"):
        m.step(x[0])
    # torch would load these weights as a forward layer: refused, as to_torch is
    with pytest.raises(NotImplementedError, match="reverse"):
        m.to_torch_state_dict()
    torch = pytest.importorskip("torch")
    with pytest.raises(NotImplementedError, match="reverse"):
        m.to_torch()
    assert torch is not None


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_reverse_matches_onnxruntime(tmp_path, cell, with_lengths):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    G = (3 if cell == "gru" else 4) * H
    W = rng.uniform(-0.6, 0.6, (1, G, I)).astype(np.float32)
    R = rng.uniform(-0.6, 0.6, (1, G, H)).astype(np.float32)
    Bias = rng.uniform(-0.6, 0.6, (1, 2 * G)).astype(np.float32)
    attrs = dict(hidden_size=H, direction="reverse")
    if cell == "gru":
        attrs["linear_before_reset"] = 1
    outs = ["Y", "Y_h"] + (["Y_c"] if cell == "lstm" else [])
    ins = ["X", "W", "R", "B"] + (["seq"] if with_lengths else [])
    node = helper.make_node(cell.upper(), ins, outs, **attrs)
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, None)]
    if with_lengths:
        inputs.append(helper.make_tensor_value_info("seq", TensorProto.INT32, None))
    graph = helper.make_graph(
        [node], "g", inputs, [helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
                              for n in outs],
        [numpy_helper.from_array(a, n) for a, n in ((W, "W"), (R, "R"), (Bias, "B"))])
    model = onnx_model(graph)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    lengths = np.array([9, 3, 6, 1], np.int32)
    feed = {"X": x, **({"seq": lengths} if with_lengths else {})}
    got = ort.InferenceSession(model.SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(None, feed)
    cls = fastgru.GRU if cell == "gru" else fastgru.LSTM
    kw = {"linear_before_reset": 1} if cell == "gru" else {}
    for m in (cls.from_onnx(W, R, Bias, direction="reverse", **kw), cls.from_onnx_model(model)):
        assert m.reverse
        y, st = m(x, lengths=lengths if with_lengths else None)
        assert rel_err(y, got[0][:, 0]) < 1e-5
        assert rel_err(st[0] if cell == "lstm" else st, got[1]) < 1e-5
    # and back out: the exported reverse layer runs in ONNX Runtime
    path = tmp_path / "rev.onnx"
    m.export_onnx(path, lengths=with_lengths)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"x": x, **({"lengths": lengths} if with_lengths else {})})
    assert rel_err(out[0], y) < 1e-5


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # keras vs NumPy 2's copy keyword
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_keras_go_backwards_maps_to_reverse(cell):
    os.environ.setdefault("KERAS_BACKEND", "jax")
    keras = pytest.importorskip("keras")
    cls = fastgru.GRU if cell == "gru" else fastgru.LSTM
    kcls = keras.layers.GRU if cell == "gru" else keras.layers.LSTM
    k = kcls(H, go_backwards=True, return_sequences=True, return_state=True)
    x = np.random.default_rng(0).standard_normal((B, T, I)).astype(np.float32)
    k(x)  # builds it
    k.set_weights([np.random.default_rng(1).uniform(-0.5, 0.5, w.shape).astype(np.float32)
                   for w in k.get_weights()])
    out = [np.asarray(o) for o in k(x)]
    m = cls.from_keras(k)
    assert m.reverse and m.batch_first
    y, st = m(x)
    assert rel_err(y, out[0][:, ::-1]) < 1e-5  # Keras returns the outputs reversed in time
    assert rel_err(st[0][0] if cell == "lstm" else st[0], out[1]) < 1e-5


@pytest.mark.parametrize("cls", [fastgru.GRU, fastgru.LSTM])
@pytest.mark.parametrize("L,B", [(1, 1), (2, 3), (1, 9)])
def test_one_step_inference_of_a_reverse_layer(cls, L, B):
    # T = 1 in eval mode takes the streaming shortcut: a reverse layer's one step is the
    # forward step (found by review: it raised step()'s refusal)
    m = cls(4, 5, num_layers=L, reverse=True, seed=0).eval()
    fwd = cls(4, 5, num_layers=L, seed=0).eval()
    fwd.load_state_dict({k.replace("_reverse", ""): v for k, v in m.state_dict().items()})
    x = np.random.default_rng(B).standard_normal((1, B, 4)).astype(np.float32)
    y, state = m(x)
    y2, state2 = fwd(x)
    assert np.array_equal(y, y2)
    h, h2 = (state[0], state2[0]) if cls is fastgru.LSTM else (state, state2)
    assert np.array_equal(h, h2)
    with pytest.raises(ValueError, match="streams forward"):
        m.step(x[0])


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_non_finite_padding_leaves_both_backends_finite(cell, bad):
    """Padding is never read: NaN/inf there gives finite results and zero dx at padding on
    the reference backend too (it used to give NaN gradients through 0 * inf)."""
    for backend in ("fast", "reference"):
        cls = fastgru.GRU if cell == "gru" else fastgru.LSTM
        m = cls(2, 3, bidirectional=True, seed=0, dtype="float64", backend=backend)
        x = np.ones((3, 2, 2))
        x[2, 1] = bad
        y, _ = m(x, lengths=[3, 2])
        dx = m.backward(np.ones_like(y))[0]
        assert np.isfinite(y).all() and np.isfinite(dx).all(), backend
        assert not dx[2, 1].any()
        assert all(np.isfinite(g).all() for g in m.grads().values()), backend
