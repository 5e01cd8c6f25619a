"""The functional core of one RBD step: the few plain functions every path that moves parameters calls.

As ``torch.optim.SGD`` is a thin class over the function ``sgd()``, :class:`rbdlib.RBD` (and so FPD and
StaleFPD), :func:`rbdlib.replay` and both schemes of :class:`rbdlib.distributed.DistributedRBD` call these
functions, so an update rule written here is used by all of them. For every compartment k (its segments
of parameters listed in ``layout[k]`` as ``(i, a, b)``: elements a..b of parameter i, flattened)

    g_k     = [grad_i + wd theta_i]_(i, a, b) in k        (gradients: coupled weight decay)        (1)
    c_k     = P_k^T g_k                                   (project: what a worker sends)           (2)
    delta_k = P_k c_k                                     (expand)                                 (3)
    theta_i <- theta_i - lr_i s_i,   s = rule(delta)      (update)                                 (4)

with the rules (``mu`` the momentum, ``beta`` the ``adaptive`` option; every rule's state is zero before
its first step, so the first step of a rule is delta as in torch)

    plain        s = delta
    momentum     b <- mu b + delta;   s = b              (heavy ball: torch.optim.SGD's buffer convention)
    nesterov     b <- mu b + delta;   s = delta + mu b   (torch.optim.SGD's ``nesterov=True``)

``b`` is kept per parameter (``state[p]["momentum_buffer"]``, D numbers) with ``memory="parameters"``. With
``memory="coordinates"`` (Flora's compressed momentum, arXiv:2402.03293) it is kept as d_k coordinates m_k in
the basis it was last used with, and carried onto the new basis when the bases are re-drawn:

    m_k <- P_k^T (P_k' m_k)  (at a re-draw, P_k' the old basis);   m_k <- mu m_k + c_k;
    s_k = P_k m_k  (or P_k (c_k + mu m_k), Nesterov)                                                (5)

``adaptive`` (beta in (0, 1)) divides each compartment's coordinates by a running root mean square of them,
one number per compartment (see :func:`scale`), before the momentum:

    v_k <- beta v_k + (1 - beta) mean(c_k^2);   c_k <- c_k / (sqrt(v_k / (1 - beta^t)) + eps)      (6)

Between (2) and (3) a distributed scheme exchanges the coordinates; with independent bases (3) expands
the coordinates of all W workers at once, through one basis of W d_k directions. The state depends on the
coordinates only, so ranks that apply the same coordinates hold the same buffers bit for bit, and a replay
from the coordinate log rebuilds them.

>>> import torch
>>> from rbdlib.bases import RandomBases
>>> p = torch.zeros(3); p.grad = torch.ones(3)
>>> layout, bases = [[(0, 0, 3)]], [RandomBases(seed=0, step=0, compartment=0, dim=2, size=3)]
>>> coords = project(bases, gradients([p], layout))
>>> steps = update([p], layout, bases, coords, lrs=[0.1], state={}, rule=Rule(momentum=0.9))
>>> torch.equal(p, -0.1 * steps[0])
True
"""

from __future__ import annotations

import math

import torch

from .bases import RandomBases
from .conventions import check_grads, grad_of
from .options import PLAIN, Rule


def add(p: torch.Tensor, a: int, b: int, values: torch.Tensor, alpha: float) -> None:
    """p.flatten()[a:b] += alpha * values, in place, for any strides (channels_last, transposed leaves):
    a non-contiguous p is updated through a contiguous copy, element for element as a contiguous twin."""
    if p.is_contiguous():
        p.view(-1)[a:b].add_(values, alpha=alpha)
    else:
        flat = p.reshape(-1).clone()
        flat[a:b].add_(values, alpha=alpha)
        p.copy_(flat.view(p.shape))


