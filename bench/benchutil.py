"""Shared bits of the benchmark suite (thread counts, threadpool_info for extra_info)."""
import os

THREADS = [int(t) for t in os.environ.get("FASTGRU_BENCH_THREADS", "1,2").split(",") if t]


def threadpool_info():
    from threadpoolctl import threadpool_info as info

    keep = ("user_api", "internal_api", "version", "num_threads", "threading_layer", "filepath")
    return [{k: d.get(k) for k in keep} for d in info()]
