"""RBD, FPD, NES, replay and FixedSubspace checked against explicit references.

Every expected value here is computed independently of the optimizer's own update path: directional
derivatives with ``torch.func.jvp`` and float64 central differences, updates as the materialized
float64 product theta - lr * sum_k P_k P_k^T g_k over a compartment layout written out in the test,
NES offspring recovered from what the closure sees, and plain ``torch.optim.SGD`` / ``Adam``.
"""

from __future__ import annotations

import copy
import gzip
import io
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, jvp

import rbdlib
from rbdlib import FPD, NES, RBD, FixedSubspace, replay

# ------------------------------------------------------------------------------------------- helpers
NAMES = ["0.weight", "0.bias", "1.weight", "1.bias", "4.weight", "4.bias"]
SIZES = [27, 3, 3, 3, 192, 4]  # D = 232
D = sum(SIZES)


def small_net(seed: int = 0) -> nn.Sequential:
    """Conv2d -> BatchNorm2d -> ReLU -> Linear on 1x6x6 inputs (D = 232), BN affine made non-trivial."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 4))
    with torch.no_grad():
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.uniform_(-0.3, 0.3)
    return net


def batch(seed: int = 0, n: int = 8):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 6, 6, generator=g), torch.randint(0, 4, (n,), generator=g)


def loss_of(net, x, y):
    return nn.functional.cross_entropy(net(x), y)


def backward(net, seed=0):
    x, y = batch(seed)
    net.zero_grad(set_to_none=True)
    loss = loss_of(net, x, y)
    loss.backward()
    return float(loss.detach())


def ref_layout(sizes, mode, layers=None):
    """The compartment layout written out independently: segments (param, start, stop)."""
    if mode == "network":
        return [[(i, 0, n) for i, n in enumerate(sizes)]]
    if mode == "tensor":
        return [[(i, 0, n)] for i, n in enumerate(sizes)]
    if mode == "layer":
        return [[(i, 0, sizes[i]) for i in layer] for layer in layers]
    # int N: cut the concatenation of all flattened parameters at multiples of N
    starts = np.cumsum([0] + list(sizes))
    total, out = int(starts[-1]), []
    for lo in range(0, total, mode):
        hi, comp = min(lo + mode, total), []
        for i, n in enumerate(sizes):
            a, b = max(lo, starts[i]), min(hi, starts[i] + n)
            if a < b:
                comp.append((i, int(a - starts[i]), int(b - starts[i])))
        out.append(comp)
    return out


def ref_dims(layout, dim, split_dim):
    per = math.ceil(dim / len(layout)) if split_dim else dim
    return [min(per, sum(b - a for _, a, b in c)) for c in layout]


def reference_update(before, grads, layout, bases, lrs):
    """float64: theta_i - lr_i * (P_k P_k^T g_k) on the segments of parameters that have a gradient."""
    theta = [t.detach().double().reshape(-1).clone() for t in before]
    for comp, basis in zip(layout, bases, strict=True):
        g = torch.cat([grads[i].double().reshape(-1)[a:b] if grads[i] is not None
                       else torch.zeros(b - a, dtype=torch.float64) for i, a, b in comp])
        P = basis.materialize().double()  # (dim_k, size_k)
        delta = P.T @ (P @ g)
        at = 0
        for i, a, b in comp:
            if grads[i] is not None:
                theta[i][a:b] -= lrs[i] * delta[at:at + b - a]
            at += b - a
    return [t.view(p.shape) for t, p in zip(theta, before, strict=True)]


def snapshot(params):
    return [p.detach().clone() for p in params]


def all_equal(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def make_opt(net, mode, **kw):
    """RBD for the modes the tests sweep; returns (optimizer, layers for the reference layout)."""
    if mode == "layer-names":
        return RBD(net.named_parameters(), compartments="layer", **kw), [[0, 1], [2, 3], [4, 5]]
    if mode == "layer-groups":
        ps = list(net.parameters())
        groups = [{"params": ps[0:3]}, {"params": ps[3:5]}, {"params": ps[5:6]}]
        return RBD(groups, compartments="layer", **kw), [[0, 1, 2], [3, 4], [5]]
    return RBD(net.parameters(), compartments=mode, **kw), None


# ------------------------------------------------------------------ layouts, dims and the bases' scale
@pytest.mark.parametrize("mode", ["network", "tensor", "layer-names", "layer-groups", 50, 7])
@pytest.mark.parametrize("split_dim", [False, True])
def test_layout_and_dims(mode, split_dim):
    net = small_net()
    opt, layers = make_opt(net, mode, lr=0.1, dim=9, split_dim=split_dim)
    ref_mode = "layer" if isinstance(mode, str) and mode.startswith("layer") else mode
    layout = ref_layout(SIZES, ref_mode, layers)
    assert [[tuple(s) for s in c] for c in opt.layout] == layout
    dims = ref_dims(layout, 9, split_dim)
    assert opt.dims == dims and opt.num_coords == sum(dims)
    for k, comp in enumerate(layout):
        b = opt.bases(k)
        assert (b.dim, b.size) == (dims[k], sum(s[2] - s[1] for s in comp))


def test_int_compartments_by_hand():
    net = small_net()
    opt = RBD(net.parameters(), lr=0.1, dim=4, compartments=50)
    # 27 + 3 + 3 + 3 + 14 of the Linear weight | 50 | 50 | 50 | last 28 of the weight + 4 bias
    assert [sum(b - a for _, a, b in c) for c in opt.layout] == [50, 50, 50, 50, 32]
    assert [tuple(s) for s in opt.layout[0]] == [(0, 0, 27), (1, 0, 3), (2, 0, 3), (3, 0, 3), (4, 0, 14)]
    assert [tuple(s) for s in opt.layout[4]] == [(4, 164, 192), (5, 0, 4)]


def test_dims_capped_at_compartment_size():
    net = nn.Linear(3, 2)
    opt = RBD(net.parameters(), lr=0.1, dim=4, compartments="tensor")
    assert opt.dims == [4, 2]
    assert opt.bases(1).materialize().shape == (2, 2)
    opt = RBD(net.parameters(), lr=0.1, dim=100)
    assert opt.dims == [8]


@pytest.mark.parametrize("distribution", ["normal", "uniform", "rademacher"])
def test_bases_scale_is_one_over_sqrt_total_size(distribution):
    net = nn.Linear(100, 20)  # D = 2020, two compartments of different sizes
    opt = RBD(net.parameters(), lr=0.1, dim=50, compartments="tensor", distribution=distribution)
    z = opt.bases(0).materialize().double() * math.sqrt(2020)  # unscaled entries
    if distribution == "rademacher":
        assert torch.all(z.abs().sub(1).abs() < 1e-5)
        assert abs(float(z.mean())) < 0.02
    elif distribution == "uniform":
        assert float(z.abs().max()) <= 1 + 1e-5
        assert abs(float(z.var()) - 1 / 3) < 0.01
    else:
        assert abs(float(z.std()) - 1) < 0.01 and abs(float(z.mean())) < 0.01
    # different compartments and different steps use different directions
    assert not torch.equal(opt.bases(1).materialize()[:, :5], opt.bases(0).materialize()[:, :5])


# ------------------------------------------------------------- coordinates = directional derivatives
def _direction(layout, k, v, params):
    """Scatter a compartment-k vector v back into parameter shapes (zeros elsewhere)."""
    out = [torch.zeros_like(p) for p in params]
    at = 0
    for i, a, b in layout[k]:
        out[i].view(-1)[a:b] = v[at:at + b - a].to(out[i].dtype)
        at += b - a
    return out


@pytest.mark.parametrize("mode", ["network", 50])
def test_coordinates_are_directional_derivatives(mode):
    net = small_net(1)
    net.train()
    x, y = batch(3)
    opt = RBD(net.parameters(), lr=0.1, dim=5, compartments=mode, seed=11)
    net.zero_grad()
    loss_of(net, x, y).backward()
    coords = opt.coordinates(opt.gradient())
    layout = ref_layout(SIZES, mode)

    names = [n for n, _ in net.named_parameters()]
    params = {n: p.detach() for n, p in net.named_parameters()}
    buffers = {n: b.clone() for n, b in net.named_buffers()}

    def f(*ps):  # train-mode BN (batch statistics); buffers are copies, so nothing leaks
        bufs = {n: b.clone() for n, b in buffers.items()}
        out = functional_call(net, (dict(zip(names, ps, strict=True)), bufs), (x,))
        return nn.functional.cross_entropy(out, y)

    net64 = copy.deepcopy(net).double()
    p64 = [p.detach() for p in net64.parameters()]
    x64 = x.double()

    def f64(ps):
        bufs = {n: b.clone().double() if b.is_floating_point() else b.clone() for n, b in buffers.items()}
        out = functional_call(net64, (dict(zip(names, ps, strict=True)), bufs), (x64,))
        return float(nn.functional.cross_entropy(out, y))

    for k in range(len(layout)):
        P = opt.bases(k).materialize()
        for i in range(opt.dims[k]):
            v = _direction(layout, k, P[i], list(params.values()))
            _, dd = jvp(f, tuple(params.values()), tuple(v))
            torch.testing.assert_close(coords[k][i], dd, rtol=2e-4, atol=1e-6)
            v64 = _direction(layout, k, P[i].double(), p64)
            h = 1e-5
            plus = f64([p + h * t for p, t in zip(p64, v64, strict=True)])
            minus = f64([p - h * t for p, t in zip(p64, v64, strict=True)])
            fd = (plus - minus) / (2 * h)
            assert abs(float(coords[k][i]) - fd) <= 2e-4 * abs(fd) + 2e-6, (k, i, float(coords[k][i]), fd)


# ------------------------------------------------------------------------ the update, materialized
@pytest.mark.parametrize("split_dim", [False, True])
@pytest.mark.parametrize("distribution", ["normal", "uniform", "rademacher"])
@pytest.mark.parametrize("mode", ["network", "tensor", "layer-names", "layer-groups", 50, 7])
def test_update_equals_materialized_float64(mode, distribution, split_dim):
    net = small_net(2)
    opt, layers = make_opt(net, mode, lr=0.7, dim=9, seed=5, distribution=distribution, split_dim=split_dim)
    ref_mode = "layer" if isinstance(mode, str) and mode.startswith("layer") else mode
    layout = ref_layout(SIZES, ref_mode, layers)
    params = list(net.parameters())
    for step in range(3):  # new bases every step; the reference uses the bases of that step
        backward(net, seed=step)
        before = snapshot(params)
        grads = [p.grad.clone() for p in params]
        bases = [opt.bases(k) for k in range(len(layout))]
        expected = reference_update(before, grads, layout, bases, [0.7] * 6)
        opt.step()
        for p, e, b in zip(params, expected, before, strict=True):
            moved, want = p.detach().double() - b.double(), e - b.double()
            torch.testing.assert_close(moved, want, rtol=1e-4, atol=1e-6 + 1e-4 * float(want.abs().max()))
        assert opt.steps == step + 1


def test_update_with_group_lrs_matches_reference():
    net = small_net(4)
    ps = list(net.parameters())
    opt = RBD([{"params": ps[:2], "lr": 0.2}, {"params": ps[2:]}], lr=1.5, dim=6, compartments=50, seed=9)
    backward(net)
    before, grads = snapshot(ps), [p.grad.clone() for p in ps]
    layout = ref_layout(SIZES, 50)
    expected = reference_update(before, grads, layout, [opt.bases(k) for k in range(len(layout))],
                                [0.2, 0.2, 1.5, 1.5, 1.5, 1.5])
    opt.step()
    for p, e, b in zip(ps, expected, before, strict=True):
        want = e - b.double()
        torch.testing.assert_close(p.detach().double() - b.double(), want, rtol=1e-4,
                                   atol=1e-6 + 1e-4 * float(want.abs().max()))


@pytest.mark.parametrize("mode", ["network", "tensor", 50])
def test_parameter_without_grad_is_untouched_and_bases_do_not_shift(mode):
    net_a, net_b = small_net(3), small_net(3)
    opt_a = RBD(net_a.parameters(), lr=0.9, dim=7, compartments=mode, seed=2)
    opt_b = RBD(net_b.parameters(), lr=0.9, dim=7, compartments=mode, seed=2)
    backward(net_a, 1)
    backward(net_b, 1)
    net_a[0].bias.grad = None            # no gradient at all
    net_b[0].bias.grad.zero_()           # the same, as an explicit zero gradient
    bias_before = net_a[0].bias.detach().clone()
    ps_a, ps_b = list(net_a.parameters()), list(net_b.parameters())
    before = snapshot(ps_a)
    grads = [None if p.grad is None else p.grad.clone() for p in ps_a]
    layout = ref_layout(SIZES, mode)
    assert len(opt_a.layout) == len(layout)  # indices fixed at construction
    bases = [opt_a.bases(k) for k in range(len(layout))]
    expected = reference_update(before, grads, layout, bases, [0.9] * 6)
    opt_a.step()
    opt_b.step()
    assert torch.equal(net_a[0].bias, bias_before)
    if mode != "tensor":  # a zero gradient still moves along the other tensors' P P^T g
        assert not torch.equal(net_b[0].bias, bias_before)
    for i, (pa, pb) in enumerate(zip(ps_a, ps_b, strict=True)):
        if i != 1:
            assert torch.equal(pa, pb), i
            want = expected[i] - before[i].double()
            torch.testing.assert_close(pa.detach().double() - before[i].double(), want, rtol=1e-4,
                                       atol=1e-6 + 1e-4 * float(want.abs().max()))
    for k in range(len(layout)):
        assert torch.equal(opt_a.bases(k).materialize(), opt_b.bases(k).materialize())


# --------------------------------------------------------------------------------- FPD & FixedSubspace
def test_fpd_equals_fixed_subspace_with_sgd():
    net_a, net_b = small_net(5), small_net(5)
    net_a.train(), net_b.train()
    fpd = FPD(net_a.parameters(), lr=0.8, dim=12, seed=4)
    sub = FixedSubspace(net_b, dim=12, seed=4)
    sgd = torch.optim.SGD(sub.parameters(), lr=0.8)
    assert [n for n, p in sub.named_parameters() if p.requires_grad] == ["coords"]
    for step in range(20):
        x, y = batch(100 + step)
        net_a.zero_grad()
        loss_of(net_a, x, y).backward()
        fpd.step()
        sgd.zero_grad()
        loss_of(sub, x, y).backward()
        sgd.step()
    weights = sub.weights()
    for n, p in net_a.named_parameters():
        torch.testing.assert_close(weights[n].detach(), p.detach(), rtol=1e-4, atol=1e-5)
    start = small_net(5).parameters()
    moved = sum(float((p - q).detach().abs().sum()) for p, q in zip(net_a.parameters(), start, strict=True))
    assert moved > 1e-3
    # batch-norm statistics were updated through the wrapper, as in the plain model
    assert int(net_b[1].num_batches_tracked) == 20
    torch.testing.assert_close(net_b[1].running_mean, net_a[1].running_mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(net_b[1].running_var, net_a[1].running_var, rtol=1e-4, atol=1e-5)
    assert not torch.equal(net_b[1].running_mean, torch.zeros(3))


def test_fixed_subspace_adam_state_dict_to_and_merge():
    sub = FixedSubspace(small_net(6), dim=20, seed=1)
    adam = torch.optim.Adam(sub.parameters(), lr=0.05)
    x, y = batch(7, n=32)
    first = loss_of(sub, x, y).item()
    for _ in range(40):
        adam.zero_grad()
        loss_of(sub, x, y).backward()
        adam.step()
    assert loss_of(sub, x, y).item() < 0.9 * first
    sd = sub.state_dict()
    assert {"coords", "model.1.running_mean", "model.1.running_var", "model.1.num_batches_tracked"} <= set(sd)
    assert torch.equal(sd["coords"], sub.coords.detach())
    other = FixedSubspace(small_net(6), dim=20, seed=1)
    other.load_state_dict(sd)
    sub.eval(), other.eval()
    assert torch.equal(sub(x), other(x))
    moved = sub.to("cpu")
    assert moved is sub and sub.coords.device.type == "cpu"
    if torch.cuda.is_available() and rbdlib.gpu_available():
        gpu = copy.deepcopy(sub).to("cuda")
        torch.testing.assert_close(gpu(x.cuda()).cpu(), sub(x), rtol=1e-4, atol=1e-5)
    for change in (dict(seed=2), dict(dim=20, distribution="uniform")):  # same shapes, other bases
        stranger = FixedSubspace(small_net(6), **{"dim": 20, "seed": 1, **change})
        before = stranger.coords.detach().clone()
        with pytest.raises(ValueError, match="another configuration"):
            stranger.load_state_dict(sd)
        assert torch.equal(stranger.coords, before)
    out = sub(x).detach()
    merged = sub.merged()
    torch.testing.assert_close(merged(x), out, rtol=1e-5, atol=1e-6)
    assert all(p.requires_grad for p in merged.parameters())  # trainable again
    loss_of(merged, x, y).backward()
    assert merged[4].weight.grad is not None


# ----------------------------------------------------------------------------------------- redraw
def _coords_over_steps(redraw, steps=10):
    net = nn.Linear(20, 5)
    opt = RBD(net.parameters(), lr=0.0, dim=4, redraw=redraw, seed=3)
    g = [torch.linspace(-1, 1, p.numel()).view_as(p) for p in net.parameters()]
    out = []
    for _ in range(steps):
        for p, gi in zip(net.parameters(), g, strict=True):
            p.grad = gi.clone()
        opt.step()
        out.append(opt.last_coords[0].clone())
    return out


@pytest.mark.parametrize("redraw", [1, 3, None])
def test_redraw_changes_bases_exactly_every_n_steps(redraw):
    coords = _coords_over_steps(redraw)
    for t in range(1, len(coords)):
        new_block = redraw is not None and t % redraw == 0
        assert torch.equal(coords[t], coords[t - 1]) != new_block, t


# ------------------------------------------------------------------------- resume, replay, configs
def _train(net, opt, steps, start=0, hook=None):
    for t in range(start, start + steps):
        backward(net, seed=50 + t)
        if hook is not None:
            hook(net, opt, t)
        opt.step()


def test_resume_is_bit_identical():
    kw = dict(lr=0.6, dim=8, compartments=50, redraw=2, seed=12)
    net_a = small_net(8)
    opt_a = RBD(net_a.parameters(), **kw)
    _train(net_a, opt_a, 9)

    net_b = small_net(8)
    opt_b = RBD(net_b.parameters(), **kw)
    _train(net_b, opt_b, 4)
    buf = io.BytesIO()
    torch.save({"model": net_b.state_dict(), "opt": opt_b.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=False)
    net_c = small_net(99)
    opt_c = RBD(net_c.parameters(), **kw)
    net_c.load_state_dict(saved["model"])
    opt_c.load_state_dict(saved["opt"])
    assert opt_c.steps == 4
    _train(net_c, opt_c, 5, start=4)
    assert all_equal(list(net_a.state_dict().values()), list(net_c.state_dict().values()))


def test_replay_is_bit_identical_with_groups_frozen_and_skipped_steps():
    net = small_net(9)
    ps = list(net.parameters())
    initial = snapshot(ps)
    opt = RBD([{"params": ps[:4], "lr": 0.1}, {"params": ps[4:]}], lr=0.9, dim=6, compartments="tensor",
              redraw=3, distribution="rademacher", record=True, nonfinite="skip", seed=77)

    def hook(net, opt, t):
        if t % 2 == 1:
            net[4].bias.grad = None          # a parameter without gradient on some steps
        if t == 4:
            opt.param_groups[1]["lr"] = 0.4  # an lr schedule
        if t == 6:
            net[0].weight.grad[0, 0, 0, 0] = float("nan")  # skipped

    _train(net, opt, 10, hook=hook)
    assert opt.steps == 9 and opt.skipped == 1
    fresh = small_net(123)
    replay(fresh.parameters(), initial, opt.state_dict()["rbd"])
    assert all_equal(list(fresh.parameters()), ps)
    # dict of initial weights (same order) and a partial replay
    part = small_net(124)
    replay(part.parameters(), dict(zip(NAMES, initial, strict=True)), opt.state_dict()["rbd"], upto=0)
    assert all_equal(list(part.parameters()), initial)


def test_replay_rejects_mismatched_initial_state():
    net = small_net(9)
    opt = RBD(net.parameters(), lr=0.5, dim=3, record=True)
    _train(net, opt, 2)
    with pytest.raises(ValueError):
        replay(small_net().parameters(), snapshot(net.parameters())[:-1], opt.state_dict()["rbd"])
    with pytest.raises(ValueError):
        replay(nn.Linear(3, 2).parameters(), snapshot(nn.Linear(3, 2).parameters()), opt.state_dict()["rbd"])


@pytest.mark.parametrize("change", [dict(dim=9), dict(seed=1), dict(compartments="tensor"),
                                    dict(distribution="uniform"), dict(redraw=2), dict(split_dim=True)])
def test_loading_state_of_a_different_configuration_raises(change):
    base = dict(lr=0.5, dim=8, compartments=50, seed=0)
    net = small_net()
    opt = RBD(net.parameters(), **base)
    _train(net, opt, 2)
    other = RBD(small_net().parameters(), **{**base, **change})
    with pytest.raises(ValueError):
        other.load_state_dict(opt.state_dict())
    assert other.steps == 0
    sgd = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(ValueError):
        RBD(small_net().parameters(), **base).load_state_dict(sgd.state_dict())


# ----------------------------------------------------------------------------------------- diagnostics
def _explicit_cosine(before, after, grads, lr):
    step = torch.cat([(b.double() - a.detach().double()).reshape(-1) / lr
                      for b, a in zip(before, after, strict=True)])
    g = torch.cat([(torch.zeros_like(b) if gr is None else gr).double().reshape(-1)
                   for b, gr in zip(before, grads, strict=True)])
    return float(step @ g / (step.norm() * g.norm()))


@pytest.mark.parametrize("mode", ["network", 50])
def test_last_cosine_is_the_explicit_cosine(mode):
    net = small_net(10)
    ps = list(net.parameters())
    opt = RBD(ps, lr=2.0, dim=10, compartments=mode)
    backward(net)
    before, grads = snapshot(ps), [p.grad.clone() for p in ps]
    opt.step()
    assert opt.last_cosine == pytest.approx(_explicit_cosine(before, ps, grads, 2.0), rel=1e-3)


def test_last_cosine_with_a_parameter_without_grad():
    net = small_net(10)
    ps = list(net.parameters())
    opt = RBD(ps, lr=2.0, dim=10)
    backward(net)
    net[4].weight.grad = None
    before, grads = snapshot(ps), [None if p.grad is None else p.grad.clone() for p in ps]
    opt.step()
    assert opt.last_cosine == pytest.approx(_explicit_cosine(before, ps, grads, 2.0), rel=1e-3)


def test_last_cosine_with_group_learning_rates():
    net = small_net(10)
    ps = list(net.parameters())
    opt = RBD([{"params": ps[:4], "lr": 0.1}, {"params": ps[4:]}], lr=2.0, dim=10, compartments=50)
    backward(net)
    before, grads = snapshot(ps), [p.grad.clone() for p in ps]
    opt.step()
    step = torch.cat([(b.double() - a.detach().double()).reshape(-1) for b, a in zip(before, ps, strict=True)])
    g = torch.cat([gr.double().reshape(-1) for gr in grads])
    assert opt.last_cosine == pytest.approx(float(step @ g / (step.norm() * g.norm())), rel=1e-3)


def test_last_cosine_is_about_sqrt_d_over_D():
    net = nn.Linear(100, 20)  # D = 2020
    opt = RBD(net.parameters(), lr=0.0, dim=20)
    x, y = torch.randn(64, 100, generator=torch.Generator().manual_seed(0)), torch.randint(0, 20, (64,))
    cos = []
    for _ in range(20):
        net.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        cos.append(opt.last_cosine)
    assert 0.7 * math.sqrt(20 / 2020) < float(np.mean(cos)) < 1.3 * math.sqrt(20 / 2020)


# ----------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs, error", [
    (dict(dim=0), ValueError), (dict(dim=-3), ValueError), (dict(dim=2.5), TypeError),
    (dict(lr=-0.1), ValueError), (dict(lr=float("nan")), ValueError), (dict(lr=True), ValueError),
    (dict(compartments="block"), ValueError), (dict(compartments=0), ValueError),
    (dict(compartments=-4), ValueError), (dict(distribution="bernoulli"), ValueError),
    (dict(redraw=0), ValueError), (dict(nonfinite="ignore"), ValueError), (dict(seed=-1), ValueError),
])
def test_bad_arguments_raise_and_touch_nothing(kwargs, error):
    net = small_net()
    before = snapshot(net.parameters())
    with pytest.raises(error):
        RBD(net.parameters(), **{**dict(lr=0.1, dim=4), **kwargs})
    assert all_equal(before, list(net.parameters()))


def test_layer_compartments_need_names_or_groups():
    with pytest.raises(ValueError, match="layer"):
        RBD(small_net().parameters(), lr=0.1, dim=2, compartments="layer")


def test_negative_lr_in_a_param_group_raises():
    net = small_net()
    with pytest.raises(ValueError):
        RBD([{"params": list(net.parameters()), "lr": -0.5}], lr=0.1, dim=2)


def test_param_groups_given_as_generators_keep_their_parameters():
    net = small_net()
    opt = RBD([{"params": net[0].parameters()}, {"params": net[4].parameters(), "lr": 0.3}], lr=0.1, dim=2)
    assert len(opt.params) == 4 and opt.size == 27 + 3 + 192 + 4
    assert [len(g["params"]) for g in opt.param_groups] == [2, 2]


def _state(opt):
    return (opt.steps, opt.skipped, len(opt.log), copy.deepcopy(opt.state_dict()["param_groups"]))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_gradient_raises_before_any_change(bad):
    net = small_net()
    opt = RBD(net.parameters(), lr=0.5, dim=4, compartments="tensor", record=True)
    _train(net, opt, 1)
    backward(net)
    net[4].bias.grad[1] = bad   # the last compartment: earlier ones must not have moved either
    before, state = snapshot(net.parameters()), _state(opt)
    with pytest.raises(FloatingPointError):
        opt.step()
    assert all_equal(before, list(net.parameters())) and _state(opt) == state


def test_nonfinite_skip_leaves_steps_and_parameters():
    net = small_net()
    opt = RBD(net.parameters(), lr=0.5, dim=4, nonfinite="skip")
    backward(net)
    net[0].weight.grad[0, 0, 0, 0] = float("nan")
    before = snapshot(net.parameters())
    opt.step()
    assert all_equal(before, list(net.parameters()))
    assert opt.steps == 0 and opt.skipped == 1
    backward(net)
    opt.step()
    assert opt.steps == 1 and not all_equal(before, list(net.parameters()))


def test_sparse_gradients_raise_before_any_change():
    emb, lin = nn.Embedding(10, 3, sparse=True), nn.Linear(3, 2)
    opt = RBD(list(lin.parameters()) + list(emb.parameters()), lr=0.5, dim=2, compartments="tensor")
    lin(emb(torch.tensor([1, 4]))).sum().backward()
    assert emb.weight.grad.is_sparse
    before = snapshot(list(lin.parameters()) + list(emb.parameters()))
    with pytest.raises(TypeError, match="sparse"):
        opt.step()
    assert all_equal(before, list(lin.parameters()) + list(emb.parameters())) and opt.steps == 0


def test_complex_and_float64_parameters_raise():
    with pytest.raises(TypeError):
        RBD(nn.Linear(3, 2, dtype=torch.complex64).parameters(), lr=0.1, dim=2)
    with pytest.raises(TypeError):
        RBD(nn.Linear(3, 2).double().parameters(), lr=0.1, dim=2)


def test_parameters_on_different_or_unsupported_devices_raise():
    a = nn.Parameter(torch.zeros(3))
    b = nn.Parameter(torch.zeros(3, device="meta"))
    with pytest.raises(ValueError, match="device"):
        RBD([a, b], lr=0.1, dim=2)
    with pytest.raises(ValueError, match="meta"):   # rbdlib runs on cpu and cuda only: say so up front
        RBD([b], lr=0.1, dim=2)


def test_the_same_parameter_twice_raises():
    lin = nn.Linear(3, 2)
    with pytest.raises(ValueError):
        RBD([lin.weight, lin.bias, lin.weight], lr=0.1, dim=2)
    with pytest.raises(ValueError):
        RBD([{"params": [lin.weight]}, {"params": [lin.weight, lin.bias]}], lr=0.1, dim=2)


def test_empty_parameter_list_raises():
    with pytest.raises(ValueError):
        RBD([], lr=0.1, dim=2)


# ----------------------------------------------------------------------------------------------- NES
def test_nes_decreases_a_quadratic():
    theta = nn.Parameter(torch.zeros(30))
    target = torch.linspace(-1, 1, 30)
    opt = NES([theta], lr=0.05, dim=20, sigma=0.05, seed=1)

    def loss():
        return float((theta.detach() - target).square().sum())

    start = loss()
    for _ in range(30):
        opt.step(loss)
    assert loss() < 0.7 * start
    assert opt.steps == 30


NES_LOSSES, NES_SIGMA, NES_LR = [3.0, 1.0, 2.0, 5.0, 4.0, 0.5], 0.5, 0.3


def _nes_scripted_step(**options):
    """One NES step on 40 parameters whose closure returns NES_LOSSES in turn; returns the initial and final
    parameters, the offspring directions the closure saw, the mean loss and the reference update."""
    theta = nn.Parameter(torch.linspace(-0.5, 0.5, 40))
    theta0, d, seen = theta.detach().clone(), len(NES_LOSSES), []

    def closure():
        seen.append(theta.detach().clone())
        return NES_LOSSES[len(seen) - 1]

    mean = NES([theta], lr=NES_LR, dim=d, sigma=NES_SIGMA, seed=8, **options).step(closure)
    eps = [(s.double() - theta0.double()) / NES_SIGMA for s in seen]   # what the closure saw
    # rank: the highest loss gets 0, the lowest d - 1; u = r / (d - 1) - 1/2
    rank = {i: r for r, i in enumerate(sorted(range(d), key=lambda i: -NES_LOSSES[i]))}
    u = [rank[i] / (d - 1) - 0.5 for i in range(d)]
    assert u[5] == 0.5 and u[3] == -0.5
    total = sum(ui * e for ui, e in zip(u, eps, strict=True))
    expected = theta0.double() + NES_LR / (NES_SIGMA * d) * total / math.sqrt(40)
    return theta.detach().double(), eps, mean, expected


def test_nes_update_matches_rank_reference():
    theta, eps, mean, expected = _nes_scripted_step()
    assert mean == pytest.approx(np.mean(NES_LOSSES))
    torch.testing.assert_close(theta, expected, rtol=1e-4, atol=1e-5)
    # the offspring are normal directions of the documented Philox bases
    z = rbdlib.RandomBases(8, 0, 0, len(NES_LOSSES), 40, "normal", 1.0).materialize().double()
    torch.testing.assert_close(torch.stack(eps), z, rtol=1e-4, atol=1e-5)


def test_nes_nonfinite_loss_and_failing_closure_leave_parameters():
    theta = nn.Parameter(torch.ones(5))
    opt = NES([theta], lr=0.1, dim=3)
    with pytest.raises(FloatingPointError):
        opt.step(lambda: float("nan"))
    assert torch.equal(theta, torch.ones(5)) and opt.steps == 0

    def boom():
        raise RuntimeError("data loader failed")

    with pytest.raises(RuntimeError):
        opt.step(boom)
    assert torch.equal(theta, torch.ones(5)) and opt.steps == 0


def test_nes_rejects_bad_or_differing_group_lrs():
    a, b = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match="one lr for all parameters"):
        NES([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1, dim=3)
    with pytest.raises(ValueError, match="in a parameter group"):
        NES([{"params": [a], "lr": -1.0}], lr=0.1, dim=3)
    with pytest.raises(ValueError, match="non-negative"):
        NES([a], lr=float("nan"), dim=3)
    opt = NES([{"params": [a]}, {"params": [b], "lr": 0.1}], lr=0.1, dim=3)  # equal lrs are fine
    assert opt.size == 5


def test_nes_antithetic_pairs_match_the_mirrored_reference():
    theta, eps, _, expected = _nes_scripted_step(antithetic=True)
    d = len(NES_LOSSES)
    z = rbdlib.RandomBases(8, 0, 0, d // 2, 40, "normal", 1.0).materialize().double()
    for m in range(d // 2):  # offspring 2m and 2m+1 mirror direction m
        torch.testing.assert_close(eps[2 * m], z[m], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(eps[2 * m + 1], -z[m], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(theta, expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="dim must be even"):
        NES([nn.Parameter(torch.ones(3))], lr=NES_LR, dim=5, antithetic=True)


def test_nes_trains_on_real_data_through_train():
    from rbdlib.data import load_dataset
    from rbdlib.models import fc
    from rbdlib.train import train

    ds = load_dataset("digits")
    for options, min_acc in (({}, 0.3), ({"shared_batch": True}, 0.7)):
        model = fc(ds.in_shape, seed=0)
        opt = NES(model.parameters(), lr=0.5, dim=50, sigma=0.01, **options)
        h = train(model, opt, ds, epochs=1000, max_steps=150, eval_every=150, progress=False)
        start, end = h.records[0], h.last
        assert start["step"] == 0 and end["step"] == 150
        assert end["val_loss"] < start["val_loss"] - 0.4, (options, h.records)
        assert end["val_acc"] > start["val_acc"] + 0.15 and end["val_acc"] > min_acc, (options, h.records)


def test_nes_shared_batch_evaluates_every_offspring_on_one_batch():
    from rbdlib import train as train_module
    from rbdlib.data import load_dataset

    ds = load_dataset("digits")
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    seen, original = [], train_module._BatchStream.next
    train_module._BatchStream.next = lambda stream: seen.append(1) or original(stream)
    try:
        h = train_module.train(model, NES(model.parameters(), lr=0.1, dim=6, shared_batch=True), ds,
                               max_steps=3, eval_every=1, progress=False)
    finally:
        train_module._BatchStream.next = original
    assert len(seen) == 3 and h["step"] == [0, 1, 2, 3]  # one batch per step, not one per offspring


def test_nes_rejects_what_it_cannot_train_and_changes_nothing():
    a = nn.Parameter(torch.ones(3))
    for kwargs, error, match in (({"sigma": math.inf}, ValueError, "sigma"), ({"sigma": True}, ValueError, "sigma"),
                                 ({"lr": math.inf}, ValueError, "finite"),
                                 ({"antithetic": 1}, TypeError, "antithetic")):
        with pytest.raises(error, match=match):
            NES([a], **{"lr": 0.1, "dim": 4, **kwargs})
    with pytest.raises(ValueError, match="more than once"):
        NES([a, a], lr=0.1, dim=4)
    with pytest.raises(TypeError, match="float32"):
        NES([nn.Parameter(torch.ones(3, dtype=torch.float16))], lr=0.1, dim=4)
    opt = NES([a], lr=0.1, dim=4)
    with pytest.raises(ValueError, match="rbdlib.NES"):
        opt.load_state_dict(RBD([a], lr=0.1, dim=2).state_dict())
    assert opt.steps == 0 and torch.equal(a, torch.ones(3))


# ------------------------------------------------------------------------------------ real data
FMNIST = Path("/usr/share/datasets/fashion-mnist")


def _read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


@pytest.fixture(scope="module")
def fmnist():
    try:
        from rbdlib.data import load_dataset
        ds = load_dataset("fashion-mnist", download=False, val_size=2000, split_seed=0)
        return ds.train_x.flatten(1), ds.train_y, ds.val_x.flatten(1), ds.val_y
    except ImportError:
        pass
    if not (FMNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not available")
    x = torch.from_numpy(_read_idx(FMNIST / "train-images-idx3-ubyte.gz").astype(np.float32) / 255).flatten(1)
    y = torch.from_numpy(_read_idx(FMNIST / "train-labels-idx1-ubyte.gz").astype(np.int64))
    return x[2000:], y[2000:], x[:2000], y[:2000]


def fc_net(seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    for m in net:
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return net


def _run_fmnist(data, kind, steps=150):
    tx, ty, vx, vy = data
    net = fc_net()
    assert sum(p.numel() for p in net.parameters()) == 101_770
    if kind == "subspace":
        model = FixedSubspace(net, dim=250, seed=0, distribution="rademacher")
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
    else:
        model = net
        make = RBD if kind == "rbd" else FPD
        opt = make(net.parameters(), lr=0.5, dim=250, seed=0, distribution="rademacher")
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(0, len(tx), (32,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(tx[idx]), ty[idx]).backward()
        opt.step()
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        acc = float((model(vx).argmax(1) == vy).float().mean())
    return acc, seconds


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["rbd", "fpd", "subspace"])
def test_fashion_mnist_accuracy_rises(fmnist, kind):
    """The paper's FC net (D = 101,770), lr 0.5, d = 250, batch 32: 150 steps on 2,000 held-out images.

    The expected RBD step is lr * d / D * g (about 0.0012 g), so accuracy climbs slowly: measured here
    0.27 after 150 steps and 0.45 after 300 (normal and rademacher alike; 10 % is chance). Rademacher
    bases halve the cost of a step on the CPU (about 0.15 s of CPU time per step against 0.3 s).
    """
    acc, seconds = _run_fmnist(fmnist, kind)
    print(f"{kind}: validation accuracy {acc:.3f} after 150 steps in {seconds:.1f} s")
    assert acc > 0.2


# ------------------------------------------------------------- strides, added groups (issue 13)
@pytest.mark.parametrize("mode", ["network", 20])
def test_non_contiguous_parameters_step_like_a_contiguous_twin(mode):
    """A channels_last conv and a transposed leaf train element for element as their contiguous twins.

    Both get the same gradients, each in its parameter's own strides. They are set rather than
    back-propagated: torch's channels_last convolution backward need not round like the contiguous one
    (1-2 ulp apart on AVX2 CPUs), and this test is about rbdlib's handling of strides, not torch's.
    """
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.Linear(12, 2))
    twin = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.Linear(12, 2))
    twin.load_state_dict(net.state_dict())
    net.to(memory_format=torch.channels_last)
    leaf = nn.Parameter(torch.randn(2, 5).t())  # a transposed leaf: shape (5, 2), strides (1, 5)
    twin_leaf = nn.Parameter(leaf.detach().contiguous())
    assert not net[0].weight.is_contiguous() and not leaf.is_contiguous()
    a = RBD(list(net.parameters()) + [leaf], lr=0.3, dim=6, compartments=mode)
    b = RBD(list(twin.parameters()) + [twin_leaf], lr=0.3, dim=6, compartments=mode)
    before = [q.detach().clone() for q in b.params]
    gen = torch.Generator().manual_seed(1)
    for _ in range(2):
        for p, q in zip(a.params, b.params):
            q.grad = torch.randn(q.shape, generator=gen)
            p.grad = torch.empty_like(p).copy_(q.grad)  # same values, the parameter's strides
            assert p.grad.stride() == p.stride()
        a.step()
        b.step()
    assert all(torch.equal(p, q) for p, q in zip(a.params, b.params))
    assert not any(torch.equal(q, q0) for q, q0 in zip(b.params, before)) and a.steps == 2
    assert not net[0].weight.is_contiguous() and not leaf.is_contiguous()


@pytest.mark.parametrize("mode", ["network", "tensor", "layer", 40])
def test_add_param_group_trains_the_new_parameters_like_an_optimizer_built_with_them(mode):
    net, ref = small_net(), small_net()
    def groups(m):
        return [{"params": list(m[0].parameters())}, {"params": list(m[1].parameters()), "lr": 0.2},
                {"params": list(m[4].parameters()), "lr": 0.05}]
    grown = RBD(groups(net)[:2], lr=0.5, dim=5, compartments=mode, seed=3)
    x, y = batch()
    loss_of(net, x, y).backward()
    grown.step()  # one step before the group arrives
    net.zero_grad()
    grown.add_param_group(groups(net)[2])
    whole = RBD(groups(ref), lr=0.5, dim=5, compartments=mode, seed=3)
    for p, q in zip(grown.params, whole.params):
        q.data.copy_(p.data)
    whole.steps = grown.steps
    assert grown.config() == whole.config()
    for m, opt in ((net, grown), (ref, whole)):
        loss_of(m, x, y).backward()
        opt.step()
    assert all(torch.equal(p, q) for p, q in zip(grown.params, whole.params))
    assert not torch.equal(net[4].weight, small_net()[4].weight)  # the added group trained


def test_last_cosine_dot_products_a_chunk_at_a_time_are_float64_dot_products():
    """The cosine's dot products run in float64 a chunk at a time (no float64 copy of D numbers): against one
    float64 dot product, across chunk boundaries and a short last chunk."""
    from rbdlib.optim import _dot

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(1000, generator=g), torch.randn(1000, generator=g)
    for chunk in (1, 7, 999, 1000, 2**20):
        assert _dot(x, y, chunk) == pytest.approx(float(x.double() @ y.double()), rel=1e-12, abs=1e-12)
