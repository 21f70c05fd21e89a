"""`fastgru bench` and the runners behind it (fastgru.benchmarks): every implementation's runner
computes the same layer (outputs compared with the NumPy reference), training runners produce
input gradients, and the command prints a table and writes JSON records (tiny budget)."""

import json

import numpy as np
import pytest

from fastgru import benchmarks as bm
from fastgru import cli, cli_bench

SHAPE = (4, 3, 5, 8)  # T, B, I, H


def _y(out):
    """The output sequence (T, B, H) of a runner's result, whatever the implementation."""
    if isinstance(out, (tuple, list)):
        out = out[0]
    if hasattr(out, "detach"):
        out = out.detach().numpy()
    return np.asarray(out)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("impl", [i for i in bm.IMPLS if i != "reference"] + [bm.STEP_IMPL])
def test_inference_runners_agree_with_reference(cell, impl):
    shape = (1, 1, 5, 8) if impl == bm.STEP_IMPL else SHAPE
    ref = bm.make_runner("reference", cell, "inf", shape, 1)
    run = bm.make_runner(impl, cell, "inf", shape, 1)
    if run is None:
        pytest.skip(f"{impl} is not installed")
    y_ref = _y(ref())
    y = _y(run())
    if impl == bm.STEP_IMPL:  # one step: (B, H) state
        y_ref = y_ref[-1]
    np.testing.assert_allclose(y.reshape(y_ref.shape), y_ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("lengths", [None, "half-to-full"])
def test_training_runner_gives_input_gradients(cell, lengths):
    run = bm.make_runner("fastgru", cell, "train", SHAPE, 1, lengths=lengths)
    grads = run()
    assert grads["dx"].shape == SHAPE[:3] and np.isfinite(grads["dx"]).all()
    assert np.abs(grads["dw_hh"]).sum() > 0
    again = run()  # the constant dL/dy is reused: the same gradients
    np.testing.assert_array_equal(again["dx"], grads["dx"])


def test_bench_command_prints_table_and_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = cli.main(["bench", "--threads", "1", "--shapes", "S5", "--cells", "gru,lstm",
                   "--modes", "inf", "--impls", "fastgru,reference", "--budget", "0.01",
                   "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "SGEMM ceiling" in text and text.count("| S5 ") == 2
    records = json.loads(out.read_text())
    assert [r["impl"] for r in records].count("sgemm") == 1
    recs = [r for r in records if r["impl"] != "sgemm"]
    assert {(r["impl"], r["cell"]) for r in recs} == {("fastgru", "gru"), ("fastgru", "lstm"),
                                                      ("reference", "gru"),
                                                      ("reference", "lstm")}
    assert all(r["median_s"] > 0 and r["gflops"] > 0 for r in recs)


def test_bench_command_times_the_streaming_path(capsys):
    rc = cli.main(["bench", "--threads", "1", "--shapes", "S5", "--cells", "gru", "--modes",
                   "inf", "--impls", "fastgru,fastgru-step", "--budget", "0.01"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "fastgru-step" in text and text.count("| S5 ") == 1


def test_bench_both_duplicates_and_a_well_formed_table(capsys, monkeypatch):
    """--cells/--modes both as --help says; a repeated name timed once; every table row has
    as many cells as the header, with one implementation too."""
    rc = cli.main(["bench", "--threads", "1", "--shapes", "S5", "--cells", "both", "--modes",
                   "both", "--impls", "fastgru,fastgru", "--budget", "0.005"])
    assert rc == 0
    rows = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("|")]
    assert len(rows) == 2 + 4  # header, separator, {gru, lstm} x {inf, train}
    assert len({ln.count("|") for ln in rows}) == 1
    monkeypatch.setattr(cli_bench.bm, "available", lambda impl: False)
    assert cli.main(["bench", "--impls", "torch,onnxruntime", "--threads", "1"]) == 2
    assert "none of the implementations can run here" in capsys.readouterr().err
    assert cli.main(["bench", "--reference-max-flops", "-1"]) == 2
    assert "--reference-max-flops must be >= 0" in capsys.readouterr().err


def test_bench_command_rejects_bad_arguments(capsys):
    assert cli.main(["bench", "--threads", "0"]) != 0
    assert cli.main(["bench", "--shapes", "S9"]) != 0
    assert "S9" in capsys.readouterr().err
    assert cli.main(["bench", "--json", "/no/such/folder/b.json"]) == 2  # before measuring
    assert "--json '/no/such/folder/b.json': cannot write a file there" in \
        capsys.readouterr().err
    with pytest.raises(ValueError, match="lengths"):
        bm.make_runner("fastgru", "gru", "inf", SHAPE, 1, lengths="uniform")


@pytest.mark.parametrize("budget", ["nan", "inf", "-inf", "0"])
def test_bench_command_rejects_non_finite_budgets(capsys, budget):
    """nan and inf used to end in a traceback from int(nan) in bm.measure."""
    assert cli.main(["bench", f"--budget={budget}", "--shapes", "S5", "--threads", "1",
                     "--cells", "gru", "--modes", "inf", "--impls", "fastgru"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--budget must be a positive number of seconds" in err[0], err
    with pytest.raises(ValueError, match="budget"):
        bm.measure(lambda: None, budget=float(budget))


def test_report_script_has_usage():
    """bench/report.py --help used to be read as the JSON file's path."""
    import os
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(__file__), os.pardir, "bench", "report.py")
    if not os.path.isfile(script):  # wheel tests: bench/ is not among the test sources
        pytest.skip("bench/report.py is not here")
    src = os.path.dirname(os.path.dirname(os.path.abspath(bm.__file__)))
    env = dict(os.environ, PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 0 and "usage: report.py" in r.stdout, r.stderr
    r = subprocess.run([sys.executable, script, "/no/such.json"], capture_output=True,
                       text=True, env=env, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "cannot read '/no/such.json'" in r.stderr
