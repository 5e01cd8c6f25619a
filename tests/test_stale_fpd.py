"""FPD(reset_coords=False), the reference code's FPD, against an explicit float64 reference.

The reference never resets its coordinate variable c, so the gradient of step t is taken at theta_t + P c_{t-1},
with c_{t-1} = P^T g_{t-1}; the update theta_{t+1} = theta_t - lr P c_t and validation use theta itself. The
expected trajectory below is written out with the materialized P and torch.func, not the optimizer's path.
"""

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad

import rbdlib
from rbdlib import FPD, RBD
from rbdlib.bases import RandomBases
from rbdlib.train import train

torch.manual_seed(0)
X, Y = torch.randn(64, 5), torch.randint(0, 3, (64,))


def net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))


def loss_at(model, flat, x, y):
    """Cross-entropy of the float64 ``model`` with its parameters replaced by the vector ``flat``."""
    shapes = [(n, p.shape) for n, p in model.named_parameters()]
    params, at = {}, 0
    for name, shape in shapes:
        params[name] = flat[at:at + shape.numel()].view(shape)
        at += shape.numel()
    return nn.functional.cross_entropy(functional_call(model, params, (x.double(),)), y)


@pytest.mark.parametrize("distribution", ["normal", "rademacher"])
def test_stale_fpd_follows_the_reference_trajectory(distribution):
    model, lr, dim, steps = net(), 0.7, 6, 5
    opt = FPD(model.parameters(), lr=lr, dim=dim, seed=3, distribution=distribution, reset_coords=False)
    size = sum(p.numel() for p in model.parameters())
    P = RandomBases(3, 0, 0, dim, size, distribution, size ** -0.5).materialize().double().T   # (D, d)
    ref_model = net().double()
    theta = torch.cat([p.detach().reshape(-1) for p in ref_model.parameters()]).double()
    c_prev = torch.zeros(dim, dtype=torch.float64)
    batches = [(X[8 * t:8 * t + 8], Y[8 * t:8 * t + 8]) for t in range(steps)]
    for x, y in batches:
        g = grad(lambda f, x=x, y=y: loss_at(ref_model, f, x, y))(theta + P @ c_prev)
        c = P.T @ g
        theta, c_prev = theta - lr * P @ c, c

        def closure(x=x, y=y):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            return loss
        opt.step(closure)
    got = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double()
    torch.testing.assert_close(got, theta, rtol=1e-4, atol=1e-5)
    # the control: plain FPD (coordinates reset to 0) takes a measurably different path on the same batches
    plain_model = net()
    plain = FPD(plain_model.parameters(), lr=lr, dim=dim, seed=3, distribution=distribution)
    for x, y in batches:
        plain.zero_grad()
        nn.functional.cross_entropy(plain_model(x), y).backward()
        plain.step()
    other = torch.cat([p.detach().reshape(-1) for p in plain_model.parameters()]).double()
    assert (other - theta).abs().max() > 1e-3


def test_the_closure_point_is_undone_bit_for_bit_and_checkpoints_resume():
    model = net()
    opt = FPD(model.parameters(), lr=0.5, dim=4, seed=1, reset_coords=False)
    seen = []

    def closure():
        seen.append([p.detach().clone() for p in model.parameters()])
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(X), Y)
        loss.backward()
        return loss
    opt.step(closure)
    after_one = [p.detach().clone() for p in model.parameters()]
    opt.step(closure)   # evaluated at theta_1 + P c_0, not at theta_1
    assert any(not torch.equal(a, b) for a, b in zip(seen[1], after_one))
    # a copy restored from the state continues exactly like the original
    twin = net(seed=5)
    twin.load_state_dict(model.state_dict())
    twin_opt = FPD(twin.parameters(), lr=0.5, dim=4, seed=1, reset_coords=False)
    twin_opt.load_state_dict(opt.state_dict())
    before = [p.detach().clone() for p in model.parameters()]
    loss_fn = lambda m, o: (o.zero_grad(), nn.functional.cross_entropy(m(X), Y).backward())   # noqa: E731
    opt.step(lambda: loss_fn(model, opt))
    twin_opt.step(lambda: loss_fn(twin, twin_opt))
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_bad_use_is_refused_and_changes_nothing():
    model = net()
    opt = FPD(model.parameters(), lr=0.5, dim=4, reset_coords=False)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(TypeError, match="needs a closure"):
        opt.step()
    with pytest.raises(TypeError, match="reset_coords must be True or False"):
        FPD(model.parameters(), lr=0.5, dim=4, reset_coords="no")
    with pytest.raises(TypeError, match="does not record"):
        FPD(model.parameters(), lr=0.5, dim=4, reset_coords=False, record=True)
    plain_state = FPD(model.parameters(), lr=0.5, dim=4).state_dict()
    with pytest.raises(ValueError, match="not saved by a StaleFPD"):
        opt.load_state_dict(plain_state)
    state = opt.state_dict()
    state["rbd"]["stale"] = [torch.full((4,), float("nan"))]
    with pytest.raises(ValueError, match="stale coordinates"):
        opt.load_state_dict(state)
    assert opt.stale is None and opt.steps == 0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_train_passes_the_closure_and_it_learns():
    data = rbdlib.data.load_dataset("digits")
    model = rbdlib.models.fc(data.in_shape, seed=0)
    opt = FPD(model.parameters(), lr=4.0, dim=50, distribution="rademacher", reset_coords=False)
    history = train(model, opt, data, epochs=5, progress=False)   # 5 x 34 steps; measured 11.7 % -> 55.4 %
    assert history.records[-1]["val_acc"] > history.records[0]["val_acc"] + 0.3
    assert isinstance(opt, RBD) and opt.steps == 5 * 34 and opt.stale is not None


def test_the_command_line_option():
    from rbdlib.experiments import make_optimizer, parse_method
    assert parse_method("fpd:distribution=rademacher,reset_coords=false") == (
        "fpd", {"distribution": "rademacher", "reset_coords": False})
    with pytest.raises(ValueError, match="rbd does not use option 'reset_coords'"):
        parse_method("rbd:reset_coords=false")

    class Args:
        dim, compartments, distribution, basis_seed, redraw = 8, "network", "normal", 0, 1
    opt = make_optimizer("fpd", {"reset_coords": False}, net(), {"lr": {"fpd": 0.5}}, Args)
    assert type(opt).__name__ == "StaleFPD" and opt.needs_closure and opt.redraw is None
