"""Finite-difference checks (float64, central differences) of every forward/backward piece of
the training API: layers, poolings, losses, and whole models with GRU/LSTM layers."""
from __future__ import annotations

import numpy as np
import pytest

import fastgru
from fastgru.losses import (
    BinaryCrossentropy,
    CategoricalCrossentropy,
    MeanSquaredError,
    on_model_output,
)
from fastgru.nn import Activation, Ctx, Dense, Dropout, Embedding, Spec, TimePooling

F64 = np.dtype(np.float64)


def numgrad(f, a, eps=1e-6, max_entries=None, rng=None):
    """Central-difference gradient of scalar f() w.r.t. array a (in place perturbation).
    max_entries: check a random subset (returns indices too)."""
    flat = a.reshape(-1)
    idx = np.arange(flat.size)
    if max_entries is not None and flat.size > max_entries:
        idx = (rng or np.random.default_rng(0)).choice(flat.size, max_entries, replace=False)
    g = np.zeros(len(idx))
    for j, i in enumerate(idx):
        old = flat[i]
        flat[i] = old + eps
        fp = f()
        flat[i] = old - eps
        fm = f()
        flat[i] = old
        g[j] = (fp - fm) / (2 * eps)
    return g, idx


def assert_close(analytic, numeric, rtol=1e-6, atol=1e-8):
    analytic = np.asarray(analytic, np.float64)
    np.testing.assert_allclose(analytic, numeric, rtol=rtol, atol=atol)


def build(layer, spec, seed=0):
    return layer.build(spec, F64, np.random.default_rng(seed))


def check_layer(layer, x, ctx, seed=1):
    """d sum(G * y) / d x and / d params against finite differences."""
    rng = np.random.default_rng(seed)
    y = layer.forward(x, ctx)
    G = rng.standard_normal(y.shape)
    layer.zero_grad()
    dx = layer.backward(G)

    def f():
        return float(np.sum(G * layer.forward(x, ctx)))

    if dx is not None:
        gx, _ = numgrad(f, x)
        assert_close(dx.reshape(-1), gx)
    for name, p in layer.parameters().items():
        gp, idx = numgrad(f, p)
        assert_close(layer.grads()[name].reshape(-1)[idx], gp)


# ------------------------------------------------------------------------------------------
# layers


@pytest.mark.parametrize("activation", ["linear", "relu", "tanh", "sigmoid", "softmax"])
@pytest.mark.parametrize("seq", [False, True])
def test_dense_gradcheck(activation, seq):
    d = Dense(4, activation=activation)
    build(d, Spec(3, sequence=seq))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 6, 3) if seq else (5, 3)) + 0.1  # away from relu's kink
    check_layer(d, x, Ctx())


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "softmax"])
def test_activation_gradcheck(activation):
    a = Activation(activation)
    x = np.random.default_rng(1).standard_normal((4, 5)) + 0.05
    check_layer(a, x, Ctx())


def test_embedding_gradcheck_with_repeats_lengths_and_padding():
    e = Embedding(7, 3, padding_idx=0, sparse=True)
    build(e, Spec(1, integer=True))
    x = np.array([[3, 3, 1, 5], [2, 6, 0, 0], [4, 4, 4, 0]])
    L = np.array([4, 2, 3])
    ctx = Ctx(lengths=L)
    G = np.random.default_rng(2).standard_normal((3, 4, 3))
    e.forward(x, ctx)
    e.zero_grad()
    e.backward(G)
    W = e.parameters()["weight"]
    want = np.zeros_like(W)
    for b in range(3):
        for t in range(L[b]):
            if x[b, t] != 0:
                want[x[b, t]] += G[b, t]
    np.testing.assert_allclose(e.grads()["weight"], want, rtol=1e-12)

    # the same through finite differences of sum(G * y) restricted to valid steps
    mask = (np.arange(4)[None] < L[:, None])[:, :, None]

    def f():
        return float(np.sum(G * mask * e.forward(x, ctx)))

    gp, _ = numgrad(f, W)
    gp = gp.reshape(W.shape)
    gp[0] = 0  # the pad row is never trained
    assert_close(e.grads()["weight"], gp.reshape(W.shape))
    np.testing.assert_array_equal(e.sparse_rows()["weight"], [1, 2, 3, 4, 5, 6])
    assert np.all(W[0] == 0)


