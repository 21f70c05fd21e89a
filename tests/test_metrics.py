"""fastgru.metrics: Keras' names and results, streaming over batches, masks, saving, errors.

Checked three ways: against keras.metrics fed the same probabilities (when Keras is installed),
against scikit-learn's exact scores, and against direct per-threshold counts written here."""
import importlib.util

import numpy as np
import pytest

import fastgru
from fastgru import metrics as fm

HAVE_KERAS = importlib.util.find_spec("keras") is not None


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def binary_batches(seed=0, sizes=(37, 64, 5)):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((n, 1)).astype(np.float32) * 2, rng.integers(0, 2, n))
            for n in sizes]


def onehot_batches(seed=1, sizes=(37, 64, 5), K=5):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((n, K)).astype(np.float32) * 2,
             np.eye(K, dtype=np.float32)[rng.integers(0, K, n)]) for n in sizes]


def streamed(spec, task, batches):
    m = fm.get_metric(spec, task)
    for z, y in batches:
        m.update(z, y, None)
    return m.result()


def direct_counts(p, y, thresholds):
    """TP, FP, TN, FN at each threshold by plain comparisons (p > t is predicted positive)."""
    pos = y != 0
    out = []
    for t in thresholds:
        hit = p > t
        out.append(((hit & pos).sum(), (hit & ~pos).sum(), (~hit & ~pos).sum(),
                    (~hit & pos).sum()))
    return np.array(out, np.float64).T


def test_precision_recall_counts_match_scikit_learn_and_direct_counts():
    from sklearn.metrics import precision_score, recall_score

    bb = binary_batches()
    p = np.concatenate([sigmoid(z[:, 0]) for z, _ in bb])
    y = np.concatenate([t for _, t in bb])
    for thr in (0.5, 0.3, 0.85):
        pred = (p > thr).astype(int)
        assert streamed(fm.Precision(thresholds=thr), "binary", bb) == \
            pytest.approx(precision_score(y, pred), rel=1e-12)
        assert streamed(fm.Recall(thresholds=thr), "binary", bb) == \
            pytest.approx(recall_score(y, pred), rel=1e-12)
    tp, fp, tn, fn = direct_counts(p, y, [0.5])[:, 0]
    for name, want in (("true_positives", tp), ("false_positives", fp),
                       ("true_negatives", tn), ("false_negatives", fn)):
        assert streamed(name, "binary", bb) == want
    assert tp + fp + tn + fn == len(y) and tp > 0 and fp > 0


def trapezoid_roc(p, y, thresholds):
    tp, fp, tn, fn = direct_counts(p, y, thresholds)
    tpr, fpr = tp / np.maximum(tp + fn, 1), fp / np.maximum(fp + tn, 1)
    return float(((fpr[:-1] - fpr[1:]) * (tpr[:-1] + tpr[1:]) / 2).sum())


def test_auc_equals_the_trapezoid_over_its_thresholds_and_nears_the_exact_auc():
    from sklearn.metrics import roc_auc_score

    bb = binary_batches(3, (50, 200, 31))
    p = np.concatenate([sigmoid(z[:, 0].astype(np.float64)) for z, _ in bb])
    y = np.concatenate([t for _, t in bb])
    # listed thresholds take the comparison path; -eps and 1 + eps are added as in Keras
    thr = [0.1, 0.35, 0.5, 0.77]
    want = trapezoid_roc(p, y, [-1e-7] + thr + [1 + 1e-7])
    assert streamed(fm.AUC(thresholds=thr), "binary", bb) == pytest.approx(want, rel=1e-12)
    # evenly spaced thresholds take the bucketing path: same counts
    n = 9
    even = [-1e-7] + [(i + 1) / (n - 1) for i in range(n - 2)] + [1 + 1e-7]
    assert streamed(fm.AUC(num_thresholds=n), "binary", bb) == \
        pytest.approx(trapezoid_roc(p, y, even), rel=1e-12)
    # many thresholds: close to the exact area
    assert streamed(fm.AUC(num_thresholds=5000), "binary", bb) == \
        pytest.approx(roc_auc_score(y, p), abs=2e-3)
    # a perfect ranking
    z = np.linspace(-5, 5, 40)[:, None]
    m = fm.get_metric("auc", "binary")
    m.update(z, (z[:, 0] > 0).astype(int), None)
    assert m.result() == pytest.approx(1.0, abs=1e-9)


