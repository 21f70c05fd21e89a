"""Loaders for the real formats, on small files written in tmp_path."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

import fastgru
from fastgru.data import DataError


def write(path, text, encoding="utf-8"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding=encoding) as f:
        f.write(text)


def test_aclimdb_layout(tmp_path):
    root = tmp_path / "aclImdb"
    for part in ("train", "test"):
        for sub, texts in (("pos", ["Great film.<br />Loved it", "superb"]), ("neg", ["Awful"])):
            for i, t in enumerate(texts):
                write(str(root / part / sub / f"{i}_7.txt"), t)
    write(str(root / "train" / "unsup" / "0_0.txt"), "ignored")
    for p in (root, tmp_path):  # the folder itself or its parent
        ds = fastgru.load_aclimdb(str(p))
        assert ds.kind == "text" and ds.has_test
        assert ds.x_train == ["Awful", "Great film.<br />Loved it", "superb"]
        np.testing.assert_array_equal(ds.y_train, [0, 1, 1])
        assert len(ds.x_test) == 3
    with pytest.raises(DataError, match="aclImdb layout"):
        fastgru.load_aclimdb(str(tmp_path / "aclImdb" / "train"))
    with pytest.raises(DataError, match="does not exist"):
        fastgru.load_aclimdb(str(tmp_path / "nope"))


def test_mr_latin1(tmp_path):
    write(str(tmp_path / "rt-polarity.pos"), "un film tr\xe8s bon\nsuperb .\n", "latin-1")
    write(str(tmp_path / "rt-polarity.neg"), "ennuyeux\n", "latin-1")
    ds = fastgru.load_mr(str(tmp_path))
    assert "un film tr\xe8s bon" in ds.x_train
    np.testing.assert_array_equal(np.sort(ds.y_train), [0, 1, 1])
    assert not ds.has_test
    os.unlink(tmp_path / "rt-polarity.neg")
    with pytest.raises(DataError, match="rt-polarity.neg"):
        fastgru.load_mr(str(tmp_path))


def test_mr_windows_1252_quotes_and_named_classes(tmp_path, capsys):
    """MR's quotes and dashes are Windows-1252 bytes: read as the characters they are (not
    Latin-1 control codes); a byte cp1252 leaves undefined falls back to Latin-1. The CLI's
    model names the classes negative / positive."""
    (tmp_path / "rt-polarity.pos").write_bytes(b"it\x92s great \x97 really\nsuperb .\n"
                                               b"fun , fun\n")
    (tmp_path / "rt-polarity.neg").write_bytes(b"dull\x85\nbad .\nawful , awful\n")
    ds = fastgru.load_mr(str(tmp_path))
    assert "it\u2019s great \u2014 really" in ds.x_train and "dull\u2026" in ds.x_train
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "rt-polarity.pos").write_bytes(b"a\x81b\n")
    (tmp_path / "odd" / "rt-polarity.neg").write_bytes(b"c\n")
    assert "a\x81b" in fastgru.load_mr(str(tmp_path / "odd")).x_train
    from fastgru.cli import main

    out = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path), "--format", "mr", "--out", str(out),
                 "--epochs", "1", "--hidden", "4", "--embed-dim", "4", "--verbose", "0",
                 "--test-split", "0.34"]) == 0
    assert fastgru.load_model(str(out / "model.npz")).classes_ == ["negative", "positive"]
    capsys.readouterr()
    assert main(["predict", str(out), "fun"]) == 0
    assert capsys.readouterr().out.split("\t")[0] in ("negative", "positive")


def test_tsv_csv_with_header_and_string_labels(tmp_path):
    write(str(tmp_path / "d.tsv"), "text\tlabel\ngood movie\tpos\nbad one\tneg\n\n")
    ds = fastgru.load_delimited(str(tmp_path / "d.tsv"))
    assert ds.x_train == ["good movie", "bad one"]
    assert list(ds.y_train) == ["pos", "neg"]
    write(str(tmp_path / "d.csv"), 'review,sentiment\n"good, really",1\nbad,0\n')
    ds = fastgru.load_delimited(str(tmp_path / "d.csv"), ",")
    assert ds.x_train == ["good, really", "bad"]
    # a UTF-8 byte order mark (Excel, Notepad) is not part of the header's first name
    (tmp_path / "bom.tsv").write_bytes("text\tlabel\ngood movie\tpos\nbad film\tneg\n"
                                       .encode("utf-8-sig"))
    ds = fastgru.load_delimited(str(tmp_path / "bom.tsv"))
    assert ds.x_train == ["good movie", "bad film"] and list(ds.y_train) == ["pos", "neg"]
    write(str(tmp_path / "bad.tsv"), "only one field\n")
    with pytest.raises(DataError, match="bad.tsv:1: expected 2 fields"):
        fastgru.load_delimited(str(tmp_path / "bad.tsv"))
    write(str(tmp_path / "nolabel.tsv"), "good movie\tpos\nbad film\t  \n")
    with pytest.raises(DataError, match="nolabel.tsv:2: empty class label .*'bad film'"):
        fastgru.load_delimited(str(tmp_path / "nolabel.tsv"))


def test_keras_imdb_npz_object_arrays(tmp_path):
    obj = np.empty(3, dtype=object)
    obj[:] = [[1, 14, 22], [5, 3], [7]]
    path = str(tmp_path / "imdb.npz")
    np.savez(path, x_train=obj, y_train=np.array([1, 0, 1]), x_test=obj[:2],
             y_test=np.array([0, 1]))
    ds = fastgru.load_imdb_npz(path)
    assert ds.kind == "ids"
    np.testing.assert_array_equal(ds.x_train[0], [2, 15, 23])  # rank + 1: 0 pad, 1 <unk>
    assert len(ds.x_test) == 2


def test_npz_padded_ids_and_features(tmp_path):
    p1 = str(tmp_path / "ids.npz")
    np.savez(p1, x_train=np.array([[3, 4, 0], [5, 0, 0]]), y_train=np.array([0, 1]))
    ds = fastgru.load_imdb_npz(p1)
    np.testing.assert_array_equal(ds.x_train[1], [5])
    p2 = str(tmp_path / "f.npz")
    np.savez(p2, x_train=np.zeros((4, 5, 2), np.float32), y_train=np.array([0, 1, 0, 1]))
    assert fastgru.load_imdb_npz(p2).kind == "features"


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_npz_refuses_code_in_pickles(tmp_path):
    arr = np.empty(1, dtype=object)
    arr[0] = _Evil()
    path = str(tmp_path / "evil.npz")
    np.savez(path, x_train=arr, y_train=np.array([0]))
    with pytest.raises(DataError, match="refusing"):
        fastgru.load_imdb_npz(path)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot read"):
        fastgru.load_imdb_npz(str(tmp_path / "junk.npz"))
    np.savez(str(tmp_path / "nokeys.npz"), a=np.zeros(2))
    with pytest.raises(DataError, match="x_train"):
        fastgru.load_imdb_npz(str(tmp_path / "nokeys.npz"))
    assert pickle  # the module under test uses pickle only through the restricted unpickler


def test_digits_sequences():
    pytest.importorskip("sklearn")
    ds = fastgru.load_digits_sequences()
    assert ds.x_train.shape == (1797, 8, 8) and ds.x_train.dtype == np.float32
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    assert set(np.unique(ds.y_train)) == set(range(10))


def _ragged(*seqs):
    obj = np.empty(len(seqs), dtype=object)
    obj[:] = [list(s) for s in seqs]
    return obj


_Y = np.arange(40) % 2
_IDS = np.ones((40, 5), np.int64)


@pytest.mark.parametrize("arrays,match", [
    (dict(x_train=np.ones((20, 5), np.int64), y_train=np.arange(10) % 2),
     "x_train has 20 samples but y_train has 10"),
    (dict(x_train=_IDS, y_train=_Y, x_test=_IDS[:10], y_test=_Y[:4]),
     "x_test has 10 samples but y_test has 4"),
    (dict(x_train=-np.ones((40, 5), np.int64), y_train=_Y), "negative token ids"),
    (dict(x_train=_ragged([3, 4], [5, -1]), y_train=np.array([0, 1])), "negative token ids"),
    (dict(x_train=_ragged(["a"], ["b"]), y_train=np.array([0, 1])), "integer word ranks"),
    (dict(x_train=_IDS, y_train=np.stack([_Y, _Y], 1)),
     r"y_train must hold one class label per sample, got shape \(40, 2\)"),
    (dict(x_train=np.full((40, 5, 3), np.nan, np.float32), y_train=_Y),
     "x_train contains NaN or infinity"),
    (dict(x_train=np.zeros((40, 5, 3), np.float32), y_train=_Y, x_test=_IDS, y_test=_Y),
     "x_test .* does not match x_train"),
    (dict(x_train=np.zeros((40, 5, 3), np.float32), y_train=_Y,
          x_test=np.zeros((40, 5, 2), np.float32), y_test=_Y), "does not match x_train"),
])
def test_npz_inconsistent_contents_are_data_errors(tmp_path, arrays, match):
    """Mismatched lengths used to train on truncated data; the rest crashed later, in fit."""
    path = str(tmp_path / "bad.npz")
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=match):
        fastgru.load_imdb_npz(path)


def test_npz_column_labels_are_one_per_sample(tmp_path):
    path = str(tmp_path / "col.npz")
    np.savez(path, x_train=_IDS, y_train=_Y[:, None])
    np.testing.assert_array_equal(fastgru.load_imdb_npz(path).y_train, _Y)
