"""Optimizers, lazy row-sparse updates, clipping and schedules (against PyTorch's optimizers
where it is installed, and closed forms)."""
from __future__ import annotations

import math

import numpy as np
import pytest

import fastgru
from fastgru.optim import get_optimizer

from helpers import requires_torch


def run_steps(opt, grads_seq, p0):
    p = {"w": p0.copy(), "b": p0[0].copy()}
    for g in grads_seq:
        opt.step(p, {"w": g.copy(), "b": g[0].copy()})
    return p


def torch_steps(make, grads_seq, p0):
    import torch

    w = torch.tensor(p0.copy(), requires_grad=True)
    b = torch.tensor(p0[0].copy(), requires_grad=True)
    opt = make([w, b])
    for g in grads_seq:
        w.grad = torch.tensor(g.copy())
        b.grad = torch.tensor(g[0].copy())
        opt.step()
    return w.detach().numpy(), b.detach().numpy()


@pytest.fixture
def problem():
    rng = np.random.default_rng(0)
    return rng.standard_normal((3, 4)), [rng.standard_normal((3, 4)) for _ in range(6)]


@requires_torch
@pytest.mark.parametrize("momentum,nesterov,wd", [(0.0, False, 0.0), (0.9, False, 0.0),
                                                  (0.9, True, 0.01)])
def test_sgd_matches_torch(problem, momentum, nesterov, wd):
    import torch

    p0, gs = problem
    ours = run_steps(fastgru.SGD(0.1, momentum=momentum, nesterov=nesterov, weight_decay=wd),
                     gs, p0)
    w, b = torch_steps(lambda ps: torch.optim.SGD(
        ps, lr=0.1, momentum=momentum, nesterov=nesterov, weight_decay=wd), gs, p0)
    np.testing.assert_allclose(ours["w"], w, rtol=1e-12)
    np.testing.assert_allclose(ours["b"], b, rtol=1e-12)


@requires_torch
def test_adam_matches_torch(problem):
    import torch

    p0, gs = problem
    ours = run_steps(fastgru.Adam(0.01, epsilon=1e-8), gs, p0)
    w, b = torch_steps(lambda ps: torch.optim.Adam(ps, lr=0.01, eps=1e-8), gs, p0)
    # Keras' epsilon placement (outside the bias-corrected sqrt) differs from PyTorch's
    # by O(eps): equal to ~1e-7 here.
    np.testing.assert_allclose(ours["w"], w, rtol=1e-6, atol=1e-7)


@requires_torch
def test_adamw_matches_torch(problem):
    import torch

    p0, gs = problem
    ours = run_steps(fastgru.AdamW(0.01, weight_decay=0.1, epsilon=1e-8), gs, p0)
    w, b = torch_steps(lambda ps: torch.optim.AdamW(ps, lr=0.01, eps=1e-8, weight_decay=0.1),
                       gs, p0)
    np.testing.assert_allclose(ours["w"], w, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ours["b"], b, rtol=1e-6, atol=1e-7)


@requires_torch
@pytest.mark.parametrize("cls", ["Adam", "AdamW"])
@pytest.mark.parametrize("scale", [1e-6, 1e-3, 1.0, 10.0])
def test_adam_torch_epsilon_form_equals_torch(problem, cls, scale):
    """epsilon_form="torch" is torch.optim's update exactly, also where sqrt(v) is near
    epsilon (tiny gradients, where Keras' placement moves the weights ~25% less at step 1)."""
    import torch

    p0, gs = problem
    gs = [g * scale for g in gs]
    wd = 0.1 if cls == "AdamW" else 0.0
    ours = run_steps(getattr(fastgru, cls)(0.01, weight_decay=wd, epsilon=1e-6,
                                           epsilon_form="torch"), gs, p0)
    w, b = torch_steps(lambda ps: getattr(torch.optim, cls)(
        ps, lr=0.01, eps=1e-6, weight_decay=wd), gs, p0)
    np.testing.assert_allclose(ours["w"], w, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ours["b"], b, rtol=1e-12, atol=1e-15)
    keras_form = run_steps(getattr(fastgru, cls)(0.01, weight_decay=wd, epsilon=1e-6), gs, p0)
    moved = np.abs(keras_form["w"] - p0).max() / np.abs(w - p0).max()
    if scale == 1e-6:
        assert moved < 0.9
    elif scale >= 1:
        assert abs(moved - 1) < 1e-3


