"""Keras masking semantics for the layers' `mask=` argument.

A Keras RNN given a mask skips the masked steps: its state is carried across them and, where it
returns sequences, a standalone layer outputs its carried state h there (h0 before any valid
step), while `Bidirectional` writes zeros. A fully masked sequence keeps its initial state.

A right-padded mask (each sequence valid on a prefix of its steps, as `Embedding(mask_zero=True)`
gives for right-padded tokens) runs its valid prefix with the PyTorch `lengths` machinery,
sequences of length 0 are left out of the kernel call, and the padding of y is filled as Keras
fills it: h_n past a forward layer's end; h0 at a go_backwards layer's first (padding) steps,
which are the reverse layer's padding once flipped back in time. Any other mask (left padding,
as Keras' pad_sequences gives by default; gaps) runs on the valid steps moved to the front the
same way, and y is read back to the original steps (Holes).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def mask_lengths(mask: Any, T: int, B: int, unbatched: bool, batch_first: bool
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """The number of valid steps (B,) int64 in [0, T] of each sequence, and the mask as (T, B)
    booleans when it is not right padding (None when it is: then those are the lengths)."""
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
    if np.array_equal(m, prefix):
        return lengths, None
    return lengths, np.ascontiguousarray(m.T)  # left padding or gaps: (T, B)


class Holes:
    """A mask that is not right padding (Keras' pad_sequences pads on the left by default; a
    mask may also have gaps). Keras carries the state across every masked step, so a layer
    computes the same as on each sequence's valid steps moved to the front (`order`), with
    lengths; y is then read back: a valid step gets its own output, a masked one what Keras
    writes there (`src`: an index into [y of the front-packed run; one extra row])."""

    def __init__(self, m: np.ndarray, carry: int) -> None:
        T, B = m.shape
        self.order = np.argsort(~m, axis=0, kind="stable")  # (T, B): valid steps first
        before = np.cumsum(m, axis=0) - m  # valid steps before t
        lengths = m.sum(axis=0)
        if carry > 0:  # the previous valid output; h0 (the extra row) before the first
            src = np.where(before > 0, before - 1, T)
        elif carry < 0:  # a go_backwards layer: the next valid output; h0 after the last
            src = np.where(before < lengths[None, :], before, T)
        else:
            src = np.full((T, B), T)  # zeros
        self.src = np.where(m, before, src)
        self.cols = np.arange(B)[None, :]

    def gather(self, x: np.ndarray) -> np.ndarray:
        """x (T, B, F) with each sequence's valid steps moved to the front."""
        return np.take_along_axis(x, self.order[:, :, None], axis=0)

    def scatter(self, dxc: np.ndarray) -> np.ndarray:
        """The inverse of gather for gradients (the front-packed padding is 0 there)."""
        dx = np.empty_like(dxc)
        np.put_along_axis(dx, self.order[:, :, None], dxc, axis=0)
        return dx

    def read(self, yc: np.ndarray, extra: np.ndarray | None) -> np.ndarray:
        """y (T, B, F) from the front-packed run's yc and the extra row (B, F) (None: 0)."""
        ext = np.concatenate([yc, np.zeros_like(yc[:1]) if extra is None else extra[None]])
        return ext[self.src, self.cols]

    def read_grad(self, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The gradient of read: (dyc (T, B, F), d extra (B, F))."""
        T = dy.shape[0]
        dext = np.zeros((T + 1,) + dy.shape[1:], dy.dtype)
        np.add.at(dext, (self.src, self.cols), dy)
        return dext[:T], dext[T]


def fill_padding(y: np.ndarray, lengths: np.ndarray, s: np.ndarray) -> np.ndarray:
    """y (T, B, F) with s[b] (B, F) written over each sequence's padding steps t >= lengths[b]."""
    pad = np.arange(y.shape[0])[:, None] >= lengths[None, :]  # (T, B)
    return np.where(pad[:, :, None], s[None], y)


def padding_grad(dy: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The sum of dy (T, B, F) over each sequence's padding steps: (B, F), the gradient that
    reaches the state written there by fill_padding."""
    pad = np.arange(dy.shape[0])[:, None] >= lengths[None, :]
    return np.einsum("tb,tbf->bf", pad.astype(dy.dtype), dy)
