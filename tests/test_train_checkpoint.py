"""Model files and checkpoints: round trips, no pickle, atomic writes, damaged files."""
from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest

import fastgru
from fastgru.checkpoint import CheckpointError, load_arrays, save_arrays


@pytest.fixture(scope="module")
def trained():
    texts, y = fastgru.make_sentiment_texts(200, seed=2)
    vocab = fastgru.Vocabulary.build(texts)
    m = fastgru.TextClassifier(len(vocab), embed_dim=8, hidden_size=8, cell="lstm",
                               bidirectional=True, pooling="max", vocab=vocab, max_len=30,
                               seed=0)
    m.fit(texts, np.where(y == 1, "good", "bad"), epochs=1, verbose=0)
    return m, texts


def test_save_load_model_roundtrip(trained, tmp_path):
    m, texts = trained
    path = str(tmp_path / "m.npz")
    m.save(path)
    r = fastgru.load_model(path)
    assert type(r) is fastgru.TextClassifier
    np.testing.assert_array_equal(r.predict(texts[:20]), m.predict(texts[:20]))
    assert r.classes_ == ["bad", "good"] and r.vocab.tokens == m.vocab.tokens
    assert r.max_len == 30
    assert r.optimizer.iterations == m.optimizer.iterations
    for k, v in m.optimizer.slots["m"].items():
        np.testing.assert_array_equal(r.optimizer.slots["m"][k], v)
    # files are plain npz: every entry loads without pickle
    with np.load(path, allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)
    r2 = fastgru.load_model(path, compile=False)
    assert not r2.compiled
    np.testing.assert_allclose(r2.predict(texts[:5]), m.predict(texts[:5]), rtol=1e-6)


def test_every_ready_made_model_loads_back(tmp_path):
    """Including the LanguageModel, and NumPy scalars as arguments (vocab_size=x.max() + 1)."""
    x = np.random.default_rng(0).integers(1, 20, (8, 12))
    lm = fastgru.LanguageModel(x.max() + 1, embed_dim=np.int32(8), hidden_size=16,
                               seed=np.int64(1), learning_rate=np.float32(0.01))
    lm.fit(x[:, :-1], x[:, 1:], epochs=1, verbose=0)
    made = [lm, fastgru.TextClassifier(np.int64(20), hidden_size=np.int64(8), seed=0),
            fastgru.SequenceClassifier(np.int64(3), hidden_size=4, seed=0),
            fastgru.SequenceRegressor(3, hidden_size=np.int16(4), seed=0)]
    for i, m in enumerate(made):
        path = str(tmp_path / f"{i}.npz")
        m.save(path)
        r = fastgru.load_model(path)
        assert type(r) is type(m) and r.get_config() == m.get_config()
        xi = x[:, :-1] if i < 2 else np.random.default_rng(i).standard_normal((4, 5, 3))
        np.testing.assert_array_equal(r.predict(xi), m.predict(xi))


def test_sequential_with_user_layers_roundtrip(tmp_path):
    m = fastgru.Sequential([fastgru.Embedding(20, 4), fastgru.GRU(4, 5, batch_first=True),
                            fastgru.GlobalAveragePooling1D(), fastgru.Dropout(0.1),
                            fastgru.Dense(3, activation="softmax")], seed=1)
    m.compile(fastgru.SGD(0.1, momentum=0.9), "sparse_categorical_crossentropy", ["accuracy"])
    x = np.random.default_rng(0).integers(1, 20, (30, 6))
    m.fit(x, np.arange(30) % 3, epochs=1, verbose=0)
    m.save(str(tmp_path / "s.npz"))
    r = fastgru.load_model(str(tmp_path / "s.npz"))
    assert [l.name for l in r.layers] == [l.name for l in m.layers]
    assert isinstance(r.optimizer, fastgru.SGD) and r.optimizer.momentum == 0.9
    np.testing.assert_array_equal(r.predict(x), m.predict(x))
    w = fastgru.Sequential([fastgru.Embedding(20, 4), fastgru.GRU(4, 5, batch_first=True),
                            fastgru.GlobalAveragePooling1D(), fastgru.Dropout(0.1),
                            fastgru.Dense(3, activation="softmax")])
    w.load_weights(str(tmp_path / "s.npz"))
    np.testing.assert_allclose(w.predict(x), m.predict(x), rtol=1e-6)


