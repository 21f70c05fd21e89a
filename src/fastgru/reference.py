"""Pure-NumPy GRU and LSTM, forward and backward: the documented statement of what fastgru
computes. Every kernel is tested against these functions, and these functions are checked with
finite differences. Readability comes first here; speed lives in fastgru.ops.

Letters: T time steps, B batch, I input features, H hidden units. Arrays are time-major:
x (T, B, I), y (T, B, H). Weights use PyTorch's layout and gate order:
  GRU  rows r, z, n:    w_ih (3H, I), w_hh (3H, H), b_ih (3H,), b_hh (3H,)
  LSTM rows i, f, g, o: w_ih (4H, I), w_hh (4H, H), b_ih (4H,), b_hh (4H,)
       with a projection (PyTorch proj_size = P): w_hh (4H, P), w_hr (P, H), h has size P.

GRU, reset_after=True (PyTorch, cuDNN, Keras default, ONNX linear_before_reset=1):
  (1) r  = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
  (2) z  = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
  (3) n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))
  (4) h' = (1 - z) * n + z * h
GRU, reset_after=False (Cho et al. 2014, Keras reset_after=False, ONNX default) replaces (3):
  (3') n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)
LSTM:
  (1) i = sigmoid(.), f = sigmoid(.), g = tanh(.), o = sigmoid(.)
      with (.) = W_i* x + b_i* + W_h* h + b_h*
  (2) c' = f * c + i * g
  (3) h' = o * tanh(c')            (with a projection: h' = W_hr (o * tanh(c')))

Variable lengths (PyTorch PackedSequence semantics): sequence b is valid for t < lengths[b].
Past its end its state is carried unchanged, its outputs are 0, and h_n (c_n) is its state at
its last valid step. reverse=True runs each sequence from its own last valid step back to 0.
"""
from __future__ import annotations

import numpy as np
from scipy.special import expit as sigmoid

from fastgru import _validation as V

__all__ = ["gru_forward", "gru_backward", "lstm_forward", "lstm_backward", "reverse_padded"]


def reverse_padded(a: np.ndarray, lengths: np.ndarray | None) -> np.ndarray:
    """Reverse each sequence of a (T, B, ...) array within its own length; padding stays."""
    if lengths is None:
        return a[::-1].copy()
    out = np.zeros_like(a)
    for b, n in enumerate(lengths):
        out[:n, b] = a[n - 1 :: -1, b]
    return out


def _active(lengths, T, B):
    """(T, B, 1) boolean mask of valid steps."""
    L = np.full(B, T) if lengths is None else lengths
    return (np.arange(T)[:, None] < L[None, :])[:, :, None]


def _zeros_if_none(a, shape, dtype):
    return np.zeros(shape, dtype) if a is None else np.array(a, dtype=dtype)


# --------------------------------------------------------------------------------------------
# GRU


def gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh, *, lengths=None, reset_after=True,
                training=True, n_threads=None, reverse=False):
    """GRU forward. Returns (y (T, B, H), h_n (B, H), cache or None). n_threads is ignored."""
    a = V.rnn_args("gru", x, h0, None, w_ih, w_hh, b_ih, b_hh, lengths)
    reset_after = V.check_bool("reset_after", reset_after)
    training = V.check_bool("training", training)
    reverse = V.check_bool("reverse", reverse)
    V.check_n_threads(n_threads)
    T, B, H, dt = a.T, a.B, a.H, a.dtype
    b_ih = _zeros_if_none(a.b_ih, 3 * H, dt)
    b_hh = _zeros_if_none(a.b_hh, 3 * H, dt)
    xs = reverse_padded(a.x, a.lengths) if reverse else a.x
    act = _active(a.lengths, T, B)
    if a.lengths is not None:  # padding never counts: NaN/inf there must not reach the grads
        xs = np.where(act, xs, 0)
    h = _zeros_if_none(a.h0, (B, H), dt)
    y = np.zeros((T, B, H), dt)
    steps = []
    for t in range(T):
        gi = xs[t] @ a.w_ih.T + b_ih                        # W_i* x + b_i*      (B, 3H)
        gh = h @ a.w_hh.T + b_hh                            # W_h* h + b_h*      (B, 3H)
        r = sigmoid(gi[:, :H] + gh[:, :H])                  # (1)
        z = sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])        # (2)
        if reset_after:
            n = np.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])  # (3)
        else:
            n = np.tanh(gi[:, 2 * H:] + (r * h) @ a.w_hh[2 * H:].T + b_hh[2 * H:])  # (3')
        h_new = (1 - z) * n + z * h                         # (4)
        steps.append(dict(h_prev=h, r=r, z=z, n=n, ghn=gh[:, 2 * H:]))
        h = np.where(act[t], h_new, h)
        y[t] = np.where(act[t], h_new, 0)
    if reverse:
        y = reverse_padded(y, a.lengths)
    cache = None
    if training:
        cache = dict(cell="gru", x=xs, w_ih=a.w_ih, w_hh=a.w_hh, act=act, steps=steps,
                     reset_after=reset_after, reverse=reverse, lengths=a.lengths, dtype=dt)
    return y, h, cache


