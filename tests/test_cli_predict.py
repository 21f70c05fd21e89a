"""`fastgru predict`: a trained run folder applied to texts, text files and arrays; the
predictions are the model's own (predict / predict_classes), in input order."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastgru
from fastgru.cli import main

SRC = os.path.dirname(os.path.dirname(os.path.abspath(fastgru.__file__)))
SMALL = ["--epochs", "1", "--hidden", "8", "--verbose", "0"]


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("text")
    texts, y = fastgru.make_sentiment_texts(120, seed=0)
    labels = np.array(["neg", "pos"])[np.asarray(y)]
    (d / "d.tsv").write_text("".join(f"{t}\t{v}\n" for t, v in zip(texts, labels, strict=True)))
    assert main(["train", "--data", str(d / "d.tsv"), "--out", str(d / "run"),
                 "--embed-dim", "8"] + SMALL) == 0
    return d / "run", texts[:7]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("digits")
    assert main(["train", "--out", str(d / "run")] + SMALL) == 0
    x = np.asarray(fastgru.data.load_digits_sequences().x_train[:6])
    np.save(d / "x.npy", x)
    np.savez(d / "x.npz", x=x, y=np.zeros(6))
    return d / "run", d, x


def _lines(capsys):
    return capsys.readouterr().out.strip().splitlines()


def test_texts_on_the_command_line_and_from_a_file(text_run, capsys, tmp_path):
    run, texts = text_run
    model = fastgru.load_model(run / "model.npz")
    want = list(model.predict_classes(texts))
    p1 = model.predict(texts)[:, 0]
    assert main(["predict", str(run)] + texts) == 0
    lines = [ln.split("\t") for ln in _lines(capsys)]
    assert [ln[0] for ln in lines] == want and [ln[2] for ln in lines] == texts
    got_p = np.array([float(ln[1]) for ln in lines])
    np.testing.assert_allclose(got_p, np.where(np.array(want) == "pos", p1, 1 - p1), atol=1e-4)
    (tmp_path / "t.txt").write_text("\n".join(texts) + "\n")
    assert main(["predict", str(run / "model.npz"), "--input", str(tmp_path / "t.txt"),
                 "--threads", "-1"]) == 0
    assert [ln.split("\t")[0] for ln in _lines(capsys)] == want


def test_text_files_are_decoded_as_training_reads_them(text_run, capsys, tmp_path):
    """A byte-order mark is dropped (it would be an <unk> token), and Windows-1252 text
    (the MR files) is read rather than refused."""
    run, texts = text_run
    want = _predict_lines(run, texts, capsys, tmp_path / "plain.txt", "\n".join(texts).encode())
    bom = _predict_lines(run, texts, capsys, tmp_path / "bom.txt",
                         b"\xef\xbb\xbf" + "\n".join(texts).encode())
    assert bom == want
    cp = _predict_lines(run, ["it\u2019s \u2014 fine"], capsys, tmp_path / "cp.txt",
                        "it\u2019s \u2014 fine".encode("cp1252"))
    assert cp[0].endswith("\tit\u2019s \u2014 fine")
    (tmp_path / "bin.txt").write_bytes(b"a\0b")
    assert main(["predict", str(run), "--input", str(tmp_path / "bin.txt")]) == 2
    assert "not a text file" in capsys.readouterr().err


def _predict_lines(run, texts, capsys, path, raw):
    path.write_bytes(raw)
    assert main(["predict", str(run), "--input", str(path)]) == 0
    return _lines(capsys)


@pytest.mark.parametrize("ext", [".csv", ".tsv", ".json", ".npy"])
def test_output_files(text_run, capsys, tmp_path, ext):
    run, texts = text_run
    model = fastgru.load_model(run / "model.npz")
    p1 = model.predict(texts)[:, 0].astype(np.float64)
    out = tmp_path / f"p{ext}"
    (tmp_path / "t.txt").write_text("\n".join(texts))
    assert main(["predict", str(run), "--input", str(tmp_path / "t.txt"), "--output",
                 str(out)]) == 0
    assert f"wrote {len(texts)} predictions" in capsys.readouterr().out
    if ext == ".npy":
        table = np.load(out)
        np.testing.assert_allclose(table, np.stack([1 - p1, p1], 1), rtol=1e-6)
    elif ext == ".json":
        recs = json.loads(out.read_text())
        assert [r["text"] for r in recs] == texts
        np.testing.assert_allclose([r["p_pos"] for r in recs], p1, rtol=1e-6)
        assert [r["label"] for r in recs] == list(model.predict_classes(texts))
    else:
        rows = out.read_text().splitlines()
        sep = "\t" if ext == ".tsv" else ","
        assert rows[0].split(sep) == ["label", "probability", "p_neg", "p_pos", "text"]
        assert len(rows) == len(texts) + 1


def test_arrays_from_npy_and_npz(digits_run, capsys):
    run, d, x = digits_run
    model = fastgru.load_model(run / "model.npz")
    want = [str(v) for v in model.predict_classes(x)]
    for f in ("x.npy", "x.npz"):
        assert main(["predict", str(run), "--input", str(d / f), "--threads", "1"]) == 0
        lines = [ln.split("\t") for ln in _lines(capsys)]
        assert [ln[0] for ln in lines] == want
        np.testing.assert_allclose([float(ln[1]) for ln in lines],
                                   model.predict(x).max(1), atol=1e-4)


def test_errors_are_one_line(text_run, digits_run, capsys, tmp_path):
    run, _ = text_run
    drun, d, _ = digits_run
    (tmp_path / "g.npy").write_text("garbage")
    np.save(tmp_path / "bad.npy", np.zeros((2, 3, 4), np.float32))
    np.savez(tmp_path / "two.npz", a=np.zeros(2), b=np.zeros(2))
    cases = [
        (["predict", str(run)], "nothing to predict"),
        (["predict", str(run), "x", "--input", "f.txt"], "not both"),
        (["predict", str(tmp_path / "none"), "x"], "does not exist"),
        (["predict", str(tmp_path), "x"], "folder without model.npz"),
        (["predict", str(run), "x", "--output", "p.xls"], "--output must end in one of"),
        (["predict", str(run), "x", "--batch-size", "0"], "--batch-size must be a positive"),
        (["predict", str(drun), "some text"], "takes arrays, not texts"),
        (["predict", str(drun), "--input", str(tmp_path / "g.npy")], "is not a NumPy .npy"),
        (["predict", str(drun), "--input", str(tmp_path / "bad.npy")],
         r"does not fit the model: x must be \(N, T, F\) with F = 8"),
        (["predict", str(drun), "--input", str(tmp_path / "two.npz")],
         "name the inputs 'x'"),
        (["predict", str(run), "--input", str(tmp_path / "missing.txt")], "does not exist"),
    ]
    import re

    for argv, match in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("fastgru predict: error:") and "\n" not in err, err
        assert re.search(match, err), (match, err)


def test_python_dash_m_fastgru(text_run):
    run, texts = text_run
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "fastgru", "predict", str(run), texts[0]],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\t")[0] in ("neg", "pos")


def test_texts_without_tokens_are_scored_with_a_warning(text_run, capsys):
    """An empty text is encoded as one <unk> (Vocabulary.encode); the user is told."""
    run, texts = text_run
    model = fastgru.load_model(run / "model.npz")
    assert main(["predict", str(run), texts[0], "", "  "]) == 0
    out = capsys.readouterr()
    assert "warning: 2 text(s) without tokens (number 2, 3)" in out.err
    rows = [ln.split("\t") for ln in out.out.strip("\n").split("\n")]
    assert len(rows) == 3
    p = model.predict([texts[0], "", "  "])[:, 0]
    assert p[1] == p[2]
    assert main(["predict", str(run), texts[0]]) == 0
    assert "warning" not in capsys.readouterr().err
