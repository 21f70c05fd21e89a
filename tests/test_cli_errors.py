"""The command line's contract beyond `fastgru train`'s options: bad data files end in one line
and exit status 2, a closed output pipe ends quietly, the default output folder is named after
the data, and the example scripts report bad data as the command does."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

import fastgru
from fastgru.cli import main

# the fastgru these tests import (a source tree built in place, or an installed wheel)
SRC = os.path.dirname(os.path.dirname(os.path.abspath(fastgru.__file__)))
ROOT = os.path.join(os.path.dirname(__file__), os.pardir)
SMALL = ["--epochs", "1", "--hidden", "8", "--embed-dim", "8"]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _tsv(path, n=60):
    texts, y = fastgru.make_sentiment_texts(n, seed=0)
    path.write_text("".join(f"{t}\t{v}\n" for t, v in zip(texts, y, strict=True)))
    return str(path)


_Y = np.arange(40) % 2
_IDS = np.ones((40, 5), np.int64)


@pytest.mark.parametrize("arrays,match", [
    (dict(x_train=np.ones((20, 5), np.int64), y_train=np.arange(10) % 2),
     "x_train has 20 samples but y_train has 10"),
    (dict(x_train=-np.ones((20, 5), np.int64), y_train=np.arange(20) % 2),
     "negative token ids"),
    (dict(x_train=_IDS, y_train=_Y, x_test=_IDS[:10], y_test=_Y[:4]),
     "x_test has 10 samples but y_test has 4"),
    (dict(x_train=_IDS, y_train=np.stack([_Y, _Y], 1)), "one class label per sample"),
    (dict(x_train=np.full((40, 5, 3), np.nan, np.float32), y_train=_Y), "NaN or infinity"),
])
def test_bad_npz_contents_are_one_line_errors(tmp_path, capsys, arrays, match):
    """These trained on truncated data or ended in a traceback from fit (exit status 1)."""
    path = str(tmp_path / "bad.npz")
    np.savez(path, **arrays)
    rc = main(["train", "--data", path, "--out", str(tmp_path / "out"), "--verbose", "0"]
              + SMALL)
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastgru train: error:"), err
    assert match in lines[0]


@pytest.mark.parametrize("argv", [["info"], ["train", "--data", "{tsv}", "--verbose", "2",
                                              "--out", "{out}"] + SMALL])
def test_closed_output_pipe_ends_quietly(tmp_path, argv):
    """`fastgru info | head -1`: the reader is gone before the output is written."""
    argv = [a.format(tsv=_tsv(tmp_path / "d.tsv"), out=tmp_path / "out") for a in argv]
    r_fd, w_fd = os.pipe()
    os.close(r_fd)  # every write to the pipe fails with EPIPE
    try:
        r = subprocess.run([sys.executable, "-m", "fastgru.cli"] + argv, stdout=w_fd,
                           stderr=subprocess.PIPE, text=True, env=_env(), timeout=120)
    finally:
        os.close(w_fd)
    assert "Traceback" not in r.stderr and "BrokenPipeError" not in r.stderr, r.stderr
    assert r.returncode == 1, r.stderr


def test_default_out_folder_is_named_after_the_data(tmp_path, monkeypatch, capsys):
    """runs/<data name>: two TSV data sets used to share (and overwrite) runs/tsv."""
    monkeypatch.chdir(tmp_path)
    os.mkdir("sets")
    for name in ("reviews", "tweets"):
        assert main(["train", "--data", _tsv(tmp_path / "sets" / f"{name}.tsv"),
                     "--verbose", "0"] + SMALL) == 0
    assert sorted(os.listdir("runs")) == ["reviews", "tweets"]
    assert os.path.isfile(os.path.join("runs", "reviews", "model.npz"))
    folder = tmp_path / "mr"
    folder.mkdir()
    texts, y = fastgru.make_sentiment_texts(60, seed=1)
    for lab, fname in ((1, "rt-polarity.pos"), (0, "rt-polarity.neg")):
        (folder / fname).write_text("\n".join(t for t, v in zip(texts, y, strict=True)
                                              if v == lab))
    assert main(["train", "--data", str(folder) + os.sep, "--verbose", "0"] + SMALL) == 0
    assert os.path.isfile(os.path.join("runs", "mr", "model.npz"))
    capsys.readouterr()


def test_training_line_says_epoch_in_the_singular_and_matches_the_docs(tmp_path, capsys):
    line = re.compile(r"training: (1 epoch|\d+ epochs), batch \d+, \d+ threads?, "
                      r"Adam lr [0-9.e-]+, backend fast")
    assert main(["train", "--data", _tsv(tmp_path / "d.tsv"), "--out", str(tmp_path / "o"),
                 "--verbose", "2", "--threads", "1"] + SMALL) == 0
    out = [s for s in capsys.readouterr().out.splitlines() if s.startswith("training:")]
    assert out and line.fullmatch(out[0]) and out[0].startswith("training: 1 epoch,"), out
    doc = os.path.join(ROOT, "docs", "training.md")
    if not os.path.isfile(doc):  # wheel tests: docs/ is not among the test sources
        return
    with open(doc, encoding="utf-8") as f:
        shown = [s.strip() for s in f if s.startswith("training: ")]
    assert shown and all(line.fullmatch(s) for s in shown), shown


def test_sentiment_example_reports_bad_data_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "sentiment.py"),
                        "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, env=_env(), timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not exist" in lines[0], r.stderr


def test_mr_format_given_a_file_says_it_reads_a_folder(tmp_path, capsys):
    data = _tsv(tmp_path / "one.tsv")
    rc = main(["train", "--data", data, "--format", "mr", "--out", str(tmp_path / "o")] + SMALL)
    assert rc == 2
    err = capsys.readouterr().err
    assert "the MR format reads a folder" in err and "rt-polarity.neg" in err


def test_resume_with_fewer_epochs_than_done_says_nothing_is_left(tmp_path, capsys):
    data, out = _tsv(tmp_path / "d.tsv"), str(tmp_path / "o")
    assert main(["train", "--data", data, "--out", out, "--epochs", "2", "--hidden", "8",
                 "--embed-dim", "8", "--verbose", "1"]) == 0
    capsys.readouterr()
    assert main(["train", "--data", data, "--out", out, "--epochs", "1", "--hidden", "8",
                 "--embed-dim", "8", "--verbose", "1", "--resume"]) == 0
    said = capsys.readouterr().out
    assert "the checkpoint already holds 2 epochs (--epochs 1): nothing left to train" in said
