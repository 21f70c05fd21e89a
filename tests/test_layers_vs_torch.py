"""fastgru.GRU / fastgru.LSTM against torch.nn.GRU / torch.nn.LSTM with the same weights:
outputs, final states, input/state gradients and every parameter gradient, for 1-3 layers,
bidirectional, batch_first, variable lengths (PackedSequence), proj_size, float32 and float64.
Also the PyTorch interop (from_torch, to_torch, state dicts) and the README example."""
import numpy as np
import pytest

import fastgru

from helpers import rel_err, requires_torch

pytestmark = [requires_torch,
              pytest.mark.filterwarnings("ignore:LSTM with projections:UserWarning")]

T, B, I, H = 5, 3, 4, 5


def _tol(dtype):
    return 1e-10 if dtype == np.float64 else 1e-5 * (1 + np.sqrt(T))


def _torch_forward_backward(mod, x, hx, lengths, batch_first, dy, dstates):
    """Run a torch RNN (padded or packed), backprop sum(y*dy) + sum(state*dstate)."""
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    hxt = [torch.from_numpy(s.copy()).requires_grad_(True) for s in hx]
    arg = tuple(hxt) if len(hxt) == 2 else hxt[0]
    if lengths is not None:
        packed = pack_padded_sequence(xt, torch.as_tensor(lengths), batch_first=batch_first,
                                      enforce_sorted=False)
        out, hn = mod(packed, arg)
        y, _ = pad_packed_sequence(out, batch_first=batch_first, total_length=T)
    else:
        y, hn = mod(xt, arg)
    states = list(hn) if isinstance(hn, tuple) else [hn]
    loss = (y * torch.from_numpy(dy)).sum()
    for s, d in zip(states, dstates, strict=True):
        loss = loss + (s * torch.from_numpy(d)).sum()
    loss.backward()
    grads = {n: p.grad.numpy() for n, p in mod.named_parameters()}
    return (y.detach().numpy(), [s.detach().numpy() for s in states], xt.grad.numpy(),
            [s.grad.numpy() for s in hxt], grads)


CELLS = [("gru", 0), ("lstm", 0), ("lstm", 2)]