def test_mean_metrics_match_their_formulas():
    bb = binary_batches(4)
    p = np.concatenate([sigmoid(z[:, 0].astype(np.float64)) for z, _ in bb])
    y = np.concatenate([t for _, t in bb]).astype(np.float64)
    pc = np.clip(p, 1e-7, 1 - 1e-7)
    assert streamed("rmse", "binary", bb) == pytest.approx(np.sqrt(np.mean((p - y) ** 2)),
                                                          rel=1e-6)
    assert streamed("binary_crossentropy", "binary", bb) == pytest.approx(
        -np.mean(y * np.log(pc) + (1 - y) * np.log(1 - pc)), rel=1e-6)
    assert streamed("binary_accuracy", "binary", bb) == pytest.approx(np.mean((p > 0.5) == y))
    ob = onehot_batches()
    P = np.concatenate([softmax(z.astype(np.float64)) for z, _ in ob])
    Y = np.concatenate([t for _, t in ob])
    assert streamed("categorical_crossentropy", "multiclass", ob) == pytest.approx(
        -np.mean(np.log(P[Y.astype(bool)])), rel=1e-6)
    ids = [(z, t.argmax(-1)) for z, t in ob]
    assert streamed("sparse_categorical_crossentropy", "multiclass", ids) == pytest.approx(
        -np.mean(np.log(P[Y.astype(bool)])), rel=1e-6)
    rank = (P > P[Y.astype(bool)][:, None]).sum(1)  # classes scored above the target
    for k in (1, 2, 3):
        assert streamed(fm.TopKCategoricalAccuracy(k), "multiclass", ob) == \
            pytest.approx(np.mean(rank < k))
    assert streamed("sparse_top_k_categorical_accuracy", "multiclass", ids) == 1.0  # K = 5
    r = np.random.default_rng(0)
    rb = [(r.standard_normal((20, 3)), r.uniform(0.5, 2, (20, 3)))]
    d, t = rb[0][0] - rb[0][1], rb[0][1]
    assert streamed("mape", "regression", rb) == pytest.approx(100 * np.mean(np.abs(d) / t))
    assert streamed("msle", "regression", rb) == pytest.approx(
        np.mean((np.log1p(np.maximum(rb[0][0], 1e-7)) - np.log1p(t)) ** 2))


@pytest.mark.skipif(not HAVE_KERAS, reason="keras not installed")
def test_results_equal_keras_metrics_fed_the_same_probabilities():
    import keras

    def keras_result(k, batches, task, sparse=False):
        for z, y in batches:
            p = sigmoid(z) if task == "binary" else softmax(z)
            yy = y.astype(np.float32).reshape(p.shape) if task == "binary" else y
            k.update_state(yy, p.astype(np.float32))
        return float(k.result())

    bb, ob = binary_batches(), onehot_batches()
    ids = [(z, t.argmax(-1)) for z, t in ob]
    km = keras.metrics
    cases = [
        ("binary", bb, "auc", km.AUC()),
        ("binary", bb, fm.AUC(curve="PR"), km.AUC(curve="PR")),
        ("binary", bb, fm.AUC(num_thresholds=7, summation_method="minoring"),
         km.AUC(num_thresholds=7, summation_method="minoring")),
        ("binary", bb, fm.AUC(curve="PR", summation_method="majoring"),
         km.AUC(curve="PR", summation_method="majoring")),
        ("binary", bb, fm.AUC(thresholds=[0.1, 0.5, 0.77]), km.AUC(thresholds=[0.1, 0.5, 0.77])),
        ("binary", bb, "precision", km.Precision()),
        ("binary", bb, fm.Recall(thresholds=0.3), km.Recall(thresholds=0.3)),
        ("binary", bb, "false_negatives", km.FalseNegatives()),
        ("binary", bb, "rmse", km.RootMeanSquaredError()),
        ("binary", bb, "msle", km.MeanSquaredLogarithmicError()),
        ("binary", bb, "binary_crossentropy", km.BinaryCrossentropy()),
        ("binary", bb, "binary_accuracy", km.BinaryAccuracy()),
        ("multiclass", ob, "categorical_crossentropy", km.CategoricalCrossentropy()),
        ("multiclass", ob, fm.TopKCategoricalAccuracy(k=2), km.TopKCategoricalAccuracy(k=2)),
        ("multiclass", ob, "auc", km.AUC()),
        ("multiclass", ob, "precision", km.Precision()),
        ("multiclass", ob, fm.Recall(class_id=2), km.Recall(class_id=2)),
        ("multiclass", ids, "sparse_categorical_crossentropy",
         km.SparseCategoricalCrossentropy()),
        ("multiclass", ids, "sparse_categorical_accuracy", km.SparseCategoricalAccuracy()),
    ]
    for task, batches, spec, k in cases:
        got, want = streamed(spec, task, batches), keras_result(k, batches, task)
        assert got == pytest.approx(want, rel=2e-6, abs=1e-7), (spec, got, want)


