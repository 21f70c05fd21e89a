"""The NumPy reference is the oracle, so it is itself checked: every gradient it returns (x,
h0, c0, every parameter) against a 4th-order central finite difference in float64, for both GRU
variants, the LSTM with and without projection, with lengths, and in reverse."""

import numpy as np
import pytest

from fastgru import reference as ref

from helpers import call_forward, make_problem

EPS = 1e-4


def _loss_and_grads(cell, p, reverse, wy, wh, wc):
    """L = sum(y*wy) + sum(h_n*wh) (+ sum(c_n*wc)); and the reference's analytic gradients."""
    out = call_forward(
        ref, cell, p, reverse=reverse, **({"reset_after": p["ra"]} if cell == "gru" else {})
    )
    if cell == "gru":
        y, hn, cache = out
        L = float(np.sum(y * wy) + np.sum(hn * wh))
        g = ref.gru_backward(cache, wy, wh)
    else:
        y, hn, cn, cache = out
        L = float(np.sum(y * wy) + np.sum(hn * wh) + np.sum(cn * wc))
        g = ref.lstm_backward(cache, wy, wh, wc)
    return L, g


def _numeric(cell, p, name, reverse, wy, wh, wc):
    a = p[name]
    num = np.zeros_like(a)
    flat = a.reshape(-1)
    for idx in range(flat.size):
        vals = []
        for step in (2, 1, -1, -2):
            old = flat[idx]
            flat[idx] = old + step * EPS
            vals.append(_loss_and_grads(cell, p, reverse, wy, wh, wc)[0])
            flat[idx] = old
        num.reshape(-1)[idx] = (-vals[0] + 8 * vals[1] - 8 * vals[2] + vals[3]) / (12 * EPS)
    return num


GRAD_NAME = {
    "x": "dx",
    "h0": "dh0",
    "c0": "dc0",
    "w_ih": "dw_ih",
    "w_hh": "dw_hh",
    "b_ih": "db_ih",
    "b_hh": "db_hh",
    "w_hr": "dw_hr",
}

CASES = [
    ("gru", True, False, None, False),
    ("gru", True, True, None, False),
    ("gru", False, False, None, False),
    ("gru", False, True, None, True),
    ("gru", True, True, None, True),
    ("lstm", None, False, None, False),
    ("lstm", None, True, None, False),
    ("lstm", None, True, 2, False),
    ("lstm", None, True, 2, True),
]


@pytest.mark.parametrize("cell,ra,lengths,P,reverse", CASES)
def test_reference_gradients_match_finite_differences(cell, ra, lengths, P, reverse):
    T, B, I, H = 4, 3, 3, 3
    p = make_problem(cell, T, B, I, H, np.float64, seed=11, P=P, lengths=lengths)
    if lengths:
        p["lengths"] = np.array([4, 2, 1])
    p["ra"] = ra
    rng = np.random.default_rng(5)
    Pw = H if P is None else P
    wy = rng.standard_normal((T, B, Pw))
    if lengths:  # padded outputs are constant zeros: their weights must not matter
        wy[np.arange(T)[:, None] >= p["lengths"][None, :]] = 0
    wh = rng.standard_normal((B, Pw))
    wc = rng.standard_normal((B, H))
    _, g = _loss_and_grads(cell, p, reverse, wy, wh, wc)
    names = ["x", "h0", "w_ih", "w_hh", "b_ih", "b_hh"]
    if cell == "lstm":
        names.insert(2, "c0")
        if P is not None:
            names.append("w_hr")
    for name in names:
        num = _numeric(cell, p, name, reverse, wy, wh, wc)
        np.testing.assert_allclose(
            g[GRAD_NAME[name]], num, rtol=1e-7, atol=1e-9, err_msg=f"{cell} d{name}"
        )
    if lengths:  # padding steps of x get exactly zero gradient
        pad = np.arange(T)[:, None] >= p["lengths"][None, :]
        assert np.all(g["dx"][pad] == 0)


def test_reference_lengths_semantics():
    """Outputs are 0 past each sequence's end and h_n is the state at its last valid step."""
    p = make_problem("gru", 6, 3, 2, 4, seed=3)
    L = np.array([6, 2, 4])
    y, hn, _ = ref.gru_forward(
        p["x"], p["h0"], p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"], lengths=L
    )
    for b, n in enumerate(L):
        assert np.all(y[n:, b] == 0)
        yb, hb, _ = ref.gru_forward(
            p["x"][:n, b : b + 1], p["h0"][b : b + 1], p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"]
        )
        np.testing.assert_allclose(y[:n, b], yb[:, 0], rtol=0, atol=1e-15)
        np.testing.assert_allclose(hn[b], hb[0], rtol=0, atol=1e-15)
