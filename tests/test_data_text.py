"""Tokenizer, vocabulary, padding, labels, splits and length batches."""
from __future__ import annotations

import json

import numpy as np
import pytest

import fastgru
from fastgru.data import DataError, encode_labels, length_batches, stratified_split


def test_tokenizer_words_punctuation_html():
    tok = fastgru.Tokenizer()
    assert tok("Don't panic, it's GREAT!<br />Really.") == \
        ["don't", "panic", ",", "it's", "great", "!", "really", "."]
    assert tok("the film 's ending") == ["the", "film", "'s", "ending"]  # MR's split style
    assert fastgru.Tokenizer(lower=False)("Ab") == ["Ab"]
    assert fastgru.Tokenizer(char_level=True)("Ab c") == ["a", "b", " ", "c"]
    # typographic apostrophes are apostrophes; decomposed accents are composed (NFC)
    assert tok("It\u2019s the film\u2019s end, don\u02bct") == \
        ["it's", "the", "film's", "end", ",", "don't"]
    assert tok("cafe\u0301 caf\u00e9") == ["caf\u00e9", "caf\u00e9"]
    assert fastgru.Tokenizer(char_level=True)("e\u0301\u2019") == ["\u00e9", "\u2019"]
    raw = fastgru.Tokenizer(normalize=False)
    assert raw("it\u2019s cafe\u0301") == ["it", "\u2019", "s", "cafe", "\u0301"]
    with pytest.raises(TypeError):
        tok(3)


def test_vocabulary_build_min_freq_max_size_deterministic():
    texts = ["b a a c", "a b d", "e"]
    v = fastgru.Vocabulary.build(texts)
    assert v.tokens == ["<pad>", "<unk>", "a", "b", "c", "d", "e"]  # by count, then A-Z
    v2 = fastgru.Vocabulary.build(texts, min_freq=2)
    assert v2.tokens == ["<pad>", "<unk>", "a", "b"]
    v3 = fastgru.Vocabulary.build(texts, max_size=3)
    assert v3.tokens == ["<pad>", "<unk>", "a"]
    ids, L = v2.encode(["a b zzz", "", "a"])
    np.testing.assert_array_equal(ids, [[2, 3, 1], [1, 0, 0], [2, 0, 0]])
    np.testing.assert_array_equal(L, [3, 1, 1])
    assert ids.dtype == np.int32
    assert v2.decode(ids[0]) == ["a", "b", "<unk>"]
    with pytest.raises(ValueError):
        fastgru.Vocabulary.build(texts, min_freq=0)
    with pytest.raises(TypeError):
        v2.encode("a b")


def test_vocabulary_truncation_keeps_end_and_saves(tmp_path):
    v = fastgru.Vocabulary.build(["one two three four"])
    ids, L = v.encode(["one two three four"], max_len=2)
    assert v.decode(ids[0]) == ["three", "four"]
    assert L[0] == 2
    ids2, _ = v.encode(["one two three four"], max_len=2, truncating="post")
    assert v.decode(ids2[0]) == ["one", "two"]
    # trim: max_len caps the width instead of setting it
    ids3, L3 = v.encode(["one two", "three"], max_len=1000, trim=True)
    assert ids3.shape == (2, 2) and list(L3) == [2, 1]
    assert v.encode(["one two three four"], max_len=2, trim=True)[0].shape == (1, 2)
    path = tmp_path / "vocab.json"
    v.save(str(path))
    w = fastgru.Vocabulary.load(str(path))
    assert w.tokens == v.tokens
    assert json.loads(path.read_text())["tokenizer"] == {"lower": True, "char_level": False,
                                                         "normalize": True}
    # a vocabulary saved before `normalize` existed keeps tokenizing as it was built
    doc = json.loads(path.read_text())
    doc["tokenizer"] = {"lower": True, "char_level": False}
    path.write_text(json.dumps(doc))
    old = fastgru.Vocabulary.load(str(path))
    assert old.tokenizer("it\u2019s") == ["it", "\u2019", "s"]
    doc["tokenizer"] = {"lower": True, "pickle": 1}
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="tokenizer settings"):
        fastgru.Vocabulary.load(str(path))
    with pytest.raises(ValueError, match="<pad>"):
        fastgru.Vocabulary(["a", "b"])


def test_pad_sequences():
    x, L = fastgru.pad_sequences([[1, 2, 3], [4]], maxlen=2)
    np.testing.assert_array_equal(x, [[2, 3], [4, 0]])
    np.testing.assert_array_equal(L, [2, 1])
    x, _ = fastgru.pad_sequences([[1, 2, 3], [4]], padding="pre", truncating="post")
    np.testing.assert_array_equal(x, [[1, 2, 3], [0, 0, 4]])
    with pytest.raises(ValueError):
        fastgru.pad_sequences([[1]], maxlen=0)
    # as keras.utils.pad_sequences: floats kept with a float dtype, sequences of vectors
    x, L = fastgru.pad_sequences([[0.5, 1.5], [2.7]], dtype="float32")
    np.testing.assert_array_equal(x, np.array([[0.5, 1.5], [2.7, 0]], np.float32))
    x, L = fastgru.pad_sequences([np.ones((2, 3)), np.full((1, 3), 2.0), []], dtype="float64",
                                 padding="pre")
    assert x.shape == (3, 2, 3) and list(L) == [2, 1, 0]
    np.testing.assert_array_equal(x[1], [[0, 0, 0], [2, 2, 2]])
    with pytest.raises(TypeError, match="float dtype"):
        fastgru.pad_sequences([[0.5, 1.5]])
    with pytest.raises(ValueError, match="items of shape"):
        fastgru.pad_sequences([np.ones((2, 3)), np.ones((2, 4))], dtype="float32")
    # ids beyond int32 would wrap silently in NumPy's assignment (Keras raises too)
    with pytest.raises(ValueError, match=r"sequence 1 holds values outside int32"):
        fastgru.pad_sequences([[1], [2**31]])
    with pytest.raises(ValueError, match="outside uint8"):
        fastgru.pad_sequences([[-1]], dtype="uint8")
    x, _ = fastgru.pad_sequences([[2**31]], dtype="int64")
    assert x[0, 0] == 2**31


