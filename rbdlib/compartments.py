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

What these choices do to a step (the cosine with the gradient, the expected length) is :mod:`rbdlib.theory`.
"""

from __future__ import annotations

import math

from . import checks

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
    if checks.is_int(mode):
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
    """The number of parameter elements in a compartment."""
    return sum(stop - start for _, start, stop in compartment)


def dims(sizes: list[int], dim: int, split_dim: bool) -> list[int]:
    """Directions per compartment: ``dim`` each, or ``ceil(dim / K)`` each when ``split_dim``.

    A compartment never gets more directions than it has parameters (documented capping).
    """
    per = math.ceil(dim / len(sizes)) if split_dim else dim
    return [min(per, n) for n in sizes]
