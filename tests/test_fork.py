"""A process forked after fastgru's OpenMP team ran: libgomp cannot start a team in the child
(its first parallel region waits forever), so the child runs every kernel on one thread."""
from __future__ import annotations

import multiprocessing as mp
import os
import sys

import numpy as np
import pytest

import fastgru
from fastgru._kernels import _runtime

pytestmark = pytest.mark.skipif(
    not hasattr(os, "fork") or sys.platform == "darwin" or not _runtime.openmp_enabled(),
    reason="fork start method with OpenMP only")


def _work(k):
    import warnings

    x = np.ones((50, 16, 32), np.float32)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        y = fastgru.GRU(32, 64, seed=0, n_threads=2).eval()(x)[0]
        cell = fastgru.GRUCell(64, 256, seed=0, n_threads=2)
        h = cell(np.ones((1, 64), np.float32))
    return float(y.sum()), float(h.sum()), [str(w.message) for w in seen]


def test_forked_child_runs_serially_instead_of_hanging():
    x = np.ones((50, 16, 32), np.float32)
    parent = float(fastgru.GRU(32, 64, seed=0, n_threads=2).eval()(x)[0].sum())
    cell = fastgru.GRUCell(64, 256, seed=0, n_threads=2)
    cell(np.ones((1, 64), np.float32))  # a team stepper made (and maybe run) before the fork
    with mp.get_context("fork").Pool(2) as pool:
        out = pool.map_async(_work, range(2)).get(timeout=120)
    for y, h, warned in out:
        assert y == parent
        assert np.isfinite(h)
        assert any("forked after fastgru's OpenMP threads" in w for w in warned), warned
