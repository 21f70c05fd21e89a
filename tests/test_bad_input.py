"""A corpus of bad calls: each must raise ValueError/TypeError naming the argument, never crash,
hang or return wrong numbers."""

import numpy as np
import pytest

import fastgru
from fastgru import ops
from fastgru import reference as ref

T, B, I, H = 4, 3, 5, 6


def gru_args(dtype=np.float32):
    rng = np.random.default_rng(0)
    return dict(
        x=rng.standard_normal((T, B, I)).astype(dtype),
        h0=np.zeros((B, H), dtype),
        w_ih=np.zeros((3 * H, I), dtype),
        w_hh=np.zeros((3 * H, H), dtype),
        b_ih=np.zeros(3 * H, dtype),
        b_hh=np.zeros(3 * H, dtype),
    )


def lstm_args(dtype=np.float32):
    a = gru_args(dtype)
    a.update(
        w_ih=np.zeros((4 * H, I), dtype),
        w_hh=np.zeros((4 * H, H), dtype),
        b_ih=np.zeros(4 * H, dtype),
        b_hh=np.zeros(4 * H, dtype),
        c0=np.zeros((B, H), dtype),
    )
    return a


def call_gru(mod, a, **kw):
    return mod.gru_forward(a["x"], a["h0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"], **kw)


def call_lstm(mod, a, **kw):
    return mod.lstm_forward(
        a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"], **kw
    )


BAD = [  # (description, changes to the args, extra kwargs, exception, word in the message)
    ("x 2-D", {"x": np.zeros((T, I), np.float32)}, {}, ValueError, "x"),
    ("x 4-D", {"x": np.zeros((T, B, I, 1), np.float32)}, {}, ValueError, "x"),
    ("x int", {"x": np.zeros((T, B, I), np.int64)}, {}, TypeError, "x"),
    ("x float16", {"x": np.zeros((T, B, I), np.float16)}, {}, TypeError, "x"),
    ("x complex", {"x": np.zeros((T, B, I), np.complex64)}, {}, TypeError, "x"),
    ("x object", {"x": np.array([[["a"]]], object)}, {}, TypeError, "x"),
    ("x None", {"x": None}, {}, TypeError, "x"),
    ("empty T", {"x": np.zeros((0, B, I), np.float32)}, {}, ValueError, "x"),
    ("empty B", {"x": np.zeros((T, 0, I), np.float32), "h0": None}, {}, ValueError, "x"),
    ("empty I", {"x": np.zeros((T, B, 0), np.float32)}, {}, ValueError, "x"),
    ("wrong input size", {"x": np.zeros((T, B, I + 1), np.float32)}, {}, ValueError, "w_ih"),
    ("h0 shape", {"h0": np.zeros((B + 1, H), np.float32)}, {}, ValueError, "h0"),
    ("h0 3-D", {"h0": np.zeros((1, B, H), np.float32)}, {}, ValueError, "h0"),
    ("h0 dtype", {"h0": np.zeros((B, H), np.float64)}, {}, TypeError, "h0"),
    ("w_hh not square", {"w_hh": np.zeros((3 * H, H + 1), np.float32)}, {}, ValueError, "w_hh"),
    ("w_ih dtype", {"w_ih": np.zeros((3 * H, I), np.float64)}, {}, TypeError, "w_ih"),
    ("w_ih 1-D", {"w_ih": np.zeros(3 * H * I, np.float32)}, {}, ValueError, "w_ih"),
    ("b_ih shape", {"b_ih": np.zeros(3 * H + 1, np.float32)}, {}, ValueError, "b_ih"),
    ("b_hh int", {"b_hh": np.zeros(3 * H, np.int32)}, {}, TypeError, "b_hh"),
    ("lengths too long", {}, {"lengths": [T + 1, 1, 1]}, ValueError, "lengths"),
    ("lengths zero", {}, {"lengths": [0, 1, 1]}, ValueError, "lengths"),
    ("lengths negative", {}, {"lengths": [-1, 1, 1]}, ValueError, "lengths"),
    ("lengths NaN", {}, {"lengths": np.array([np.nan, 1, 1])}, ValueError, "lengths"),
    ("lengths inf", {}, {"lengths": np.array([np.inf, 1, 1])}, ValueError, "lengths"),
    ("lengths fractional", {}, {"lengths": np.array([1.5, 1, 1])}, ValueError, "lengths"),
    ("lengths wrong count", {}, {"lengths": [1, 1]}, ValueError, "lengths"),
    ("lengths 2-D", {}, {"lengths": [[1, 1, 1]]}, ValueError, "lengths"),
    ("lengths bool", {}, {"lengths": np.array([True, True, True])}, TypeError, "lengths"),
    ("lengths str", {}, {"lengths": ["a", "b", "c"]}, TypeError, "lengths"),
    ("n_threads 0", {}, {"n_threads": 0}, ValueError, "n_threads"),
    ("n_threads -3", {}, {"n_threads": -3}, ValueError, "n_threads"),
    ("n_threads float", {}, {"n_threads": 1.5}, TypeError, "n_threads"),
    ("training str", {}, {"training": "yes"}, TypeError, "training"),
]


