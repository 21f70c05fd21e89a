"""Variable lengths at S2 (lengths uniform in [T/2, T]): fastgru with lengths vs its own full
length time, and PyTorch with a PackedSequence vs padded."""
import pytest

from fastgru import benchmarks as bm

from benchutil import THREADS, threadpool_info


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("lengths", [None, "half-to-full"])
@pytest.mark.parametrize("mode", ["inf", "train"])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("impl", ["fastgru", "torch"])
def test_lengths(benchmark, settle, impl, cell, mode, lengths, threads):
    shape = bm.SHAPES["S2"]
    fn = bm.make_runner(impl, cell, mode, shape, threads, lengths=lengths)
    if fn is None:
        pytest.skip(f"{impl} not installed")
    _, _, L = bm.problem(cell, shape, lengths=lengths)
    frac = 1.0 if L is None else float(L.mean()) / shape[0]
    fn()
    benchmark.group = f"lengths-{cell}-{mode}-t{threads}"
    benchmark.extra_info.update(impl=impl, cell=cell, mode=mode, shape="S2", threads=threads,
                                lengths=lengths or "full", mean_length_fraction=frac,
                                flops=bm.flops(cell, mode, shape) * frac,
                                threadpool_info=threadpool_info())
    benchmark(fn)
