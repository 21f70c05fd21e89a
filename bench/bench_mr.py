"""MR sentence polarity: a from-scratch GRU classifier trained with fastgru, and the same model
and recipe in PyTorch, measured in the same run. Not part of the test suite.

    python bench/bench_mr.py                          # ../shared/data/mr, the default recipe
    python bench/bench_mr.py --threads 1 --seeds 0 1 2
    python bench/bench_mr.py --json results.json

Data: rt-polarity.pos/.neg, a fixed stratified 90/10 split (seed 0); the vocabulary is built on
the training part. The recipe is `fastgru train`'s text recipe: Embedding(V, 128) -> dropout
0.5 -> bidirectional GRU(64) -> max over valid steps -> dropout 0.5 -> Dense(1), binary
cross-entropy on logits, Adam lr 2e-3 (lazy/sparse on the embedding rows), batch 32 bucketed by
length, 6 epochs.

PyTorch gets the very same initial weights, the same batches (bucketed with the same policy)
and the same optimizer semantics: SparseAdam on an nn.Embedding(sparse=True) plus Adam on the
rest. Two variants: "packed" (pack_padded_sequence: no compute on padding, as fastgru) and
"padded" (the batch runs over its padding, the last valid state is gathered). Times are
training seconds only (no evaluation), summed over epochs.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

import fastgru
from fastgru.data import length_batches

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data", "mr"))


def load(path, max_size):
    ds = fastgru.load_mr(path)
    y = ds.y_train
    tr, te = fastgru.stratified_split(y, 0.1, seed=0)
    vocab = fastgru.Vocabulary.build([ds.x_train[i] for i in tr], max_size=max_size)
    x, L = vocab.encode(ds.x_train)
    return vocab, x[tr], L[tr], y[tr], x[te], L[te], y[te]


def run_fastgru(data, r, seed, threads):
    vocab, xtr, _, ytr, xte, _, yte = data
    m = fastgru.TextClassifier(len(vocab), embed_dim=r["embed"], hidden_size=r["hidden"],
                               cell=r["cell"], bidirectional=r["bidirectional"],
                               dropout=r["dropout"], pooling=r["pooling"],
                               learning_rate=r["lr"], seed=seed)
    m.set_threads(threads)
    init = m.get_weights()
    h = m.fit(xtr, ytr, epochs=r["epochs"], batch_size=r["batch"], verbose=0)
    secs = float(sum(h.seconds))
    loss, acc = m.evaluate(xte, yte)
    return dict(test_accuracy=acc, test_loss=loss, train_seconds=secs,
                epoch_seconds=h.seconds, samples_per_second=r["epochs"] * len(xtr) / secs), init


def run_torch(data, r, seed, threads, init, variant):
    import torch
    import torch.nn as nn

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    vocab, xtr, Ltr, ytr, xte, Lte, yte = data
    H = r["hidden"]
    D = 2 if r["bidirectional"] else 1

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(len(vocab), r["embed"], padding_idx=0, sparse=True)
            cls = nn.GRU if r["cell"] == "gru" else nn.LSTM
            self.rnn = cls(r["embed"], H, batch_first=True, bidirectional=r["bidirectional"])
            self.drop = nn.Dropout(r["dropout"])
            self.out = nn.Linear(D * H, 1)

        def forward(self, x, L):
            e = self.drop(self.emb(x))
            if variant == "packed":
                pk = nn.utils.rnn.pack_padded_sequence(e, L, batch_first=True,
                                                       enforce_sorted=False)
                yp, h = self.rnn(pk)
                if r["pooling"] == "last":
                    h = h[0] if isinstance(h, tuple) else h
                    return self.out(self.drop(torch.cat([h[-2], h[-1]], 1) if D == 2
                                              else h[-1]))[:, 0]
                y, _ = nn.utils.rnn.pad_packed_sequence(yp, batch_first=True)
            else:
                # runs over the padding too (the reverse direction even starts in it)
                y, _ = self.rnn(e)
            valid = (torch.arange(y.shape[1])[None, :] < L[:, None])[:, :, None]
            if r["pooling"] == "last":
                idx = (L - 1).view(-1, 1, 1).expand(-1, 1, D * H)
                z = y.gather(1, idx)[:, 0]
                if D == 2:
                    z = torch.cat([z[:, :H], y[:, 0, H:]], 1)
            elif r["pooling"] == "max":
                z = y.masked_fill(~valid, float("-inf")).max(1).values
            else:
                z = (y * valid).sum(1) / L[:, None]
            return self.out(self.drop(z))[:, 0]

    net = Net()
    with torch.no_grad():  # the same initial weights as fastgru
        net.emb.weight.copy_(torch.from_numpy(init["embedding.weight"]))
        for k, p in net.rnn.named_parameters():
            p.copy_(torch.from_numpy(init[f"{r['cell']}.{k}"]))
        net.out.weight.copy_(torch.from_numpy(init["classifier.weight"]))
        net.out.bias.copy_(torch.from_numpy(init["classifier.bias"]))
    dense = [p for n, p in net.named_parameters() if not n.startswith("emb.")]
    opts = [torch.optim.SparseAdam([net.emb.weight], lr=r["lr"], eps=1e-7),
            torch.optim.Adam(dense, lr=r["lr"], eps=1e-7)]
    rng = np.random.default_rng(seed)
    lossf = nn.BCEWithLogitsLoss()
    t_total, epoch_s = 0.0, []
    for _ in range(r["epochs"]):
        net.train()
        t0 = time.perf_counter()
        for idx in length_batches(Ltr, r["batch"], rng, shuffle=True, bucket=True):
            L = Ltr[idx]
            X = torch.from_numpy(xtr[idx, :L.max()].astype(np.int64))
            Lt = torch.from_numpy(L.astype(np.int64))
            Y = torch.from_numpy(ytr[idx].astype(np.float32))
            for o in opts:
                o.zero_grad()
            loss = lossf(net(X, Lt), Y)
            loss.backward()
            for o in opts:
                o.step()
        epoch_s.append(time.perf_counter() - t0)
    t_total = sum(epoch_s)
    net.eval()
    correct, tot_loss = 0, 0.0
    with torch.no_grad():
        for idx in length_batches(Lte, 256, None, shuffle=False):
            L = Lte[idx]
            X = torch.from_numpy(xte[idx, :L.max()].astype(np.int64))
            z = net(X, torch.from_numpy(L.astype(np.int64)))
            Y = torch.from_numpy(yte[idx].astype(np.float32))
            correct += int(((z > 0).float() == Y).sum())
            tot_loss += float(lossf(z, Y)) * len(idx)
    return dict(test_accuracy=correct / len(yte), test_loss=tot_loss / len(yte),
                train_seconds=t_total, epoch_seconds=epoch_s,
                samples_per_second=r["epochs"] * len(xtr) / t_total)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for both libraries (default: fastgru's default policy)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--cell", default="gru")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--embed", type=int, default=128)
    ap.add_argument("--bidirectional", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--dropout", type=float, default=0.5)
    ap.add_argument("--pooling", default="max")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--vocab-size", type=int, default=30000)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--torch-variants", nargs="+", default=["packed", "padded"])
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    r = dict(cell=args.cell, hidden=args.hidden, embed=args.embed,
             bidirectional=args.bidirectional, dropout=args.dropout, pooling=args.pooling,
             epochs=args.epochs, batch=args.batch, lr=args.lr)
    threads = args.threads or fastgru._threads.default_n_threads()
    data = load(args.data, args.vocab_size)
    print(f"MR: {len(data[1])} train / {len(data[4])} test, vocabulary {len(data[0])}, "
          f"threads {threads}, recipe {r}", flush=True)
    results = {"recipe": r, "threads": threads, "machine": platform.processor() or
               platform.machine(), "cores": fastgru._threads.physical_cores(),
               "fastgru": fastgru.__version__, "runs": []}
    for seed in args.seeds:
        fg, init = run_fastgru(data, r, seed, threads)
        row = {"seed": seed, "fastgru": fg}
        print(f"seed {seed}  fastgru      acc {fg['test_accuracy']:.4f}  train "
              f"{fg['train_seconds']:6.1f} s  {fg['samples_per_second']:8,.0f} samples/s",
              flush=True)
        if not args.no_torch:
            import torch

            results["torch"] = torch.__version__
            for v in args.torch_variants:
                tr = run_torch(data, r, seed, threads, init, v)
                row[f"torch_{v}"] = tr
                print(f"seed {seed}  torch-{v:7s} acc {tr['test_accuracy']:.4f}  train "
                      f"{tr['train_seconds']:6.1f} s  {tr['samples_per_second']:8,.0f} "
                      f"samples/s  ({tr['train_seconds'] / fg['train_seconds']:.2f}x fastgru's "
                      f"time)", flush=True)
        results["runs"].append(row)
    accs = [row["fastgru"]["test_accuracy"] for row in results["runs"]]
    print(f"fastgru accuracy over seeds {args.seeds}: mean {np.mean(accs):.4f}, min "
          f"{np.min(accs):.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
