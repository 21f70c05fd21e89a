"""ONNX interop: W/R/B round trips (always), gate orders checked with ONNX's own reference
evaluator (with onnx), and whole layers exported and run by ONNX Runtime (with onnxruntime)."""
import os
import warnings

import numpy as np
import pytest

import fastgru

from helpers import onnx_model, rel_err

I, H, B, T = 4, 5, 3, 6


@pytest.mark.parametrize("cls,kw", [(fastgru.GRU, dict(reset_after=True)),
                                    (fastgru.GRU, dict(reset_after=False, bidirectional=True)),
                                    (fastgru.GRU, dict(bias=False)),
                                    (fastgru.LSTM, dict(bidirectional=True)),
                                    (fastgru.LSTM, dict(bias=False))])
def test_onnx_round_trip_is_exact(cls, kw):
    m = cls(I, H, dtype="float64", seed=0, **kw)
    W, R, Bias = m.to_onnx()
    D = m.num_directions
    G = (3 if cls is fastgru.GRU else 4) * H
    assert W.shape == (D, G, I) and R.shape == (D, G, H)
    assert (Bias is None) == (not m.bias)
    if Bias is not None:
        assert Bias.shape == (D, 2 * G)
    extra = dict(linear_before_reset=int(m.reset_after)) if cls is fastgru.GRU else {}
    back = cls.from_onnx(W, R, Bias, direction="bidirectional" if D == 2 else "forward", **extra)
    assert np.array_equal(back.flat_parameters(), m.flat_parameters())
    assert back.get_config() == {k: v for k, v in m.get_config().items() if k != "seed"}


def test_onnx_gate_order_on_known_blocks():
    gru = fastgru.GRU(1, 1, dtype="float64")
    gru.parameters()["weight_ih_l0"][:, 0] = [1.0, 2.0, 3.0]  # r, z, n -> ONNX z, r, h
    assert gru.to_onnx()[0][0, :, 0].tolist() == [2.0, 1.0, 3.0]
    lstm = fastgru.LSTM(1, 1, dtype="float64")
    lstm.parameters()["weight_ih_l0"][:, 0] = [1, 2, 3, 4]  # i, f, g, o -> ONNX i, o, f, c
    lstm.parameters()["bias_hh_l0"][:] = [5, 6, 7, 8]
    W, _, Bias = lstm.to_onnx()
    assert W[0, :, 0].tolist() == [1, 4, 2, 3]
    assert Bias[0, 4:].tolist() == [5, 8, 6, 7]


def test_onnx_unsupported_and_bad_arguments():
    with pytest.raises(NotImplementedError, match="proj"):
        fastgru.LSTM(I, H, proj_size=2).to_onnx()
    W, R, Bias = fastgru.GRU(I, H).to_onnx()
    with pytest.raises(ValueError, match="direction"):
        fastgru.GRU.from_onnx(W, R, Bias, direction="backward")
    with pytest.raises(ValueError, match="W"):
        fastgru.GRU.from_onnx(W, R, Bias, direction="bidirectional")
    with pytest.raises(ValueError, match="R"):
        fastgru.GRU.from_onnx(W, R[:, :, :2], Bias)
    with pytest.raises(ValueError, match="B"):
        fastgru.GRU.from_onnx(W, R, Bias[:, :3])
    with pytest.raises(ValueError, match="linear_before_reset"):
        fastgru.GRU.from_onnx(W, R, Bias, linear_before_reset=2)
    with pytest.raises(ValueError, match="linear_before_reset"):
        fastgru.GRU.from_onnx(W, R, Bias, linear_before_reset=0.5)
    with pytest.raises(ValueError, match="layer"):
        fastgru.GRU(I, H).to_onnx(layer=1)
    Wl, Rl, Bl = fastgru.LSTM(I, H).to_onnx()
    with pytest.raises(NotImplementedError, match="peephole"):
        fastgru.LSTM.from_onnx(Wl, Rl, Bl, P=np.ones((1, 3 * H), np.float32))


def test_from_onnx_warns_when_linear_before_reset_is_left_to_the_default():
    """The arrays cannot tell reset-before from reset-after: without linear_before_reset the
    import takes ONNX's 0 and says so (to_onnx() of a default GRU needs 1)."""
    g = fastgru.GRU(I, H, seed=0)
    with pytest.warns(UserWarning, match="linear_before_reset=1"):
        assert not fastgru.GRU.from_onnx(*g.to_onnx()).reset_after
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        back = fastgru.GRU.from_onnx(*g.to_onnx(), linear_before_reset=1)
        assert not fastgru.GRU.from_onnx(*g.to_onnx(), linear_before_reset=0).reset_after
        fastgru.LSTM.from_onnx(*fastgru.LSTM(I, H).to_onnx())
    np.testing.assert_array_equal(back.flat_parameters(), g.flat_parameters())


