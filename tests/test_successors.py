"""Flora, GaLore, GoLore, APOLLO-Mini and MeZO against explicit float64 references written out here.

Each reference is the paper's equations with plain loops over the parameters, apart from rbdlib.successors: the
gradient is ``torch.func.grad`` of a float64 twin of the network at the reference's own weights, the random
projections are materialized in float64 from ``RandomBases`` at the addresses the docstrings give, and each matrix
is projected on its smaller side by the left (P^T G) or right (G P) product as the papers write them, not through
the module's transposition. The runs cross projection refreshes (every GAP = 2 steps) and a checkpoint resume;
each rule, changed (refresh ignored, carry omitted, no limiter, z not regenerated), is shown to leave the
reference. Comparisons between different code paths use tolerances; bit-equality is asked only of the same code
run twice (a resume, a copy, a new process, two ranks).
"""

from __future__ import annotations

import copy
import io
import math
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad

from rbdlib import ApolloMini, Flora, GaLore, GoLore, MeZO, footprint
from rbdlib.bases import RandomBases
from rbdlib.distributed import launch
from rbdlib.footprint import projection_bytes

SEED, GAP, STEPS = 3, 2, 6
BETAS, EPS, WD = (0.8, 0.9), 1e-6, 0.1
# Linear(6, 10): a 10 x 6 weight (projected on the right, s = 6) and Linear(10, 3): 3 x 10 (on the left, s = 3)
METHODS = {
    "Flora": (Flora, dict(lr=0.5, rank=4, seed=SEED, kappa=GAP, beta=0.8)),   # 3 x 10: s < rank, uncompressed
    "GaLore": (GaLore, dict(lr=0.02, rank=2, update_proj_gap=GAP, alpha=0.5, betas=BETAS, eps=EPS, weight_decay=WD)),
    "GoLore": (GoLore, dict(lr=0.02, rank=2, seed=SEED, update_proj_gap=GAP, alpha=0.5, betas=BETAS, eps=EPS,
                            weight_decay=WD)),
    "ApolloMini": (ApolloMini, dict(lr=0.02, seed=SEED, update_proj_gap=GAP, betas=BETAS, eps=EPS, weight_decay=WD)),
    "MeZO": (MeZO, dict(lr=0.05, dim=2, seed=SEED, eps=1e-2)),
}
GRADIENT = [m for m in METHODS if m != "MeZO"]
RANDOM = [m for m in METHODS if m != "GaLore"]
TOL = dict(rtol=1e-4, atol=1e-5)


def net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 3))


def batch(t: int, rank: int = 0):
    g = torch.Generator().manual_seed(1000 * t + rank)
    return torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)


def make(method: str, model: nn.Module, **override):
    cls, kw = METHODS[method]
    return cls(model.parameters(), **{**kw, **override})


def train(model, opt, start: int, stop: int, rank: int = 0) -> None:
    for t in range(start, stop):
        x, y = batch(t, rank)
        if isinstance(opt, MeZO):
            opt.step(lambda x=x, y=y: F.cross_entropy(model(x), y))
        else:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()


