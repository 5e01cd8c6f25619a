"""Random Bases Descent (RBD), fixed projections (FPD) and NES as ``torch.optim`` optimizers.

One RBD step, for every compartment k with gradient g_k and random basis P_k (dim_k directions):

    c_k = P_k^T g_k                      (project: dim_k coordinates)
    theta_k <- theta_k - lr * P_k c_k    (expand)

with P_k's entries scaled by 1/sqrt(D), D the number of parameters of the whole optimizer, as in
the reference implementation; so E[P P^T] = (dim/D) I and the expected step is -lr (dim/D) g.
"""

from __future__ import annotations

import math
import numbers

import torch

from . import compartments as comps
from . import philox as ref
from .bases import RandomBases, check_distribution, check_index


def _check_lr(lr, where: str = ""):
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not 0 <= lr < math.inf:
        raise ValueError(f"lr must be a non-negative finite number, got {lr!r}{where}")


def _flat_params(params) -> tuple[list, list[dict], list[str] | None]:
    """Normalise what torch optimizers accept into (param_groups, layers-or-None, names-or-None)."""
    params = list(params)
    if not params:
        raise ValueError("the optimizer got an empty parameter list")
    if isinstance(params[0], dict):
        # materialise each group's params once: a generator (``layer.parameters()``) read here would be
        # empty when torch.optim.Optimizer reads it again
        groups = [dict(g, params=[g["params"]] if isinstance(g["params"], torch.Tensor)
                       else g["params"] if isinstance(g["params"], set) else list(g["params"]))
                  for g in params]
        return groups, [list(g["params"]) for g in groups], None
    if isinstance(params[0], tuple):
        return [{"params": [p for _, p in params]}], None, [n for n, _ in params]
    return [{"params": params}], None, None