def test_from_onnx_takes_reset_after_as_a_synonym_and_refuses_clashes():
    g = fastgru.GRU(I, H, seed=0)
    x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        back = fastgru.GRU.from_onnx(*g.to_onnx(), reset_after=True)
        assert back.reset_after
        assert not fastgru.GRU.from_onnx(*g.to_onnx(), reset_after=False).reset_after
        assert fastgru.GRU.from_onnx(*g.to_onnx(), linear_before_reset=1,
                                     reset_after=True).reset_after
    np.testing.assert_array_equal(back(x)[0], g(x)[0])
    with pytest.raises(ValueError, match="contradicts linear_before_reset"):
        fastgru.GRU.from_onnx(*g.to_onnx(), linear_before_reset=0, reset_after=True)
    for bad in (dict(hidden_size=H + 1), dict(bidirectional=True), dict(bias=False)):
        with pytest.raises(ValueError, match="come from W, R, B|contradicts the ONNX weights"):
            fastgru.GRU.from_onnx(*g.to_onnx(), linear_before_reset=1, **bad)
    for bad in (dict(reverse=True), dict(bidirectional=False, reverse=True)):
        with pytest.raises(ValueError, match="reverse=True contradicts"):
            fastgru.GRU.from_onnx(*g.to_onnx(), linear_before_reset=1, **bad)
    # repeating what W, R, B and direction say is fine
    same = fastgru.GRU.from_onnx(*g.to_onnx(), linear_before_reset=1, bidirectional=False,
                                 reverse=False)
    np.testing.assert_array_equal(same(x)[0], g(x)[0])
    assert fastgru.GRU.from_onnx(*g.to_onnx(), linear_before_reset=1, batch_first=True).batch_first


@pytest.mark.parametrize("cell,lbr", [("gru", 1), ("gru", 0), ("lstm", None)])
def test_onnx_reference_evaluator_agrees(cell, lbr):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator

    rng = np.random.default_rng(0)
    D = 2
    G = (3 if cell == "gru" else 4) * H
    W = rng.uniform(-0.5, 0.5, (D, G, I))
    R = rng.uniform(-0.5, 0.5, (D, G, H))
    Bias = rng.uniform(-0.5, 0.5, (D, 2 * G))
    x = rng.standard_normal((T, B, I))
    attrs = dict(hidden_size=H, direction="bidirectional")
    outs = ["Y", "Y_h"] + (["Y_c"] if cell == "lstm" else [])
    if cell == "gru":
        attrs["linear_before_reset"] = lbr
        m = fastgru.GRU.from_onnx(W, R, Bias, linear_before_reset=lbr, direction="bidirectional")
    else:
        m = fastgru.LSTM.from_onnx(W, R, Bias, direction="bidirectional")
    node = helper.make_node(cell.upper(), ["X", "W", "R", "B"], outs, **attrs)
    vi = [helper.make_tensor_value_info(n, TensorProto.DOUBLE, None) for n in "X W R B".split()]
    graph = helper.make_graph([node], "g", vi,
                              [helper.make_tensor_value_info(n, TensorProto.DOUBLE, None)
                               for n in outs])
    model = onnx_model(graph)
    got = ReferenceEvaluator(model).run(None, dict(X=x, W=W, R=R, B=Bias))
    assert m.dtype == np.float64
    y, st = m(x)
    y_onnx = got[0].transpose(0, 2, 1, 3).reshape(T, B, D * H)  # [T, D, B, H] -> [T, B, D*H]
    assert rel_err(y, y_onnx) < 1e-12
    h = st[0] if cell == "lstm" else st
    assert rel_err(h, got[1]) < 1e-12
    if cell == "lstm":
        assert rel_err(st[1], got[2]) < 1e-12
    assert onnx is not None


CASES = [
    ("gru", dict(num_layers=2, bidirectional=True), True, True),
    ("gru", dict(num_layers=3, batch_first=True, reset_after=False), True, False),
    ("gru", dict(bias=False), False, False),
    ("lstm", dict(num_layers=2, bidirectional=True, batch_first=True), True, True),
    ("lstm", dict(), False, True),
]


@pytest.mark.parametrize("cell,kw,initial_state,with_lengths", CASES)
def test_export_runs_in_onnxruntime(tmp_path, cell, kw, initial_state, with_lengths):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    cls = fastgru.GRU if cell == "gru" else fastgru.LSTM
    m = cls(I, H, seed=3, **kw).eval()
    L, D = m.num_layers, m.num_directions
    rng = np.random.default_rng(1)
    x = rng.standard_normal((B, T, I) if m.batch_first else (T, B, I)).astype(np.float32)
    lengths = np.array([T, 2, 4], np.int32) if with_lengths else None
    h0 = rng.standard_normal((L * D, B, H)).astype(np.float32) if initial_state else None
    c0 = rng.standard_normal((L * D, B, H)).astype(np.float32) if initial_state else None
    path = tmp_path / "layer.onnx"
    model = m.export_onnx(path, initial_state=initial_state, lengths=with_lengths)
    assert path.exists() and [p.name for p in tmp_path.iterdir()] == ["layer.onnx"]
    assert [o.name for o in model.graph.output] == ["y", "h_n"] + (["c_n"] if cell == "lstm"
                                                                  else [])
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {"x": x}
    if with_lengths:
        feed["lengths"] = lengths
    if initial_state:
        feed["h0"] = h0
        if cell == "lstm":
            feed["c0"] = c0
    got = sess.run(None, feed)
    if cell == "lstm":
        y, (hn, cn) = m(x, (h0, c0) if initial_state else None, lengths)
        want = [y, hn, cn]
    else:
        y, hn = m(x, h0, lengths)
        want = [y, hn]
    for a, b in zip(got, want, strict=True):
        assert a.shape == b.shape
        assert rel_err(a, b) < 1e-5