def test_embedding_sparse_zero_grad_touches_only_rows():
    e = Embedding(1000, 4, sparse=True)
    build(e, Spec(1, integer=True))
    x = np.array([[5, 9, 5]])
    e.forward(x, Ctx())
    e.backward(np.ones((1, 3, 4)))
    e.forward(np.array([[7]]), Ctx())
    e.backward(np.ones((1, 1, 4)))  # accumulates over two backward calls
    np.testing.assert_array_equal(e.sparse_rows()["weight"], [5, 7, 9])
    np.testing.assert_array_equal(e.grads()["weight"][5], 2.0)
    e.zero_grad()
    assert not e.grads()["weight"].any()
    assert e.sparse_rows()["weight"].size == 0


def test_embedding_dense_by_default():
    """sparse=False (default, as PyTorch's nn.Embedding and Keras): no row-sparse gradient for
    the optimizer, the same gradient values, zero_grad clears every row."""
    e, es = Embedding(50, 4), Embedding(50, 4, sparse=True)
    assert not e.sparse and e.get_config()["sparse"] is False
    for layer in (e, es):
        build(layer, Spec(1, integer=True))
    es.params["weight"][...] = e.params["weight"]
    x = np.array([[5, 9, 5]])
    for layer in (e, es):
        layer.forward(x, Ctx())
        layer.backward(np.ones((1, 3, 4)))
    assert e.sparse_rows() == {}
    np.testing.assert_array_equal(es.sparse_rows()["weight"], [5, 9])
    np.testing.assert_array_equal(e.grads()["weight"], es.grads()["weight"])
    np.testing.assert_array_equal(e.touched_rows(), [5, 9])
    e.grads()["weight"][3] = 1.0  # e.g. written by an allreduce
    e.zero_grad()
    assert not e.grads()["weight"].any()
    with pytest.raises(TypeError, match="sparse must be a bool"):
        Embedding(5, 2, sparse="yes")


