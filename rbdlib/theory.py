"""What the notebooks predict about a step, and how they measure it: the cosine between the step and the gradient.

One RBD step Delta = P P^T g with d directions of +-1 / sqrt(D) keeps a cosine sqrt(d / (D + d - 1)) with g
(notebook 05, eq. 2, :func:`rbdlib.compartments.predicted_cosine` for compartments). With memory (notebook 09):

- a heavy-ball buffer b = sum_j mu^j Delta_{t-j} over independent draws around a gradient that stays the same
  has E<b, g> = s^2 d |g|^2 / (1 - mu) and a spread that adds up in squares, so its cosine is at most
  :func:`momentum_cosine`, sqrt((1 + mu) / (1 - mu)) times one step's (4.36x at mu = 0.9);
- momentum kept in the coordinates is carried onto a new basis by m <- P_new^T P_old m, which keeps about
  :func:`carried_fraction` = sqrt(d / D) of its length: with a re-draw every step almost nothing is carried.

>>> round(momentum_cosine(250, 101_770, 0.0), 4), round(momentum_cosine(250, 101_770, 0.9), 4)
(0.0495, 0.2158)
>>> round(carried_fraction(250, 101_770), 4)
0.0496
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .data import batches


def momentum_cosine(dim: int, size: int, momentum: float = 0.0) -> float:
    """The cosine of one +-1 RBD step with the gradient, times sqrt((1 + mu) / (1 - mu)) for a heavy-ball
    buffer of momentum mu (an upper bound: it assumes the gradient does not change)."""
    return math.sqrt(dim / (size + dim - 1)) * math.sqrt((1 + momentum) / (1 - momentum))


def carried_fraction(dim: int, size: int) -> float:
    """The expected share of the length of coordinate momentum m that P_new^T P_old m keeps, for independent
    bases of ``dim`` directions over ``size`` parameters with entries of variance 1 / size: sqrt(dim / size)."""
    return math.sqrt(dim / size)


def _flat(model, grad: bool = False) -> torch.Tensor:
    return torch.cat([(p.grad if grad else p.detach()).reshape(-1) for p in model.parameters()])


def measure_cosines(model, optimizer, data, steps: int, every: int = 10, reference: int = 6000,
                    batch_size: int = 32, seed: int = 0) -> tuple[list[float], list[float]]:
    """Train ``steps`` steps and return (the cosine between each step and its mini-batch gradient, the cosine
    between the step and the gradient of the first ``reference`` training images, every ``every`` steps): the
    second stands for the full gradient, whose descent the step is for. The step is the change of the weights,
    so every rule and learning rate is measured as it moves the model."""
    full_x, full_y = data.train_x[:reference], data.train_y[:reference]
    stream = batches(data.train_x, data.train_y, batch_size, generator=torch.Generator().manual_seed(seed))
    on_batch, on_full = [], []
    for t, (x, y) in zip(range(steps), stream):
        if t % every == 0:
            optimizer.zero_grad()
            F.cross_entropy(model(full_x), full_y).backward()
            g_full = _flat(model, grad=True)
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        g, before = _flat(model, grad=True), _flat(model)
        optimizer.step()
        step = before - _flat(model)
        on_batch.append(float(step @ g / (step.norm() * g.norm())))
        if t % every == 0:
            on_full.append(float(step @ g_full / (step.norm() * g_full.norm())))
    return on_batch, on_full
