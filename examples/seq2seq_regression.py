"""Sequence-to-sequence regression: forecast the next value of a noisy signal at every step.

    python examples/seq2seq_regression.py

A GRU reads a noisy sine wave and a Dense layer applied at every time step predicts the clean
value one step ahead (mean squared error over the valid steps). The sequences have different
lengths: they are passed as a list and the model computes nothing past each one's end.
The result is compared with the naive forecast "next value = current noisy value".
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

import fastgru


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--quick", action="store_true", help="small data (tests)")
    args = ap.parse_args(argv)
    n = 400 if args.quick else 2000

    x, y = fastgru.make_noisy_sine(n, T=60, noise=0.1, seed=0)
    rng = np.random.default_rng(1)
    lengths = rng.integers(20, 61, n)  # variable lengths: cut each sequence
    xs = [x[i, :L] for i, L in enumerate(lengths)]
    ys = [y[i, :L] for i, L in enumerate(lengths)]
    cut = int(0.8 * n)

    model = fastgru.SequenceRegressor(1, output_size=1, hidden_size=args.hidden,
                                      learning_rate=1e-2, seed=0)
    model.compile(fastgru.Adam(fastgru.CosineDecay(1e-2, decay_steps=args.epochs * cut // 32)),
                  "mse", ["mae"])
    model.fit(xs[:cut], ys[:cut], epochs=args.epochs, batch_size=32, verbose=2,
              validation_data=(xs[cut:], ys[cut:]))
    # both errors over every valid test step (evaluate() would average per-batch means)
    pred = model.predict(xs[cut:])[..., 0]
    err = np.concatenate([pred[i, :len(t)] - t[:, 0] for i, t in enumerate(ys[cut:])])
    mse, mae = float(np.mean(err ** 2)), float(np.mean(np.abs(err)))
    pairs = zip(xs[cut:], ys[cut:], strict=True)
    naive = np.mean(np.concatenate([(a[:, 0] - b[:, 0]) ** 2 for a, b in pairs]))
    print(f"test MSE {mse:.4f} (MAE {mae:.4f}); naive forecast MSE {naive:.4f}")
    pred = pred[0]
    print("next-step forecast, last 5 steps:", np.round(pred[lengths[cut] - 5:lengths[cut]], 3))
    print("true clean values,  last 5 steps:", np.round(ys[cut][-5:, 0], 3))
    return {"mse": mse, "naive_mse": float(naive)}


if __name__ == "__main__":
    main(sys.argv[1:])
