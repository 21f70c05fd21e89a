"""`fastgru train` through fastgru.cli.main: outputs, formats, resume, and one-line errors."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import fastgru
from fastgru.cli import main

SMALL = ["--epochs", "2", "--hidden", "8", "--embed-dim", "8", "--verbose", "0"]


def write_tsv(path, n=200, seed=0, labels=("neg", "pos"), sep="\t", header=True):
    texts, y = fastgru.make_sentiment_texts(n, seed=seed)
    lines = ([f"text{sep}label"] if header else []) + \
        [f"{t.replace(',', ' ') if sep == ',' else t}{sep}{labels[v]}"
         for t, v in zip(texts, y, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def one_line_error(capsys, argv, match):
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastgru train: error:"), err
    assert "Traceback" not in err
    assert match in lines[0], lines[0]


def test_tsv_run_writes_every_output(tmp_path, capsys):
    data = write_tsv(tmp_path / "d.tsv")
    out = tmp_path / "out"
    assert main(["train", "--data", data, "--out", str(out)] + SMALL) == 0
    names = set(os.listdir(out))
    assert {"model.npz", "checkpoint.npz", "vocab.json", "history.json",
            "metrics.json"} <= names
    if fastgru.plotting.HAVE_MATPLOTLIB:
        assert "curves.png" in names
    hist = json.loads((out / "history.json").read_text())
    assert list(hist) == ["loss", "accuracy", "val_loss", "val_accuracy"]
    assert all(len(v) == 2 for v in hist.values())
    m = json.loads((out / "metrics.json").read_text())
    for k in ("test_accuracy", "test_loss", "train_seconds", "samples_per_second"):
        assert isinstance(m[k], float), k
    assert m["n_train"] == 180 and m["n_test"] == 20  # the stratified 90/10 default
    assert m["classes"] == ["neg", "pos"]
    model = fastgru.load_model(str(out / "model.npz"))
    assert model.classes_ == ["neg", "pos"]
    assert set(model.predict_classes(["good superb", "awful dull"])) <= {"neg", "pos"}
    assert capsys.readouterr().out == ""  # --verbose 0


def test_default_digits_run_reaches_target(tmp_path, capsys):
    pytest.importorskip("sklearn")
    out = tmp_path / "digits"
    assert main(["train", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "digits: 1,797 sequences of 8 steps x 8 features, 10 classes" in text
    assert "test_accuracy:" in text
    m = json.loads((out / "metrics.json").read_text())
    assert m["test_accuracy"] >= 0.95
    assert m["train_seconds"] > 0  # recorded; speed is measured in bench/, never asserted here
    assert not (out / "vocab.json").exists()


def test_resume_continues_exactly(tmp_path, capsys):
    data = write_tsv(tmp_path / "d.tsv", n=150)
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    opts = ["--hidden", "8", "--embed-dim", "8", "--verbose", "0", "--dropout", "0.2"]
    assert main(["train", "--data", data, "--out", a, "--epochs", "3"] + opts) == 0
    assert main(["train", "--data", data, "--out", b, "--epochs", "1"] + opts) == 0
    assert main(["train", "--data", data, "--out", b, "--epochs", "3", "--resume"] + opts) == 0
    ha = json.loads(open(os.path.join(a, "history.json")).read())
    hb = json.loads(open(os.path.join(b, "history.json")).read())
    assert ha == hb and len(ha["loss"]) == 3
    ma, mb = fastgru.load_model(a + "/model.npz"), fastgru.load_model(b + "/model.npz")
    for k, v in ma.get_weights().items():
        np.testing.assert_array_equal(v, mb.get_weights()[k])
    # a mismatched model, seed, split or dtype cannot resume: one clear line naming it
    one_line_error(capsys, ["train", "--data", data, "--out", b, "--epochs", "4", "--resume",
                            "--hidden", "9", "--embed-dim", "8", "--verbose", "0"],
                   "hidden 8 (now 9)")
    for extra, said in ((["--seed", "5"], "seed 0 (now 5)"),
                        (["--dtype", "float64"], "dtype 'float32' (now 'float64')"),
                        (["--test-split", "0.2"], "test_split 0.1 (now 0.2)")):
        one_line_error(capsys, ["train", "--data", data, "--out", b, "--epochs", "4",
                                "--resume"] + opts + extra,
                       "--resume: the interrupted run used other options: " + said)
    # --resume without a checkpoint creates nothing
    one_line_error(capsys, ["train", "--data", data, "--out", str(tmp_path / "none"),
                            "--resume"] + opts, "no checkpoint")
    assert not (tmp_path / "none").exists()


def test_formats_csv_npz_aclimdb_and_guessing(tmp_path):
    csv = write_tsv(tmp_path / "d.csv", sep=",", labels=("0", "1"))
    assert main(["train", "--data", csv, "--out", str(tmp_path / "c")] + SMALL) == 0
    obj = np.empty(60, dtype=object)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    obj[:] = [list(rng.integers(1, 50, rng.integers(3, 9)) + (100 if l else 200)) for l in y]
    npz = str(tmp_path / "imdb.npz")
    np.savez(npz, x_train=obj[:40], y_train=y[:40], x_test=obj[40:], y_test=y[40:])
    assert main(["train", "--data", npz, "--format", "npz", "--out", str(tmp_path / "n")]
                + SMALL) == 0
    m = json.loads((tmp_path / "n" / "metrics.json").read_text())
    assert m["n_train"] == 40 and m["n_test"] == 20  # the file's own test part
    root = tmp_path / "aclImdb"
    for part in ("train", "test"):
        for sub in ("pos", "neg"):
            os.makedirs(root / part / sub)
            for i in range(6):
                (root / part / sub / f"{i}.txt").write_text(
                    f"{'great superb' if sub == 'pos' else 'awful dull'} movie {i}")
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "i")] + SMALL) == 0


@pytest.mark.parametrize("argv,match", [
    (["--data", "/no/such/path"], "does not exist"),
    (["--data", "{tsv}", "--format", "xml"], "unknown format 'xml'"),
    (["--data", "{dir}"], "cannot tell the format"),
    (["--format", "mr"], "--format needs --data"),
    (["--data", "{empty}", "--format", "tsv"], "is empty"),
    (["--data", "{single}"], "single class"),
    (["--data", "{badlabel}"], "bad class label"),
    (["--data", "{badfields}"], "expected 2 fields"),
    (["--data", "{tsv}", "--epochs", "abc"], "--epochs must be an integer"),
    (["--data", "{tsv}", "--lr", "-1"], "--lr must be in"),
    (["--data", "{tsv}", "--test-split", "1.5"], "--test-split must be in"),
    (["--data", "{tsv}", "--cell", "rnn"], "--cell must be one of gru, lstm"),
    (["--data", "{tsv}", "--dropout", "1"], "--dropout must be in"),
    (["--data", "{tsv}", "--threads", "0"], "--threads must be in"),
    (["--data", "{tsv}", "--resume", "--out", "{dir}/fresh"], "no checkpoint"),
    (["--data", "{tsv}", "--patience", "2"], "--patience needs --val-split"),
    (["--data", "{mrbad}", "--format", "mr"], "rt-polarity.neg"),
    (["--data", "{npzbad}"], "cannot read"),
    (["--data", "{tsv}", "--out", "{tsv}"], "is not a folder"),
    (["--data", "{swapped}"], "the texts may be in the label column"),
    (["--data", "{tsv}", "--min-freq", "100000"], "lower --min-freq"),
    (["--data", "{tsv}", "--layers", "10000000"], "--layers must be in [1, 64]"),
    (["--data", "{tsv}", "--hidden", "100000000"], "--hidden must be in [1, 65536]"),
    (["--data", "{tsv}", "--max-len", "99999999999999999999"], "--max-len must be in"),
    (["--data", "{cr}"], "cr.tsv:3: expected 2 fields (text tab label), got 1"),
    (["--data", "{tsv}", "--lr", "1e39", "--epochs", "1"], "the loss became"),
])
def test_user_mistakes_are_one_line_errors(tmp_path, capsys, argv, match):
    d = tmp_path / "dir"
    d.mkdir()
    files = {"tsv": write_tsv(tmp_path / "ok.tsv", n=40), "dir": str(d)}
    (tmp_path / "empty.tsv").write_text("")
    files["empty"] = str(tmp_path / "empty.tsv")
    (tmp_path / "single.tsv").write_text("good\tpos\nfine\tpos\n")
    files["single"] = str(tmp_path / "single.tsv")
    (tmp_path / "badlabel.tsv").write_text("good\t1\nbad\t0.5\n")
    files["badlabel"] = str(tmp_path / "badlabel.tsv")
    (tmp_path / "badfields.tsv").write_text("good\t1\textra\n")
    files["badfields"] = str(tmp_path / "badfields.tsv")
    mr = tmp_path / "mr"
    mr.mkdir()
    (mr / "rt-polarity.pos").write_text("good\n")
    files["mrbad"] = str(mr)
    (tmp_path / "swapped.tsv").write_text("".join(f"{i % 2}\treview number {i}\n"
                                                  for i in range(60)))
    files["swapped"] = str(tmp_path / "swapped.tsv")
    (tmp_path / "cr.tsv").write_bytes(b"text\tlabel\ngood film\tpos\ngreat\rfilm\tpos\n")
    files["cr"] = str(tmp_path / "cr.tsv")
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    files["npzbad"] = str(tmp_path / "bad.npz")
    argv = [a.format(**files) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    one_line_error(capsys, ["train"] + argv + ["--verbose", "0"], match)


def test_verify_and_reference_backend_flags(tmp_path):
    data = write_tsv(tmp_path / "d.tsv", n=120)
    out = tmp_path / "v"
    assert main(["train", "--data", data, "--out", str(out), "--verify"] + SMALL) == 0
    v = json.loads((out / "metrics.json").read_text())["verification"]
    assert v["batches_checked"] == 1 and v["worst_error"] < v["tolerance"]
    assert main(["train", "--data", data, "--out", str(out), "--verify", "2"] + SMALL) == 0
    v = json.loads((out / "metrics.json").read_text())["verification"]
    assert v["batches_checked"] == 4  # batches 0, 2, 4, 6 of 2 epochs x 4 batches
    assert main(["train", "--data", data, "--out", str(tmp_path / "r"), "--backend",
                 "reference", "--cell", "lstm", "--threads", "-1"] + SMALL) == 0
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["backend"] == "reference" and m["test_accuracy"] is not None
    # --threads -1 is the default: all physical cores, as the layers' n_threads=-1
    assert m["threads"] == fastgru._threads.default_n_threads()


def test_module_entry_point_reports_user_errors_in_one_line(tmp_path):
    """`python -m fastgru.cli` behaves like the console script: one line, exit status 2."""
    import subprocess
    import sys

    env = dict(os.environ)
    src = os.path.dirname(os.path.dirname(fastgru.__file__))  # the tree fastgru came from
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-m", "fastgru.cli", "train", "--data",
                        str(tmp_path / "nowhere")], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 2
    assert "does not exist" in r.stderr and "Traceback" not in r.stderr


def test_val_split_is_stratified_on_class_sorted_data(tmp_path, monkeypatch):
    """MR lists every negative review, then every positive one: the validation part must hold
    both classes in proportion (the last fraction, Keras' validation_split, held one class)."""
    texts, y = fastgru.make_sentiment_texts(200, seed=0)
    order = np.argsort(y, kind="stable")
    path = tmp_path / "sorted.tsv"
    path.write_text("text\tlabel\n" + "".join(f"{texts[i]}\t{'pos' if y[i] else 'neg'}\n"
                                               for i in order))
    seen = {}
    real_fit = fastgru.Sequential.fit

    def spy(self, x, y=None, **kw):
        seen.update(kw)
        return real_fit(self, x, y, **kw)

    monkeypatch.setattr(fastgru.Sequential, "fit", spy)
    assert main(["train", "--data", str(path), "--out", str(tmp_path / "o"), "--val-split",
                 "0.2", "--patience", "1"] + SMALL) == 0
    assert "validation_split" not in seen
    y_val = np.asarray(seen["validation_data"][1])
    counts = {c: int((y_val == c).sum()) for c in ("neg", "pos")}
    n_val = len(y_val)
    assert n_val == 36 and min(counts.values()) >= 0.4 * n_val, counts  # 20% of 180


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root may write anywhere")
def test_unwritable_out_fails_before_training(tmp_path, capsys):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    try:
        one_line_error(capsys, ["train", "--data", write_tsv(tmp_path / "d.tsv", n=40),
                                "--out", str(out)] + SMALL, "is not writable")
    finally:
        out.chmod(0o700)


def test_early_stopping_is_reported(tmp_path, capsys):
    """An early stop and the restored epoch are said, and metrics.json records them."""
    texts, y = fastgru.make_sentiment_texts(200, seed=1)
    path = tmp_path / "d.tsv"
    path.write_text("".join(f"{t}\t{v}\n" for t, v in zip(texts, y, strict=True)))
    out = tmp_path / "o"
    # a learning rate this high makes val_loss worsen after an early best
    assert main(["train", "--data", str(path), "--out", str(out), "--val-split", "0.2",
                 "--patience", "1", "--epochs", "30", "--lr", "0.5", "--hidden", "8",
                 "--embed-dim", "8", "--verbose", "2"]) == 0
    text = capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    assert m["stopped_early"] and m["epochs"] < 30
    assert f"stopped after epoch {m['epochs']}" in text
    if m["best_epoch"] < m["epochs"]:
        assert f"restored the weights of epoch {m['best_epoch']}" in text


def test_a_full_disk_and_max_len_far_above_the_data(tmp_path, capsys, monkeypatch):
    """--max-len caps the padded width, it does not set it (N x 100000 would be gigabytes);
    a write error (a full disk) is one line, exit 2."""
    import errno

    data = write_tsv(tmp_path / "d.tsv", n=60)
    widths = []
    real = fastgru.Vocabulary.encode

    def spy(self, texts, max_len=None, **kw):
        out = real(self, texts, max_len=max_len, **kw)
        widths.append(out[0].shape[1])  # the padded width the run allocates
        return out

    monkeypatch.setattr(fastgru.Vocabulary, "encode", spy)
    assert main(["train", "--data", data, "--out", str(tmp_path / "a"), "--max-len",
                 "5000000"] + SMALL) == 0
    longest = max(len(fastgru.Tokenizer()(t)) for t in fastgru.make_sentiment_texts(60)[0])
    assert widths and set(widths) == {longest}

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "b" / "x"))

    monkeypatch.setattr(fastgru.checkpoint, "atomic_write_bytes", full)
    monkeypatch.setattr(fastgru.checkpoint, "save_arrays", full)
    rc = main(["train", "--data", data, "--out", str(tmp_path / "b")] + SMALL)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "cannot write" in err[0] and "No space left on device" in err[0]
