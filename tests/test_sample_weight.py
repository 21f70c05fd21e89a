"""fit(class_weight=..., sample_weight=...) and evaluate(sample_weight=...): Keras' semantics
(each sample's loss term scaled, the divisor still the number of terms; metrics unweighted)."""
from __future__ import annotations

import numpy as np
import pytest

import fastgru
from fastgru.losses import BinaryCrossentropy, CategoricalCrossentropy, Loss, MeanSquaredError


def _mlp(seed=0, units=1, lr=0.1, loss="binary_crossentropy", dtype="float32"):
    act = "sigmoid" if units == 1 and loss == "binary_crossentropy" else (
        "softmax" if loss != "mse" else None)
    m = fastgru.Sequential([fastgru.Dense(6, activation="tanh"),
                            fastgru.Dense(units, activation=act)], seed=seed, dtype=dtype)
    m.compile(fastgru.SGD(lr), loss, ["accuracy"] if loss != "mse" else [])
    return m


def _data(n=40, f=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, f)).astype(np.float32)
    return x, (x[:, 0] > 0.3).astype(np.int64), rng


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weighted_losses_value_and_gradient(dtype):
    """Value = sum(w * l) / (number of terms); gradient checked by finite differences."""
    rng = np.random.default_rng(1)
    w = rng.uniform(0, 3, 5)
    cases = [(BinaryCrossentropy(from_logits=True), rng.standard_normal((5, 1)),
              rng.integers(0, 2, 5)),
             (CategoricalCrossentropy(from_logits=True), rng.standard_normal((5, 4)),
              rng.integers(0, 4, 5)),
             (CategoricalCrossentropy(), rng.dirichlet(np.ones(4), 5), rng.integers(0, 4, 5)),
             (MeanSquaredError(), rng.standard_normal((5, 2)), rng.standard_normal((5, 2)))]
    for loss, pred, target in cases:
        pred = pred.astype(dtype)
        per = np.array([loss(pred[i:i + 1], target[i:i + 1])[0] for i in range(5)])
        v, g = loss(pred, target, None, w)
        assert v == pytest.approx(float((w * per).sum() / 5), rel=1e-6), loss.name
        assert g.dtype == dtype
        v1, g1 = loss(pred, target, None, np.ones(5))
        v0, g0 = loss(pred, target)
        assert v1 == pytest.approx(v0, rel=1e-12) and np.allclose(g1, g0, rtol=1e-6)
        if dtype is np.float64:
            num = np.zeros_like(pred)
            for i in np.ndindex(pred.shape):
                e = np.zeros_like(pred)
                e[i] = 1e-6
                num[i] = (loss(pred + e, target, None, w)[0]
                          - loss(pred - e, target, None, w)[0]) / 2e-6
            np.testing.assert_allclose(g, num, rtol=1e-5, atol=1e-9)


def test_weighted_per_step_loss_with_mask():
    """Per-step targets: a sample's weight scales its valid steps; the divisor is the number
    of valid steps (Keras' sum_over_batch_size with a mask)."""
    rng = np.random.default_rng(2)
    z = rng.standard_normal((3, 4, 5))
    t = rng.integers(0, 5, (3, 4))
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], bool)
    w = np.array([0.5, 2.0, 3.0])
    loss = CategoricalCrossentropy(from_logits=True)
    v, g = loss(z, t, mask, w)
    lse = np.log(np.exp(z).sum(-1))
    per = lse - np.take_along_axis(z, t[..., None], -1)[..., 0]
    assert v == pytest.approx(float((per * mask * w[:, None]).sum() / mask.sum()), rel=1e-12)
    assert np.all(g[~mask] == 0)


def test_weighted_losses_equal_keras():
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(3)
    w = rng.uniform(0, 2, 6).astype(np.float32)
    p = rng.uniform(0.05, 0.95, (6, 1)).astype(np.float32)
    y = rng.integers(0, 2, 6)
    P = rng.dirichlet(np.ones(3), 6).astype(np.float32)
    t = rng.integers(0, 3, 6)
    r = rng.standard_normal((6, 2)).astype(np.float32)
    pairs = [(BinaryCrossentropy(), keras.losses.BinaryCrossentropy(), p, y,
              y[:, None].astype(np.float32)),
             (CategoricalCrossentropy(), keras.losses.SparseCategoricalCrossentropy(), P, t, t),
             (MeanSquaredError(), keras.losses.MeanSquaredError(), r, r[::-1].copy(),
              r[::-1].copy())]
    for ours, theirs, pred, target, ktarget in pairs:
        want = float(np.asarray(theirs(ktarget, pred, sample_weight=w)))
        assert ours(pred, target, None, w)[0] == pytest.approx(want, rel=2e-5), ours.name