def test_adam_epsilon_form_checked_and_saved():
    with pytest.raises(ValueError, match="epsilon_form must be 'keras' or 'torch'"):
        fastgru.Adam(epsilon_form="pytorch")
    opt = get_optimizer(fastgru.AdamW(epsilon_form="torch").get_config())
    assert isinstance(opt, fastgru.AdamW) and opt.epsilon_form == "torch"


def test_adam_first_step_closed_form():
    p = {"w": np.array([1.0, -2.0])}
    fastgru.Adam(0.1).step(p, {"w": np.array([0.5, -3.0])})
    # the first Adam step moves each weight by lr * sign(g) (up to epsilon)
    np.testing.assert_allclose(p["w"], [0.9, -1.9], rtol=1e-6)


@pytest.mark.parametrize("opt", ["sgd", "adam", "adamw"])
def test_sparse_rows_touch_only_rows(opt):
    o = get_optimizer(opt)
    if opt == "sgd":
        o = fastgru.SGD(0.1, momentum=0.9, weight_decay=0.01)
    w = np.random.default_rng(0).standard_normal((6, 3))
    g = np.zeros_like(w)
    g[[1, 4]] = 1.0
    w0 = w.copy()
    o.step({"e": w}, {"e": g}, {"e": np.array([1, 4])})
    untouched = [0, 2, 3, 5]
    np.testing.assert_array_equal(w[untouched], w0[untouched])
    assert np.all(w[[1, 4]] != w0[[1, 4]])
    # the touched rows move exactly as a dense step on those rows would
    dense = get_optimizer(o.get_config())
    w2 = w0.copy()
    dense.step({"e": w2}, {"e": g})
    np.testing.assert_allclose(w[[1, 4]], w2[[1, 4]], rtol=1e-12)


def test_weight_decay_on_every_parameter_unless_excluded():
    """torch.optim and Keras decay biases too; exclude_from_weight_decay (Keras' substring
    rule, also a constructor argument kept in get_config) leaves chosen ones out."""
    zeros = {"w": np.zeros((2, 2)), "gru/bias_ih_l0": np.zeros(2)}
    p = {"w": np.ones((2, 2)), "gru/bias_ih_l0": np.ones(2)}
    fastgru.SGD(0.1, weight_decay=0.5).step(p, zeros)
    np.testing.assert_allclose(p["w"], 0.95)
    np.testing.assert_allclose(p["gru/bias_ih_l0"], 0.95)
    for opt in (fastgru.SGD(0.1, weight_decay=0.5, exclude_from_weight_decay=["bias"]),
                fastgru.AdamW(0.1, weight_decay=0.5)):
        if isinstance(opt, fastgru.AdamW):
            opt.exclude_from_weight_decay(var_names=["bias"])
        opt = get_optimizer(opt.get_config())
        p = {"w": np.ones((2, 2)), "gru/bias_ih_l0": np.ones(2)}
        opt.step(p, zeros)
        np.testing.assert_allclose(p["w"], 0.95)
        np.testing.assert_allclose(p["gru/bias_ih_l0"], 1.0)
    with pytest.raises(TypeError, match="var_names must be a list of non-empty strings"):
        fastgru.SGD(exclude_from_weight_decay="bias")
    with pytest.raises(TypeError, match="var_names"):
        fastgru.Adam().exclude_from_weight_decay(var_names=[""])


@requires_torch
def test_excluding_biases_equals_torch_param_groups(problem):
    import torch

    p0, gs = problem
    ours = run_steps(fastgru.AdamW(0.01, weight_decay=0.1, epsilon=1e-8, epsilon_form="torch",
                                   exclude_from_weight_decay=["b"]), gs, p0)
    w, b = torch_steps(lambda ps: torch.optim.AdamW(
        [{"params": [ps[0]], "weight_decay": 0.1}, {"params": [ps[1]], "weight_decay": 0.0}],
        lr=0.01, eps=1e-8), gs, p0)
    np.testing.assert_allclose(ours["w"], w, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ours["b"], b, rtol=1e-12, atol=1e-15)


def test_clip_grad_norm_global():
    g = {"a": np.array([3.0, 0.0]), "b": np.array([[0.0, 4.0]])}
    n = fastgru.clip_grad_norm(g, 1.0)
    assert n == pytest.approx(5.0)
    total = math.sqrt(sum(float((v ** 2).sum()) for v in g.values()))
    assert total == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(g["a"], [0.6, 0.0], rtol=1e-5)
    g2 = {"a": np.array([0.3])}
    assert fastgru.clip_grad_norm(g2, 1.0) == pytest.approx(0.3)
    assert g2["a"][0] == 0.3  # below the limit: untouched
    # rows: only those rows count and are scaled
    e = np.zeros((4, 1))
    e[2] = 10.0
    fastgru.clip_grad_norm({"e": e}, 2.0, {"e": np.array([2])})
    assert e[2, 0] == pytest.approx(2.0, rel=1e-5)


