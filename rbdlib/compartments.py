"""Splitting parameters into compartments: independent random bases for parts of the network.

A compartment is a list of segments ``(param_index, start, stop)`` of flattened parameters; its
gradient is their concatenation. Layouts are fixed when an optimizer is built, so a parameter
without a gradient never shifts the compartment indices (and so the bases) of the others.

>>> import torch
>>> ps = [torch.zeros(3, 2), torch.zeros(2), torch.zeros(5)]
>>> split(ps, "tensor")
[[(0, 0, 6)], [(1, 0, 2)], [(2, 0, 5)]]
>>> split(ps, 4)              # pack up to 4 parameters; split larger tensors into chunks of 4
[[(0, 0, 4)], [(0, 4, 6), (1, 0, 2)], [(2, 0, 4)], [(2, 4, 5)]]
>>> dims([6, 2, 5], dim=4, split_dim=False)   # each compartment its own dim, capped at its size
[4, 2, 4]
"""

from __future__ import annotations

import math
import numbers

Segment = tuple[int, int, int]


def split(params, mode, layers: list[list[int]] | None = None) -> list[list[Segment]]:
    """Compartments for ``params`` under ``mode``: "network", "tensor", "layer" or an int N.

    ``layers`` (for "layer") lists the parameter indices of each layer, in order.
    """
    sizes = [p.numel() for p in params]
    if mode == "network":
        return [[(i, 0, n) for i, n in enumerate(sizes)]]
    if mode == "tensor":
        return [[(i, 0, n)] for i, n in enumerate(sizes)]
    if mode == "layer":
        if layers is None:
            raise ValueError('compartments="layer" needs to know the layers: pass model.named_parameters() '
                             "or a list of parameter groups (one group per layer)")
        return [[(i, 0, sizes[i]) for i in layer] for layer in layers if layer]
    if isinstance(mode, numbers.Integral) and not isinstance(mode, bool):
        if mode < 1:
            raise ValueError(f"an integer compartment size must be positive, got {mode}")
        return _pack(sizes, int(mode))
    raise ValueError(f'unknown compartments {mode!r}; expected "network", "tensor", "layer" or a positive int')


def _pack(sizes: list[int], limit: int) -> list[list[Segment]]:
    """The reference code's packing: fill compartments of at most ``limit`` in parameter order."""
    out: list[list[Segment]] = [[]]
    used = 0
    for i, n in enumerate(sizes):
        start = 0
        while start < n:
            if used == limit:
                out.append([])
                used = 0
            take = min(limit - used, n - start)
            out[-1].append((i, start, start + take))
            used += take
            start += take
    return [c for c in out if c]


def layers_from_names(names: list[str]) -> list[list[int]]:
    """Group parameter indices by module: ``"0.weight"`` and ``"0.bias"`` form one layer."""
    layers: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        layers.setdefault(name.rsplit(".", 1)[0] if "." in name else "", []).append(i)
    return list(layers.values())


def size(compartment: list[Segment]) -> int:
    return sum(stop - start for _, start, stop in compartment)


def dims(sizes: list[int], dim: int, split_dim: bool) -> list[int]:
    """Directions per compartment: ``dim`` each, or ``ceil(dim / K)`` each when ``split_dim``.

    A compartment never gets more directions than it has parameters (documented capping).
    """
    per = math.ceil(dim / len(sizes)) if split_dim else dim
    return [min(per, n) for n in sizes]


# Fourth moment E[z^4] of a unit-variance basis entry: normal 3, rademacher (+-1) 1, uniform U(-1, 1) rescaled
# to unit variance 9/5. The cosine is scale-free, so only this moment tells the distributions apart.
FOURTH_MOMENT = {"normal": 3.0, "rademacher": 1.0, "uniform": 9 / 5}


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
    if distribution not in FOURTH_MOMENT:
        raise ValueError(f"unknown distribution {distribution!r}; expected one of {tuple(FOURTH_MOMENT)}")
    if len(grads) != len(dims):
        raise ValueError(f"got {len(grads)} compartment gradients but {len(dims)} dims; pass one of each")
    mu = FOURTH_MOMENT[distribution]
    w = [float(g.double().square().sum()) for g in grads]
    return mu, w, [g.numel() + d + mu - 2 for g, d in zip(grads, dims)]
