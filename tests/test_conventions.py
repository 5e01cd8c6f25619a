"""torch.optim's conventions, checked the way PyTorch's generic optimizer tests check torch's own optimizers.

As in PyTorch's ``test/test_optim.py``, the optimizers are data: :data:`OPTIMS` lists each class with the inputs
it is tried with (``optim_inputs``), and every test runs over all of them. The conventions: ``copy.deepcopy`` and
pickle give an optimizer that steps its copied model as the original steps its own, bit for bit (the copy's first
step used to raise AttributeError); the lr in ``param_groups`` is the lr applied, whoever set it (a hand, a
scheduler) and whenever (before or after ``load_state_dict``); a parameter frozen with ``requires_grad_(False)``
never moves; a compiled training step runs the optimizer step. Where the result is a number, the reference is
explicit: materialized bases in float64.
"""

from __future__ import annotations

import copy
import math
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch
import torch.distributed as dist
from torch import nn

from rbdlib import FPD, NES, RBD, RandomBases
from rbdlib.distributed import DistributedRBD


# ------------------------------------------------------------------------------------------- the database
@dataclass
class OptimizerInfo:
    """One optimizer class and the inputs it is tested with (PyTorch's ``OptimizerInfo`` and ``OptimizerInput``)."""
    name: str
    make: Callable  # (named parameters, lr, **input) -> optimizer
    optim_inputs: list[dict] = field(default_factory=lambda: [{}])
    closure: str = ""  # "gradients": step(closure) computes them (StaleFPD); "loss": a loss only (NES)
    plain: tuple[dict, ...] = ({},)  # the inputs whose step is lr * P P^T g, for the explicit reference


def _distributed(params, lr, scheme="shared", **kw):
    return DistributedRBD(RBD(params, lr=lr, dim=3, seed=2, **kw), scheme=scheme)


OPTIMS = [
    OptimizerInfo("RBD", lambda ps, lr, **kw: RBD(ps, lr=lr, dim=3, seed=1, **kw), [
        {}, {"momentum": 0.9}, {"momentum": 0.9, "nesterov": True, "weight_decay": 0.01, "compartments": "tensor"},
        {"momentum": 0.9, "memory": "coordinates", "redraw": 2, "adaptive": 0.9},
        {"record": True, "distribution": "rademacher"}, {"compartments": "layer"}],
        plain=({}, {"record": True, "distribution": "rademacher"}, {"compartments": "layer"})),
    OptimizerInfo("FPD", lambda ps, lr, **kw: FPD(ps, lr=lr, dim=3, seed=1, **kw), [{}, {"momentum": 0.5}]),
    OptimizerInfo("StaleFPD", lambda ps, lr, **kw: FPD(ps, lr=lr, dim=3, seed=1, reset_coords=False, **kw),
                  closure="gradients", plain=()),
    OptimizerInfo("NES", lambda ps, lr, **kw: NES(ps, lr=lr, dim=4, seed=3, **kw), [{}, {"antithetic": True}],
                  closure="loss", plain=()),
    OptimizerInfo("DistributedRBD", _distributed, [
        {}, {"record": True}, {"scheme": "independent", "momentum": 0.9}], plain=({}, {"scheme": "independent"})),
]
CASES = [pytest.param(info, kw, id=f"{info.name}({', '.join(f'{k}={v}' for k, v in kw.items())})")
         for info in OPTIMS for kw in info.optim_inputs]
PLAIN = [pytest.param(info, kw, id=f"{info.name}({', '.join(f'{k}={v}' for k, v in kw.items())})")
         for info in OPTIMS for kw in info.plain]
GRADIENTS = [c for c in CASES if c.values[0].closure != "loss"]


@pytest.fixture(autouse=True)
def world(tmp_path):
    """A process group of one rank (gloo), for DistributedRBD; torn down after each test."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def model(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))


def batch(t: int) -> torch.Tensor:
    return torch.randn(5, 3, generator=torch.Generator().manual_seed(100 + t))


def train(net, opt, info, t: int, set_to_none: bool = True) -> None:
    """One training step on batch t, as a user of this optimizer writes it."""
    x = batch(t)
    if info.closure == "loss":
        opt.step(lambda: net(x).square().mean())
        return

    def closure():
        opt.zero_grad(set_to_none=set_to_none)
        loss = net(x).square().mean()
        loss.backward()
        return loss

    if info.closure:
        opt.step(closure)
    else:
        closure()
        opt.step()


def build(info, kw, lr=0.1, seed=0):
    net = model(seed)
    return net, info.make(list(net.named_parameters()), lr, **kw)


def same(a, b) -> bool:
    """Equal, bit for bit, through nested containers of tensors."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def weights(net) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


