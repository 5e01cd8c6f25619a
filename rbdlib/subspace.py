"""``FixedSubspace``: train only d coordinates, theta = theta_0 + P c (Li et al. 2018).

P (D x d) is never stored: the forward pass expands c into a D-vector with the fused kernel, and
the backward pass projects the gradient back onto the d directions, through a custom autograd
function. Any torch optimizer (SGD, Adam) then trains ``coords``, the module's only parameter.
"""

from __future__ import annotations

import math

import torch
from torch.func import functional_call

from .bases import RandomBases


class _Expand(torch.autograd.Function):
    """delta = P c in forward; dL/dc = P^T dL/ddelta in backward."""

    @staticmethod
    def forward(ctx, coords, bases):
        ctx.bases = bases
        return bases.expand(coords)

    @staticmethod
    def backward(ctx, grad):
        return ctx.bases.project(grad.contiguous()), None


class FixedSubspace(torch.nn.Module):
    """Wrap ``model`` so that its weights are theta_0 + P c and only ``coords`` (length dim) trains.

    theta_0 is the wrapped model's own (now frozen) parameters; buffers such as batch-norm
    statistics stay the model's and update as usual. ``.to()``, ``state_dict()`` and
    ``train()/eval()`` behave as for any module. Entries of P are scaled by 1/sqrt(D), like RBD's.

    >>> net = torch.nn.Linear(3, 2)
    >>> sub = FixedSubspace(net, dim=5)
    >>> [name for name, p in sub.named_parameters() if p.requires_grad]   # theta_0 is frozen
    ['coords']
    >>> sub(torch.ones(1, 3)).shape
    torch.Size([1, 2])
    """

    def __init__(self, model: torch.nn.Module, dim: int, seed: int = 0, distribution: str = "normal"):
        super().__init__()
        self.model = model
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        params = dict(model.named_parameters())
        self.size = sum(params[n].numel() for n in self.names)
        # validates dim, seed and distribution before anything is changed
        self.bases = RandomBases(seed, 0, 0, dim, self.size, distribution, 1.0 / math.sqrt(self.size))
        for n in self.names:
            params[n].requires_grad_(False)
        self.coords = torch.nn.Parameter(torch.zeros(dim, device=params[self.names[0]].device))

    def weights(self) -> dict[str, torch.Tensor]:
        """The current weights theta_0 + P c, by parameter name (differentiable in coords)."""
        delta = _Expand.apply(self.coords, self.bases)
        params = dict(self.model.named_parameters())
        out, at = {}, 0
        for n in self.names:
            p = params[n]
            out[n] = p + delta[at:at + p.numel()].view_as(p)
            at += p.numel()
        return out

    def forward(self, *args, **kwargs):
        return functional_call(self.model, self.weights(), args, kwargs)

    @torch.no_grad()
    def merged(self) -> torch.nn.Module:
        """Write theta_0 + P c into the wrapped model's parameters and return it (ends the wrapping)."""
        for n, w in self.weights().items():
            self.model.get_parameter(n).copy_(w)
        self.coords.zero_()
        return self.model