def test_mask_leaves_padded_steps_out():
    rng = np.random.default_rng(5)
    z = rng.standard_normal((4, 6, 1))
    y = rng.integers(0, 2, (4, 6, 1))
    mask = np.arange(6)[None, :] < np.array([6, 3, 1, 4])[:, None]
    for spec in ("auc", "precision", "accuracy", "binary_crossentropy"):
        m = fm.get_metric(spec, "binary")
        m.update(z, y, mask)
        ref = fm.get_metric(spec, "binary")
        ref.update(z[mask], y[mask], None)
        assert m.result() == pytest.approx(ref.result(), rel=1e-12), spec
        garbage = z.copy()
        garbage[~mask] = 1e3
        m2 = fm.get_metric(spec, "binary")
        m2.update(garbage, y, mask)
        assert m2.result() == pytest.approx(m.result(), rel=1e-12), spec


def test_fit_logs_keras_keys_and_the_model_saves_metric_configs(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 7, 3))
    y = (x[:, :, 0].mean(1) > 0).astype(int)
    model = fastgru.SequenceClassifier(3, hidden_size=8, seed=1, dtype="float64")
    auc50 = fm.AUC(num_thresholds=50, name="auc50")
    model.compile("adam", "binary_crossentropy",
                  metrics=["acc", "AUC", auc50, fm.Precision(thresholds=0.4), "recall"])
    h = model.fit(x, y, epochs=2, batch_size=16, verbose=0, validation_split=0.25)
    assert list(h.history) == ["loss", "acc", "AUC", "auc50", "precision", "recall",
                               "val_loss", "val_acc", "val_AUC", "val_auc50", "val_precision",
                               "val_recall"]
    # the epoch's value is over all its samples: evaluate() after training agrees with a
    # metric fed the predicted probabilities in one piece
    ev = model.evaluate(x, y, return_dict=True, batch_size=16)
    p = model.predict(x, verbose=0).ravel()
    assert 0.0 <= ev["AUC"] <= 1.0 and ev["precision"] >= 0.0
    exact = direct_counts(p, y, [0.4])[:, 0]
    assert ev["precision"] == pytest.approx(exact[0] / max(exact[0] + exact[1], 1), rel=1e-12)
    path = tmp_path / "m.npz"
    model.save(path)
    again = fastgru.load_model(path)
    assert [m.name for m in again.metrics] == ["acc", "AUC", "auc50", "precision", "recall"]
    assert again.metrics[2].num_thresholds == 50 and again.metrics[3].thresholds == 0.4
    ev2 = again.evaluate(x, y, return_dict=True, batch_size=16)
    assert ev2 == pytest.approx(ev, rel=1e-12)


def test_state_sums_merge_two_halves():
    bb = binary_batches(7, (40, 41))
    for spec in ("auc", "precision", "accuracy", "rmse"):
        whole = fm.get_metric(spec, "binary")
        halves = [fm.get_metric(spec, "binary") for _ in bb]
        for m, (z, y) in zip(halves, bb, strict=True):
            m.update(z, y, None)
            whole.update(z, y, None)
        halves[0].set_state(halves[0].state() + halves[1].state())
        assert halves[0].result() == pytest.approx(whole.result(), rel=1e-12), spec
    with pytest.raises(ValueError, match="state must have 2 values"):
        fm.get_metric("mae", "binary").set_state([1.0])


