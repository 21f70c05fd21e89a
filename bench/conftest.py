"""pytest-benchmark configuration for fastgru's performance suite (not part of the test run).

Run:  pytest bench --benchmark-only [--benchmark-json out.json] [-k "S1 and gru"]
Then: python bench/report.py out.json   (tables with same-run ratios and the issue's targets)
Every benchmark records threads, threadpoolctl.threadpool_info() and effective GFLOP/s in
extra_info. Thread counts: FASTGRU_BENCH_THREADS (default "1,2").
"""
import time

import pytest


def pytest_collection_modifyitems(config, items):
    # group by implementation so that one library's thread pools are idle during another's runs
    order = {"sgemm": 0, "fastgru": 1, "fastgru-step": 1, "reference": 2, "torch": 3,
             "onnxruntime": 4}

    def key(item):
        cs = getattr(item, "callspec", None)
        impl = cs.params.get("impl", "") if cs else ""
        return (order.get(impl, 9), item.name)
    items.sort(key=key)


@pytest.fixture
def settle():
    """Pause before timing so spinning worker threads of the previous benchmark go to sleep."""
    time.sleep(0.05)
    yield
