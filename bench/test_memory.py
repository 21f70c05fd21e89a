"""Training memory per step: bytes kept between forward and backward (fastgru's cache vs the
tensors PyTorch's autograd saves), recorded in extra_info; the timed call is fastgru's
measurement (one training forward, default threads). Transient workspaces are not counted:
peak growth is another figure (see the closing note of the performance issue)."""
import pytest

from fastgru import benchmarks as bm

from benchutil import threadpool_info


@pytest.mark.parametrize("shape", list(bm.SHAPES))
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_training_memory(benchmark, cell, shape):
    ours = bm.training_memory_bytes("fastgru", cell, bm.SHAPES[shape])
    theirs = bm.training_memory_bytes("torch", cell, bm.SHAPES[shape])
    T, B, _, _ = bm.SHAPES[shape]
    benchmark.group = "memory"
    benchmark.extra_info.update(impl="fastgru", cell=cell, shape=shape, fastgru_bytes=ours,
                                torch_bytes=theirs, fastgru_bytes_per_step=ours / T,
                                threads="default", gflops=None, threadpool_info=threadpool_info())
    benchmark.pedantic(bm.training_memory_bytes, args=("fastgru", cell, bm.SHAPES[shape]),
                       rounds=1)
    assert ours > 0