def test_fit_sample_weight_scales_the_gradient_like_the_learning_rate():
    """SGD is linear in the gradient: weights 2 everywhere at lr 0.05 is lr 0.1 unweighted
    (the divisor stays the batch size, not the sum of the weights)."""
    x, y, _ = _data()
    a, b = _mlp(lr=0.1), _mlp(lr=0.05)
    ha = a.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
    hb = b.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0,
               sample_weight=np.full(len(x), 2.0))
    for k, v in a.parameters().items():
        np.testing.assert_allclose(b.parameters()[k], v, rtol=1e-5, atol=1e-7)
    # the logged loss is the weighted one: twice the unweighted loss of the same model
    assert hb.history["loss"][0] == pytest.approx(2 * ha.history["loss"][0], rel=1e-5)
    assert hb.history["accuracy"] == ha.history["accuracy"]  # metrics stay unweighted


def test_class_weight_equals_the_matching_sample_weight_and_ones_change_nothing():
    x, y, _ = _data(seed=4)
    runs = {}
    for name, kw in (("plain", {}), ("ones", dict(class_weight={0: 1.0, 1: 1.0})),
                     ("cw", dict(class_weight={1: 3.0})),  # class 0 unlisted: weight 1
                     ("sw", dict(sample_weight=np.where(y == 1, 3.0, 1.0)))):
        m = _mlp()
        h = m.fit(x, y, epochs=2, batch_size=7, verbose=0, **kw)
        runs[name] = (h.history["loss"], m.parameters())
    assert runs["ones"][0] == runs["plain"][0]
    assert runs["cw"][0] == runs["sw"][0]
    for k in runs["plain"][1]:
        np.testing.assert_array_equal(runs["cw"][1][k], runs["sw"][1][k])
        np.testing.assert_array_equal(runs["ones"][1][k], runs["plain"][1][k])
    assert runs["cw"][0] != runs["plain"][0]


def test_class_weight_keys_are_the_labels_given_to_fit():
    x, y, _ = _data(seed=5)
    names = np.array(["neg", "pos"])[y]
    a, b = _mlp(), _mlp()
    ha = a.fit(x, names, epochs=1, batch_size=8, verbose=0, class_weight={"pos": 2.5})
    hb = b.fit(x, y, epochs=1, batch_size=8, verbose=0, class_weight={1: 2.5})
    assert ha.history["loss"] == hb.history["loss"]
    with pytest.raises(ValueError, match="class_weight has key 'maybe'"):
        _mlp().fit(x, names, epochs=1, verbose=0, class_weight={"maybe": 2.0})
    with pytest.raises(ValueError, match="class_weight has key 2"):
        _mlp().fit(x, y, epochs=1, verbose=0, class_weight={2: 2.0})


def test_class_weight_with_softmax_and_one_hot_targets():
    x, y, _ = _data(seed=6)
    y3 = y + (x[:, 1] > 0.5)  # three classes
    a, b = _mlp(units=3, loss="sparse_categorical_crossentropy"), \
        _mlp(units=3, loss="categorical_crossentropy")
    cw = {0: 0.5, 2: 4.0}
    ha = a.fit(x, y3, epochs=1, batch_size=8, verbose=0, shuffle=False, class_weight=cw)
    hb = b.fit(x, np.eye(3, dtype=np.float32)[y3], epochs=1, batch_size=8, verbose=0,
               shuffle=False, class_weight=cw)
    assert ha.history["loss"] == pytest.approx(hb.history["loss"], rel=1e-6)


def test_fit_with_class_weight_matches_keras():
    keras = pytest.importorskip("keras")
    x, y, _ = _data(n=24, seed=7)
    cw = {0: 0.3, 1: 2.0}
    ours = _mlp(lr=0.2)
    ours.build((None, 3))
    k = keras.Sequential([keras.Input((3,)), keras.layers.Dense(6, activation="tanh"),
                          keras.layers.Dense(1, activation="sigmoid")])
    layers = [lay for lay in ours.layers if hasattr(lay, "params")]
    for kl, fl in zip(k.layers, layers, strict=True):
        kl.set_weights([fl.params["weight"].T, fl.params["bias"]])
    k.compile(keras.optimizers.SGD(0.2), "binary_crossentropy")
    kh = k.fit(x, y[:, None].astype(np.float32), batch_size=8, epochs=2, shuffle=False,
               verbose=0, class_weight=cw)
    h = ours.fit(x, y, batch_size=8, epochs=2, shuffle=False, bucket=False, verbose=0,
                 class_weight=cw)
    np.testing.assert_allclose(h.history["loss"], kh.history["loss"], rtol=1e-5)
    for kl, fl in zip(k.layers, layers, strict=True):
        np.testing.assert_allclose(fl.params["weight"].T, kl.get_weights()[0], rtol=1e-5,
                                   atol=1e-6)
    kv = k.evaluate(x, y[:, None].astype(np.float32), sample_weight=np.linspace(0, 2, 24),
                    verbose=0)
    assert ours.evaluate(x, y, sample_weight=np.linspace(0, 2, 24))[0] == pytest.approx(
        kv, rel=1e-5)


