"""RBD with memory (momentum in parameters or in coordinates, Nesterov, adaptive, weight decay) against an
explicit float64 reference.

The reference is written out here, apart from rbdlib's step: the bases of every step are materialized in
float64 from ``RandomBases`` (re-drawn every ``REDRAW`` steps), the gradient is ``torch.func.grad`` of a
float64 twin of the network at the reference's own weights, and the rule is plain arithmetic. Per compartment,
Q the stacked bases of the workers whose coordinates are applied (one basis when they share it) and c = Q g's
mean over workers (each worker's own rows with independent bases):

    g = grad L(theta) + wd theta
    adaptive:      v <- beta v + (1 - beta) mean(c^2);   c <- c / (sqrt(v / (1 - beta^t)) + eps)
    parameters:    b <- mu b + Q^T c;   s = b or Q^T c + mu b (Nesterov)
    coordinates:   m <- Q Q_old^T m at a re-draw;   m <- mu m + c;   s = Q^T m or Q^T (c + mu m)
    theta <- theta - lr s

Then: a checkpoint resume, a replay from the coordinate log and 2 ranks (both schemes) are bit-identical to
the uninterrupted run, and the state's bytes are as documented: 4 per parameter element for momentum in
parameters, 4 d_k per compartment in coordinates, a float and a count per compartment for adaptive.
"""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad

from rbdlib import RBD, footprint, replay
from rbdlib.bases import RandomBases
from rbdlib.distributed import DistributedRBD, launch

SEED, DIM, LR, REDRAW, STEPS = 4, 6, 0.5, 2, 6
RULES = {"momentum": dict(momentum=0.9), "nesterov": dict(momentum=0.9, nesterov=True),
         "weight decay": dict(weight_decay=0.05), "all": dict(momentum=0.8, nesterov=True, weight_decay=0.05),
         "coordinates": dict(momentum=0.9, memory="coordinates"),
         "coordinates nesterov": dict(momentum=0.8, nesterov=True, memory="coordinates", weight_decay=0.05),
         "adaptive": dict(adaptive=0.9),
         "adaptive coordinates": dict(adaptive=0.99, momentum=0.9, memory="coordinates")}


def net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 3))


def batch(step: int, rank: int = 0):
    g = torch.Generator().manual_seed(1000 * step + rank)
    return torch.randn(8, 12, generator=g), torch.randint(0, 3, (8,), generator=g)


def rbd(model: nn.Module, **kw) -> RBD:
    # two compartments ("layer"), each its own basis; new bases every REDRAW steps
    return RBD(model.named_parameters(), lr=LR, dim=DIM, seed=SEED, compartments="layer", redraw=REDRAW,
               distribution="rademacher", **kw)


def train(model, opt, steps, start=0):
    for t in range(start, start + steps):
        x, y = batch(t)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()