def basis(plan: dict, steps: int, k: int, worker: int = 0, workers: int = 1) -> RandomBases:
    """The basis P_k of compartment k after ``steps`` steps, for ``plan`` (a dict with the keys seed, redraw,
    distribution, scale, dims, layout, as :meth:`rbdlib.RBD.config` gives them): re-drawn every ``redraw``
    steps (None: never). Worker w uses the directions w d_k ... (w+1) d_k - 1; ``workers`` > 1 takes the
    directions of that many workers from w on, as one basis."""
    step = 0 if plan["redraw"] is None else steps // plan["redraw"]
    dim = plan["dims"][k]
    return RandomBases(plan["seed"], step, k, dim * workers, sum(b - a for _, a, b in plan["layout"][k]),
                       plan["distribution"], plan["scale"], offset=worker * dim)


def bases(plan: dict, steps: int, worker: int = 0, workers: int = 1) -> list[RandomBases]:
    """:func:`basis` of every compartment."""
    return [basis(plan, steps, k, worker, workers) for k in range(len(plan["dims"]))]


def gradients(params: list[torch.Tensor], layout: list, weight_decay: float = 0.0,
              nonfinite: str = "raise", names: list[str] | None = None) -> list[torch.Tensor] | None:
    """Eq. (1): the flattened gradient of each compartment (zeros where :func:`rbdlib.conventions.grad_of` is None).

    ``weight_decay`` is coupled, as ``torch.optim.SGD``'s: wd theta joins the gradient of every parameter
    that has one, before projecting, so it is a term of the loss (wd/2 |theta|^2) that the random bases
    see like any other; the coordinates then carry it and replay needs no weight decay. Raises
    ``FloatingPointError`` on a NaN or inf gradient, or returns None when ``nonfinite="skip"``; a gradient
    of another shape, dtype or device is an error naming the parameter (``names``: their names, if known).
    """
    check_grads(params, names)
    grads = [None if grad_of(p) is None else p.grad.detach().reshape(-1) for p in params]
    if not all(bool(torch.isfinite(g).all()) for g in grads if g is not None):
        if nonfinite == "skip":
            return None
        raise FloatingPointError("a gradient holds NaN or inf; no parameter was changed "
                                 '(use nonfinite="skip" to skip such steps)')
    if weight_decay:
        grads = [g if g is None else g.add(p.detach().reshape(-1), alpha=weight_decay)
                 for g, p in zip(grads, params)]
    out = []
    for compartment in layout:
        parts = [grads[i][a:b] if grads[i] is not None else torch.zeros(b - a, device=params[i].device)
                 for i, a, b in compartment]
        out.append(torch.cat(parts) if len(parts) > 1 else parts[0].contiguous())
    return out


def project(bases: list[RandomBases], grads: list[torch.Tensor]) -> list[torch.Tensor]:
    """Eq. (2): c_k = P_k^T g_k for every compartment."""
    return [b.project(g) for b, g in zip(bases, grads, strict=True)]


def move(params: list[torch.Tensor], layout: list, vectors: list[torch.Tensor], alphas: list[float],
         frozen=()) -> None:
    """theta_i += alpha_i v over every segment of every compartment, skipping the parameters in ``frozen``
    (``vectors[k]`` is laid out as ``layout[k]``). No rule, no state: a plain displacement."""
    frozen = set(frozen)
    for compartment, v in zip(layout, vectors, strict=True):
        at = 0
        for i, a, b in compartment:
            if i not in frozen:
                add(params[i], a, b, v[at:at + b - a], alphas[i])
            at += b - a