def test_optimizer_global_clipnorm_applied():
    o = fastgru.SGD(1.0, global_clipnorm=1.0)
    p = {"w": np.zeros(2)}
    o.step(p, {"w": np.array([30.0, 40.0])})
    np.testing.assert_allclose(p["w"], [-0.6, -0.8], rtol=1e-5)
    assert o.last_grad_norm == pytest.approx(50.0)


def test_schedules():
    s = fastgru.StepDecay(1.0, decay_steps=10, decay_rate=0.5)
    assert [s(0), s(9), s(10), s(25)] == [1.0, 1.0, 0.5, 0.25]
    c = fastgru.CosineDecay(1.0, decay_steps=100, alpha=0.1, warmup_steps=10)
    assert c(0) == pytest.approx(0.1)
    assert c(9) == pytest.approx(1.0)
    assert c(10) == pytest.approx(1.0)
    assert c(60) == pytest.approx(0.1 + 0.9 * 0.5)
    assert c(110) == pytest.approx(0.1)
    assert c(10_000) == pytest.approx(0.1)
    o = fastgru.Adam(s)
    p = {"w": np.zeros(1)}
    for _ in range(12):
        o.step(p, {"w": np.ones(1)})
    assert o.iterations == 12
    assert o.learning_rate == 0.5


def test_state_dict_roundtrip_continues_identically(problem):
    p0, gs = problem
    a = fastgru.Adam(fastgru.CosineDecay(0.01, 20))
    pa = run_steps(a, gs[:3], p0)
    scal, arrs = a.state_dict()
    b = get_optimizer(scal["config"])
    pb = {k: v.copy() for k, v in pa.items()}
    b.load_state_dict(scal, arrs, pb)
    for g in gs[3:]:
        a.step(pa, {"w": g.copy(), "b": g[0].copy()})
        b.step(pb, {"w": g.copy(), "b": g[0].copy()})
    np.testing.assert_array_equal(pa["w"], pb["w"])


@pytest.mark.parametrize("bad", [
    lambda: fastgru.Adam(-1.0), lambda: fastgru.Adam(0.1, beta_1=1.0),
    lambda: fastgru.SGD(0.1, momentum=1.5), lambda: fastgru.SGD(0.1, nesterov=True),
    lambda: fastgru.Adam(float("nan")), lambda: fastgru.StepDecay(1.0, 0),
    lambda: fastgru.CosineDecay(1.0, 10, alpha=2.0), lambda: get_optimizer("adagrad"),
    lambda: fastgru.SGD(0.1, global_clipnorm=0.0), lambda: fastgru.AdamW(weight_decay=-1),
    lambda: fastgru.StepDecay(0.1, 2.7), lambda: fastgru.SGD(0.1, momentum="a"),
    lambda: fastgru.clip_grad_norm({"w": np.ones(2)}, -1.0),
    lambda: fastgru.SGD(0.1, clipnorm=1.0, clipvalue=1.0), lambda: fastgru.Adam(clipnorm=0.0),
    lambda: fastgru.Adam(global_clipnorm=1.0, clipnorm=1.0), lambda: fastgru.RMSprop(rho=1.0),
    lambda: fastgru.RMSprop(momentum=1.0), lambda: fastgru.RMSprop(epsilon_form="tf"),
    lambda: fastgru.RMSprop(epsilon=0.0),
])
def test_bad_arguments(bad):
    with pytest.raises((ValueError, TypeError)):
        bad()


def test_clip_grad_norm_zero_zeroes_like_torch():
    g = {"w": np.array([3.0, 4.0])}
    assert fastgru.clip_grad_norm(g, 0.0) == 5.0
    np.testing.assert_array_equal(g["w"], [0.0, 0.0])
    with pytest.raises(TypeError, match="momentum must be a number"):
        fastgru.SGD(0.1, momentum="a")


