"""rbdlib.train: learning on real data, determinism, closures for NES-style optimizers, plain-data history."""

import doctest
import json
from pathlib import Path

import pytest
import torch

from rbdlib import train as train_module
from rbdlib.data import augment_mnist, load_dataset
from rbdlib.models import fc
from rbdlib.train import History, evaluate, train

FMNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def one_thread():
    """Batches of 32 gain nothing from intra-op threads; on a busy machine the thread hand-offs dominate."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def fmnist():
    if not FMNIST.is_dir():
        pytest.skip("Debian package dataset-fashion-mnist not installed")
    return load_dataset("fashion-mnist", root=FMNIST, download=False)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_sgd_learns_fashion_mnist(fmnist):
    model = fc(seed=0)
    history = train(model, torch.optim.SGD(model.parameters(), lr=0.1), fmnist, max_steps=300,
                    eval_every=100, eval_at_start=True, progress=False)  # fmt: skip
    start, end = history.records[0], history.last
    assert history["step"] == [0, 100, 200, 300]
    assert start["train_loss"] is None and start["val_acc"] < 0.3
    assert end["val_loss"] < start["val_loss"] - 1.0
    assert history.records[3]["train_loss"] < history.records[1]["train_loss"]
    assert end["val_acc"] > 0.65  # chance is 0.1
    assert end["epoch"] == round(300 / 1563, 4)
    assert evaluate(model, fmnist.val_x, fmnist.val_y) == (end["val_loss"], end["val_acc"])


def run(data, seed, **kwargs):
    model = fc(data.in_shape, seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    return train(model, optimizer, data, augment=augment_mnist, seed=seed, progress=False, **kwargs)


def without_time(history):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history.records]


def test_same_seed_same_history(digits):
    a, b, c = run(digits, 0, epochs=2), run(digits, 0, epochs=2), run(digits, 1, epochs=2)
    assert without_time(a) == without_time(b) and a.config == b.config
    assert without_time(a) != without_time(c)
    assert a["epoch"] == [0.0, 1.0, 2.0] and a["step"] == [0, 34, 68]  # ceil(1079 / 32) = 34 batches per epoch


def test_history_is_json_serialisable(digits):
    history = run(digits, 0, max_steps=5)
    text = json.dumps(history.to_dict())
    assert History.from_dict(json.loads(text)) == history
    assert set(history.last) == {"epoch", "step", "train_loss", "val_loss", "val_acc", "seconds"}


class RandomSearch(torch.optim.Optimizer):
    """A zeroth-order optimizer in the NES mould: ``step(closure)`` evaluates several perturbations."""

    needs_closure = True

    def __init__(self, params, offspring=4, sigma=0.01):
        super().__init__(params, dict(offspring=offspring, sigma=sigma))
        self.calls = 0

    @torch.no_grad()
    def step(self, closure):
        params = [p for group in self.param_groups for p in group["params"]]
        best, best_noise = closure().item(), None
        self.calls += 1
        for _ in range(self.defaults["offspring"]):
            noise = [self.defaults["sigma"] * torch.randn_like(p) for p in params]
            for p, n in zip(params, noise, strict=True):
                p.add_(n)
            loss = closure().item()
            self.calls += 1
            for p, n in zip(params, noise, strict=True):
                p.sub_(n)
            if loss < best:
                best, best_noise = loss, noise
        if best_noise is not None:
            for p, n in zip(params, best_noise, strict=True):
                p.add_(n)
        return best


def test_closure_optimizer_gets_a_fresh_batch_per_call_and_no_gradients(digits):
    model = fc(digits.in_shape, seed=0)
    optimizer = RandomSearch(model.parameters(), offspring=4)
    seen = []
    original = train_module._BatchStream.next

    def spy(stream):
        batch = original(stream)
        seen.append(batch[1].clone())
        return batch

    train_module._BatchStream.next = spy
    try:
        history = train(model, optimizer, digits, max_steps=3, eval_every=1, progress=False)
    finally:
        train_module._BatchStream.next = original
    assert optimizer.calls == len(seen) == 15  # 3 steps x (1 + 4 offspring), one batch each
    assert len({tuple(s.tolist()) for s in seen}) == 15
    assert history["step"] == [0, 1, 2, 3] and history.config["closure"] is True
    assert history.records[1]["epoch"] == round(5 / 34, 4)  # epochs count batches, not steps
    assert all(p.grad is None for p in model.parameters())


def test_lbfgs_gets_gradients_through_the_closure(digits):
    model = fc(digits.in_shape, seed=0)
    optimizer = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=4)
    history = train(model, optimizer, digits, max_steps=10, eval_every=5, closure_optimizer=True,
                    eval_at_start=True, progress=False)  # fmt: skip
    assert history.last["val_loss"] < history.records[0]["val_loss"]


def test_callback_can_stop_training_and_divergence_stops_it(digits):
    model = fc(digits.in_shape, seed=0)
    history = train(model, torch.optim.SGD(model.parameters(), lr=0.1), digits, epochs=5, eval_every=3,
                    callback=lambda record, model: record["step"] >= 6, progress=False)  # fmt: skip
    assert history["step"] == [0, 3, 6] and history.config["stopped_by_callback"]

    model = fc(digits.in_shape, seed=0)
    history = train(model, torch.optim.SGD(model.parameters(), lr=1e30), digits, epochs=1, progress=False)
    assert history.config["diverged"] and history.last["step"] < 34


def test_progress_bar_is_quiet_when_not_interactive(digits, capsys):
    run(digits, 0, max_steps=3)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_helpful_errors(digits):
    model = fc(digits.in_shape)
    with pytest.raises(TypeError, match="needs a Dataset"):
        train(model, torch.optim.SGD(model.parameters(), lr=0.1), (digits.train_x, digits.train_y))
    with pytest.raises(ValueError, match="eval_every must be a positive"):
        train(model, torch.optim.SGD(model.parameters(), lr=0.1), digits, eval_every=0)


def test_docstring_examples():
    assert doctest.testmod(train_module).failed == 0