@pytest.mark.parametrize("opt", ["sgd_momentum", "adam", "adamw"])
def test_dense_embedding_training_matches_torch(opt):
    """Mini-batches that miss some rows: a dense Embedding trained with momentum SGD / Adam /
    AdamW (torch's epsilon form) follows torch.nn.Embedding + torch.optim step by step (the
    rows absent from a batch move too); the lazy sparse=True one does not."""
    torch = pytest.importorskip("torch")
    V, E = 12, 3
    rng = np.random.default_rng(0)
    batches = [rng.integers(1, V, size=(2, 3)) for _ in range(6)]
    Gs = [rng.standard_normal((2, 3, E)) for _ in range(6)]

    def make(sparse):
        e = Embedding(V, E, sparse=sparse)
        build(e, Spec(1, integer=True))
        return e

    def fast_opt():
        if opt == "sgd_momentum":
            return fastgru.SGD(0.1, momentum=0.9, weight_decay=0.01)
        cls = fastgru.Adam if opt == "adam" else fastgru.AdamW
        return cls(0.05, epsilon=1e-8, epsilon_form="torch", weight_decay=0.01)

    def run_fast(sparse):
        e, o = make(sparse), fast_opt()
        w0 = e.params["weight"].copy()
        for x, G in zip(batches, Gs, strict=True):
            e.zero_grad()
            e.forward(x, Ctx())
            e.backward(G)
            o.step(e.params, e.grads(), e.sparse_rows())
        return w0, e.params["weight"]

    w0, dense = run_fast(False)
    _, lazy = run_fast(True)
    te = torch.nn.Embedding(V, E, padding_idx=0, dtype=torch.float64)
    with torch.no_grad():
        te.weight.copy_(torch.from_numpy(w0))
    if opt == "sgd_momentum":
        to = torch.optim.SGD(te.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    elif opt == "adam":
        to = torch.optim.Adam(te.parameters(), lr=0.05, eps=1e-8, weight_decay=0.01)
    else:
        to = torch.optim.AdamW(te.parameters(), lr=0.05, eps=1e-8, weight_decay=0.01)
    for x, G in zip(batches, Gs, strict=True):
        to.zero_grad()
        (te(torch.from_numpy(x)) * torch.from_numpy(G)).sum().backward()
        to.step()
    want = te.weight.detach().numpy()
    np.testing.assert_allclose(dense, want, rtol=1e-10, atol=1e-12)
    assert np.abs(lazy - want).max() > 1e-3


def test_embedding_rejects_bad_ids():
    e = Embedding(5, 2)
    build(e, Spec(1, integer=True))
    with pytest.raises(ValueError, match="token ids"):
        e.forward(np.array([[1, 5]]), Ctx())
    with pytest.raises(TypeError, match="integer"):
        e.forward(np.array([[1.0]]), Ctx())


def test_dropout_mask_gradient_and_eval():
    d = Dropout(0.4)
    x = np.random.default_rng(0).standard_normal((200, 50))
    ctx = Ctx(training=True, rng=np.random.default_rng(3))
    y = d.forward(x, ctx)
    kept = y != 0
    assert 0.5 < kept.mean() < 0.7
    np.testing.assert_allclose(y[kept], x[kept] / 0.6)
    G = np.ones_like(x)
    np.testing.assert_allclose(d.backward(G), kept / 0.6)
    assert d.forward(x, Ctx(training=False)) is x
    with pytest.raises(ValueError, match="rate"):
        Dropout(1.0)


@pytest.mark.parametrize("mode", ["last", "mean", "max"])
@pytest.mark.parametrize("directions", [1, 2, "reverse"])
def test_time_pooling_gradcheck(mode, directions):
    p = TimePooling(mode)
    reverse = directions == "reverse"
    build(p, Spec(4, directions=1 if reverse else directions, reverse=reverse))
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 5, 4))
    L = np.array([5, 2, 3])
    x[np.arange(5)[None] >= L[:, None]] = 0  # an RNN's zeros at padding
    check_layer(p, x, Ctx(lengths=L))


def test_time_pooling_values():
    x = np.arange(2 * 3 * 4, dtype=np.float64).reshape(2, 3, 4)
    L = np.array([3, 2])
    p = TimePooling("last")
    build(p, Spec(4, directions=2))
    out = p.forward(x, Ctx(lengths=L))
    # forward half at the last valid step, reverse half at step 0
    np.testing.assert_array_equal(out[1], np.r_[x[1, 1, :2], x[1, 0, 2:]])
    m = TimePooling("mean")
    build(m, Spec(4))
    np.testing.assert_allclose(m.forward(x, Ctx(lengths=L))[1], x[1, :2].mean(0))
    mx = TimePooling("max")
    build(mx, Spec(4))
    x2 = x.copy()
    x2[1, 2] = 1e9  # padding never wins
    np.testing.assert_array_equal(mx.forward(x2, Ctx(lengths=L))[1], x[1, 1])


# ------------------------------------------------------------------------------------------
# losses


def loss_check(loss, pred, target, mask=None):
    value, grad = loss(pred, target, mask)

    def f():
        return loss(pred, target, mask)[0]

    g, _ = numgrad(f, pred)
    assert_close(grad.reshape(-1), g)
    return value


def test_bce_gradcheck_and_stability():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((6, 1)) * 3
    y = rng.integers(0, 2, 6).astype(np.float64)
    bce = BinaryCrossentropy(from_logits=True)
    v = loss_check(bce, z, y)
    p = 1 / (1 + np.exp(-z[:, 0]))
    np.testing.assert_allclose(v, -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    big = np.array([[1000.0], [-1000.0]])
    v, g = bce(big, np.array([0.0, 1.0]))
    np.testing.assert_allclose(v, 1000.0)
    assert np.all(np.isfinite(g))
    v32, _ = bce(np.array([[80.0]], np.float32), np.array([1.0], np.float32))
    assert v32 == 0.0 or v32 < 1e-30


def test_bce_per_step_mask():
    rng = np.random.default_rng(1)
    z = rng.standard_normal((3, 4, 1))
    y = rng.integers(0, 2, (3, 4)).astype(np.float64)
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], bool)
    v = loss_check(BinaryCrossentropy(from_logits=True), z, y, mask)
    zz = z[..., 0][mask]
    want = np.mean(np.maximum(zz, 0) - zz * y[mask] + np.log1p(np.exp(-np.abs(zz))))
    np.testing.assert_allclose(v, want)


