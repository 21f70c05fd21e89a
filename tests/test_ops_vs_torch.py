"""fastgru.ops against torch.nn.GRU / torch.nn.LSTM with the same weights: outputs, final
states and all gradients, padded and PackedSequence (variable lengths). Skipped without torch."""
import numpy as np
import pytest

from fastgru import ops

from helpers import make_problem, rel_err, requires_torch

pytestmark = requires_torch


def _torch_run(cell, p, dtype, dy, dstates):
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    T, B, I = p["x"].shape
    H = p["w_ih"].shape[0] // (3 if cell == "gru" else 4)
    P = p["w_hh"].shape[1]
    tdt = torch.float64 if dtype == np.float64 else torch.float32
    kw = dict(proj_size=P) if (cell == "lstm" and P != H) else {}
    mod = (torch.nn.GRU if cell == "gru" else torch.nn.LSTM)(I, H, dtype=tdt, **kw)
    with torch.no_grad():
        mod.weight_ih_l0.copy_(torch.from_numpy(p["w_ih"]))
        mod.weight_hh_l0.copy_(torch.from_numpy(p["w_hh"]))
        mod.bias_ih_l0.copy_(torch.from_numpy(p["b_ih"]))
        mod.bias_hh_l0.copy_(torch.from_numpy(p["b_hh"]))
        if kw:
            mod.weight_hr_l0.copy_(torch.from_numpy(p["w_hr"]))
    x = torch.from_numpy(p["x"]).requires_grad_(True)
    h0 = torch.from_numpy(p["h0"])[None].clone().requires_grad_(True)
    if cell == "lstm":
        c0 = torch.from_numpy(p["c0"])[None].clone().requires_grad_(True)
        hx = (h0, c0)
    else:
        hx = h0
    if p["lengths"] is not None:
        packed = pack_padded_sequence(x, torch.from_numpy(p["lengths"]), enforce_sorted=False)
        out, hn = mod(packed, hx)
        y, _ = pad_packed_sequence(out, total_length=T)
    else:
        y, hn = mod(x, hx)
    states = list(hn) if cell == "lstm" else [hn]
    loss = (y * torch.from_numpy(dy)).sum()
    for s, d in zip(states, dstates, strict=True):
        loss = loss + (s[0] * torch.from_numpy(d)).sum()
    loss.backward()
    g = dict(dx=x.grad, dh0=h0.grad[0], dw_ih=mod.weight_ih_l0.grad, dw_hh=mod.weight_hh_l0.grad,
             db_ih=mod.bias_ih_l0.grad, db_hh=mod.bias_hh_l0.grad)
    if cell == "lstm":
        g["dc0"] = c0.grad[0]
        if kw:
            g["dw_hr"] = mod.weight_hr_l0.grad
    out_np = [y.detach().numpy()] + [s[0].detach().numpy() for s in states]
    return out_np, {k: v.numpy() for k, v in g.items()}


@pytest.mark.parametrize("cell,proj", [("gru", None), ("lstm", None), ("lstm", 3)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("lengths", [False, True])
@pytest.mark.parametrize("shape", [(1, 1, 3, 5), (17, 6, 7, 9), (40, 9, 16, 32)])
def test_ops_match_torch(cell, proj, dtype, lengths, shape):
    p = make_problem(cell, *shape, dtype=dtype, seed=sum(shape), P=proj, lengths=lengths)
    rng = np.random.default_rng(1)
    if cell == "gru":
        y, hn, cache = ops.gru_forward(p["x"], p["h0"], p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"],
                                       lengths=p["lengths"])
        outs = [y, hn]
    else:
        y, hn, cn, cache = ops.lstm_forward(p["x"], p["h0"], p["c0"], p["w_ih"], p["w_hh"],
                                            p["b_ih"], p["b_hh"], lengths=p["lengths"],
                                            w_hr=p.get("w_hr"))
        outs = [y, hn, cn]
    dy = rng.standard_normal(y.shape).astype(dtype)
    dstates = [rng.standard_normal(s.shape).astype(dtype) for s in outs[1:]]
    g = (ops.gru_backward if cell == "gru" else ops.lstm_backward)(cache, dy, *dstates)
    t_outs, t_g = _torch_run(cell, p, dtype, dy, dstates)
    T = shape[0]
    tol = 1e-12 if dtype == np.float64 else 2e-6 * (1 + np.sqrt(T))
    for a, b in zip(outs, t_outs, strict=True):
        assert rel_err(a, b) <= tol
    assert set(g) == set(t_g)
    for k in g:
        assert rel_err(g[k], t_g[k]) <= 4 * tol, f"{k}: {rel_err(g[k], t_g[k]):.3g}"
