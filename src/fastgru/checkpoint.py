"""Checkpoint files: one `.npz` holding named arrays plus a JSON document, no pickle.

The JSON (model config, optimizer scalars, epoch, RNG state, history, vocabulary, ...) is
stored as a uint8 array named `__meta__.json` inside the same zip, so the whole checkpoint is
one file and is replaced atomically (written to a temporary file in the same folder, flushed,
then os.replace). The JSON carries a SHA-256 of every array's name, dtype, shape and bytes:
a truncated or edited file is reported as such instead of loading wrong weights.
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

# one atomic writer and one content digest for every file fastgru writes
from fastgru.saving import CONFIG_KEY, _digest, check_inflation, load_error_detail, write_atomic

__all__ = ["save_arrays", "load_arrays", "atomic_write_bytes", "atomic_write_text",
           "CheckpointError"]

META = "__meta__.json"
FORMAT = "fastgru-checkpoint"
VERSION = 2  # 2: the digest covers the metadata too (1: the arrays only; still read)


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, tampered with or of another format."""


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write `data` to `path` atomically: readers see the old file or the new one, never half.
    The file gets the usual permissions (0666 less the umask), like any file the user writes."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_atomic(path, lambda f: f.write(data))


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_arrays(path: str, arrays: Mapping[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Write arrays and a JSON-serializable `meta` dict to `path` (.npz) atomically."""
    for k, a in arrays.items():
        if k == META or not isinstance(a, np.ndarray) or a.dtype.hasobject:
            raise TypeError(f"checkpoint entry {k!r} must be a numeric ndarray")
    doc = dict(meta, format=FORMAT, version=VERSION)
    doc["sha256"] = _digest(arrays, doc)
    blob = np.frombuffer(json.dumps(doc).encode("utf-8"), np.uint8)
    buf = io.BytesIO()
    entries: dict[str, Any] = {META: blob, **arrays}
    np.savez(buf, **entries)
    atomic_write_bytes(path, buf.getvalue())


def load_arrays(path: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays, meta) from a file written by save_arrays; CheckpointError on any damage."""
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path!r} is a directory, not a file")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    try:
        check_inflation(path)
        with np.load(path, allow_pickle=False) as z:
            if META not in z.files and CONFIG_KEY in z.files:
                raise CheckpointError(f"{path!r} holds one layer (written by layer.save()): "
                                      "load it with fastgru.load()")
            if META not in z.files:
                raise CheckpointError(f"{path!r} is not a fastgru checkpoint (no {META})")
            arrays = {k: z[k] for k in z.files if k != META}
            raw = z[META].tobytes()
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {path!r} is truncated or corrupt "
                              f"({load_error_detail(exc)})") from None
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"checkpoint {path!r} has corrupt metadata ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path!r} is not a fastgru checkpoint")
    version = meta.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{path!r} has no valid format version ({version!r})")
    if version > VERSION:
        raise CheckpointError(f"{path!r} was written by a newer fastgru (format version "
                              f"{meta.get('version')})")
    if meta.get("sha256") != _digest(arrays, None if version < 2 else meta):
        raise CheckpointError(f"checkpoint {path!r} failed its checksum: the file was modified "
                              "or is damaged")
    return arrays, meta