@pytest.mark.parametrize("loss,pred,target,match", [
    (fastgru.CategoricalCrossentropy(True), np.zeros((2, 3)), np.array([0, -1]), "class ids"),
    (fastgru.CategoricalCrossentropy(True), np.zeros((2, 3)), np.array([0, 3]), "class ids"),
    (fastgru.CategoricalCrossentropy(True), np.zeros((2, 3)), np.array([0.5, 1]), "class ids"),
    (fastgru.CategoricalCrossentropy(True), np.zeros((2, 3)), np.array([0, 1, 2]), "shape"),
    (fastgru.CategoricalCrossentropy(True), np.zeros((2, 3)), -np.ones((2, 3)), ">= 0"),
    (fastgru.CategoricalCrossentropy(True), np.zeros((2, 3)), np.ones((3, 2)), "shape"),
    (fastgru.BinaryCrossentropy(True), np.zeros((2, 1)), np.array([0, 2]), r"in \[0, 1\]"),
    (fastgru.BinaryCrossentropy(True), np.zeros((2, 1)), np.array([0, 1, 1]), "shape"),
    (fastgru.MeanSquaredError(), np.zeros((2, 3)), np.zeros((3, 2)), "shape"),
])
def test_losses_reject_bad_targets(loss, pred, target, match):
    with pytest.raises(ValueError, match=match):
        loss(pred, target)


def test_losses_accept_their_target_forms():
    z = np.array([[0.3], [-1.2]])
    v, g = fastgru.BinaryCrossentropy(True)(z, np.array([1, 0]))  # (N,) targets, (N, 1) logits
    assert np.isfinite(v) and g.shape == z.shape
    zk = np.zeros((2, 4, 3))
    v, _ = fastgru.CategoricalCrossentropy(True)(zk, np.zeros((2, 4), np.int64))
    assert v == pytest.approx(np.log(3))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_losses_called_directly_take_probabilities_like_keras(dtype):
    """from_logits=False (the default): pred are probabilities, clipped to [1e-7, 1 - 1e-7]
    (Keras' formulas; gradients by finite differences away from the clip). They were once
    taken as logits: BCE 0.53 against Keras' 0.28."""
    rng = np.random.default_rng(0)
    p = rng.uniform(0.05, 0.95, (6, 1)).astype(dtype)
    y = rng.integers(0, 2, 6)
    v, g = fastgru.BinaryCrossentropy()(p, y)
    yy = y[:, None].astype(np.float64)
    ref = -np.mean(yy * np.log(p.astype(np.float64)) + (1 - yy) * np.log(1 - p.astype(np.float64)))
    assert v == pytest.approx(ref, rel=1e-6) and g.dtype == dtype
    assert fastgru.BinaryCrossentropy()(np.array([[1.0], [0.0]]), np.array([0, 1]))[0] \
        == pytest.approx(-np.log(1e-7), rel=1e-6)  # clipped, not inf
    # Keras' argument order (y_true, y_pred) with integer labels: refused, not a wrong value
    with pytest.raises(TypeError, match=r"loss\(pred, target\), the model's output first"):
        fastgru.BinaryCrossentropy()(y, p)
    with pytest.raises(TypeError, match="integer dtype"):
        fastgru.CategoricalCrossentropy()(np.array([1, 0]), np.array([[0.3, 0.7], [0.6, 0.4]]))
    P = rng.dirichlet(np.ones(4), 5).astype(dtype) * 2  # Keras normalises the rows first
    t = rng.integers(0, 4, 5)
    v_sparse, g_sparse = fastgru.CategoricalCrossentropy()(P, t)
    v_hot, g_hot = fastgru.CategoricalCrossentropy()(P, np.eye(4)[t])
    ref = -np.mean(np.log((P / P.sum(-1, keepdims=True)).astype(np.float64)[np.arange(5), t]))
    assert v_sparse == pytest.approx(ref, rel=1e-6) and v_hot == pytest.approx(ref, rel=1e-6)
    np.testing.assert_allclose(g_sparse, g_hot, rtol=1e-6)
    if dtype is np.float64:  # finite differences of the value
        for loss, x, tgt, grad in ((fastgru.BinaryCrossentropy(), p, y, g),
                                   (fastgru.CategoricalCrossentropy(), P, t, g_sparse)):
            num = np.zeros_like(x)
            for i in np.ndindex(x.shape):
                e = np.zeros_like(x)
                e[i] = 1e-6
                num[i] = (loss(x + e, tgt)[0] - loss(x - e, tgt)[0]) / 2e-6
            np.testing.assert_allclose(grad, num, rtol=1e-5, atol=1e-9)