def test_validation_split_and_validation_data_carry_sample_weights():
    x, y, _ = _data(n=50, seed=8)
    sw = np.linspace(0.1, 2.0, 50)
    m = _mlp()
    h = m.fit(x, y, epochs=1, batch_size=10, verbose=0, validation_split=0.2, sample_weight=sw)
    assert h.history["val_loss"][0] == pytest.approx(
        m.evaluate(x[40:], y[40:], sample_weight=sw[40:])[0], rel=1e-6)
    h = m.fit(x[:40], y[:40], epochs=1, verbose=0, validation_data=(x[40:], y[40:], sw[40:]))
    assert h.history["val_loss"][0] == pytest.approx(
        m.evaluate(x[40:], y[40:], sample_weight=sw[40:])[0], rel=1e-6)
    # class_weight weighs the training data only (Keras)
    h = m.fit(x[:40], y[:40], epochs=1, verbose=0, validation_data=(x[40:], y[40:]),
              class_weight={1: 5.0})
    assert h.history["val_loss"][0] == pytest.approx(m.evaluate(x[40:], y[40:])[0], rel=1e-6)


def test_sequence_model_sample_weight():
    texts, y = fastgru.make_sentiment_texts(80, seed=0)
    vocab = fastgru.Vocabulary.build(texts)
    x, _ = vocab.encode(texts)
    runs = []
    for sw in (None, np.ones(len(y)), np.where(np.asarray(y) == 1, 2.0, 0.5)):
        m = fastgru.TextClassifier(len(vocab), embed_dim=8, hidden_size=8, dropout=0.0,
                                   seed=0, vocab=vocab)
        runs.append(m.fit(x, y, epochs=1, batch_size=16, verbose=0,
                          sample_weight=sw).history["loss"])
    assert runs[0] == runs[1] and runs[2] != runs[0]


@pytest.mark.parametrize("kw,err,match", [
    (dict(class_weight={0: 1.0}, sample_weight=np.ones(40)), ValueError, "not both"),
    (dict(sample_weight=np.ones(39)), ValueError, r"shape \(N,\) = \(40,\)"),
    (dict(sample_weight=np.ones((40, 2))), ValueError, r"shape \(N,\) = \(40,\)"),
    (dict(sample_weight=-np.ones(40)), ValueError, "finite and >= 0"),
    (dict(sample_weight=np.full(40, np.nan)), ValueError, "finite and >= 0"),
    (dict(sample_weight=np.array(["a"] * 40)), TypeError, "must hold numbers"),
    (dict(sample_weight={0: 1.0}), TypeError, "array of N = 40 numbers"),
    (dict(class_weight=[1.0, 2.0]), TypeError, "class_weight must be a dict"),
    (dict(class_weight={0: "x"}), TypeError, r"class_weight\[0\] must be a number"),
    (dict(class_weight={0: -1.0}), ValueError, r"class_weight\[0\] must be finite"),
    (dict(class_weight={True: 1.0}), ValueError, "class_weight has key True"),
    (dict(validation_data=(np.zeros((2, 3)), [0, 1], [1.0])), ValueError,
     r"validation_data's sample_weight must have shape"),
    (dict(validation_data=(1, 2, 3, 4)), ValueError, "validation_data must be a tuple"),
])
def test_bad_weights(kw, err, match):
    x, y, _ = _data()
    with pytest.raises(err, match=match):
        _mlp().fit(x, y, epochs=1, verbose=0, **kw)


def test_regression_and_custom_losses():
    x, _, rng = _data()
    t = rng.standard_normal((40, 1)).astype(np.float32)
    with pytest.raises(ValueError, match="class_weight needs a classification loss"):
        _mlp(loss="mse").fit(x, t, epochs=1, verbose=0, class_weight={0: 1.0})
    h = _mlp(loss="mse").fit(x, t, epochs=1, verbose=0, sample_weight=np.ones(40))
    assert np.isfinite(h.history["loss"][0])

    class OldLoss(Loss):  # written before sample weights existed
        task = "regression"

        def __call__(self, pred, target, mask=None):
            d = pred - target
            return float((d * d).mean()), 2 * d / d.size

    m = fastgru.Sequential([fastgru.Dense(1)], seed=0)
    m.compile(fastgru.SGD(0.1), OldLoss())
    m.fit(x, t, epochs=1, verbose=0)  # unweighted still works
    with pytest.raises(TypeError, match="does not take a sample_weight"):
        m.fit(x, t, epochs=1, verbose=0, sample_weight=np.ones(40))
