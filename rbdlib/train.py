"""One small training loop, shared by the command line and the notebooks.

It works with any ``torch.optim`` optimizer, with rbdlib optimizers that take ``step()`` after
``loss.backward()`` (RBD, FPD), and with optimizers that set ``needs_closure = True`` (NES): those get a
closure that draws a *fresh* mini-batch on every call and returns its loss, so each offspring sees its
own batch (an optimizer with ``shared_batch = True`` gets one batch per step for all its calls).
The closure back-propagates only when gradients are enabled, so a zeroth-order optimizer
that calls it under ``torch.no_grad()`` (as ``step`` methods usually run) pays for forward passes only,
while ``torch.optim.LBFGS`` (which re-enables gradients) gets its gradients.

>>> from rbdlib.data import load_dataset
>>> from rbdlib.models import fc
>>> ds = load_dataset("digits")
>>> model = fc(ds.in_shape, seed=0)
>>> history = train(model, torch.optim.SGD(model.parameters(), lr=0.1), ds, epochs=2, progress=False)
>>> [r["epoch"] for r in history.records], history.records[-1]["val_acc"] > 0.5
([0.0, 1.0, 2.0], True)
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import checks
from ._progress import bar as progress_bar
from .data import batches

__all__ = ["History", "train", "evaluate"]

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass
class History:
    """What a run produced, as plain JSON-friendly data.

    ``records`` holds one dict per evaluation: ``epoch`` (fractional, in mini-batches seen / batches per
    epoch), ``step`` (optimizer steps), ``train_loss`` (mean since the previous record), ``val_loss``,
    ``val_acc`` and ``seconds`` since the start. ``config`` describes the run.

    >>> h = History([{"step": 1, "val_acc": 0.5}, {"step": 2, "val_acc": 0.75}])
    >>> h["val_acc"], h.last["step"], History.from_dict(h.to_dict()) == h
    ([0.5, 0.75], 2, True)
    """

    records: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> list[Any]:
        """The column ``key`` across all records, e.g. ``history["val_acc"]``."""
        return [record.get(key) for record in self.records]

    def __len__(self) -> int:
        return len(self.records)

    @property
    def last(self) -> dict[str, Any] | None:
        """The final record, or None before any evaluation."""
        return self.records[-1] if self.records else None

    def to_dict(self) -> dict[str, Any]:
        """A plain dict for ``json.dump``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        """Inverse of ``to_dict``."""
        return cls(list(data.get("records", [])), dict(data.get("config", {})))


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 5000, device: str | None = None
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)``, in eval mode, in batches.

    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    >>> loss, acc = evaluate(model, torch.zeros(10, 1, 2, 2), torch.zeros(10, dtype=torch.long))
    >>> 0.0 <= acc <= 1.0
    True
    """
    if len(x) == 0:
        raise ValueError("evaluate got an empty set; pass at least one example (empty validation split?).")
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    total_loss, correct = 0.0, 0
    try:
        for start in range(0, len(x), batch_size):
            xb, yb = x[start : start + batch_size].to(device), y[start : start + batch_size].to(device)
            logits = model(xb)
            total_loss += F.cross_entropy(logits, yb, reduction="sum").item()
            correct += (logits.argmax(1) == yb).sum().item()
    finally:
        model.train(was_training)
    return total_loss / len(x), correct / len(x)


class _BatchStream:
    """Endless mini-batches, reshuffled every epoch; counts batches so epochs can be fractional."""

    def __init__(self, x, y, batch_size: int, generator: torch.Generator, augment: Augment | None, device):
        self.x, self.y, self.batch_size = x, y, batch_size
        self.generator, self.augment, self.device = generator, augment, device
        self.per_epoch = math.ceil(len(x) / batch_size)
        self.seen = 0
        self._batches = iter(())

    @property
    def epoch(self) -> float:
        return self.seen / self.per_epoch

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        batch = next(self._batches, None)
        if batch is None:
            self._batches = batches(self.x, self.y, self.batch_size, shuffle=True, generator=self.generator)
            batch = next(self._batches)
        self.seen += 1
        xb, yb = batch[0].to(self.device), batch[1].to(self.device)
        if self.augment is not None:
            xb = self.augment(xb, self.generator)
        return xb, yb


def _gradient_step(model: nn.Module, optimizer, stream: _BatchStream) -> float:
    xb, yb = stream.next()
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(xb), yb)
    loss.backward()
    optimizer.step()
    return loss.item()


def _closure_step(model: nn.Module, optimizer, stream: _BatchStream) -> float:
    losses: list[float] = []
    shared = stream.next() if getattr(optimizer, "shared_batch", False) else None

    def closure() -> torch.Tensor:
        xb, yb = shared or stream.next()  # a new mini-batch on every call, unless the optimizer shares one
        loss = F.cross_entropy(model(xb), yb)
        if torch.is_grad_enabled():
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        losses.append(loss.item())
        return loss

    optimizer.step(closure)
    if not losses:
        raise RuntimeError(f"{type(optimizer).__name__}.step(closure) never called the closure.")
    return sum(losses) / len(losses)


def _interactive() -> bool:
    """True in a terminal or a Jupyter kernel: where a progress bar is worth drawing."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is not None and "IPKernelApp" in getattr(shell, "config", {}):
        return True
    return sys.stdout.isatty()