@pytest.mark.parametrize("onehot", [False, True])
def test_categorical_gradcheck(onehot):
    rng = np.random.default_rng(2)
    z = rng.standard_normal((5, 4)) * 2
    y = rng.integers(0, 4, 5)
    t = np.eye(4)[y] if onehot else y
    v = loss_check(CategoricalCrossentropy(from_logits=True), z, t)
    lse = np.log(np.exp(z).sum(1))
    np.testing.assert_allclose(v, np.mean(lse - z[np.arange(5), y]))
    v_big, g_big = CategoricalCrossentropy(True)(np.array([[1e4, 0.0]]), np.array([1]))
    np.testing.assert_allclose(v_big, 1e4)
    assert np.all(np.isfinite(g_big))


def test_categorical_per_step_mask():
    rng = np.random.default_rng(3)
    z = rng.standard_normal((2, 3, 5))
    y = rng.integers(0, 5, (2, 3))
    mask = np.array([[1, 1, 0], [1, 1, 1]], bool)
    loss_check(CategoricalCrossentropy(True), z, y, mask)


def test_mse_gradcheck_mask():
    rng = np.random.default_rng(4)
    p = rng.standard_normal((3, 4, 2))
    t = rng.standard_normal((3, 4, 2))
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], bool)
    v = loss_check(MeanSquaredError(), p, t, mask)
    np.testing.assert_allclose(v, np.mean(((p - t) ** 2)[mask]))
    loss_check(MeanSquaredError(), rng.standard_normal((5, 1)), rng.standard_normal(5))


# ------------------------------------------------------------------------------------------
# whole models with the recurrent layers


def model_gradcheck(model, x, y, n_entries=6):
    """Gradients of model.loss over a prepared batch vs finite differences, every parameter."""
    from fastgru.trainer import _batch, prepare_x, prepare_y

    p = prepare_x(model, x)
    p.y = prepare_y(model, y, p)
    xb, L, yb, mask = _batch(p, np.arange(len(p)), model.output_spec.sequence)

    def f():
        out = model.forward(xb, L, training=False)
        return on_model_output(model.loss, out, yb, mask)[0]

    model.zero_grad()
    for layer in model.layers:  # backward needs a training-mode cache; no dropout here
        getattr(getattr(layer, "layer", None), "train", lambda: None)()
    out = model.forward(xb, L, training=True)
    _, d = on_model_output(model.loss, out, yb, mask)
    model.backward(d)
    grads = {k: v.copy() for k, v in model.grads().items()}
    rng = np.random.default_rng(0)
    for name, param in model.parameters().items():
        g, idx = numgrad(f, param, max_entries=n_entries, rng=rng)
        assert_close(grads[name].reshape(-1)[idx], g, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("cell,bidirectional,pooling", [
    ("gru", False, "last"), ("gru", True, "last"), ("lstm", True, "mean"), ("lstm", False, "max"),
])
def test_text_classifier_gradcheck(cell, bidirectional, pooling):
    m = fastgru.TextClassifier(12, embed_dim=4, hidden_size=5, cell=cell,
                               bidirectional=bidirectional, pooling=pooling, dropout=0.0,
                               dtype="float64", seed=0)
    x = [[3, 4, 5, 2], [6, 7], [8, 9, 10, 11, 3], [2]]
    model_gradcheck(m, x, np.array([1, 0, 1, 0]))


def test_multiclass_two_layer_gradcheck():
    m = fastgru.SequenceClassifier(3, hidden_size=4, num_layers=2, num_classes=3,
                                   dtype="float64", seed=1)
    x = np.random.default_rng(0).standard_normal((4, 5, 3))
    model_gradcheck(m, x, np.array([0, 2, 1, 2]))


def test_per_step_regressor_gradcheck_with_lengths():
    m = fastgru.SequenceRegressor(2, output_size=2, hidden_size=4, cell="lstm",
                                  dtype="float64", seed=2)
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((n, 2)) for n in (5, 2, 4)]
    ys = [rng.standard_normal((n, 2)) for n in (5, 2, 4)]
    model_gradcheck(m, xs, ys)