def flat(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def reference(model, layout, steps, workers=1, shared=False, momentum=0.0, nesterov=False, weight_decay=0.0,
              memory="parameters", adaptive=0.0, eps=1e-8, carry=True):
    """The float64 trajectory of ``steps`` steps of RBD with memory, every quantity explicit (``carry=False``
    forgets the coordinate momentum at a re-draw instead of carrying it: a wrong rule, to show it is seen)."""
    twin = copy.deepcopy(model).double()
    names = [n for n, _ in twin.named_parameters()]
    shapes = [p.shape for p in twin.parameters()]
    starts = [0]
    for s in shapes:
        starts.append(starts[-1] + s.numel())
    size = starts[-1]

    def loss(theta, x, y):
        ps = {n: theta[a:a + s.numel()].view(s) for n, a, s in zip(names, starts, shapes)}
        return F.cross_entropy(functional_call(twin, ps, (x.double(),)), y)

    def basis(t, k, n, r):
        return RandomBases(SEED, t // REDRAW, k, DIM, n, "rademacher", 1 / math.sqrt(size),
                           offset=0 if shared else r * DIM).materialize().double()   # (d, D_k)

    index = [torch.cat([torch.arange(starts[i] + a, starts[i] + b) for i, a, b in c]) for c in layout]
    theta = flat(twin).clone()
    buf = torch.zeros(size, dtype=torch.float64)
    m, v, old, Qold = ([None] * len(layout), [0.0] * len(layout), [None] * len(layout),
                       [None] * len(layout))
    for t in range(steps):
        gs = [grad(loss)(theta, *batch(t, r)) + weight_decay * theta for r in range(workers)]
        step = torch.zeros(size, dtype=torch.float64)
        for k, ix in enumerate(index):
            Ps = [basis(t, k, len(ix), r) for r in range(1 if shared else workers)]
            Q = torch.cat(Ps)                                                     # (W d, D_k) or (d, D_k)
            if shared:
                c = sum(Ps[0] @ g[ix] for g in gs) / workers
            else:
                c = torch.cat([P @ g[ix] / workers for P, g in zip(Ps, gs)])
            if adaptive:
                v[k] = adaptive * v[k] + (1 - adaptive) * float((c ** 2).mean())
                c = c / (math.sqrt(v[k] / (1 - adaptive ** (t + 1))) + eps)
            if momentum and memory == "coordinates":
                if m[k] is None:
                    m[k] = torch.zeros_like(c)
                elif t // REDRAW != old[k]:
                    m[k] = Q @ (Qold[k].T @ m[k]) if carry else torch.zeros_like(c)
                m[k] = momentum * m[k] + c
                old[k], Qold[k] = t // REDRAW, Q
                step[ix] = Q.T @ (c + momentum * m[k] if nesterov else m[k])
            else:
                step[ix] = Q.T @ c
        if momentum and memory == "parameters":
            buf = momentum * buf + step
            step = step + momentum * buf if nesterov else buf
        theta = theta - LR * step
    return theta


# ----------------------------------------------------------------------------- the rules, by hand
@pytest.mark.parametrize("rule", RULES)
def test_rule_follows_the_float64_reference_across_redraws(rule):
    model = net()
    opt = rbd(model, **RULES[rule])
    expected = reference(model, opt.layout, STEPS, **RULES[rule])
    train(model, opt, STEPS)
    torch.testing.assert_close(flat(model).double(), expected, rtol=1e-4, atol=1e-5)
    # and the rule matters: plain RBD on the same batches ends elsewhere
    plain = net()
    train(plain, rbd(plain), STEPS)
    assert (flat(plain) - flat(model)).abs().max() > 1e-3


def test_coordinate_momentum_is_carried_across_a_redraw_not_forgotten():
    # the reference that drops m at a re-draw (or keeps it in the old basis) is not what rbdlib does
    model = net()
    opt = rbd(model, **RULES["coordinates"])
    forgot = reference(model, opt.layout, STEPS, carry=False, **RULES["coordinates"])
    train(model, opt, STEPS)
    assert (flat(model).double() - forgot).abs().max() > 1e-4


def test_adaptive_makes_the_step_free_of_the_gradients_scale():
    # eq. (6): a loss 1000x larger gives the same step (the coordinates are divided by their rms)
    steps = []
    for factor in (1.0, 1000.0):
        model = net()
        opt = rbd(model, adaptive=0.9, eps=1e-12)
        for t in range(3):
            x, y = batch(t)
            (factor * F.cross_entropy(model(x), y)).backward()
            opt.step()
            opt.zero_grad()
        steps.append(flat(model) - flat(net()))
    torch.testing.assert_close(steps[0], steps[1], rtol=1e-4, atol=1e-6)
    assert steps[0].abs().max() > 1e-2


def test_momentum_with_a_parameter_without_grad_leaves_it_and_its_buffer_alone():
    model = net()
    opt = rbd(model, momentum=0.9)
    bias = model[0].bias.detach().clone()
    for t in range(3):
        x, y = batch(t)
        F.cross_entropy(model(x), y).backward()
        model[0].bias.grad = None   # as torch.optim.SGD: no gradient, no step, no buffer
        opt.step()
        opt.zero_grad()
    assert torch.equal(model[0].bias, bias) and model[0].bias not in opt.state
    assert all("momentum_buffer" in opt.state[p] for n, p in model.named_parameters() if n != "0.bias")


# ----------------------------------------------------------------------------- state: bytes, resume, replay
def state_bytes(opt) -> int:
    """Bytes of every tensor the optimizer keeps, and 8 for every number, in its parameter and compartment
    state."""
    def size(v):
        if isinstance(v, torch.Tensor):
            return v.numel() * v.element_size()
        return 8 * len(v) if isinstance(v, tuple) else 8
    entries = [*opt.state.values(), *opt.compartment_state]
    return sum(size(v) for entry in entries for v in entry.values())


@pytest.mark.parametrize("rule, per_element, per_coordinate, per_compartment", [
    ("momentum", 4, 0, 0), ("nesterov", 4, 0, 0), ("weight decay", 0, 0, 0),
    ("coordinates", 0, 4, 24), ("adaptive", 0, 0, 16), ("adaptive coordinates", 0, 4, 40)])
def test_state_bytes(rule, per_element, per_coordinate, per_compartment):
    # as RBD's docstring says: 4 D (momentum in parameters); 4 d_k and the basis' (step, offset, dim) per
    # compartment (in coordinates); a float64 and a count per compartment (adaptive)
    model = net()
    opt = rbd(model, **RULES[rule])
    train(model, opt, 3)
    size = sum(p.numel() for p in model.parameters())
    expected = per_element * size + per_coordinate * sum(opt.dims) + per_compartment * 2
    assert state_bytes(opt) == expected == footprint(model, opt)["state"]
    assert footprint(model, opt) == {"parameters": 4 * size, "gradients": 0, "state": expected,
                                     "total": 4 * size + expected}   # train() zeroes the gradients to None
    assert state_bytes(rbd(net(), **RULES[rule])) == 0   # nothing before the first step


def _checkpoint(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("rule, stop", [*((r, 3) for r in RULES), ("coordinates", 2), ("adaptive coordinates", 4)])
def test_resume_from_a_checkpoint_is_bit_identical(rule, stop):
    # stop 3: inside a re-draw period (step 3 uses the bases of step 2); 2 and 4: the next step re-draws, so
    # the loaded coordinate momentum is carried onto bases it was not made in
    whole = net()
    train(whole, rbd(whole, **RULES[rule]), STEPS)
    first = net()
    opt = rbd(first, **RULES[rule])
    train(first, opt, stop)
    saved, weights = _checkpoint(opt.state_dict()), _checkpoint(first.state_dict())
    resumed = net(seed=1)
    resumed.load_state_dict(weights)
    again = rbd(resumed, **RULES[rule])
    again.load_state_dict(saved)
    train(resumed, again, STEPS - stop, start=stop)
    assert torch.equal(flat(resumed), flat(whole))


@pytest.mark.parametrize("rule", RULES)
def test_replay_from_the_coordinate_log_is_bit_identical(rule):
    model = net()
    initial = [p.detach().clone() for p in model.parameters()]
    opt = rbd(model, record=True, **RULES[rule])
    train(model, opt, STEPS)
    twin = net(seed=1)
    replay(twin.parameters(), initial, _checkpoint(opt.state_dict())["rbd"])
    assert torch.equal(flat(twin), flat(model))


def test_loading_checks_the_rule_and_its_state():
    model = net()
    opt = rbd(model, momentum=0.9)
    train(model, opt, 2)
    saved = opt.state_dict()
    with pytest.raises(ValueError, match="keeps no per-parameter state"):
        rbd(net()).load_state_dict(saved)
    with pytest.raises(ValueError, match="different configuration"):
        rbd(net(), momentum=0.5).load_state_dict(saved)
    bad = dict(saved, state={0: {"momentum_buffer": torch.zeros(3)}})
    with pytest.raises(ValueError, match=r"state of parameter 0 must map some of \['momentum_buffer'\]"):
        rbd(net(), momentum=0.9).load_state_dict(bad)
    fresh = rbd(net(), momentum=0.9)
    fresh.load_state_dict(saved)   # the loaded buffers are copies, not the saved tensors
    assert all(fresh.state[p]["momentum_buffer"] is not opt.state[q]["momentum_buffer"]
               for p, q in zip(fresh.params, opt.params))


def test_loading_checks_the_compartment_state_before_changing_anything():
    model = net()
    opt = rbd(model, **RULES["adaptive coordinates"])
    train(model, opt, 3)
    saved = opt.state_dict()
    with pytest.raises(ValueError, match=r"expected \['compartments', 'config'"):
        rbd(net(), **RULES["adaptive coordinates"]).load_state_dict(
            dict(saved, rbd={k: v for k, v in saved["rbd"].items() if k != "compartments"}))
    good = saved["rbd"]["compartments"][0]
    for bad in ({**good, "momentum": good["momentum"][:-1]}, {**good, "momentum": good["momentum"].double()},
                {**good, "momentum": good["momentum"] * math.nan}, {**good, "basis": (1, 0)},
                {**good, "second_moment": -1.0}, {**good, "count": 0}, {k: v for k, v in good.items() if k != "count"},
                {**good, "stray": 1}):
        fresh_model = net(seed=2)
        fresh = rbd(fresh_model, **RULES["adaptive coordinates"])
        train(fresh_model, fresh, 1)
        before = [{k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in e.items()}
                  for e in fresh.compartment_state]
        with pytest.raises(ValueError, match="the saved state of compartment 0 must map"):
            rest = saved["rbd"]["compartments"][1:]
            fresh.load_state_dict(dict(saved, rbd=dict(saved["rbd"], compartments=[bad, *rest])))
        assert fresh.steps == 1 and all(
            torch.equal(a["momentum"], b["momentum"]) and a["count"] == b["count"]
            for a, b in zip(fresh.compartment_state, before))
    with pytest.raises(RuntimeError, match="state per compartment"):
        opt.add_param_group({"params": [nn.Parameter(torch.zeros(2))]})


@pytest.mark.parametrize("kw, error, match", [
    (dict(momentum=-0.1), ValueError, r"momentum must be a number in \[0, 1\).*got -0.1"),
    (dict(momentum=1.0), ValueError, r"momentum must be a number in \[0, 1\).*got 1.0"),
    (dict(momentum=math.nan), ValueError, "momentum must be a number in"),
    (dict(momentum=True), ValueError, "momentum must be a number in"),
    (dict(nesterov=True), ValueError, "nesterov=True needs a momentum"),
    (dict(momentum=0.9, nesterov=1), TypeError, "nesterov must be True or False"),
    (dict(weight_decay=-1e-4), ValueError, "weight_decay must be a non-negative finite number"),
    (dict(weight_decay=math.inf), ValueError, "weight_decay must be a non-negative finite number"),
    (dict(momentum=0.9, memory="buffer"), ValueError, 'memory must be "parameters" or "coordinates".*buffer'),
    (dict(memory="coordinates"), ValueError, "give a momentum in"),
    (dict(adaptive=1.0), ValueError, r"adaptive must be a number in \[0, 1\)"),
    (dict(adaptive=0.9, eps=0), ValueError, "eps must be a positive finite number, got 0"),
])
def test_bad_values_are_refused(kw, error, match):
    with pytest.raises(error, match=match):
        rbd(net(), **kw)


# ----------------------------------------------------------------------------- 2 ranks
DIST_RULES = {"parameters": RULES["all"],
              "coordinates": dict(momentum=0.8, nesterov=True, memory="coordinates", adaptive=0.9, weight_decay=0.05)}
DIST_STEPS = 4


def kept(opt) -> list[torch.Tensor]:
    """Every tensor and number of the rule's state, as tensors."""
    entries = [*opt.state.values(), *opt.compartment_state]
    return [torch.as_tensor(v).clone() for e in entries for _, v in sorted(e.items())]


def worker_memory(rank, world_size):
    out = {}
    for name, rule in DIST_RULES.items():
        for scheme in ("shared", "independent"):
            model = net()
            initial = [p.detach().clone() for p in model.parameters()]
            opt = DistributedRBD(rbd(model, record=scheme == "shared", **rule), scheme=scheme)
            for t in range(DIST_STEPS):
                F.cross_entropy(model(batch(t, rank)[0]), batch(t, rank)[1]).backward()
                opt.step()
                opt.zero_grad()
            out[name, scheme] = {"weights": flat(model), "in_sync": opt.in_sync(), "initial": initial,
                                 "state": kept(opt.optimizer),
                                 "record": opt.state_dict()["rbd"] if scheme == "shared" else None}
        model = net()   # independent, resumed after 2 steps (at a re-draw) into a new optimizer
        opt = DistributedRBD(rbd(model, **rule), scheme="independent")
        for t in range(DIST_STEPS):
            if t == 2:
                saved = _checkpoint(opt.state_dict())
                opt = DistributedRBD(rbd(model, **rule), scheme="independent")
                opt.load_state_dict(saved)
            F.cross_entropy(model(batch(t, rank)[0]), batch(t, rank)[1]).backward()
            opt.step()
            opt.zero_grad()
        out[name, "resumed"] = flat(model)
    return out


@pytest.fixture(scope="module")
def ranks():
    return launch(worker_memory, 2, timeout=60)


@pytest.mark.parametrize("scheme", ["shared", "independent"])
@pytest.mark.parametrize("rule", DIST_RULES)
def test_two_ranks_are_bit_identical_and_follow_the_reference(ranks, rule, scheme):
    a, b = ranks[0][rule, scheme], ranks[1][rule, scheme]
    assert a["in_sync"] and b["in_sync"] and torch.equal(a["weights"], b["weights"])
    assert len(a["state"]) == (4 if rule == "parameters" else 8)   # 4 buffers; 2 x (m, basis, v, count)
    assert all(torch.equal(x, y) for x, y in zip(a["state"], b["state"], strict=True))
    model = net()
    expected = reference(model, rbd(model).layout, DIST_STEPS, workers=2, shared=scheme == "shared",
                         **DIST_RULES[rule])
    torch.testing.assert_close(a["weights"].double(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("rule", DIST_RULES)
def test_two_ranks_shared_replay_and_independent_resume_are_bit_identical(ranks, rule):
    shared = ranks[0][rule, "shared"]
    twin = net(seed=1)
    replay(twin.parameters(), shared["initial"], shared["record"])
    assert torch.equal(flat(twin), shared["weights"])
    for rank in range(2):
        assert torch.equal(ranks[rank][rule, "resumed"], ranks[0][rule, "independent"]["weights"])
