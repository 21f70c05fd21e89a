"""Training memory per step: bytes kept between forward and backward (fastgru's cache vs the
tensors PyTorch's autograd saves), recorded in extra_info; the timed call is the forward."""
import pytest

from fastgru import benchmarks as bm


@pytest.mark.parametrize("shape", list(bm.SHAPES))
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_training_memory(benchmark, cell, shape):
    ours = bm.training_memory_bytes("fastgru", cell, bm.SHAPES[shape])
    theirs = bm.training_memory_bytes("torch", cell, bm.SHAPES[shape])
    T, B, _, _ = bm.SHAPES[shape]
    benchmark.group = "memory"
    benchmark.extra_info.update(impl="fastgru", cell=cell, shape=shape, fastgru_bytes=ours,
                                torch_bytes=theirs, fastgru_bytes_per_step=ours / T)
    benchmark.pedantic(lambda: None, rounds=1)
    assert ours > 0