def test_language_model_gradcheck():
    m = fastgru.LanguageModel(9, embed_dim=3, hidden_size=4, dtype="float64", seed=3)
    x = [[1, 2, 3, 4], [5, 6], [7, 8, 2]]
    y = [[2, 3, 4, 5], [6, 7], [8, 2, 3]]
    model_gradcheck(m, x, y)


def test_sequential_with_user_layers_gradcheck():
    gru = fastgru.GRU(4, 3, batch_first=True, dtype="float64", seed=0)
    m = fastgru.Sequential([fastgru.Embedding(10, 4), gru, fastgru.LastState(),
                            fastgru.Dense(3, activation="tanh"), fastgru.Dense(1)],
                           dtype="float64", seed=0)
    m.compile("adam", fastgru.MeanSquaredError())
    model_gradcheck(m, [[1, 2, 3], [4, 5], [6]], np.array([0.5, -1.0, 2.0]))


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_last_state_after_a_reverse_layer_is_its_final_state(cell):
    """A reverse (go_backwards) layer ends at step 0: LastState gives its h_n there, with
    lengths too, and its gradient flows to step 0 only."""
    cls = fastgru.GRU if cell == "gru" else fastgru.LSTM
    rnn = cls(4, 3, batch_first=True, reverse=True, dtype="float64", seed=0)
    m = fastgru.Sequential([rnn, fastgru.LastState()], dtype="float64", seed=0)
    m.build()
    x = np.random.default_rng(5).standard_normal((3, 6, 4))
    lengths = np.array([6, 2, 4])
    out = m.forward(x, lengths)
    _, state = rnn(x, lengths=lengths)
    h_n = state[0] if cell == "lstm" else state
    np.testing.assert_allclose(out, h_n[0], rtol=1e-14, atol=0)
    head = fastgru.Sequential([fastgru.Embedding(10, 4), cls(4, 3, batch_first=True,
                               reverse=True, dtype="float64", seed=1), fastgru.LastState(),
                               fastgru.Dense(1)], dtype="float64", seed=0)
    head.compile("adam", fastgru.MeanSquaredError())
    model_gradcheck(head, [[1, 2, 3], [4, 5], [6]], np.array([0.5, -1.0, 2.0]))


def test_time_major_recurrent_layer_in_a_model():
    """A GRU built with batch_first=False works in a (batch-first) model, same numbers."""
    bf = fastgru.GRU(4, 3, batch_first=True, dtype="float64", seed=0)
    tm = fastgru.GRU(4, 3, batch_first=False, dtype="float64", seed=0)
    models = []
    for rnn in (bf, tm):
        m = fastgru.Sequential([fastgru.Embedding(10, 4), rnn, fastgru.LastState(),
                                fastgru.Dense(1)], dtype="float64", seed=0)
        m.compile("adam", fastgru.MeanSquaredError())
        models.append(m)
    x = [[1, 2, 3], [4, 5], [6]]
    np.testing.assert_array_equal(models[0].predict(x), models[1].predict(x))
    model_gradcheck(models[1], x, np.array([0.5, -1.0, 2.0]))


def test_presets_sparse_embedding_argument():
    assert fastgru.TextClassifier(20, embed_dim=4, hidden_size=3).layers[0].sparse
    assert not fastgru.LanguageModel(20, embed_dim=4, hidden_size=3,
                                     sparse_embedding=False).layers[0].sparse
    for cls in (fastgru.TextClassifier, fastgru.LanguageModel):
        with pytest.raises(TypeError, match="sparse_embedding must be True or False"):
            cls(20, embed_dim=4, hidden_size=3, sparse_embedding="no")
