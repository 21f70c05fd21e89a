"""Token rows of padding only (an empty text, Keras' fully masked row) in models: the
recurrent layer keeps its zero initial state there, as Keras' masked layers do, and the row
adds nothing to the recurrent weights' gradients."""
import numpy as np
import pytest

import fastgru

X = np.array([[0, 0, 0, 0], [0, 0, 3, 4], [3, 4, 0, 0], [3, 0, 4, 0], [0, 0, 0, 0],
              [5, 1, 2, 6]])
EMPTY = np.array([True, False, False, False, True, False])


def _model(cell="gru", pooling="last", bidirectional=False, layers=1, seed=0):
    rnn = (fastgru.GRU if cell == "gru" else fastgru.LSTM)(
        4, 5, num_layers=layers, bidirectional=bidirectional, batch_first=True, seed=seed,
        dtype="float64")
    m = fastgru.Sequential([fastgru.Embedding(7, 4, padding_idx=0), rnn,
                            fastgru.TimePooling(pooling),
                            fastgru.Dense(1, "sigmoid")], dtype="float64", seed=seed)
    m.compile(fastgru.SGD(0.5), "binary_crossentropy")
    return m


CASES = [dict(), dict(cell="lstm"), dict(pooling="mean"), dict(pooling="max"),
         dict(bidirectional=True), dict(layers=2, cell="lstm", bidirectional=True)]


@pytest.mark.parametrize("kw", CASES)
def test_empty_row_pools_the_zero_state(kw):
    m = _model(**kw)
    p = m.predict(X).ravel()
    b = m.layers[-1].params["bias"] if "bias" in m.layers[-1].params else 0.0
    np.testing.assert_allclose(p[EMPTY], 1 / (1 + np.exp(-np.ravel(b)[0])), rtol=1e-14)
    # the others as if the empty rows were not in the batch; lists of ids ([] rows) too
    np.testing.assert_allclose(p[~EMPTY], m.predict(X[~EMPTY]).ravel(), rtol=1e-12)
    ids = [[int(t) for t in r if t] for r in X]
    np.testing.assert_allclose(m.predict(ids).ravel(), p, rtol=1e-12)


@pytest.mark.parametrize("kw", CASES)
def test_empty_rows_add_nothing_to_the_recurrent_gradients(kw):
    """One SGD step on the batch with the empty rows moves the recurrent weights by
    (N - E) / N of the step without them (the mean's divisor), and no more."""
    y = np.array([1, 0, 1, 0, 0, 1])
    a, b = _model(**kw), _model(**kw)
    before = {k: v.copy() for k, v in a.get_weights().items()}
    a.fit(X, y, batch_size=6, epochs=1, shuffle=False, verbose=0)
    b.fit(X[~EMPTY], y[~EMPTY], batch_size=6, epochs=1, shuffle=False, verbose=0)
    n, e = len(X), int(EMPTY.sum())
    moved = 0
    for k, v in before.items():
        if "dense" in k or "embedding" in k:
            continue  # the head sees the empty rows' zero features; pads get no gradient
        da, db = a.get_weights()[k] - v, b.get_weights()[k] - v
        np.testing.assert_allclose(da * n, db * (n - e), rtol=1e-9, atol=1e-15)
        moved += int(np.abs(da).max() > 0)
    assert moved


def test_empty_row_equals_keras():
    keras = pytest.importorskip("keras")
    m = _model()
    km = keras.Sequential([keras.Input((None,), dtype="int32"),
                           keras.layers.Embedding(7, 4, mask_zero=True),
                           keras.layers.GRU(5), keras.layers.Dense(1, activation="sigmoid")])
    km.layers[0].set_weights([m.layers[0].params["weight"]])
    km.layers[1].set_weights(m.layers[1].layer.to_keras_weights())
    d = m.layers[-1].params
    km.layers[2].set_weights([d["weight"].T, d["bias"]])  # torch layout (out, in)
    np.testing.assert_allclose(m.predict(X).ravel(),
                               np.asarray(km.predict(X, verbose=0)).ravel(), atol=2e-6)
