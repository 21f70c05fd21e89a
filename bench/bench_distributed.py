"""Data-parallel speed-up on one machine: the MR recipe trained by (a) 1 process x 2 threads,
(b) 2 MPI ranks x 1 thread (fastgru.distributed) and (c) 1 process x 1 thread, at the same
global batch. Not part of the test suite.

    python bench/bench_distributed.py                     # ../shared/data/mr, 5 repeats
    python bench/bench_distributed.py --repeats 3 --epochs 1 --json out.json
    python bench/bench_distributed.py --synthetic         # no data set needed

Every run is a fresh process (mpiexec -n 2 for the ranks, next to sys.executable or on PATH);
the configurations take turns, so a change in the machine's load hits them alike. Reported:
training samples/s (sum of the epochs' training seconds, validation excluded) per run, the
median per configuration, the ratios of the medians, and the load average before and after.

The recipe is `fastgru train`'s text recipe (Embedding 128 -> dropout 0.5 -> bidirectional
GRU 64 -> max pooling -> dropout 0.5 -> Dense, Adam 2e-3) with a global batch of 64 (32 per
rank on 2 ranks), on the fixed stratified 90/10 split of MR.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data", "mr"))
CONFIGS = [("1 rank x 2 threads", 1, 2), ("2 ranks x 1 thread", 2, 1),
           ("1 rank x 1 thread", 1, 1)]


# ------------------------------------------------------------------------------------------
# worker: one training run, prints one JSON line (rank 0)


def load(args):
    import numpy as np

    import fastgru

    if args.synthetic:
        texts, y = fastgru.make_sentiment_texts(10000, seed=0, min_len=10, max_len=40)
    else:
        ds = fastgru.load_mr(args.data)
        texts, y = ds.x_train, np.asarray(ds.y_train)
    tr, te = fastgru.stratified_split(y, 0.1, seed=0)
    vocab = fastgru.Vocabulary.build([texts[i] for i in tr], max_size=30000)
    x, _ = vocab.encode(texts, max_len=400)
    return vocab, x[tr], y[tr], x[te], y[te]


def worker(args) -> None:
    import fastgru

    ctx = None
    if args.distributed:
        from fastgru import distributed

        ctx = distributed.init(threads=args.threads)
    vocab, xtr, ytr, xte, yte = load(args)
    m = fastgru.TextClassifier(len(vocab), seed=0)
    m.set_threads(args.threads)
    W = 1 if ctx is None else ctx.size
    h = m.fit(xtr, ytr, epochs=args.epochs, batch_size=args.batch // W, verbose=0,
              distributed=ctx)
    secs = float(sum(h.seconds))
    acc = m.evaluate(xte, yte, return_dict=True, distributed=ctx)["accuracy"]
    if ctx is None or ctx.is_root:
        print(json.dumps({"samples_per_second": args.epochs * len(xtr) / secs,
                          "train_seconds": secs, "test_accuracy": acc, "ranks": W,
                          "threads": args.threads}), flush=True)


# ------------------------------------------------------------------------------------------
# driver


def loadavg() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:  # pragma: no cover
        return "?"


def run_one(args, ranks: int, threads: int) -> dict:
    env = dict(os.environ, FASTGRU_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS=str(threads))
    base = [sys.executable, os.path.abspath(__file__), "--worker", "--threads", str(threads),
            "--epochs", str(args.epochs), "--batch", str(args.batch), "--data", args.data]
    base += ["--synthetic"] if args.synthetic else []
    if ranks > 1:
        mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
        mpiexec = mpiexec if os.access(mpiexec, os.X_OK) else shutil.which("mpiexec")
        if mpiexec is None:
            sys.exit("mpiexec not found: pip install 'fastgru[mpi]'")
        cmd = [mpiexec, "-n", str(ranks)] + base + ["--distributed"]
    else:
        cmd = base
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def driver(args) -> None:
    import fastgru

    print(f"fastgru {fastgru.__version__}, {fastgru.config()['physical_cores']} physical "
          f"cores, data: {'synthetic' if args.synthetic else args.data}, {args.epochs} "
          f"epoch(s), global batch {args.batch}, {args.repeats} repeats", flush=True)
    la0 = loadavg()
    print(f"load average before: {la0}", flush=True)
    runs: dict[str, list[dict]] = {name: [] for name, _, _ in CONFIGS}
    for rep in range(args.repeats):
        for name, ranks, threads in CONFIGS:
            r = run_one(args, ranks, threads)
            runs[name].append(r)
            print(f"  repeat {rep + 1}: {name:20s} {r['samples_per_second']:8.0f} samples/s "
                  f"({r['train_seconds']:.2f} s, test accuracy {r['test_accuracy']:.3f}, "
                  f"load {loadavg()})", flush=True)
    la1 = loadavg()
    med = {name: statistics.median(r["samples_per_second"] for r in rs)
           for name, rs in runs.items()}
    print(f"load average after: {la1}")
    print(f"{'configuration':22s} {'median samples/s':>17s}")
    for name in med:
        print(f"{name:22s} {med[name]:17.0f}")
    a, b, c = (med[name] for name, _, _ in CONFIGS)
    ratios = {"2x1 / 1x2": b / a, "2x1 / 1x1": b / c, "1x2 / 1x1": a / c}
    for k, v in ratios.items():
        print(f"{k}: {v:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": runs, "medians": med, "ratios": ratios, "load_before": la0,
                       "load_after": la1, "epochs": args.epochs, "global_batch": args.batch,
                       "data": "synthetic" if args.synthetic else args.data}, f, indent=1)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=DEFAULT_DATA, help="the MR folder (rt-polarity.pos/.neg)")
    ap.add_argument("--synthetic", action="store_true",
                    help="10,000 synthetic reviews instead of MR")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64, help="global batch (split over ranks)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--distributed", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args)
    else:
        driver(args)


if __name__ == "__main__":
    main()