def scale(kept: dict, c: torch.Tensor, beta: float, eps: float) -> torch.Tensor:
    """Eq. (6): c / (sqrt(v_hat) + eps), v the running mean of mean(c^2) (a Python float, float64).

    Why one number per compartment and not one per coordinate or per parameter, as Adam keeps: the bases are
    re-drawn, so coordinate i of one step and of the next are along unrelated directions, and given the
    gradient every coordinate has the same distribution (E c_i^2 = s^2 |g_k|^2, s the entry scale): a
    second moment per coordinate estimates the same number d_k times. Per parameter, the step's element j
    is d s^2 g_j plus noise of variance d s^4 |g|^2, so its second moment is mostly |g|^2 too, and costs D
    numbers. What the coordinates do tell across steps is the size of the compartment's gradient: this rule
    keeps that (8 bytes and a count per compartment) and makes the step scale-free, a per-layer adaptive
    learning rate with ``compartments="layer"`` (as LARS or Adam-mini share one rate per block).
    """
    v = beta * kept.get("second_moment", 0.0) + (1 - beta) * float(c.double().square().mean())
    t = kept.get("count", 0) + 1
    kept["second_moment"], kept["count"] = v, t
    return c * (1.0 / (math.sqrt(v / (1 - beta ** t)) + eps))


def carry(kept: dict, b: RandomBases) -> torch.Tensor:
    """Eq. (5)'s carry: the coordinate momentum m_k, moved onto the basis ``b`` if it was kept in another one
    (``kept["basis"]``: the (step, offset, dim) of its basis; the other fields are the configuration's)."""
    m, (step, offset, dim) = kept["momentum"], kept["basis"]
    if (step, offset, dim) == (b.step, b.offset, b.dim):
        return m
    old = RandomBases(b.seed, step, b.compartment, dim, b.size, b.distribution, b.scale, offset=offset)
    return b.project(old.expand(m))


def update(params: list[torch.Tensor], layout: list, bases: list[RandomBases], coords: list[torch.Tensor],
           lrs: list[float], frozen=(), state=None, rule: Rule = PLAIN,
           compartments: list[dict] | None = None) -> list[torch.Tensor]:
    """Eqs. (3)-(6): scale the coordinates, expand them and move every parameter by its rule's step.

    ``lrs`` holds one learning rate per parameter; parameters in ``frozen`` (no gradient this step) are
    left alone, buffers included, as torch skips a parameter without ``.grad``. ``state`` maps a parameter
    to its dict of state (an optimizer's ``self.state``), read and written by parameter-space momentum;
    ``compartments`` holds one dict of state per compartment, for the rules that keep it there. Returns the
    step s of every compartment, laid out as ``layout[k]`` (delta itself for the plain rule).
    """
    if rule.momentum and rule.memory == "parameters" and state is None:
        raise ValueError("momentum keeps a buffer per parameter: pass state (an optimizer's self.state, or {})")
    if rule.per_compartment and (compartments is None or len(compartments) != len(bases)):
        raise ValueError("this rule keeps state per compartment: pass compartments, one dict per compartment")
    mu = rule.momentum
    directions = []
    for k, (b, c) in enumerate(zip(bases, coords, strict=True)):
        if rule.adaptive:
            c = scale(compartments[k], c, rule.adaptive, rule.eps)
        if mu and rule.memory == "coordinates":
            kept = compartments[k]
            m = carry(kept, b).mul(mu).add_(c) if "momentum" in kept else c.clone()
            kept["momentum"], kept["basis"] = m, (b.step, b.offset, b.dim)
            c = c.add(m, alpha=mu) if rule.nesterov else m
        directions.append(b.expand(c))
    if not mu or rule.memory == "coordinates":
        move(params, layout, directions, [-lr for lr in lrs], frozen)
        return directions
    frozen = set(frozen)
    for compartment, delta in zip(layout, directions):
        at = 0
        for i, a, b in compartment:
            d = delta[at:at + b - a]  # becomes the step s, in place: a step holds no second vector of D numbers
            at += b - a
            if i in frozen:
                continue
            p = params[i]
            kept = state.setdefault(p, {})
            if "momentum_buffer" not in kept:
                kept["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
            buf = kept["momentum_buffer"].view(-1)[a:b]
            buf.mul_(mu).add_(d)
            if rule.nesterov:
                d.add_(buf, alpha=mu)
            else:
                d.copy_(buf)
            add(p, a, b, d, -lrs[i])
    return directions
