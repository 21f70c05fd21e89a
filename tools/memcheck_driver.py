"""Exercise every kernel entry point on small shapes, for tools/memcheck.sh (AddressSanitizer or
valgrind memcheck over a build with Cython bounds checks). Not a test of accuracy: results are
checked loosely against fastgru.reference only so that a kernel that read garbage also fails here.

Covers, for each SIMD level this CPU (or valgrind's virtual CPU) offers:
  fastgru.ops  GRU (reset_after True/False) and LSTM (without / with projection w_hr): training
               forward + backward and inference forward; float32 and float64; n_threads 1 and 2;
               without and with lengths; shapes with H % 16 != 0 (vector body + scalar tail),
               B = 1 (the small-M product), T = 1 and 2 (untransposed weights) and T >= 3;
  fastgru._packed  the bidirectional (D = 2) kernels the layers call, with lengths;
  fastgru._step    GRUStepper / LSTMStepper (both variants each), B = 1, 3 and 7, n_threads 1 and 2,
               weights large enough for the threaded (split) step;
  fastgru._runtime.vmath  exp / sigmoid / tanh on lengths 0..33 and special values.
Usage: python tools/memcheck_driver.py [--quick] [--canary]
  --quick: fewer shapes (valgrind); --canary: only a deliberate out-of-bounds read, which the
  checker must report (shows that the instrumentation is live).
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import fastgru
from fastgru import _packed, _step, ops
from fastgru import reference as ref
from fastgru._kernels import _runtime
from fastgru._plan import SeqPlan

GATES = {"gru": 3, "lstm": 4}
CHECKS = {"n": 0}


def close(name, got, want, dtype, T=1):
    """Loose agreement with the float64 reference (garbage, NaN or a wrong row fails)."""
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    tol = 1e-9 if dtype == np.float64 else 1e-4 * (1 + T)
    scale = max(1.0, float(np.max(np.abs(want), initial=0.0)))
    err = float(np.max(np.abs(got - want), initial=0.0)) / scale
    if not np.all(np.isfinite(got)) or err > tol:
        raise AssertionError(f"{name}: relative error {err:.3g} > {tol:.1g}")
    CHECKS["n"] += 1


def problem(cell, T, B, I, H, dtype, seed, P=None, lengths=False):
    rng = np.random.default_rng(seed)
    G = GATES[cell] * H
    Pw = H if P is None else P
    k = 1 / np.sqrt(H)

    def u(*shape):
        return rng.uniform(-k, k, shape).astype(dtype)

    p = {"x": rng.standard_normal((T, B, I)).astype(dtype), "h0": u(B, Pw), "w_ih": u(G, I),
         "w_hh": u(G, Pw), "b_ih": u(G), "b_hh": u(G), "lengths": None}
    if cell == "lstm":
        p["c0"] = u(B, H)
        p["w_hr"] = u(P, H) if P is not None else None
    if lengths:
        L = rng.integers(1, T + 1, size=B)
        L[rng.integers(B)] = T
        p["lengths"] = L
    p["dy"] = rng.standard_normal((T, B, Pw)).astype(dtype)
    p["dh"] = rng.standard_normal((B, Pw)).astype(dtype)
    p["dc"] = rng.standard_normal((B, H)).astype(dtype)
    return p


def f64(p):
    return {k: (v.astype(np.float64) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v)
            for k, v in p.items()}


def run_gru(p, reset_after, n_threads, dtype, T):
    args = (p["x"], p["h0"], p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"])
    q = f64(p)
    rargs = (q["x"], q["h0"], q["w_ih"], q["w_hh"], q["b_ih"], q["b_hh"])
    y, hn, cache = ops.gru_forward(*args, lengths=p["lengths"], reset_after=reset_after,
                                   n_threads=n_threads)
    g = ops.gru_backward(cache, p["dy"], p["dh"])
    ry, rh, rc = ref.gru_forward(*rargs, lengths=p["lengths"], reset_after=reset_after)
    rg = ref.gru_backward(rc, q["dy"], q["dh"])
    close("gru y", y, ry, dtype, T)
    close("gru h_n", hn, rh, dtype, T)
    for k in sorted(rg):
        close(f"gru {k}", g[k], rg[k], dtype, T)
    y2, _, none = ops.gru_forward(*args, lengths=p["lengths"], reset_after=reset_after,
                                    training=False, n_threads=n_threads)
    assert none is None
    close("gru y (inference)", y2, ry, dtype, T)


def run_lstm(p, n_threads, dtype, T):
    args = (p["x"], p["h0"], p["c0"], p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"])
    q = f64(p)
    rargs = (q["x"], q["h0"], q["c0"], q["w_ih"], q["w_hh"], q["b_ih"], q["b_hh"])
    y, hn, cn, cache = ops.lstm_forward(*args, lengths=p["lengths"], w_hr=p["w_hr"],
                                        n_threads=n_threads)
    g = ops.lstm_backward(cache, p["dy"], p["dh"], p["dc"])
    ry, rh, rcn, rc = ref.lstm_forward(*rargs, lengths=p["lengths"], w_hr=q["w_hr"])
    rg = ref.lstm_backward(rc, q["dy"], q["dh"], q["dc"])
    close("lstm y", y, ry, dtype, T)
    close("lstm h_n", hn, rh, dtype, T)
    close("lstm c_n", cn, rcn, dtype, T)
    for k in sorted(rg):
        close(f"lstm {k}", g[k], rg[k], dtype, T)
    y2, _, _, none = ops.lstm_forward(*args, lengths=p["lengths"], w_hr=p["w_hr"],
                                      training=False, n_threads=n_threads)
    assert none is None
    close("lstm y (inference)", y2, ry, dtype, T)


def run_bidirectional(cell, dtype, n_threads, seed):
    """D = 2 through fastgru._packed (the call fastgru.GRU/LSTM make), with lengths; checked
    against the reference run forward and on the reversed sequences."""
    T, B, I, H = 5, 4, 3, 19
    rng = np.random.default_rng(seed)
    G = GATES[cell] * H
    k = 1 / np.sqrt(H)

    def u(*shape):
        return rng.uniform(-k, k, shape).astype(dtype)

    x = rng.standard_normal((T, B, I)).astype(dtype)
    L = np.array([5, 2, 4, 1])
    w_ih, w_hh, b_ih, b_hh = u(2, G, I), u(2, G, H), u(2, G), u(2, G)
    plan = SeqPlan(T, B, L)
    rev = np.array([0, 1], np.int32)
    h = np.zeros((2, B, H), dtype)
    xp = plan.pack(x)
    if cell == "gru":
        bias = _packed.fold_gru_bias(b_ih, b_hh, True)
        y, c = _packed.gru_forward(xp, plan, w_ih, w_hh, bias, h, rev, True, True, n_threads)
        dy = rng.standard_normal(y.shape).astype(dtype)
        dx, g = _packed.gru_backward(c, dy, np.zeros((2, B, H), dtype))
    else:
        cs = np.zeros((2, B, H), dtype)
        y, c = _packed.lstm_forward(xp, plan, w_ih, w_hh, None, b_ih + b_hh, h, cs, rev, True,
                                    n_threads)
        dy = rng.standard_normal(y.shape).astype(dtype)
        dx, g = _packed.lstm_backward(c, dy, np.zeros((2, B, H), dtype), np.zeros((2, B, H), dtype))
    yu = plan.unpack(y)

    def q(a):
        return a.astype(np.float64)

    for d in range(2):
        xd = q(x) if d == 0 else ref.reverse_padded(q(x), L)
        if cell == "gru":
            ry, _, _ = ref.gru_forward(xd, None, q(w_ih[d]), q(w_hh[d]), q(b_ih[d]), q(b_hh[d]),
                                       lengths=L)
        else:
            ry, _, _, _ = ref.lstm_forward(xd, None, None, q(w_ih[d]), q(w_hh[d]), q(b_ih[d]),
                                           q(b_hh[d]), lengths=L)
        if d == 1:
            ry = ref.reverse_padded(ry, L)
        close(f"{cell} bidirectional y[{d}]", yu[..., d * H:(d + 1) * H], ry, dtype, T)
    for name, a in list(g.items()) + [("dx", dx)]:
        if not np.all(np.isfinite(a)):
            raise AssertionError(f"{cell} bidirectional {name}: not finite")


def run_steppers(dtype, n_threads, quick):
    rng = np.random.default_rng(7)
    # (B, I, H): a small one, and one with w_ih + w_hh >= 256 KiB so the step splits its units
    # over the team (fastgru/_kernels/_stream.pyx DEF_PAR_BYTES)
    # B = 7, I = 9, H = 23: dot_rows' batch groups (4 + a repeated 3) and K / row tails
    shapes = [(1, 5, 17), (3, 100, 130), (7, 9, 23)] if not quick else [(3, 100, 130)]
    for B, I, H in shapes:
        for cell, variant in [("gru", True), ("gru", False), ("lstm", None), ("lstm", 7)]:
            G = GATES[cell] * H
            P = H if (cell == "gru" or variant is None) else variant
            k = 1 / np.sqrt(H)
            w = [rng.uniform(-k, k, s).astype(dtype) for s in [(G, I), (G, P), (G,), (G,)]]
            x = rng.standard_normal((B, I)).astype(dtype)
            h = rng.standard_normal((B, P)).astype(dtype)
            q = [a.astype(np.float64) for a in w]
            if cell == "gru":
                st = _step.GRUStepper(*w, reset_after=variant, n_threads=n_threads)
                for _ in range(2):  # the second step reuses the scratch
                    hn = st.step(x, h)
                _, rh, _ = ref.gru_forward(x[None].astype(np.float64), h.astype(np.float64), *q,
                                           reset_after=variant, training=False)
                close(f"GRUStepper(reset_after={variant})", hn, rh, dtype)
            else:
                w_hr = None if variant is None else rng.uniform(-k, k, (P, H)).astype(dtype)
                c = rng.standard_normal((B, H)).astype(dtype)
                st = _step.LSTMStepper(*w, w_hr=w_hr, n_threads=n_threads)
                for _ in range(2):
                    hn, cn = st.step(x, h, c)
                _, rh, rc, _ = ref.lstm_forward(
                    x[None].astype(np.float64), h.astype(np.float64), c.astype(np.float64), *q,
                    w_hr=None if w_hr is None else w_hr.astype(np.float64), training=False)
                close(f"LSTMStepper(w_hr={variant is not None})", hn, rh, dtype)
                close("LSTMStepper c", cn, rc, dtype)


def run_vmath():
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, 88.7, -88.7, 1e30, -1e30,
                         0.35, -0.35, 20.0, -20.0], np.float32)
    for n in list(range(34)) + [100]:
        x = np.resize(np.concatenate([specials, np.linspace(-9, 9, 40, dtype=np.float32)]), n)
        x = np.ascontiguousarray(x, np.float32)
        for name, f in [("exp", np.exp), ("sigmoid", lambda v: 1 / (1 + np.exp(-v))),
                        ("tanh", np.tanh)]:
            out = np.full(n, 123.0, np.float32)
            _runtime.vmath(name, x, out)
            ok = np.abs(x) < 80
            with np.errstate(all="ignore"):
                want = f(x[ok].astype(np.float64))
            close(f"vmath {name} n={n}", out[ok], want, np.float32)
    try:
        _runtime.vmath("exp", np.zeros(3, np.float32), np.zeros(2, np.float32))
    except ValueError:
        pass
    else:
        raise AssertionError("vmath accepted mismatched shapes")


def canary():
    """A deliberate out-of-bounds read, to show the checker is live: fastgru._kernels._blas.
    mm_memview is a test hook that trusts its shapes; K = 64 rows of W are read from an (8, 16)
    array by the small-M product (_simd_kernels.h). memcheck.sh expects a report here."""
    from fastgru._kernels import _blas

    A = np.ones((1, 64), np.float32)
    W = np.ones((8, 16), np.float32)
    C = np.zeros((1, 16), np.float32)
    _blas.mm_memview(A, W, C, False)
    print("canary: the out-of-bounds read went unnoticed by the process", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer shapes (valgrind)")
    ap.add_argument("--canary", action="store_true",
                    help="only do a deliberate out-of-bounds read (the checker must report it)")
    args = ap.parse_args()
    if args.canary:
        return canary()
    t0 = time.time()
    print(f"fastgru from {fastgru.__file__}; openmp={_runtime.openmp_enabled()} "
          f"levels={fastgru.available_simd_levels()}", flush=True)
    # (T, B, I, H, P): tails (H % 16), B = 1, T = 1 and 2 (no transposed weights), T >= 3;
    # B = 13, H = 70: the own per-step product with row groups and masked tails (_matmul.pxd);
    # big-then-small order reuses (larger) workspace buffers
    # B = 9, I = 24, H = 40: the input projection per step (gx_step) on the own route
    shapes = [(4, 13, 6, 70, 9), (6, 4, 5, 19, 7), (2, 3, 4, 33, 5), (1, 1, 3, 17, 4),
              (4, 1, 2, 16, 3), (5, 5, 6, 9, 2), (3, 9, 24, 40, 7)]
    if args.quick:
        shapes = [(4, 13, 6, 70, 9), (6, 4, 5, 19, 7), (2, 1, 3, 17, 4)]
    for level in fastgru.available_simd_levels():
        assert fastgru.set_simd_level(level) == level
        t1 = time.time()
        seed = 0
        for dtype in (np.float32, np.float64):
            for n_threads in (1, 2):
                for (T, B, I, H, P) in shapes:
                    for lengths in (False, True):
                        if lengths and B == 1:
                            continue
                        seed += 1
                        for reset_after in (True, False):
                            run_gru(problem("gru", T, B, I, H, dtype, seed, lengths=lengths),
                                    reset_after, n_threads, dtype, T)
                        for proj in (None, P):
                            run_lstm(problem("lstm", T, B, I, H, dtype, seed, P=proj,
                                             lengths=lengths), n_threads, dtype, T)
                for cell in ("gru", "lstm"):
                    run_bidirectional(cell, dtype, n_threads, seed)
                run_steppers(dtype, n_threads, args.quick)
        run_vmath()
        print(f"  simd={level}: ok ({time.time() - t1:.1f} s)", flush=True)
    fastgru.set_simd_level(None)
    print(f"memcheck_driver: {CHECKS['n']} checks passed in {time.time() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
