"""Random Bases Descent (RBD) as a ``torch.optim`` optimizer.

One RBD step, for every compartment k with gradient g_k and random basis P_k (dim_k directions):

    c_k = P_k^T g_k                      (project: dim_k coordinates)
    theta_k <- theta_k - lr * P_k c_k    (expand)

with P_k's entries scaled by 1/sqrt(D), D the number of parameters of the whole optimizer, as in
the reference implementation; so E[P P^T] = (dim/D) I and the expected step is -lr (dim/D) g.
The class is thin: the arithmetic of a step and its update rules is the functional core :mod:`rbdlib.step`
(which replay and distributed training call too), its options :mod:`rbdlib.options`, what a recording RBD saves
and :func:`rbdlib.replay` :mod:`rbdlib.record`; FPD is :mod:`rbdlib.fpd`.
"""

from __future__ import annotations

import math

import torch

from . import checks, record
from . import compartments as comps
from . import conventions as conv
from . import philox as ref
from . import step as core
from .bases import RandomBases
from .options import check_bases, check_rule


def _dot(x: torch.Tensor, y: torch.Tensor, chunk: int = 2**20) -> float:
    """x @ y in float64, a chunk at a time: exact enough for a cosine, with no float64 copy of x or y (at
    D = 50M, whole copies would hold 4 x 4D bytes beyond the step)."""
    return sum(float(x[i:i + chunk].double() @ y[i:i + chunk].double()) for i in range(0, len(x), chunk))


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
        momentum: mu in [0, 1): heavy-ball momentum over the re-drawn steps, b <- mu b + P c,
            theta <- theta - lr b. 0 (default) is plain RBD.
        nesterov: with momentum, step by P c + mu b instead of b (torch.optim.SGD's ``nesterov=True``).
        memory: where the momentum is kept: "parameters" (default), torch.optim.SGD's ``momentum_buffer``
            (4 D bytes), or "coordinates", d_k per compartment carried onto each new basis (Flora's rule, eq. (5)
            of :mod:`rbdlib.step`): a re-draw costs one more expand and project, and with ``redraw=1`` little
            survives the carry: pair it with ``redraw=N``.
        adaptive: beta in [0, 1): divide each compartment's coordinates by the running root mean square of
            its coordinates (bias-corrected, plus ``eps``), one number per compartment; 0 (default): off. The
            lr is then a step size free of the gradient's scale. Why per compartment: :func:`rbdlib.step.scale`.
        eps: added to the root mean square of ``adaptive``.
        weight_decay: wd >= 0, coupled as in torch.optim.SGD: the projected gradient is g + wd theta (why
            coupled, not AdamW's decoupled decay: :func:`rbdlib.step.gradients`). No state.

    The rules' state is saved by :meth:`state_dict` and rebuilt by :func:`replay` from the coordinates.
    Bytes of state: momentum 4 D ("parameters") or 4 d_k per compartment plus its basis' step ("coordinates");
    adaptive a float64 and a count per compartment.

    Recipe for your own model: one RBD step moves on average as SGD at lr x dim/D (D its parameters), so
    start from the lr that suits SGD scaled by D/dim, then tune (the paper's 0.5 at dim = 250 suits D of
    about 1e5); prefer ``distribution="rademacher"`` on a CPU (one random bit per entry, the fastest); a larger
    ``dim`` costs time in proportion and buys a cosine sqrt(dim/D) with the gradient; keep float32 parameters.
    Compartments: one basis ("network") suits the paper's lr; at larger lrs, ``dim`` directions per layer or
    per N parameters keep more of the gradient (notebook 05); "layer" needs ``model.named_parameters()``.
    Import torch and rbdlib in either order; ``torch.set_num_threads`` sets the kernels' threads.
    Notebook 01 ends with this recipe on a model of its own, notebook 09 with what momentum does (it moves
    as plain RBD at lr / (1 - momentum)).

    The kernels run on ``torch.get_num_threads()`` threads (torch's own OpenMP threads on Linux). After
    ``step()``, ``last_cosine`` is the cosine between the applied step and the gradient and ``last_coords`` the
    coordinates. The conventions of ``torch.optim`` hold (:mod:`rbdlib.conventions`): frozen parameters stay, each
    group's lr is read at every step, deepcopy and pickle work, a compiled training step runs ``step`` eagerly.
    Memory of a step beyond the parameters and gradients: the gradient of a compartment (4 D_k, when it spans
    several tensors), its step P c (4 D_k) and the rule's state.

    >>> model = torch.nn.Linear(3, 2)
    >>> opt = RBD(model.parameters(), lr=0.1, dim=4, compartments="tensor")
    >>> opt.dims, opt.num_coords     # the bias has 2 parameters: capped at 2 directions
    ([4, 2], 6)
    """

    def __init__(self, params, lr: float, dim: int, seed: int = 0, compartments="network", redraw=1,
                 distribution: str = "normal", split_dim: bool = False, scale: float | None = None,
                 nonfinite: str = "raise", record: bool = False, momentum: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0, memory: str = "parameters",
                 adaptive: float = 0.0, eps: float = 1e-8):
        conv.check_lr(lr)
        self.rule = check_rule(momentum, nesterov, memory, adaptive, eps)
        self.weight_decay = checks.real("weight_decay", weight_decay, hint=" (0: none)")
        dim = checks.index("dim", dim, ref.MAX_INDEX)
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        seed, redraw, self._scale = check_bases(seed, redraw, distribution, scale)
        checks.flag("split_dim", split_dim)
        checks.flag("record", record)
        checks.choice("nonfinite", nonfinite, ("raise", "skip"), what='"raise" or "skip"')
        groups, group_layers, names = conv.flat_params(params)
        self._compartments, self._dim, self._split_dim = compartments, dim, split_dim
        self._layers = None
        if compartments == "layer":
            if names is not None:
                self._layers = comps.layers_from_names(names)
            elif group_layers is not None:
                self._layers, at = [], 0
                for g in group_layers:
                    self._layers.append(list(range(at, at + len(g))))
                    at += len(g)
        self.seed, self.redraw, self.distribution = seed, redraw, distribution
        self.nonfinite, self.record, self.names = nonfinite, record, names
        self.steps, self.skipped, self.log = 0, 0, []
        self.initial_weights = None  # SHA-256 of the weights the log starts from (set when recording starts)
        self.last_coords, self.last_cosine = None, float("nan")
        super().__init__(groups, dict(lr=lr))  # calls add_param_group per group, which checks them
        self._build()

    def _build(self) -> None:
        """The layout, dims and scale from the current parameter groups (at construction and after
        :meth:`add_param_group`)."""
        flat = [p for g in self.param_groups for p in g["params"]]
        conv.check_params(flat, "RBD")
        conv.check_size(flat, "RBD")
        layout = comps.split(flat, self._compartments, self._layers)
        # an empty tensor has no directions: drop its segments (and compartments left empty)
        layout = [c for c in ([s for s in c if s[2] > s[1]] for c in layout) if c]
        for k, c in enumerate(layout):
            if comps.size(c) > ref.MAX_SIZE:
                raise ValueError(f"compartment {k} holds {comps.size(c)} elements, more than a basis direction can "
                                 f"(2**34, the 32-bit block word of Philox counters); use compartments=N")
        self.params, self.layout, self.shapes = flat, layout, [list(p.shape) for p in flat]
        self.compartment_state = [{} for _ in layout]  # the rule's state per compartment (rbdlib.step)
        self.size = sum(p.numel() for p in flat)
        self.dims = comps.dims([comps.size(c) for c in self.layout], self._dim, self._split_dim)
        self.scale = 1.0 / math.sqrt(self.size) if self._scale is None else self._scale
        self._group_of = [gi for gi, g in enumerate(self.param_groups) for _ in g["params"]]

    def add_param_group(self, param_group: dict) -> None:
        """Add parameters to train; the layout, dims and (default) scale are rebuilt as if the optimizer
        had been built with all groups (with ``compartments="layer"`` the new group is one more layer).

        The bases of the other parameters change with the layout. Refused once a recording optimizer
        has stepped (its log could no longer be replayed).
        """
        if not isinstance(param_group, dict) or "params" not in param_group:
            raise TypeError(f"param_group must be a dict with a 'params' entry, got {type(param_group).__name__}")
        new = param_group["params"]
        new = [new] if isinstance(new, torch.Tensor) else list(new)
        if not new:
            raise ValueError("add_param_group got a group without parameters")
        conv.check_lr(param_group.get("lr", self.defaults["lr"]), " in the added parameter group")
        building = not hasattr(self, "layout")
        if not building and any(self.compartment_state):
            raise RuntimeError("cannot add parameters once a rule that keeps state per compartment (coordinate "
                               "momentum, adaptive) has stepped: its state is laid out by compartment; build a "
                               "new optimizer")
        if not building and self.record and self.log:
            raise RuntimeError("cannot add parameters to a recording RBD that has stepped: the log "
                               "could not be replayed; build a new optimizer")
        conv.check_params([p for g in self.param_groups for p in g["params"]] + new, "RBD")
        if not building:
            if self._compartments == "layer":
                self._layers = (self._layers or []) + [list(range(len(self.params), len(self.params) + len(new)))]
        super().add_param_group(dict(param_group, params=new))
        if not building:
            self._build()

    @property
    def num_coords(self) -> int:
        """Coordinates per step in all compartments (what a worker sends in distributed RBD)."""
        return sum(self.dims)

    def bases(self, k: int, worker: int = 0, workers: int = 1) -> RandomBases:
        """The basis of compartment k at the current step (worker w uses directions w*dim_k ...;
        ``workers`` > 1: the directions of that many workers from w on, in one basis)."""
        return core.basis(self._plan(), self.steps, k, worker, workers)

    def _plan(self) -> dict:
        return {"seed": self.seed, "redraw": self.redraw, "distribution": self.distribution, "scale": self.scale,
                "dims": self.dims, "layout": self.layout}

    # ------------------------------------------------------------------ the parts of a step (rbdlib.step)
    def gradient(self) -> list[torch.Tensor] | None:
        """The flattened gradient of each compartment (zeros where .grad is None; plus ``weight_decay``
        theta where it is not), after checks. Returns None when a gradient is not finite and
        ``nonfinite="skip"``."""
        return core.gradients(self.params, self.layout, self.weight_decay, self.nonfinite, self.names)

    def coordinates(self, grads: list[torch.Tensor], worker: int = 0) -> list[torch.Tensor]:
        """c_k = P_k^T g_k for every compartment."""
        return core.project(core.bases(self._plan(), self.steps, worker), grads)

    @torch.no_grad()
    def apply(self, coords: list[torch.Tensor], worker: int = 0, weight: float = 1.0,
              frozen: list[int] = (), lr: float | None = None, workers: int = 1) -> list[torch.Tensor]:
        """theta <- theta - weight * lr * s_k, s_k the update rule's step from P_k c_k (P_k c_k itself
        without momentum), for every compartment; returns the steps s_k.

        ``lr`` is each parameter group's unless given. Parameters whose index is in ``frozen`` (those without
        a gradient) are left as they are. ``workers`` > 1: ``coords[k]`` holds the coordinates of that many
        workers, one after the other, applied as one sum (distributed RBD with independent bases).
        """
        rates = [self.param_groups[g]["lr"] if lr is None else lr for g in self._group_of]
        if self.record and not self.log:  # recording starts: fingerprint the weights the log starts from
            self.initial_weights = record.weights_digest(self.params)
        return core.update(self.params, self.layout, core.bases(self._plan(), self.steps, worker, workers), coords,
                           [rate * weight for rate in rates], frozen, self.state, self.rule,
                           self.compartment_state)

    def check_gradients(self) -> None:
        """The gradients a step will use are dense float32 tensors of their parameters' shapes and devices, or an
        error names the parameter; raises before anything changes."""
        conv.check_grads(self.params, self.names)

    def frozen(self) -> list[int]:
        """Indices of the parameters that stay as they are this step: no gradient, or ``requires_grad`` off."""
        return [i for i, p in enumerate(self.params) if conv.grad_of(p) is None]

    def check(self) -> None:
        """Step-time checks of what may have changed since construction (lrs, parameters, their shapes);
        raises before anything changes."""
        conv.check_groups(self)
        conv.check_shapes(self)

    __getstate__ = conv.getstate

    @conv.eager
    @torch.no_grad()
    def step(self, closure=None):
        self.check()
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.update()
        return loss

    def update(self) -> list[torch.Tensor] | None:
        """One step from the gradients in ``.grad``: project, apply, finish; returns the coordinates, or
        None when the step was skipped (a non-finite gradient with ``nonfinite="skip"``)."""
        grads = self.gradient()
        if grads is None:
            self.skipped += 1
            return None
        coords = self.coordinates(grads)
        frozen = self.frozen()
        steps = self.apply(coords, frozen=frozen)
        self.finish(coords, grads, steps, frozen)
        return coords

    def finish(self, coords, grads, steps, frozen=()) -> None:
        """Book-keeping after an update (``steps``: what :meth:`apply` returned): diagnostics, the
        coordinate log, the step counter."""
        # cosine between the step actually applied (frozen parameters stay, groups move by their own lr)
        # and the gradient: O(D) dot products, negligible next to generating the bases
        top = max(g["lr"] for g in self.param_groups)
        along = sq = 0.0
        for compartment, delta, g in zip(self.layout, steps, grads):
            at = 0
            for i, a, b in compartment:
                if i not in frozen:
                    w = self.param_groups[self._group_of[i]]["lr"] / top if top > 0 else 1.0
                    along += w * _dot(delta[at:at + b - a], g[at:at + b - a])
                    sq += w * w * _dot(delta[at:at + b - a], delta[at:at + b - a])
                at += b - a
        norm_d = math.sqrt(sq)
        norm_g = math.sqrt(sum(_dot(g, g) for g in grads))
        self.last_cosine = along / (norm_d * norm_g) if norm_d > 0 and norm_g > 0 else float("nan")
        self.last_coords = coords
        if self.record:
            self.log.append({"coords": torch.cat(coords).cpu(), "lrs": [g["lr"] for g in self.param_groups],
                             "frozen": list(frozen)})
        self.steps += 1

    # ------------------------------------------------------------------ state
    def state_dict(self):
        state = super().state_dict()
        initial = self.initial_weights if self.log else None
        state["rbd"] = {"steps": self.steps, "skipped": self.skipped, "log": list(self.log),
                        "log_digest": record.log_digest(self.log, self.config(), initial), "config": self.config()}
        if initial is not None:
            state["rbd"]["initial_weights"] = initial
        if self.rule.per_compartment:
            state["rbd"]["compartments"] = [{k: v.clone() if isinstance(v, torch.Tensor) else v
                                             for k, v in entry.items()} for entry in self.compartment_state]
        return state

    def load_state_dict(self, state_dict):
        """Load a state saved by :meth:`state_dict`; everything is checked before anything is loaded."""
        buffers = self.rule.momentum and self.rule.memory == "parameters"
        extra = conv.check_saved_groups(self, state_dict, "rbd", ("momentum_buffer",) if buffers else ())
        steps, skipped, log, kept = record.check_entry(extra, self.config(), self.rule)
        # torch loads state tensors without copying them: clone, so that this optimizer's buffers are its own
        saved = {i: {k: v.clone() for k, v in entry.items()} for i, entry in state_dict["state"].items()}
        super().load_state_dict({**{k: v for k, v in state_dict.items() if k != "rbd"}, "state": saved})
        self.steps, self.skipped, self.log = steps, skipped, list(log)
        self.initial_weights = extra.get("initial_weights")
        device = self.params[0].device
        self.compartment_state = [{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in e.items()}
                                  for e in kept]

    def config(self) -> dict:
        """Everything that fixes the bases and the update rule: enough, with the coordinate log, to replay a
        run. The rule's options appear only when set, so that plain RBD's configuration (and the digests and
        checkpoints made with it) is what it was before rules existed."""
        config = {"seed": self.seed, "redraw": self.redraw, "distribution": self.distribution,
                  "scale": self.scale, "dims": list(self.dims), "layout": [list(map(list, c)) for c in self.layout],
                  "shapes": [list(shape) for shape in self.shapes],
                  "groups": [len(g["params"]) for g in self.param_groups]}
        config.update(self.rule.options())
        if self.weight_decay:
            config.update(weight_decay=self.weight_decay)
        return config

