"""fit / evaluate / predict: learning, Keras behaviour, seeds, bucketing, verification,
callbacks and exact resume."""
from __future__ import annotations

import numpy as np
import pytest

import fastgru
from fastgru import _packed


@pytest.fixture(scope="module")
def sentiment():
    texts, y = fastgru.make_sentiment_texts(600, seed=0)
    vocab = fastgru.Vocabulary.build(texts[:500])
    x, _ = vocab.encode(texts)
    return vocab, texts, x, y


def small_clf(vocab, seed=0, **kw):
    args = dict(embed_dim=16, hidden_size=16, dropout=0.0, learning_rate=1e-2, seed=seed,
                vocab=vocab)
    args.update(kw)
    return fastgru.TextClassifier(len(vocab), **args)


def test_text_classifier_learns_and_history(sentiment):
    vocab, texts, x, y = sentiment
    m = small_clf(vocab)
    h = m.fit(texts[:500], y[:500], epochs=6, batch_size=32, verbose=0,
              validation_data=(texts[500:], y[500:]))
    assert h is m.history
    assert list(h.history) == ["loss", "accuracy", "val_loss", "val_accuracy"]
    assert all(len(v) == 6 for v in h.history.values())
    assert h.epoch == list(range(6)) and len(h.seconds) == 6
    assert h.history["loss"][-1] < 0.5 * h.history["loss"][0]
    assert h.history["val_accuracy"][-1] >= 0.9
    p = m.predict(["a good superb movie", "an awful dull plot"])
    assert p.shape == (2, 1) and p.dtype == np.float32
    assert p[0, 0] > 0.5 > p[1, 0]
    loss, acc = m.evaluate(x[500:], y[500:])
    assert acc == pytest.approx(h.history["val_accuracy"][-1])
    assert loss == pytest.approx(h.history["val_loss"][-1], rel=1e-5)
    assert m.evaluate(x[500:], y[500:], return_dict=True)["accuracy"] == acc


def test_seeded_runs_are_identical_and_seeds_matter(sentiment):
    vocab, _, x, y = sentiment
    w = []
    for seed in (3, 3, 4):
        m = small_clf(vocab, seed=seed, dropout=0.3, num_layers=2)
        m.fit(x[:200], y[:200], epochs=2, batch_size=16, verbose=0)
        w.append(m.get_weights())
    for k in w[0]:
        np.testing.assert_array_equal(w[0][k], w[1][k])
    assert any(not np.array_equal(w[0][k], w[2][k]) for k in w[0])


