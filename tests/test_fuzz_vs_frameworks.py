"""Seeded randomized differential tests: fastgru.GRU/LSTM (and the cells, step(), save/load)
against torch.nn, Keras 3 layers and ONNX Runtime on randomly drawn configurations.

Each test case draws one configuration from np.random.default_rng([SEED, section, index]), so a
failure names a reproducible case; FASTGRU_FUZZ_SEED changes the seed and FASTGRU_FUZZ_SCALE
multiplies the number of cases (e.g. 10 for a long local run). Every framework is optional and
skipped when not importable. Shapes are kept small (T <= 8, B <= 5, H <= 9) so the whole file
runs in well under a minute; Keras (an XLA compile per call) gets the fewest cases.
"""
from __future__ import annotations

import copy
import os
import pickle
import re
import warnings

import numpy as np
import pytest

import fastgru

from helpers import rel_err

SEED = int(os.environ.get("FASTGRU_FUZZ_SEED", "20240611"))
SCALE = float(os.environ.get("FASTGRU_FUZZ_SCALE", "1"))


def _n(base: int) -> int:
    return max(1, int(round(base * SCALE)))


N_TORCH, N_CELL, N_STEP, N_KERAS, N_ONNX, N_SAVE, N_BAD = (
    _n(80), _n(40), _n(30), _n(24), _n(50), _n(30), _n(40))

pytestmark = [
    pytest.mark.filterwarnings("ignore:LSTM with projections:UserWarning"),
    pytest.mark.filterwarnings("ignore:dropout option adds dropout:UserWarning"),
    pytest.mark.filterwarnings("ignore:dropout > 0 with num_layers=1:UserWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),  # keras/jax on NumPy 2
]


def _rng(section: int, i: int) -> np.random.Generator:
    return np.random.default_rng([SEED, section, i])


def _tol(dtype, T=8) -> float:
    return 1e-10 if np.dtype(dtype) == np.float64 else 2e-5 * (1 + np.sqrt(T))


def _close(name, got, want, tol, cfg):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape} for {cfg}"
    err = rel_err(got, want) if got.size else 0.0
    assert err < tol, f"{name}: rel err {err:.3g} >= {tol:.3g} for {cfg}"


def _draw_lengths(rng, T, B):
    """None, or one of: random in [1, T], all equal T, all equal k, with a 1 in it."""
    kind = rng.choice(["none", "none", "random", "all_T", "all_k", "with_1"])
    if kind == "none":
        return None
    if kind == "random":
        lens = rng.integers(1, T + 1, B)
    elif kind == "all_T":
        lens = np.full(B, T)
    elif kind == "all_k":
        lens = np.full(B, int(rng.integers(1, T + 1)))
    else:
        lens = rng.integers(1, T + 1, B)
        lens[rng.integers(B)] = 1
    return lens.astype(np.int64)


def _draw_layer_cfg(rng, cells=("gru", "lstm"), proj=True, reset_before=False, max_layers=3):
    cell = str(rng.choice(cells))
    H = int(rng.integers(1, 10))
    cfg = dict(
        cell=cell, I=int(rng.integers(1, 8)), H=H, L=int(rng.integers(1, max_layers + 1)),
        bidirectional=bool(rng.random() < 0.5), batch_first=bool(rng.random() < 0.5),
        bias=bool(rng.random() < 0.75),
        T=int(rng.choice([1, 1, 2, 3, 5, 8])), B=int(rng.choice([1, 1, 2, 3, 5])),
        dtype=str(rng.choice(["float32", "float64"])),
        proj=0, reset_after=True)
    if proj and cell == "lstm" and H > 1 and rng.random() < 0.4:
        cfg["proj"] = int(rng.integers(1, H))
    if reset_before and cell == "gru" and rng.random() < 0.5:
        cfg["reset_after"] = False
    return cfg


def _layer(cfg, **kw):
    args = dict(num_layers=cfg["L"], bias=cfg["bias"], batch_first=cfg["batch_first"],
                bidirectional=cfg["bidirectional"], dtype=cfg["dtype"])
    args.update(kw)
    if cfg["cell"] == "gru":
        return fastgru.GRU(cfg["I"], cfg["H"], reset_after=cfg["reset_after"], **args)
    return fastgru.LSTM(cfg["I"], cfg["H"], proj_size=cfg["proj"], **args)


# =============================================================================================
# PyTorch: layers (forward, states, every gradient), state dict round trips


def _torch_run(tmod, x, hx, lengths, batch_first, T, dy, dstates):
    """torch forward (padded or packed) and backward of sum(y*dy) + sum(state*dstate)."""
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    hxt = None if hx is None else [torch.from_numpy(s.copy()).requires_grad_(True) for s in hx]
    arg = None if hxt is None else (tuple(hxt) if len(hxt) == 2 else hxt[0])
    if lengths is not None:
        packed = pack_padded_sequence(xt, torch.as_tensor(lengths), batch_first=batch_first,
                                      enforce_sorted=False)
        out, hn = tmod(packed, arg)
        y, _ = pad_packed_sequence(out, batch_first=batch_first, total_length=T)
    else:
        y, hn = tmod(xt, arg)
    states = list(hn) if isinstance(hn, tuple) else [hn]
    loss = y.sum() * 0
    if dy is not None:
        loss = loss + (y * torch.from_numpy(dy)).sum()
    for s, d in zip(states, dstates, strict=True):
        if d is not None:
            loss = loss + (s * torch.from_numpy(d)).sum()
    loss.backward()
    grads = {n: (p.grad.numpy() if p.grad is not None else np.zeros(p.shape))
             for n, p in tmod.named_parameters()}
    dhx = None if hxt is None else [s.grad.numpy() for s in hxt]
    return (y.detach().numpy(), [s.detach().numpy() for s in states], xt.grad.numpy(), dhx,
            grads)