def test_truncated_and_tampered_files_are_refused(trained, tmp_path):
    m, _ = trained
    path = tmp_path / "m.npz"
    m.save(str(path))
    data = path.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        fastgru.load_model(str(tmp_path / "trunc.npz"))
    # change one weight inside an otherwise valid file
    arrays, meta = load_arrays(str(path))
    arrays["param/classifier.bias"] = arrays["param/classifier.bias"] + 1
    meta_json = __import__("json").dumps(meta).encode()
    with zipfile.ZipFile(tmp_path / "tamper.npz", "w") as z:
        for k, v in arrays.items():
            with z.open(k + ".npy", "w") as f:
                np.lib.format.write_array(f, v)
        with z.open("__meta__.json.npy", "w") as f:
            np.lib.format.write_array(f, np.frombuffer(meta_json, np.uint8))
    with pytest.raises(CheckpointError, match="checksum"):
        fastgru.load_model(str(tmp_path / "tamper.npz"))
    # the metadata alone edited (the arrays untouched): the checksum covers it too
    arrays, meta = load_arrays(str(path))
    key = next(k for k, v in meta.items() if isinstance(v, (dict, list, str, int))
               and k not in ("format", "version", "sha256"))
    meta2 = dict(meta, **{key: "edited"})
    with zipfile.ZipFile(tmp_path / "meta.npz", "w") as z:
        for k, v in arrays.items():
            with z.open(k + ".npy", "w") as f:
                np.lib.format.write_array(f, v)
        with z.open("__meta__.json.npy", "w") as f:
            np.lib.format.write_array(
                f, np.frombuffer(__import__("json").dumps(meta2).encode(), np.uint8))
    with pytest.raises(CheckpointError, match="checksum"):
        load_arrays(str(tmp_path / "meta.npz"))
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(CheckpointError, match="not a fastgru checkpoint"):
        fastgru.load_model(str(tmp_path / "other.npz"))
    with pytest.raises(CheckpointError, match="does not exist"):
        fastgru.load_model(str(tmp_path / "missing.npz"))
    with pytest.raises(ValueError, match="do not match"):
        fastgru.TextClassifier(5).load_weights(str(path))


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = str(tmp_path / "a.npz")
    save_arrays(path, {"x": np.arange(3)}, {"k": 1})
    before = open(path, "rb").read()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        save_arrays(path, {"x": np.arange(5)}, {"k": 2})
    monkeypatch.undo()
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["a.npz"]  # no temporary file left behind
    arrays, meta = load_arrays(path)
    assert meta["k"] == 1
    with pytest.raises(TypeError):
        save_arrays(path, {"o": np.array([object()])}, {})


def test_training_state_pairs_callbacks_by_type(trained, tmp_path):
    m, _ = trained
    path = str(tmp_path / "c.npz")
    es = fastgru.EarlyStopping()
    es.best, es.wait = 0.25, 2
    m.save_training_state(path, 3, [fastgru.History(), es, fastgru.LambdaCallback()])
    with pytest.warns(UserWarning, match="the saved state of EarlyStopping is not used"):
        assert m.load_training_state(path, [fastgru.History()]) == 3
    es2 = fastgru.EarlyStopping()
    assert m.load_training_state(path, [es2, fastgru.History()]) == 3  # order, no Lambda
    assert (es2.best, es2.wait) == (0.25, 2)
    with pytest.warns(UserWarning, match="ModelCheckpoint start"):
        m.load_training_state(path, [fastgru.History(), fastgru.EarlyStopping(),
                                     fastgru.ModelCheckpoint(str(tmp_path / "m.npz"))])
    m.save(str(tmp_path / "plain.npz"))
    with pytest.raises(CheckpointError, match="no training state"):
        m.load_training_state(str(tmp_path / "plain.npz"))


def test_atomic_writes_get_the_usual_permissions(tmp_path):
    """Not mkstemp's 0600: outputs on a shared (cluster) file system stay readable."""
    import os

    from fastgru.checkpoint import atomic_write_bytes

    umask = os.umask(0o022)
    try:
        atomic_write_bytes(str(tmp_path / "sub" / "f.bin"), b"xyz")
    finally:
        os.umask(umask)
    assert (tmp_path / "sub" / "f.bin").read_bytes() == b"xyz"
    assert (tmp_path / "sub" / "f.bin").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["f.bin"]  # no temp file left
