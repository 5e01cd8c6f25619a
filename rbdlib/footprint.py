"""What training holds in memory: bytes of parameters, gradients and optimizer state, counted from the tensors.

>>> import torch, rbdlib
>>> model = torch.nn.Linear(100, 10)                     # D = 1,010 parameters
>>> opt = rbdlib.RBD(model.parameters(), lr=0.1, dim=8, momentum=0.9, memory="coordinates")
>>> model(torch.randn(4, 100)).sum().backward(); opt.step()
>>> footprint(model, opt)    # the momentum is 8 coordinates (32 bytes) and its basis' step, offset, dim
{'parameters': 4040, 'gradients': 4040, 'state': 56, 'total': 8136}
"""

from __future__ import annotations

import numbers

import torch


def nbytes(value) -> int:
    """Bytes of a tensor (its elements), 8 for a number, the sum over a tuple, list or dict's values."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (bool, numbers.Number)):
        return 8
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values())
    if isinstance(value, (tuple, list)):
        return sum(nbytes(v) for v in value)
    if value is None:
        return 0
    raise TypeError(f"cannot count the bytes of {type(value).__name__}")


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of an optimizer's state: torch's per-parameter ``state`` (for :mod:`rbdlib.successors`, stored
    projections included: :func:`projection_bytes`) and, for :class:`rbdlib.RBD`, the state it keeps per
    compartment. A ``DistributedRBD`` counts its wrapped optimizer's."""
    optimizer = getattr(optimizer, "optimizer", optimizer)
    return nbytes(list(optimizer.state.values())) + nbytes(getattr(optimizer, "compartment_state", []))


def projection_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the projections an optimizer stores between steps, a part of :func:`state_bytes`: the state entries
    its class names in ``projection_keys`` (GaLore's and GoLore's projectors, ``"projector"``). Optimizers that
    regenerate their projections from the seed (RBD, Flora, APOLLO-Mini, MeZO) store none: 0."""
    optimizer = getattr(optimizer, "optimizer", optimizer)
    keys = getattr(optimizer, "projection_keys", ())
    return sum(nbytes(entry[k]) for entry in optimizer.state.values() for k in keys if k in entry)


def footprint(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Bytes of the model's parameters, of their gradients (those that exist now) and of the optimizer's state
    (:func:`state_bytes`, stored projections included; :func:`projection_bytes` gives their part), and their total."""
    params = list(model.parameters())
    out = {"parameters": nbytes(params), "gradients": nbytes([p.grad for p in params]),
           "state": state_bytes(optimizer)}
    out["total"] = sum(out.values())
    return out