@pytest.mark.parametrize("i", range(N_TORCH))
def test_layer_fuzz_vs_torch(i):
    torch = pytest.importorskip("torch")
    rng = _rng(1, i)
    cfg = _draw_layer_cfg(rng)
    cell, T, B, I, H, L = (cfg[k] for k in ("cell", "T", "B", "I", "H", "L"))
    D = 2 if cfg["bidirectional"] else 1
    P = cfg["proj"] or H
    dt = np.dtype(cfg["dtype"])
    unbatched = bool(rng.random() < 0.15)
    lengths = None if unbatched else _draw_lengths(rng, T, B)
    mode = str(rng.choice(["train", "eval"]))
    give_h0 = bool(rng.random() < 0.5)
    # dropout acts between layers only: with one layer it changes nothing, even in training
    dropout = 0.4 if L == 1 and rng.random() < 0.25 else 0.0
    cfg.update(unbatched=unbatched, lengths=None if lengths is None else lengths.tolist(),
               mode=mode, h0=give_h0, dropout=dropout)

    torch.manual_seed(int(rng.integers(2**31)))
    tcls = torch.nn.GRU if cell == "gru" else torch.nn.LSTM
    kw = dict(proj_size=cfg["proj"]) if cfg["proj"] else {}
    tmod = tcls(I, H, num_layers=L, bias=cfg["bias"], batch_first=cfg["batch_first"],
                bidirectional=cfg["bidirectional"], dropout=dropout,
                dtype=torch.float64 if dt == np.float64 else torch.float32, **kw)
    tmod.train(mode == "train")
    n_threads = [None, None, 1, 2, 3][int(rng.integers(5))]
    cfg["n_threads"] = n_threads
    layer = (fastgru.GRU if cell == "gru" else fastgru.LSTM).from_torch(tmod, n_threads=n_threads)
    assert layer.training == (mode == "train") and layer.dtype == dt
    assert layer.dropout == dropout
    assert (layer.num_layers, layer.bidirectional, layer.batch_first, layer.bias) == (
        L, cfg["bidirectional"], cfg["batch_first"], cfg["bias"])

    if unbatched:
        xshape, sshape = (T, I), lambda F: (L * D, F)
    else:
        xshape = (B, T, I) if cfg["batch_first"] else (T, B, I)
        sshape = lambda F: (L * D, B, F)  # noqa: E731
    x = rng.standard_normal(xshape).astype(dt)
    hx = None
    if give_h0:
        hx = [rng.standard_normal(sshape(P)).astype(dt)]
        if cell == "lstm":
            hx.append(rng.standard_normal(sshape(H)).astype(dt))
    fhx = None if hx is None else (tuple(hx) if cell == "lstm" else hx[0])
    kw_grad = {} if mode == "train" else dict(requires_grad=True)
    inputs = [x] + ([] if hx is None else hx)
    saved = [a.copy() for a in inputs]
    y, state = layer(x, fhx, lengths, **kw_grad)
    states = list(state) if cell == "lstm" else [state]
    assert y.dtype == dt and all(s.dtype == dt for s in states), cfg

    # loss: dy and/or dstates (each may be absent)
    which = str(rng.choice(["both", "both", "dy", "dstate"]))
    dy = rng.standard_normal(y.shape).astype(dt) if which != "dstate" else None
    dstates = [rng.standard_normal(s.shape).astype(dt) if which != "dy" else None for s in states]
    if cell == "lstm" and which != "dy" and rng.random() < 0.3:
        dstates[int(rng.integers(2))] = None  # only dh_n or only dc_n
    inputs += [d for d in [dy, *dstates] if d is not None]
    saved += [d.copy() for d in [dy, *dstates] if d is not None]
    if cell == "lstm":
        dx, (dh0, dc0) = layer.backward(dy, tuple(dstates))
        fdhx = [dh0, dc0]
    else:
        dx, dh0 = layer.backward(dy, dstates[0])
        fdhx = [dh0]
    assert dx.dtype == dt and dx.shape == x.shape, cfg
    for a, b in zip(inputs, saved, strict=True):  # x, states, dy, dh_n: all left alone
        assert np.array_equal(a, b), f"an input was modified in place for {cfg}"
    ty, tstates, tdx, tdhx, tgrads = _torch_run(tmod, x, hx, lengths, cfg["batch_first"], T,
                                                dy, dstates)
    tol = _tol(dt, T)
    _close("y", y, ty, tol, cfg)
    for k, (a, b) in enumerate(zip(states, tstates, strict=True)):
        _close(f"state[{k}]", a, b, tol, cfg)
    _close("dx", dx, tdx, tol, cfg)
    if tdhx is not None:
        for k, (a, b) in enumerate(zip(fdhx, tdhx, strict=True)):
            _close(f"dstate0[{k}]", a, b, tol, cfg)
    else:
        for a in fdhx:  # no h0 given: dh0 is still returned, shaped like the state
            assert a.shape == sshape(P if a is fdhx[0] else H)
    grads = layer.grads()
    assert set(grads) == set(tgrads), cfg
    for name, g in tgrads.items():
        _close(f"grad {name}", grads[name], g, tol, cfg)
    if lengths is not None:  # padding of y and dx is exactly zero, as torch's pad_packed
        for b_, n in enumerate(lengths):
            pad = (slice(b_, b_ + 1), slice(n, None)) if cfg["batch_first"] else \
                (slice(n, None), slice(b_, b_ + 1))
            assert not np.any(y[pad]) and not np.any(dx[pad]), cfg

    # the reference backend gives the same numbers (and the same gradients)
    if rng.random() < 0.25:
        ref = layer.copy()
        ref.backend = "reference"
        ref.train(mode == "train")
        yr, _ = ref(x, fhx, lengths, **kw_grad)
        _close("y (reference backend)", yr, y, tol, cfg)
        dxr = ref.backward(dy, tuple(dstates) if cell == "lstm" else dstates[0])[0]
        _close("dx (reference backend)", dxr, tdx, tol, cfg)
        for name, g in tgrads.items():
            _close(f"grad {name} (reference backend)", ref.grads()[name], g, tol, cfg)

    # PyTorch state dict round trips are exact
    sd = layer.to_torch_state_dict()
    tsd = tmod.state_dict()
    assert list(sd) == list(tsd), cfg  # same names in the same order
    assert list(layer.parameters()) == [n for n, _ in tmod.named_parameters()]
    assert layer.num_parameters == sum(p.numel() for p in tmod.parameters())
    for k, v in tsd.items():
        assert isinstance(sd[k], np.ndarray) and np.array_equal(sd[k], v.numpy()), (k, cfg)
    fresh = _layer(dict(cfg, reset_after=True), seed=1)
    fresh.load_torch_state_dict(tsd if rng.random() < 0.5 else sd)
    assert np.array_equal(fresh.flat_parameters(), layer.flat_parameters()), cfg
    back = layer.to_torch()
    assert type(back) is type(tmod) and back.training == tmod.training
    for k, v in back.state_dict().items():
        assert torch.equal(v, tsd[k]), (k, cfg)
    assert getattr(back, "proj_size", 0) == cfg["proj"]