# ------------------------------------------------------------------------------------------- copies
@pytest.mark.parametrize("info, kw", CASES)
def test_deepcopy_copies_all_public_attrs(info, kw):
    """PyTorch's test of the same name."""
    net, opt = build(info, kw)
    train(net, opt, info, 0)
    public = {k for k in vars(opt) if not k.startswith("_")}
    assert public == {k for k in vars(copy.deepcopy(opt)) if not k.startswith("_")}


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
@pytest.mark.parametrize("info, kw", CASES)
def test_a_copy_steps_its_model_as_the_original_steps_its_own(info, kw, how):
    net, opt = build(info, kw)
    for t in range(2):
        train(net, opt, info, t)
    net2, opt2 = copy.deepcopy((net, opt)) if how == "deepcopy" else pickle.loads(pickle.dumps((net, opt)))
    assert same(opt2.state_dict(), opt.state_dict())
    assert all(p is q for p, q in zip(net2.parameters(), opt2.param_groups[0]["params"]))
    before = weights(net)
    train(net2, opt2, info, 2)  # the copy steps its own model only
    assert same(weights(net), before)
    train(net, opt, info, 2)
    train(net, opt, info, 3)
    train(net2, opt2, info, 3)
    assert same(weights(net2), weights(net))
    assert same(opt2.state_dict(), opt.state_dict())


def test_a_distributed_rbd_on_its_own_process_group_refuses_to_be_copied():
    """A process group is a set of connections: no copy can hold it. The default group is found again by name."""
    net = model()
    opt = DistributedRBD(RBD(net.parameters(), lr=0.1, dim=3), group=dist.new_group([0]))
    for copy_of in (copy.deepcopy, pickle.dumps):
        with pytest.raises(TypeError, match="on a process group other than the default one cannot be copied"):
            copy_of(opt)


# ------------------------------------------------------------------------------------------- learning rates
def set_lr(opt, lr, when, info, net):
    """Set every group's lr to ``lr`` through param_groups, ``when``: by hand; by hand after load_state_dict;
    by a StepLR built before load_state_dict (the optimizer's own, or for DistributedRBD its wrapped one's)."""
    if when == "by hand":
        for g in opt.param_groups:
            g["lr"] = lr
        return
    saved = copy.deepcopy(opt.state_dict())
    if when == "by hand after load_state_dict":
        opt.load_state_dict(saved)
        for g in opt.param_groups:
            g["lr"] = lr
        return
    old = opt.param_groups[0]["lr"]
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=lr / old)
    (opt.optimizer if when == "StepLR built before the wrapped optimizer's load" else opt).load_state_dict(saved)
    train(net, opt, info, 1)  # at the old lr, then the scheduler's
    scheduler.step()
    assert [g["lr"] for g in opt.param_groups] == [pytest.approx(lr)] * len(opt.param_groups)


WHEN = ["by hand", "by hand after load_state_dict", "StepLR built before load_state_dict"]


@pytest.mark.parametrize("when", [*WHEN, "StepLR built before the wrapped optimizer's load"])
@pytest.mark.parametrize("info, kw", CASES)
def test_lr_zero_set_through_param_groups_moves_nothing(info, kw, when):
    if when.endswith("wrapped optimizer's load") and info.name != "DistributedRBD":
        pytest.skip("only DistributedRBD wraps an optimizer")
    net, opt = build(info, kw)
    train(net, opt, info, 0)
    set_lr(opt, 0.0, when, info, net)
    before = weights(net)
    train(net, opt, info, 2)
    assert same(weights(net), before)


def reference_step(opt, net, lr, x) -> list[torch.Tensor]:
    """float64: theta - lr * P_k P_k^T g_k for every compartment k, the bases materialized."""
    rbd = opt.optimizer if isinstance(opt, DistributedRBD) else opt
    params = list(net.parameters())
    net.zero_grad()
    net(x).square().mean().backward()
    theta = [p.detach().double().reshape(-1).clone() for p in params]
    for k, compartment in enumerate(rbd.layout):
        g = torch.cat([params[i].grad.double().reshape(-1)[a:b] for i, a, b in compartment])
        P = rbd.bases(k).materialize().double()
        delta, at = P.T @ (P @ g), 0
        for i, a, b in compartment:
            theta[i][a:b] -= lr * delta[at:at + b - a]
            at += b - a
    return [t.view(p.shape) for t, p in zip(theta, params)]