def test_predict_keeps_order_and_padding_side_does_not_matter(sentiment):
    vocab, texts, x, y = sentiment
    m = small_clf(vocab)
    m.fit(x[:300], y[:300], epochs=1, verbose=0)
    p = m.predict(x[:100])
    perm = np.random.default_rng(0).permutation(100)
    np.testing.assert_allclose(m.predict(x[:100][perm]), p[perm], rtol=1e-5, atol=1e-6)
    # Keras' default pre-padding: tokens at the end of the row
    L = (x[:100] != 0).sum(1)
    pre = np.zeros_like(x[:100])
    for i, n in enumerate(L):
        pre[i, pre.shape[1] - n:] = x[i, :n]
    np.testing.assert_allclose(m.predict(pre), p, rtol=1e-5, atol=1e-6)
    # the same from lists of ids and from texts
    np.testing.assert_allclose(m.predict([list(r[r != 0]) for r in x[:100]]), p, rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(m.predict(texts[:100]), p, rtol=1e-5, atol=1e-6)


def test_bucketing_gives_same_results_as_plain_batches(sentiment):
    vocab, _, x, y = sentiment
    a = small_clf(vocab, seed=1)
    b = small_clf(vocab, seed=1)
    ha = a.fit(x[:200], y[:200], epochs=1, batch_size=200, verbose=0, bucket=True)
    hb = b.fit(x[:200], y[:200], epochs=1, batch_size=200, verbose=0, bucket=False)
    # one batch holding everything: the same step whatever the order
    assert ha.history["loss"][0] == pytest.approx(hb.history["loss"][0], rel=1e-5)
    for k, v in a.get_weights().items():
        np.testing.assert_allclose(v, b.get_weights()[k], rtol=1e-4, atol=1e-6)


def test_embedding_update_touches_only_batch_rows(sentiment):
    vocab, _, x, y = sentiment
    m = small_clf(vocab)
    W0 = m.parameters()["embedding.weight"].copy()
    m.fit(x[:4], y[:4], epochs=1, batch_size=4, verbose=0)
    changed = np.flatnonzero(np.any(m.parameters()["embedding.weight"] != W0, axis=1))
    used = np.setdiff1d(np.unique(x[:4]), [0])
    np.testing.assert_array_equal(changed, used)


def test_string_labels_and_predict_classes():
    texts, y = fastgru.make_sentiment_texts(300, seed=1)
    labels = np.where(y == 1, "pos", "neg").astype(object)
    vocab = fastgru.Vocabulary.build(texts)
    m = small_clf(vocab)
    m.fit(texts, labels, epochs=5, verbose=0)
    assert m.classes_ == ["neg", "pos"]
    pred = m.predict_classes(texts)
    assert set(pred) <= {"neg", "pos"} and pred.dtype.kind == "U"
    assert np.mean(pred == labels) > 0.85
    assert m.evaluate(texts, labels, return_dict=True)["accuracy"] > 0.85


@pytest.mark.parametrize("labels", [[1, 2], [3, 5, 7]])
def test_predict_classes_of_integer_labels_are_integers(labels):
    """Integer labels other than 0..K-1 come back as int64 (np.bincount works), not objects."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 5, 3)).astype(np.float32)
    y = np.array(labels * (60 // len(labels)))
    m = fastgru.SequenceClassifier(3, num_classes=len(labels), hidden_size=4, seed=0)
    m.fit(x, y, epochs=1, verbose=0)
    pred = m.predict_classes(x)
    assert pred.dtype == np.int64 and set(pred.tolist()) <= set(labels)
    assert np.bincount(pred).sum() == len(x)


def test_multiclass_digits_like_features():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    x = rng.standard_normal((300, 6, 2)).astype(np.float32) * 0.3
    x[np.arange(300), :, 0] += (y[:, None] - 1)  # class shows in feature 0
    m = fastgru.SequenceClassifier(2, hidden_size=8, num_classes=3, learning_rate=1e-2, seed=0)
    m.fit(x, y, epochs=5, verbose=0, validation_split=0.2)
    assert m.history.history["val_accuracy"][-1] > 0.9
    p = m.predict(x[:5])
    assert p.shape == (5, 3)
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-5)


def test_verify_passes_and_reports(sentiment):
    vocab, _, x, y = sentiment
    for dtype in ("float32", "float64"):
        m = small_clf(vocab, dtype=dtype, bidirectional=True, num_layers=2, dropout=0.2)
        m.fit(x[:64], y[:64], epochs=1, batch_size=16, verbose=0, verify=2)
        v = m.last_verification
        assert v["batches_checked"] == 2  # batches 0 and 2 of 4
        assert v["batch"] in (0, 2) and v["worst_error"] < v["tolerance"]
        if dtype == "float64":
            assert v["worst_error"] < 1e-9


def test_verify_catches_a_wrong_gradient(sentiment, monkeypatch):
    vocab, _, x, y = sentiment
    orig = _packed.gru_backward

    def broken(c, dy, dh, grads=None, accumulate=False):
        out = orig(c, dy, dh, grads=grads, accumulate=accumulate)
        grads["w_hh"] *= 1.05  # a 5% error in one gradient
        return out

    monkeypatch.setattr(_packed, "gru_backward", broken)
    m = small_clf(vocab)
    with pytest.raises(fastgru.VerificationError, match="gru.weight_hh_l0"):
        m.fit(x[:32], y[:32], epochs=1, batch_size=16, verbose=0, verify=True)


def test_reference_backend_trains_like_fast(sentiment):
    vocab, _, x, y = sentiment
    a = small_clf(vocab, seed=2, dtype="float64", cell="lstm")
    b = small_clf(vocab, seed=2, dtype="float64", cell="lstm")
    a.fit(x[:64], y[:64], epochs=1, batch_size=16, verbose=0)
    b.fit(x[:64], y[:64], epochs=1, batch_size=16, verbose=0, backend="reference")
    assert b.backend == "fast"  # restored after fit
    for k, v in a.get_weights().items():
        np.testing.assert_allclose(v, b.get_weights()[k], rtol=1e-9, atol=1e-12)


def test_early_stopping_restores_best(sentiment):
    vocab, _, x, y = sentiment
    m = small_clf(vocab, learning_rate=0.2)  # too high: validation loss wanders
    seen = []
    es = fastgru.EarlyStopping(patience=1, restore_best_weights=True)
    cb = fastgru.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(m.get_weights()))
    h = m.fit(x[:300], y[:300], epochs=30, batch_size=32, verbose=0,
              validation_data=(x[500:], y[500:]), callbacks=[es, cb])
    assert len(h.epoch) < 30 and es.stopped_epoch == h.epoch[-1]
    best = int(np.argmin(h.history["val_loss"]))
    assert es.best_epoch == best
    for k, v in m.get_weights().items():
        np.testing.assert_array_equal(v, seen[best][k])


class _FakeModel:
    stop_training = False

    def get_weights(self):
        return {}


@pytest.mark.parametrize("patience,stops_after", [(0, 1), (1, 1), (2, 2), (3, 3)])
def test_early_stopping_counts_like_keras(patience, stops_after):
    """Keras' rule (its source, and the table a reviewer measured with keras.callbacks):
    val_loss 1.0, 0.9, then worse every epoch: patience=p stops at epoch index max(p, 1)."""
    es = fastgru.EarlyStopping(patience=patience)
    es.set_model(_FakeModel())
    for epoch, v in enumerate([1.0, 0.9, 0.95, 0.96, 0.97, 0.98, 0.99]):
        es.on_epoch_end(epoch, {"val_loss": v})
        if es.model.stop_training:
            break
    assert es.stopped_epoch == 1 + stops_after and es.best_epoch == 1
    try:
        import keras
    except ImportError:
        return
    k = keras.callbacks.EarlyStopping(patience=patience)
    k.set_model(type("M", (), {"stop_training": False})())
    for epoch, v in enumerate([1.0, 0.9, 0.95, 0.96, 0.97, 0.98, 0.99]):
        k.on_epoch_end(epoch, {"val_loss": v})
        if k.model.stop_training:
            break
    assert k.stopped_epoch == es.stopped_epoch


_SERIES = [[1.0, 0.9, 0.95, 0.96, 0.97, 0.98, 0.99], [1.0, 0.8, 0.7, 0.65, 0.6, 0.58, 0.57],
           [0.5, 0.6, 0.4, 0.45, 0.3, 0.35, 0.36, 0.37], [2.0, 1.9, 1.8, 1.7, 1.6, 1.55, 1.5]]


def _run_epochs(cb, vals):
    """A training run as a callback sees it: val_loss per epoch until it stops training."""
    cb.on_train_begin()
    for epoch, v in enumerate(vals):
        cb.on_epoch_end(epoch, {"val_loss": v})
        if cb.model.stop_training:
            break
    cb.on_train_end()


@pytest.mark.parametrize("series", range(len(_SERIES)))
@pytest.mark.parametrize("patience,baseline,min_delta", [(0, 0.75, 0.0), (1, 0.75, 0.0),
                                                         (2, 0.62, 0.0), (2, 1.85, 0.02),
                                                         (3, 0.3, 0.01), (1, None, 0.05)])
def test_early_stopping_baseline_and_verbose_like_keras(series, patience, baseline, min_delta,
                                                        capsys):
    """Keras' baseline rule: the wait restarts only at a value better than both the best so
    far and the baseline; the stop epoch, best epoch and printed lines agree with Keras'."""
    vals = _SERIES[series]
    es = fastgru.EarlyStopping(patience=patience, baseline=baseline, min_delta=min_delta,
                               verbose=1, restore_best_weights=True)
    es.set_model(_FakeModel())
    es.model.set_weights = lambda w: None
    _run_epochs(es, vals)
    ours = capsys.readouterr().out
    keras = pytest.importorskip("keras")
    k = keras.callbacks.EarlyStopping(patience=patience, baseline=baseline, min_delta=min_delta,
                                      verbose=1, restore_best_weights=True)
    k.set_model(type("M", (), {"stop_training": False, "get_weights": lambda self: [],
                               "set_weights": lambda self, w: None})())
    _run_epochs(k, vals)
    assert ours == capsys.readouterr().out
    assert (k.stopped_epoch or -1) == es.stopped_epoch  # Keras' 0 is fastgru's -1: no stop
    assert k.best_epoch == es.best_epoch and k.wait == es.wait


def test_model_checkpoint_keras_options(sentiment, tmp_path, capsys):
    vocab, _, x, y = sentiment
    m = small_clf(vocab)
    path = str(tmp_path / "w-{epoch}.npz")
    # nothing beats the threshold: nothing written
    mc = fastgru.ModelCheckpoint(path, "val_loss", 1, True, True, initial_value_threshold=0.0)
    m.fit(x[:96], y[:96], epochs=2, verbose=0, validation_data=(x[500:], y[500:]),
          callbacks=[mc])
    assert not list(tmp_path.iterdir())
    assert capsys.readouterr().out.count("val_loss did not improve from 0.00000") == 2
    mc = fastgru.ModelCheckpoint(path, save_weights_only=True, verbose=1)
    m.fit(x[:96], y[:96], epochs=1, verbose=0, validation_data=(x[500:], y[500:]),
          callbacks=[mc])
    assert "Epoch 1: saving model to" in capsys.readouterr().out
    m2 = small_clf(vocab, seed=9)
    m2.load_weights(str(tmp_path / "w-1.npz"))
    np.testing.assert_array_equal(m2.predict(x[500:520]), m.predict(x[500:520]))
    arrays, meta = fastgru.checkpoint.load_arrays(str(tmp_path / "w-1.npz"))
    assert meta["weights_only"] and all(k.startswith("param/") for k in arrays)
    m.save_weights(tmp_path / "direct.npz")
    m2 = small_clf(vocab, seed=8)
    m2.load_weights(tmp_path / "direct.npz")
    np.testing.assert_array_equal(m2.predict(x[500:520]), m.predict(x[500:520]))


def test_missing_monitor_warns_and_carries_on_like_keras(sentiment, tmp_path):
    """Keras warns when the monitored value is not in the logs (val_loss without validation
    data) and trains on; so does fastgru: no early stop, no best-only checkpoint."""
    vocab, _, x, y = sentiment
    m = small_clf(vocab)
    es = fastgru.EarlyStopping(patience=0)
    ck = fastgru.ModelCheckpoint(str(tmp_path / "best.npz"), save_best_only=True)
    with pytest.warns(UserWarning) as rec:
        h = m.fit(x[:64], y[:64], epochs=3, batch_size=32, verbose=0, callbacks=[es, ck])
    msgs = [str(r.message) for r in rec]
    assert sum("EarlyStopping monitors 'val_loss'" in s and "validation data" in s
               for s in msgs) == 3
    assert sum("ModelCheckpoint monitors 'val_loss'" in s for s in msgs) == 3
    assert h.epoch == [0, 1, 2] and es.stopped_epoch == -1
    assert not (tmp_path / "best.npz").exists()
    with pytest.warns(UserWarning, match="ModelCheckpoint monitors 'val_acc'.*saves nothing"):
        fastgru.ModelCheckpoint(str(tmp_path / "b.npz"), monitor="val_acc",
                                save_best_only=True).on_epoch_end(0, {"loss": 1.0})


@pytest.mark.parametrize("bad", [-1, 1.5, "a", True])
def test_early_stopping_rejects_bad_patience(bad):
    with pytest.raises(ValueError, match="patience must be an integer >= 0"):
        fastgru.EarlyStopping(patience=bad)


def test_predict_classes_thresholds_logits_at_zero():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 5, 3)).astype(np.float32)
    y = (x[:, :, 0].mean(1) > 0).astype(np.int64)
    for from_logits in (True, False):
        head = fastgru.Dense(1) if from_logits else fastgru.Dense(1, activation="sigmoid")
        m = fastgru.Sequential([fastgru.GRU(3, 8, seed=0, batch_first=True), fastgru.LastState(),
                                head], seed=0)
        m.compile(fastgru.Adam(1e-2), fastgru.BinaryCrossentropy(from_logits=from_logits),
                  ["accuracy"])
        m.fit(x, y, epochs=3, verbose=0)
        p = m.predict(x)[:, 0]
        assert (p < 0).any() == from_logits  # logits, or probabilities
        acc = m.evaluate(x, y, return_dict=True)["accuracy"]
        assert np.mean(m.predict_classes(x) == y) == pytest.approx(acc)