def test_parameter_attribute_assignment_writes_in_place():
    """gru.weight_ih_l0 = a (as torch's module attributes) must change what the layer
    computes, not shadow the parameter with a detached attribute."""
    gru = fastgru.GRU(2, 3, num_layers=2, bidirectional=True, dtype="float64", seed=0)
    x = np.random.default_rng(0).standard_normal((4, 1, 2))
    y0 = gru(x)[0]
    w = gru.weight_hh_l1_reverse.copy()
    gru.weight_hh_l1_reverse = np.zeros_like(w)
    assert np.shares_memory(gru.weight_hh_l1_reverse, gru.flat_parameters())
    assert not np.any(gru.parameters()["weight_hh_l1_reverse"])
    assert not np.array_equal(gru(x)[0], y0)
    gru.weight_hh_l1_reverse = w
    assert np.array_equal(gru(x)[0], y0)
    gru.bias_ih_l0 = np.ones(9, np.float32)  # cast to the layer's dtype
    assert gru.bias_ih_l0.dtype == np.float64 and np.all(gru.parameters()["bias_ih_l0"] == 1)
    with pytest.raises(ValueError, match="weight_hh_l1_reverse"):
        gru.weight_hh_l1_reverse = np.zeros((9, 2))
    cell = fastgru.LSTMCell(2, 3)
    cell.bias_ih = np.ones(12)
    assert np.all(cell.parameters()["bias_ih"] == 1)


