"""Character language model: Embedding -> GRU -> Dense softmax over the characters, trained with
categorical cross-entropy on next-character targets, then sampled with a temperature.

    python examples/char_lm.py                     # a small built-in corpus
    python examples/char_lm.py --text book.txt     # any UTF-8 text file

Low temperatures give the most likely (repetitive) text, high ones more varied (and more
wrong) text. Use --word for a word-level model instead.
"""
from __future__ import annotations

import argparse
import sys

import fastgru


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--text", help="a UTF-8 text file (default: a built-in corpus)")
    ap.add_argument("--word", action="store_true", help="word tokens instead of characters")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--quick", action="store_true", help="small corpus and model (tests)")
    args = ap.parse_args(argv)

    if args.text:
        with open(args.text, encoding="utf-8") as f:
            text = f.read()
    else:
        text = fastgru.make_pattern_text(120 if args.quick else 600, seed=0)
    vocab = fastgru.Vocabulary.build([text], char_level=not args.word, lower=False)
    ids = vocab.ids(vocab.tokenizer(text))
    x, y = fastgru.lm_windows(ids, args.seq_len, step=args.seq_len // 2)
    print(f"{len(ids)} tokens, vocabulary {len(vocab)}, {len(x)} windows of {args.seq_len}")

    model = fastgru.LanguageModel(len(vocab), embed_dim=32, hidden_size=args.hidden,
                                  learning_rate=1e-2, vocab=vocab, seed=0)
    model.fit(x, y, epochs=args.epochs, batch_size=32, verbose=2, validation_split=0.1)
    samples = {}
    for temperature in (0.0, 0.5, 1.0):
        s = model.generate("the ", length=80, temperature=temperature, seed=1)
        samples[temperature] = s
        print(f"temperature {temperature}: {'the ' + s!r}")
    return {"history": model.history.history, "samples": samples}


if __name__ == "__main__":
    main(sys.argv[1:])
