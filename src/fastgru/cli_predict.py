"""`fastgru predict`: run a trained model on new data and print or write its predictions.

    fastgru predict runs/mr "a gripping, beautifully acted film" "dull and far too long"
    fastgru predict runs/mr --input reviews.txt --output predictions.csv
    fastgru predict runs/digits --input x.npy --output predictions.json

MODEL is a `fastgru train` output folder (its model.npz is read) or any file written by
model.save(). Inputs: texts on the command line or a text file with one text per line ('-'
reads standard input), for models trained on text (they carry their vocabulary); or a .npy
array / .npz archive (its array 'x', 'x_test' or its only array) of token ids (N, T) or
features (N, T, F).

One line per input, in input order: the predicted label, the model's probability of that
label and, for text, the text (tab-separated). --output writes .csv or .tsv (the same columns
plus one probability column per class), .json (a list of records) or .npy (the probabilities,
(N, K); the values for a regressor).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from typing import Any

import numpy as np

OUTPUTS = (".csv", ".tsv", ".json", ".npy")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = __doc__.split("\n\n", 1)[1]
    p.add_argument("model", metavar="MODEL", help="a `fastgru train` --out folder or a model file")
    p.add_argument("texts", metavar="TEXT", nargs="*", help="texts to classify (text models)")
    p.add_argument("--input", metavar="FILE",
                   help="a text file (one text per line, '-' for stdin), .npy or .npz")
    p.add_argument("--output", metavar="FILE", help=f"write {', '.join(OUTPUTS)} instead of "
                                                    "printing")
    p.add_argument("--batch-size", metavar="N", default="256", help="default 256")
    p.add_argument("--threads", metavar="N", help="threads (default or -1: fastgru's policy, all "
                   "physical cores)")


def run(args: argparse.Namespace) -> int:
    from fastgru.checkpoint import CheckpointError
    from fastgru.cli import UserError
    from fastgru.data import DataError

    try:
        return _run(args)
    except (CheckpointError, DataError) as exc:
        raise UserError(str(exc)) from None


def _int_arg(value: Any, name: str) -> int:
    from fastgru.cli import UserError

    try:
        v = int(value)
    except (TypeError, ValueError):
        v = 0
    if v < 1 or str(value).strip() != str(v):
        raise UserError(f"{name} must be a positive integer, got {value!r}")
    return v


def _model_path(path: str) -> str:
    from fastgru.cli import UserError

    if os.path.isdir(path):
        inner = os.path.join(path, "model.npz")
        if not os.path.isfile(inner):
            raise UserError(f"{path!r} is a folder without model.npz: give the --out folder "
                            "of `fastgru train` or a model file")
        return inner
    if not os.path.isfile(path):
        raise UserError(f"model {path!r} does not exist")
    return path


def _read_inputs(args: argparse.Namespace, model: Any) -> tuple[Any, list[str] | None]:
    """(x for model.predict, the texts or None)."""
    from fastgru.cli import UserError
    from fastgru.data import decode_text

    if args.texts and args.input:
        raise UserError("give texts on the command line or --input, not both")
    if not args.texts and not args.input:
        raise UserError("nothing to predict: give texts or --input FILE")
    src = args.input
    ext = os.path.splitext(src)[1].lower() if src else ""
    if ext in (".npy", ".npz"):
        if not os.path.isfile(src):
            raise UserError(f"input {src!r} does not exist")
        with open(src, "rb") as f:
            magic = f.read(6)
        if magic[:6 if ext == ".npy" else 2] != (b"\x93NUMPY" if ext == ".npy" else b"PK"):
            raise UserError(f"{src!r} is not a NumPy {ext} file")
        try:
            if ext == ".npy":
                return np.load(src, allow_pickle=False), None
            with np.load(src, allow_pickle=False) as archive:
                return _array_of(archive, src), None
        except (ValueError, OSError, EOFError) as exc:
            raise UserError(f"cannot read {src!r} as {ext}: {exc}") from None
    if args.texts:
        texts = list(args.texts)
    elif src == "-":
        buf = getattr(sys.stdin, "buffer", None)  # absent when stdin was replaced by text
        texts = (decode_text(buf.read()) if buf is not None else sys.stdin.read()).splitlines()
    else:
        if not os.path.isfile(src):
            raise UserError(f"input {src!r} does not exist")
        with open(src, "rb") as f:
            raw = f.read()
        if b"\0" in raw:
            raise UserError(f"{src!r} is not a text file (arrays go in .npy or .npz files)")
        texts = decode_text(raw).splitlines()
    if getattr(model, "vocab", None) is None:
        raise UserError("this model takes arrays, not texts (it has no vocabulary): give "
                        "--input x.npy or .npz")
    if not texts:
        raise UserError("the input holds no texts")
    empty = [i + 1 for i, t in enumerate(texts) if not model.vocab.tokenizer(t)]
    if empty:  # Vocabulary.encode scores them as one <unk>: rarely what the user meant
        where = ", ".join(map(str, empty[:5])) + (", ..." if len(empty) > 5 else "")
        print(f"fastgru predict: warning: {len(empty)} text(s) without tokens (number {where}); "
              "each is scored as one <unk> token", file=sys.stderr)
    return texts, texts


def _array_of(archive: Any, src: str) -> np.ndarray:
    from fastgru.cli import UserError

    names = list(archive.files)
    for name in ("x", "x_test"):
        if name in names:
            return archive[name]
    if len(names) == 1:
        return archive[names[0]]
    raise UserError(f"{src!r} holds {', '.join(names)}: name the inputs 'x' (or 'x_test')")


def _run(args: argparse.Namespace) -> int:
    import fastgru
    from fastgru.cli import UserError

    batch_size = _int_arg(args.batch_size, "--batch-size")
    threads = None if args.threads in (None, "-1") else _int_arg(args.threads, "--threads")
    if args.output and os.path.splitext(args.output)[1].lower() not in OUTPUTS:
        raise UserError(f"--output must end in one of {', '.join(OUTPUTS)}, got "
                        f"{args.output!r}")
    model = fastgru.load_model(_model_path(args.model))  # compiled: the loss gives the head
    if model.output_spec.sequence:
        raise UserError("this model predicts one output per step (a language or sequence "
                        "model); `fastgru predict` takes models with one output per input")
    x, texts = _read_inputs(args, model)
    if threads is not None:
        model.set_threads(threads)
    try:
        probs = model.predict(x, batch_size=batch_size)
    except (ValueError, TypeError) as exc:
        raise UserError(f"the input does not fit the model: {exc}") from None
    rows, columns, table = _rows(model, probs)
    if args.output:
        _write(args.output, rows, columns, table, texts)
        print(f"wrote {len(rows):,} predictions to {args.output}")
        return 0
    for i, (label, p, _) in enumerate(rows):
        tail = "" if texts is None else "\t" + texts[i]
        print(f"{label}\t{p:.4f}{tail}")
    return 0


def _rows(model: Any, probs: np.ndarray) -> tuple[list[tuple[Any, float, list[float]]],
                                                  list[str], np.ndarray]:
    """Per input: (label, probability of that label, all class probabilities), the class
    column names and the (N, K) probabilities. A regressor: (value, value, values)."""
    if model.head is None:  # a regressor: the values themselves
        vals = probs.reshape(len(probs), -1)
        return ([(float(v[0]), float(v[0]), [float(a) for a in v]) for v in vals],
                [f"output_{j}" for j in range(vals.shape[1])], vals)
    if model.head == "sigmoid":
        p1 = probs.reshape(len(probs), -1)[:, 0].astype(np.float64)
        full = np.stack([1 - p1, p1], 1)
    else:
        full = probs.astype(np.float64)
    ids = full.argmax(1)
    classes = list(model.classes_) if model.classes_ is not None else list(range(full.shape[1]))
    labels = [classes[k] for k in ids]
    return ([(_plain(lab), float(full[i, k]), [float(a) for a in full[i]])
             for i, (lab, k) in enumerate(zip(labels, ids, strict=True))],
            [f"p_{_plain(c)}" for c in classes], full.astype(probs.dtype))


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _write(path: str, rows: list, columns: list[str], table: np.ndarray,
           texts: list[str] | None) -> None:
    import io

    from fastgru.checkpoint import atomic_write_bytes

    ext = os.path.splitext(path)[1].lower()
    if ext == ".npy":
        raw = io.BytesIO()
        np.save(raw, table)
        data = raw.getvalue()
    elif ext == ".json":
        recs = [dict(label=lab, probability=p, **dict(zip(columns, ps, strict=True)),
                     **({} if texts is None else {"text": texts[i]}))
                for i, (lab, p, ps) in enumerate(rows)]
        data = json.dumps(recs, indent=1, ensure_ascii=False).encode()
    else:
        buf = io.StringIO()
        w = csv.writer(buf, delimiter="\t" if ext == ".tsv" else ",", lineterminator="\n")
        w.writerow(["label", "probability"] + columns + ([] if texts is None else ["text"]))
        for i, (lab, p, ps) in enumerate(rows):
            w.writerow([lab, f"{p:.6g}"] + [f"{a:.6g}" for a in ps]
                       + ([] if texts is None else [texts[i]]))
        data = buf.getvalue().encode()
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        from fastgru.cli import UserError

        raise UserError(f"cannot write {path!r}: {exc.strerror or exc}") from None