def test_torch_unbatched_contract():
    """torch accepts (T, I) with h0 (L*D, H) and ignores batch_first for 2-D input: so must we."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    for batch_first in (False, True):
        tmod = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2,
                             batch_first=batch_first, dtype=torch.float64)
        layer = fastgru.LSTM.from_torch(tmod)
        x = np.random.default_rng(0).standard_normal((5, 3))
        h0, c0 = np.ones((4, 2)) * 0.3, np.ones((4, 4)) * -0.2
        y, (hn, cn) = layer(x, (h0, c0))
        with torch.no_grad():
            ty, (thn, tcn) = tmod(torch.from_numpy(x), (torch.from_numpy(h0),
                                                        torch.from_numpy(c0)))
        assert y.shape == tuple(ty.shape) == (5, 4)
        assert hn.shape == tuple(thn.shape) and cn.shape == tuple(tcn.shape)
        assert rel_err(y, ty.numpy()) < 1e-12 and rel_err(cn, tcn.numpy()) < 1e-12
        with pytest.raises(ValueError, match="h0"):
            layer(x, (np.ones((4, 1, 2)), np.ones((4, 1, 4))))  # batched state, unbatched x
    # a PackedSequence is refused with a hint (fastgru takes the padded data and lengths)
    from torch.nn.utils.rnn import pack_padded_sequence

    packed = pack_padded_sequence(torch.zeros(3, 2, 3, dtype=torch.float64),
                                  torch.tensor([3, 1]), enforce_sorted=False)
    with pytest.raises(TypeError, match="PackedSequence"):
        layer(packed)
    # (h0, None): fastgru takes a missing half as zeros
    lstm = fastgru.LSTM(3, 4, dtype="float64", seed=0)
    x = np.random.default_rng(1).standard_normal((5, 2, 3))
    h0 = np.full((1, 2, 4), 0.5)
    assert np.array_equal(lstm(x, (h0, None))[0], lstm(x, (h0, np.zeros((1, 2, 4))))[0])
    assert np.array_equal(lstm(x, (None, h0))[0], lstm(x, (np.zeros((1, 2, 4)), h0))[0])


# =============================================================================================
# PyTorch cells; layer.step over a sequence equals the layer


@pytest.mark.parametrize("i", range(N_CELL))
def test_cell_fuzz_vs_torch(i):
    torch = pytest.importorskip("torch")
    rng = _rng(2, i)
    cell = str(rng.choice(["gru", "lstm"]))
    I, H, B = int(rng.integers(1, 8)), int(rng.integers(1, 10)), int(rng.integers(1, 5))
    bias = bool(rng.random() < 0.75)
    dt = np.dtype(str(rng.choice(["float32", "float64"])))
    unbatched = bool(rng.random() < 0.25)
    give_h = bool(rng.random() < 0.6)
    cfg = dict(cell=cell, I=I, H=H, B=B, bias=bias, dtype=str(dt), unbatched=unbatched,
               h=give_h)
    torch.manual_seed(int(rng.integers(2**31)))
    tdt = torch.float64 if dt == np.float64 else torch.float32
    tcell = (torch.nn.GRUCell if cell == "gru" else torch.nn.LSTMCell)(I, H, bias=bias, dtype=tdt)
    fcell = (fastgru.GRUCell if cell == "gru" else fastgru.LSTMCell).from_torch(tcell)
    assert fcell.dtype == dt and fcell.bias == bias
    shp = (lambda n: (n,)) if unbatched else (lambda n: (B, n))
    tol = _tol(dt, 1)
    h = c = None
    th = tc = None
    for t in range(3):  # a few chained steps
        x = rng.standard_normal(shp(I)).astype(dt)
        if t == 0 and give_h:
            h = rng.standard_normal(shp(H)).astype(dt)
            c = rng.standard_normal(shp(H)).astype(dt)
            th, tc = torch.from_numpy(h.copy()), torch.from_numpy(c.copy())
        with torch.no_grad():
            if cell == "gru":
                th = tcell(torch.from_numpy(x), th)
                h = fcell(x, h)
                _close(f"h step {t}", h, th.numpy(), tol, cfg)
            else:
                th, tc = tcell(torch.from_numpy(x), None if th is None else (th, tc))
                h, c = fcell(x, None if h is None else (h, c))
                _close(f"h step {t}", h, th.numpy(), tol, cfg)
                _close(f"c step {t}", c, tc.numpy(), tol, cfg)
    sd = fcell.to_torch_state_dict()
    assert set(sd) == set(tcell.state_dict())
    for k, v in tcell.state_dict().items():
        assert np.array_equal(sd[k], v.numpy())
    back = fcell.to_torch()
    assert all(torch.equal(v, tcell.state_dict()[k]) for k, v in back.state_dict().items())
    # the cell's Keras weights make a one-layer layer whose step() is the cell
    kw = fcell.to_keras_weights()
    lcls = fastgru.GRU if cell == "gru" else fastgru.LSTM
    lay = lcls.from_keras_weights(kw[0], kw[1], kw[2] if bias else None, dtype=dt)
    assert len(kw) == (3 if bias else 2)
    x = rng.standard_normal(shp(I)).astype(dt)
    if cell == "gru":
        _close("layer.step vs cell", lay.step(x)[0], fcell(x), tol, cfg)
    else:
        _close("layer.step vs cell", lay.step(x)[0], fcell(x)[0], tol, cfg)


@pytest.mark.parametrize("i", range(N_STEP))
def test_step_fuzz_equals_forward(i):
    rng = _rng(3, i)
    cfg = _draw_layer_cfg(rng, reset_before=True)
    cfg["bidirectional"] = False
    T, B, I, H, L = (cfg[k] for k in ("T", "B", "I", "H", "L"))
    P = cfg["proj"] or H
    dt = np.dtype(cfg["dtype"])
    layer = _layer(cfg, seed=int(rng.integers(1000))).train(bool(rng.random() < 0.5))
    unbatched = bool(rng.random() < 0.25)
    give_state = bool(rng.random() < 0.5)
    cfg.update(unbatched=unbatched, state=give_state)
    lstm = cfg["cell"] == "lstm"
    xs = rng.standard_normal((T, I) if unbatched else (T, B, I)).astype(dt)
    sh = (lambda F: (L, F)) if unbatched else (lambda F: (L, B, F))
    h0 = rng.standard_normal(sh(P)).astype(dt) if give_state else None
    c0 = rng.standard_normal(sh(H)).astype(dt) if give_state and lstm else None
    xin = xs if unbatched or not cfg["batch_first"] else xs.transpose(1, 0, 2)
    y, state = layer(xin, (h0, c0) if lstm else h0, requires_grad=False)
    if cfg["batch_first"] and not unbatched:
        y = y.transpose(1, 0, 2)
    st = None if h0 is None else ((h0, c0) if lstm else h0)
    tol = _tol(dt, T)
    for t in range(T):
        yt, st = layer.step(xs[t], st)
        _close(f"y[{t}] (step)", yt, y[t], tol, cfg)
    if lstm:
        _close("h_n (step)", st[0], state[0], tol, cfg)
        _close("c_n (step)", st[1], state[1], tol, cfg)
    else:
        _close("h_n (step)", st, state, tol, cfg)
    if L == 1 and not cfg["proj"]:  # a cell with the layer's weights takes the same steps
        cls = fastgru.GRUCell if not lstm else fastgru.LSTMCell
        kw = {} if lstm else dict(reset_after=cfg["reset_after"])
        cellm = cls(I, H, bias=cfg["bias"], dtype=dt, **kw)
        cellm.load_state_dict({k[:-3]: v for k, v in layer.parameters().items()})
        hc = None if h0 is None else ((h0[0], c0[0]) if lstm else h0[0])
        for t in range(T):
            hc = cellm(xs[t], hc)
        _close("h_n (cell)", hc[0] if lstm else hc, state[0][0] if lstm else state[0], tol, cfg)


# =============================================================================================
# Keras 3 (JAX backend): layers, Bidirectional, stacks, masks, initial states


@pytest.fixture(scope="module")
def keras():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    return pytest.importorskip("keras")


def _keras_layers(keras, cfg, return_sequences_last, return_state_last=True):
    """One Keras layer per fastgru layer (Bidirectional when bidirectional)."""
    layers = []
    for l in range(cfg["L"]):
        last = l == cfg["L"] - 1
        common = dict(return_sequences=return_sequences_last or not last,
                      return_state=return_state_last or not last,
                      use_bias=cfg["bias"], kernel_initializer="zeros",
                      recurrent_initializer="zeros")
        if cfg["cell"] == "gru":
            inner = keras.layers.GRU(cfg["H"], reset_after=cfg["reset_after"], **common)
        else:
            inner = keras.layers.LSTM(cfg["H"], **common)
        layers.append(keras.layers.Bidirectional(inner) if cfg["bidirectional"] else inner)
    return layers


@pytest.mark.parametrize("i", range(N_KERAS))
def test_layer_fuzz_vs_keras(keras, i):
    rng = _rng(4, i)
    cfg = _draw_layer_cfg(rng, proj=False, reset_before=True, max_layers=2)
    cfg["batch_first"] = True  # Keras data is (B, T, I)
    T, B, I, H, L = (cfg[k] for k in ("T", "B", "I", "H", "L"))
    D = 2 if cfg["bidirectional"] else 1
    lstm = cfg["cell"] == "lstm"
    ns = 2 if lstm else 1  # states per direction
    dt = np.dtype(cfg["dtype"])
    lengths = _draw_lengths(rng, T, B)
    return_sequences = bool(rng.random() < 0.7)
    return_state = bool(rng.random() < 0.8)
    give_state = bool(rng.random() < 0.5)
    direction = str(rng.choice(["fastgru_to_keras", "keras_to_fastgru"]))
    cfg.update(lengths=None if lengths is None else lengths.tolist(), seq=return_sequences,
               return_state=return_state, state=give_state, direction=direction)

    klayers = _keras_layers(keras, cfg, return_sequences, return_state)
    in_sizes = [I] + [D * H] * (L - 1)
    for kl, n in zip(klayers, in_sizes, strict=True):
        kl.build((None, None, n))
    cls = fastgru.GRU if cfg["cell"] == "gru" else fastgru.LSTM
    if direction == "fastgru_to_keras":
        layer = _layer(cfg, seed=int(rng.integers(1000)))
        w = layer.to_keras_weights()
        per = len(w) // L
        for l, kl in enumerate(klayers):
            kl.set_weights(w[l * per:(l + 1) * per])
        got = [a for kl in klayers for a in kl.get_weights()]  # Keras keeps float32
        assert all(np.array_equal(a, b.astype(np.float32))
                   for a, b in zip(got, w, strict=True)), cfg
    else:
        kw = [rng.uniform(-0.6, 0.6, v.shape).astype(np.float32)
              for kl in klayers for v in kl.get_weights()]
        per = len(kw) // L
        for l, kl in enumerate(klayers):
            kl.set_weights(kw[l * per:(l + 1) * per])
        how = str(rng.choice(["from_keras", "from_keras_weights", "load"]))
        if L > 1 or (how == "from_keras_weights" and D == 2):
            how = "load"
        cfg["how"] = how
        if how == "from_keras":
            layer = cls.from_keras(klayers[0], dtype=dt)
            assert layer.batch_first and layer.bidirectional == cfg["bidirectional"]
            assert layer.bias == cfg["bias"]
            if cls is fastgru.GRU:
                assert layer.reset_after == cfg["reset_after"]
        elif how == "from_keras_weights":
            layer = cls.from_keras_weights(kw[0], kw[1], kw[2] if cfg["bias"] else None,
                                           reset_after=cfg["reset_after"], dtype=dt,
                                           batch_first=True)
        else:
            layer = _layer(cfg, seed=0)
            layer.load_keras_weights(kw)
        # Keras -> fastgru -> Keras is exact
        back = layer.astype("float32").to_keras_weights() if dt == np.float64 else \
            layer.to_keras_weights()
        if dt == np.float32 or not (lstm or not cfg["reset_after"]):
            assert all(np.array_equal(a, b) for a, b in zip(back, kw, strict=True)), cfg
        else:  # float64 sums of two float32 biases: equal to rounding
            assert all(rel_err(a, b) < 1e-6 for a, b in zip(back, kw, strict=True)), cfg
    layer.eval()

    x = rng.standard_normal((B, T, I)).astype(np.float32)
    mask = None if lengths is None else np.arange(T)[None, :] < lengths[:, None]
    h0 = rng.standard_normal((L * D, B, H)).astype(np.float32) if give_state else None
    c0 = rng.standard_normal((L * D, B, H)).astype(np.float32) if give_state and lstm else None
    inp = x
    kstates = []
    for l, kl in enumerate(klayers):
        init = None
        if give_state:
            init = []
            for d in range(D):
                init.append(h0[l * D + d])
                if lstm:
                    init.append(c0[l * D + d])
        out = kl(inp, initial_state=init, mask=mask)
        if l == L - 1 and not return_state:
            assert not isinstance(out, (list, tuple)), type(out)
            out = [out]
        out = [np.asarray(o) for o in out]
        inp = out[0]
        if len(out) > 1:
            for d in range(D):  # Keras: [y, h_fwd, (c_fwd), h_bwd, (c_bwd)]
                kstates.append(out[1 + d * ns:1 + (d + 1) * ns])
    ky = inp

    xf = x.astype(dt)
    if lstm:
        y, (hn, cn) = layer(xf, None if not give_state else (h0.astype(dt), c0.astype(dt)),
                            lengths)
    else:
        y, hn = layer(xf, None if h0 is None else h0.astype(dt), lengths)
    tol = 3e-5 * (1 + np.sqrt(T) * L)
    if return_sequences:
        if lengths is None:
            _close("y", y, ky, tol, cfg)
        else:  # Keras fills the padding its own way: compare the valid steps
            for b_, n in enumerate(lengths):
                _close(f"y[{b_}, :{n}]", y[b_, :n], ky[b_, :n], tol, cfg)
    else:  # the last output: forward h_n, then the reverse direction's h_n (its output at 0)
        want = np.concatenate([hn[(L - 1) * D + d] for d in range(D)], axis=-1)
        _close("y (return_sequences=False)", want, ky, tol, cfg)
    assert len(kstates) == (L if return_state else L - 1) * D
    for k in range(len(kstates)):
        _close(f"h_n[{k}]", hn[k], kstates[k][0], tol, cfg)
        if lstm:
            _close(f"c_n[{k}]", cn[k], kstates[k][1], tol, cfg)


def test_from_keras_refuses_what_it_cannot_map(keras):
    with pytest.raises(ValueError, match="build"):
        fastgru.GRU.from_keras(keras.layers.GRU(3))  # no weights yet
    with pytest.raises(ValueError, match="build"):
        fastgru.LSTM.from_keras(keras.layers.Bidirectional(keras.layers.LSTM(3)))
    for backward_kw, word in ((dict(reset_after=False), "reset_after"),
                              (dict(use_bias=False), "use_bias"),
                              (dict(activation="relu"), "activation")):
        bi = keras.layers.Bidirectional(
            keras.layers.GRU(3, return_sequences=True),
            backward_layer=keras.layers.GRU(3, return_sequences=True, go_backwards=True,
                                            **backward_kw))
        bi.build((None, None, 2))
        with pytest.raises(ValueError, match=word):
            fastgru.GRU.from_keras(bi)
    for kw, word in ((dict(activation="relu"), "activation"),
                     (dict(recurrent_activation="hard_sigmoid"), "recurrent_activation")):
        k = keras.layers.LSTM(3, **kw)
        k.build((None, None, 2))
        with pytest.raises(ValueError, match=word):
            fastgru.LSTM.from_keras(k)
    k = keras.layers.GRU(3)
    k.build((None, None, 2))
    with pytest.raises(TypeError, match="LSTM"):
        fastgru.LSTM.from_keras(k)


# =============================================================================================
# ONNX: W/R/B round trips and whole-layer export run by ONNX Runtime


@pytest.mark.parametrize("i", range(N_ONNX))
def test_layer_fuzz_vs_onnxruntime(tmp_path, i):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    rng = _rng(5, i)
    cfg = _draw_layer_cfg(rng, proj=False, reset_before=True)
    T, B, I, H, L = (cfg[k] for k in ("T", "B", "I", "H", "L"))
    D = 2 if cfg["bidirectional"] else 1
    lstm = cfg["cell"] == "lstm"
    dt = np.dtype(cfg["dtype"])
    lengths = _draw_lengths(rng, T, B)
    give_state = bool(rng.random() < 0.5)
    use_lengths = lengths is not None or rng.random() < 0.2
    if use_lengths and lengths is None:
        lengths = np.full(B, T, np.int64)  # the lengths input, all full
    opset = int(rng.choice([14, 17, 22]))
    cfg.update(lengths=None if lengths is None else lengths.tolist(), state=give_state,
               opset=opset)
    layer = _layer(cfg, seed=int(rng.integers(1000))).train(bool(rng.random() < 0.5))

    # W, R, B per layer: from_onnx(to_onnx()) rebuilds that layer exactly
    for l in range(L):
        W, R, Bias = layer.to_onnx(layer=l)
        assert W.shape == (D, (3 if not lstm else 4) * H, I if l == 0 else D * H)
        extra = {} if lstm else dict(linear_before_reset=int(cfg["reset_after"]))
        one = type(layer).from_onnx(W, R, Bias, direction="bidirectional" if D == 2
                                    else "forward", **extra)
        assert one.dtype == dt and one.bias == cfg["bias"] and one.bidirectional == (D == 2)
        for name, v in one.parameters().items():
            src = layer.parameters()[name.replace("_l0", f"_l{l}")]
            assert np.array_equal(v, src), (name, cfg)

    path = tmp_path / "m.onnx"
    export_dtype = "float32" if dt == np.float64 else None
    layer.export_onnx(path, initial_state=give_state, lengths=use_lengths, opset=opset,
                      dtype=export_dtype)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = rng.standard_normal((B, T, I) if cfg["batch_first"] else (T, B, I)).astype(dt)
    h0 = rng.standard_normal((L * D, B, H)).astype(dt) if give_state else None
    c0 = rng.standard_normal((L * D, B, H)).astype(dt) if give_state and lstm else None
    feed = {"x": x.astype(np.float32)}
    if use_lengths:
        feed["lengths"] = lengths.astype(np.int32)
    if give_state:
        feed["h0"] = h0.astype(np.float32)
        if lstm:
            feed["c0"] = c0.astype(np.float32)
    got = sess.run(None, feed)
    if lstm:
        y, (hn, cn) = layer(x, None if h0 is None else (h0, c0), lengths, requires_grad=False)
        want = [y, hn, cn]
    else:
        y, hn = layer(x, h0, lengths, requires_grad=False)
        want = [y, hn]
    assert len(got) == len(want)
    tol = 3e-5 * (1 + np.sqrt(T) * L)
    for name, a, b in zip(["y", "h_n", "c_n"], got, want, strict=False):
        _close(f"{name} (onnxruntime)", a, b, tol, cfg)
    if dt == np.float64 and lengths is None:  # float64 graph: onnx's reference evaluator
        from onnx.reference import ReferenceEvaluator

        model = layer.export_onnx(initial_state=give_state, opset=opset)
        feed64 = {k: v.astype(np.float64) for k, v in feed.items()}
        feed64["x"] = x
        if give_state:
            feed64["h0"] = h0
            if lstm:
                feed64["c0"] = c0
        got = ReferenceEvaluator(model).run(None, feed64)
        for name, a, b in zip(["y", "h_n", "c_n"], got, want, strict=False):
            _close(f"{name} (onnx reference, float64)", a, b, 1e-10, cfg)


# =============================================================================================
# save / load


@pytest.mark.parametrize("i", range(N_SAVE))
def test_save_load_fuzz(tmp_path, i):
    rng = _rng(6, i)
    kind = str(rng.choice(["layer", "layer", "cell"]))
    dt = str(rng.choice(["float32", "float64"]))
    if kind == "layer":
        cfg = _draw_layer_cfg(rng, reset_before=True)
        dropout = float(rng.choice([0.0, 0.0, 0.3]))
        m = _layer(cfg, dropout=dropout, seed=int(rng.integers(1000)),
                   n_threads=None if rng.random() < 0.7 else 1,
                   backend=str(rng.choice(["fast", "reference"])))
    else:
        cell = str(rng.choice(["gru", "lstm"]))
        I, H = int(rng.integers(1, 8)), int(rng.integers(1, 10))
        cfg = dict(cell=cell, I=I, H=H, dtype=dt, bias=bool(rng.random() < 0.7))
        if cell == "gru":
            m = fastgru.GRUCell(I, H, bias=cfg["bias"], reset_after=bool(rng.random() < 0.5),
                                dtype=dt, seed=i)
        else:
            m = fastgru.LSTMCell(I, H, bias=cfg["bias"], dtype=dt, seed=i)
    m.train(bool(rng.random() < 0.5))
    path = tmp_path / f"m{i}.npz"
    m.save(path)
    back = fastgru.load(path)
    assert type(back) is type(m) and back.get_config() == m.get_config(), cfg
    assert repr(back) == repr(m) and back.dtype == m.dtype
    assert np.array_equal(back.flat_parameters(), m.flat_parameters())
    assert not np.any(back.flat_grads())
    for k, v in m.parameters().items():
        assert back.parameters()[k].dtype == v.dtype and np.array_equal(back.parameters()[k], v)
    I = m.input_size
    x = rng.standard_normal((3, 2, I)).astype(m.dtype)
    if kind == "layer":
        m.eval(), back.eval()
        assert all(np.array_equal(a, b) for a, b in
                   zip(_flat(m(x)), _flat(back(x)), strict=True)), cfg
    else:
        assert all(np.array_equal(a, b) for a, b in
                   zip(_flat(m(x[0])), _flat(back(x[0])), strict=True)), cfg
    # the loaded module is independent of the saved one
    back.flat_parameters()[:] = 0
    assert np.any(m.flat_parameters())
    # pickle, deepcopy and astype there and back are exact too
    other = "float64" if m.dtype == np.float32 else "float32"
    for clone in (pickle.loads(pickle.dumps(m)), copy.deepcopy(m),
                  m.astype("float64").astype(m.dtype) if m.dtype == np.float32 else m.copy()):
        assert type(clone) is type(m) and clone.get_config() == m.get_config()
        assert np.array_equal(clone.flat_parameters(), m.flat_parameters())
        assert clone.parameters().keys() == m.parameters().keys()
        for k, v in clone.parameters().items():  # views of the clone's one flat buffer
            assert np.shares_memory(v, clone.flat_parameters()), k
    assert m.astype(other).dtype == np.dtype(other)


def _flat(out):
    if isinstance(out, np.ndarray):
        return [out]
    return [a for o in out for a in _flat(o)]


# =============================================================================================
# bad input: ValueError / TypeError naming the argument


def _bad_cases(rng, cfg, layer):
    T, B, I, H, L = (cfg[k] for k in ("T", "B", "I", "H", "L"))
    D = 2 if cfg["bidirectional"] else 1
    P = cfg["proj"] or H
    lstm = cfg["cell"] == "lstm"
    dt = np.dtype(cfg["dtype"])
    other = np.float64 if dt == np.float32 else np.float32
    bf = cfg["batch_first"]
    xs = (B, T, I) if bf else (T, B, I)
    x = rng.standard_normal(xs).astype(dt)
    h = np.zeros((L * D, B, P), dt)
    c = np.zeros((L * D, B, H), dt)

    def call(xx=x, hh=h, cc=c, lengths=None):
        return (lambda: layer(xx, (hh, cc) if lstm else hh, lengths))

    cases = [
        ("x wrong input size", call(xx=np.zeros(xs[:2] + (I + 1,), dt)), ValueError, "x"),
        ("x wrong dtype", call(xx=x.astype(other)), TypeError, "x"),
        ("x int", call(xx=np.zeros(xs, np.int32)), TypeError, "x"),
        ("x 4-D", call(xx=x[..., None]), ValueError, "x"),
        ("x 1-D", call(xx=np.zeros(I, dt)), ValueError, "x"),
        ("h0 wrong layers", call(hh=np.zeros((L * D + 1, B, P), dt)), ValueError, "h0"),
        ("h0 wrong batch", call(hh=np.zeros((L * D, B + 1, P), dt)), ValueError, "h0"),
        ("h0 wrong width", call(hh=np.zeros((L * D, B, P + 1), dt)), ValueError, "h0"),
        ("h0 2-D for batched x", call(hh=np.zeros((L * D, P), dt)), ValueError, "h0"),
        ("h0 wrong dtype", call(hh=h.astype(other)), TypeError, "h0"),
        ("lengths > T", call(lengths=np.full(B, T + 1)), ValueError, "lengths"),
        ("lengths 0", call(lengths=np.zeros(B, np.int64)), ValueError, "lengths"),
        ("lengths wrong shape", call(lengths=np.ones(B + 1, np.int64)), ValueError, "lengths"),
        ("lengths fractional", call(lengths=np.full(B, 0.5)), ValueError, "lengths"),
        ("lengths strings", call(lengths=np.array(["a"] * B)), TypeError, "lengths"),
        ("lengths bool", call(lengths=np.ones(B, bool)), TypeError, "lengths"),
        ("lengths with unbatched x", lambda: layer(np.zeros((T, I), dt), None, [T]),
         ValueError, "lengths"),
        ("h0 batched for unbatched x", lambda: layer(np.zeros((T, I), dt),
                                                     (h, c) if lstm else h), ValueError, "h0"),
    ]
    if lstm:
        cases += [
            ("c0 wrong width", call(cc=np.zeros((L * D, B, H + 1), dt)), ValueError, "c0"),
            ("c0 wrong batch", call(cc=np.zeros((L * D, B + 1, H), dt)), ValueError, "c0"),
            ("c0 wrong dtype", call(cc=c.astype(other)), TypeError, "c0"),
            ("hx not a pair", lambda: layer(x, h), TypeError, "hx"),
        ]
        if cfg["proj"]:
            cases.append(("h0 of width H with proj", call(hh=np.zeros((L * D, B, H), dt)),
                          ValueError, "h0"))
    # backward with a bad dy / dh_n after a valid training forward
    dy_shape = (B, T, D * P) if bf else (T, B, D * P)

    def bwd(dy=None, dh=None):
        def f():
            layer.train()
            layer(x)
            if lstm:
                return layer.backward(dy, dh, None)
            return layer.backward(dy, dh)
        return f

    cases += [
        ("dy wrong shape", bwd(dy=np.zeros(dy_shape[:2] + (D * P + 1,), dt)), ValueError, "dy"),
        ("dy wrong dtype", bwd(dy=np.zeros(dy_shape, other)), TypeError, "dy"),
        ("dh_n wrong shape", bwd(dy=np.zeros(dy_shape, dt),
                                 dh=np.zeros((L * D, B, P + 1), dt)), ValueError, "dh_n"),
    ]
    if lstm:
        cases.append(("dc_n wrong shape", lambda: (layer.train(), layer(x),
                                                   layer.backward(None, None, h[..., :0])),
                      ValueError, "dc_n"))
    if not cfg["bidirectional"]:  # step()
        cases += [
            ("step x wrong size", lambda: layer.step(np.zeros((B, I + 1), dt)), ValueError, "x"),
            ("step x wrong dtype", lambda: layer.step(np.zeros((B, I), other)), TypeError, "x"),
            ("step h wrong shape", lambda: layer.step(
                np.zeros((B, I), dt),
                (np.zeros((L, B + 1, P), dt), np.zeros((L, B + 1, H), dt)) if lstm
                else np.zeros((L, B + 1, P), dt)), ValueError, "h"),
        ]
    return cases


def _bad_cell_cases(rng, cfg):
    I, H, B = cfg["I"], cfg["H"], cfg["B"]
    dt = np.dtype(cfg["dtype"])
    other = np.float64 if dt == np.float32 else np.float32
    lstm = cfg["cell"] == "lstm"
    cell = fastgru.LSTMCell(I, H, dtype=dt) if lstm else fastgru.GRUCell(I, H, dtype=dt)
    x = np.zeros((B, I), dt)

    def st(hh):
        return (hh, np.zeros_like(hh)) if lstm else hh

    return [
        ("cell x wrong size", lambda: cell(np.zeros((B, I + 1), dt)), ValueError, "x"),
        ("cell x wrong dtype", lambda: cell(x.astype(other)), TypeError, "x"),
        ("cell x 3-D", lambda: cell(x[None]), ValueError, "x"),
        ("cell h wrong batch", lambda: cell(x, st(np.zeros((B + 1, H), dt))), ValueError, "h"),
        ("cell h wrong width", lambda: cell(x, st(np.zeros((B, H + 1), dt))), ValueError, "h"),
        ("cell h wrong dtype", lambda: cell(x, st(np.zeros((B, H), other))), TypeError, "h"),
        ("cell h 1-D for batched x", lambda: cell(x, st(np.zeros(H, dt))), ValueError, "h"),
    ] + ([("cell hx not a pair", lambda: cell(x, np.zeros((B, H), dt)), TypeError, "hx"),
          ("cell c wrong width", lambda: cell(x, (np.zeros((B, H), dt),
                                                  np.zeros((B, H + 1), dt))), ValueError, "c")]
         if lstm else [])


@pytest.mark.parametrize("i", range(N_BAD))
def test_bad_input_fuzz(i):
    rng = _rng(7, i)
    cfg = _draw_layer_cfg(rng, reset_before=True)
    layer = _layer(cfg, seed=0)
    before = layer.flat_parameters().copy()
    cases = _bad_cases(rng, cfg, layer) + _bad_cell_cases(rng, cfg)
    for desc, fn, exc, word in cases:
        with pytest.raises((TypeError, ValueError)) as info:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # no warning instead of the error
                fn()
        assert info.type is exc, f"{desc}: {info.type.__name__} ({info.value}) for {cfg}"
        assert re.search(rf"\b{word}\b", str(info.value)), f"{desc}: {info.value!r} for {cfg}"
    assert np.array_equal(layer.flat_parameters(), before)
