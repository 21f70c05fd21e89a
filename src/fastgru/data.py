"""Data for training: padded batches with lengths, length bucketing, stratified splits, label
encoding, and loaders for real formats.

Loaders return a `Dataset` of texts (or token ids, or float features) and labels, with a test
part when the format has one:

    load_aclimdb(path)   the IMDB `aclImdb/` folder: {train,test}/{pos,neg}/*.txt
    load_imdb_npz(path)  Keras' imdb.npz (x_train, y_train, x_test, y_test)
    load_mr(path)        rt-polarity.pos / rt-polarity.neg, Latin-1
    load_delimited(path) TSV / CSV lines `text<TAB>label` (an optional header line)
    load_digits_sequences()  scikit-learn's bundled 8x8 digits, read row by row (8 steps x 8)

and synthetic tasks for tests and examples (make_sentiment_texts, make_noisy_sine,
make_pattern_text).
"""
from __future__ import annotations

import csv
import glob
import io
import os
import pickle
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fastgru.text import pad_sequences

__all__ = [
    "Dataset", "load_aclimdb", "load_imdb_npz", "load_mr", "load_delimited",
    "load_digits_sequences", "make_sentiment_texts", "make_noisy_sine", "make_pattern_text",
    "lm_windows",
    "encode_labels", "stratified_split", "length_batches", "DataError",
]


class DataError(ValueError):
    """A data file or folder that cannot be used (missing, empty, malformed, bad labels)."""


@dataclass
class Dataset:
    """x: list of texts (kind "text"), list of id arrays (kind "ids") or a float array
    (N, T, F) (kind "features"); y: labels as read (ints or strings). Test part optional."""

    x_train: Any
    y_train: np.ndarray
    x_test: Any = None
    y_test: np.ndarray | None = None
    kind: str = "text"
    name: str = ""
    info: dict = field(default_factory=dict)

    @property
    def has_test(self) -> bool:
        return self.x_test is not None


# ------------------------------------------------------------------------------------------
# labels and splits


def encode_labels(y: Sequence[Any], classes: Sequence[Any] | None = None
                  ) -> tuple[np.ndarray, list[Any]]:
    """Class labels -> (int64 ids, classes). Integer labels 0..K-1 map to themselves; other
    labels (strings, or ints not of the form 0..K-1) map to their sorted order, so "neg" < "pos"
    gives neg = 0, pos = 1. With `classes` given, labels must be among them. Raises DataError
    for non-integral numbers, missing values or a single class."""
    arr = np.asarray(y, dtype=object).reshape(-1) if not isinstance(y, np.ndarray) else y
    if arr.ndim != 1:
        raise DataError(f"labels must be one per sample, got shape {arr.shape}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise DataError("class labels must be integers or strings, found non-integral "
                            "numbers")
        arr = arr.astype(np.int64)
    if arr.dtype.kind in "iub":
        vals = arr.astype(np.int64)
    else:
        vals = np.array([_label_value(v) for v in arr], dtype=object)
    if classes is not None:
        index = {c: i for i, c in enumerate(classes)}
        try:
            return np.array([index[v] for v in vals.tolist()], np.int64), list(classes)
        except KeyError as exc:
            raise DataError(f"label {exc.args[0]!r} is not one of the classes "
                            f"{list(classes)}") from None
    uniq = sorted(set(vals.tolist()), key=lambda v: (isinstance(v, str), v))
    if len({isinstance(v, str) for v in uniq}) > 1:
        raise DataError(f"bad class labels: numbers and names mixed ({uniq[0]!r}, "
                        f"{uniq[-1]!r})")
    if len(uniq) == 0:
        raise DataError("no labels")
    if len(uniq) < 2:
        raise DataError(f"the data has a single class ({uniq[0]!r}): a classifier needs at "
                        "least two")
    if all(isinstance(v, int) for v in uniq) and uniq == list(range(len(uniq))):
        return vals.astype(np.int64), uniq
    index = {c: i for i, c in enumerate(uniq)}
    return np.array([index[v] for v in vals.tolist()], np.int64), uniq