def test_export_refuses_what_onnx_cannot_express():
    pytest.importorskip("onnx")
    with pytest.raises(NotImplementedError, match="proj"):
        fastgru.LSTM(I, H, proj_size=2).export_onnx()
    with pytest.raises(ValueError, match="opset"):
        fastgru.GRU(I, H).export_onnx(opset=9)
    with pytest.raises(TypeError, match="layer"):
        fastgru.export_onnx(fastgru.GRUCell(I, H))
    model = fastgru.GRU(I, H, dtype="float64").export_onnx(dtype="float32")
    assert model.graph.initializer[1].data_type == 1  # FLOAT
    assert not os.path.exists("None")


@pytest.mark.parametrize("cell,kw,initial_state,with_lengths", CASES)
def test_model_import_round_trips_the_export(tmp_path, cell, kw, initial_state, with_lengths):
    """export_onnx -> from_onnx_model gives back the same layer (weights, config), from a path,
    from bytes and from the ModelProto."""
    pytest.importorskip("onnx")
    cls = fastgru.GRU if cell == "gru" else fastgru.LSTM
    m = cls(I, H, seed=3, **kw)
    path = tmp_path / "m.onnx"
    proto = m.export_onnx(path, initial_state=initial_state, lengths=with_lengths)
    for src in (path, str(path), path.read_bytes(), proto):
        with warnings.catch_warnings():  # the per-layer slices of h0 are the caller's h0
            warnings.simplefilter("error", UserWarning)
            back = cls.from_onnx_model(src)
        skip = ("seed", "dropout")  # not in an ONNX model
        assert {k: v for k, v in back.get_config().items() if k not in skip} == \
            {k: v for k, v in m.get_config().items() if k not in skip}
        for name, a in m.parameters().items():
            np.testing.assert_array_equal(back.parameters()[name], a, err_msg=name)


def _one_node_model(cell, W, R, Bias, attrs, with_b=True, const_nodes=False, P=None):
    from onnx import TensorProto, helper, numpy_helper

    outs = ["Y", "Y_h"] + (["Y_c"] if cell == "lstm" else [])
    names = ["X", "W", "R"] + (["B"] if with_b else [])
    if P is not None:
        names += ["", "", "", "P"]
    arrays = dict(W=W, R=R, B=Bias, P=P)
    inits, nodes = [], []
    for n in names[1:]:
        if not n:
            continue
        t = numpy_helper.from_array(arrays[n].astype(np.float32), n)
        if const_nodes:
            nodes.append(helper.make_node("Constant", [], [n], value=t))
        else:
            inits.append(t)
    nodes.append(helper.make_node(cell.upper(), names, outs, name="rnn", **attrs))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outs], inits)
    return onnx_model(graph)


@pytest.mark.parametrize("cell,attrs", [
    ("gru", dict(linear_before_reset=1, direction="bidirectional")),
    ("gru", dict(linear_before_reset=0, layout=1)),
    ("gru", dict(linear_before_reset=1, activations=["Sigmoid", "Tanh"])),
    ("lstm", dict(direction="bidirectional", layout=1)),
    ("lstm", dict(activations=["Sigmoid", "Tanh", "Tanh"], input_forget=0)),
])
@pytest.mark.parametrize("const_nodes", [False, True])
def test_model_import_matches_onnxruntime(cell, attrs, const_nodes):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(1)
    D = 2 if attrs.get("direction") == "bidirectional" else 1
    G = (3 if cell == "gru" else 4) * H
    W = rng.uniform(-0.6, 0.6, (D, G, I)).astype(np.float32)
    R = rng.uniform(-0.6, 0.6, (D, G, H)).astype(np.float32)
    Bias = rng.uniform(-0.6, 0.6, (D, 2 * G)).astype(np.float32)
    model = _one_node_model(cell, W, R, Bias, dict(attrs, hidden_size=H), const_nodes=const_nodes,
                            P=np.zeros((D, 3 * H)) if cell == "lstm" else None)
    cls = fastgru.GRU if cell == "gru" else fastgru.LSTM
    m = cls.from_onnx_model(model)
    layout = attrs.get("layout", 0)
    assert m.batch_first == (layout == 1)
    x = rng.standard_normal((B, T, I) if layout else (T, B, I)).astype(np.float32)
    if layout:  # ONNX Runtime runs layout 0 only: the ONNX reference evaluator then
        from onnx.reference import ReferenceEvaluator

        got = ReferenceEvaluator(model).run(None, {"X": x})
    else:
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        got = sess.run(None, {"X": x})
    y, st = m(x)
    # ONNX Y: [T, D, B, H] (layout 0) or [B, T, D, H] (layout 1)
    y_onnx = (got[0].reshape(B, T, D * H) if layout else
              got[0].transpose(0, 2, 1, 3).reshape(T, B, D * H))
    assert rel_err(y, y_onnx) < 1e-5
    h = st[0] if cell == "lstm" else st
    h_onnx = got[1].transpose(1, 0, 2) if layout else got[1]  # layout 1: Y_h [B, D, H]
    assert rel_err(h, h_onnx) < 1e-5