def test_bad_metrics_get_clear_errors():
    with pytest.raises(ValueError, match="unknown metric 'f1': use a name among"):
        fm.get_metric("f1", "binary")
    with pytest.raises(ValueError, match="needs a categorical_crossentropy or mse loss"):
        fm.get_metric("sparse_categorical_accuracy", "binary")
    with pytest.raises(ValueError, match="needs a binary_crossentropy or mse loss"):
        fm.get_metric("binary_accuracy", "multiclass")
    with pytest.raises(TypeError, match=r"instances: AUC\(\), not the class"):
        fm.get_metric(fm.AUC, "binary")
    with pytest.raises(TypeError, match="must be names or fastgru.metrics objects"):
        fm.get_metric(len, "binary")
    with pytest.raises(ValueError, match="multi_label=True .* is not supported"):
        fm.AUC(multi_label=True)
    with pytest.raises(ValueError, match=r"top_k=2\) is not supported"):
        fm.Recall(top_k=2)
    with pytest.raises(ValueError, match="thresholds must be one number"):
        fm.Precision(thresholds=[0.2, 0.5])
    with pytest.raises(ValueError, match=r"thresholds must be a number in \[0, 1\]"):
        fm.Recall(thresholds=1.5)
    with pytest.raises(ValueError, match="num_thresholds must be an int > 1"):
        fm.AUC(num_thresholds=1)
    with pytest.raises(ValueError, match="curve must be 'ROC' or 'PR'"):
        fm.AUC(curve="PRGAIN")
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        fm.TopKCategoricalAccuracy(k=0)
    with pytest.raises(ValueError, match=r"class ids must be integers in \[0, 4\)"):
        fm.get_metric("auc", "multiclass").update(np.zeros((3, 4)), np.array([0, 1, 4]), None)
    with pytest.raises(ValueError, match="class_id 7"):
        fm.get_metric(fm.Precision(class_id=7), "multiclass").update(
            np.zeros((2, 4)), np.eye(4)[[0, 1]], None)
    with pytest.raises(TypeError, match="name must be a non-empty str"):
        fm.AUC(name="")


