"""Sentiment classification: Embedding -> GRU/LSTM -> Dense(sigmoid), binary cross-entropy.

    python examples/sentiment.py                                  # synthetic reviews, seconds
    python examples/sentiment.py --data ../shared/data/mr         # MR (rt-polarity.pos/.neg)
    python examples/sentiment.py --data aclImdb --cell lstm       # the IMDB folder

Builds a vocabulary on the training texts, trains with Adam, watches validation accuracy,
saves the model and the learning curves, and classifies two new sentences.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import fastgru


def load(path):
    """(train texts, train labels, test texts, test labels)."""
    if path is None:
        texts, y = fastgru.make_sentiment_texts(2000, seed=0)
        return texts[:1600], y[:1600], texts[1600:], y[1600:]
    if os.path.isfile(os.path.join(path, "rt-polarity.pos")):
        ds = fastgru.load_mr(path)
    elif path.endswith((".tsv", ".csv")):
        ds = fastgru.load_delimited(path, "," if path.endswith(".csv") else "\t")
    else:
        ds = fastgru.load_aclimdb(path)
    y, classes = fastgru.encode_labels(ds.y_train)
    if ds.has_test:
        return ds.x_train, y, ds.x_test, fastgru.encode_labels(ds.y_test, classes)[0]
    tr, te = fastgru.stratified_split(y, 0.1, seed=0)  # a fixed, seeded 90/10 split
    return [ds.x_train[i] for i in tr], y[tr], [ds.x_train[i] for i in te], y[te]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="MR folder, aclImdb folder or a TSV/CSV file")
    ap.add_argument("--cell", default="gru", choices=["gru", "lstm"])
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--out", default="runs/sentiment")
    ap.add_argument("--quick", action="store_true", help="tiny model and data (tests)")
    args = ap.parse_args(argv)

    x_tr, y_tr, x_te, y_te = load(args.data)
    if args.quick:
        x_tr, y_tr, args.hidden, args.epochs = x_tr[:600], y_tr[:600], 16, 6
    vocab = fastgru.Vocabulary.build(x_tr, max_size=30000)
    ids_tr, _ = vocab.encode(x_tr, max_len=400)
    ids_te, _ = vocab.encode(x_te, max_len=400)
    print(f"{len(x_tr)} training texts, {len(x_te)} test texts, vocabulary {len(vocab)}")

    model = fastgru.TextClassifier(len(vocab), embed_dim=128, hidden_size=args.hidden,
                                   cell=args.cell, dropout=0.0 if args.quick else 0.5,
                                   learning_rate=1e-2 if args.quick else 2e-3, vocab=vocab,
                                   max_len=400, seed=0)
    model.summary()
    t = time.perf_counter()
    history = model.fit(ids_tr, y_tr, epochs=args.epochs, batch_size=32,
                        validation_data=(ids_te, y_te), verbose=2 if args.quick else "auto")
    seconds = time.perf_counter() - t
    loss, acc = model.evaluate(ids_te, y_te)
    print(f"test accuracy {acc:.4f}, loss {loss:.4f}, {seconds:.1f} s")

    os.makedirs(args.out, exist_ok=True)
    model.save(os.path.join(args.out, "model.npz"))
    fastgru.plot_history(history, os.path.join(args.out, "curves.png"))
    reloaded = fastgru.load_model(os.path.join(args.out, "model.npz"))
    for s in ["a moving , superb film", "dull and boring , an awful plot"]:
        print(f"{reloaded.predict([s])[0, 0]:.3f}  {s}")
    return {"test_accuracy": acc, "history": history.history}


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except fastgru.DataError as exc:  # bad data: one line and status 2, as `fastgru train`
        print(f"sentiment.py: error: {exc}", file=sys.stderr)
        sys.exit(2)