def test_encode_labels():
    ids, cls = encode_labels(["pos", "neg", "pos"])
    assert cls == ["neg", "pos"]
    np.testing.assert_array_equal(ids, [1, 0, 1])
    ids, cls = encode_labels(np.array([0, 1, 1]))
    assert cls == [0, 1]
    ids, cls = encode_labels(["1", "0", "2"])  # numbers written as text
    np.testing.assert_array_equal(ids, [1, 0, 2])
    ids, cls = encode_labels(np.array([-1, 1, 1]))
    np.testing.assert_array_equal(ids, [0, 1, 1])
    assert cls == [-1, 1]
    ids, _ = encode_labels(["b"], classes=["a", "b"])
    assert ids[0] == 1
    with pytest.raises(DataError, match="single class"):
        encode_labels(["x", "x"])
    with pytest.raises(DataError, match="non-integral"):
        encode_labels(np.array([0.5, 1.0]))
    with pytest.raises(DataError, match="not one of"):
        encode_labels(["c"], classes=["a", "b"])
    with pytest.raises(DataError, match="empty"):
        encode_labels(["a", " "])


def test_stratified_split_is_stratified_and_seeded():
    y = np.array([0] * 90 + [1] * 10)
    tr, te = stratified_split(y, 0.2, seed=3)
    assert len(te) == 20 and len(tr) == 80
    assert (y[te] == 1).sum() == 2
    assert set(tr) | set(te) == set(range(100)) and not set(tr) & set(te)
    tr2, te2 = stratified_split(y, 0.2, seed=3)
    np.testing.assert_array_equal(te, te2)
    assert not np.array_equal(te, stratified_split(y, 0.2, seed=4)[1])
    with pytest.raises(ValueError):
        stratified_split(y, 1.0)


def test_length_batches_bucket_and_cover():
    rng = np.random.default_rng(0)
    L = rng.integers(1, 100, 1000)
    batches = length_batches(L, 32, np.random.default_rng(1), shuffle=True, bucket=True)
    allidx = np.sort(np.concatenate(batches))
    np.testing.assert_array_equal(allidx, np.arange(1000))
    assert all(len(b) <= 32 for b in batches)
    # bucketing: padded steps are a small fraction of all steps
    padded = sum(len(b) * L[b].max() for b in batches)
    plain = length_batches(L, 32, np.random.default_rng(1), shuffle=True, bucket=False)
    padded_plain = sum(len(b) * L[b].max() for b in plain)
    assert padded < 0.6 * padded_plain
    assert padded < 1.1 * L.sum()
    # inference order: sorted by length, every index once
    inf = length_batches(L, 50, None, shuffle=False)
    flat = np.concatenate(inf)
    assert np.all(np.diff(L[flat]) >= 0)
    # seeded
    again = length_batches(L, 32, np.random.default_rng(1), shuffle=True, bucket=True)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))


def test_synthetic_tasks():
    texts, y = fastgru.make_sentiment_texts(50, seed=0)
    assert len(texts) == 50 and set(y) <= {0, 1}
    x, t = fastgru.make_noisy_sine(8, T=12)
    assert x.shape == (8, 12, 1) and t.shape == (8, 12, 1)
    assert np.abs(t).max() <= 1.0
    # y is the clean next value of x: x_{t+1} = y_t + noise (std 0.1)
    assert 0.05 < float(np.std(x[:, 1:] - t[:, :-1])) < 0.15
    s = fastgru.make_pattern_text(20)
    assert s.count(".") == 20


def test_decode_refuses_ids_outside_the_vocabulary():
    v = fastgru.Vocabulary.build(["a b c"])
    assert v.decode([v.index["a"], 0, v.index["c"]]) == ["a", "c"]
    with pytest.raises(ValueError, match="ids must be in"):
        v.decode([-1])
    with pytest.raises(ValueError, match="ids must be in"):
        v.decode([len(v)])


def test_a_pad_sequences_tuple_given_as_x_gets_a_clear_error():
    """pad_sequences returns (x, lengths), Keras' returns x: passing the tuple on says so."""
    m = fastgru.TextClassifier(20, embed_dim=4, hidden_size=3, seed=0)
    padded = fastgru.pad_sequences([[5, 6, 7], [8, 9]])
    with pytest.raises(TypeError, match=r"x is a tuple \(padded array, lengths\)"):
        m.predict(padded)
    np.testing.assert_array_equal(m.predict(padded[0]), m.predict([[5, 6, 7], [8, 9]]))
