"""`fastgru bench`: a quick, same-run comparison of fastgru with PyTorch and ONNX Runtime (when
installed) and the NumPy reference, on the performance issue's shapes, at given thread counts.
Prints times, effective GFLOP/s and the ratios other / fastgru (> 1 means fastgru is faster)."""

from __future__ import annotations

import argparse
import json
import math
import os
import time

from fastgru import benchmarks as bm

IMPL_NAMES = {
    "fastgru": "fastgru",
    "reference": "numpy-ref",
    "torch": "torch",
    "onnxruntime": "ORT",
    "fastgru-step": "fastgru-step",  # the streaming path (cells, layer.step): T = 1 inference
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", default="1,2", help="comma list of thread counts (default 1,2)")
    p.add_argument(
        "--shapes",
        default=",".join(bm.SHAPES),
        help="comma list of " + ",".join(f"{k}={v}" for k, v in bm.SHAPES.items()),
    )
    p.add_argument("--cells", default="gru,lstm", help="gru, lstm, gru,lstm or both")
    p.add_argument("--modes", default="inf,train",
                   help="inf (inference), train (fwd+bwd), inf,train or both")
    p.add_argument(
        "--impls",
        default="fastgru,torch,onnxruntime,reference",
        help="implementations to time (missing ones are skipped); also fastgru-step, the "
        "streaming path (T = 1 inference shapes only)",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=0.5,
        help="seconds of timed repetitions per measurement (default 0.5)",
    )
    p.add_argument(
        "--reference-max-flops",
        type=float,
        default=2e10,
        help="skip the NumPy reference above this many FLOPs per call (it is slow)",
    )
    p.add_argument("--json", metavar="PATH", help="also write the measurements as JSON")


def _fmt(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    if s < 1.0:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.3f} s"


def _list(arg: str, allowed, what: str):
    from fastgru.cli import UserError

    items = [a.strip() for a in arg.split(",") if a.strip()]
    if items == ["both"] and len(allowed) == 2:  # --cells both, --modes both
        items = list(allowed)
    items = list(dict.fromkeys(items))  # a repeated name is timed once
    bad = [a for a in items if a not in allowed]
    if bad or not items:
        raise UserError(
            f"unknown {what} {', '.join(bad) or arg!r}; choose from {', '.join(allowed)}"
        )
    return items


def run(args: argparse.Namespace) -> int:
    from fastgru.cli import UserError

    try:
        threads = [int(t) for t in args.threads.split(",") if t.strip()]
    except ValueError:
        raise UserError(
            f"--threads must be a comma list of integers, got {args.threads!r}"
        ) from None
    if not threads or min(threads) < 1:
        raise UserError("--threads must list thread counts >= 1")
    if not 0 < args.budget < math.inf:  # also nan: it would reach int(nan) in bm.measure
        raise UserError(f"--budget must be a positive number of seconds, got {args.budget}")
    if not args.reference_max_flops >= 0:
        raise UserError(f"--reference-max-flops must be >= 0, got {args.reference_max_flops}")
    shapes = _list(args.shapes, list(bm.SHAPES), "shape")
    cells = _list(args.cells, ["gru", "lstm"], "cell")
    modes = _list(args.modes, ["inf", "train"], "mode")
    impls = _list(args.impls, list(bm.IMPLS) + [bm.STEP_IMPL], "implementation")
    if args.json:  # fail now, not after minutes of measuring
        folder = os.path.dirname(os.path.abspath(args.json))
        if os.path.isdir(args.json) or not os.path.isdir(folder) \
                or not os.access(folder, os.W_OK | os.X_OK):
            raise UserError(f"--json {args.json!r}: cannot write a file there")
    missing = [i for i in impls if not bm.available(i)]
    impls = [i for i in impls if bm.available(i)]
    if not impls:
        raise UserError(f"none of the implementations can run here ({', '.join(missing)}: "
                        "not installed)")
    if missing:
        print(f"(not installed, skipped: {', '.join(missing)})")
    records = []
    for nt in threads:
        ceiling = bm.measure(bm.sgemm_runner(nt), budget=min(args.budget, 0.5))
        gf_ceiling = 2 * 1024**3 / ceiling["median_s"] / 1e9
        print(f"\n## {nt} thread(s); SGEMM ceiling (scipy BLAS, 1024^3): {gf_ceiling:.1f} GFLOP/s")
        cols = [IMPL_NAMES[i] for i in impls]
        # ratio columns: every other impl against fastgru, whatever the --impls order
        others = [i for i in impls if i != "fastgru"] if "fastgru" in impls else []
        head = ["shape (T,B,I,H)", "cell", "mode"] + cols + \
            [f"{IMPL_NAMES[i]}/fastgru" for i in others]
        print("| " + " | ".join(head) + " |")
        print("|---" * len(head) + "|")
        for cell in cells:
            for mode in modes:
                for sk in shapes:
                    shape = bm.SHAPES[sk]
                    fl = bm.flops(cell, mode, shape)
                    row = {}
                    for impl in impls:
                        if impl == "reference" and fl > args.reference_max_flops:
                            continue
                        fn = bm.make_runner(impl, cell, mode, shape, nt)
                        if fn is None:
                            continue
                        m = bm.measure(fn, budget=args.budget)
                        row[impl] = m
                        records.append(
                            dict(
                                impl=impl,
                                cell=cell,
                                mode=mode,
                                shape=sk,
                                threads=nt,
                                gflops=fl / m["median_s"] / 1e9,
                                **m,
                            )
                        )
                        # let other libraries' spinning threads go idle (OpenBLAS spins ~70 ms)
                        time.sleep(0.2)
                    cells_txt = [
                        (
                            f"{_fmt(row[i]['median_s'])} ({fl / row[i]['median_s'] / 1e9:.1f})"
                            if i in row
                            else "-"
                        )
                        for i in impls
                    ]
                    base = row.get("fastgru")
                    ratios = [
                        (
                            f"{row[i]['median_s'] / base['median_s']:.2f}x"
                            if (i in row and base)
                            else "-"
                        )
                        for i in others
                    ]
                    print("| " + " | ".join([f"{sk} {shape}", cell, mode] + cells_txt
                                            + ratios) + " |", flush=True)
        records.append(dict(impl="sgemm", threads=nt, gflops=gf_ceiling, **ceiling))
    print("\nTimes are medians; (GFLOP/s) effective; train = forward + backward of y.sum().")
    if args.json:
        from fastgru.saving import write_atomic

        blob = json.dumps(records, indent=1).encode()
        write_atomic(args.json, lambda f: f.write(blob))
    return 0