def test_callbacks_auto_mode_follows_the_metric_direction(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((32, 5, 2))
    y = (x[:, :, 0].mean(1) > 0).astype(int)
    model = fastgru.SequenceClassifier(2, hidden_size=4, seed=0, dtype="float64")
    model.compile("adam", "binary_crossentropy",
                  metrics=[fm.AUC(name="ranking"), "false_negatives", "rmse"])
    # before fit: the name alone (Keras 2's rule, with the known increasing metrics)
    assert fastgru.EarlyStopping("val_precision").mode == "max"
    assert fastgru.EarlyStopping("val_ranking").mode == "min"
    es = fastgru.EarlyStopping("val_ranking", patience=5)
    rl = fastgru.ReduceLROnPlateau("false_negatives")
    ck = fastgru.ModelCheckpoint(str(tmp_path / "best.npz"), "val_ranking", save_best_only=True)
    ck_rmse = fastgru.ModelCheckpoint(str(tmp_path / "r.npz"), "val_rmse", save_best_only=True)
    assert ck.best == np.inf
    h = model.fit(x, y, epochs=2, batch_size=8, verbose=0, validation_split=0.25,
                  callbacks=[es, rl, ck, ck_rmse]).history
    # from the model's metrics once fit starts (Keras 3's _direction)
    assert (es.mode, rl.mode, ck.mode, ck_rmse.mode) == ("max", "min", "max", "min")
    assert 0.0 <= ck.best <= 1.0  # the best AUC seen, not +inf's "nothing beats it"
    assert (tmp_path / "best.npz").is_file()
    assert max(h["val_ranking"]) == pytest.approx(ck.best)
    assert min(h["val_rmse"]) == pytest.approx(ck_rmse.best)


@pytest.mark.skipif(not HAVE_KERAS, reason="keras not installed")
def test_keras_metric_objects_are_refused_with_the_fastgru_name():
    import keras

    with pytest.raises(TypeError, match=r"keras object \(AUC\).*fastgru.metrics.AUC"):
        fm.get_metric(keras.metrics.AUC(), "binary")


def test_review_cases_match_keras_rules():
    # one shared list for two models: the second (another task) gets copies
    shared = [fm.Precision(), fm.AUC()]
    a = [fm.get_metric(m, "binary") for m in shared]
    b = [fm.get_metric(m, "multiclass") for m in shared]
    assert a[0] is shared[0] and b[0] is not shared[0] and a[0].task == "binary"
    # repeated names: Keras' auc, auc_1, auc_2; the same object twice is copied
    names = [m.name for m in fm.unique_names([fm.get_metric(s, "binary") for s in
                                              ("auc", "auc", "accuracy", "auc")])]
    assert names == ["auc", "auc_1", "accuracy", "auc_2"]
    p = fm.get_metric(fm.Precision(), "binary")
    twice = fm.unique_names([p, p])
    assert twice[0] is p and twice[1] is not p and twice[1].name == "precision_1"
    # tiny positive logits: sigmoid gives exactly 0.5 in float32, not > 0.5 (Keras, recall)
    z = np.array([[1e-8], [2e-8]], np.float32)
    for spec in ("accuracy", "recall"):
        m = fm.get_metric(spec, "binary")
        m.update(z, np.array([1, 1]), None)
        assert m.result() == 0.0, spec
    # soft targets: Keras compares y_true == (p > 0.5)
    m = fm.get_metric("binary_accuracy", "binary")
    m.update(np.array([[3.0], [-3.0]]), np.array([0.9, 0.1]), None)
    assert m.result() == 0.0
    # class ids shaped (B, 1) against (B, K)
    zk = np.array([[2.0, 0, 0], [0, 2.0, 0], [0, 0, 2.0]])
    for spec, want in (("accuracy", 1.0), ("sparse_top_k_categorical_accuracy", 1.0),
                       ("sparse_categorical_crossentropy",
                        -np.log(np.exp(2) / (np.exp(2) + 2)))):
        m = fm.get_metric(spec, "multiclass")
        m.update(zk, np.array([[0], [1], [2]]), None)
        assert m.result() == pytest.approx(want), spec
    # top-k ranks probabilities: saturated ones tie, and a tie at the k-th counts as in
    m = fm.get_metric(fm.TopKCategoricalAccuracy(2), "multiclass")
    m.update(np.array([[0.0, -120.0, -130.0]], np.float32), np.array([2]), None)
    assert m.result() == 1.0
    # NaN is below every listed threshold
    m = fm.get_metric(fm.AUC(thresholds=[0.3, 0.6, 0.65]), "binary")
    m.update(np.array([[np.nan], [1.0], [-1.0]]), np.array([0, 1, 0]), None)
    assert m.result() == pytest.approx(0.5)
    # one threshold in a list is one threshold
    assert fm.Precision(thresholds=[0.3]).thresholds == 0.3
    # Keras' class names as strings
    for name in ("BinaryAccuracy", "RootMeanSquaredError", "AUC", "TopKCategoricalAccuracy"):
        assert fm.get_metric(name, "binary" if name != "TopKCategoricalAccuracy"
                             else "multiclass").name == name


def test_class_id_targets_and_mse_models_take_every_metric():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((48, 6, 3))
    y = rng.integers(0, 3, 48)
    # class ids with AUC / precision: one-hot inside, as if one-hot targets were given
    m = fastgru.SequenceClassifier(3, hidden_size=6, num_classes=3, seed=0, dtype="float64")
    m.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy", "auc", "precision"])
    ids = m.evaluate(x, y, return_dict=True)
    hot = fm.get_metric("auc", "multiclass")
    z = np.log(m.predict(x))
    hot.update(z, np.eye(3)[y], None)
    assert ids["auc"] == pytest.approx(hot.result(), rel=1e-12)
    m.fit(x, y, epochs=1, verbose=0)
    # a sigmoid model trained with MSE: accuracy and AUC on its probabilities, as Keras
    yb = (x[:, :, 0].mean(1) > 0).astype(float)
    r = fastgru.Sequential([fastgru.GRU(3, 6, batch_first=True, seed=0), fastgru.LastState(),
                            fastgru.Dense(1, activation="sigmoid")], seed=0)
    r.compile("adam", "mse", metrics=["accuracy", "auc"])
    h = r.fit(x, yb, epochs=1, verbose=0).history
    p = r.predict(x).ravel()
    ev = r.evaluate(x, yb, return_dict=True)
    assert ev["accuracy"] == pytest.approx(np.mean((p > 0.5) == yb))
    assert set(h) == {"loss", "accuracy", "auc"}
