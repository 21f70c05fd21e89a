"""Turn a pytest-benchmark JSON of bench/ into Markdown: medians, effective GFLOP/s, same-run
ratios (other / fastgru: > 1 means fastgru is faster) and the performance issue's targets, each
marked met or not.

    pytest bench --benchmark-only --benchmark-json out.json
    python bench/report.py out.json > results.md
"""

import argparse
import json

from fastgru import benchmarks as bm

SHAPES = ["S1", "S2", "S3", "S4", "S5", "S6"]
COLS = ["fastgru", "fastgru-step", "torch", "onnxruntime", "reference"]


def fmt(s):
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.3f} s"


def load(path):
    with open(path) as f:
        data = json.load(f)
    rnn, lengths, guard, memory, sgemm = {}, {}, {}, [], {}
    for b in data["benchmarks"]:
        e, med = b["extra_info"], b["stats"]["median"]
        name = b["name"]
        if name.startswith("test_rnn"):
            rnn[(e["impl"], e["cell"], e["mode"], e["shape"], e["threads"])] = med
        elif name.startswith("test_sgemm"):
            sgemm[e["threads"]] = e["flops"] / med / 1e9
        elif name.startswith("test_lengths"):
            lengths[(e["impl"], e["cell"], e["mode"], e["lengths"], e["threads"])] = (
                med,
                e["mean_length_fraction"],
            )
        elif name.startswith("test_blas_guard"):
            guard[(e["cell"], e["shape"], e["guard"])] = med
        elif name.startswith("test_training_memory"):
            memory.append(e)
    return data, rnn, lengths, guard, memory, sgemm


def gflops(cell, mode, shape, t):
    return bm.flops(cell, mode, bm.SHAPES[shape]) / t / 1e9


def mark(ok):
    return "met" if ok else "NOT met"


