"""The thread policy, measured both ways: fastgru at 2 threads with BLAS held at one thread
(the rule) and with the hold disabled while OpenBLAS keeps its own 2-thread pool."""
import pytest
from threadpoolctl import threadpool_limits

from fastgru import _threads
from fastgru import benchmarks as bm

from benchutil import threadpool_info


@pytest.mark.parametrize("guard", [True, False])
@pytest.mark.parametrize("shape", ["S1", "S3"])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_blas_guard(benchmark, settle, cell, shape, guard):
    fn = bm.make_runner("fastgru", cell, "train", bm.SHAPES[shape], 2)
    with threadpool_limits(limits=2, user_api="blas"):
        _threads.set_blas_guard(guard)
        try:
            fn()
            benchmark.group = f"guard-{cell}-{shape}"
            benchmark.extra_info.update(impl="fastgru", guard=guard, cell=cell, shape=shape,
                                        threads=2, threadpool_info=threadpool_info())
            benchmark(fn)
        finally:
            _threads.set_blas_guard(True)