@pytest.mark.parametrize("mod", [ops, ref], ids=["ops", "reference"])
@pytest.mark.parametrize("desc,changes,kw,exc,word", BAD, ids=[b[0] for b in BAD])
def test_bad_gru_calls(mod, desc, changes, kw, exc, word):
    a = gru_args()
    a.update(changes)
    with pytest.raises(exc, match=word):
        call_gru(mod, a, **kw)


@pytest.mark.parametrize("mod", [ops, ref], ids=["ops", "reference"])
@pytest.mark.parametrize(
    "desc,changes,kw,exc,word",
    [
        ("c0 shape", {"c0": np.zeros((B, H + 1), np.float32)}, {}, ValueError, "c0"),
        ("c0 dtype", {"c0": np.zeros((B, H), np.float64)}, {}, TypeError, "c0"),
        ("w_hh gates", {"w_hh": np.zeros((3 * H, H), np.float32)}, {}, ValueError, "w_hh"),
        ("w_hr rows", {}, {"w_hr": np.zeros((H + 1, H), np.float32)}, ValueError, "w_hr"),
        ("w_hr not smaller", {}, {"w_hr": np.zeros((H, H), np.float32)}, ValueError, "projection"),
        ("w_hr vs w_hh", {}, {"w_hr": np.zeros((H, H + 1), np.float32)}, ValueError, "w_hr"),
        ("w_hr dtype", {}, {"w_hr": np.zeros((H, H), np.float64)}, TypeError, "w_hr"),
    ],
)
def test_bad_lstm_calls(mod, desc, changes, kw, exc, word):
    a = lstm_args()
    a.update(changes)
    with pytest.raises(exc, match=word):
        call_lstm(mod, a, **kw)


def test_reset_after_must_be_bool():
    with pytest.raises(TypeError, match="reset_after"):
        call_gru(ops, gru_args(), reset_after="no")


def test_blas_int_overflow_is_rejected_before_allocation():
    # T*B rows beyond 2^31-1: rejected from the shapes alone (a broadcast view, no memory)
    x = np.broadcast_to(np.zeros((1, 1, 1), np.float32), (2**16, 2**15 + 1, 1))
    a = gru_args()
    a.update(x=x, h0=None, w_ih=np.zeros((3 * H, 1), np.float32))
    with pytest.raises(ValueError, match="2\\^31"):
        call_gru(ops, a)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_bad_backward_calls(cell):
    a = gru_args() if cell == "gru" else lstm_args()
    fwd = call_gru if cell == "gru" else call_lstm
    bwd = ops.gru_backward if cell == "gru" else ops.lstm_backward
    y, *_, cache = fwd(ops, a)
    with pytest.raises(TypeError, match="cache"):
        bwd(None, y)
    with pytest.raises(TypeError, match="cache"):
        bwd({"cell": cell}, y)
    with pytest.raises(ValueError, match="dy"):
        bwd(cache, y[:, :1])
    with pytest.raises(TypeError, match="dy"):
        bwd(cache, y.astype(np.float64))
    with pytest.raises(ValueError, match="dh_n"):
        bwd(cache, y, np.zeros((B + 1, H), np.float32))
    _, *_, inf_cache = fwd(ops, a, training=False)
    assert inf_cache is None
    other = ops.lstm_backward if cell == "gru" else ops.gru_backward
    with pytest.raises(TypeError, match="cache"):
        other(cache, y)


def test_huge_unsigned_lengths_are_reported_as_given():
    """uint64 lengths above 2**63 used to be reported after wrapping to negative numbers."""
    x = np.zeros((4, 2, 3), np.float32)
    with pytest.raises(ValueError, match="18446744073709551615"):
        fastgru.GRU(3, 2)(x, lengths=np.array([2**64 - 1, 2], np.uint64))


def test_byte_swapped_arrays_refused_on_every_path():
    """'>f4' shares float32's type number: the streaming paths' C checks look at the byte
    order too (they used to read swapped bytes as numbers)."""
    rng = np.random.default_rng(18)
    x = rng.standard_normal((2, 4)).astype(np.float32)
    h = rng.standard_normal((2, 6)).astype(np.float32)
    sw = lambda a: a.astype(a.dtype.newbyteorder())  # noqa: E731
    cell, lcell = fastgru.GRUCell(4, 6, seed=0), fastgru.LSTMCell(4, 6, seed=0)
    g, lg = fastgru.GRU(4, 6, seed=0).eval(), fastgru.LSTM(4, 6, seed=0).eval()
    calls = [lambda: cell(sw(x), sw(h)), lambda: cell(sw(x), h), lambda: cell(x, sw(h)),
             lambda: lcell(sw(x), (sw(h), h)), lambda: lcell(x, (h, sw(h))),
             lambda: g.step(sw(x)), lambda: g.step(x, sw(h)[None]),
             lambda: lg.step(sw(x)), lambda: g(sw(x)[None])]
    for call in calls:
        with pytest.raises(TypeError, match="byte order"):
            call()
    # the same values in native order still agree
    np.testing.assert_array_equal(cell(x, h), cell(sw(x).astype(np.float32), h))