@pytest.mark.parametrize("cell,proj", CELLS, ids=["gru", "lstm", "lstm-proj"])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["tbi", "bti"])
@pytest.mark.parametrize("with_lengths", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layer_matches_torch(cell, proj, num_layers, bidirectional, batch_first, with_lengths,
                             dtype):
    import torch

    tdt = torch.float64 if dtype == np.float64 else torch.float32
    kw = dict(proj_size=proj) if proj else {}
    torch.manual_seed(num_layers * 7 + proj)
    tcls = torch.nn.GRU if cell == "gru" else torch.nn.LSTM
    tmod = tcls(I, H, num_layers=num_layers, bidirectional=bidirectional,
                batch_first=batch_first, dtype=tdt, **kw)
    cls = fastgru.GRU if cell == "gru" else fastgru.LSTM
    layer = cls.from_torch(tmod)
    assert layer.dtype == dtype and layer.training
    D = 2 if bidirectional else 1
    P = proj or H
    rng = np.random.default_rng(3)
    x = rng.standard_normal((B, T, I) if batch_first else (T, B, I)).astype(dtype)
    lengths = np.array([2, T, 4]) if with_lengths else None
    hx = [rng.standard_normal((num_layers * D, B, P)).astype(dtype)]
    if cell == "lstm":
        hx.append(rng.standard_normal((num_layers * D, B, H)).astype(dtype))
    y, state = layer(x, tuple(hx) if cell == "lstm" else hx[0], lengths)
    states = list(state) if cell == "lstm" else [state]
    dy = rng.standard_normal(y.shape).astype(dtype)
    dstates = [rng.standard_normal(s.shape).astype(dtype) for s in states]
    if cell == "lstm":
        dx, (dh0, dc0) = layer.backward(dy, tuple(dstates))
        dhx = [dh0, dc0]
    else:
        dx, dh0 = layer.backward(dy, dstates[0])
        dhx = [dh0]
    ty, tstates, tdx, tdhx, tgrads = _torch_forward_backward(tmod, x, hx, lengths, batch_first,
                                                             dy, dstates)
    tol = _tol(dtype)
    assert y.shape == ty.shape == ((B, T, D * P) if batch_first else (T, B, D * P))
    assert rel_err(y, ty) < tol
    for a, b in zip(states, tstates, strict=True):
        assert a.shape == b.shape
        assert rel_err(a, b) < tol
    assert rel_err(dx, tdx) < tol
    for a, b in zip(dhx, tdhx, strict=True):
        assert rel_err(a, b) < tol
    grads = layer.grads()
    assert set(grads) == set(tgrads)
    for name, g in tgrads.items():
        assert grads[name].shape == g.shape, name
        assert rel_err(grads[name], g) < tol, name
    if with_lengths:  # padding of y and dx is exactly zero
        for b_, n in enumerate(lengths):
            pad_y = y[b_, n:] if batch_first else y[n:, b_]
            pad_dx = dx[b_, n:] if batch_first else dx[n:, b_]
            assert not np.any(pad_y) and not np.any(pad_dx)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_unbatched_and_default_state_match_torch(cell):
    import torch

    torch.manual_seed(0)
    tmod = (torch.nn.GRU if cell == "gru" else torch.nn.LSTM)(I, H, num_layers=2,
                                                             bidirectional=True)
    layer = (fastgru.GRU if cell == "gru" else fastgru.LSTM).from_torch(tmod)
    x = np.random.default_rng(0).standard_normal((T, I)).astype(np.float32)
    y, state = layer(x)
    with torch.no_grad():
        ty, tstate = tmod(torch.from_numpy(x))
    assert y.shape == (T, 2 * H)
    assert rel_err(y, ty.numpy()) < 1e-5
    if cell == "lstm":
        assert state[0].shape == state[1].shape == (4, H)
        assert rel_err(state[1], tstate[1].numpy()) < 1e-5
    else:
        assert state.shape == (4, H)
        assert rel_err(state, tstate.numpy()) < 1e-5


def test_dropout_zero_in_train_mode_and_eval_mode_match_torch():
    import torch

    torch.manual_seed(1)
    tmod = torch.nn.LSTM(I, H, num_layers=3, dropout=0.0, dtype=torch.float64).train()
    layer = fastgru.LSTM.from_torch(tmod)
    x = np.random.default_rng(0).standard_normal((T, B, I))
    y, _ = layer(x)
    ty, _ = tmod(torch.from_numpy(x))
    assert rel_err(y, ty.detach().numpy()) < 1e-10
    # dropout > 0: eval mode is deterministic and equals torch's eval mode
    tmod = torch.nn.GRU(I, H, num_layers=2, dropout=0.5, dtype=torch.float64).eval()
    layer = fastgru.GRU.from_torch(tmod)
    assert not layer.training and layer.dropout == 0.5
    with torch.no_grad():
        ty, _ = tmod(torch.from_numpy(x))
    assert rel_err(layer(x)[0], ty.numpy()) < 1e-10
    assert np.array_equal(layer(x)[0], layer(x)[0])


def test_torch_round_trip_is_exact():
    import torch

    torch.manual_seed(2)
    tmod = torch.nn.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=3, batch_first=True)
    layer = fastgru.LSTM.from_torch(tmod)
    assert (layer.num_layers, layer.bidirectional, layer.proj_size, layer.batch_first) == (2, True,
                                                                                         3, True)
    sd = layer.to_torch_state_dict()
    for k, v in tmod.state_dict().items():
        assert isinstance(sd[k], np.ndarray)
        assert np.array_equal(sd[k], v.numpy())
    back = layer.to_torch()
    assert type(back) is torch.nn.LSTM and back.proj_size == 3 and back.batch_first
    for k, v in tmod.state_dict().items():
        assert torch.equal(back.state_dict()[k], v)
    tens = layer.to_torch_state_dict(tensors=True)
    assert all(isinstance(v, torch.Tensor) for v in tens.values())
    # load_torch_state_dict takes tensors, any float dtype (cast), and a prefix
    other = fastgru.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=3, batch_first=True,
                         dtype="float64")
    wrapped = {"enc.rnn." + k: v.double() for k, v in tmod.state_dict().items()}
    wrapped["enc.linear.weight"] = torch.zeros(2, 2)
    other.load_torch_state_dict(wrapped, prefix="enc.rnn.")
    for k, v in tmod.state_dict().items():
        assert np.array_equal(other.parameters()[k], v.double().numpy())


