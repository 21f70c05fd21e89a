"""Text to int arrays: a tokenizer, a vocabulary with `<pad>` = 0 and `<unk>` = 1, and padding.

    vocab = Vocabulary.build(train_texts, min_freq=2, max_size=20000)
    ids, lengths = vocab.encode(texts, max_len=200)      # (N, T) int32, (N,) int64
    vocab.save("vocab.json"); Vocabulary.load("vocab.json")

Tokenization normalizes Unicode (NFC; typographic apostrophes such as U+2019 become "'"),
lower-cases, removes HTML line breaks (IMDB reviews have `<br />`), and splits into words
(letters/digits, keeping inner apostrophes: "don't", "don’t") and single punctuation marks.
`char_level=True` makes every character a token (character language models).
"""
from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from fastgru.checkpoint import atomic_write_text

__all__ = ["Tokenizer", "Vocabulary", "pad_sequences"]

_WORD = re.compile(r"\w+(?:'\w+)*|'\w+|[^\w\s]")
_HTML_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
# right single quotation mark, modifier letter apostrophe, fullwidth apostrophe
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u02bc": "'", "\uff07": "'"})


class Tokenizer:
    """text -> list of tokens. lower: lower-case first; char_level: one token per character;
    normalize: Unicode NFC first (a decomposed "é" is the composed one) and, for words,
    typographic apostrophes as "'" (so "it’s" is the token "it's", not "it", "’", "s").
    Vocabularies saved before `normalize` existed load with normalize=False, as they were
    built."""

    def __init__(self, lower: bool = True, char_level: bool = False,
                 normalize: bool = True) -> None:
        self.lower, self.char_level = bool(lower), bool(char_level)
        self.normalize = bool(normalize)

    def __call__(self, text: str) -> list[str]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if self.normalize:
            text = unicodedata.normalize("NFC", text)
        if self.lower:
            text = text.lower()
        if self.char_level:
            return list(text)
        if self.normalize:
            text = text.translate(_APOSTROPHES)
        return _WORD.findall(_HTML_BREAK.sub(" ", text))

    def get_config(self) -> dict[str, Any]:
        return {"lower": self.lower, "char_level": self.char_level, "normalize": self.normalize}


def pad_sequences(seqs: Sequence[Any], maxlen: int | None = None,
                  padding: str = "post", truncating: str = "pre", value: int = 0,
                  dtype: Any = np.int32) -> tuple[np.ndarray, np.ndarray]:
    """Lists of ids -> ((N, T) array, (N,) lengths). T = maxlen or the longest sequence.
    truncating "pre" keeps the end of a long sequence (Keras' default), "post" its start;
    padding "post" (unlike Keras' "pre": fastgru's layers take lengths) puts `value` after
    the tokens, "pre" before. Rows may be sequences of vectors (N, T, ...), and values keep
    their type up to `dtype` (floats with a float dtype), as in keras.utils.pad_sequences."""
    if padding not in ("pre", "post") or truncating not in ("pre", "post"):
        raise ValueError("padding and truncating must be 'pre' or 'post'")
    if maxlen is not None and (not isinstance(maxlen, (int, np.integer)) or maxlen < 1):
        raise ValueError(f"maxlen must be a positive int or None, got {maxlen!r}")
    if isinstance(seqs, (str, bytes)) or not hasattr(seqs, "__iter__"):
        raise TypeError(f"seqs must be a list of sequences, got {type(seqs).__name__}")
    arrs = [np.asarray(s) for s in seqs]
    if any(a.ndim == 0 for a in arrs):
        raise ValueError("pad_sequences takes a list of sequences; an element is a scalar")
    sample = next((a.shape[1:] for a in arrs if len(a)), ())
    for i, a in enumerate(arrs):
        if len(a) and a.shape[1:] != sample:
            raise ValueError(f"sequence {i} has items of shape {a.shape[1:]}, the first "
                             f"non-empty one {sample}")
        if np.dtype(dtype).kind in "iu" and a.dtype.kind == "f" and np.any(a != np.round(a)):
            raise TypeError(f"sequence {i} holds non-integer values; pass a float dtype "
                            f"(dtype={np.dtype(dtype)} would truncate them)")
        if np.dtype(dtype).kind in "iu" and a.dtype.kind in "iuf" and a.size:
            info = np.iinfo(dtype)  # NumPy's array assignment would wrap them silently
            if a.min() < info.min or a.max() > info.max:
                raise ValueError(f"sequence {i} holds values outside {np.dtype(dtype)}'s range "
                                 f"[{info.min}, {info.max}]; pass a wider dtype")
    lengths = np.array([len(s) for s in arrs], np.int64)
    T = int(maxlen) if maxlen is not None else int(lengths.max(initial=1)) or 1
    T = max(T, 1)
    out = np.full((len(arrs), T) + sample, value, dtype=dtype)
    for i, s in enumerate(arrs):
        if len(s) > T:
            s = s[-T:] if truncating == "pre" else s[:T]
        if len(s):
            if padding == "post":
                out[i, :len(s)] = s
            else:
                out[i, T - len(s):] = s
    return out, np.minimum(lengths, T)


