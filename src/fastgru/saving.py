"""Save and load fastgru layers and cells: one .npz of arrays plus a JSON config, no pickle.

File layout (numpy .npz, uncompressed, written atomically: temp file in the same directory,
fsync, os.replace):
    __fastgru__        0-d unicode array: JSON {"format": "fastgru", "version": 1,
                       "class": "GRU", "config": {constructor args}, "dtype": "float32",
                       "params": {name: shape}, "sha256": digest of the parameter bytes
                       and of the rest of this header}
    <name>             one array per parameter, PyTorch names (weight_ih_l0, ...)
Loading uses np.load(allow_pickle=False) and checks the config, every name, shape and dtype
and the digest, raising ValueError naming the file for anything truncated or tampered with.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import stat
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from fastgru._module import rebuild

FORMAT = "fastgru"
VERSION = 2  # 2: the digest covers the header too (1: the arrays only; still read)
CONFIG_KEY = "__fastgru__"


def _classes() -> dict[str, type]:
    from fastgru.cells import GRUCell, LSTMCell
    from fastgru.layers import GRU, LSTM

    return {c.__name__: c for c in (GRU, LSTM, GRUCell, LSTMCell)}


def _digest(params: Mapping[str, np.ndarray], meta: Mapping[str, Any] | None = None) -> str:
    """SHA-256 of the arrays (names, dtypes, shapes, bytes) and, when given, of the metadata
    as canonical JSON: an edited config (reset_after, batch_first...) fails the check too."""
    h = hashlib.sha256()
    for name in sorted(params):
        a = np.ascontiguousarray(params[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes())
    if meta is not None:
        h.update(b"meta:")
        h.update(canonical_json(meta).encode())
    return h.hexdigest()


def canonical_json(meta: Mapping[str, Any]) -> str:
    """meta as JSON text that is the same after a JSON round trip (sorted keys, lists for
    tuples), without its "sha256" entry."""
    doc = json.loads(json.dumps({k: v for k, v in meta.items() if k != "sha256"}))
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def load_error_detail(exc: BaseException) -> str:
    """np.load's error, without its advice to unpickle: a file that is not an .npz at all
    (np.load then guesses pickle) or one holding Python objects is never ours to trust."""
    if "pickle" in str(exc):
        return "not an .npz archive of plain arrays"
    return f"{type(exc).__name__}: {exc}"


def write_atomic(path: Any, write) -> None:
    """Call write(file) on a temp file next to `path`, fsync it, then os.replace it onto path
    (readers see the old file or the new one, never a partial one). A symlink's target is
    replaced (not the link), and a file written over keeps its permissions."""
    path = os.fsdecode(os.fspath(path))
    if os.path.islink(path):
        path = os.path.realpath(path)
    if os.path.isdir(path):  # else os.replace's error names the hidden temp file
        raise IsADirectoryError(errno.EISDIR, "is a directory, not a file", path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(errno.ENOENT, f"no such directory: {folder!r}", path)
    try:
        mode: int | None = stat.S_IMODE(os.stat(path).st_mode)  # keep a replaced file's mode
    except OSError:
        mode = None  # a new file: 0666 less the umask, applied by the kernel at creation (not
        # os.umask(0), which would change it for the whole process while other threads run)
    fd, tmp = -1, ""
    for _ in range(100):
        tmp = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_BINARY", 0),
                         0o666)
            break
        except FileExistsError:
            continue
        except OSError as exc:
            raise type(exc)(exc.errno, f"cannot write in {folder!r} ({exc.strerror})",
                            path) from None
    if fd < 0:
        raise FileExistsError(errno.EEXIST, f"cannot create a temporary file in {folder!r}",
                              path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def check_inflation(path: Any) -> None:
    """Refuse a zip whose members declare far more bytes than the file holds, before anything
    is decompressed: fastgru writes its arrays uncompressed, and a few MB of deflated zeros
    would otherwise take gigabytes of memory to find out that the file is not ours."""
    path = os.fsdecode(path)  # ZipFile takes bytes for a file object
    try:
        with zipfile.ZipFile(path) as z:
            declared = sum(i.file_size for i in z.infolist())
    except (zipfile.BadZipFile, EOFError, ValueError):
        return  # np.load then gives the precise "truncated or not an .npz" error
    if declared > 4 * os.path.getsize(path) + (1 << 20):
        raise ValueError(f"its members declare {declared} bytes, far more than the "
                         f"{os.path.getsize(path)} bytes of the file (a zip bomb?)")


def save(module, path: Any) -> None:
    """Write a layer or cell to `path` (exactly that name; .npz by convention)."""
    if type(module).__name__ not in _classes():
        raise TypeError(f"module must be a fastgru GRU, LSTM, GRUCell or LSTMCell, got "
                        f"{type(module).__name__}")
    params = module.state_dict()
    header = {"format": FORMAT, "version": VERSION, "class": type(module).__name__,
              "config": module.get_config(), "dtype": str(module.dtype),
              "params": {k: list(v.shape) for k, v in params.items()}}
    header["sha256"] = _digest(params, header)
    arrays = {CONFIG_KEY: np.array(json.dumps(header))}
    arrays.update(params)
    # numpy's stub types savez's keywords as its options; they are arrays here (and numpy < 2.1
    # would store an allow_pickle= keyword as an array, so none is passed)
    write_atomic(path, lambda f: np.savez(f, **arrays))  # type: ignore[arg-type]


def load(path: Any):
    """Load a layer or cell written by save() (fastgru.GRU(...).save(path)).

    Returns the module (GRU, LSTM, GRUCell or LSTMCell) in training mode with zero gradients.
    Raises ValueError for a file that is not a fastgru file, is truncated, or was modified."""
    path = os.fspath(path)
    try:
        check_inflation(path)
        with np.load(path, allow_pickle=False) as z:
            files = set(z.files)
            if CONFIG_KEY not in files and "__meta__.json" in files:
                raise ValueError("this is a model or checkpoint file: load it with "
                                 "fastgru.load_model()")
            if CONFIG_KEY not in files:
                raise ValueError("no fastgru header (not a file written by fastgru's save())")
            header = _header(z[CONFIG_KEY])
            arrays = {k: z[k] for k in files - {CONFIG_KEY}}
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as exc:  # zip, npy, JSON and CRC errors: all mean a damaged file
        raise ValueError(f"cannot load {path!r}: the file is truncated, corrupt or not a fastgru "
                         f"file ({load_error_detail(exc)})") from None
    try:
        return _build(header, arrays)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cannot load {path!r}: {exc}") from None


def _header(raw: np.ndarray) -> dict[str, Any]:
    if raw.dtype.kind != "U" or raw.shape != ():
        raise ValueError("the fastgru header is not a JSON string")
    header = json.loads(str(raw[()]))
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError("the header is not a fastgru header")
    if header.get("version") not in (1, VERSION):
        raise ValueError(f"file format version {header.get('version')!r} is not supported "
                         f"(this fastgru reads versions 1 and {VERSION})")
    for key, typ in (("class", str), ("config", dict), ("dtype", str), ("params", dict),
                     ("sha256", str)):
        if not isinstance(header.get(key), typ):
            raise ValueError(f"header field {key!r} is missing or not a {typ.__name__}")
    return header


def _config_size(cls_name: str, config: dict[str, Any]) -> int | None:
    """How many parameter values the config describes (None if its sizes are not plain ints;
    rebuild() then reports the bad argument)."""
    def size(key: str, default: int | None = None) -> int:
        v = config.get(key, default)
        if not isinstance(v, int) or isinstance(v, bool):
            raise TypeError
        return max(v, 0)

    try:
        I, H = size("input_size"), size("hidden_size")
        G = (4 if "LSTM" in cls_name else 3) * H
        nb = 2 * G if config.get("bias", True) else 0
        if cls_name.endswith("Cell"):
            return G * (I + H) + nb
        L, P = size("num_layers", 1), size("proj_size", 0)
        D = 2 if config.get("bidirectional") else 1
        per = G * (P or H) + nb + P * H  # W_hh, biases and W_hr of one direction
        return D * (G * I + per) + (L - 1) * D * (G * D * (P or H) + per)
    except TypeError:
        return None


def _build(header: dict[str, Any], arrays: dict[str, np.ndarray]):
    classes = _classes()
    cls = classes.get(header["class"])
    if cls is None:
        raise ValueError(f"unknown class {header['class']!r} (expected one of {sorted(classes)})")
    config = header["config"]
    if config.get("dtype") != header["dtype"]:
        raise ValueError("the config's dtype and the header's dtype differ")
    for name, a in arrays.items():  # a member stored without ".npy" loads as raw bytes
        if not isinstance(a, np.ndarray):
            raise ValueError(f"entry {name!r} is not a .npy array")
    declared_total = sum(int(np.prod(a.shape)) for a in arrays.values())
    described = _config_size(header["class"], config)
    if described is not None and described > 2 * declared_total + (1 << 20):
        # before building: a tampered num_layers or hidden_size must not allocate gigabytes
        # (smaller mismatches get the precise name/shape message below)
        raise ValueError(f"the config describes {described} parameter values, the file holds "
                         f"{declared_total}")
    module = rebuild(cls, config)  # validates the config (errors name the argument)
    expected = {k: v.shape for k, v in module.parameters().items()}
    declared = {k: tuple(v) for k, v in header["params"].items()}
    if declared != expected or set(arrays) != set(expected):
        raise ValueError(f"parameter names/shapes do not match the config: expected "
                         f"{sorted(expected)}, file declares {sorted(declared)} and holds "
                         f"{sorted(arrays)}")
    for name, a in arrays.items():
        if a.dtype != module.dtype:
            raise ValueError(f"parameter {name!r} has dtype {a.dtype}, config says {module.dtype}")
        if a.shape != expected[name]:
            raise ValueError(f"parameter {name!r} has shape {a.shape}, expected {expected[name]}")
    if _digest(arrays, None if header["version"] == 1 else header) != header["sha256"]:
        raise ValueError("checksum mismatch: the arrays or the header were modified after "
                         "saving")
    module.load_state_dict(arrays)
    return module