def test_from_torch_refuses_kwargs_that_contradict_the_module():
    """kwargs add constructor arguments (n_threads, batch_first) or repeat the module's; one
    that would load the weights into another function (reset-before GRU, reverse) raises."""
    import torch

    tmod = torch.nn.GRU(I, H, num_layers=2)
    for bad in (dict(reset_after=False), dict(reverse=True), dict(bias=False),
                dict(num_layers=1)):
        with pytest.raises(ValueError, match="contradicts the PyTorch module"):
            fastgru.GRU.from_torch(tmod, **bad)
    with pytest.raises(ValueError, match="reset_after=False contradicts"):
        fastgru.GRUCell.from_torch(torch.nn.GRUCell(I, H), reset_after=False)
    m = fastgru.GRU.from_torch(tmod, n_threads=1, reset_after=True, num_layers=2)
    assert m.num_layers == 2 and m.reset_after


def test_torch_state_dict_errors_name_the_key():
    import torch

    layer = fastgru.GRU(I, H, num_layers=2)
    sd = torch.nn.GRU(I, H, num_layers=1).state_dict()
    with pytest.raises(ValueError, match="weight_ih_l1"):
        layer.load_torch_state_dict(sd)
    sd = fastgru.GRU(I, H, num_layers=2).to_torch_state_dict()
    sd["weight_hh_l1"] = sd["weight_hh_l1"][:, :-1]
    before = layer.flat_parameters().copy()
    with pytest.raises(ValueError, match="weight_hh_l1"):
        layer.load_torch_state_dict(sd)
    assert np.array_equal(layer.flat_parameters(), before)  # nothing written
    with pytest.raises(TypeError, match="LSTM"):
        fastgru.GRU.from_torch(torch.nn.LSTM(I, H))
    with pytest.raises(ValueError, match="reset_after"):
        fastgru.GRU(I, H, reset_after=False).to_torch_state_dict()
    # weight_norm renames the parametrized weights: the error says how to get plain ones
    normed = torch.nn.utils.parametrizations.weight_norm(torch.nn.GRU(I, H), "weight_hh_l0")
    with pytest.raises(ValueError, match="remove_parametrizations"):
        fastgru.GRU.from_torch(normed)
    torch.nn.utils.parametrize.remove_parametrizations(normed, "weight_hh_l0")
    assert np.array_equal(fastgru.GRU.from_torch(normed).parameters()["weight_hh_l0"],
                          normed.weight_hh_l0.detach().numpy())


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_cells_match_torch_cells(cell):
    import torch

    torch.manual_seed(3)
    tcell = (torch.nn.GRUCell if cell == "gru" else torch.nn.LSTMCell)(I, H, dtype=torch.float64)
    fcell = (fastgru.GRUCell if cell == "gru" else fastgru.LSTMCell).from_torch(tcell)
    rng = np.random.default_rng(0)
    x, h, c = (rng.standard_normal((B, n)) for n in (I, H, H))
    with torch.no_grad():
        if cell == "gru":
            th = tcell(torch.from_numpy(x), torch.from_numpy(h)).numpy()
            assert rel_err(fcell(x, h), th) < 1e-12
        else:
            th, tc = tcell(torch.from_numpy(x), (torch.from_numpy(h), torch.from_numpy(c)))
            fh, fc = fcell(x, (h, c))
            assert rel_err(fh, th.numpy()) < 1e-12 and rel_err(fc, tc.numpy()) < 1e-12
    sd = fcell.to_torch_state_dict()
    assert set(sd) == set(tcell.state_dict())
    assert type(fcell.to_torch()) is type(tcell)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_empty_batch_matches_torch(cell, batch_first):
    """B = 0 (torch accepts it): empty outputs and states of torch's shapes, empty input
    gradients and no parameter gradient; step() and the cells too."""
    import torch

    kw = dict(num_layers=2, bidirectional=True, batch_first=batch_first)
    if cell == "lstm":
        mod = torch.nn.LSTM(I, H, proj_size=3, **kw)
        layer = fastgru.LSTM.from_torch(mod)
    else:
        mod = torch.nn.GRU(I, H, **kw)
        layer = fastgru.GRU.from_torch(mod)
    layer.train()
    x = np.zeros((0, T, I) if batch_first else (T, 0, I), np.float32)
    y, state = layer(x, lengths=np.zeros(0, np.int64))
    y_t, state_t = mod(torch.from_numpy(x))
    assert y.shape == tuple(y_t.shape)
    states = state if cell == "lstm" else (state,)
    states_t = state_t if cell == "lstm" else (state_t,)
    assert [s.shape for s in states] == [tuple(s.shape) for s in states_t]
    dx, dstate = layer.backward(np.ones_like(y))
    assert dx.shape == x.shape
    assert all(np.all(g == 0) for g in layer.grads().values())
    uni = fastgru.GRU(I, H, num_layers=2) if cell == "gru" else fastgru.LSTM(I, H, num_layers=2)
    y1, s1 = uni.step(np.zeros((0, I), np.float32))
    assert y1.shape == (0, H)
    cellmod = fastgru.GRUCell(I, H) if cell == "gru" else fastgru.LSTMCell(I, H)
    out = cellmod(np.zeros((0, I), np.float32))
    assert all(o.shape == (0, H) for o in (out if cell == "lstm" else (out,)))