def test_mae_mse_metrics_compare_probabilities_with_cross_entropy():
    from fastgru.losses import get_metric

    z = np.array([[2.0], [-1.0], [0.5]])
    y = np.array([1, 0, 0])
    m = get_metric("mae", "binary")
    m.update(z, y, None)
    p = 1 / (1 + np.exp(-z[:, 0]))
    assert m.result() == pytest.approx(np.mean(np.abs(p - y)))
    m = get_metric("mse", "multiclass")
    zk = np.array([[1.0, 0.0, -1.0]])
    m.update(zk, np.array([[0, 1, 0]]), None)
    sm = np.exp(zk) / np.exp(zk).sum()
    assert m.result() == pytest.approx(np.mean((sm - [0, 1, 0]) ** 2))
    with pytest.raises(ValueError, match="one-hot targets"):
        get_metric("mae", "multiclass").update(zk, np.array([1]), None)


def keras_steps(make, grads_seq, p0):
    """Keras' optimizer driven by the same gradients (skips when Keras is absent)."""
    keras = pytest.importorskip("keras")
    w = keras.Variable(p0.copy(), dtype=p0.dtype.name)
    b = keras.Variable(p0[0].copy(), dtype=p0.dtype.name)
    opt = make()
    for g in grads_seq:
        opt.apply_gradients([(g.copy(), w), (g[0].copy(), b)])
    return np.asarray(w), np.asarray(b)