def test_model_import_refuses_what_fastgru_cannot_compute():
    pytest.importorskip("onnx")
    rng = np.random.default_rng(0)
    G = 3 * H
    W, R = rng.standard_normal((1, G, I)), rng.standard_normal((1, G, H))
    Bias = rng.standard_normal((1, 2 * G))

    def model(cell="gru", **attrs):
        g = G if cell == "gru" else 4 * H
        w, r, b = (W, R, Bias) if cell == "gru" else (rng.standard_normal((1, g, I)),
                                                        rng.standard_normal((1, g, H)),
                                                        rng.standard_normal((1, 2 * g)))
        return _one_node_model(cell, w, r, b, attrs, P=attrs.pop("P", None))

    for attrs, err, word in [
        (dict(clip=3.0), NotImplementedError, "clip"),
        (dict(activations=["Relu", "Tanh"]), NotImplementedError, "activations"),
        (dict(activations=["Sigmoid"]), ValueError, "activations lists 1 functions; the ONNX "
         "GRU operator needs 2 per direction, 2 for direction='forward'"),
        (dict(activations=["Sigmoid", "Tanh"], direction="bidirectional"), ValueError,
         "needs 2 per direction, 4 for direction='bidirectional'"),
        (dict(direction="sideways"), ValueError, "direction"),
        (dict(hidden_size=H + 1), ValueError, "hidden_size"),
        (dict(layout=2), ValueError, "layout"),
        (dict(linear_before_reset=3), ValueError, "linear_before_reset"),
    ]:
        with pytest.raises(err, match=word):
            fastgru.GRU.from_onnx_model(model(**attrs))
    with pytest.raises(NotImplementedError, match="input_forget"):
        fastgru.LSTM.from_onnx_model(model("lstm", input_forget=1))
    with pytest.raises(NotImplementedError, match="peephole"):
        fastgru.LSTM.from_onnx_model(model("lstm", P=np.ones((1, 3 * H))))
    with pytest.raises(ValueError, match="no LSTM node"):
        fastgru.LSTM.from_onnx_model(model())
    # W computed in the graph (not folded to a constant)
    from onnx import helper

    m = model()
    m.graph.node.insert(0, helper.make_node("Identity", ["W0"], ["W"]))
    for t in m.graph.initializer:
        if t.name == "W":
            t.name = "W0"
    with pytest.raises(ValueError, match="constant"):
        fastgru.GRU.from_onnx_model(m)
    # two nodes that are not the layers of one stack
    a = fastgru.GRU(I, H, num_layers=2).export_onnx()
    for n in a.graph.node:
        if n.op_type == "GRU":
            for at in n.attribute:
                if at.name == "linear_before_reset":
                    at.i = 1 - at.i
                    break
            break
    with pytest.raises(ValueError, match="one stack"):
        fastgru.GRU.from_onnx_model(a)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("dynamic_batch", [False, True])
def test_model_import_of_torch_export(tmp_path, batch_first, dynamic_batch):
    """A torch.nn.GRU / nn.LSTM exported by torch.onnx.export (when that works here) loads
    with the same outputs, and without a warning: the zero initial state torch builds in the
    graph for a call without h0 (Expand / ConstantOfShape, sliced per layer) is what a fastgru
    call without h0 uses."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    for cls, tcls in ((fastgru.GRU, torch.nn.GRU), (fastgru.LSTM, torch.nn.LSTM)):
        torch.manual_seed(0)
        mod = tcls(I, H, num_layers=2, bidirectional=True, batch_first=batch_first).eval()
        x = torch.randn((B, T, I) if batch_first else (T, B, I))
        path = tmp_path / f"{cls.__name__}.onnx"
        dyn = {"x": {0 if batch_first else 1: "B"}} if dynamic_batch else None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the exporter's tracing warnings
                torch.onnx.export(mod, (x,), str(path), dynamo=False, input_names=["x"],
                                  dynamic_axes=dyn)
        except Exception as exc:  # exporter dependencies missing in this environment
            pytest.skip(f"torch.onnx.export failed here: {type(exc).__name__}: {exc}")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            m = cls.from_onnx_model(path)
        assert not caught, [str(w.message) for w in caught]
        assert m.batch_first == batch_first
        with torch.no_grad():
            ty, _ = mod(x)
        y, _ = m(x.numpy())
        assert rel_err(y, ty.numpy()) < 1e-5


def test_model_import_bad_arguments(tmp_path):
    pytest.importorskip("onnx")
    with pytest.raises(TypeError, match="model must be"):
        fastgru.GRU.from_onnx_model(42)
    with pytest.raises(ValueError, match="cannot read an ONNX model"):
        fastgru.GRU.from_onnx_model(b"not a model")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\xffnot protobuf")
    with pytest.raises(ValueError, match="cannot read an ONNX model"):
        fastgru.GRU.from_onnx_model(junk)
    with pytest.raises(FileNotFoundError):
        fastgru.GRU.from_onnx_model(tmp_path / "missing.onnx")
    G = 3 * H
    ints = _one_node_model("gru", np.zeros((1, G, I)), np.zeros((1, G, H)), None, {},
                           with_b=False)
    for t in ints.graph.initializer:
        t.data_type = 6  # INT32 (the float payload is dropped: zeros)
        del t.float_data[:]
        t.raw_data = np.zeros(int(np.prod(t.dims)), np.int32).tobytes()
    with pytest.raises(TypeError, match="float"):
        fastgru.GRU.from_onnx_model(ints)


def _two_gru_model(between, initial_h=None, seq_lens=None):
    """GRU a (X) -> [ops named in `between`] -> GRU b: a stack only through layout ops.
    between: None (b reads X too) or a list of op types applied to a's Y in order."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    I, H = 3, 4
    inits = [numpy_helper.from_array(rng.uniform(-0.5, 0.5, s).astype(np.float32), n)
             for n, s in (("Wa", (1, 3 * H, I)), ("Ra", (1, 3 * H, H)),
                          ("Wb", (1, 3 * H, H)), ("Rb", (1, 3 * H, H)))]
    a_in = ["X", "Wa", "Ra"]
    if initial_h is not None or seq_lens is not None:
        a_in += ["", "", ""]
        if seq_lens is not None:
            inits.append(numpy_helper.from_array(np.asarray(seq_lens, np.int32), "L"))
            a_in[4] = "L"
        if initial_h is not None:
            inits.append(numpy_helper.from_array(np.asarray(initial_h, np.float32), "h0"))
            a_in[5] = "h0"
    nodes = [helper.make_node("GRU", a_in, ["Ya", "Ha"], name="a", hidden_size=H)]
    x = "X"
    if between is not None:
        inits.append(numpy_helper.from_array(np.array([1], np.int64), "ax"))
        nodes.append(helper.make_node("Squeeze", ["Ya", "ax"], ["s0"]))
        x = "s0"
        for k, opname in enumerate(between):
            nodes.append(helper.make_node(opname, [x], [f"o{k}"]))
            x = f"o{k}"
    nodes.append(helper.make_node("GRU", [x, "Wb", "Rb"], ["Yb", "Hb"], name="b", hidden_size=H))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT,
                                                                         None)],
                              [helper.make_tensor_value_info("Yb", TensorProto.FLOAT, None)],
                              inits)
    return onnx_model(graph)