def test_readme_example():
    # The example of docs/layers.md, "Moving a trained torch.nn.GRU into fastgru", verbatim.
    import numpy as np  # noqa: E401
    import torch

    import fastgru

    torch_gru = torch.nn.GRU(input_size=16, hidden_size=32, num_layers=2, batch_first=True)
    torch_gru.eval()                                   # (train it first, as usual)
    gru = fastgru.GRU.from_torch(torch_gru)            # same config, weights and mode
    x = np.random.default_rng(0).standard_normal((8, 50, 16)).astype(np.float32)
    y, h_n = gru(x)                                    # (8, 50, 32), (2, 8, 32)
    with torch.no_grad():
        y_t, h_t = torch_gru(torch.from_numpy(x))
    print(np.abs(y - y_t.numpy()).max())               # ~1e-7: the same numbers
    assert np.allclose(y, y_t.numpy(), atol=1e-5) and np.allclose(h_n, h_t.numpy(), atol=1e-5)


def test_torch_tensors_are_accepted_as_inputs():
    import torch

    layer = fastgru.GRU(I, H, num_layers=2, dtype="float64", seed=0)
    x = np.random.default_rng(0).standard_normal((T, B, I))
    h0 = np.zeros((2, B, H))
    y, hn = layer(x, h0, lengths=np.array([5, 2, 3]))
    yt, hnt = layer(torch.from_numpy(x), torch.from_numpy(h0), lengths=torch.tensor([5, 2, 3]))
    assert np.array_equal(y, yt) and np.array_equal(hn, hnt)
    dx, _ = layer.backward(torch.ones(T, B, H, dtype=torch.float64))
    assert dx.shape == (T, B, I)