def test_unbatched_cell_input_needs_unbatched_state():
    with pytest.raises(ValueError, match=r"h must have shape \(H,\) for unbatched x"):
        fastgru.GRUCell(4, 6)(np.zeros(4, np.float32), np.zeros((1, 6), np.float32))
    with pytest.raises(ValueError, match=r"shape \(H,\) for unbatched x"):
        fastgru.LSTMCell(4, 6)(np.zeros(4, np.float32),
                               (np.zeros((1, 6), np.float32), np.zeros((1, 6), np.float32)))


def test_huge_thread_counts_refused_and_bad_env_counts_warned(monkeypatch):
    with pytest.raises(ValueError, match="n_threads must be 1 to 4096"):
        fastgru.GRU(4, 6, n_threads=2**31)
    with pytest.raises(ValueError, match="n_threads must be 1 to 4096"):
        fastgru.GRUCell(4, 6, n_threads=5000)
    from fastgru import _threads

    for bad in ("abc", "0", "-3"):
        monkeypatch.setenv("FASTGRU_NUM_THREADS", bad)
        _threads._ENV_WARNED.discard(bad)
        with pytest.warns(RuntimeWarning, match=f"FASTGRU_NUM_THREADS='{bad}' is not a thread"):
            n = _threads.default_n_threads()
        assert n >= 1
    monkeypatch.setenv("FASTGRU_NUM_THREADS", "3")
    if _threads._runtime.openmp_enabled():
        assert _threads.default_n_threads() == 3


def test_bad_simd_and_spincount_env_values_are_warned(monkeypatch):
    """FASTGRU_SIMD=bogus and FASTGRU_SPINCOUNT=abc used to be ignored without a word."""
    from fastgru import _config, _wait_policy

    before = fastgru.simd_level()
    monkeypatch.setenv("FASTGRU_SIMD", "bogus")
    try:
        with pytest.warns(RuntimeWarning, match=r"FASTGRU_SIMD='bogus' is not one of .*avx2"):
            _config._init_from_env()
    finally:
        fastgru.set_simd_level(before)
    for bad in ("abc", "1.5", "-1"):
        monkeypatch.setenv("FASTGRU_SPINCOUNT", bad)
        with pytest.warns(RuntimeWarning, match=f"FASTGRU_SPINCOUNT='{bad}' is not a spin"):
            assert _wait_policy._spincount() == _wait_policy.SPINCOUNT
    monkeypatch.setenv("FASTGRU_SPINCOUNT", "5000")
    assert _wait_policy._spincount() == 5000


@pytest.mark.parametrize("make", [
    lambda: (fastgru.GRU(4, 6), (3, 2, 4)), lambda: (fastgru.LSTM(4, 6), (3, 2, 4)),
    lambda: (fastgru.GRUCell(4, 6), (2, 4)), lambda: (fastgru.LSTMCell(4, 6), (2, 4)),
])
def test_bfloat16_tensor_input_is_named(make):
    """torch's own "Got unsupported ScalarType BFloat16" (from .numpy()) used to surface."""
    torch = pytest.importorskip("torch")
    mod, shape = make()
    with pytest.raises(TypeError, match="x must be float32 or float64, got torch dtype "
                                        "bfloat16"):
        mod(torch.zeros(shape, dtype=torch.bfloat16))


def test_python_lists_take_the_layers_dtype():
    """A nested list has no dtype of its own: it is read in the layer's (NumPy would pick
    float64 and the float32 layer would refuse it)."""
    g = fastgru.GRU(5, 7, seed=0)
    x = np.random.default_rng(0).standard_normal((6, 3, 5)).astype(np.float32)
    y, h = g(x.tolist())
    np.testing.assert_array_equal(y, g(x)[0])
    dx = g.backward(np.ones_like(y).tolist())[0]
    assert dx.dtype == np.float32
    assert g.step(x[0].tolist())[0].dtype == np.float32
    assert fastgru.LSTMCell(5, 7)(x[0].tolist())[0].dtype == np.float32
    with pytest.raises(TypeError, match="x must be a numeric array"):
        g([["a"] * 5])


def test_layer_messages_name_the_unbatched_layout_tuples_and_huge_lengths():
    g = fastgru.GRU(4, 3)
    with pytest.raises(ValueError, match=r"T >= 1 steps, got shape \(0, 4\) \(T, I\)"):
        g(np.zeros((0, 4), np.float32))
    with pytest.raises(TypeError, match="h0 of a GRU is one array"):
        g(np.zeros((2, 1, 4), np.float32), h0=(np.zeros((1, 1, 3), np.float32),))
    with pytest.raises(ValueError, match=r"got values in \[1, 1e\+300\]$"):
        g(np.zeros((2, 2, 4), np.float32), lengths=np.array([1e300, 1]))
    with pytest.raises(TypeError, match="seqs must be a list of sequences, got NoneType"):
        fastgru.pad_sequences(None)
