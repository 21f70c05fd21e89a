"""The three workloads of issue 5, end to end through their example scripts on small data:
sentiment classification, seq2seq regression, and a character language model."""
from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

import fastgru

EXAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, "examples")


def example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}",
                                                  os.path.join(EXAMPLES, f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_sentiment_example(tmp_path, capsys):
    res = example("sentiment").main(["--quick", "--out", str(tmp_path)])
    assert res["test_accuracy"] >= 0.9
    assert (tmp_path / "model.npz").is_file()
    if fastgru.plotting.HAVE_MATPLOTLIB:
        assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    out = capsys.readouterr().out
    assert "test accuracy" in out


def test_sentiment_example_reads_mr_format(tmp_path):
    texts, y = fastgru.make_sentiment_texts(300, seed=5)
    d = tmp_path / "mr"
    d.mkdir()
    (d / "rt-polarity.pos").write_text("\n".join(t for t, l in zip(texts, y, strict=True) if l),
                                       encoding="latin-1")
    (d / "rt-polarity.neg").write_text("\n".join(t for t, l in zip(texts, y, strict=True) if not l),
                                       encoding="latin-1")
    res = example("sentiment").main(["--quick", "--data", str(d), "--out", str(tmp_path / "o")])
    assert res["test_accuracy"] >= 0.8


def test_seq2seq_regression_example():
    res = example("seq2seq_regression").main(["--quick", "--epochs", "15"])
    # far better than repeating the current noisy value
    assert res["mse"] < 0.25 * res["naive_mse"]


def test_char_lm_example_and_sampling():
    res = example("char_lm").main(["--quick", "--epochs", "10", "--hidden", "64",
                                   "--seq-len", "32"])
    assert res["history"]["val_accuracy"][-1] > 0.8
    greedy = res["samples"][0.0]
    assert any(w in greedy for w in ("cat", "dog", "bird", "fish"))


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_language_model_generate_contract(cell):
    text = "abcabcabcabcabcabcabcabcabcabcabcabc" * 4
    vocab = fastgru.Vocabulary.build([text], char_level=True)
    x, y = fastgru.lm_windows(vocab.ids(text), 8, step=2)
    lm = fastgru.LanguageModel(len(vocab), embed_dim=8, hidden_size=16, vocab=vocab, cell=cell,
                               learning_rate=2e-2, seed=0)
    lm.fit(x, y, epochs=15, batch_size=16, verbose=0)
    assert lm.generate("ab", 9, temperature=0) == "cabcabcab"
    assert lm.generate("ab", 9, temperature=0) == lm.generate("ab", 9, temperature=0)
    a = lm.generate([2, 3], 20, temperature=5.0, seed=1)
    assert a == lm.generate([2, 3], 20, temperature=5.0, seed=1)
    assert all(0 <= i < len(vocab) for i in a) and len(a) == 20
    with pytest.raises(ValueError):
        lm.generate("ab", 5, temperature=-1)
    with pytest.raises(ValueError):
        lm.generate([], 5)
    # an untrained model at a high temperature never samples <pad> or <unk> (decoded text
    # would drop the one and spell out the other), unless asked to
    raw = fastgru.LanguageModel(len(vocab), embed_dim=4, hidden_size=5, vocab=vocab, cell=cell,
                                seed=0)
    txt = raw.generate("ab", 300, temperature=50.0, seed=0)
    assert len(txt) == 300 and set(txt) <= set("abc")
    ids = raw.generate([2], 300, temperature=50.0, seed=0, skip_special=False)
    assert {0, 1} <= set(ids)
    assert 0 not in raw.generate([2], 300, temperature=50.0, seed=0)
    # per-step predict: probabilities over the vocabulary at every step
    p = lm.predict(x[:3])
    assert p.shape == (3, 8, len(vocab))
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-5)


def test_per_step_predict_zeros_past_each_end():
    m = fastgru.SequenceRegressor(1, hidden_size=4, seed=0)
    xs = [np.ones((5, 1)), np.ones((2, 1))]
    p = m.predict(xs)
    assert p.shape == (2, 5, 1)
    assert np.all(p[1, 2:] == 0) and np.all(p[1, :2] != 0)
    # same values as predicting each sequence alone
    np.testing.assert_allclose(p[1, :2], m.predict([xs[1]])[0], rtol=1e-6)