def flat(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def trained(method: str, seed: int = SEED) -> torch.Tensor:
    """The weights after STEPS steps from net(0): what a new process must reproduce bit for bit."""
    model = net()
    opt = make(method, model, **({"seed": seed} if method in RANDOM else {}))
    train(model, opt, 0, STEPS)
    return flat(model)


# ------------------------------------------------------------------------------------------- the references
def draw(refresh, i, rows, size, scale):
    return RandomBases(SEED, refresh, i, rows, size, "normal", scale).materialize().double()


def twin(model):
    """(float64 weights, their loss on batch t's data, its gradient)."""
    copy64 = copy.deepcopy(model).double()
    names = [n for n, _ in copy64.named_parameters()]

    def loss(thetas, x, y):
        return F.cross_entropy(functional_call(copy64, dict(zip(names, thetas)), (x.double(),)), y)
    return [p.detach().clone() for p in copy64.parameters()], loss, grad(loss)


def adam(kept, r, t, betas=BETAS, eps=EPS):
    kept["m"] = betas[0] * kept.get("m", 0) + (1 - betas[0]) * r
    kept["v"] = betas[1] * kept.get("v", 0) + (1 - betas[1]) * r * r
    return (kept["m"] / (1 - betas[0] ** (t + 1))) / ((kept["v"] / (1 - betas[1] ** (t + 1))).sqrt() + eps)


def ref_flora(model, steps, lr, rank, kappa, beta, mutation=None, **_):
    thetas, _, gradient = twin(model)
    m = [None] * len(thetas)
    for t in range(steps):
        gs = gradient(thetas, *batch(t))
        for i, (w, g) in enumerate(zip(thetas, gs)):
            if w.dim() < 2 or min(w.shape) < rank:           # EMA momentum, uncompressed
                m[i] = beta * (0 if m[i] is None else m[i]) + (1 - beta) * g
                thetas[i] = w - lr * m[i]
                continue
            n, k = w.shape
            j = 0 if mutation == "refresh ignored" else t // kappa
            A = draw(j, i, rank, min(n, k), 1 / math.sqrt(rank))           # r x s
            if m[i] is None:
                m[i] = torch.zeros((rank, k) if n <= k else (n, rank), dtype=torch.float64)
            elif t % kappa == 0 and j > 0 and mutation != "carry omitted":
                old = draw(j - 1, i, rank, min(n, k), 1 / math.sqrt(rank))
                m[i] = A @ old.T @ m[i] if n <= k else m[i] @ old @ A.T
            if n <= k:   # left: A G, r x k
                m[i] = beta * m[i] + (1 - beta) * A @ g
                thetas[i] = w - lr * A.T @ m[i]
            else:        # right: G A^T, n x r
                m[i] = beta * m[i] + (1 - beta) * g @ A.T
                thetas[i] = w - lr * m[i] @ A
    return thetas


def polar(z):
    u, _, vh = torch.linalg.svd(z, full_matrices=False)
    return u @ vh


def ref_galore(model, steps, lr, rank, update_proj_gap, alpha, weight_decay, random=False, mutation=None, **_):
    thetas, _, gradient = twin(model)
    kept = [{} for _ in thetas]
    for t in range(steps):
        gs = gradient(thetas, *batch(t))
        for i, (w, g) in enumerate(zip(thetas, gs)):
            if w.dim() < 2:
                thetas[i] = (1 - lr * weight_decay) * w - lr * adam(kept[i], g, t)
                continue
            n, k = w.shape
            r = min(rank, n, k)
            if t % update_proj_gap == 0 and (t == 0 or mutation != "refresh ignored"):
                if random:   # Z (Z^T Z)^(-1/2) = U V^T of Z's SVD
                    P = polar(draw(t // update_proj_gap, i, r, min(n, k), 1.0).T)
                else:
                    u, _, vh = torch.linalg.svd(g, full_matrices=False)
                    P = u[:, :r] if n <= k else vh[:r].T
                    P = P * torch.sign(P.gather(0, P.abs().argmax(0, keepdim=True)))   # largest entry positive
                kept[i]["P"] = P
            P = kept[i]["P"]
            if n <= k:   # left: R = P^T G, r x k
                step = P @ adam(kept[i], P.T @ g, t)
            else:        # right: R = G P, n x r
                step = adam(kept[i], g @ P, t) @ P.T
            thetas[i] = (1 - lr * weight_decay) * w - lr * alpha * step
    return thetas


def ref_golore(model, steps, **kw):
    return ref_galore(model, steps, random=True, **kw)


def ref_apollo(model, steps, lr, update_proj_gap, weight_decay, mutation=None, **_):
    thetas, _, gradient = twin(model)
    kept = [{} for _ in thetas]
    for t in range(steps):
        gs = gradient(thetas, *batch(t))
        for i, (w, g) in enumerate(zip(thetas, gs)):
            if w.dim() < 2:
                thetas[i] = (1 - lr * weight_decay) * w - lr * adam(kept[i], g, t)
                continue
            n, k = w.shape
            j = 0 if mutation == "refresh ignored" else t // update_proj_gap
            P = draw(j, i, 1, min(n, k), 1.0)                    # 1 x s, N(0, 1/r) with r = 1
            R = P @ g if n <= k else g @ P.T
            scaled = (adam(kept[i], R, t).norm() / R.norm()) * g
            norm = scaled.norm()
            if "norm" in kept[i] and norm > 1.01 * kept[i]["norm"] and mutation != "no limiter":
                scaled = scaled * (1.01 * kept[i]["norm"] / norm)
                norm = 1.01 * kept[i]["norm"]
            kept[i]["norm"] = norm
            thetas[i] = (1 - lr * weight_decay) * w - lr * math.sqrt(128) * scaled
    return thetas


def ref_mezo(model, steps, lr, dim, eps, mutation=None, workers=1, **_):
    thetas, loss, _ = twin(model)
    for t in range(steps):
        address = 0 if mutation == "same z every step" else t
        z = [[draw_z(address, k, dim, w)[i] for k, w in enumerate(thetas)] for i in range(dim)]
        if mutation == "z not regenerated for the update":
            z_update = [[draw_z(address + 1, k, dim, w)[i] for k, w in enumerate(thetas)] for i in range(dim)]
        else:
            z_update = z
        c = [0.0] * dim
        for rank in range(workers):
            x, y = batch(t, rank)
            for i in range(dim):
                plus = loss([w + eps * zk for w, zk in zip(thetas, z[i])], x, y)
                minus = loss([w - eps * zk for w, zk in zip(thetas, z[i])], x, y)
                c[i] += float(plus - minus) / (2 * eps) / workers
        thetas = [w - lr / dim * sum(c[i] * z_update[i][k] for i in range(dim)) for k, w in enumerate(thetas)]
    return thetas


def draw_z(step, k, dim, w):
    return RandomBases(SEED, step, k, dim, w.numel(), "normal", 1.0).materialize().double().view(dim, *w.shape)


REFERENCES = {"Flora": ref_flora, "GaLore": ref_galore, "GoLore": ref_golore, "ApolloMini": ref_apollo,
              "MeZO": ref_mezo}


def reference(method, model, steps, **kw):
    return torch.cat([w.reshape(-1) for w in REFERENCES[method](model, steps, **{**METHODS[method][1], **kw})])


def checkpoint(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


# ------------------------------------------------------------------------------------------- the rules
@pytest.mark.parametrize("stop", [3, 4])   # resume inside a refresh period, or at the start of one
@pytest.mark.parametrize("method", METHODS)
def test_follows_the_float64_reference_across_refreshes_and_a_resume(method, stop):
    model = net()
    expected = reference(method, model, STEPS)
    opt = make(method, model)
    train(model, opt, 0, stop)
    saved, weights = checkpoint(opt.state_dict()), checkpoint(model.state_dict())
    resumed = net(seed=1)
    resumed.load_state_dict(weights)
    again = make(method, resumed)
    again.load_state_dict(saved)
    train(resumed, again, stop, STEPS)
    torch.testing.assert_close(flat(resumed).double(), expected, **TOL)
    whole = net()
    train(whole, make(method, whole), 0, STEPS)
    assert torch.equal(flat(resumed), flat(whole))   # the same code, run twice: bit for bit
    assert (flat(whole) - flat(net())).abs().max() > 1e-2


MUTATIONS = [("Flora", "refresh ignored"), ("Flora", "carry omitted"), ("GaLore", "refresh ignored"),
             ("GoLore", "refresh ignored"), ("ApolloMini", "refresh ignored"), ("ApolloMini", "no limiter"),
             ("MeZO", "same z every step"), ("MeZO", "z not regenerated for the update")]


@pytest.mark.parametrize("method, mutation", MUTATIONS)
def test_the_reference_with_a_changed_rule_is_not_what_the_optimizer_does(method, mutation):
    model = net()
    changed = reference(method, model, STEPS, mutation=mutation)
    opt = make(method, model)
    train(model, opt, 0, STEPS)
    assert (flat(model).double() - changed).abs().max() > 100 * TOL["atol"]


@pytest.mark.parametrize("method", METHODS)
def test_the_lr_in_param_groups_is_the_lr_applied(method):
    model = net()
    expected = reference(method, model, 3)
    opt = make(method, model, lr=5.0)
    for g in opt.param_groups:
        g["lr"] = METHODS[method][1]["lr"]
    train(model, opt, 0, 3)
    torch.testing.assert_close(flat(model).double(), expected, **TOL)


def test_golore_projectors_are_orthonormal_and_galore_spans_the_top_singular_vectors():
    model = net()
    for method in ("GaLore", "GoLore"):
        opt = make(method, model)
        train(model, opt, 0, 1)
        P = opt.state[model[0].weight]["projector"].double()
        torch.testing.assert_close(P.T @ P, torch.eye(2, dtype=torch.float64), rtol=0, atol=1e-6)
    g = model[0].weight.grad.T.double()                           # s x L = 6 x 10
    u = torch.linalg.svd(g, full_matrices=False)[0][:, :2]
    P = GaLore(model.parameters(), lr=0.0, rank=2)
    P.step()
    P = P.state[model[0].weight]["projector"].double()
    torch.testing.assert_close(P @ P.T, u @ u.T, rtol=0, atol=1e-5)


def test_mezo_leaves_theta_where_it_was_and_needs_a_closure():
    model = net()
    opt = make("MeZO", model)
    before = flat(model)
    x, y = batch(0)
    coords = opt.coordinates(lambda: F.cross_entropy(model(x), y))
    assert coords.shape == (2,) and opt.steps == 0
    torch.testing.assert_close(flat(model), before, rtol=0, atol=1e-6)   # back, up to float32 rounding
    calls = []

    def fails_second_time():
        calls.append(1)
        if len(calls) == 2:
            raise ZeroDivisionError("at theta - eps z")
        return F.cross_entropy(model(x), y)
    with pytest.raises(ZeroDivisionError):
        opt.step(fails_second_time)
    torch.testing.assert_close(flat(model), before, rtol=0, atol=1e-6)   # put back from theta - eps z
    with pytest.raises(ValueError, match="MeZO needs a closure that returns the loss"):
        opt.step()
    with pytest.raises(ValueError, match=r"coords must be a finite float32 tensor of shape \(2,\)"):
        opt.apply(torch.zeros(3))


@pytest.mark.parametrize("method", METHODS)
def test_a_tensor_of_more_dimensions_is_the_matrix_of_its_first_dimension_by_the_rest(method):
    cube, square = nn.Parameter(torch.ones(4, 3, 2)), nn.Parameter(torch.ones(4, 6))
    opts = [make(method, nn.ParameterList([p])) for p in (cube, square)]
    for t in range(3):
        G = torch.randn(4, 6, generator=torch.Generator().manual_seed(t))
        for p, opt in zip((cube, square), opts):
            if isinstance(opt, MeZO):
                opt.step(lambda p=p, G=G: (p.reshape(4, 6) * G).sum().tanh())
            else:
                p.grad = G.clone().view(p.shape)
                opt.step()
    assert torch.equal(cube.detach().reshape(4, 6), square.detach())
    assert not torch.equal(square.detach(), torch.ones(4, 6))


# ------------------------------------------------------------------------------------------- reproducibility
def test_the_same_seed_in_a_new_process_gives_identical_parameters(tmp_path):
    out = tmp_path / "weights.pt"
    code = (f"import sys, torch; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_successors as t; "
            f"torch.save({{m: t.trained(m) for m in t.METHODS}}, {str(out)!r})")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    there = torch.load(out, weights_only=True)
    for method in METHODS:
        assert torch.equal(there[method], trained(method)), method
    for method in RANDOM:   # and the seed matters
        assert not torch.equal(trained(method, seed=SEED + 1), there[method]), method


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
@pytest.mark.parametrize("method", METHODS)
def test_a_copy_steps_its_model_as_the_original_steps_its_own(method, how):
    model = net()
    opt = make(method, model)
    train(model, opt, 0, 3)
    model2, opt2 = copy.deepcopy((model, opt)) if how == "deepcopy" else pickle.loads(pickle.dumps((model, opt)))
    train(model2, opt2, 3, STEPS)
    train(model, opt, 3, STEPS)
    assert torch.equal(flat(model2), flat(model))


# ------------------------------------------------------------------------------------------- torch conventions
@pytest.mark.parametrize("method", METHODS)
def test_a_frozen_parameter_never_moves_whatever_its_grad(method):
    model = net()
    opt = make(method, model)
    train(model, opt, 0, 1)
    frozen = model[0].weight
    frozen.requires_grad_(False)
    frozen.grad = torch.ones_like(frozen)   # a gradient left from before the freeze
    before, others = frozen.detach().clone(), flat(model[2])
    train(model, opt, 1, 4)
    assert torch.equal(frozen, before) and not torch.equal(flat(model[2]), others)


@pytest.mark.parametrize("method", GRADIENT)
def test_a_parameter_without_grad_stays_and_gets_no_state(method):
    model = net()
    opt = make(method, model)
    bias = model[0].bias.detach().clone()
    for t in range(3):
        x, y = batch(t)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        model[0].bias.grad = None
        opt.step()
    assert torch.equal(model[0].bias, bias) and model[0].bias not in opt.state


@pytest.mark.parametrize("method", GRADIENT)
def test_a_nonfinite_gradient_raises_before_anything_changes(method):
    model = net()
    opt = make(method, model)
    train(model, opt, 0, 1)
    state, before = copy.deepcopy(opt.state_dict()), flat(model)
    x, y = batch(1)
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    model[2].bias.grad[0] = math.nan
    with pytest.raises(FloatingPointError, match=r"parameter 3 holds NaN or inf; no parameter was changed"):
        opt.step()
    assert torch.equal(flat(model), before) and str(opt.state_dict()) == str(state)


def test_named_parameters_and_groups():
    model = net()
    opt = Flora(model.named_parameters(), lr=0.1, rank=2)
    model[0].weight.grad = torch.zeros(10, 6)
    model[0].weight.grad.data = torch.zeros(3)   # behind torch's back (p.grad = ... checks the shape)
    with pytest.raises(ValueError, match=r"gradient of parameter 0 \('0.weight'\) has shape \(3,\)"):
        opt.step()
    groups = [{"params": model[0].parameters(), "lr": 0.0}, {"params": model[2].parameters()}]
    opt = GaLore(groups, lr=0.01, rank=2)
    before = flat(model[0])
    train(model, opt, 0, 2)
    assert torch.equal(flat(model[0]), before) and [g["lr"] for g in opt.param_groups] == [0.0, 0.01]
    with pytest.raises(ValueError, match=r"a parameter group may set only 'lr', got \['rank'\]"):
        GaLore([{"params": model[0].parameters(), "rank": 4}], lr=0.01, rank=2)


# ------------------------------------------------------------------------------------------- bad inputs
def params():
    return list(net().parameters())


@pytest.mark.parametrize("make_bad, error, match", [
    (lambda: Flora(params(), lr=-1.0, rank=2), ValueError, r"lr must be a number in \[0.0, inf\).*got -1.0"),
    (lambda: Flora(params(), lr=math.nan, rank=2), ValueError, "lr must be a number in"),
    (lambda: Flora(params(), lr=0.1, rank=0), ValueError, "rank must be a positive integer .*got 0"),
    (lambda: Flora(params(), lr=0.1, rank=2.5), TypeError, "rank must be an integer, got float 2.5"),
    (lambda: Flora(params(), lr=0.1, rank=2, kappa=0), ValueError, r"kappa must be a positive integer \(steps"),
    (lambda: Flora(params(), lr=0.1, rank=2, beta=1.0), ValueError, r"beta must be a number in \[0.0, 1.0\)"),
    (lambda: Flora(params(), lr=0.1, rank=2, seed=-1), ValueError, r"seed must be in \[0, 18446744073709551615\]"),
    (lambda: GaLore(params(), lr=0.1, rank=2, betas=(0.9,)), ValueError, "betas must be a pair"),
    (lambda: GaLore(params(), lr=0.1, rank=2, betas=(0.9, 1.5)), ValueError, r"betas\[1\] must be a number in"),
    (lambda: GaLore(params(), lr=0.1, rank=2, eps=0.0), ValueError, r"eps must be a number in \(0.0, inf\)"),
    (lambda: GaLore(params(), lr=0.1, rank=2, alpha=-1), ValueError, "alpha must be a number in"),
    (lambda: GoLore(params(), lr=0.1, rank=2, update_proj_gap=0), ValueError, "update_proj_gap must be a positive"),
    (lambda: GoLore(params(), lr=0.1, rank=2, weight_decay=-0.1), ValueError, "weight_decay must be a number in"),
    (lambda: ApolloMini(params(), lr=0.1, limiter=1.0), ValueError, r"limiter must be a number in \(1.0, inf\)"),
    (lambda: MeZO(params(), lr=0.1, dim=0), ValueError, "dim must be a positive integer"),
    (lambda: MeZO(params(), lr=0.1, eps=0.0), ValueError, r"eps must be a number in \(0.0, inf\)"),
    (lambda: MeZO([], lr=0.1), ValueError, "empty parameter list"),
    (lambda: MeZO(nn.Linear(2, 2).weight, lr=0.1), TypeError, "wrap it in a list"),
    (lambda: MeZO([nn.Linear(2, 2).double().weight], lr=0.1), TypeError, "needs float32 parameters"),
    (lambda: MeZO([params()[0]] * 2, lr=0.1), ValueError, "given more than once"),
])
def test_bad_values_are_refused(make_bad, error, match):
    with pytest.raises(error, match=match):
        make_bad()


@pytest.mark.parametrize("method", METHODS)
def test_loading_checks_the_state_before_changing_anything(method):
    model = net()
    opt = make(method, model)
    train(model, opt, 0, 3)
    saved = opt.state_dict()
    other = dict(METHODS[method][1], lr=0.1)
    other.update({"dim": 3} if method == "MeZO" else {"update_proj_gap": 5} if "update_proj_gap" in other
                 else {"kappa": 5})
    with pytest.raises(ValueError, match="saved with a different configuration"):
        METHODS[method][0](net().parameters(), **other).load_state_dict(saved)
    fresh_model = net(seed=2)
    fresh = make(method, fresh_model)
    train(fresh_model, fresh, 0, 1)
    before = str(fresh.state_dict())
    bad_states = [{**saved, "successor": {"steps": -1, "config": saved["successor"]["config"]}},
                  {k: v for k, v in saved.items() if k != "successor"},
                  {**saved, "param_groups": [{**saved["param_groups"][0], "lr": -1.0}]}]
    if saved["state"]:
        entry = saved["state"][0]
        key = next(k for k, v in entry.items() if isinstance(v, torch.Tensor))
        bad_states += [{**saved, "state": {**saved["state"], 0: {**entry, key: entry[key].reshape(-1)[:1]}}},
                       {**saved, "state": {**saved["state"], 0: {**entry, key: entry[key] * math.nan}}},
                       {**saved, "state": {**saved["state"], 0: {**entry, "stray": 1}}},
                       {**saved, "state": {**saved["state"], 9: entry}}]
    for bad in bad_states:
        with pytest.raises(ValueError):
            fresh.load_state_dict(bad)
        assert str(fresh.state_dict()) == before
    fresh.load_state_dict(saved)   # the loaded state is a copy
    assert all(v is not opt.state[q][k] for p, q in zip(fresh.params, opt.params)
               for k, v in fresh.state[p].items() if isinstance(v, torch.Tensor))


# ------------------------------------------------------------------------------------------- memory
def held(opt) -> int:
    """Bytes of every tensor in opt.state, and 8 for every number."""
    return sum(v.numel() * v.element_size() if isinstance(v, torch.Tensor) else 8
               for entry in opt.state.values() for v in entry.values())


@pytest.mark.parametrize("method", METHODS)
def test_footprint_counts_the_state_and_the_stored_projections(method):
    model = net()
    opt = make(method, model)
    assert footprint(model, opt)["state"] == 0
    train(model, opt, 0, 3)
    # per parameter: (state floats, projector floats); weights 10 x 6 (s = 6, L = 10) and 3 x 10 (s = 3, L = 10)
    floats = {"Flora": [(4 * 10, 0), (10, 0), (3 * 10, 0), (3, 0)],            # r L; D (s < r, and biases)
              "GaLore": [(2 * 2 * 10, 6 * 2), (2 * 10, 0), (2 * 2 * 10, 3 * 2), (2 * 3, 0)],   # 2 r L + s r; 2 D
              "ApolloMini": [(2 * 10, 0), (2 * 10, 0), (2 * 10, 0), (2 * 3, 0)],        # 2 L (r = 1); 2 D
              "MeZO": []}
    floats["GoLore"] = floats["GaLore"]
    numbers = {"Flora": 4, "GaLore": 4, "GoLore": 4, "ApolloMini": 4 + 2, "MeZO": 0}   # step counts; n_prev
    expected = 4 * sum(a + b for a, b in floats[method]) + 8 * numbers[method]
    assert footprint(model, opt)["state"] == held(opt) == expected
    assert projection_bytes(opt) == 4 * sum(b for _, b in floats[method])
    gradients = 0 if method == "MeZO" else 4 * 103   # D = 103; MeZO reads no gradient
    assert footprint(model, opt) == {"parameters": 4 * 103, "gradients": gradients, "state": expected,
                                     "total": 4 * 103 + gradients + expected}


# ------------------------------------------------------------------------------------------- 2 ranks, MeZO
def worker_mezo(rank, world_size):
    """Shared-seed MeZO: each rank estimates the dim coordinates on its own batch; one all-reduce of dim floats."""
    model = net()
    opt = make("MeZO", model)
    for t in range(4):
        x, y = batch(t, rank)
        coords = opt.coordinates(lambda x=x, y=y: F.cross_entropy(model(x), y))
        dist.all_reduce(coords)
        opt.apply(coords / world_size)
    return flat(model)


def test_mezo_on_two_ranks_exchanges_dim_numbers_and_follows_the_reference():
    a, b = launch(worker_mezo, 2, timeout=60)
    assert torch.equal(a, b)
    expected = reference("MeZO", net(), 4, workers=2)
    torch.testing.assert_close(a.double(), expected, **TOL)
    assert (a.double() - reference("MeZO", net(), 4)).abs().max() > 100 * TOL["atol"]   # not one rank's batch
