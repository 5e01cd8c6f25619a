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
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"FixedSubspace wraps a torch.nn.Module, got {type(model).__name__}; "
                            "wrap a list of layers in torch.nn.Sequential(...) first")
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        params = dict(model.named_parameters())
        dtypes = sorted({str(params[n].dtype) for n in names} - {"torch.float32"})
        if dtypes:
            raise TypeError(f"FixedSubspace needs float32 parameters, got {', '.join(dtypes)}; call model.float() "
                            "first (the fused kernels work in float32)")
        devices = sorted({str(params[n].device) for n in names})
        if len(devices) > 1:
            raise ValueError(f"all parameters must be on one device, got {devices}")
        size = sum(params[n].numel() for n in names)
        if size == 0:
            raise ValueError(f"{type(model).__name__} has no trainable parameter elements (D = 0): nothing to train")
        # validates dim, seed and distribution before anything is changed
        bases = RandomBases(seed, 0, 0, dim, size, distribution, 1.0 / math.sqrt(size))
        super().__init__()
        self.model, self.names, self.size, self.bases = model, names, size, bases
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

    def config(self) -> dict:
        """What fixes P: saved in ``state_dict()`` and checked when loading, so coordinates are never
        read against other bases."""
        b = self.bases
        return {"seed": b.seed, "dim": b.dim, "distribution": b.distribution, "size": self.size,
                "names": list(self.names)}

    def get_extra_state(self) -> dict:
        return self.config()

    def set_extra_state(self, state) -> None:
        if state != self.config():
            raise ValueError(f"this FixedSubspace state was saved with another configuration:\n saved {state}\n"
                             f" here  {self.config()}")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Check the saved configuration (seed, dim, distribution, size) before loading anything of this
        module or the wrapped one, also when the FixedSubspace sits inside a larger module."""
        if prefix + "_extra_state" not in state_dict:
            raise ValueError("this state_dict holds no FixedSubspace configuration (seed, dim, distribution); "
                             "it was not saved by FixedSubspace.state_dict()")
        self.set_extra_state(state_dict[prefix + "_extra_state"])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, *args, **kwargs):
        return functional_call(self.model, self.weights(), args, kwargs)

    @torch.no_grad()
    def merged(self) -> torch.nn.Module:
        """Write theta_0 + P c into the wrapped model's parameters and return it, trainable again as
        before the wrapping (ends it: ``coords`` is zeroed, so this module still computes the same)."""
        for n, w in self.weights().items():
            self.model.get_parameter(n).copy_(w)
        self.coords.zero_()
        for n in self.names:
            self.model.get_parameter(n).requires_grad_(True)
        return self.model
