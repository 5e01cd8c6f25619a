"""Natural evolution strategies (NES), the paper's gradient-free baseline, on the same Philox bases as RBD."""

from __future__ import annotations

import math

import torch

from . import checks, distributions
from . import conventions as conv
from . import philox as ref
from .bases import RandomBases


class NES(torch.optim.Optimizer):
    """Natural evolution strategies, the paper's gradient-free baseline (Salimans et al. 2017).

    Each ``step(closure)`` evaluates ``dim`` offspring theta + sigma * eps_i (``closure()`` returns the
    loss; no backward needed), shapes the fitness by rank (u_i = r_i / (dim - 1) - 1/2, the lowest loss
    gets +1/2), and moves

        theta <- theta + lr / (sigma * dim) * sum_i u_i eps_i / sqrt(D)

    with eps_i the unscaled directions of the same Philox bases as RBD, generated a chunk of offspring
    at a time. As in the paper and the reference code, each offspring sees its own mini-batch (the
    training loop's closure draws a fresh one per call) and the directions are independent. Two
    deviations from that plain NES, both off by default:

    * ``shared_batch=True``: all offspring of a step are evaluated on one mini-batch
      (:func:`rbdlib.train.train` honours the attribute), so their ranks compare directions, not batches;
    * ``antithetic=True``: offspring come in mirrored pairs theta +- sigma * eps_m (``dim`` even,
      ``dim / 2`` directions), which cancels the even part of the loss from the estimate.

    NES uses no gradients, so it perturbs and moves every parameter it was given, ``requires_grad`` or not:
    give it only those to train. As torch's optimizers, it copies with ``copy.deepcopy`` and pickle, reads its
    lr from ``param_groups`` at every step, and runs eagerly inside ``torch.compile``.

    >>> model = torch.nn.Linear(2, 1)
    >>> opt = NES(model.parameters(), lr=0.1, dim=4)
    >>> loss = opt.step(lambda: model(torch.ones(1, 2)).square().sum())
    """

    needs_closure = True  # the training loop passes a closure that draws a new batch per call
    CHUNK = 32  # offspring directions generated per kernel call (32 x D floats of scratch)

    def __init__(self, params, lr: float, dim: int, sigma: float = 0.01, seed: int = 0,
                 distribution: str = "normal", shared_batch: bool = False, antithetic: bool = False):
        conv.check_lr(lr)
        checks.real("sigma", sigma, low_open=True)
        dim = checks.index("dim", dim, ref.MAX_INDEX)
        if dim < 2:
            raise ValueError(f"NES needs a population (dim) of at least 2, got {dim}")
        checks.flag("shared_batch", shared_batch)
        checks.flag("antithetic", antithetic)
        if antithetic and dim % 2:
            raise ValueError(f"antithetic NES evaluates mirrored pairs, so dim must be even, got {dim}")
        groups, _, self.names = conv.flat_params(params)
        conv.check_params([p for g in groups for p in g["params"]], "NES")  # before torch sees duplicates
        super().__init__(groups, dict(lr=lr))
        for g in self.param_groups:
            conv.check_lr(g["lr"], " in a parameter group")
        if len({g["lr"] for g in self.param_groups}) > 1:
            raise ValueError(f"NES takes one lr for all parameters, got {[g['lr'] for g in self.param_groups]}")
        self.params = [p for g in self.param_groups for p in g["params"]]
        self.shapes = [list(p.shape) for p in self.params]
        self.size = conv.check_size(self.params, "NES")
        self.dim, self.sigma, self.seed = dim, float(sigma), checks.index("seed", seed, ref.MAX_SEED)
        self.distribution = distributions.check(distribution)
        self.shared_batch, self.antithetic = shared_batch, antithetic
        self.steps = 0

    def _bases(self, scale: float) -> RandomBases:
        directions = self.dim // 2 if self.antithetic else self.dim
        return RandomBases(self.seed, self.steps, 0, directions, self.size, self.distribution, scale)

    def _write(self, vector: torch.Tensor) -> None:
        at = 0
        for p in self.params:
            p.copy_(vector[at:at + p.numel()].view_as(p))
            at += p.numel()

    def check(self) -> None:
        """Step-time checks of what may have changed since construction (lrs, parameters)."""
        conv.check_groups(self)
        conv.check_shapes(self)
        if len({g["lr"] for g in self.param_groups}) > 1:
            raise ValueError(f"NES takes one lr for all parameters, got {[g['lr'] for g in self.param_groups]}")

    __getstate__ = conv.getstate

    def add_param_group(self, param_group: dict) -> None:
        if hasattr(self, "params"):
            raise NotImplementedError("NES cannot add parameters after construction (its offspring span all "
                                      "of them); build a new NES with every parameter")
        super().add_param_group(param_group)

    @conv.eager
    @torch.no_grad()
    def step(self, closure):
        if closure is None or not callable(closure):
            raise ValueError(f"NES.step needs a closure that evaluates the loss on a fresh mini-batch, got {closure!r}")
        self.check()
        theta = torch.cat([p.detach().reshape(-1) for p in self.params])
        noise = self._bases(scale=1.0)
        signs = (1.0, -1.0) if self.antithetic else (1.0,)
        losses = []
        try:
            for start in range(0, noise.dim, self.CHUNK):
                eps = noise.materialize(slice(start, start + self.CHUNK), device=theta.device)
                for row in eps:
                    for sign in signs:
                        self._write(theta + (sign * self.sigma) * row)
                        losses.append(float(closure()))
        finally:
            self._write(theta)
        losses = torch.tensor(losses, dtype=torch.float64)
        if not torch.isfinite(losses).all():
            raise FloatingPointError("an offspring's loss is not finite; the parameters were left unchanged")
        rank = torch.empty(self.dim, dtype=torch.float64)
        rank[torch.argsort(losses, descending=True, stable=True)] = torch.arange(self.dim, dtype=torch.float64)
        u = (rank / (self.dim - 1) - 0.5) / (self.sigma * self.dim)
        if self.antithetic:  # offspring 2m and 2m+1 moved along +eps_m and -eps_m
            u = u[0::2] - u[1::2]
        update = self._bases(scale=1.0 / math.sqrt(self.size)).expand(u.float().to(theta.device))
        self._write(theta + self.param_groups[0]["lr"] * update)
        self.steps += 1
        return float(losses.mean())

    def state_dict(self):
        state = super().state_dict()
        state["nes"] = {"steps": self.steps}
        return state

    def load_state_dict(self, state_dict):
        """Load a state saved by :meth:`state_dict`; everything is checked before anything is loaded."""
        extra = conv.check_saved_groups(self, state_dict, "nes")
        if set(extra) != {"steps"}:
            raise ValueError(f"the saved 'nes' entry has the keys {sorted(map(str, extra))}, expected ['steps']")
        steps = conv.check_count("steps", extra["steps"])
        if len({g["lr"] for g in state_dict["param_groups"]}) > 1:
            raise ValueError("the saved param_groups hold different lrs; NES takes one lr for all parameters")
        super().load_state_dict({k: v for k, v in state_dict.items() if k != "nes"})
        self.steps = steps