def test_backup_deleted_when_training_completes(sentiment, tmp_path):
    """Keras' default (delete_checkpoint=True): a finished run leaves no backup, so the next
    fit() with the same path trains afresh instead of restoring the finished run."""
    vocab, _, x, y = sentiment
    path = tmp_path / "backup.npz"
    m = small_clf(vocab)
    m.fit(x[:100], y[:100], epochs=2, verbose=0, callbacks=[fastgru.BackupAndRestore(path)])
    assert not path.exists()
    h = m.fit(x[:100], y[:100], epochs=2, verbose=0, callbacks=[fastgru.BackupAndRestore(path)])
    assert h.epoch == [0, 1]
    m.fit(x[:100], y[:100], epochs=1, verbose=0,
          callbacks=[fastgru.BackupAndRestore(path, delete_checkpoint=False)])
    assert path.exists()


def test_backup_keras_form_folder_and_double_checkpoint(sentiment, tmp_path):
    """Keras' BackupAndRestore(backup_dir, save_freq, double_checkpoint, delete_checkpoint):
    a folder (created) holds the backup; with double_checkpoint a damaged latest backup falls
    back to the previous one, and the resumed run still ends as the uninterrupted one."""
    vocab, _, x, y = sentiment

    class Stop(fastgru.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 2:
                raise KeyboardInterrupt

    whole = small_clf(vocab)
    h_whole = whole.fit(x[:100], y[:100], epochs=4, verbose=0)
    folder = tmp_path / "bk"
    m = small_clf(vocab)
    with pytest.raises(KeyboardInterrupt):
        m.fit(x[:100], y[:100], epochs=4, verbose=0,
              callbacks=[Stop(), fastgru.BackupAndRestore(str(folder), "epoch", True, True)])
    assert sorted(p.name for p in folder.iterdir()) == ["backup.npz", "backup.prev.npz"]
    (folder / "backup.npz").write_bytes(b"not a checkpoint")  # epoch 3's backup, damaged
    m = small_clf(vocab, seed=5)
    with pytest.warns(UserWarning, match="restoring the previous one"):
        h = m.fit(x[:100], y[:100], epochs=4, verbose=0,
                  callbacks=[fastgru.BackupAndRestore(str(folder), double_checkpoint=True)])
    assert h.epoch == [0, 1, 2, 3]  # epochs 1-2 from the previous backup, then 3-4 again
    np.testing.assert_allclose(h.history["loss"], h_whole.history["loss"], rtol=1e-6)
    for k, v in whole.get_weights().items():
        np.testing.assert_allclose(m.get_weights()[k], v, rtol=1e-6, atol=1e-7)
    assert not list(folder.iterdir())  # delete_checkpoint: both removed at the end
    with pytest.raises(ValueError, match="backs up at the end of every epoch"):
        fastgru.BackupAndRestore(str(folder), save_freq=10)
    with pytest.raises(TypeError, match="needs backup_dir"):
        fastgru.BackupAndRestore()
    assert fastgru.BackupAndRestore(path=str(tmp_path / "b.npz")).path == str(tmp_path / "b.npz")


def test_model_checkpoint_best_only(sentiment, tmp_path):
    vocab, _, x, y = sentiment
    m = small_clf(vocab)
    path = str(tmp_path / "best-{epoch}.npz")
    mc = fastgru.ModelCheckpoint(path, monitor="val_accuracy", save_best_only=True)
    h = m.fit(x[:300], y[:300], epochs=3, verbose=0, validation_data=(x[500:], y[500:]),
              callbacks=[mc])
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files and all(f.startswith("best-") for f in files)
    best_epoch = int(np.argmax(h.history["val_accuracy"])) + 1
    assert f"best-{best_epoch}.npz" in files
    assert not any(p.name.startswith(".tmp") for p in tmp_path.iterdir())
    bad = fastgru.ModelCheckpoint(str(tmp_path / "e{epoch}_{foo}.npz"))
    with pytest.raises(ValueError, match="names 'foo', which is neither 'epoch' nor in the logs"):
        m.fit(x[:50], y[:50], epochs=1, verbose=0, callbacks=[bad])


class _Interrupt(fastgru.Callback):
    def __init__(self, at):
        self.at = at

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.at:
            raise KeyboardInterrupt


@pytest.mark.parametrize("cell,backup_first", [("gru", False), ("lstm", False),
                                                ("gru", True)])
def test_resume_reproduces_uninterrupted_run(sentiment, tmp_path, cell, backup_first):
    """Whatever the list's order: the backup is written after every other callback has seen
    the epoch (listed first, it once held EarlyStopping's state of the epoch before)."""
    vocab, _, x, y = sentiment

    def order(es, backup, interrupt):
        return [backup, es, interrupt] if backup_first else [es, backup, interrupt]

    kw = dict(seed=5, dropout=0.3, num_layers=2, cell=cell)
    fit_kw = dict(epochs=4, batch_size=32, verbose=0, validation_data=(x[500:], y[500:]))
    full = small_clf(vocab, **kw)
    es = fastgru.EarlyStopping(patience=10)
    h_full = full.fit(x[:300], y[:300], callbacks=[es], **fit_kw)

    path = str(tmp_path / "ckpt.npz")
    first = small_clf(vocab, **kw)
    with pytest.raises(KeyboardInterrupt):
        first.fit(x[:300], y[:300], callbacks=order(fastgru.EarlyStopping(patience=10),
                                                     fastgru.BackupAndRestore(path),
                                                     _Interrupt(1)), **fit_kw)
    resumed = small_clf(vocab, **kw)
    es2 = fastgru.EarlyStopping(patience=10)
    h = resumed.fit(x[:300], y[:300], callbacks=order(es2, fastgru.BackupAndRestore(path),
                                                      _Interrupt(-1)), **fit_kw)
    assert h.epoch == [0, 1, 2, 3]
    assert h.history == h_full.history
    for k, v in full.get_weights().items():
        np.testing.assert_array_equal(v, resumed.get_weights()[k])
    assert resumed.optimizer.iterations == full.optimizer.iterations
    assert es2.best == es.best


@pytest.mark.parametrize("restore_best", [False, True])
def test_resume_after_an_early_stop_trains_no_further(sentiment, tmp_path, restore_best):
    """A backup kept after the run (the CLI's checkpoint.npz) records the stop: fitting again
    from it ends at once, with the weights the stopped run ended with."""
    vocab, _, x, y = sentiment
    path = tmp_path / "kept.npz"
    fit_kw = dict(epochs=12, batch_size=32, verbose=0, validation_data=(x[500:], y[500:]))

    def cbs():
        return [fastgru.BackupAndRestore(path, delete_checkpoint=False),
                fastgru.EarlyStopping("val_loss", patience=1, min_delta=0.05,
                                      restore_best_weights=restore_best)]

    first = small_clf(vocab, seed=3)
    h1 = first.fit(x[:300], y[:300], callbacks=cbs(), **fit_kw)
    assert len(h1.epoch) < 12 and first.stop_training
    again = small_clf(vocab, seed=3)
    h2 = again.fit(x[:300], y[:300], callbacks=cbs(), **fit_kw)
    assert h2.epoch == h1.epoch and h2.history == h1.history
    assert again.optimizer.iterations == first.optimizer.iterations
    for k, v in first.get_weights().items():
        np.testing.assert_array_equal(again.get_weights()[k], v)


def test_fit_argument_and_data_errors(sentiment):
    vocab, _, x, y = sentiment
    m = small_clf(vocab)
    with pytest.raises(ValueError, match="y has"):
        m.fit(x[:10], y[:9], verbose=0)
    with pytest.raises(ValueError, match="batch_size"):
        m.fit(x[:10], y[:10], batch_size=0, verbose=0)
    with pytest.raises(ValueError, match="initial_epoch must be an integer >= 0"):
        m.fit(x[:10], y[:10], initial_epoch=-1, verbose=0)
    with pytest.raises(ValueError, match="validation_split"):
        m.fit(x[:10], y[:10], validation_split=1.5, verbose=0)
    with pytest.raises(ValueError, match="3 classes"):
        m.fit(x[:3], np.array([0, 1, 2]) + 5, verbose=0)
    with pytest.raises(ValueError, match="token ids"):
        m.fit(np.full((2, 3), len(vocab)), y[:2], verbose=0)
    with pytest.raises(TypeError, match="integer token ids"):
        m.fit(x[:2].astype(np.float32), y[:2], verbose=0)
    with pytest.raises(ValueError, match="empty"):
        m.fit([], [], verbose=0)
    with pytest.raises(TypeError, match="Callback"):
        m.fit(x[:2], y[:2], callbacks=[object()], verbose=0)
    s = fastgru.SequenceRegressor(1, seed=0)
    xs = np.zeros((2, 3, 1), np.float32)
    xs[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        s.fit(xs, np.zeros((2, 3, 1)), verbose=0)
    bare = fastgru.Sequential([fastgru.Embedding(5, 2), fastgru.LastState(), fastgru.Dense(1)])
    with pytest.raises(RuntimeError, match="compile"):
        bare.fit(np.ones((2, 2), int), np.zeros(2))
    with pytest.raises(ValueError, match="activation='sigmoid'"):
        bare.compile("adam", "binary_crossentropy")


def test_nan_loss_stops_with_clear_error(sentiment):
    vocab, _, x, y = sentiment

    class NanLoss(fastgru.BinaryCrossentropy):
        def __call__(self, pred, target, mask=None):
            v, g = super().__call__(pred, target, mask)
            return float("nan"), g

    m = small_clf(vocab)
    m.loss = NanLoss(from_logits=True)
    with pytest.raises(FloatingPointError, match="learning rate"):
        m.fit(x[:8], y[:8], verbose=0)


def test_progress_bar_and_epoch_lines(sentiment, capsys):
    vocab, _, x, y = sentiment
    m = small_clf(vocab)
    m.fit(x[:64], y[:64], epochs=1, verbose=1)
    err = capsys.readouterr().err
    assert "Epoch 1/1" in err and "sample/s" in err and "loss=" in err
    m.fit(x[:64], y[:64], epochs=2, verbose=2, validation_split=0.25)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and out[1].startswith("Epoch 2/2") and "samples/s" in out[1]
    assert "val_accuracy" in out[1]
    m.fit(x[:64], y[:64], epochs=1, verbose=0)
    assert capsys.readouterr() == ("", "")


def test_summary_and_parameters_by_name(sentiment, capsys):
    vocab, _, _, _ = sentiment
    m = small_clf(vocab, bidirectional=True)
    m.summary()
    out = capsys.readouterr().out
    assert "embedding (Embedding)" in out and "gru (GRU)" in out and "(None, None, 32)" in out
    assert f"Total params: {m.count_params():,}" in out
    names = list(m.parameters())
    assert names[0] == "embedding.weight" and "gru.weight_hh_l0_reverse" in names
    assert names[-2:] == ["classifier.weight", "classifier.bias"]
    assert m.parameters()["gru.weight_ih_l0"] is not None
    assert set(m.grads()) == set(names)


def test_read_only_non_contiguous_and_object_inputs(sentiment):
    vocab, _, x, y = sentiment
    m = small_clf(vocab)
    m.fit(x[:100], y[:100], epochs=1, verbose=0)
    ref = m.predict(x[:50])
    ro = x[:50].copy()
    ro.setflags(write=False)
    np.testing.assert_array_equal(m.predict(ro), ref)
    wide = np.zeros((50, 2 * x.shape[1]), x.dtype)
    wide[:, ::2] = x[:50]
    nc = wide[:, ::2]  # a strided view
    assert not nc.flags.c_contiguous
    np.testing.assert_array_equal(m.predict(nc), ref)
    obj = np.empty(50, dtype=object)  # Keras' imdb.npz arrays of lists
    obj[:] = [list(r[r != 0]) for r in x[:50]]
    np.testing.assert_allclose(m.predict(obj), ref, rtol=1e-5, atol=1e-6)
    yro = y[:100].copy()
    yro.setflags(write=False)
    m.fit(ro, yro[:50], epochs=1, verbose=0)
    f = np.random.default_rng(0).standard_normal((20, 5, 3))[:, :, ::-1]  # float64, strided
    s = fastgru.SequenceClassifier(3, hidden_size=4, seed=0)
    s.fit(f, np.arange(20) % 2, epochs=1, verbose=0)
    assert s.predict(f).dtype == np.float32


def test_float64_model_and_last_state_regressor():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 7, 2))
    y = x[:, :, 0].sum(1, keepdims=True) * 0.3
    m = fastgru.SequenceRegressor(2, output_size=1, hidden_size=16, return_sequences=False,
                                  learning_rate=1e-2, dtype="float64", seed=0)
    h = m.fit(x, y, epochs=30, batch_size=16, verbose=0)
    assert h.history["loss"][-1] < 0.1 * h.history["loss"][0]
    p = m.predict(x[:3])
    assert p.shape == (3, 1) and p.dtype == np.float64