def _check_arguments(data, epochs, batch_size: int, eval_every, max_steps) -> None:
    """The training loop's arguments, checked before anything runs (the messages name the argument)."""
    for attr in ("train_x", "train_y", "val_x", "val_y"):
        if not hasattr(data, attr):
            raise TypeError(f"train needs a Dataset (train_x, train_y, val_x, val_y), not {type(data)}")
    for name, value, low, what in (("eval_every", eval_every, 1, "a positive step count or None (each epoch)"),
                                   ("batch_size", batch_size, 1, "a positive int"),
                                   ("max_steps", max_steps, 0, "a step count >= 0 or None (no limit)")):
        if not ((value is None and "None" in what) or (checks.is_int(value) and value >= low)):
            raise ValueError(f"{name} must be {what}, not {value!r}")
    if not checks.is_real(epochs) or not 0 < epochs < math.inf:
        raise ValueError(f"epochs must be a positive finite number of passes (fractions allowed), not {epochs!r}")


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: Any,
    epochs: float = 1,
    *,
    batch_size: int = 32,
    augment: Augment | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    max_steps: int | None = None,
    eval_every: int | None = None,
    eval_at_start: bool = True,
    eval_batch_size: int = 5000,
    callback: Callable[[dict[str, Any], nn.Module], bool | None] | None = None,
    closure_optimizer: bool | None = None,
    progress: bool | None = None,
) -> History:
    """Train ``model`` on ``data.train_x/train_y`` with cross-entropy on logits; validate on ``val_x/val_y``.

    Args:
        data: a ``rbdlib.data.Dataset`` (or anything with ``train_x, train_y, val_x, val_y``).
        epochs: passes over the training set (fractions allowed); one epoch is ``ceil(N / batch_size)``
            mini-batches, however many optimizer steps consumed them (an NES step consumes many).

    Keyword-only, by theme. The batches: ``batch_size``; ``augment(x, generator) -> x`` applied to every
    training batch, e.g. ``augment_mnist``; ``seed`` seeds the shuffling and augmentation (the same seed, model and
    optimizer give the same run); ``device``. How long: ``max_steps`` stops after this many optimizer steps even
    if ``epochs`` are not done. When to evaluate: every ``eval_every`` optimizer steps (default: at the end of
    every epoch), and before the first step when ``eval_at_start`` (default, so every history starts from a
    measured record of the initial weights: epoch 0, ``train_loss`` None), in batches of ``eval_batch_size``;
    ``callback(record, model)`` after each evaluation, which returns True to stop training. How to step:
    ``closure_optimizer`` calls ``optimizer.step(closure)`` (default ``getattr(optimizer, "needs_closure")``).
    ``progress``: draw a tqdm bar; default only in a terminal or notebook.

    Training stops early if the training loss becomes NaN or infinite, or the optimizer refuses a step for
    a non-finite gradient (``FloatingPointError``, as RBD and NES do): ``config["diverged"]`` is then True.

    >>> from rbdlib.data import load_dataset, augment_mnist
    >>> ds = load_dataset("digits")
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    >>> h = train(model, torch.optim.SGD(model.parameters(), lr=0.1), ds, max_steps=20, eval_every=10,
    ...           augment=augment_mnist, progress=False)
    >>> h["step"]                # the first record measures the initial weights
    [0, 10, 20]
    """
    _check_arguments(data, epochs, batch_size, eval_every, max_steps)
    device = torch.device(device)
    model.to(device)
    model.train()
    generator = torch.Generator().manual_seed(seed)
    stream = _BatchStream(data.train_x, data.train_y, batch_size, generator, augment, device)
    use_closure = getattr(optimizer, "needs_closure", False) if closure_optimizer is None else closure_optimizer
    step_once = _closure_step if use_closure else _gradient_step

    history = History(
        config=dict(
            model=type(model).__name__, optimizer=type(optimizer).__name__,
            dataset=getattr(data, "name", None), epochs=epochs, batch_size=batch_size,
            augment=getattr(augment, "__name__", None), seed=seed,
            eval_every=eval_every, max_steps=max_steps, closure=bool(use_closure),
            batches_per_epoch=stream.per_epoch, diverged=False, stopped_by_callback=False,
        )
    )  # fmt: skip
    start, step, losses = time.perf_counter(), 0, []

    def record() -> dict[str, Any]:
        val_loss, val_acc = (None, None)
        if len(data.val_x):
            val_loss, val_acc = evaluate(model, data.val_x, data.val_y, eval_batch_size, device)
            model.train()
        rec = dict(
            epoch=round(stream.epoch, 4), step=step, train_loss=sum(losses) / len(losses) if losses else None,
            val_loss=val_loss, val_acc=val_acc, seconds=round(time.perf_counter() - start, 3),
        )  # fmt: skip
        losses.clear()
        history.records.append(rec)
        bar.set_postfix(loss=rec["train_loss"], val_acc=val_acc)
        return rec

    limits = [n for n in (None if use_closure else math.ceil(epochs * stream.per_epoch), max_steps) if n]
    total = min(limits) if limits else None  # an NES step consumes an unknown number of batches
    show = _interactive() if progress is None else progress
    with progress_bar(total=total, disable=not show, unit="step", desc="train") as bar:
        if eval_at_start:
            record()
        while stream.epoch < epochs and (max_steps is None or step < max_steps):
            epoch_before = stream.seen // stream.per_epoch
            try:
                loss = step_once(model, optimizer, stream)
            except FloatingPointError:  # the optimizer refused a non-finite gradient or loss (RBD, NES), unchanged
                history.config["diverged"] = True
                break
            step += 1
            losses.append(loss)
            bar.update(1)
            if not math.isfinite(loss):
                history.config["diverged"] = True
                break
            due = step % eval_every == 0 if eval_every else stream.seen // stream.per_epoch > epoch_before
            if due:
                rec = record()
                if callback is not None and callback(rec, model):
                    history.config["stopped_by_callback"] = True
                    break
        if not history.records or history.last["step"] != step:
            record()
    return history
