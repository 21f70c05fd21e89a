"""A/B: the per-step products on fastgru's own kernel vs OpenBLAS, interleaved in one process.

    python bench/ab_own_matmul.py S2,S3,100:16:64:512 [threads]

Shapes are names from fastgru.benchmarks.SHAPES or T:B:I:H. Prints median times of
fastgru.ops forward (inf) and forward + backward (train), both routes, and the speedup. This is
how the routing thresholds in src/fastgru/_kernels/_matmul.pxd were chosen.
"""
from __future__ import annotations

import sys
import time

import numpy as np

from fastgru import _config
from fastgru import benchmarks as bm

VARIANTS = {"blas": (99, 0), "own": _config.OWN_MATMUL_DEFAULT}


def main(argv: list[str]) -> None:
    shapes = argv[0].split(",") if argv else ["S2", "S3"]
    threads = int(argv[1]) if len(argv) > 1 else 1
    try:
        for name in shapes:
            shape = bm.SHAPES[name] if name in bm.SHAPES else tuple(int(v) for v in name.split(":"))
            for cell in ("gru", "lstm"):
                for mode in ("inf", "train"):
                    fn = bm.make_runner("fastgru", cell, mode, shape, threads)
                    res: dict[str, list[float]] = {v: [] for v in VARIANTS}
                    fn()
                    for _ in range(7):
                        for v, args in VARIANTS.items():
                            _config._set_own_matmul(*args)
                            n, t0 = 0, time.perf_counter()
                            while True:
                                fn()
                                n += 1
                                if time.perf_counter() - t0 > 0.15:
                                    break
                            res[v].append((time.perf_counter() - t0) / n)
                    b, o = float(np.median(res["blas"])), float(np.median(res["own"]))
                    print(f"{name} {cell:4s} {mode:5s} blas {b * 1e3:9.2f} ms  "
                          f"own {o * 1e3:9.2f} ms  speedup {b / o:5.2f}x", flush=True)
    finally:
        _config._set_own_matmul()


if __name__ == "__main__":
    main(sys.argv[1:])
