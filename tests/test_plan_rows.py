"""Packing plans (fastgru._plan) and the row moves behind them (_kernels/_rows.pyx): pack and
unpack against plain NumPy indexing for both float dtypes, odd widths, a given output full of
garbage (padding must come back as zeros), non-contiguous input (the NumPy fallback) and the
identity plan (no copy)."""
import itertools

import numpy as np
import pytest

from fastgru._plan import make_plan


def _expected_unpack(plan, p):
    out = np.zeros((plan.T, plan.B, p.shape[1]), p.dtype)
    for t in range(plan.T):
        for i in range(plan.bsz[t]):
            out[t, plan.perm[i]] = p[plan.off[t] + i]
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("T,B,F", [(7, 5, 3), (2, 4, 16), (12, 9, 1), (30, 17, 33)])
def test_pack_unpack_match_numpy(dtype, T, B, F):
    rng = np.random.default_rng(T * 100 + B)
    lengths = rng.integers(1, T + 1, size=B)
    lengths[rng.integers(B)] = T
    if T > 1:
        lengths[0] = 1
    plan = make_plan(T, B, lengths)
    assert not plan.identity
    a = rng.standard_normal((T, B, F)).astype(dtype)
    packed = plan.pack(a)
    want = np.concatenate([a[t, plan.perm[:plan.bsz[t]]] for t in range(T)])
    np.testing.assert_array_equal(packed, want)
    # a strided (T, B, F) view: the NumPy fallback, same rows
    wide = np.repeat(a, 2, axis=2)[..., ::2]
    np.testing.assert_array_equal(plan.pack(wide), want)
    p = rng.standard_normal((plan.N, F)).astype(dtype)
    np.testing.assert_array_equal(plan.unpack(p), _expected_unpack(plan, p))
    garbage = np.full((T, B, F), np.nan, dtype)
    out = plan.unpack(p, garbage)
    assert out is garbage
    np.testing.assert_array_equal(out, _expected_unpack(plan, p))


def test_identity_plan_moves_nothing():
    plan = make_plan(4, 3, np.array([4, 4, 4]))
    assert plan.identity
    a = np.arange(24, dtype=np.float32).reshape(4, 3, 2)
    assert np.shares_memory(plan.pack(a), a)
    p = plan.pack(a)
    assert np.shares_memory(plan.unpack(p), a)


def test_row_blocks_are_balanced_optimally():
    """The recurrence's row blocks (one per thread and direction): consecutive, non-empty,
    covering every row, and with the smallest possible largest total length (checked against
    every way to cut small batches), for any team, one or two directions."""
    from fastgru import _threads

    def largest(sl, b):
        return max(int(sl[b[k]:b[k + 1]].sum()) for k in range(len(b) - 1))

    rng = np.random.default_rng(0)
    for case in range(600):
        B = int(rng.integers(1, 12))
        team, D = int(rng.integers(1, 9)), int(rng.integers(1, 3))
        sl = np.sort(rng.integers(1, 500, B))[::-1]
        if case % 5 == 0:
            sl[:] = sl[0]  # all equal
        if case % 7 == 0:
            sl[1:] = 1  # one long, the rest short
        tasks = _threads.plan_tasks(team, D, sl, int(sl.sum()), 1e12)[1]
        nblk = len(tasks) // D
        assert nblk == max(1, min(B, team // D))
        for d in range(D):
            mine = tasks[d * nblk:(d + 1) * nblk]
            assert (mine[:, 0] == d).all()
            b = [0, *mine[:, 2].tolist()]
            assert b[-1] == B and mine[:, 1].tolist() == b[:-1]
            assert all(b[k] < b[k + 1] for k in range(nblk))
            best = min(largest(sl, [0, *c, B])
                       for c in itertools.combinations(range(1, B), nblk - 1))
            assert largest(sl, b) == best, (sl, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("R,C", [(1, 1), (1, 9), (9, 1), (3, 5), (4, 4), (33, 70), (130, 37),
                                 (768, 64)])
def test_transpose_every_shape_and_pitch(dtype, R, C):
    """_rows.transpose (SSE2 blocks plus edges) equals NumPy's .T, also between views with a
    row pitch (a panel of a wider buffer), and writes nothing outside its destination."""
    from fastgru._kernels import _rows

    rng = np.random.default_rng(R * 1000 + C)
    big = rng.standard_normal((R + 3, C + 5)).astype(dtype)
    src = big[1:R + 1, 2:C + 2]                   # rows C + 5 apart
    out = np.full((C + 2, R + 4), -7.0, dtype)
    _rows.transpose(src, out[1:C + 1, 3:R + 3])
    np.testing.assert_array_equal(out[1:C + 1, 3:R + 3], src.T)
    outside = np.ones(out.shape, bool)
    outside[1:C + 1, 3:R + 3] = False
    assert np.all(out[outside] == -7.0)
    with pytest.raises(ValueError, match="dst must have shape"):
        _rows.transpose(src, np.empty((R + 1, C), dtype))
    if C > 1:
        with pytest.raises(ValueError, match="unit strides"):
            _rows.transpose(np.zeros((R, 2 * C), dtype)[:, ::2], np.empty((C, R), dtype))