def test_mlp_on_plain_features():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 4)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    m = fastgru.Sequential([fastgru.Dense(8, activation="relu"),
                            fastgru.Dense(1, activation="sigmoid")], seed=0)
    m.compile(fastgru.Adam(1e-2), "binary_crossentropy", ["accuracy"])
    m.fit(x, y, epochs=20, batch_size=32, verbose=0)
    assert m.evaluate(x, y)[1] > 0.9
    assert m.predict(x[:2]).shape == (2, 1)
    with pytest.raises(ValueError, match=r"\(N, F\) with F = 4"):
        m.predict(np.zeros((2, 3), np.float32))


def test_validation_split_of_class_sorted_data_warns(sentiment):
    vocab, _, x, y = sentiment
    # 100 of class 0, then 100 of class 1 (as MR lists them)
    order = np.concatenate([np.flatnonzero(y == 0)[:100], np.flatnonzero(y == 1)[:100]])
    m = small_clf(vocab)
    with pytest.warns(UserWarning, match="all of one class"):
        m.fit(x[order], y[order], epochs=1, verbose=0, validation_split=0.1)
    with pytest.raises(TypeError, match="validation_split must be a number"):
        m.fit(x[:50], y[:50], epochs=1, verbose=0, validation_split="a")


def test_build_takes_input_dim_or_a_keras_input_shape():
    for arg in (3, (None, 3), [None, 7, 3]):
        m = fastgru.Sequential([fastgru.Dense(2)], seed=0)
        m.build(arg)
        assert m.built and m.layers[0].params["weight"].shape == (2, 3)
    for bad in ("3", 0, 2.0, (None, None)):
        with pytest.raises(ValueError, match="input_dim must be an integer >= 1"):
            fastgru.Sequential([fastgru.Dense(2)]).build(bad)
    with pytest.raises(ValueError, match="input_dim must be an integer >= 1"):
        fastgru.Sequential([fastgru.Dense(2)], input_dim=-1)