class Vocabulary:
    """Token <-> id map. Id 0 is `<pad>`, id 1 `<unk>` (every unknown token), then the tokens by
    decreasing frequency (ties alphabetically, so a build is deterministic)."""

    PAD, UNK = "<pad>", "<unk>"
    PAD_ID, UNK_ID = 0, 1

    def __init__(self, tokens: Sequence[str], tokenizer: Tokenizer | None = None) -> None:
        tokens = list(tokens)
        if tokens[:2] != [self.PAD, self.UNK]:
            raise ValueError("tokens must start with '<pad>', '<unk>'")
        if len(set(tokens)) != len(tokens):
            raise ValueError("tokens must be unique")
        self.tokens = tokens
        self.index = {t: i for i, t in enumerate(tokens)}
        self.tokenizer = tokenizer or Tokenizer()

    @classmethod
    def build(cls, texts: Iterable[str], min_freq: int = 1, max_size: int | None = None,
              lower: bool = True, char_level: bool = False,
              normalize: bool = True) -> Vocabulary:
        """Count the tokens of `texts`; keep those seen >= min_freq times, at most max_size
        entries in all (including `<pad>` and `<unk>`)."""
        if int(min_freq) < 1:
            raise ValueError(f"min_freq must be >= 1, got {min_freq!r}")
        if max_size is not None and int(max_size) < 3:
            raise ValueError(f"max_size must be >= 3 or None, got {max_size!r}")
        tok = Tokenizer(lower=lower, char_level=char_level, normalize=normalize)
        counts: Counter = Counter()
        for t in texts:
            counts.update(tok(t))
        for special in (cls.PAD, cls.UNK):
            counts.pop(special, None)
        kept = sorted((w for w, c in counts.items() if c >= min_freq),
                      key=lambda w: (-counts[w], w))
        if max_size is not None:
            kept = kept[: int(max_size) - 2]
        return cls([cls.PAD, cls.UNK] + kept, tok)

    def __len__(self) -> int:
        return len(self.tokens)

    def ids(self, tokens: Iterable[str]) -> list[int]:
        get = self.index.get
        return [get(t, self.UNK_ID) for t in tokens]

    def encode(self, texts: Iterable[str], max_len: int | None = None,
               truncating: str = "pre", trim: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Texts -> ((N, T) int32 ids, (N,) lengths), padded with 0 after the tokens. An empty
        text becomes one `<unk>`. T = max_len or the longest text; trim=True: max_len only
        caps T (T = the longest text when shorter), so a generous max_len costs no memory."""
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, not one string")
        seqs = [self.ids(self.tokenizer(t)) or [self.UNK_ID] for t in texts]
        if trim and max_len is not None:
            max_len = min(max_len, max((len(s) for s in seqs), default=1))
        return pad_sequences(seqs, maxlen=max_len, truncating=truncating)

    def decode(self, ids: Iterable[int], skip_pad: bool = True) -> list[str]:
        """Ids -> tokens (the pad id dropped unless skip_pad=False)."""
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < len(self.tokens)]
        if bad:  # a negative id would index from the end
            raise ValueError(f"ids must be in [0, {len(self.tokens)}), got {bad[:5]}")
        return [self.tokens[i] for i in ids if not (skip_pad and i == self.PAD_ID)]

    # -- persistence ------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "tokenizer": self.tokenizer.get_config()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Vocabulary:
        if not isinstance(d, dict) or not isinstance(d.get("tokens"), list):
            raise ValueError("not a vocabulary document (no 'tokens' list)")
        cfg = d.get("tokenizer", {})
        if not isinstance(cfg, dict) or set(cfg) - {"lower", "char_level", "normalize"}:
            raise ValueError(f"not a vocabulary document (tokenizer settings {cfg!r})")
        # a vocabulary saved before `normalize` existed was built without it
        return cls(d["tokens"], Tokenizer(**{"normalize": False, **cfg}))

    def save(self, path: str) -> None:
        """Write the vocabulary as JSON (atomically)."""
        atomic_write_text(path, json.dumps(self.to_json(), ensure_ascii=False))

    @classmethod
    def load(cls, path: str) -> Vocabulary:
        with open(path, encoding="utf-8") as f:
            return cls.from_json(json.load(f))

    def __repr__(self) -> str:
        return f"Vocabulary(size={len(self)})"