def test_model_import_checks_that_the_nodes_form_a_stack():
    pytest.importorskip("onnx")
    m = fastgru.GRU.from_onnx_model(_two_gru_model([]))  # GRU -> Squeeze -> GRU
    assert m.num_layers == 2
    assert fastgru.GRU.from_onnx_model(_two_gru_model(["Identity"])).num_layers == 2
    with pytest.raises(ValueError, match="graph input"):  # both nodes read X
        fastgru.GRU.from_onnx_model(_two_gru_model(None))
    with pytest.raises(ValueError, match="Relu"):  # an activation between the layers
        fastgru.GRU.from_onnx_model(_two_gru_model(["Relu"]))


def test_model_import_warns_about_constant_states_and_lengths():
    pytest.importorskip("onnx")
    with pytest.warns(UserWarning, match="initial_h .* h0="):
        fastgru.GRU.from_onnx_model(_two_gru_model([], initial_h=np.ones((1, 2, 4))))
    with pytest.warns(UserWarning, match="sequence_lens .* lengths="):
        fastgru.GRU.from_onnx_model(_two_gru_model([], seq_lens=[2, 3]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an all-zero initial state is what a call uses anyway
        fastgru.GRU.from_onnx_model(_two_gru_model([], initial_h=np.zeros((1, 2, 4))))


def _gru_graph(nodes_before, x_name, extra_inits=(), bidirectional_pair=None, h0_name=""):
    """One GRU node (I = 3, H = 4) reading x_name after nodes_before, graph input "X";
    bidirectional_pair: a list of layout nodes from the first node's Y "Ya" to a second
    bidirectional GRU's input (both nodes bidirectional)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    I, H = 3, 4
    D = 2 if bidirectional_pair is not None else 1
    inits = [numpy_helper.from_array(rng.uniform(-0.5, 0.5, s).astype(np.float32), n)
             for n, s in (("W", (D, 3 * H, I)), ("R", (D, 3 * H, H)),
                          ("W2", (D, 3 * H, D * H)), ("R2", (D, 3 * H, H)))]
    inits += list(extra_inits)
    attrs = dict(hidden_size=H, linear_before_reset=1)
    if D == 2:
        attrs["direction"] = "bidirectional"
    ins = [x_name, "W", "R"] + (["", "", h0_name] if h0_name else [])
    nodes = list(nodes_before) + [helper.make_node("GRU", ins, ["Ya", "Ha"], name="a", **attrs)]
    out = "Ya"
    if bidirectional_pair is not None:
        nodes += bidirectional_pair
        nodes.append(helper.make_node("GRU", [bidirectional_pair[-1].output[0], "W2", "R2"],
                                      ["Yb", "Hb"], name="b", **attrs))
        out = "Yb"
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT,
                                                                         None)],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
                              inits)
    return onnx_model(graph)


def test_model_import_warns_about_a_computed_initial_state():
    """A learned h0 expanded to the batch (torch.onnx.export of an nn.Parameter h0) is computed
    in the graph: the import says so instead of dropping it silently."""
    pytest.importorskip("onnx")
    from onnx import helper, numpy_helper

    inits = [numpy_helper.from_array(np.ones((1, 1, 4), np.float32), "h0p"),
             numpy_helper.from_array(np.array([1, 2, 4], np.int64), "shp")]
    expand = helper.make_node("Expand", ["h0p", "shp"], ["h0"])
    with pytest.warns(UserWarning, match="initial_h is computed in the graph .* h0="):
        fastgru.GRU.from_onnx_model(_gru_graph([expand], "X", inits, h0_name="h0"))


@pytest.mark.parametrize("value, warns", [(None, False), (0.0, False), (0.5, True)])
def test_model_import_zero_state_built_in_the_graph(value, warns):
    """ConstantOfShape (default value 0) -> Concat -> Slice -> Expand as initial_h: zeros, no
    warning; a non-zero fill is a state the layer cannot hold, so it warns."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    fill = {} if value is None else {
        "value": helper.make_tensor("v", TensorProto.FLOAT, [1], [value])}
    inits = [numpy_helper.from_array(np.array([1, 1, 4], np.int64), "s1"),
             numpy_helper.from_array(np.zeros((1, 1, 4), np.float32), "z"),
             numpy_helper.from_array(np.array([0], np.int64), "st"),
             numpy_helper.from_array(np.array([1], np.int64), "en"),
             numpy_helper.from_array(np.array([1, 2, 4], np.int64), "shp")]
    pre = [helper.make_node("ConstantOfShape", ["s1"], ["c"], **fill),
           helper.make_node("Concat", ["c", "z"], ["cz"], axis=0),
           helper.make_node("Slice", ["cz", "st", "en"], ["cs"]),
           helper.make_node("Expand", ["cs", "shp"], ["h0"])]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fastgru.GRU.from_onnx_model(_gru_graph(pre, "X", inits, h0_name="h0"))
    got = [str(w.message) for w in caught if "initial_h" in str(w.message)]
    assert bool(got) == warns, got


def test_model_import_batch_first_after_another_op():
    """Linear -> Transpose(1, 0, 2) -> GRU (torch's export of a batch_first GRU after another
    layer): the layer is batch_first and takes what the Transpose takes."""
    pytest.importorskip("onnx")
    from onnx import helper, numpy_helper

    bias = numpy_helper.from_array(np.full(3, 0.25, np.float32), "bias")
    pre = [helper.make_node("Add", ["X", "bias"], ["a"]),
           helper.make_node("Transpose", ["a"], ["xt"], perm=[1, 0, 2])]
    model = _gru_graph(pre, "xt", [bias])
    m = fastgru.GRU.from_onnx_model(model)
    assert m.batch_first
    x = np.random.default_rng(1).standard_normal((2, 5, 3)).astype(np.float32)  # (B, T, I)
    ort = pytest.importorskip("onnxruntime")
    yo = ort.InferenceSession(model.SerializeToString()).run(None, {"X": x})[0]  # (T, 1, B, H)
    y, _ = m(x + 0.25)
    assert rel_err(y, yo[:, 0].transpose(1, 0, 2)) < 1e-5


def test_model_import_checks_what_the_layout_ops_do():
    """Between bidirectional layers a stack is Transpose(0, 2, 1, 3) + Reshape([0, 0, -1]) (the
    directions side by side); a Reshape alone interleaves batch rows and directions."""
    pytest.importorskip("onnx")
    from onnx import helper, numpy_helper

    shape = numpy_helper.from_array(np.array([0, 0, -1], np.int64), "shape")
    good = [helper.make_node("Transpose", ["Ya"], ["t"], perm=[0, 2, 1, 3]),
            helper.make_node("Reshape", ["t", "shape"], ["r"])]
    m = fastgru.GRU.from_onnx_model(_gru_graph([], "X", [shape], bidirectional_pair=good))
    assert m.num_layers == 2 and m.bidirectional
    bad = [helper.make_node("Reshape", ["Ya", "shape"], ["r"])]
    with pytest.raises(ValueError, match="do not turn Y into the next layer's input"):
        fastgru.GRU.from_onnx_model(_gru_graph([], "X", [shape], bidirectional_pair=bad))
    bad_perm = [helper.make_node("Transpose", ["Ya"], ["t"], perm=[0, 2, 3, 1]),
                helper.make_node("Reshape", ["t", "shape"], ["r"])]
    with pytest.raises(ValueError, match="Transpose -> Reshape"):
        fastgru.GRU.from_onnx_model(_gru_graph([], "X", [shape], bidirectional_pair=bad_perm))


def test_model_import_checks_a_computed_reshape_between_layers():
    """Exporters compute the Reshape's shape ([T, B, -1] from Shape -> Slice -> Concat): after
    the Transpose that puts the directions side by side it is a stack (matches ONNX Runtime);
    straight on Y it interleaves batch rows and directions and is refused."""
    pytest.importorskip("onnx")
    from onnx import helper, numpy_helper

    inits = [numpy_helper.from_array(np.array([v], np.int64), n)
             for n, v in (("s0", 0), ("s2", 2), ("m1", -1))]
    shape = [helper.make_node("Shape", ["X"], ["xs"]),
             helper.make_node("Slice", ["xs", "s0", "s2"], ["tb"]),
             helper.make_node("Concat", ["tb", "m1"], ["shape"], axis=0)]
    good = shape + [helper.make_node("Transpose", ["Ya"], ["t"], perm=[0, 2, 1, 3]),
                    helper.make_node("Reshape", ["t", "shape"], ["r"])]
    model = _gru_graph([], "X", inits, bidirectional_pair=good)
    m = fastgru.GRU.from_onnx_model(model)
    assert m.num_layers == 2 and m.bidirectional
    ort = pytest.importorskip("onnxruntime")
    x = np.random.default_rng(2).standard_normal((5, 3, 3)).astype(np.float32)  # (T, B, I)
    yo = ort.InferenceSession(model.SerializeToString()).run(None, {"X": x})[0]  # (T, 2, B, H)
    assert rel_err(m(x)[0], yo.transpose(0, 2, 1, 3).reshape(5, 3, 8)) < 1e-5
    bad = shape + [helper.make_node("Reshape", ["Ya", "shape"], ["r"])]
    with pytest.raises(ValueError, match="do not turn Y into the next layer's input"):
        fastgru.GRU.from_onnx_model(_gru_graph([], "X", inits, bidirectional_pair=bad))


def test_model_import_refuses_layout_1_after_a_transpose():
    """Transpose(1, 0, 2) into a layout=1 node: the two cancel (time-major in, batch-major
    out), which no fastgru layout computes."""
    pytest.importorskip("onnx")
    from onnx import helper

    model = _gru_graph([helper.make_node("Transpose", ["X"], ["xt"], perm=[1, 0, 2])], "xt")
    for n in model.graph.node:
        if n.op_type == "GRU":
            n.attribute.append(helper.make_attribute("layout", 1))
    with pytest.raises(NotImplementedError, match="layout=1"):
        fastgru.GRU.from_onnx_model(model)


def test_model_import_of_bytes_that_are_no_model():
    pytest.importorskip("onnx")
    with pytest.raises(ValueError, match="empty graph|cannot read an ONNX model"):
        fastgru.GRU.from_onnx_model(b"not onnx")


def test_model_import_with_a_fixed_shape_reshape_between_layers():
    """An exporter with static T and B writes the stack's Reshape as a constant [T, B, D*H]:
    still a stack (checked at that T and B; matches ONNX Runtime); a fixed Reshape that mixes
    the directions into the batch rows is refused."""
    pytest.importorskip("onnx")
    from onnx import helper, numpy_helper

    fixed = numpy_helper.from_array(np.array([5, 3, 8], np.int64), "fixed")
    good = [helper.make_node("Transpose", ["Ya"], ["t"], perm=[0, 2, 1, 3]),
            helper.make_node("Reshape", ["t", "fixed"], ["r"])]
    model = _gru_graph([], "X", [fixed], bidirectional_pair=good)
    with pytest.warns(UserWarning, match="fixes the shape to T = 5, B = 3"):
        m = fastgru.GRU.from_onnx_model(model)  # X has no declared shape: T, B from the Reshape
    assert m.num_layers == 2 and m.bidirectional
    declared = _gru_graph([], "X", [fixed], bidirectional_pair=good)
    declared.graph.input[0].type.tensor_type.shape.dim.add().dim_value = 5
    declared.graph.input[0].type.tensor_type.shape.dim.add().dim_value = 3
    declared.graph.input[0].type.tensor_type.shape.dim.add().dim_value = 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fastgru.GRU.from_onnx_model(declared).num_layers == 2
    # the same Reshape target with T and B swapped in the declared input ([3, 5, .]): the
    # Reshape then reorders the data (it gives the next node the batch axis as time)
    swapped = _gru_graph([], "X", [numpy_helper.from_array(np.array([3, 5, 8], np.int64),
                                                           "fixed")], bidirectional_pair=good)
    for v in (5, 3, 3):
        swapped.graph.input[0].type.tensor_type.shape.dim.add().dim_value = v
    with pytest.raises(ValueError, match="do not turn Y into the next layer's input"):
        fastgru.GRU.from_onnx_model(swapped)
    bad = [helper.make_node("Reshape", ["Ya", "fixed"], ["r"])]
    with pytest.raises(ValueError, match="do not turn Y into the next layer's input"):
        fastgru.GRU.from_onnx_model(_gru_graph([], "X", [fixed], bidirectional_pair=bad))
    ort = pytest.importorskip("onnxruntime")
    x = np.random.default_rng(3).standard_normal((5, 3, 3)).astype(np.float32)
    yo = ort.InferenceSession(model.SerializeToString()).run(None, {"X": x})[0]
    assert rel_err(m(x)[0], yo.transpose(0, 2, 1, 3).reshape(5, 3, 8)) < 1e-5


def test_model_import_refuses_kwargs_that_contradict_the_nodes():
    """kwargs may add constructor arguments (batch_first, n_threads) or repeat what the nodes
    say; one that contradicts them (it would load the weights into another function) raises."""
    pytest.importorskip("onnx")
    model = _gru_graph([], "X")  # linear_before_reset=1, forward, with B absent (no biases)
    for bad in (dict(reset_after=False), dict(reverse=True), dict(bidirectional=True),
                dict(hidden_size=5), dict(num_layers=2), dict(bias=True)):
        with pytest.raises(ValueError, match="contradicts the ONNX model's GRU nodes"):
            fastgru.GRU.from_onnx_model(model, **bad)
    m = fastgru.GRU.from_onnx_model(model, reset_after=True, reverse=False, n_threads=1)
    assert m.reset_after and not m.reverse


def test_onnx_argument_types_and_unknown_attributes():
    g = fastgru.GRU(I, H, seed=0)
    W, R, Bias = g.to_onnx()
    with pytest.raises(ValueError, match="direction must be 'forward', 'reverse' or"):
        fastgru.GRU.from_onnx(W, R, Bias, linear_before_reset=1, direction=["forward"])
    with pytest.raises(TypeError, match="^B must be a float array, got dtype int64"):
        fastgru.GRU.from_onnx(W, R, Bias.astype(np.int64), linear_before_reset=1)
    pytest.importorskip("onnx")
    rng = np.random.default_rng(0)
    G = 4 * H
    W4, R4 = rng.uniform(-1, 1, (1, G, I)), rng.uniform(-1, 1, (1, G, H))
    for attrs, P, match in ((dict(foo=1), None, "attribute foo is not in the ONNX LSTM"),
                            (dict(linear_before_reset=1), None,
                             "attribute linear_before_reset is not in the ONNX LSTM"),
                            ({}, np.zeros((1, 4 * H)), r"P must have shape \[num_directions, "
                                                       r"3\*hidden_size\] = \[1, 15\]")):
        model = _one_node_model("lstm", W4, R4, None, dict(attrs, hidden_size=H),
                                with_b=False, P=P)
        if P is not None:  # the P input sits at index 7; B is absent
            node = model.graph.node[-1]
            del node.input[:]
            node.input.extend(["X", "W", "R", "", "", "", "", "P"])
        with pytest.raises(ValueError, match=match):
            fastgru.LSTM.from_onnx_model(model)


def test_from_onnx_peepholes_argument_checks():
    g = fastgru.GRU(I, H, seed=0)
    with pytest.raises(TypeError, match="P .peepholes. is an ONNX LSTM input"):
        fastgru.GRU.from_onnx(*g.to_onnx(), linear_before_reset=1, P=np.zeros((1, 3 * H)))
    lstm = fastgru.LSTM(I, H, seed=0)
    with pytest.raises(ValueError, match=r"P must have shape"):
        fastgru.LSTM.from_onnx(*lstm.to_onnx(), P=np.zeros(7))
    back = fastgru.LSTM.from_onnx(*lstm.to_onnx(), P=np.zeros((1, 3 * H)))
    x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
    np.testing.assert_array_equal(back(x)[0], lstm(x)[0])


def test_model_import_weights_given_as_graph_inputs():
    """W fed as a graph input (the model does not carry the weights): a clear message, not
    "computed in the graph"."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    model = _gru_graph([], "X")
    w = [t for t in model.graph.initializer if t.name == "W"][0]
    model.graph.initializer.remove(w)
    model.graph.input.append(helper.make_tensor_value_info("W", TensorProto.FLOAT, None))
    with pytest.raises(ValueError, match="is an input of the graph, not a constant"):
        fastgru.GRU.from_onnx_model(model)


@pytest.mark.parametrize("cls,kw", [(fastgru.GRUCell, dict(reset_after=True)),
                                    (fastgru.GRUCell, dict(reset_after=False, bias=False)),
                                    (fastgru.LSTMCell, dict()),
                                    (fastgru.LSTMCell, dict(bias=False))])
def test_cell_onnx_weights_run_one_onnxruntime_step(cls, kw):
    """A cell's to_onnx() is one forward ONNX step; from_onnx() of it is the same cell."""
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    cell = cls(I, H, seed=3, **kw)
    W, R, Bias = cell.to_onnx()
    lbr = dict(linear_before_reset=int(cell.reset_after)) if cls is fastgru.GRUCell else {}
    back = cls.from_onnx(W, R, Bias, **lbr)
    assert back.get_config() == cell.get_config()
    rng = np.random.default_rng(4)
    x = rng.standard_normal((B, I)).astype(np.float32)
    h = rng.standard_normal((B, H)).astype(np.float32)
    state = (h, rng.standard_normal((B, H)).astype(np.float32)) if cls is fastgru.LSTMCell else h
    ours, again = cell(x, state), back(x, state)
    ours, again = (ours, again) if isinstance(ours, tuple) else ((ours,), (again,))
    for a, b in zip(ours, again, strict=True):
        np.testing.assert_array_equal(a, b)
    name = "gru" if cls is fastgru.GRUCell else "lstm"
    model = _one_node_model(name, W, R, Bias, dict(lbr, hidden_size=H), with_b=Bias is not None)
    from onnx import TensorProto, helper

    node, feeds = model.graph.node[-1], {"X": x[None], "h0": h[None]}
    # inputs X, W, R, B, sequence_lens, initial_h (, initial_c, LSTM)
    node.input.extend([""] * (5 - len(node.input)) + ["h0"])
    if cls is fastgru.LSTMCell:
        node.input.append("c0")
        feeds["c0"] = state[1][None]
    for n in feeds:
        if n != "X":
            model.graph.input.append(helper.make_tensor_value_info(n, TensorProto.FLOAT, None))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, feeds)
    assert rel_err(ours[0], got[1][0]) < 1e-5
    if cls is fastgru.LSTMCell:
        assert rel_err(ours[1], got[2][0]) < 1e-5