@requires_torch
@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_rmsprop_torch_form_equals_torch(problem, centered, momentum, wd):
    import torch

    p0, gs = problem
    ours = run_steps(fastgru.RMSprop(0.01, rho=0.99, momentum=momentum, epsilon=1e-8,
                                     centered=centered, weight_decay=wd, epsilon_form="torch"),
                     gs, p0)
    w, b = torch_steps(lambda ps: torch.optim.RMSprop(
        ps, lr=0.01, alpha=0.99, eps=1e-8, momentum=momentum, centered=centered,
        weight_decay=wd), gs, p0)
    np.testing.assert_allclose(ours["w"], w, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ours["b"], b, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_rmsprop_equals_keras(problem, centered, momentum):
    p0, gs = f32(problem)  # Keras on JAX computes in float32
    gs = gs + [g * np.float32(1e-4) for g in gs]  # small: where epsilon's placement shows
    ours = run_steps(fastgru.RMSprop(0.01, momentum=momentum, centered=centered), gs, p0)
    keras = pytest.importorskip("keras")
    w, b = keras_steps(lambda: keras.optimizers.RMSprop(0.01, momentum=momentum,
                                                        centered=centered), gs, p0)
    np.testing.assert_allclose(ours["w"], w, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(ours["b"], b, rtol=2e-5, atol=1e-6)


def f32(problem):
    p0, gs = problem
    return p0.astype(np.float32), [g.astype(np.float32) for g in gs]


def test_rmsprop_closed_form_and_lazy_rows():
    """First step from zero state: p -= lr g / sqrt((1 - rho) g^2 + eps); rows touch only
    their rows of the parameter and the slots."""
    g = np.array([[0.5, -2.0], [1e-3, 4.0], [7.0, -7.0]])
    p = {"w": np.ones((3, 2))}
    fastgru.RMSprop(0.1, rho=0.9, epsilon=1e-7).step(p, {"w": g.copy()})
    np.testing.assert_allclose(p["w"], 1 - 0.1 * g / np.sqrt(0.1 * g * g + 1e-7), rtol=1e-13)
    for opt in (fastgru.RMSprop(0.1, momentum=0.9, centered=True),
                fastgru.RMSprop(0.1, momentum=0.5, epsilon_form="torch")):
        p = {"w": np.ones((3, 2))}
        opt.step(p, {"w": g.copy()}, {"w": np.array([0, 2])})
        np.testing.assert_array_equal(p["w"][1], [1.0, 1.0])
        assert all(np.all(a[1] == 0) for a in (d["w"] for d in opt.slots.values()))
        full = {"w": np.ones((3, 2))}
        type(opt)(**{k: v for k, v in opt.get_config().items() if k != "name"}).step(
            full, {"w": np.where([[1], [0], [1]], g, 0.0)})
        np.testing.assert_allclose(p["w"][[0, 2]], full["w"][[0, 2]], rtol=1e-14)


@requires_torch
def test_clipvalue_and_clipnorm_equal_torch_and_keras_rules():
    import torch

    rng = np.random.default_rng(3)
    grads = {"w": rng.standard_normal((4, 5)) * 3, "b": rng.standard_normal(5) * 0.1}
    # clipvalue: torch.nn.utils.clip_grad_value_
    p = {k: np.zeros_like(v) for k, v in grads.items()}
    fastgru.SGD(1.0, clipvalue=0.5).step(p, {k: v.copy() for k, v in grads.items()})
    for k, v in grads.items():
        t = torch.tensor(v.copy())
        t.grad = t.clone()
        torch.nn.utils.clip_grad_value_([t], 0.5)
        np.testing.assert_allclose(-p[k], t.grad.numpy(), rtol=1e-15)
    # clipnorm: each gradient on its own to norm <= 1 (Keras); the small one is left alone
    p = {k: np.zeros_like(v) for k, v in grads.items()}
    opt = fastgru.SGD(1.0, clipnorm=1.0)
    opt.step(p, {k: v.copy() for k, v in grads.items()})
    np.testing.assert_allclose(np.linalg.norm(p["w"]), 1.0, rtol=1e-12)
    np.testing.assert_allclose(-p["w"], grads["w"] / np.linalg.norm(grads["w"]), rtol=1e-12)
    np.testing.assert_array_equal(-p["b"], grads["b"])
    cfg = opt.get_config()
    assert cfg["clipnorm"] == 1.0 and get_optimizer(cfg).clipnorm == 1.0
    # rows: the norm and the clip are over the touched rows only
    p = {"w": np.zeros((4, 5))}
    g = grads["w"].copy()
    fastgru.SGD(1.0, clipnorm=1.0).step(p, {"w": g}, {"w": np.array([1, 3])})
    np.testing.assert_allclose(np.linalg.norm(p["w"][[1, 3]]), 1.0, rtol=1e-12)
    assert not p["w"][[0, 2]].any()


def test_clipnorm_and_clipvalue_equal_keras(problem):
    keras = pytest.importorskip("keras")
    p0, gs = f32(problem)
    gs = [g * np.float32(5) for g in gs]
    for kw in ({"clipnorm": 1.0}, {"clipvalue": 0.3}):
        ours = run_steps(fastgru.Adam(0.01, **kw), gs, p0)
        w, b = keras_steps(lambda kw=kw: keras.optimizers.Adam(0.01, **kw), gs, p0)
        np.testing.assert_allclose(ours["w"], w, rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(ours["b"], b, rtol=2e-5, atol=1e-6)
        plain = run_steps(fastgru.Adam(0.01), gs, p0)
        assert np.abs(plain["w"] - ours["w"]).max() > 1e-4  # the clip mattered


@pytest.mark.parametrize("name,kw", [("SGD", dict(momentum=0.9)), ("SGD", dict(momentum=0.0)),
                                     ("SGD", dict(momentum=0.9, nesterov=True)),
                                     ("RMSprop", dict(momentum=0.5)), ("Adam", {})])
def test_decoupled_weight_decay_equals_keras(problem, name, kw):
    """Keras 3 decays the weights directly (p -= lr wd p) in every optimizer:
    decoupled_weight_decay=True is that, for each of ours."""
    keras = pytest.importorskip("keras")
    p0, gs = f32(problem)
    ours = run_steps(getattr(fastgru, name)(0.05, weight_decay=0.1, decoupled_weight_decay=True,
                                            **kw), gs, p0)
    w, b = keras_steps(lambda: getattr(keras.optimizers, name)(0.05, weight_decay=0.1, **kw),
                       gs, p0)
    np.testing.assert_allclose(ours["w"], w, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(ours["b"], b, rtol=2e-5, atol=1e-6)


def test_decoupled_weight_decay_flag(problem):
    p0, gs = problem
    a = run_steps(fastgru.Adam(0.01, weight_decay=0.1, decoupled_weight_decay=True), gs, p0)
    w = run_steps(fastgru.AdamW(0.01, weight_decay=0.1), gs, p0)
    np.testing.assert_array_equal(a["w"], w["w"])
    l2 = run_steps(fastgru.Adam(0.01, weight_decay=0.1), gs, p0)
    assert np.abs(l2["w"] - w["w"]).max() > 1e-6
    opt = fastgru.SGD(0.1, weight_decay=0.1, decoupled_weight_decay=True)
    assert get_optimizer(opt.get_config()).decoupled
    with pytest.raises(ValueError, match="AdamW decays the weights decoupled"):
        fastgru.AdamW(decoupled_weight_decay=False)
    with pytest.raises(TypeError, match="decoupled_weight_decay must be True or False"):
        fastgru.SGD(decoupled_weight_decay="yes")