def main(path):
    data, rnn, lengths, guard, memory, sgemm = load(path)
    threads = sorted({k[4] for k in rnn})
    out = ["# fastgru benchmark results", ""]
    mi = data.get("machine_info", {})
    out.append(
        f"Machine: {mi.get('cpu', {}).get('brand_raw', '?')}, Python {mi.get('python_version')}; "
        f"{data.get('datetime', '')}. Medians; (effective GFLOP/s); ratios = other / fastgru."
    )
    targets = []
    for t in threads:
        out += [
            "",
            f"## {t} thread(s)"
            + (f" - SGEMM ceiling {sgemm[t]:.1f} GFLOP/s" if t in sgemm else ""),
            "",
        ]
        present = [c for c in COLS if any(k[0] == c and k[4] == t for k in rnn)]
        out.append(
            "| shape | cell | mode | "
            + " | ".join(present)
            + " | "
            + " | ".join(f"{c}/fastgru" for c in present if c != "fastgru")
            + " |"
        )
        out.append("|---" * (3 + 2 * len(present) - 1) + "|")
        for cell in ("gru", "lstm"):
            for mode in ("inf", "train"):
                for s in SHAPES:
                    row = {c: rnn.get((c, cell, mode, s, t)) for c in present}
                    if row.get("fastgru") is None:
                        continue
                    base = row["fastgru"]
                    txt = [
                        f"{fmt(v)} ({gflops(cell, mode, s, v):.1f})" if v else "-"
                        for v in row.values()
                    ]
                    rat = [
                        f"{row[c] / base:.2f}x" if row.get(c) else "-"
                        for c in present
                        if c != "fastgru"
                    ]
                    out.append(
                        f"| {s} | {cell} | {mode} | "
                        + " | ".join(txt)
                        + " | "
                        + " | ".join(rat)
                        + " |"
                    )

        # targets at this thread count
        def r(impl, cell, mode, s, t=t):
            a, b = rnn.get((impl, cell, mode, s, t)), rnn.get(("fastgru", cell, mode, s, t))
            return None if (a is None or b is None) else a / b

        for s, want in (("S1", 3.0), ("S6", 8.0), ("S2", 2.0), ("S3", 1.3), ("S4", 1.3)):
            v = r("torch", "gru", "train", s)
            if v is not None:
                targets.append((t, f"GRU train {s} >= {want}x torch", f"{v:.2f}x", v >= want))
        for s in ("S1", "S2", "S6"):
            vs = [v for v in (r("torch", "gru", "inf", s), r("onnxruntime", "gru", "inf", s)) if v]
            if vs:
                targets.append(
                    (
                        t,
                        f"GRU inference {s} >= 1.5x the faster of torch/ORT",
                        f"{min(vs):.2f}x",
                        min(vs) >= 1.5,
                    )
                )
        step = rnn.get(("fastgru-step", "gru", "inf", "S5", t))
        if step:
            targets.append((t, "GRU streaming step S5 <= 5 us", fmt(step), step <= 5e-6))
        for s in SHAPES:
            v = r("torch", "lstm", "train", s)
            if v is not None:
                targets.append((t, f"LSTM train {s} >= 1.2x torch", f"{v:.2f}x", v >= 1.2))
            vs = [
                v for v in (r("torch", "lstm", "inf", s), r("onnxruntime", "lstm", "inf", s)) if v
            ]
            if s == "S5":  # a single step: the streaming path is what users call
                sv = rnn.get(("fastgru-step", "lstm", "inf", s, t))
                vs = [
                    rnn[(c, "lstm", "inf", s, t)] / sv
                    for c in ("torch", "onnxruntime")
                    if sv and (c, "lstm", "inf", s, t) in rnn
                ]
            if vs:
                targets.append(
                    (
                        t,
                        f"LSTM inference {s} >= 1.2x the faster of torch/ORT",
                        f"{min(vs):.2f}x",
                        min(vs) >= 1.2,
                    )
                )
        if t in sgemm:
            for cell in ("gru", "lstm"):
                for mode in ("inf", "train"):
                    v = rnn.get(("fastgru", cell, mode, "S4", t))
                    if v:
                        g = gflops(cell, mode, "S4", v)
                        targets.append(
                            (
                                t,
                                f"S4 {cell} {mode} >= 80% of SGEMM",
                                f"{100 * g / sgemm[t]:.0f}%",
                                g >= 0.8 * sgemm[t],
                            )
                        )
    if 1 in threads and 2 in threads:
        for s in ("S3", "S4"):
            for cell in ("gru", "lstm"):
                for mode in ("inf", "train"):
                    a, b = (
                        rnn.get(("fastgru", cell, mode, s, 1)),
                        rnn.get(("fastgru", cell, mode, s, 2)),
                    )
                    if a and b:
                        targets.append(
                            (
                                2,
                                f"2 threads vs 1 at {s} {cell} {mode} >= 1.7x",
                                f"{a / b:.2f}x",
                                a / b >= 1.7,
                            )
                        )
    if lengths:
        out += [
            "",
            "## Variable lengths at S2 (lengths uniform in [T/2, T])",
            "",
            "| impl | cell | mode | threads | full | with lengths | mean length / T | ratio |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for (impl, cell, mode, L, t), (med, frac) in sorted(lengths.items()):
            if L != "half-to-full":
                continue
            full = lengths.get((impl, cell, mode, "full", t), (None, 1))[0]
            out.append(
                f"| {impl} | {cell} | {mode} | {t} | {fmt(full)} | {fmt(med)} | {frac:.3f} | "
                f"{med / full:.3f} |"
                if full
                else ""
            )
            if impl == "fastgru" and full:
                targets.append(
                    (
                        t,
                        f"lengths {cell} {mode}: time within 10% of (mean/T) x full",
                        f"{med / (frac * full):.3f}",
                        med <= 1.1 * frac * full,
                    )
                )
                tp = lengths.get(("torch", cell, mode, L, t))
                if tp:
                    targets.append(
                        (
                            t,
                            f"lengths {cell} {mode}: >= 3x torch PackedSequence",
                            f"{tp[0] / med:.2f}x",
                            tp[0] / med >= 3,
                        )
                    )
    if guard:
        out += [
            "",
            "## BLAS held at one thread (the rule) vs OpenBLAS's own pool beside the team "
            "(2 threads, training step)",
            "",
            "| cell | shape | held | not held | ratio |",
            "|---|---|---|---|---|",
        ]
        for cell in ("gru", "lstm"):
            for s in ("S1", "S3"):
                a, b = guard.get((cell, s, True)), guard.get((cell, s, False))
                if a and b:
                    out.append(f"| {cell} | {s} | {fmt(a)} | {fmt(b)} | {b / a:.2f}x |")
    if memory:
        out += [
            "",
            "## Training memory per step (bytes kept for backward, excluding x and weights)",
            "",
            "| cell | shape | fastgru | torch | fastgru / torch |",
            "|---|---|---|---|---|",
        ]
        for e in memory:
            f, tb = e["fastgru_bytes"], e["torch_bytes"]
            out.append(
                f"| {e['cell']} | {e['shape']} | {f / 2**20:.2f} MiB | "
                f"{(tb or 0) / 2**20:.2f} MiB | {f / tb:.2f} |"
                if tb
                else ""
            )
            if tb:
                targets.append(
                    ("-", f"memory {e['cell']} {e['shape']} <= torch", f"{f / tb:.2f}", f <= tb)
                )
    out += ["", "## Targets", "", "| threads | target | measured | status |", "|---|---|---|---|"]
    for t, what, val, ok in targets:
        out.append(f"| {t} | {what} | {val} | {mark(ok)} |")
    print("\n".join(x for x in out if x is not None))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("json", metavar="BENCH_JSON",
                    help="pytest-benchmark JSON of bench/ (--benchmark-json)")
    path = ap.parse_args().json
    try:
        main(path)
    except (OSError, json.JSONDecodeError) as exc:
        ap.error(f"cannot read {path!r}: {exc}")
