"""Learning curves as a PNG (matplotlib is optional: the `examples` extra)."""
from __future__ import annotations

import io
import os
from collections.abc import Mapping
from typing import Any

__all__ = ["plot_history", "HAVE_MATPLOTLIB"]

try:  # optional dependency
    import matplotlib  # noqa: F401

    HAVE_MATPLOTLIB = True
except ImportError:  # pragma: no cover - depends on the environment
    HAVE_MATPLOTLIB = False


def plot_history(history: Any, path: str, title: str | None = None) -> str | None:
    """Plot loss and the first metric (accuracy, mae, ...) per epoch, train against
    validation, to `path` (PNG, written atomically). `history` is a History or its dict.
    Returns the path, or None when matplotlib is not installed."""
    if not HAVE_MATPLOTLIB:
        return None
    h: Mapping[str, list[float]] = getattr(history, "history", history)
    if not h or "loss" not in h:
        raise ValueError("history has no 'loss' entry to plot")
    # The object-oriented Figure renders to a file without pyplot, so no GUI backend or
    # display is touched and the caller's matplotlib state is left alone.
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from fastgru.checkpoint import atomic_write_bytes

    metrics = [k for k in h if not k.startswith("val_") and k != "loss"]
    panels = ["loss"] + metrics[:1]
    fig = Figure(figsize=(5 * len(panels), 3.6), dpi=100)
    epochs = list(range(1, len(h["loss"]) + 1))
    for i, name in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.plot(epochs, h[name], "o-", label="train")
        if f"val_{name}" in h:
            ax.plot(epochs[:len(h[f"val_{name}"])], h[f"val_{name}"], "s--", label="validation")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(os.fspath(path), buf.getvalue())
    return os.fspath(path)