def _tiny_seq_model(loss):
    m = fastgru.Sequential([fastgru.GRU(3, 4, batch_first=True, seed=0), fastgru.LastState(),
                            fastgru.Dense(1)], seed=0)
    m.compile(fastgru.SGD(0.1), loss)
    return m


class _SeenTargets(fastgru.losses.MeanSquaredError):
    def __init__(self):
        self.seen = []

    def __call__(self, pred, target, mask=None, sample_weight=None):
        self.seen.append(np.asarray(target).ravel().astype(int).tolist())
        return super().__call__(pred, target, mask, sample_weight)


@pytest.mark.parametrize("N,split", [(48, 0.2), (48, 0.3), (40, 0.02), (10, 0.25), (7, 0.5)])
def test_validation_split_sizes_are_keras(N, split):
    """Keras trains on the first floor(N * (1 - split)) samples (48 x 0.3: 33 / 15, not
    34 / 14; 40 x 0.02: 39 / 1, which was refused)."""
    x = np.random.default_rng(0).standard_normal((N, 4, 3)).astype(np.float32)
    loss = _SeenTargets()
    m = _tiny_seq_model(loss)
    m.fit(x, np.arange(N, dtype=np.float32)[:, None], batch_size=1000, shuffle=False,
          validation_split=split, verbose=0)
    n_fit = int(np.floor(N * (1 - split)))
    assert loss.seen[0] == list(range(n_fit)) and loss.seen[-1] == list(range(n_fit, N))
    try:
        from keras.src.trainers.data_adapters.array_slicing import train_validation_split
    except ImportError:
        return
    (xt, _), (xv, _) = train_validation_split((x, x[:, 0]), split)
    assert (len(xt), len(xv)) == (n_fit, N - n_fit)