def _label_value(v: Any) -> Any:
    """A label as an int when it is written as one ("1", 1.0), else a stripped string."""
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return int(v)
    if isinstance(v, (float, np.floating)):
        if not np.isfinite(v) or v != round(v):
            raise DataError(f"bad class label {v!r}: use integers or strings")
        return int(v)
    s = str(v).strip()
    if not s:
        raise DataError("empty class label")
    try:
        return int(s)
    except ValueError:
        pass
    try:
        f = float(s)
    except ValueError:
        return s
    if not np.isfinite(f) or f != round(f):
        raise DataError(f"bad class label {s!r}: use integers or names")
    return int(f)


def stratified_split(y: np.ndarray, test_size: float, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices), sorted: each class contributes round(test_size * n_c)
    samples to the test part, chosen by a seeded permutation."""
    if not 0.0 < float(test_size) < 1.0:
        raise ValueError(f"test_size must be in (0, 1), got {test_size!r}")
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        k = int(round(float(test_size) * len(idx)))
        if len(idx) > 1:
            k = min(max(k, 1), len(idx) - 1)
        else:
            k = 0
        test.append(rng.permutation(idx)[:k])
    te = np.sort(np.concatenate(test)) if test else np.zeros(0, np.int64)
    tr = np.setdiff1d(np.arange(len(y)), te)
    return tr, te


# ------------------------------------------------------------------------------------------
# batches


def length_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None,
                   shuffle: bool = True, bucket: bool = True, pool: int = 50) -> list[np.ndarray]:
    """Index arrays of batches. With bucket=True, sequences of similar length share a batch, so
    a batch trimmed to its longest sequence carries little padding (and with lengths passed
    to the recurrent layer, none of it is computed). Training (shuffle=True): a seeded
    permutation, cut into pools of `pool` batches, each pool sorted by length, cut into
    batches, and the batch order shuffled. Inference (shuffle=False): one stable sort."""
    n = len(lengths)
    if n == 0:
        return []
    lengths = np.asarray(lengths)
    if shuffle:
        if rng is None:
            raise ValueError("shuffle=True needs an rng")
        idx = rng.permutation(n)
        if bucket:
            step = batch_size * pool
            idx = np.concatenate([c[np.argsort(lengths[c], kind="stable")]
                                  for c in np.split(idx, range(step, n, step))])
    else:
        idx = np.argsort(lengths, kind="stable") if bucket else np.arange(n)
    batches = np.split(idx, range(batch_size, n, batch_size))
    if shuffle and bucket:
        assert rng is not None
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


# ------------------------------------------------------------------------------------------
# loaders


def _need(path: str, what: str) -> None:
    if not os.path.exists(path):
        raise DataError(f"{what} {path!r} does not exist")


def decode_text(raw: bytes) -> str:
    """Text file bytes as str: UTF-8 (a byte-order mark dropped), else Windows-1252 (MR's
    quotes and dashes, 0x91-0x97, which Latin-1 reads as control codes), else Latin-1 (for the
    few bytes cp1252 leaves undefined). The loaders and `fastgru predict` read text so."""
    for enc in ("utf-8-sig", "cp1252"):
        try:
            return raw.decode(enc)
        except UnicodeDecodeError:
            pass
    return raw.decode("latin-1")


def load_mr(path: str) -> Dataset:
    """Pang & Lee's sentence polarity data: a folder with rt-polarity.pos and rt-polarity.neg
    (one snippet a line, Windows-1252). Labels 1 = positive, 0 = negative (info["classes"]
    names them); no test part."""
    _need(path, "data folder")
    d = path if os.path.isdir(path) else os.path.dirname(path)
    texts, labels = [], []
    for name, lab in (("rt-polarity.neg", 0), ("rt-polarity.pos", 1)):
        f = os.path.join(d, name)
        if not os.path.isfile(f):
            where = (f"the folder {d!r}" if os.path.isdir(path) else
                     f"the folder of {path!r} ({os.path.abspath(d)!r}; the MR format reads a "
                     f"folder: give it as the data path)")
            raise DataError(f"MR format needs {name} in {where}")
        with open(f, "rb") as fh:
            text = decode_text(fh.read())
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        texts += lines
        labels += [lab] * len(lines)
    return Dataset(texts, np.array(labels, np.int64), kind="text", name="mr",
                   info={"classes": ["negative", "positive"]})


def load_aclimdb(path: str) -> Dataset:
    """The Large Movie Review Dataset folder (aclImdb/ or its parent): train/pos, train/neg,
    test/pos, test/neg with one review per *.txt (UTF-8). Labels 1 = pos, 0 = neg; unsup/ is
    ignored. Files are read in sorted order so the data set is deterministic."""
    _need(path, "data folder")
    root = path
    nested = os.path.join(root, "aclImdb")
    if not os.path.isdir(os.path.join(root, "train")) and os.path.isdir(nested):
        root = nested
    parts = {}
    for part in ("train", "test"):
        texts, labels = [], []
        for sub, lab in (("neg", 0), ("pos", 1)):
            files = sorted(glob.glob(os.path.join(root, part, sub, "*.txt")))
            for f in files:
                with open(f, encoding="utf-8-sig", errors="replace") as fh:
                    texts.append(fh.read())
            labels += [lab] * len(files)
        parts[part] = (texts, np.array(labels, np.int64))
    if not parts["train"][0]:
        raise DataError(f"no reviews found in {root!r}: expected train/pos/*.txt and "
                        "train/neg/*.txt (the aclImdb layout)")
    te = parts["test"] if parts["test"][0] else (None, None)
    return Dataset(parts["train"][0], parts["train"][1], te[0], te[1], kind="text",
                   name="aclimdb", info={"classes": ["negative", "positive"]})


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles NumPy object arrays of lists of ints (Keras' imdb.npz) and nothing else: any
    other class in the stream is refused, so a crafted file cannot run code."""

    ALLOWED = {(mod, name) for mod in ("numpy.core.multiarray", "numpy._core.multiarray")
               for name in ("_reconstruct", "scalar")} | {("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_npz(path: str) -> dict:
    """All arrays of an .npz; object arrays through the restricted unpickler above."""
    out = {}
    try:
        with zipfile.ZipFile(path) as z:
            for member in z.namelist():
                if not member.endswith(".npy"):
                    continue
                with z.open(member) as f:
                    raw = io.BytesIO(f.read())
                version = np.lib.format.read_magic(raw)
                if version == (1, 0):
                    dtype = np.lib.format.read_array_header_1_0(raw)[2]
                else:
                    dtype = np.lib.format.read_array_header_2_0(raw)[2]
                if dtype.hasobject:
                    arr = _ArrayUnpickler(raw).load()
                else:
                    raw.seek(0)
                    arr = np.lib.format.read_array(raw, allow_pickle=False)
                out[member[:-4]] = arr
    except (zipfile.BadZipFile, ValueError, EOFError, pickle.UnpicklingError, OSError) as exc:
        raise DataError(f"cannot read {path!r} as .npz: {exc}") from None
    return out


def load_imdb_npz(path: str) -> Dataset:
    """Keras' imdb.npz (or any .npz with x_train, y_train and optionally x_test, y_test).

    x as object arrays of word-rank lists (Keras' file: rank 1 = most frequent word) become
    ids rank + 1 (0 is padding, 1 `<unk>`): kind "ids". x as a 2-D int array is taken as
    already-encoded ids padded with 0; as a 3-D float array (N, T, F), as features."""
    _need(path, "data file")
    a = _read_npz(path)
    if "x_train" not in a or "y_train" not in a:
        raise DataError(f"{path!r} must contain x_train and y_train (found {sorted(a)})")

    def conv(key: str, x: np.ndarray) -> tuple[str, Any]:
        if x.dtype.hasobject:
            try:
                seqs = [np.asarray(s, np.int64).reshape(-1) for s in x]
            except (TypeError, ValueError):
                raise DataError(f"{path!r}: {key} must hold sequences of integer word ranks"
                                ) from None
            _no_negative_ids(path, key, min((int(s.min()) for s in seqs if len(s)), default=0))
            return "ids", [s + 1 for s in seqs]
        if x.ndim == 3 and x.dtype.kind == "f":
            if not np.isfinite(x).all():
                raise DataError(f"{path!r}: {key} contains NaN or infinity")
            return "features", x
        if x.ndim == 2 and x.dtype.kind in "iu":
            _no_negative_ids(path, key, int(x.min(initial=0)))
            return "ids", [row[row != 0].astype(np.int64) for row in x]
        raise DataError(f"unsupported x array in {path!r}: dtype {x.dtype}, shape {x.shape}")

    def labels(key: str, n: int) -> np.ndarray:
        y = np.asarray(a[key])
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:  # one-hot or multi-label rows would be read as extra samples
            raise DataError(f"{path!r}: {key} must hold one class label per sample, got shape "
                            f"{y.shape}")
        x_key = "x" + key[1:]
        if len(y) != n:  # zip-like truncation would silently drop samples
            raise DataError(f"{path!r}: {x_key} has {n:,} samples but {key} has {len(y):,}")
        return y

    kind, xtr = conv("x_train", a["x_train"])
    ytr = labels("y_train", len(xtr))
    xte = yte = None
    if "x_test" in a and "y_test" in a:
        kind_te, xte = conv("x_test", a["x_test"])
        if kind_te != kind or (kind == "features" and xte.shape[2] != xtr.shape[2]):
            what = {"ids": "token ids", "features": "features"}
            raise DataError(f"{path!r}: x_test ({what[kind_te]}, shape "
                            f"{a['x_test'].shape}) does not match x_train ({what[kind]}, "
                            f"shape {a['x_train'].shape})")
        yte = labels("y_test", len(xte))
    return Dataset(xtr, ytr, xte, yte, kind=kind, name="npz")


def _no_negative_ids(path: str, key: str, lowest: int) -> None:
    if lowest < 0:  # e.g. -1 padding: ids index the embedding, 0 is the padding id
        raise DataError(f"{path!r}: {key} holds negative token ids (lowest {lowest}); ids "
                        "must be >= 0, with 0 as padding")


_HEAD_TEXT = {"text", "sentence", "review", "document", "content", "texts", "x"}
_HEAD_LABEL = {"label", "labels", "sentiment", "class", "target", "y", "polarity"}


def load_delimited(path: str, delimiter: str = "\t") -> Dataset:
    """`text<delimiter>label` lines (TSV: tab, CSV: comma with quoting). A first line whose
    fields are names like text/label is a header and skipped. Decoded by decode_text."""
    _need(path, "data file")
    if os.path.isdir(path):
        raise DataError(f"{path!r} is a folder; the tsv/csv formats read one file")
    with open(path, "rb") as f:
        content = decode_text(f.read())
    # newline="": a bare CR (old Mac files, stray ones in scraped text) ends a line, as in
    # str.splitlines() which `fastgru predict` uses, instead of failing inside csv
    reader = csv.reader(io.StringIO(content, newline=""), delimiter=delimiter,
                        quoting=csv.QUOTE_MINIMAL if delimiter == "," else csv.QUOTE_NONE)
    texts: list[str] = []
    labels: list[str] = []
    try:
        for row in reader:
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != 2:
                sep = "tab" if delimiter == "\t" else repr(delimiter)
                raise DataError(f"{path}:{reader.line_num}: expected 2 fields (text {sep} "
                                f"label), got {len(row)}")
            if not texts and row[0].strip().lower() in _HEAD_TEXT and \
                    row[1].strip().lower() in _HEAD_LABEL:
                continue
            if not row[1].strip():
                raise DataError(f"{path}:{reader.line_num}: empty class label (the text is "
                                f"{row[0][:40]!r}{'...' if len(row[0]) > 40 else ''})")
            texts.append(row[0])
            labels.append(row[1].strip())
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: {exc}") from None
    return Dataset(texts, np.array(labels, dtype=object), kind="text",
                   name="csv" if delimiter == "," else "tsv")


def load_digits_sequences(dtype: Any = np.float32) -> Dataset:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, no download) as sequences:
    each image read row by row, 8 steps of 8 pixel features scaled to [0, 1]; labels 0-9."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - depends on the environment
        raise DataError("the built-in digits data needs scikit-learn: "
                        "pip install 'fastgru[examples]'") from None
    d = load_digits()
    x = (d.images / 16.0).astype(dtype)  # (N, 8, 8): time = image row
    return Dataset(x, d.target.astype(np.int64), kind="features", name="digits")


# ------------------------------------------------------------------------------------------
# synthetic tasks


_POS = ["good", "great", "fine", "superb", "fun", "moving"]
_NEG = ["bad", "awful", "dull", "boring", "weak", "poor"]
_NEUTRAL = ["the", "movie", "film", "plot", "actor", "a", "is", "was", "and", "scene", "story",
            "it", "this", ",", "."]


def make_sentiment_texts(n: int = 400, seed: int = 0, min_len: int = 4, max_len: int = 20
                         ) -> tuple[list[str], np.ndarray]:
    """Short 'reviews' of neutral words plus sentiment words; label 1 when positive words
    outnumber negative ones (ties broken by adding one more word). Lengths vary."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(n):
        L = int(rng.integers(min_len, max_len + 1))
        words = list(rng.choice(_NEUTRAL, size=L))
        lab = int(rng.integers(2))
        k = int(rng.integers(1, 3))
        for _ in range(k):
            words.insert(int(rng.integers(len(words) + 1)), str(rng.choice(_POS if lab else _NEG)))
        if rng.random() < 0.3:  # one word of the other side
            words.insert(int(rng.integers(len(words) + 1)), str(rng.choice(_NEG if lab else _POS)))
            words.insert(int(rng.integers(len(words) + 1)), str(rng.choice(_POS if lab else _NEG)))
        texts.append(" ".join(words))
        labels.append(lab)
    return texts, np.array(labels, np.int64)


def make_noisy_sine(n: int = 256, T: int = 40, noise: float = 0.1, seed: int = 0,
                    dtype: Any = np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Forecasting: x (n, T, 1) noisy sine waves of random frequency and phase, y (n, T, 1) the
    clean value at the next step (predict x_{t+1} from x_0..x_t)."""
    rng = np.random.default_rng(seed)
    f = rng.uniform(0.05, 0.2, size=(n, 1))
    ph = rng.uniform(0, 2 * np.pi, size=(n, 1))
    t = np.arange(T + 1)[None, :]
    s = np.sin(2 * np.pi * f * t + ph)
    x = s[:, :T] + noise * rng.standard_normal((n, T))
    return x[:, :, None].astype(dtype), s[:, 1:, None].astype(dtype)


_PATTERN_WORDS = ["the cat sat on the mat.", "a dog ran in the park.",
                  "the bird sang a song.", "a fish swam in the sea."]


def make_pattern_text(n_sentences: int = 200, seed: int = 0) -> str:
    """A small corpus of a few sentences in random order: a character language model can learn
    it in seconds, and its samples show whether it did."""
    rng = np.random.default_rng(seed)
    return " ".join(_PATTERN_WORDS[i] for i in rng.integers(len(_PATTERN_WORDS), size=n_sentences))


def lm_windows(ids: Any, seq_len: int, step: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Next-token training pairs from one long id sequence: x (N, seq_len) windows starting
    every `step` ids (default seq_len) and y (N, seq_len) the same windows shifted by one."""
    ids = np.asarray(ids, np.int64).reshape(-1)
    seq_len = int(seq_len)
    step = seq_len if step is None else int(step)
    if seq_len < 1 or step < 1:
        raise ValueError("seq_len and step must be >= 1")
    if len(ids) < seq_len + 1:
        raise ValueError(f"need more than seq_len={seq_len} ids, got {len(ids)}")
    starts = np.arange(0, len(ids) - seq_len, step)
    win = starts[:, None] + np.arange(seq_len)[None, :]
    return ids[win], ids[win + 1]


def pad_ragged(seqs: Sequence[Any], dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    """A list of (T_i,) or (T_i, F) arrays -> ((N, T, ...) zero-padded array, (N,) lengths)."""
    if (isinstance(seqs, tuple) and len(seqs) == 2 and isinstance(seqs[0], np.ndarray)
            and isinstance(seqs[1], np.ndarray) and seqs[0].ndim >= 2 and seqs[1].ndim == 1
            and len(seqs[1]) == len(seqs[0]) and seqs[1].dtype.kind in "iu"):
        raise TypeError("x is a tuple (padded array, lengths), as fastgru.pad_sequences and "
                        "Vocabulary.encode return: pass the array, x[0] (the model finds the "
                        "lengths from the padding) or the list of sequences")
    arrs = [np.asarray(s) for s in seqs]
    if not arrs:
        raise ValueError("x is empty")
    if arrs[0].ndim <= 1 and np.dtype(dtype).kind in "iu":
        return pad_sequences(arrs, dtype=dtype)
    tail = arrs[0].shape[1:]
    for i, a in enumerate(arrs):
        if a.shape[1:] != tail or a.shape[0] < 1:
            raise ValueError(f"sequence {i} has shape {a.shape}; every sequence needs >= 1 step "
                             f"and feature shape {tail}")
    L = np.array([len(a) for a in arrs], np.int64)
    out = np.zeros((len(arrs), int(L.max())) + tail, dtype)
    for i, a in enumerate(arrs):
        out[i, :len(a)] = a
    return out, L
