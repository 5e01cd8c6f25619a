"""Every notebook code path that touches the GPU on Colab (``device = cuda``, CuPy present), on every device.

On a GPU runtime the notebooks reach the GPU in these cells only (everything else stays on the CPU: notebooks
03-05 call ``train`` without ``device=``, notebook 07 launches gloo processes that train on the CPU, and no
``viz`` helper is ever given a CUDA tensor):

* 01, cells 13-14: ``train(model, SGD | RBD(lr=0.5, dim=250, distribution="rademacher"), ds, device=device)``
  with the optimizer built before ``train`` moves the model -> ``test_fit_on_the_device``
* 06, cells 8 and 25: ``philox4x32`` on an int64 CUDA tensor of counters -> ``test_philox_words``
* 06, cell 25: ``RandomBases(7, 3, 1, 16, 10_007, dist).materialize(device=cuda)`` -> ``test_materialize_rows``
* 06, cell 26: ``RandomBases(0, r, 0, d, D, dist)``: ``expand(project(g))`` with g on the GPU
  -> ``test_project_then_expand``
* 08, cell 11: ``experiments.main([...])`` whose ``--device`` defaults to cuda: SGD and ±1 RBD with the paper's
  augmentation, evaluation and a checkpoint of CUDA tensors -> ``test_experiment_command_on_the_device``
* inputs the kernels refuse (float64, half-precision models, no CuPy) -> ``test_refused_inputs_fail_clearly``

Each test runs on the CPU always and on CUDA where ``rbdlib.gpu_available()`` (marked ``gpu``). References are
explicit and slow: Philox in pure Python, basis rows from the NumPy reference (``rbdlib.philox``, never the
compiled kernels) and training steps taken in float64 on the CPU from those rows.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils import parameters_to_vector, vector_to_parameters

import rbdlib
import rbdlib.kernels.cuda
from rbdlib import experiments
from rbdlib import philox as ref
from rbdlib.data import Dataset, augment_mnist, batches
from rbdlib.models import fc

gpu = pytest.mark.skipif(not rbdlib.gpu_available(), reason="needs a CUDA GPU with CuPy")
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, gpu])]
DISTS = ref.DISTRIBUTIONS
REL = 1e-5  # float32 kernels against float64 references: relative error of a whole vector


# ---------------------------------------------------------------- explicit references
def philox_block(x, k, rounds=10):
    """Philox4x32-10 on Python integers (notebook 06, cell 6)."""
    (x0, x1, x2, x3), (k0, k1) = x, k
    for r in range(rounds):
        if r:
            k0, k1 = (k0 + 0x9E3779B9) % 2**32, (k1 + 0xBB67AE85) % 2**32
        p0, p1 = 0xD2511F53 * x0, 0xCD9E8D57 * x2
        x0, x1, x2, x3 = (p1 >> 32) ^ x1 ^ k0, p1 % 2**32, (p0 >> 32) ^ x3 ^ k1, p0 % 2**32
    return x0, x1, x2, x3


def reference_rows(seed, step, compartment, directions, size, distribution) -> torch.Tensor:
    """Unscaled float64 rows from the documented counter (block, direction, compartment, step) and key."""
    per = ref.ELEMENTS_PER_BLOCK[distribution]
    nblocks, directions = -(-size // per), np.asarray(directions, np.uint64)
    counter = np.empty((len(directions), nblocks, 4), np.uint32)
    counter[..., 0], counter[..., 1] = np.arange(nblocks, dtype=np.uint64), directions[:, None]
    counter[..., 2], counter[..., 3] = compartment, step
    z = ref.TRANSFORMS[distribution](ref.philox4x32(counter, ref.key_of(seed)))
    return torch.from_numpy(z.reshape(len(directions), -1)[:, :size].astype(np.float64))


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.detach().cpu().double() - want).norm() / want.norm())


def tiny_dataset(shape, n_train, n_val) -> Dataset:
    gen = torch.Generator().manual_seed(0)
    centres, y = torch.rand(10, *shape, generator=gen), torch.randint(0, 10, (n_train + n_val,), generator=gen)
    x = centres[y] + 0.3 * torch.randn(len(y), *shape, generator=gen)
    tx, ty, vx, vy = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
    return Dataset(tx, ty, vx, vy, vx, vy, "synthetic", tuple("0123456789"))


def reference_training(model, ds, steps, lr, dim=None, seed=0, augment=None):
    """``steps`` steps of ``train``'s batches on the CPU in float64: theta -= lr g (SGD) or lr P_t P_t^T g (RBD,
    ±1 bases of step t scaled by 1/sqrt(D)). Leaves theta in ``model``; returns the last step and gradient."""
    gen = torch.Generator().manual_seed(seed)

    def stream():  # rbdlib.train's order: a shuffle per epoch, then the augmentation of each batch
        while True:
            for xb, yb in batches(ds.train_x, ds.train_y, 32, generator=gen):
                yield (xb if augment is None else augment(xb, gen)), yb

    theta = parameters_to_vector(model.parameters()).detach().double()
    size = theta.numel()
    for t, (xb, yb) in zip(range(steps), stream()):
        vector_to_parameters(theta.float(), model.parameters())
        model.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        g = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).double()
        if dim is None:
            step = g
        else:
            P = reference_rows(0, t, 0, range(dim), size, "rademacher") / math.sqrt(size)
            step = P.T @ (P @ g)
        theta -= lr * step
    vector_to_parameters(theta.float(), model.parameters())
    return step, g


# ---------------------------------------------------------------- notebook 06: the bases on the device
@pytest.mark.parametrize("device", DEVICES)
def test_philox_words(device):
    """06 cell 8 (NumPy words on the CPU) and cell 25 (an int64 CUDA tensor): bit-identical to pure Python."""
    known = [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
             ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD))]
    ctr = np.random.default_rng(0).integers(0, 2**32, (100_000, 4), dtype=np.uint64).astype(np.uint32)
    key = np.array([0xA4093822, 0x299F31D0], np.uint32)
    for counters, k, expected in [(ctr, key, None)] + [(np.array([x], np.uint32), np.array(k, np.uint32), [e])
                                                       for x, k, e in known]:
        if device == "cuda":  # the notebook's call: uint32 values in an int64 tensor; words come back as int32 bits
            words = rbdlib.philox4x32(torch.from_numpy(counters.astype(np.int64)).to(device), k)
            assert words.is_cuda and words.shape == counters.shape
            words = words.cpu().numpy().astype(np.uint32)
        else:
            words = rbdlib.philox4x32(counters, k)
        if expected is None:  # the first 200 counters in pure Python, all 100,000 against the NumPy reference
            expected = [philox_block(tuple(map(int, c)), tuple(map(int, k))) for c in counters[:200]]
            np.testing.assert_array_equal(words, ref.philox4x32(counters, k))
        np.testing.assert_array_equal(words[:len(expected)], np.array(expected, np.uint32))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("distribution", DISTS)
def test_materialize_rows(device, distribution):
    """06 cell 25: rows made on the device. Uniform and ±1 rows are bit-identical to the reference everywhere (as
    are normal rows on the CPU); CUDA normals agree to float32 rounding (rtol 1e-6)."""
    b = rbdlib.RandomBases(seed=7, step=3, compartment=1, dim=16, size=10_007, distribution=distribution)
    rows = b.materialize(device=torch.device(device))
    assert rows.device.type == device and rows.dtype == torch.float32 and rows.shape == (16, 10_007)
    want = reference_rows(7, 3, 1, range(16), 10_007, distribution).float() * b.scale
    if distribution == "normal" and device == "cuda":
        torch.testing.assert_close(rows.cpu(), want, rtol=1e-6, atol=1e-9)
    else:
        assert torch.equal(rows.cpu(), want)
    assert torch.equal(b.materialize([5], device=device).cpu(), rows[5:6].cpu())  # one row, as in notebook 01


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("distribution", DISTS)
def test_project_then_expand(device, distribution):
    """06 cell 26 (and 02 cell 22): ``bg.expand(bg.project(g))`` with g on the device; D = 10,007 spans two
    project tiles and ends inside a Philox block. Checked against P in float64 with a relative error of 1e-5."""
    size, dim = 10_007, 33
    g = torch.randn(size, generator=torch.Generator().manual_seed(1))
    b = rbdlib.RandomBases(0, 2, 0, dim, size, distribution)
    c = b.project(g.to(device))
    delta = b.expand(c)
    assert c.device.type == delta.device.type == device and c.dtype == delta.dtype == torch.float32
    assert c.shape == (dim,) and delta.shape == (size,)
    P = reference_rows(0, 2, 0, range(dim), size, distribution) * b.scale
    assert rel_err(c, P @ g.double()) < REL
    assert rel_err(delta, P.T @ c.cpu().double()) < REL


# ---------------------------------------------------------------- notebook 01: fit on the device
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ["sgd", "rbd"])
def test_fit_on_the_device(device, method):
    """01 cells 13-14: the optimizer is built on the CPU, ``train(..., device=device)`` moves the model, batches
    and evaluation there. 4 steps over 2 epochs of 3 batches: weights within 1e-5 of the float64 reference."""
    ds = tiny_dataset((1, 6, 6), 96, 40)
    model = fc(ds.in_shape, seed=0)
    opt = (torch.optim.SGD(model.parameters(), lr=0.25) if method == "sgd"
           else rbdlib.RBD(model.parameters(), lr=0.5, dim=250, seed=0, distribution="rademacher"))
    history = rbdlib.fit(model, opt, ds, epochs=2, max_steps=4, eval_every=2, eval_at_start=True, device=device,
                         progress=False)
    assert all(p.device.type == device for p in model.parameters())
    assert history["step"] == [0, 2, 4] and history.last["epoch"] == round(4 / 3, 4)
    twin = fc(ds.in_shape, seed=0)
    start = parameters_to_vector(twin.parameters()).detach().clone()
    step, g = reference_training(twin, ds, 4, 0.25 if method == "sgd" else 0.5, None if method == "sgd" else 250)
    got, want = parameters_to_vector(model.parameters()).cpu(), parameters_to_vector(twin.parameters())
    assert (got - want).abs().max() < 1e-5 < (want - start).abs().max()  # and the steps moved the weights
    val_loss, val_acc = rbdlib.evaluate(twin, ds.val_x, ds.val_y)
    assert abs(history.last["val_loss"] - val_loss) < 1e-5 and abs(history.last["val_acc"] - val_acc) <= 1 / 40
    if method == "rbd":
        assert opt.steps == 4 and opt.last_coords[0].device.type == device
        assert abs(opt.last_cosine - float(step @ g / (step.norm() * g.norm()))) < 1e-4


# ---------------------------------------------------------------- notebook 08: the experiment command
@pytest.mark.parametrize("device", DEVICES)
def test_experiment_command_on_the_device(device, tmp_path, monkeypatch):
    """08 cell 11: ``experiments.main`` (here with ``--device`` given; on Colab its default is cuda) trains SGD and
    ±1 RBD with the paper's augmentation, checkpoints after the epoch and deletes the checkpoint when done. The
    data set is a synthetic stand-in for Fashion-MNIST; the weights must match the float64 reference to 1e-5."""
    ds = tiny_dataset((1, 28, 28), 512, 256)
    monkeypatch.setattr(experiments.datasets, "load_dataset", lambda name, root=None: ds)
    trained, real_train = [], experiments.train
    monkeypatch.setattr(experiments, "train", lambda model, opt, *a, **k: trained.append((model, opt))
                        or real_train(model, opt, *a, **k))
    out = tmp_path / "live"
    live = experiments.main(["fc-fmnist", "--methods", "sgd", "rbd:distribution=rademacher", "--epochs", "1",
                             "--max-steps", "3", "--out", str(out), "--smoke", "--device", device])
    assert [r["method"] for r in live["runs"]] == ["sgd", "rbd:distribution=rademacher"]
    assert not list(out.rglob("checkpoint.pt"))
    for run, (model, opt), lr, dim in zip(live["runs"], trained, (0.25, 0.5), (None, 20)):
        assert run["status"] == "complete" and [r["step"] for r in run["records"]] == [0, 3]
        assert all(p.device.type == device for p in model.parameters())
        assert isinstance(opt, torch.optim.SGD) if dim is None else (opt.dims, opt.steps) == ([dim], 3)
        twin = fc((1, 28, 28), seed=0)
        start = parameters_to_vector(twin.parameters()).detach().clone()
        reference_training(twin, ds, 3, lr, dim, augment=augment_mnist)
        got, want = parameters_to_vector(model.parameters()).cpu(), parameters_to_vector(twin.parameters())
        assert (got - want).abs().max() < 1e-5 < (want - start).abs().max()
        assert abs(run["records"][-1]["val_loss"] - rbdlib.evaluate(twin, ds.val_x, ds.val_y)[0]) < 1e-5


# ---------------------------------------------------------------- what is not meant to work
@pytest.mark.parametrize("device", DEVICES)
def test_refused_inputs_fail_clearly(device, monkeypatch):
    """What a GPU user may try and the kernels do not take (they compute in float32 on cpu or cuda tensors):
    each is refused with a message that names the fix, before anything is computed or changed."""
    b = rbdlib.RandomBases(0, 0, 0, 4, 100)
    with pytest.raises(TypeError, match=r"float32.*\.float\(\)"):
        b.project(torch.zeros(100, dtype=torch.float64, device=device))
    half = torch.nn.Linear(3, 2).to(device).half()
    with pytest.raises(TypeError, match=r"float32.*model\.float\(\)"):
        rbdlib.RBD(half.parameters(), lr=0.1, dim=2)
    with pytest.raises(TypeError, match=r"float32.*model\.float\(\)"):
        rbdlib.FixedSubspace(half, dim=2)
    with pytest.raises(ValueError, match="cpu or cuda"):
        b.materialize(device="meta")
    with pytest.raises(TypeError, match="uint32"):  # int64 counters are the CUDA form; on the CPU NumPy uint32
        rbdlib.philox4x32(torch.zeros(1, 4, dtype=torch.int64), np.zeros(2, np.uint32))
    monkeypatch.setattr(rbdlib.kernels.cuda, "available", lambda: False)  # torch sees a GPU, CuPy does not
    with pytest.raises(RuntimeError, match=r"CuPy.*rbdlib\[gpu\]"):
        b.materialize(device="cuda")
    if device == "cuda":
        with pytest.raises(RuntimeError, match=r"CuPy.*rbdlib\[gpu\]"):  # why notebook 01 keeps RBD on the CPU
            b.project(torch.zeros(100, device=device))
        with pytest.raises(ValueError, match="one device"):
            rbdlib.RBD([torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(3, device=device))],
                       lr=0.1, dim=2)