def test_shuffle_false_keeps_the_data_order_in_training_batches():
    """Keras' shuffle=False: batches in data order (bucketing by length is for shuffled
    training unless asked for)."""
    ids = np.random.default_rng(0).integers(1, 20, (8, 6)).astype(np.int32)
    for i, L in enumerate([6, 2, 5, 3, 6, 2, 4, 1]):
        ids[i, L:] = 0
    y = np.arange(8, dtype=np.float32)[:, None]

    def run(**kw):
        loss = _SeenTargets()
        m = fastgru.Sequential([fastgru.Embedding(20, 4), fastgru.GRU(4, 4, batch_first=True,
                                                                      seed=0),
                                fastgru.LastState(), fastgru.Dense(1)], seed=0)
        m.compile(fastgru.SGD(0.01), loss)
        m.fit(ids, y, batch_size=4, verbose=0, **kw)
        return loss.seen

    assert run(shuffle=False) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert run(shuffle=False, bucket=True) == [[7, 1, 5, 3], [6, 2, 0, 4]]  # sorted by length
    with pytest.raises(TypeError, match="bucket must be True or False"):
        run(bucket="yes")


def test_early_stopping_instance_reused_for_a_new_fit_starts_afresh():
    """Keras resets EarlyStopping at train begin: a reused instance once compared the second
    model with the first one's best loss and put the first model's weights into it."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 5, 3)).astype(np.float32)
    y = (x.sum((1, 2)) > 0).astype(int)

    def make():
        m = fastgru.Sequential([fastgru.GRU(3, 8, batch_first=True, seed=0), fastgru.LastState(),
                                fastgru.Dense(1, activation="sigmoid")], seed=0)
        m.compile(fastgru.Adam(1e-2), "binary_crossentropy", metrics="accuracy")
        return m

    es = fastgru.EarlyStopping(monitor="val_loss", patience=1, restore_best_weights=True)
    m1 = make()
    h1 = m1.fit(x, y, epochs=30, validation_split=0.25, callbacks=[es], verbose=0)
    m2 = make()
    x2 = x[::-1].copy()  # other data: another trajectory
    h2 = m2.fit(x2, y[::-1], epochs=30, validation_split=0.25, callbacks=es, verbose=0)
    fresh = make()
    h3 = fresh.fit(x2, y[::-1], epochs=30, validation_split=0.25, verbose=0,
                   callbacks=[fastgru.EarlyStopping(monitor="val_loss", patience=1,
                                                    restore_best_weights=True)])
    assert h2.history == h3.history and len(h1.epoch) >= 2
    for k, v in fresh.get_weights().items():
        np.testing.assert_array_equal(m2.get_weights()[k], v)
    assert list(h2.history) == ["loss", "accuracy", "val_loss", "val_accuracy"]


class _FakeOptModel:
    stop_training = False

    def __init__(self, opt):
        self.optimizer = opt


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Keras' own np.array(Variable)
@pytest.mark.parametrize("kw", [dict(patience=0), dict(patience=2, cooldown=1),
                                dict(patience=1, min_lr=0.02, factor=0.5),
                                dict(patience=1, min_delta=0.05, cooldown=2)])
def test_reduce_lr_on_plateau_follows_keras(kw):
    losses = [1.0, 0.9, 0.95, 0.96, 0.89, 0.97, 0.98, 0.99, 0.99, 0.5, 0.6, 0.7, 0.8, 0.9]
    cb = fastgru.ReduceLROnPlateau(**kw)
    cb.set_model(_FakeOptModel(fastgru.SGD(0.1)))
    ours = []
    for epoch, v in enumerate(losses):
        logs = {"val_loss": v}
        cb.on_epoch_end(epoch, logs)
        assert logs["learning_rate"] == (ours[-1] if ours else 0.1)
        ours.append(cb.model.optimizer.learning_rate)
    assert ours[-1] < 0.1
    keras = pytest.importorskip("keras")
    k = keras.callbacks.ReduceLROnPlateau(**kw)
    k.set_model(type("M", (), {"optimizer": keras.optimizers.SGD(0.1),
                               "stop_training": False})())
    k.on_train_begin()
    theirs = []
    for epoch, v in enumerate(losses):
        k.on_epoch_end(epoch, {"val_loss": v})
        theirs.append(float(np.asarray(k.model.optimizer.learning_rate)))
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)


def test_reduce_lr_on_plateau_in_fit_history_and_resume(sentiment, tmp_path):
    vocab, _, x, y = sentiment
    fit_kw = dict(epochs=4, batch_size=32, verbose=0, validation_data=(x[500:], y[500:]))

    def cb():  # patience 0 with a huge min_delta: a reduction after every epoch
        return fastgru.ReduceLROnPlateau(patience=0, min_delta=10.0, factor=0.5)

    full = small_clf(vocab, seed=2, learning_rate=0.05)
    h_full = full.fit(x[:200], y[:200], callbacks=[cb()], **fit_kw)
    # the rate each epoch trained with; the first epoch is the first best (Keras' logs too)
    assert h_full.history["learning_rate"] == [0.05, 0.05, 0.025, 0.0125]
    assert full.optimizer.learning_rate == 0.00625
    path = str(tmp_path / "b.npz")
    first = small_clf(vocab, seed=2, learning_rate=0.05)
    with pytest.raises(KeyboardInterrupt):
        first.fit(x[:200], y[:200], callbacks=[cb(), fastgru.BackupAndRestore(path),
                                               _Interrupt(1)], **fit_kw)
    resumed = small_clf(vocab, seed=2, learning_rate=0.05)
    h = resumed.fit(x[:200], y[:200], callbacks=[cb(), fastgru.BackupAndRestore(path),
                                                  _Interrupt(-1)], **fit_kw)
    assert h.history == h_full.history
    for k, v in full.get_weights().items():
        np.testing.assert_array_equal(v, resumed.get_weights()[k])
    sched = small_clf(vocab, learning_rate=fastgru.StepDecay(0.1, 10))
    with pytest.raises(ValueError, match="LearningRateSchedule"):
        sched.fit(x[:64], y[:64], callbacks=[cb()], **fit_kw)
    for bad in (dict(factor=1.0), dict(factor=-0.1), dict(patience=-1), dict(min_lr=-1.0),
                dict(cooldown=0.5), dict(mode="up")):
        with pytest.raises(ValueError):
            fastgru.ReduceLROnPlateau(**bad)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Keras' own np.array(Variable)
def test_learning_rate_scheduler_and_csv_logger_like_keras(sentiment, tmp_path):
    vocab, _, x, y = sentiment
    m = small_clf(vocab, learning_rate=0.1)
    sched = fastgru.LearningRateScheduler(lambda epoch, lr: lr * 0.5 if epoch else lr)
    log = tmp_path / "log.csv"
    h = m.fit(x[:64], y[:64], epochs=3, batch_size=32, verbose=0,
              callbacks=[sched, fastgru.CSVLogger(str(log))])
    assert h.history["learning_rate"] == [0.1, 0.05, 0.025]
    rows = log.read_text().splitlines()
    assert rows[0] == "epoch,accuracy,learning_rate,loss,val_accuracy,val_learning_rate,val_loss"
    assert len(rows) == 4 and rows[3].startswith("2,") and rows[3].endswith(",NA,NA,NA")
    assert float(rows[1].split(",")[3]) == h.history["loss"][0]
    # append: no second header; a function of the epoch alone works too
    m.fit(x[:64], y[:64], epochs=1, batch_size=32, verbose=0,
          callbacks=[fastgru.LearningRateScheduler(lambda e: 0.01),
                     fastgru.CSVLogger(str(log), append=True)])
    assert len(log.read_text().splitlines()) == 5 and m.optimizer.learning_rate == 0.01
    with pytest.raises(TypeError, match="must return a number"):
        m.fit(x[:64], y[:64], epochs=1, verbose=0,
              callbacks=[fastgru.LearningRateScheduler(lambda e, lr: "fast")])
    with pytest.raises(TypeError, match="schedule must be a function"):
        fastgru.LearningRateScheduler(0.1)
    keras = pytest.importorskip("keras")
    k = keras.callbacks.CSVLogger(str(tmp_path / "k.csv"))
    k.set_model(type("M", (), {"stop_training": False})())
    k.on_train_begin()
    for e in range(3):
        k.on_epoch_end(e, {n: h.history[n][e] for n in ("loss", "accuracy", "learning_rate")})
    k.on_train_end()
    ours = fastgru.CSVLogger(str(tmp_path / "o.csv"))
    ours.on_train_begin()
    for e in range(3):
        ours.on_epoch_end(e, {n: h.history[n][e] for n in ("loss", "accuracy", "learning_rate")})
    ours.on_train_end()
    assert (tmp_path / "o.csv").read_bytes() == (tmp_path / "k.csv").read_bytes()


def test_resume_with_other_callbacks(sentiment, tmp_path):
    """The backup pairs callbacks by type: a crash-injecting or logging callback may be
    dropped on resume and the list reordered (bit-identical result); a stateful callback on
    one side only is warned about, and nothing is restored before the pairing is known."""
    vocab, _, x, y = sentiment
    fit_kw = dict(epochs=3, batch_size=32, verbose=0, validation_data=(x[500:], y[500:]))
    full = small_clf(vocab, seed=4)
    h_full = full.fit(x[:200], y[:200], callbacks=[fastgru.EarlyStopping(patience=5)],
                      **fit_kw)
    path = str(tmp_path / "b.npz")
    first = small_clf(vocab, seed=4)
    with pytest.raises(KeyboardInterrupt):
        first.fit(x[:200], y[:200], callbacks=[fastgru.BackupAndRestore(path),
                                               fastgru.EarlyStopping(patience=5),
                                               _Interrupt(1)], **fit_kw)
    resumed = small_clf(vocab, seed=4)
    h = resumed.fit(x[:200], y[:200], callbacks=[fastgru.EarlyStopping(patience=5),
                                                 fastgru.BackupAndRestore(path)], **fit_kw)
    assert h.history == h_full.history
    for k, v in full.get_weights().items():
        np.testing.assert_array_equal(v, resumed.get_weights()[k])
    # a stateful callback missing from the backup starts afresh, with a warning
    with pytest.raises(KeyboardInterrupt):
        small_clf(vocab, seed=4).fit(x[:200], y[:200], callbacks=[
            fastgru.BackupAndRestore(path), _Interrupt(1)], **fit_kw)
    with pytest.warns(UserWarning, match="EarlyStopping start"):
        small_clf(vocab, seed=4).fit(x[:200], y[:200], callbacks=[
            fastgru.BackupAndRestore(path), fastgru.EarlyStopping(patience=5)], **fit_kw)


def test_stop_in_a_batch_ends_the_epoch_there_like_keras(sentiment):
    vocab, _, x, y = sentiment
    m = small_clf(vocab)
    seen = []

    class Stop(fastgru.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append((batch, dict(logs)))
            if batch == 1:
                self.model.stop_training = True

    h = m.fit(x[:160], y[:160], epochs=3, batch_size=32, verbose=0, callbacks=[Stop()])
    assert [b for b, _ in seen] == [0, 1] and m.optimizer.iterations == 2
    assert h.epoch == [0]  # the epoch still ends (its logs and callbacks), then training stops
    # Keras' batch logs: the epoch's running loss and metrics; the last one is the epoch's
    assert set(seen[-1][1]) == {"loss", "accuracy"}
    assert h.history["loss"] == [seen[-1][1]["loss"]]


def test_epoch_loss_weighs_batches_by_size_like_keras():
    """Per-step targets of ragged lengths: each batch's loss is its mean over valid steps and
    the epoch's loss the batches' mean weighted by their number of sequences (Keras' Mean
    tracker), not the mean over all steps."""
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((n, 2)) for n in (5, 1, 1, 2, 1, 5)]
    ys = [rng.standard_normal((len(a), 1)) for a in xs]
    m = fastgru.SequenceRegressor(2, hidden_size=4, dtype="float64", seed=1)
    batches = fastgru.length_batches(np.array([len(a) for a in xs]), 4, None, shuffle=False)
    per = [m.evaluate([xs[i] for i in b], [ys[i] for i in b], return_dict=True)["loss"]
           for b in batches]
    want = sum(v * len(b) for v, b in zip(per, batches, strict=True)) / len(xs)
    got = m.evaluate(xs, ys, batch_size=4, return_dict=True)["loss"]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    steps = sum(v * sum(len(xs[i]) for i in b) for v, b in zip(per, batches, strict=True))
    assert abs(got - steps / sum(len(a) for a in xs)) > 1e-6  # the other weighting differs


def test_metric_names_are_the_log_keys_as_given(sentiment):
    """Keras logs a metric under the name it was given: "acc" -> acc / val_acc."""
    vocab, _, x, y = sentiment
    m = small_clf(vocab)
    m.compile("adam", "binary_crossentropy", ["acc", "mean_absolute_error", "mse"])
    h = m.fit(x[:64], y[:64], epochs=1, verbose=0, validation_data=(x[500:], y[500:]),
              callbacks=[fastgru.EarlyStopping("val_acc", patience=3)])
    assert set(h.history) == {"loss", "acc", "mean_absolute_error", "mse", "val_loss",
                              "val_acc", "val_mean_absolute_error", "val_mse"}
    r = m.evaluate(x[500:], y[500:], return_dict=True)
    m2 = small_clf(vocab)
    m2.set_weights(m.get_weights())
    m2.compile("adam", "binary_crossentropy", ["accuracy", "mae"])
    r2 = m2.evaluate(x[500:], y[500:], return_dict=True)
    assert r["acc"] == r2["accuracy"] and r["mean_absolute_error"] == r2["mae"]
    # Keras' list form, in get_weights()' order
    m3 = small_clf(vocab, seed=5)
    m3.set_weights(list(m.get_weights().values()))
    for k, v in m.get_weights().items():
        np.testing.assert_array_equal(m3.get_weights()[k], v)
    with pytest.raises(ValueError, match="list of 1 arrays; the model has"):
        m3.set_weights([np.zeros(3)])
    with pytest.raises(TypeError, match="dict name -> array"):
        m3.set_weights(np.zeros(3))


class _Halving(fastgru.LearningRateSchedule):
    def __call__(self, step):
        return 0.1 * 0.5 ** step


def test_a_users_schedule_trains_saves_and_resumes(sentiment, tmp_path):
    vocab, _, x, y = sentiment
    opt = fastgru.SGD(_Halving())
    assert opt.learning_rate == 0.1
    fit_kw = dict(epochs=3, batch_size=32, verbose=0)
    full = small_clf(vocab, seed=2)
    full.compile(fastgru.SGD(_Halving()), "binary_crossentropy", ["accuracy"])
    full.fit(x[:96], y[:96], **fit_kw)
    assert full.optimizer.learning_rate == 0.1 * 0.5 ** 9
    path = tmp_path / "m.npz"
    full.save(str(path))
    with pytest.warns(UserWarning, match="_Halving.*continues at the rate"):
        back = fastgru.load_model(str(path))
    assert back.optimizer.learning_rate == 0.1 * 0.5 ** 9
    backup = str(tmp_path / "b.npz")
    first = small_clf(vocab, seed=2)
    first.compile(fastgru.SGD(_Halving()), "binary_crossentropy", ["accuracy"])
    with pytest.raises(KeyboardInterrupt):
        first.fit(x[:96], y[:96], callbacks=[fastgru.BackupAndRestore(backup), _Interrupt(1)],
                  **fit_kw)
    resumed = small_clf(vocab, seed=2)
    resumed.compile(fastgru.SGD(_Halving()), "binary_crossentropy", ["accuracy"])
    resumed.fit(x[:96], y[:96], callbacks=[fastgru.BackupAndRestore(backup)], **fit_kw)
    for k, v in full.get_weights().items():
        np.testing.assert_array_equal(v, resumed.get_weights()[k])


def test_one_hot_targets_of_any_number_dtype_and_clear_x_errors():
    m = fastgru.Sequential([fastgru.GRU(2, 4, batch_first=True), fastgru.LastState(),
                            fastgru.Dense(3, "softmax")], seed=0)
    m.compile("adam", "categorical_crossentropy")
    x = np.random.default_rng(0).standard_normal((4, 3, 2))
    labels = [0, 1, 2, 0]
    a = m.evaluate(x, labels)
    for dt in (int, bool, np.float32):
        assert m.evaluate(x, np.eye(3, dtype=dt)[labels]) == pytest.approx(a, rel=1e-6)
    with pytest.raises(ValueError, match="y has 4 columns but the model has 3 outputs"):
        m.fit(x, np.eye(4)[labels], verbose=0)
    with pytest.raises(TypeError, match="got dict"):
        m.fit({"x": x}, labels, verbose=0)
    t = fastgru.TextClassifier(10, embed_dim=4, hidden_size=4, seed=0)
    with pytest.raises(ValueError, match=r"no time steps \(shape \(3, 0\)\)"):
        t.fit(np.zeros((3, 0), int), [0, 1, 0], verbose=0)


def test_single_batch_api_like_keras(sentiment):
    """train_on_batch is one step of fit over the whole batch and reports the loss before
    the update; test_on_batch / predict_on_batch / model(x) are evaluate / predict."""
    vocab, _, x, y = sentiment
    a, b = small_clf(vocab, seed=3), small_clf(vocab, seed=3)
    for m in (a, b):
        m.compile(fastgru.Adam(1e-2), "binary_crossentropy", ["accuracy"])
    before = a.evaluate(x[:40], y[:40], batch_size=40, return_dict=True)
    got = a.train_on_batch(x[:40], y[:40], return_dict=True)
    assert got["loss"] == pytest.approx(before["loss"], rel=1e-5)
    assert got["accuracy"] == pytest.approx(before["accuracy"])
    b.fit(x[:40], y[:40], batch_size=40, epochs=1, shuffle=False, verbose=0)
    for k, v in a.get_weights().items():
        np.testing.assert_array_equal(v, b.get_weights()[k])
    loss, acc = a.train_on_batch(x[40:80], y[40:80], sample_weight=np.ones(40))
    assert isinstance(loss, float) and 0 <= acc <= 1
    np.testing.assert_array_equal(a.predict_on_batch(x[:7]), a.predict(x[:7]))
    np.testing.assert_array_equal(a(x[:7]), a.predict(x[:7]))
    r = a.test_on_batch(x[:50], y[:50], return_dict=True)
    assert r == a.evaluate(x[:50], y[:50], batch_size=50, return_dict=True)


def test_model_checkpoint_save_freq_counts_batches_across_epochs_like_keras(sentiment, tmp_path):
    vocab, _, x, y = sentiment
    m = small_clf(vocab)
    seen = []
    path = str(tmp_path / "sub" / "e{epoch}-b{batch}.npz")  # the folder does not exist yet
    mc = fastgru.ModelCheckpoint(path, save_freq=3, save_weights_only=True)
    grab = fastgru.LambdaCallback(
        on_train_batch_end=lambda b, logs: seen.append(m.get_weights()))
    # 80 samples, batch 8: 10 batches an epoch; Keras saves after batches 3, 6, 9, then
    # (the count carries over) after the 2nd, 5th and 8th of the next epoch
    m.fit(x[:80], y[:80], epochs=2, batch_size=8, verbose=0, shuffle=False,
          callbacks=[grab, mc])
    names = sorted(p.name for p in (tmp_path / "sub").iterdir())
    assert names == sorted(["e1-b3.npz", "e1-b6.npz", "e1-b9.npz", "e2-b2.npz", "e2-b5.npz",
                            "e2-b8.npz"])
    m2 = small_clf(vocab, seed=9)
    m2.load_weights(str(tmp_path / "sub" / "e2-b5.npz"))
    want = seen[10 + 4]
    assert all(np.array_equal(v, want[k]) for k, v in m2.get_weights().items())
    # best-only on batch logs: the running training loss
    mc = fastgru.ModelCheckpoint(str(tmp_path / "best.npz"), "loss", save_best_only=True,
                                 save_freq=4)
    m.fit(x[:80], y[:80], epochs=1, batch_size=8, verbose=0, callbacks=[mc])
    assert (tmp_path / "best.npz").is_file() and np.isfinite(mc.best)
    for bad in (0, -1, "batch", 2.5, True):
        with pytest.raises(ValueError, match="save_freq must be 'epoch' or an int >= 1"):
            fastgru.ModelCheckpoint(str(tmp_path / "x.npz"), save_freq=bad)