class RBD(torch.optim.Optimizer):
    """Random Bases Descent: SGD restricted to ``dim`` random directions per compartment per step.

    Args:
        params: parameters, ``model.named_parameters()`` or parameter groups (dicts).
        lr: learning rate (the paper: 0.5 for FC on Fashion-MNIST, see ``rbdlib.experiments``).
        dim: directions per compartment (or in all, shared out, with ``split_dim=True``).
        seed: 64-bit seed of the bases.
        compartments: "network" (one), "layer", "tensor", or an int N (at most N parameters each,
            larger tensors cut into chunks of N).
        redraw: new bases every ``redraw`` steps; ``None`` keeps the first bases for ever (FPD).
        distribution: "normal", "uniform" or "rademacher".
        scale: entry scale; default ``1/sqrt(D)`` of all parameters (the reference's choice).
        nonfinite: "raise" (default) stops before any parameter changes when a gradient holds NaN
            or inf; "skip" leaves the parameters and the step counter as they were.
        record: keep every step's coordinates for :func:`replay`.

    After ``step()``, ``last_cosine`` is the cosine between the applied step and the gradient
    (two O(D) dot products, nothing next to the bases) and ``last_coords`` the coordinates.

    >>> model = torch.nn.Linear(3, 2)
    >>> opt = RBD(model.parameters(), lr=0.1, dim=4, compartments="tensor")
    >>> opt.dims, opt.num_coords     # the bias has 2 parameters: capped at 2 directions
    ([4, 2], 6)
    """

    def __init__(self, params, lr: float, dim: int, seed: int = 0, compartments="network", redraw=1,
                 distribution: str = "normal", split_dim: bool = False, scale: float | None = None,
                 nonfinite: str = "raise", record: bool = False):
        _check_lr(lr)
        dim = check_index("dim", dim, ref.MAX_INDEX)
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        seed = check_index("seed", seed, ref.MAX_SEED)
        if redraw is not None:
            redraw = check_index("redraw", redraw, ref.MAX_INDEX)
            if redraw < 1:
                raise ValueError("redraw must be a positive number of steps, or None for fixed bases")
        check_distribution(distribution)
        if nonfinite not in ("raise", "skip"):
            raise ValueError(f'nonfinite must be "raise" or "skip", got {nonfinite!r}')
        groups, group_layers, names = _flat_params(params)
        super().__init__(groups, dict(lr=lr))
        for g in self.param_groups:
            _check_lr(g["lr"], " in a parameter group")
        flat = [p for g in self.param_groups for p in g["params"]]
        if len({id(p) for p in flat}) != len(flat):
            raise ValueError("a parameter was given more than once")
        if len({p.device for p in flat}) > 1:
            raise ValueError(f"all parameters must be on one device, got {sorted({str(p.device) for p in flat})}")
        if flat[0].device.type not in ("cpu", "cuda"):
            raise ValueError(f"parameters are on {flat[0].device}; rbdlib supports cpu and cuda tensors")
        if any(p.dtype != torch.float32 for p in flat):
            raise TypeError("RBD needs float32 parameters; call model.float() first")
        layers = None
        if compartments == "layer":
            if names is not None:
                layers = comps.layers_from_names(names)
            elif group_layers is not None:
                starts = [0]
                for g in group_layers:
                    starts.append(starts[-1] + len(g))
                layers = [list(range(a, b)) for a, b in zip(starts, starts[1:])]
        self.params = flat
        self.layout = comps.split(flat, compartments, layers)
        self.size = sum(p.numel() for p in flat)
        self.dims = comps.dims([comps.size(c) for c in self.layout], dim, split_dim)
        self.scale = 1.0 / math.sqrt(self.size) if scale is None else float(scale)
        self.seed, self.redraw, self.distribution = seed, redraw, distribution
        self.nonfinite, self.record = nonfinite, record
        self._group_of = [gi for gi, g in enumerate(self.param_groups) for _ in g["params"]]
        self.steps, self.skipped, self.log = 0, 0, []
        self.last_coords, self.last_cosine = None, float("nan")

    @property
    def num_coords(self) -> int:
        """Coordinates per step in all compartments (what a worker sends in distributed RBD)."""
        return sum(self.dims)

    def bases(self, k: int, worker: int = 0) -> RandomBases:
        """The basis of compartment k at the current step (worker w uses directions w*dim_k ...)."""
        step = 0 if self.redraw is None else self.steps // self.redraw
        return RandomBases(self.seed, step, k, self.dims[k], comps.size(self.layout[k]), self.distribution,
                           self.scale, offset=worker * self.dims[k])

    # ------------------------------------------------------------------ the parts of a step
    def gradient(self) -> list[torch.Tensor] | None:
        """The flattened gradient of each compartment (zeros where .grad is None), after checks.

        Returns None when a gradient is not finite and ``nonfinite="skip"``.
        """
        for p in self.params:
            if p.grad is not None and (p.grad.is_sparse or p.grad.is_complex()):
                raise TypeError("RBD does not support sparse or complex gradients")
        grads = [p.grad.detach().reshape(-1) if p.grad is not None else None for p in self.params]
        if not all(bool(torch.isfinite(g).all()) for g in grads if g is not None):
            if self.nonfinite == "skip":
                return None
            raise FloatingPointError("a gradient holds NaN or inf; no parameter was changed "
                                     '(use nonfinite="skip" to skip such steps)')
        out = []
        for compartment in self.layout:
            parts = [grads[i][a:b] if grads[i] is not None else torch.zeros(b - a, device=self.params[i].device)
                     for i, a, b in compartment]
            out.append(torch.cat(parts) if len(parts) > 1 else parts[0].contiguous())
        return out

    def coordinates(self, grads: list[torch.Tensor], worker: int = 0) -> list[torch.Tensor]:
        """c_k = P_k^T g_k for every compartment."""
        return [self.bases(k, worker).project(g) for k, g in enumerate(grads)]

    @torch.no_grad()
    def apply(self, coords: list[torch.Tensor], worker: int = 0, weight: float = 1.0,
              frozen: list[int] = ()) -> list[torch.Tensor]:
        """theta <- theta - weight * lr * P_k c_k for every compartment; returns the deltas P_k c_k.

        Parameters whose index is in ``frozen`` (those without a gradient) are left as they are.
        """
        deltas = []
        for k, (compartment, c) in enumerate(zip(self.layout, coords)):
            delta = self.bases(k, worker).expand(c)
            deltas.append(delta)
            at = 0
            for i, a, b in compartment:
                if i not in frozen:
                    lr = self.param_groups[self._group_of[i]]["lr"]
                    self.params[i].view(-1)[a:b].add_(delta[at:at + b - a], alpha=-lr * weight)
                at += b - a
        return deltas

    def frozen(self) -> list[int]:
        """Indices of the parameters that have no gradient now."""
        return [i for i, p in enumerate(self.params) if p.grad is None]

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grads = self.gradient()
        if grads is None:
            self.skipped += 1
            return loss
        coords = self.coordinates(grads)
        frozen = self.frozen()
        deltas = self.apply(coords, frozen=frozen)
        self.finish(coords, grads, deltas, frozen)
        return loss

    def finish(self, coords, grads, deltas, frozen=()) -> None:
        """Book-keeping after an update: diagnostics, the coordinate log, the step counter."""
        # cosine between the step actually applied (frozen parameters stay, groups move by their own lr)
        # and the gradient: O(D) dot products, negligible next to generating the bases
        top = max(g["lr"] for g in self.param_groups)
        along = sq = 0.0
        for compartment, delta, g in zip(self.layout, deltas, grads):
            at = 0
            for i, a, b in compartment:
                if i not in frozen:
                    w = self.param_groups[self._group_of[i]]["lr"] / top if top > 0 else 1.0
                    d = delta[at:at + b - a].double()
                    along += w * float(d @ g[at:at + b - a].double())
                    sq += w * w * float(d @ d)
                at += b - a
        norm_d = math.sqrt(sq)
        norm_g = math.sqrt(sum(float(g.double().square().sum()) for g in grads))
        self.last_cosine = along / (norm_d * norm_g) if norm_d > 0 and norm_g > 0 else float("nan")
        self.last_coords = coords
        if self.record:
            self.log.append({"coords": torch.cat(coords).cpu(), "lrs": [g["lr"] for g in self.param_groups],
                             "frozen": list(frozen)})
        self.steps += 1

    # ------------------------------------------------------------------ state
    def state_dict(self):
        state = super().state_dict()
        state["rbd"] = {"steps": self.steps, "skipped": self.skipped, "log": list(self.log),
                        "config": self.config()}
        return state

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        extra = state_dict.pop("rbd", None)
        if extra is None:
            raise ValueError("this state_dict was not saved by an rbdlib optimizer (no 'rbd' entry)")
        if extra["config"] != self.config():
            raise ValueError(f"state_dict was saved with a different configuration:\n saved {extra['config']}\n"
                             f" here  {self.config()}")
        super().load_state_dict(state_dict)
        self.steps, self.skipped, self.log = extra["steps"], extra["skipped"], list(extra["log"])

    def config(self) -> dict:
        """Everything that fixes the bases: enough, with the coordinate log, to replay a run."""
        return {"seed": self.seed, "redraw": self.redraw, "distribution": self.distribution,
                "scale": self.scale, "dims": list(self.dims), "layout": [list(map(list, c)) for c in self.layout],
                "shapes": [list(p.shape) for p in self.params],
                "groups": [len(g["params"]) for g in self.param_groups]}


