"""What the notebooks predict about a step, and how they measure it: the cosine between the step and the gradient.

One RBD step Delta = P P^T g with d directions of +-1 / sqrt(D) keeps a cosine sqrt(d / (D + d - 1)) with g
(notebook 05, eq. 2, :func:`predicted_cosine` for compartments, and :func:`expected_step` for the length of the
step). With memory (notebook 09):

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

from . import distributions
from .data import batches


def momentum_cosine(dim: int, size: int, momentum: float = 0.0) -> float:
    """The cosine of one +-1 RBD step with the gradient, times sqrt((1 + mu) / (1 - mu)) for a heavy-ball
    buffer of momentum mu (an upper bound: it assumes the gradient does not change)."""
    return math.sqrt(dim / (size + dim - 1)) * math.sqrt((1 + momentum) / (1 - momentum))


def carried_fraction(dim: int, size: int) -> float:
    """The expected share of the length of coordinate momentum m that P_new^T P_old m keeps, for independent
    bases of ``dim`` directions over ``size`` parameters with entries of variance 1 / size: sqrt(dim / size)."""
    return math.sqrt(dim / size)


# Fourth moment E[z^4] of a unit-variance basis entry (normal 3, rademacher 1, uniform 9/5; declared in
# rbdlib/distributions.py). The cosine is scale-free, so only this moment tells the distributions apart.
FOURTH_MOMENT = {d.name: d.fourth_moment for d in distributions.ALL}


def predicted_cosine(grads, dims: list[int], distribution: str = "normal") -> tuple[float, float]:
    """Mean and sd of cos(RBD step, gradient) over basis draws, for compartment gradients ``grads``
    (one flat tensor g_k per compartment) with ``dims[k]`` directions each: notebook 05's equation (2)
    and its first-order (delta-method) spread.

    With w_k = |g_k|^2, q_k = sum_i g_ki^4, D_k = g_k.numel(), mu = E[z^4] of a unit-variance entry and
    m_k = D_k + d_k + mu - 2 (exactly E|P_k P_k^T g_k|^2 / (s^4 d_k w_k)), the step has
    <Delta, g> = sum_k u_k with u_k = |P_k^T g_k|^2 / s^2, E u_k = d_k w_k and
    Var u_k = d_k (2 w_k^2 + (mu - 3) q_k), and |Delta|^2 ~ s^2 sum_k m_k u_k. Then

        cos ~ U / (|g| sqrt(M)),   U = sum_k d_k w_k,   M = sum_k d_k m_k w_k               (eq. 2)
        sd(cos) / cos ~ sqrt( sum_k (1/U - m_k / (2 M))^2 Var u_k ).

    Neglected: the spread of |Delta_k|^2 at fixed coordinates (relative order d_k / D_k) and the
    second-order bias of the mean (about -1 / (4 sum_k d_k)). One normal compartment gives
    cos ~ sqrt(d / (D + d + 1)) and sd / cos ~ 1 / sqrt(2 d):

    >>> import torch
    >>> mean, sd = predicted_cosine([torch.ones(10_000)], [50])
    >>> round(mean, 4), round(sd / mean, 4), round(1 / (2 * 50) ** 0.5, 4)
    (0.0705, 0.1, 0.1)
    """
    mu, w, m = _moments(grads, dims, distribution)
    q = [float(g.double().pow(4).sum()) for g in grads]
    U = sum(d * wk for d, wk in zip(dims, w))
    M = sum(d * mk * wk for d, mk, wk in zip(dims, m, w))
    if U == 0:
        return float("nan"), float("nan")
    mean = U / (math.sqrt(M) * math.sqrt(sum(w)))
    rel_var = sum((1 / U - mk / (2 * M)) ** 2 * d * (2 * wk * wk + (mu - 3) * qk)
                  for d, mk, wk, qk in zip(dims, m, w, q))
    return mean, mean * math.sqrt(rel_var)


def expected_step(grads, dims: list[int], lr: float, scale: float, distribution: str = "normal") -> tuple[float, float]:
    """(length along the gradient, RMS length) of the applied step lr * Delta, in expectation over basis draws:
    ``lr * E<Delta, g> / |g| = lr s^2 sum_k d_k w_k / |g|`` and ``lr sqrt(E|Delta|^2) = lr s^2 sqrt(sum_k d_k m_k w_k)``
    with the symbols of :func:`predicted_cosine` and ``scale`` s (the optimizer's ``opt.scale``).

    Sharing d out over K compartments cuts the first K-fold; multiplying lr by K restores it (and, for a
    gradient spread evenly over equal compartments, the length too):

    >>> import torch
    >>> g = [torch.ones(500), torch.ones(500)]
    >>> one = expected_step([torch.cat(g)], [8], lr=0.5, scale=1000 ** -0.5)
    >>> shared = expected_step(g, [4, 4], lr=0.5, scale=1000 ** -0.5)
    >>> restored = expected_step(g, [4, 4], lr=1.0, scale=1000 ** -0.5)
    >>> round(shared[0] / one[0], 3), round(restored[0] / one[0], 3), round(restored[1] / one[1], 3)
    (0.5, 1.0, 1.0)
    """
    _, w, m = _moments(grads, dims, distribution)
    along = lr * scale ** 2 * sum(d * wk for d, wk in zip(dims, w)) / math.sqrt(sum(w))
    length = lr * scale ** 2 * math.sqrt(sum(d * mk * wk for d, mk, wk in zip(dims, m, w)))
    return along, length


def _moments(grads, dims: list[int], distribution: str) -> tuple[float, list[float], list[float]]:
    """mu = E[z^4], w_k = |g_k|^2 and m_k = D_k + d_k + mu - 2 of :func:`predicted_cosine`, inputs checked."""
    distributions.check(distribution)
    if len(grads) != len(dims):
        raise ValueError(f"got {len(grads)} compartment gradients but {len(dims)} dims; pass one of each")
    mu = FOURTH_MOMENT[distribution]
    w = [float(g.double().square().sum()) for g in grads]
    return mu, w, [g.numel() + d + mu - 2 for g, d in zip(grads, dims)]


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
