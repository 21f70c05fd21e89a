"""Data-parallel training over MPI (fastgru.distributed, issue 7).

- N steps on 2 ranks with per-rank batch b give the parameters (and the History) of 1 process
  with batch 2b, within float rounding: float64 and float32, an Embedding with lazy Adam rows
  and a dense one,
  LSTM and GRU, per-step targets with padding (token-count weighting), a last batch that does
  not split evenly (and one that leaves rank 1 nothing), gradient clipping, weight decay,
  validation; one Allreduce per step. A rank seeded otherwise ends with rank 0's result (the
  start is broadcast); BackupAndRestore and ModelCheckpoint write on rank 0 only.
- `mpiexec -n 2 python -m fastgru.cli train --distributed` writes its outputs once (rank 0),
  resumes from rank 0's checkpoint and equals the one-process run with twice the batch; a rank
  that fails before training (its data missing) stops every rank, rank 0 naming it.
- A rank that fails mid-run (an exception, a silent exit, SIGKILL) ends the whole job quickly
  with a clear message; ranks that disagree on the data stop with an error before training.
- Without mpi4py, fastgru works and --distributed says what to install.

dropout is 0 in the equivalence runs: masks are drawn per rank. The MPI runs are child
processes (`mpiexec -n 2 python ...`, next to sys.executable or on PATH) under a timeout, in
their own process group that is killed on timeout, so a hang fails a test instead of blocking
CI; they are skipped when mpi4py or mpiexec is missing.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import fastgru
from fastgru import distributed as D
from fastgru.cli import main


def _mpiexec():
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return here if os.access(here, os.X_OK) else shutil.which("mpiexec")


MPIEXEC = _mpiexec()
HAVE_MPI4PY = importlib.util.find_spec("mpi4py") is not None
requires_mpi = pytest.mark.skipif(not (HAVE_MPI4PY and MPIEXEC),
                                  reason="needs mpi4py and mpiexec (pip install 'fastgru[mpi]')")
LAUNCHER_VARS = ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK")


def child_env(threads="1"):
    """The children import the same fastgru as this process (source tree or installed) and run
    one thread per rank unless told otherwise (robust on a busy CI machine)."""
    env = dict(os.environ)
    pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(fastgru.__file__)))
    paths = [pkg_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    for k in LAUNCHER_VARS:
        env.pop(k, None)
    env.pop("FASTGRU_NUM_THREADS", None)
    # Open MPI's mpiexec (when it is the one found): allow root (CI containers) and 2 ranks on
    # a 1-core machine; MPICH ignores these
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1",
               PRTE_MCA_rmaps_default_mapping_policy=":oversubscribe")
    if threads is not None:
        env.update(FASTGRU_NUM_THREADS=threads, OMP_NUM_THREADS=threads,
                   OPENBLAS_NUM_THREADS=threads)
    return env


def mpirun(args, timeout, ranks=2, env=None, cwd=None, mpmd=None):
    """Run `mpiexec -n ranks python args...` (with mpmd, a list of argument lists: one rank
    for each, `mpiexec -n 1 python a... : -n 1 python b...`); returns (returncode, stdout,
    stderr, seconds). On timeout the whole process group (mpiexec, its proxies and the ranks)
    is killed and the test fails."""
    if mpmd is None:
        cmd = [MPIEXEC, "-n", str(ranks), sys.executable] + [str(a) for a in args]
    else:
        cmd = [MPIEXEC]
        for i, a in enumerate(mpmd):
            cmd += ([":"] if i else []) + ["-n", "1", sys.executable] + [str(v) for v in a]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env or child_env(), cwd=cwd, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{' '.join(cmd)} did not end within {timeout} s (a hang)\n"
                    f"stdout:\n{out[-3000:]}\nstderr:\n{err[-3000:]}")
    return proc.returncode, out, err, time.monotonic() - t0


# ------------------------------------------------------------------------------------------
# the training cases, run by the 2-rank worker and by this process with twice the batch

CASES = '''
import numpy as np
import fastgru


def text_data(n, seed):
    texts, y = fastgru.make_sentiment_texts(n, seed=seed)
    vocab = fastgru.Vocabulary.build(texts)
    x, _ = vocab.encode(texts)
    return len(vocab), x, y


def gru_float64(seed=3):
    # 203 samples, global batch 16: the last batch has 11 (6 + 5); clipping on the global norm
    V, x, y = text_data(203, 1)
    m = fastgru.TextClassifier(V, embed_dim=8, hidden_size=8, dropout=0.0, seed=seed,
                               dtype="float64")
    # AUC and Precision: their confusion counts, not only totals and counts, are summed
    m.compile(fastgru.Adam(2e-2, global_clipnorm=0.5), m.loss,
              ["accuracy", "auc", fastgru.metrics.Precision(thresholds=0.4)])
    return m, x, y, dict(epochs=2, validation_data=(x[:40], y[:40]))


def dense_embedding_float64():
    # a dense Embedding (sparse_embedding=False): its whole gradient travels, and momentum
    # moves rows that a batch misses, on every rank as in one process
    V, x, y = text_data(120, 3)
    m = fastgru.TextClassifier(V, embed_dim=8, hidden_size=8, dropout=0.0, seed=5,
                               dtype="float64", sparse_embedding=False)
    m.compile(fastgru.SGD(0.5, momentum=0.9), m.loss, ["accuracy"])
    return m, x, y, dict(epochs=2)


def lstm_float32():
    # 193 samples: the last global batch holds 1 sample, so rank 1 has none
    V, x, y = text_data(193, 2)
    m = fastgru.TextClassifier(V, embed_dim=8, hidden_size=8, cell="lstm", dropout=0.0,
                               pooling="mean", seed=4, dtype="float32")
    m.compile(fastgru.AdamW(2e-2, weight_decay=0.01), m.loss, ["accuracy"])
    return m, x, y, dict(epochs=2)


def regressor_float64():
    # per-step targets, ragged lengths: each shard's loss is a mean over its valid steps
    rng = np.random.default_rng(5)
    L = rng.integers(3, 15, 101)
    xs = [rng.standard_normal((n, 2)) for n in L]
    ys = [np.cumsum(a[:, :1], axis=0) * 0.3 for a in xs]
    m = fastgru.SequenceRegressor(2, hidden_size=8, dtype="float64", seed=6)
    m.compile(fastgru.SGD(0.05, momentum=0.9, nesterov=True), "mse", ["mae", "rmse"])
    return m, xs, ys, dict(epochs=2, validation_split=0.2)


def multiclass_float64():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((90, 6, 4))
    y = (x[:, :, 0].sum(1) > 0).astype(int) + (x[:, 0, 1] > 1)
    m = fastgru.SequenceClassifier(4, hidden_size=8, num_layers=2, num_classes=3,
                                   dtype="float64", seed=8, learning_rate=1e-2)
    return m, x, y, dict(epochs=2, bucket=False)


# name: (builder, per-rank batch size, steps per epoch on 2 ranks, validation?)
CASES = {"gru_float64": (gru_float64, 8, 13, True),
         "lstm_float32": (lstm_float32, 8, 13, False),
         "dense_embedding_float64": (dense_embedding_float64, 8, 8, False),
         "regressor_float64": (regressor_float64, 6, 7, True),
         "multiclass_float64": (multiclass_float64, 5, 9, False)}
'''

WORKER = '''
import json, os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np
from mpi4py import MPI
import cases


class CountingComm:
    """MPI.COMM_WORLD, counting the Allreduce calls that fit makes."""

    def __init__(self, comm):
        self.comm, self.allreduces = comm, 0

    def Allreduce(self, *args, **kw):
        self.allreduces += 1
        return self.comm.Allreduce(*args, **kw)

    def __getattr__(self, name):
        return getattr(self.comm, name)


rank = MPI.COMM_WORLD.Get_rank()
where = os.path.dirname(os.path.abspath(__file__))
report = {}
for name, (build, b, _, _) in cases.CASES.items():
    model, x, y, kw = build()
    comm = CountingComm(MPI.COMM_WORLD)
    h = model.fit(x, y, batch_size=b, verbose=0, distributed=comm, **kw)
    if rank == 0:
        np.savez(os.path.join(where, name + ".npz"), **model.get_weights())
    report[name] = {"history": h.history, "allreduces": comm.allreduces}

# rank 1 starts from other weights and another shuffling generator: rank 0's are broadcast, so
# the result is rank 0's run; the file-writing callbacks run on rank 0 only
import fastgru
model, x, y, kw = cases.gru_float64(seed=3 + 100 * rank)
cbs = [fastgru.BackupAndRestore(os.path.join(where, f"backup{rank}.npz"), delete_checkpoint=False),
       fastgru.ModelCheckpoint(os.path.join(where, f"best{rank}.npz"))]
model.fit(x, y, batch_size=8, verbose=0, distributed=True, callbacks=cbs, **kw)
if rank == 0:
    np.savez(os.path.join(where, "broadcast.npz"), **model.get_weights())
with open(os.path.join(where, f"rank{rank}.json"), "w") as f:
    json.dump(report, f)
'''


def load_cases(folder):
    path = folder / "cases.py"
    path.write_text(CASES)
    spec = importlib.util.spec_from_file_location("fastgru_dist_cases", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@requires_mpi
def test_two_ranks_equal_one_process_with_twice_the_batch(tmp_path):
    cases = load_cases(tmp_path)
    (tmp_path / "worker.py").write_text(WORKER)
    rc, out, err, secs = mpirun([tmp_path / "worker.py"], timeout=120)
    assert rc == 0, err[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    one = {}
    for name, (build, b, steps, has_val) in cases.CASES.items():
        model, x, y, kw = build()
        init = model.get_weights()
        h = model.fit(x, y, batch_size=2 * b, verbose=0, **kw)
        dist = np.load(tmp_path / f"{name}.npz")
        f64 = model.dtype == np.float64
        diff = max(float(np.max(np.abs(dist[k] - v))) for k, v in model.get_weights().items())
        moved = max(float(np.max(np.abs(v - init[k]))) for k, v in model.get_weights().items())
        assert moved > 0.05, name  # the runs trained for real
        assert diff < (1e-11 if f64 else 2e-5), (name, diff)
        print(f"DIFF {name}: {diff:.3g} (moved {moved:.3g})")
        one[name] = model.get_weights()
        for r in (0, 1):  # every rank's History is the global one
            hist = ranks[r][name]["history"]
            assert list(hist) == list(h.history), name
            for k, v in h.history.items():
                np.testing.assert_allclose(hist[k], v, rtol=1e-9 if f64 else 1e-4,
                                           atol=1e-12 if f64 else 1e-5, err_msg=f"{name} {k}")
            # one fused Allreduce per step, plus one per epoch for the logs (and validation)
            epochs = kw["epochs"]
            assert ranks[r][name]["allreduces"] == epochs * (steps + 1 + has_val), name
    # parameters and the training generator come from rank 0 (rank 1 was seeded otherwise)
    dist = np.load(tmp_path / "broadcast.npz")
    ref = one["gru_float64"]
    assert max(float(np.max(np.abs(dist[k] - v))) for k, v in ref.items()) < 1e-11
    # only rank 0 ran BackupAndRestore and ModelCheckpoint
    assert (tmp_path / "backup0.npz").is_file() and (tmp_path / "best0.npz").is_file()
    assert not (tmp_path / "backup1.npz").exists() and not (tmp_path / "best1.npz").exists()


# ------------------------------------------------------------------------------------------
# the command line


def write_tsv(path, n=150, seed=0):
    texts, y = fastgru.make_sentiment_texts(n, seed=seed)
    path.write_text("text\tlabel\n" + "".join(f"{t}\t{'pos' if v else 'neg'}\n"
                                               for t, v in zip(texts, y, strict=True)))
    return str(path)


CLI_OPTS = ["--hidden", "8", "--embed-dim", "8", "--dropout", "0", "--dtype", "float64",
            "--lr", "0.01", "--verbose", "2"]


@requires_mpi
def test_cli_distributed_resume_writes_once_and_equals_one_process(tmp_path, capsys,
                                                                    monkeypatch):
    data = write_tsv(tmp_path / "d.tsv")
    out = tmp_path / "dist"
    train = ["-m", "fastgru.cli", "train", "--distributed", "--data", data, "--out", out,
             "--batch-size", "8"] + CLI_OPTS
    env = child_env(threads=None)  # the default policy: the node's cores shared by the ranks
    rc, so, se, _ = mpirun(train + ["--epochs", "1"], timeout=120, env=env)
    assert rc == 0, se[-3000:]
    assert so.count("Epoch 1/1") == 1 and so.count("wrote ") == 1, so  # rank 0 alone prints
    assert "per rank x 2 = 16 per step" in so, so
    rc, so, se, _ = mpirun(train + ["--epochs", "2", "--resume"], timeout=120, env=env)
    assert rc == 0, se[-3000:]
    assert "Epoch 1/2" not in so and so.count("Epoch 2/2") == 1, so
    names = set(os.listdir(out))
    assert {"model.npz", "checkpoint.npz", "vocab.json", "history.json",
            "metrics.json"} <= names
    assert not [n for n in names if n.startswith(".tmp-")], names  # atomic writes only
    m = json.loads((out / "metrics.json").read_text())
    d = m["distributed"]
    assert d["ranks"] == 2 and d["global_batch_size"] == 16 and d["batch_size_per_rank"] == 8
    from fastgru._threads import physical_cores

    assert d["threads_per_rank"] * 2 <= max(2, physical_cores())  # never oversubscribed
    # one process, batch 16, straight through 2 epochs
    for k in LAUNCHER_VARS:
        monkeypatch.delenv(k, raising=False)
    one = tmp_path / "one"
    assert main(["train", "--data", data, "--out", str(one), "--batch-size", "16",
                 "--epochs", "2"] + CLI_OPTS) == 0
    capsys.readouterr()
    a = fastgru.load_model(str(out / "model.npz")).get_weights()
    b = fastgru.load_model(str(one / "model.npz")).get_weights()
    assert max(float(np.max(np.abs(a[k] - b[k]))) for k in a) < 1e-11
    ha = json.loads((out / "history.json").read_text())
    hb = json.loads((one / "history.json").read_text())
    assert list(ha) == list(hb)
    for k in ha:
        np.testing.assert_allclose(ha[k], hb[k], rtol=1e-9)
    mb = json.loads((one / "metrics.json").read_text())
    assert m["test_accuracy"] == pytest.approx(mb["test_accuracy"])
    assert m["test_loss"] == pytest.approx(mb["test_loss"], rel=1e-9)


@requires_mpi
def test_cli_a_rank_failing_before_training_stops_every_rank(tmp_path):
    data = write_tsv(tmp_path / "d.tsv", n=60)
    train = ["-m", "fastgru.cli", "train", "--distributed", "--out", tmp_path / "o",
             "--epochs", "1", "--verbose", "0"]
    # rank 1 alone misses its data (as on a node without the shared filesystem)
    rc, so, se, secs = mpirun(None, timeout=60, mpmd=[
        train + ["--data", data], train + ["--data", tmp_path / "missing.tsv"]])
    assert rc != 0, (so, se)
    lines = [s for s in se.splitlines() if "error" in s]
    assert len(lines) == 1, se  # rank 0 reports, naming the rank that failed and why
    assert "rank 1 failed before training" in lines[0] and "missing.tsv" in lines[0], se
    assert not (tmp_path / "o" / "model.npz").exists()


# ------------------------------------------------------------------------------------------
# failures

FAILING = '''
import os, signal, sys, time
import numpy as np
from mpi4py import MPI
import fastgru

how = sys.argv[1]
rank = MPI.COMM_WORLD.Get_rank()
texts, y = fastgru.make_sentiment_texts(400, seed=0)
if how == "different-data" and rank == 1:
    texts, y = texts[:300], y[:300]
vocab = fastgru.Vocabulary.build(fastgru.make_sentiment_texts(400, seed=0)[0])
x, _ = vocab.encode(texts)
model = fastgru.TextClassifier(len(vocab), embed_dim=8, hidden_size=8, seed=0)


def on_batch(batch, logs):
    if rank == 1 and batch == 3 and how in ("raise", "exit", "kill"):
        if how == "raise":
            raise RuntimeError("injected failure on rank 1")
        if how == "kill":  # killed from outside (the OOM killer, a crash)
            os.kill(os.getpid(), signal.SIGKILL)
        os._exit(3)  # "exit": ends without a word


def on_epoch_begin(epoch, logs):
    if how == "drift" and rank == 1 and epoch == 1:  # as if rank 1 rounded differently
        model.parameters()["gru.weight_hh_l0"][0, 0] += 1e-3


cb = fastgru.LambdaCallback(on_train_batch_end=on_batch, on_epoch_begin=on_epoch_begin)
model.fit(x, y, batch_size=8, epochs=2 if how == "drift" else 50, verbose=0,
          distributed=True, callbacks=[cb])
w = np.concatenate([v.ravel() for v in model.get_weights().values()])
same = MPI.COMM_WORLD.allgather(w.tobytes())
print("finished", rank, "equal" if same[0] == same[1] else "different", flush=True)
'''


@requires_mpi
@pytest.mark.parametrize("how", ["raise", "exit", "kill"])
def test_a_failing_rank_ends_the_job(tmp_path, how):
    (tmp_path / "failing.py").write_text(FAILING)
    # a job left hanging fails inside mpirun (its timeout kills the process group)
    rc, out, err, _ = mpirun([tmp_path / "failing.py", how], timeout=60)
    assert rc != 0, (out, err)
    assert "finished" not in out  # the surviving rank did not train on: the job was ended
    if how == "raise":
        assert "rank 1 of 2" in err and "RuntimeError: injected failure on rank 1" in err, err
        assert "aborting all ranks" in err, err
    if how == "kill":  # the launcher names the signal (MPICH and Open MPI alike)
        assert "signal 9" in out + err, (out, err)


@requires_mpi
def test_parameters_that_drift_apart_are_resynchronized(tmp_path):
    (tmp_path / "failing.py").write_text(FAILING)
    rc, out, err, secs = mpirun([tmp_path / "failing.py", "drift"], timeout=60)
    assert rc == 0, err
    assert out.count("equal") == 2 and "different" not in out, out
    assert err.count("the parameters differed between ranks") == 1, err


@requires_mpi
def test_ranks_with_different_data_stop_before_training(tmp_path):
    (tmp_path / "failing.py").write_text(FAILING)
    rc, out, err, secs = mpirun([tmp_path / "failing.py", "different-data"], timeout=60)
    assert rc != 0 and "finished" not in out
    assert "DistributedError: rank 1 differs from rank 0 in its" in err, err


# ------------------------------------------------------------------------------------------
# without MPI (in this process): optional dependency, clear errors, the reducer's arithmetic


def test_without_mpi4py_everything_else_works(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py -> ImportError
    monkeypatch.setattr(D, "_WORLD", [])
    for k in LAUNCHER_VARS:
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(D.MPIUnavailableError, match=r"pip install 'fastgru\[mpi\]'"):
        D.init()
    texts, y = fastgru.make_sentiment_texts(40, seed=0)
    vocab = fastgru.Vocabulary.build(texts)
    m = fastgru.TextClassifier(len(vocab), embed_dim=4, hidden_size=4, vocab=vocab, seed=0)
    with pytest.raises(D.MPIUnavailableError):
        m.fit(texts, y, epochs=1, verbose=0, distributed=True)
    m.fit(texts, y, epochs=1, verbose=0)  # plain training is untouched
    data = write_tsv(tmp_path / "d.tsv", n=60)
    rc = main(["train", "--distributed", "--data", data, "--out", str(tmp_path / "o"),
               "--epochs", "1", "--verbose", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("fastgru train: error: --distributed:") and "mpi4py" in err[0]
    assert "pip install 'fastgru[mpi]'" in err[0]


def test_launched_by_mpirun_without_distributed_is_an_error(tmp_path, capsys, monkeypatch):
    data = write_tsv(tmp_path / "d.tsv", n=60)
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setenv("PMI_RANK", "0")
    assert main(["train", "--data", data, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "without --distributed" in err and "add --distributed" in err
    monkeypatch.setenv("PMI_RANK", "1")  # the other ranks stay quiet
    assert main(["train", "--data", data, "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == ""
    assert not (tmp_path / "o").exists()


def test_threads_share_the_cores_of_a_node():
    cores = [("0", str(c)) for c in range(8)]
    assert D.share_of_cores(cores, [cores]) == 8  # one rank: every core
    assert D.share_of_cores(cores, [cores, cores]) == 4  # two unbound ranks
    assert D.share_of_cores(cores, [cores] * 3) == 2  # never more threads than cores
    assert D.share_of_cores(cores[:2], [cores[:2]] * 4) == 1  # at least one
    bound = [cores[:4], cores[4:]]  # a launcher bound each rank to 4 cores
    assert D.share_of_cores(bound[0], bound) == 4
    two = [("0", "0"), ("0", "1")]  # this machine's shape: 2 ranks x 1 thread
    assert D.share_of_cores(two, [two, two]) == 1


def single_rank_context():
    """A one-rank Context without MPI: fit(distributed=...) runs every distributed code path
    (sharding, the fused buffer, reductions, broadcasts) with no communication."""
    return D.Context(comm=None, rank=0, size=1, local_rank=0, local_size=1, nodes=1,
                     threads=1, host="here", library="none")


def test_distributed_code_path_on_one_rank_equals_plain_fit():
    texts, y = fastgru.make_sentiment_texts(120, seed=3)
    vocab = fastgru.Vocabulary.build(texts)
    x, _ = vocab.encode(texts)
    runs = []
    for dist in (None, single_rank_context()):
        m = fastgru.TextClassifier(len(vocab), embed_dim=8, hidden_size=8, dropout=0.0,
                                   dtype="float64", seed=1)
        h = m.fit(x, y, batch_size=16, epochs=2, verbose=0, distributed=dist,
                  validation_data=(x[:30], y[:30]))
        runs.append((m.get_weights(), h.history,
                     m.evaluate(x, y, return_dict=True, distributed=dist)))
    (wa, ha, ea), (wb, hb, eb) = runs
    assert max(float(np.max(np.abs(wa[k] - wb[k]))) for k in wa) < 1e-12
    for k in ha:
        np.testing.assert_allclose(ha[k], hb[k], rtol=1e-10)
    assert ea == pytest.approx(eb, rel=1e-10)


@pytest.mark.parametrize("sparse_rows", [True, False])
def test_reducer_packs_and_restores_gradients(sparse_rows):
    texts, y = fastgru.make_sentiment_texts(20, seed=0)
    vocab = fastgru.Vocabulary.build(texts)
    x, L = vocab.encode(texts)
    m = fastgru.TextClassifier(len(vocab), embed_dim=4, hidden_size=4, dropout=0.0,
                               dtype="float64", seed=0)
    m.zero_grad()
    out = m.forward(x, L, training=True)
    value, dout = m.loss(out, y.astype(np.float64), None)
    m.backward(dout)
    before = {k: g.copy() for k, g in m.grads().items()}
    rows = m.sparse_rows()
    red = D.GradientReducer(m, single_rank_context())
    touched = D.touched_rows(m, x, L) if sparse_rows else None
    if touched is not None:
        np.testing.assert_array_equal(touched["embedding.weight"], rows["embedding.weight"])
    n, mean = red.allreduce(20, value * 20, touched)
    assert n == 20 and mean == pytest.approx(value)
    for k, g in m.grads().items():
        np.testing.assert_allclose(g, before[k], rtol=1e-13, atol=1e-16, err_msg=k)
    np.testing.assert_array_equal(red.rows["embedding.weight"], rows["embedding.weight"])
    red.clear()
    m.zero_grad()
    assert all(not np.any(g) for g in m.grads().values())
    with pytest.raises(ValueError, match="must include every row"):
        m.backward(dout)
        red.allreduce(20, value * 20, {"embedding.weight": rows["embedding.weight"][:1]})


def test_shards_cover_each_global_batch_once():
    parts = []
    for r in range(3):
        ctx = single_rank_context()
        ctx.rank, ctx.size = r, 3
        parts.append(D.DataParallel(ctx).shard(np.arange(10, 20)))
    assert sorted(np.concatenate(parts).tolist()) == list(range(10, 20))
    assert [len(p) for p in parts] == [4, 3, 3]
