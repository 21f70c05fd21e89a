"""Fast GRU/LSTM forward and backward on NumPy arrays (the kernels' public face).

Same signatures and results as fastgru.reference; arrays are time-major:
x (T, B, I), y (T, B, H), states (B, H). Weights in PyTorch's layout and gate order
(GRU rows r|z|n: w_ih (3H, I), w_hh (3H, H), b_ih (3H,), b_hh (3H,); LSTM rows i|f|g|o with 4H).
float32 or float64; inputs may be read-only or non-contiguous (copied only when needed).

The cache returned by a training forward holds a copy of x (the caller may refill it) and
references to the weights: modify those in place only after the backward.
"""
from __future__ import annotations

from typing import Any, cast

import numpy as np

from fastgru import _packed
from fastgru import _validation as V
from fastgru._plan import make_plan

__all__ = ["gru_forward", "gru_backward", "lstm_forward", "lstm_backward", "GRUCache", "LSTMCache",
           "clear_step_cache", "empty_cache"]

_FWD = np.zeros(1, np.int32)  # direction flags: one forward direction


class GRUCache:
    """Saved state of a training gru_forward, consumed by gru_backward."""

    __slots__ = ("packed", "shape", "dtype")

    def __init__(self, packed, shape, dtype):
        self.packed, self.shape, self.dtype = packed, shape, dtype


class LSTMCache(GRUCache):
    """Saved state of a training lstm_forward, consumed by lstm_backward."""


def clear_step_cache() -> None:
    """Release the steppers that T = 1 inference calls keep for reuse (up to 4 weight sets per
    Python thread, keyed by the weights' memory). A kept stepper holds references to its weight
    and bias arrays, so until it is released they stay alive and cannot be resized in place."""
    _packed.clear_steppers()


def empty_cache() -> None:
    """Release the memory fastgru keeps for reuse (torch.cuda.empty_cache's role on the CPU):
    the calling thread's kernel scratch, the pooled training-cache buffers no cache holds now
    (the pool keeps up to 2 GiB between a forward and the next), and the T = 1 steppers. Later
    calls allocate again."""
    from fastgru import _workspace

    _workspace.clear()
    _packed.clear_steppers()


def _zeros_state(a, B, F, dtype):
    return np.zeros((B, F), dtype) if a is None else a


def _bias(b, G, dtype):
    return _packed.zeros(G, dtype) if b is None else b


def _plain_threads(n: Any) -> bool:
    return n is None or (type(n) is int and (n >= 1 or n == -1))


def _plain_step(x, states, w_ih, w_hh, biases, gates: int):
    """B when a T = 1 call has only plain arguments (C-contiguous ndarrays of one float dtype,
    consistent shapes, no lengths): the stepper route then skips rnn_args (~4 us of a ~20 us
    step at S5). None otherwise: rnn_args checks, converts or explains."""
    if type(x) is not np.ndarray or x.ndim != 3 or x.shape[0] != 1:
        return None
    dt = x.dtype
    if dt != np.float32 and dt != np.float64:
        return None
    _, B, I = x.shape
    if (type(w_ih) is not np.ndarray or type(w_hh) is not np.ndarray or w_ih.dtype != dt
            or w_hh.dtype != dt or w_ih.ndim != 2 or w_hh.ndim != 2
            or not (x.flags.c_contiguous and w_ih.flags.c_contiguous
                    and w_hh.flags.c_contiguous)):
        return None
    G, H = w_hh.shape
    if B < 1 or I < 1 or H < 1 or G != gates * H or w_ih.shape != (G, I):
        return None
    for b in biases:
        if b is not None and not (type(b) is np.ndarray and b.dtype == dt and b.shape == (G,)
                                  and b.flags.c_contiguous):
            return None
    for s in states:
        if s is not None and not (type(s) is np.ndarray and s.dtype == dt and s.shape == (B, H)
                                  and s.flags.c_contiguous):
            return None
    return B


def gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh, *, lengths=None, reset_after: bool = True,
                training: bool = True, n_threads: int | None = None
                ) -> tuple[np.ndarray, np.ndarray, GRUCache | None]:
    """GRU over a (T, B, I) batch. Returns (y (T, B, H), h_n (B, H), cache or None).

    h0: (B, H) or None (zeros). b_ih, b_hh: (3H,) or None (zeros). lengths: (B,) ints in
    [1, T], any order (PackedSequence semantics: no compute past a sequence's end, outputs 0
    there, h_n at the last valid step). reset_after: True = PyTorch/cuDNN/Keras default/ONNX
    linear_before_reset=1; False = Cho et al. 2014/ONNX default. training=False keeps nothing
    for backward. n_threads: None (default policy, see fastgru._threads), -1, or >= 1.
    """
    if (training is False and lengths is None and type(reset_after) is bool
            and _plain_threads(n_threads)):
        B = _plain_step(x, (h0,), w_ih, w_hh, (b_ih, b_hh), 3)
        if B is not None and B <= _packed.STEP_MAX_B:  # one step of plain arrays: the stepper
            dt, G = x.dtype, w_hh.shape[0]
            h1 = cast(np.ndarray, _packed.one_step(
                0, x[0], w_ih, w_hh, _bias(b_ih, G, dt), _bias(b_hh, G, dt), None, reset_after,
                n_threads, _zeros_state(h0, B, G // 3, dt)))
            return h1[None], h1.copy(), None
    a = V.rnn_args("gru", x, h0, None, w_ih, w_hh, b_ih, b_hh, lengths)
    reset_after = V.check_bool("reset_after", reset_after)
    training = V.check_bool("training", training)
    n_threads = V.check_n_threads(n_threads)
    T, B, H, dt = a.T, a.B, a.H, a.dtype
    if not training and T == 1 and B <= _packed.STEP_MAX_B:  # one step: the stepper kernel
        h1 = cast(np.ndarray, _packed.one_step(
            0, a.x[0], a.w_ih, a.w_hh, _bias(a.b_ih, 3 * H, dt), _bias(a.b_hh, 3 * H, dt), None,
            reset_after, n_threads, _zeros_state(a.h0, B, H, dt)))
        return h1[None], h1.copy(), None
    plan = make_plan(T, B, a.lengths)
    b_ih = np.zeros(3 * H, dt) if a.b_ih is None else a.b_ih
    b_hh = np.zeros(3 * H, dt) if a.b_hh is None else a.b_hh
    bias = _packed.fold_gru_bias(b_ih[None], b_hh[None], reset_after)
    h = plan.sort_state(_zeros_state(a.h0, B, H, dt))[None].copy()
    xp, io = _input(plan, a.x, training)
    y, pc = _packed.gru_forward(xp, plan, a.w_ih[None], a.w_hh[None], bias, h, _FWD, reset_after,
                                training, n_threads, **io)
    cache = GRUCache(pc, (T, B, a.I, H), dt) if training else None
    return y.reshape(T, B, H), plan.unsort_state(h[0]), cache


def _input(plan, x: np.ndarray, training: bool) -> tuple[np.ndarray, dict[str, bool]]:
    """The input as the forward takes it, and how it meets the padded layout (PaddedIO)."""
    padded = not plan.identity
    if padded and not training:
        return x, dict(padded_in=True, padded_out=True)
    xp = plan.pack(x)
    return (_packed.keep_input(xp, x) if training else xp), dict(padded_out=padded)


def gru_backward(cache: GRUCache, dy, dh_n=None) -> dict[str, np.ndarray]:
    """Gradients of gru_forward given dL/dy (T, B, H) (None: zeros) and dL/dh_n (B, H).

    Returns a dict with dx (T, B, I), dh0 (B, H), dw_ih, dw_hh, db_ih, db_hh. Gradients of
    padded positions of dy are ignored (those outputs are constant zeros)."""
    if not isinstance(cache, GRUCache) or isinstance(cache, LSTMCache):
        raise TypeError("cache must come from fastgru.ops.gru_forward(..., training=True), "
                        f"got {type(cache).__name__}")
    pc = cache.packed
    plan = pc.plan
    dyp, (dh,) = _grads_in(cache, dy, {"dh_n": dh_n}, (pc.H,))
    dx, g = _packed.gru_backward(pc, dyp, dh)
    return dict(dx=plan.unpack(dx), dh0=plan.unsort_state(dh[0]), dw_ih=g["w_ih"][0],
                dw_hh=g["w_hh"][0], db_ih=g["b_ih"][0], db_hh=g["b_hh"][0])


def lstm_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, *, lengths=None, training: bool = True,
                 n_threads: int | None = None, w_hr=None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, LSTMCache | None]:
    """LSTM over a (T, B, I) batch. Returns (y (T, B, P), h_n (B, P), c_n (B, H), cache or None).

    P = H, or the projection size when w_hr (P, H) is given (PyTorch proj_size; then
    w_hh is (4H, P)). Other arguments as in gru_forward."""
    if training is False and lengths is None and w_hr is None and _plain_threads(n_threads):
        B = _plain_step(x, (h0, c0), w_ih, w_hh, (b_ih, b_hh), 4)
        if B is not None and B <= _packed.STEP_MAX_B:  # one step of plain arrays: the stepper
            dt, G = x.dtype, w_hh.shape[0]
            H = G // 4
            h1, c1 = cast(tuple[np.ndarray, np.ndarray], _packed.one_step(
                1, x[0], w_ih, w_hh, _bias(b_ih, G, dt), _bias(b_hh, G, dt), None, True,
                n_threads, _zeros_state(h0, B, H, dt), _zeros_state(c0, B, H, dt)))
            return h1[None], h1.copy(), c1, None
    a = V.rnn_args("lstm", x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, w_hr=w_hr)
    training = V.check_bool("training", training)
    n_threads = V.check_n_threads(n_threads)
    T, B, H, P, dt = a.T, a.B, a.H, a.P, a.dtype
    if not training and T == 1 and B <= _packed.STEP_MAX_B:  # one step: the stepper kernel
        h1, c1 = cast(tuple[np.ndarray, np.ndarray], _packed.one_step(
            1, a.x[0], a.w_ih, a.w_hh, _bias(a.b_ih, 4 * H, dt), _bias(a.b_hh, 4 * H, dt),
            a.w_hr, True, n_threads, _zeros_state(a.h0, B, P, dt), _zeros_state(a.c0, B, H, dt)))
        return h1[None], h1.copy(), c1, None
    plan = make_plan(T, B, a.lengths)
    bias = np.zeros((1, 4 * H), dt)
    for b in (a.b_ih, a.b_hh):
        if b is not None:
            bias[0] += b
    h = plan.sort_state(_zeros_state(a.h0, B, P, dt))[None].copy()
    cs = plan.sort_state(_zeros_state(a.c0, B, H, dt))[None].copy()
    w_hr3 = None if a.w_hr is None else a.w_hr[None]
    xp, io = _input(plan, a.x, training)
    y, pc = _packed.lstm_forward(xp, plan, a.w_ih[None], a.w_hh[None], w_hr3, bias, h, cs, _FWD,
                                 training, n_threads, **io)
    cache = LSTMCache(pc, (T, B, a.I, P), dt) if training else None
    return y.reshape(T, B, P), plan.unsort_state(h[0]), plan.unsort_state(cs[0]), cache


def lstm_backward(cache: LSTMCache, dy, dh_n=None, dc_n=None) -> dict[str, np.ndarray]:
    """Gradients of lstm_forward: dict with dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh (and dw_hr
    with a projection)."""
    if not isinstance(cache, LSTMCache):
        raise TypeError("cache must come from fastgru.ops.lstm_forward(..., training=True), "
                        f"got {type(cache).__name__}")
    pc = cache.packed
    plan = pc.plan
    dyp, (dh, dc) = _grads_in(cache, dy, {"dh_n": dh_n, "dc_n": dc_n}, (pc.P, pc.H))
    dx, g = _packed.lstm_backward(pc, dyp, dh, dc)
    out = dict(dx=plan.unpack(dx), dh0=plan.unsort_state(dh[0]), dc0=plan.unsort_state(dc[0]),
               dw_ih=g["w_ih"][0], dw_hh=g["w_hh"][0], db_ih=g["b_ih"][0], db_hh=g["b_hh"][0])
    if "w_hr" in g:
        out["dw_hr"] = g["w_hr"][0]
    return out


def _grads_in(cache, dy: Any, states: dict[str, Any], widths) -> tuple[np.ndarray | None, list]:
    """Validate dy and the final-state gradients; return packed dy and sorted (1, B, F) states."""
    T, B, _, Fy = cache.shape
    dt, plan = cache.dtype, cache.packed.plan
    dyp = None
    if dy is not None:
        dy = V.float_array("dy", dy, dt)
        V.check_shape("dy", dy, (T, B, Fy), "(T, B, H)")
        dyp = plan.pack(V.contiguous(dy))
    out = []
    for (name, s), F in zip(states.items(), widths, strict=True):
        if s is None:
            out.append(np.zeros((1, B, F), dt))
        else:
            s = V.float_array(name, s, dt)
            V.check_shape(name, s, (B, F), "(B, H)")
            out.append(plan.sort_state(s)[None].copy())
    return dyp, out
