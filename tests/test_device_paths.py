"""What the notebooks run when Colab gives them a GPU (``device = cuda``, CuPy present), on every device.

Notebook 01 trains SGD and RBD with ``rbdlib.fit(..., device=device)`` (RBD on the GPU when
``rbdlib.gpu_available()``); notebook 06 projects, expands and materializes bases on CUDA tensors and
compares them with the CPU. Each test runs on the CPU always and on CUDA where a GPU with CuPy is present
(marked ``gpu``), against a float64 reference built from materialized bases on the CPU, so the test code
itself is exercised here.
"""

from __future__ import annotations

import pytest
import torch

import rbdlib
from rbdlib.data import load_dataset

DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not rbdlib.gpu_available(), reason="needs a CUDA GPU with CuPy")])]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("distribution", ["normal", "rademacher"])
def test_an_rbd_step_on_the_device_matches_the_float64_reference(device, distribution):
    """Notebook 01's RBD on the GPU: theta <- theta - lr sum_k P_k P_k^T g_k, with the parameters kept there."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).to(device)
    before = [p.detach().cpu().double() for p in model.parameters()]
    opt = rbdlib.RBD(model.parameters(), lr=0.3, dim=12, seed=5, compartments="tensor", distribution=distribution)
    x, y = torch.randn(8, 20, device=device), torch.randint(0, 3, (8,), device=device)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    grads = [p.grad.detach().cpu().double() for p in model.parameters()]
    bases = [opt.bases(k).materialize().double() for k in range(len(grads))]  # this step's, on the CPU
    opt.step()
    assert all(p.device.type == device for p in model.parameters())
    for p, p0, g, P in zip(model.parameters(), before, grads, bases):
        want = p0.reshape(-1) - 0.3 * (P.T @ (P @ g.reshape(-1)))
        torch.testing.assert_close(p.detach().cpu().double().reshape(-1), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_fit_trains_sgd_and_rbd_on_the_device(device):
    """Notebook 01's two runs, shrunk: both leave the model on the device and lower the loss."""
    ds = load_dataset("digits")
    for make in (lambda m: torch.optim.SGD(m.parameters(), lr=0.1),
                 lambda m: rbdlib.RBD(m.parameters(), lr=0.5, dim=50, distribution="rademacher")):
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        history = rbdlib.fit(model, make(model), ds, max_steps=60, eval_every=60, device=device, progress=False)
        assert next(model.parameters()).device.type == device
        assert history.last["val_loss"] < history.records[0]["val_loss"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("distribution", ["normal", "uniform", "rademacher"])
def test_bases_on_the_device_agree_with_the_float64_reference(device, distribution):
    """Notebook 06's GPU section: project, expand and materialize on the device's tensors."""
    b = rbdlib.RandomBases(seed=3, step=2, compartment=1, dim=9, size=10_007, distribution=distribution)
    g, c = torch.randn(10_007, dtype=torch.float64), torch.randn(9, dtype=torch.float64)
    P = b.materialize().double()
    coords, delta = b.project(g.float().to(device)), b.expand(c.float().to(device))
    assert coords.device.type == device and delta.device.type == device
    torch.testing.assert_close(coords.cpu().double(), P @ g.float().double(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(delta.cpu().double(), P.T @ c.float().double(), rtol=1e-5, atol=1e-5)
    rows = b.materialize([0, 4, 8], device=device)
    assert rows.device.type == device
    torch.testing.assert_close(rows.cpu().double(), P[[0, 4, 8]], rtol=0, atol=1e-6)