def gru_backward(cache, dy, dh_n=None):
    """Gradients of a GRU forward: dict with dx, dh0, dw_ih, dw_hh, db_ih, db_hh."""
    c = _check_cache(cache, "gru")
    x, w_ih, w_hh, act, dt = c["x"], c["w_ih"], c["w_hh"], c["act"], c["dtype"]
    T, B, _ = x.shape
    H = w_hh.shape[1]
    dy = _grad_arg("dy", dy, (T, B, H), dt)
    if c["reverse"]:
        dy = reverse_padded(dy, c["lengths"])
    dh = _grad_arg("dh_n", dh_n, (B, H), dt).copy()
    dx = np.zeros_like(x)
    dw_ih, dw_hh = np.zeros_like(w_ih), np.zeros_like(w_hh)
    db_ih, db_hh = np.zeros(3 * H, dt), np.zeros(3 * H, dt)
    for t in reversed(range(T)):
        s, m = c["steps"][t], act[t]
        r, z, n, h_prev = s["r"], s["z"], s["n"], s["h_prev"]
        g = np.where(m, dh + dy[t], 0)                      # dL/dh' on valid rows
        dn = g * (1 - z)                                    # from (4)
        dz = g * (h_prev - n)
        dan = dn * (1 - n * n)                              # through tanh in (3)
        daz = dz * z * (1 - z)                              # through sigmoid in (2)
        if c["reset_after"]:
            dar = dan * s["ghn"] * r * (1 - r)              # (3): d/dr of r * (W_hn h + b_hn)
            dgi = np.concatenate([dar, daz, dan], axis=1)
            dgh = np.concatenate([dar, daz, dan * r], axis=1)
            dh_prev = g * z + dgh @ w_hh
            dw_hh += dgh.T @ h_prev
            db_hh += dgh.sum(0)
        else:
            drh = dan @ w_hh[2 * H:]                        # (3'): d/d(r*h)
            dar = drh * h_prev * r * (1 - r)
            dgi = np.concatenate([dar, daz, dan], axis=1)
            dh_prev = g * z + drh * r + dgi[:, :2 * H] @ w_hh[:2 * H]
            dw_hh[:2 * H] += dgi[:, :2 * H].T @ h_prev
            dw_hh[2 * H:] += dan.T @ (r * h_prev)
            db_hh += dgi.sum(0)
        dw_ih += dgi.T @ x[t]
        db_ih += dgi.sum(0)
        dx[t] = dgi @ w_ih
        dh = np.where(m, dh_prev, dh)                       # finished rows carry dh unchanged
    if c["reverse"]:
        dx = reverse_padded(dx, c["lengths"])
    return dict(dx=dx, dh0=dh, dw_ih=dw_ih, dw_hh=dw_hh, db_ih=db_ih, db_hh=db_hh)


# --------------------------------------------------------------------------------------------
# LSTM


