"""Packed-sequence plan: how a padded (T, B, ...) batch with lengths maps to the packed rows the
kernels work on (PyTorch PackedSequence layout).

The batch is sorted by length, longest first (stable). Step t then works on the first bsz[t]
sorted rows, stored at packed rows off[t] .. off[t] + bsz[t] - 1. Padding is never stored or
computed. Without lengths (or with every length == T) the plan is the identity and packing a
contiguous (T, B, F) array is a free reshape.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from fastgru._kernels import _rows

# dtypes the row moves take (the kernels' dtypes); others go through NumPy indexing
_ROW_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class SeqPlan:
    """Packing of a batch of B sequences of at most T steps."""

    __slots__ = ("T", "B", "N", "lengths", "perm", "inv", "bsz", "off", "src", "pad",
                 "identity")

    def __init__(self, T: int, B: int, lengths: np.ndarray | None = None):
        self.T, self.B = int(T), int(B)
        if lengths is None or bool(np.all(lengths == T)):
            self.identity = True
            self.lengths = np.full(B, T, np.int64)
            self.perm = self.inv = None
            self.bsz = np.full(T, B, np.int32)
            self.off = np.arange(T, dtype=np.intp) * B
            self.N = T * B
            self.src = self.pad = None
            return
        self.identity = False
        self.lengths = np.asarray(lengths, np.int64)
        self.perm = np.argsort(-self.lengths, kind="stable")  # sorted row -> original row
        self.inv = np.empty_like(self.perm)
        self.inv[self.perm] = np.arange(B)
        # bsz[t] = number of sequences longer than t (lengths are validated to lie in [0, T])
        ends = np.bincount(self.lengths, minlength=T + 1)
        self.bsz = (B - np.cumsum(ends[:T])).astype(np.int32)
        self.off = np.zeros(T, np.intp)
        np.cumsum(self.bsz[:-1], out=self.off[1:])
        self.N = int(self.bsz.sum())
        # src[p] = flat (t * B + b) index in the padded array of packed row p: the (t, sorted
        # row) grid in row order, where row < bsz[t]; the rest are padding (zeros on unpack)
        flat = np.arange(0, T * B, B, dtype=np.intp)[:, None] + self.perm[None, :]
        live = np.arange(B)[None, :] < self.bsz[:, None]
        self.src = flat[live]
        self.pad = flat[~live]

    def pack(self, a: np.ndarray) -> np.ndarray:
        """(T, B, F) -> (N, F), C-contiguous (no copy for the identity plan and a contiguous a)."""
        F = a.shape[2]
        if self.identity:
            return np.ascontiguousarray(a).reshape(self.N, F)
        assert self.src is not None and self.pad is not None  # set for a non-identity plan
        if a.flags.c_contiguous and a.dtype in _ROW_DTYPES:
            out = np.empty((self.N, F), a.dtype)
            _rows.gather(a.reshape(self.T * self.B, F), self.src, out)
            return out
        return a.reshape(self.T * self.B, F)[self.src]

    def unpack(self, p: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(N, F) -> (T, B, F), zeros at padding."""
        F = p.shape[1]
        if self.identity:
            return p.reshape(self.T, self.B, F)
        assert self.src is not None and self.pad is not None
        if out is None:
            out = np.empty((self.T, self.B, F), p.dtype)
        if p.flags.c_contiguous and out.flags.c_contiguous and p.dtype in _ROW_DTYPES \
                and out.dtype == p.dtype:
            _rows.scatter(p, self.src, self.pad, out.reshape(self.T * self.B, F))
            return out
        out[...] = 0
        out.reshape(self.T * self.B, F)[self.src] = p
        return out

    def sort_state(self, s: np.ndarray) -> np.ndarray:
        """(..., B, F) state in original batch order -> sorted order (a new contiguous array)."""
        return np.ascontiguousarray(s if self.identity else s[..., self.perm, :])

    def unsort_state(self, s: np.ndarray) -> np.ndarray:
        """(..., B, F) state in sorted order -> original batch order."""
        return s if self.identity else np.ascontiguousarray(s[..., self.inv, :])


@lru_cache(maxsize=64)
def _identity_plan(T: int, B: int) -> SeqPlan:
    plan = SeqPlan(T, B)
    for a in (plan.lengths, plan.bsz, plan.off):
        a.flags.writeable = False  # shared between calls
    return plan


def make_plan(T: int, B: int, lengths: np.ndarray | None = None) -> SeqPlan:
    """SeqPlan(T, B, lengths), with the plan of full-length batches built once per (T, B):
    streaming and small calls (T = 1, B = 1) spend most of their Python time here otherwise."""
    if lengths is None:
        return _identity_plan(int(T), int(B))
    return SeqPlan(T, B, lengths)