def test_cell_from_onnx_bad_arguments():
    g, lstm = fastgru.GRUCell(I, H, seed=0), fastgru.LSTMCell(I, H, seed=0)
    with pytest.raises(ValueError, match="direction must be 'forward' for a cell"):
        fastgru.GRUCell.from_onnx(*g.to_onnx(), linear_before_reset=1, direction="reverse")
    with pytest.raises(ValueError, match=r"W must have shape \[D, 4H, I\] with D = 1"):
        fastgru.LSTMCell.from_onnx(*fastgru.LSTM(I, H, bidirectional=True).to_onnx())
    with pytest.raises(TypeError, match="linear_before_reset is an ONNX GRU attribute"):
        fastgru.LSTMCell.from_onnx(*lstm.to_onnx(), linear_before_reset=1)
    with pytest.raises(TypeError, match="linear_before_reset is an ONNX GRU attribute"):
        fastgru.LSTM.from_onnx(*fastgru.LSTM(I, H).to_onnx(), linear_before_reset=0)
    with pytest.raises(ValueError, match="contradicts linear_before_reset"):
        fastgru.GRUCell.from_onnx(*g.to_onnx(), linear_before_reset=0, reset_after=True)
    with pytest.warns(UserWarning, match="linear_before_reset not given"):
        assert not fastgru.GRUCell.from_onnx(*g.to_onnx()).reset_after