def FPD(params, lr: float, dim: int, **kwargs) -> RBD:
    """Fixed projection descent: RBD whose bases are drawn once (``redraw=None``), as in Li et al."""
    if "redraw" in kwargs:
        raise TypeError("FPD fixes the bases; use RBD(..., redraw=N) to choose how often they change")
    return RBD(params, lr, dim, redraw=None, **kwargs)


@torch.no_grad()
def replay(params, initial_state: dict | list, record, upto: int | None = None) -> None:
    """Rebuild trained weights from the initial weights, the seed and the coordinate log alone.

    ``params`` are the parameters (in the optimizer's order) to overwrite; ``initial_state`` their
    values before training (a list of tensors or a ``state_dict`` with the same order); ``record``
    is ``opt.state_dict()["rbd"]`` of an optimizer built with ``record=True``. Replays the first
    ``upto`` steps (all by default). d floats per step replace checkpoints of D floats.
    """
    params = list(params)
    values = list(initial_state.values()) if isinstance(initial_state, dict) else list(initial_state)
    config, log = record["config"], record["log"]
    if [list(p.shape) for p in params] != config["shapes"]:
        raise ValueError("params do not match the shapes the record was made with")
    if [list(v.shape) for v in values] != config["shapes"]:
        raise ValueError(f"initial_state holds {len(values)} tensors whose shapes do not match the "
                         f"{len(params)} parameters (pass the initial parameters only, in optimizer order)")
    for p, v in zip(params, values):
        p.copy_(v)
    bounds = [0]
    for n in config["groups"]:
        bounds.append(bounds[-1] + n)
    groups = [{"params": params[a:b]} for a, b in zip(bounds, bounds[1:])]
    opt = RBD(groups, lr=1.0, dim=1, seed=config["seed"], redraw=config["redraw"],
              distribution=config["distribution"], scale=config["scale"])
    opt.layout = [[tuple(s) for s in c] for c in config["layout"]]
    opt.dims = list(config["dims"])
    for entry in log[:upto]:
        for group, lr in zip(opt.param_groups, entry["lrs"]):
            group["lr"] = lr
        opt.apply(list(torch.split(entry["coords"].to(params[0].device), opt.dims)), frozen=entry["frozen"])
        opt.steps += 1


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

    >>> model = torch.nn.Linear(2, 1)
    >>> opt = NES(model.parameters(), lr=0.1, dim=4)
    >>> loss = opt.step(lambda: model(torch.ones(1, 2)).square().sum())
    """

    needs_closure = True  # the training loop passes a closure that draws a new batch per call
    CHUNK = 32  # offspring directions generated per kernel call (32 x D floats of scratch)

    def __init__(self, params, lr: float, dim: int, sigma: float = 0.01, seed: int = 0,
                 distribution: str = "normal", shared_batch: bool = False, antithetic: bool = False):
        _check_lr(lr)
        if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not 0 < sigma < math.inf:
            raise ValueError(f"sigma must be a positive finite number, got {sigma!r}")
        dim = check_index("dim", dim, ref.MAX_INDEX)
        if dim < 2:
            raise ValueError(f"NES needs a population (dim) of at least 2, got {dim}")
        for name, flag in (("shared_batch", shared_batch), ("antithetic", antithetic)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be True or False, got {flag!r}")
        if antithetic and dim % 2:
            raise ValueError(f"antithetic NES evaluates mirrored pairs, so dim must be even, got {dim}")
        groups, _, _ = _flat_params(params)
        super().__init__(groups, dict(lr=lr))
        for g in self.param_groups:
            _check_lr(g["lr"], " in a parameter group")
        if len({g["lr"] for g in self.param_groups}) > 1:
            raise ValueError(f"NES takes one lr for all parameters, got {[g['lr'] for g in self.param_groups]}")
        self.params = [p for g in self.param_groups for p in g["params"]]
        if len({id(p) for p in self.params}) != len(self.params):
            raise ValueError("a parameter was given more than once")
        if any(p.dtype != torch.float32 for p in self.params):
            raise TypeError("NES needs float32 parameters; call model.float() first")
        self.size = sum(p.numel() for p in self.params)
        self.dim, self.sigma, self.seed = dim, float(sigma), check_index("seed", seed, ref.MAX_SEED)
        self.distribution = check_distribution(distribution)
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

    @torch.no_grad()
    def step(self, closure):
        if closure is None:
            raise ValueError("NES.step needs a closure that evaluates the loss on a fresh mini-batch")
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
        state_dict = dict(state_dict)
        extra = state_dict.pop("nes", None)
        if not isinstance(extra, dict) or not isinstance(extra.get("steps"), int) or extra["steps"] < 0:
            raise ValueError("this state_dict was not saved by rbdlib.NES (no valid 'nes' entry)")
        super().load_state_dict(state_dict)
        self.steps = extra["steps"]