@pytest.mark.parametrize("when", WHEN)
@pytest.mark.parametrize("info, kw", PLAIN)
def test_lr_set_through_param_groups_is_the_lr_applied(info, kw, when):
    net, opt = build(info, kw, lr=0.1)
    train(net, opt, info, 0)
    set_lr(opt, 0.35, when, info, net)
    expected = reference_step(opt, net, 0.35, batch(2))
    train(net, opt, info, 2)
    for p, e in zip(net.parameters(), expected):
        torch.testing.assert_close(p.detach().double(), e, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("when", WHEN)
def test_nes_lr_set_through_param_groups_is_the_lr_applied(when):
    """NES's update against its formula: theta + lr / (sigma d) sum_i u_i eps_i / sqrt(D), u_i the shaped ranks
    of scripted losses and eps_i the offspring directions (materialized Philox bases)."""
    info = next(i for i in OPTIMS if i.name == "NES")
    theta = nn.Parameter(torch.linspace(-0.5, 0.5, 40))
    opt = NES([theta], lr=0.1, dim=4, sigma=0.5, seed=8)
    losses = iter([3.0, 1.0, 2.0, 5.0, 4.0, 0.5, 2.5, 1.5] * 4)
    net = nn.Module()
    net.forward = lambda x: torch.full((1,), next(losses))  # the closure's loss: scripted, whatever the weights
    train(net, opt, info, 0)
    set_lr(opt, 0.35, when, info, net)
    step = opt.steps
    theta0, scripted = theta.detach().double().clone(), [next(losses) for _ in range(4)]
    opt.step(iter(scripted).__next__)
    rank = {i: r for r, i in enumerate(sorted(range(4), key=lambda i: -scripted[i]))}
    eps = RandomBases(8, step, 0, 4, 40, "normal", 1.0).materialize().double()
    u = torch.tensor([rank[i] / 3 - 0.5 for i in range(4)], dtype=torch.float64)
    expected = theta0 + 0.35 / (0.5 * 4) * (u @ eps) / math.sqrt(40)
    torch.testing.assert_close(theta.detach().double(), expected, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------- frozen parameters
@pytest.mark.parametrize("info, kw", GRADIENTS)
def test_a_frozen_parameter_never_moves_whatever_its_grad(info, kw):
    net, opt = build(info, kw)
    train(net, opt, info, 0)
    frozen = net[0].weight
    frozen.requires_grad_(False)
    frozen.grad = torch.ones_like(frozen)  # a gradient left from before the freeze
    before, others = frozen.detach().clone(), weights(net)[1:]
    opt.step(lambda: None) if info.closure else opt.step()
    assert torch.equal(frozen, before)
    assert not any(torch.equal(p, q) for p, q in zip(list(net.parameters())[1:], others))
    train(net, opt, info, 1, set_to_none=False)  # zero_grad leaves the frozen layer a zero gradient
    assert torch.equal(frozen.grad, torch.zeros_like(frozen)) and torch.equal(frozen, before)


# ------------------------------------------------------------------------------------------- torch.compile
@pytest.mark.parametrize("name", ["RBD", "DistributedRBD"])
def test_a_compiled_training_step_runs_the_optimizer_step(name):
    """torch.compile traces the forward and backward and leaves the step (Numba kernels) to run eagerly, as
    torch's optimizers are compiled or skipped. Each call takes one step of the explicit reference, with the
    bases of its own step: the step is not traced once and replayed. Without a C compiler, inductor cannot
    build kernels: the graph is then compiled by aot_eager, which traces the same way."""
    info = next(i for i in OPTIMS if i.name == name)
    net, opt = build(info, {}, lr=0.3)
    backend = "inductor" if shutil.which("gcc") or shutil.which("cc") else "aot_eager"
    torch._dynamo.reset()

    @torch.compile(backend=backend)
    def training_step(x):
        loss = net(x).square().mean()
        loss.backward()
        opt.step()
        return loss

    for t in range(2):
        opt.zero_grad()
        x = batch(t)
        expected = reference_step(opt, net, 0.3, x)  # the gradient at these weights, the bases of step t
        opt.zero_grad()
        training_step(x)
        assert opt.steps == t + 1
        for p, e in zip(net.parameters(), expected):
            torch.testing.assert_close(p.detach().double(), e, rtol=1e-5, atol=1e-6)
