"""GRU and LSTM, inference and training, the issue's shapes S1..S6, at 1 and 2 threads:
fastgru vs the NumPy reference vs PyTorch vs ONNX Runtime (when installed)."""
import pytest

from fastgru import benchmarks as bm

from benchutil import THREADS, threadpool_info

# the NumPy reference is slow: time it where a run takes at most a few seconds
REFERENCE_MAX_FLOPS = 2e10


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("shape", list(bm.SHAPES))
@pytest.mark.parametrize("mode", ["inf", "train"])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("impl", list(bm.IMPLS) + [bm.STEP_IMPL])
def test_rnn(benchmark, settle, impl, cell, mode, shape, threads):
    fl = bm.flops(cell, mode, bm.SHAPES[shape])
    if impl == "reference" and fl > REFERENCE_MAX_FLOPS:
        pytest.skip("NumPy reference: too slow for this shape")
    fn = bm.make_runner(impl, cell, mode, bm.SHAPES[shape], threads)
    if fn is None:
        pytest.skip(f"{impl} not installed or no {mode} mode")
    fn()  # warm-up: first-call set-up is not what users pay per step
    benchmark.group = f"{cell}-{mode}-{shape}-t{threads}"
    benchmark.extra_info.update(impl=impl, cell=cell, mode=mode, shape=shape,
                                dims=bm.SHAPES[shape], threads=threads, flops=fl,
                                threadpool_info=threadpool_info())
    benchmark(fn)
    benchmark.extra_info["gflops"] = fl / benchmark.stats.stats.median / 1e9


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("impl", ["sgemm"])
def test_sgemm_ceiling(benchmark, settle, impl, threads):
    """The machine's GEMM ceiling through scipy's BLAS, in the same run (for the S4 target)."""
    fn = bm.sgemm_runner(threads)
    fn()
    benchmark.group = f"sgemm-t{threads}"
    benchmark.extra_info.update(impl="sgemm", threads=threads, flops=2 * 1024**3,
                                threadpool_info=threadpool_info())
    benchmark(fn)
    benchmark.extra_info["gflops"] = 2 * 1024**3 / benchmark.stats.stats.median / 1e9
