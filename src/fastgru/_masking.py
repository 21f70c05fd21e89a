"""Keras masking semantics for the layers' `mask=` argument.

A Keras RNN given a mask skips the masked steps: its state is carried across them and, where it
returns sequences, a standalone layer outputs its carried state h there, while `Bidirectional`
writes zeros. A fully masked sequence keeps its initial
state. fastgru takes right-padded masks (each sequence valid on a prefix of its steps, as
`Embedding(mask_zero=True)` gives for right-padded tokens): the valid prefix runs with the
PyTorch `lengths` machinery, sequences of length 0 are left out of the kernel call, and the
padding of y is filled as Keras fills it. Keras writes its first state (h) at a masked step:
h_n past a forward layer's end; h0 at a go_backwards layer's first (padding) steps, which are
the reverse layer's padding once flipped back in time.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def mask_lengths(mask: Any, T: int, B: int, unbatched: bool, batch_first: bool) -> np.ndarray:
    """The valid length (B,) int64 in [0, T] of each sequence of a right-padded mask."""
    if hasattr(mask, "detach") and hasattr(mask, "cpu"):  # a torch tensor
        mask = mask.detach().cpu().numpy()
    try:
        m = np.asarray(mask)
    except Exception as exc:
        raise TypeError(f"mask must be a boolean array: {exc}") from None
    if m.dtype != np.bool_:
        if m.dtype.kind not in "iuf":
            raise TypeError(f"mask must be a boolean array (or 0/1 numbers), got dtype {m.dtype}")
        bad = ~((m == 0) | (m == 1))
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"mask must hold only True/False (or 0/1), got {m[where].item()!r} at "
                             f"index {where}")
        m = m != 0
    want: tuple[int, ...]
    if unbatched:
        want, layout = (T,), "(T,) for unbatched x"
    elif batch_first:
        want, layout = (B, T), "(B, T) like x's first two axes (batch_first=True)"
    else:
        want, layout = (T, B), "(T, B) like x's first two axes (batch_first=False)"
    if m.shape != want:
        raise ValueError(f"mask must have shape {layout} = {want}, got {m.shape}")
    m = m.reshape(1, T) if unbatched else (m if batch_first else m.T)  # (B, T)
    lengths = m.sum(axis=1, dtype=np.int64)
    prefix = np.arange(T)[None, :] < lengths[:, None]
    bad = np.flatnonzero(np.any(m != prefix, axis=1))
    if bad.size:
        raise ValueError(
            f"mask must be True on a prefix of each sequence and False after it (right "
            f"padding); sequence {int(bad[0])} is not. Left-padded or gapped masks are not "
            f"supported: put the padding at the end of each sequence")
    return lengths


def fill_padding(y: np.ndarray, lengths: np.ndarray, s: np.ndarray) -> np.ndarray:
    """y (T, B, F) with s[b] (B, F) written over each sequence's padding steps t >= lengths[b]."""
    pad = np.arange(y.shape[0])[:, None] >= lengths[None, :]  # (T, B)
    return np.where(pad[:, :, None], s[None], y)


def padding_grad(dy: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The sum of dy (T, B, F) over each sequence's padding steps: (B, F), the gradient that
    reaches the state written there by fill_padding."""
    pad = np.arange(dy.shape[0])[:, None] >= lengths[None, :]
    return np.einsum("tb,tbf->bf", pad.astype(dy.dtype), dy)