def lstm_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, *, lengths=None, training=True,
                 n_threads=None, w_hr=None, reverse=False):
    """LSTM forward. Returns (y (T, B, P), h_n (B, P), c_n (B, H), cache or None); P = H
    without a projection (w_hr)."""
    a = V.rnn_args("lstm", x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, w_hr=w_hr)
    training = V.check_bool("training", training)
    reverse = V.check_bool("reverse", reverse)
    V.check_n_threads(n_threads)
    T, B, H, P, dt = a.T, a.B, a.H, a.P, a.dtype
    b = _zeros_if_none(a.b_ih, 4 * H, dt) + _zeros_if_none(a.b_hh, 4 * H, dt)
    xs = reverse_padded(a.x, a.lengths) if reverse else a.x
    act = _active(a.lengths, T, B)
    if a.lengths is not None:  # padding never counts: NaN/inf there must not reach the grads
        xs = np.where(act, xs, 0)
    h = _zeros_if_none(a.h0, (B, P), dt)
    cs = _zeros_if_none(a.c0, (B, H), dt)
    y = np.zeros((T, B, P), dt)
    steps = []
    for t in range(T):
        gates = xs[t] @ a.w_ih.T + h @ a.w_hh.T + b         # (B, 4H)
        i = sigmoid(gates[:, :H])                           # (1)
        f = sigmoid(gates[:, H:2 * H])
        g = np.tanh(gates[:, 2 * H:3 * H])
        o = sigmoid(gates[:, 3 * H:])
        c_new = f * cs + i * g                              # (2)
        tc = np.tanh(c_new)
        m = o * tc                                          # (3)
        h_new = m @ a.w_hr.T if a.w_hr is not None else m
        steps.append(dict(h_prev=h, c_prev=cs, i=i, f=f, g=g, o=o, tc=tc, m=m))
        h = np.where(act[t], h_new, h)
        cs = np.where(act[t], c_new, cs)
        y[t] = np.where(act[t], h_new, 0)
    if reverse:
        y = reverse_padded(y, a.lengths)
    cache = None
    if training:
        cache = dict(cell="lstm", x=xs, w_ih=a.w_ih, w_hh=a.w_hh, w_hr=a.w_hr, act=act,
                     steps=steps, reverse=reverse, lengths=a.lengths, dtype=dt)
    return y, h, cs, cache


def lstm_backward(cache, dy, dh_n=None, dc_n=None):
    """Gradients of an LSTM forward: dict with dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh
    (and dw_hr with a projection)."""
    c = _check_cache(cache, "lstm")
    x, w_ih, w_hh, w_hr, act, dt = c["x"], c["w_ih"], c["w_hh"], c["w_hr"], c["act"], c["dtype"]
    T, B, _ = x.shape
    P = w_hh.shape[1]
    H = w_hh.shape[0] // 4
    dy = _grad_arg("dy", dy, (T, B, P), dt)
    if c["reverse"]:
        dy = reverse_padded(dy, c["lengths"])
    dh = _grad_arg("dh_n", dh_n, (B, P), dt).copy()
    dc = _grad_arg("dc_n", dc_n, (B, H), dt).copy()
    dx = np.zeros_like(x)
    dw_ih, dw_hh = np.zeros_like(w_ih), np.zeros_like(w_hh)
    dw_hr = None if w_hr is None else np.zeros_like(w_hr)
    db = np.zeros(4 * H, dt)
    for t in reversed(range(T)):
        s, msk = c["steps"][t], act[t]
        i, f, g, o, tc = s["i"], s["f"], s["g"], s["o"], s["tc"]
        gh = np.where(msk, dh + dy[t], 0)                   # dL/dh' on valid rows
        if w_hr is not None:                                # h' = m W_hr^T
            dw_hr += gh.T @ s["m"]
            gm = gh @ w_hr
        else:
            gm = gh
        dct = np.where(msk, dc + gm * o * (1 - tc * tc), 0)  # (3) into c', plus later steps
        dgate = np.concatenate([
            dct * g * i * (1 - i),                          # (2) and (1), gate i
            dct * s["c_prev"] * f * (1 - f),                # gate f
            dct * i * (1 - g * g),                          # gate g
            gm * tc * o * (1 - o),                          # (3), gate o
        ], axis=1)
        dw_ih += dgate.T @ x[t]
        dw_hh += dgate.T @ s["h_prev"]
        db += dgate.sum(0)
        dx[t] = dgate @ w_ih
        dh = np.where(msk, dgate @ w_hh, dh)
        dc = np.where(msk, dct * f, dc)
    if c["reverse"]:
        dx = reverse_padded(dx, c["lengths"])
    out = dict(dx=dx, dh0=dh, dc0=dc, dw_ih=dw_ih, dw_hh=dw_hh, db_ih=db, db_hh=db.copy())
    if dw_hr is not None:
        out["dw_hr"] = dw_hr
    return out


# --------------------------------------------------------------------------------------------


def _check_cache(cache, cell):
    if not isinstance(cache, dict) or cache.get("cell") != cell:
        raise TypeError(
            f"cache must come from fastgru.reference.{cell}_forward(..., training=True), "
            f"got {type(cache).__name__}"
        )
    return cache


def _grad_arg(name, a, shape, dtype):
    """A gradient argument: zeros when None, else a float array of exactly `shape`."""
    if a is None:
        return np.zeros(shape, dtype)
    a = V.float_array(name, a, dtype)
    V.check_shape(name, a, shape, "(" + ", ".join(str(s) for s in shape) + ")")
    return a
