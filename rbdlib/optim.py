"""Random Bases Descent (RBD), fixed projections (FPD) and NES as ``torch.optim`` optimizers.

One RBD step, for every compartment k with gradient g_k and random basis P_k (dim_k directions):

    c_k = P_k^T g_k                      (project: dim_k coordinates)
    theta_k <- theta_k - lr * P_k c_k    (expand)

with P_k's entries scaled by 1/sqrt(D), D the number of parameters of the whole optimizer, as in
the reference implementation; so E[P P^T] = (dim/D) I and the expected step is -lr (dim/D) g.
The classes here are thin: the arithmetic of a step (and its update rules: momentum, Nesterov, weight
decay) is the functional core :mod:`rbdlib.step`, which replay and distributed training call too.
"""

from __future__ import annotations

import functools
import hashlib
import math
import numbers

import torch

from . import compartments as comps
from . import philox as ref
from . import step as core
from .bases import RandomBases, check_distribution, check_index


def _check_lr(lr, where: str = ""):
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not 0 <= lr < math.inf:
        raise ValueError(f"lr must be a non-negative finite number, got {lr!r}{where}")


def _check_flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return value


def _check_momentum(momentum, nesterov) -> float:
    if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real) or not 0 <= momentum < 1:
        raise ValueError(f"momentum must be a number in [0, 1) (0: plain RBD; 0.9 is usual), got {momentum!r}")
    if _check_flag("nesterov", nesterov) and momentum == 0:
        raise ValueError("nesterov=True needs a momentum in (0, 1), got momentum=0")
    return float(momentum)


def _check_rule(momentum, nesterov, memory, adaptive, eps) -> core.Rule:
    momentum = _check_momentum(momentum, nesterov)
    if memory not in ("parameters", "coordinates"):
        raise ValueError(f'memory must be "parameters" or "coordinates" (where momentum is kept), got {memory!r}')
    if memory == "coordinates" and not momentum:
        raise ValueError('memory="coordinates" keeps the momentum in the coordinates: give a momentum in (0, 1)')
    if isinstance(adaptive, bool) or not isinstance(adaptive, numbers.Real) or not 0 <= adaptive < 1:
        raise ValueError(f"adaptive must be a number in [0, 1) (beta of the running mean square; 0: off, "
                         f"0.999 is usual), got {adaptive!r}")
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not 0 < eps < math.inf:
        raise ValueError(f"eps must be a positive finite number, got {eps!r}")
    return core.Rule(momentum, nesterov, memory, float(adaptive), float(eps))


def _rule_config(rule: core.Rule) -> dict:
    """The rule's entries of a config: only those set, so plain RBD's config is what it always was."""
    config = dict(momentum=rule.momentum, nesterov=rule.nesterov) if rule.momentum else {}
    if rule.memory != "parameters":
        config["memory"] = rule.memory
    if rule.adaptive:
        config.update(adaptive=rule.adaptive, eps=rule.eps)
    return config


def _check_compartment_state(saved, dims: list[int], rule: core.Rule) -> list[dict]:
    """The per-compartment state of a saved RBD (coordinate momentum, adaptive scale), checked and copied."""
    if not isinstance(saved, list) or len(saved) != len(dims):
        raise ValueError(f"the saved compartment state must be a list of {len(dims)} dicts, got {str(saved)[:60]}")
    out = []
    for k, entry in enumerate(saved):
        allowed = {"momentum", "basis"} if rule.momentum and rule.memory == "coordinates" else set()
        allowed |= {"second_moment", "count"} if rule.adaptive else set()
        bad = not isinstance(entry, dict) or not set(entry) <= allowed or ("momentum" in entry) != ("basis" in entry)
        bad = bad or ("second_moment" in entry) != ("count" in entry)
        if not bad and "momentum" in entry:
            m, basis = entry["momentum"], entry["basis"]
            bad = not (isinstance(m, torch.Tensor) and m.dtype == torch.float32 and m.dim() == 1
                       and bool(torch.isfinite(m).all()) and isinstance(basis, (list, tuple)) and len(basis) == 3
                       and all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= ref.MAX_INDEX
                               for x in basis) and basis[2] == m.numel() and basis[2] >= 1)
        if not bad and "count" in entry:
            v, t = entry["second_moment"], entry["count"]
            bad = not (isinstance(v, float) and 0 <= v < math.inf and isinstance(t, int)
                       and not isinstance(t, bool) and t >= 1)
        if bad:
            raise ValueError(f"the saved state of compartment {k} must map some of {sorted(allowed)} (momentum: "
                             "finite float32 coordinates with their basis [step, offset, dim]; second_moment: "
                             f"a finite float >= 0 with its count >= 1), got {str(entry)[:80]}")
        out.append({**entry, **({"momentum": entry["momentum"].clone(), "basis": tuple(entry["basis"])}
                                if "momentum" in entry else {})})
    return out


def _check_weight_decay(weight_decay) -> float:
    if (isinstance(weight_decay, bool) or not isinstance(weight_decay, numbers.Real)
            or not 0 <= weight_decay < math.inf):
        raise ValueError(f"weight_decay must be a non-negative finite number (0: none), got {weight_decay!r}")
    return float(weight_decay)


def _check_scale(scale) -> float | None:
    if scale is None:
        return None
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not 0 < scale < math.inf:
        raise ValueError(f"scale must be a positive finite number or None (1/sqrt(D)), got {scale!r}")
    return float(scale)


def _check_params(flat: list, who: str) -> None:
    """What every rbdlib optimizer needs of its parameters: distinct float32 tensors on one cpu/cuda device."""
    if not all(isinstance(p, torch.Tensor) for p in flat):
        bad = next(p for p in flat if not isinstance(p, torch.Tensor))
        raise TypeError(f"{who} optimizes tensors, got a {type(bad).__name__}")
    if len({id(p) for p in flat}) != len(flat):
        raise ValueError("a parameter was given more than once")
    if len({p.device for p in flat}) > 1:
        raise ValueError(f"all parameters must be on one device, got {sorted({str(p.device) for p in flat})}")
    if flat and flat[0].device.type not in ("cpu", "cuda"):
        raise ValueError(f"parameters are on {flat[0].device}; rbdlib supports cpu and cuda tensors")
    if any(p.dtype != torch.float32 for p in flat):
        dtypes = sorted({str(p.dtype) for p in flat if p.dtype != torch.float32})
        raise TypeError(f"{who} needs float32 parameters, got {', '.join(dtypes)}; call model.float() first")


def _check_size(flat: list, who: str) -> int:
    size = sum(p.numel() for p in flat)
    if size == 0:
        raise ValueError(f"{who} got {len(flat)} parameter(s) with no elements (D = 0): nothing to train")
    return size


def _check_groups(optimizer: torch.optim.Optimizer) -> None:
    """Step-time checks of what a user may have changed in ``param_groups`` since construction."""
    for g in optimizer.param_groups:
        _check_lr(g["lr"], " in param_groups (changed after construction?)")
    flat = [p for g in optimizer.param_groups for p in g["params"]]
    if len(flat) != len(optimizer.params) or any(p is not q for p, q in zip(flat, optimizer.params)):
        raise RuntimeError("param_groups' parameters were changed in place; use add_param_group "
                           "(or build a new optimizer) to change what is trained")
    _check_params(flat, type(optimizer).__name__)


def _check_saved_groups(optimizer: torch.optim.Optimizer, state_dict, extra: str, state_keys=()) -> dict:
    """Validate the torch part of a saved optimizer state before anything is loaded; returns ``extra``'s entry.

    ``state_keys`` names the per-parameter state the optimizer keeps (none: the saved 'state' must be empty);
    each saved entry must then hold a subset of them, finite float32 tensors of its parameter's shape."""
    who = type(optimizer).__name__
    if not isinstance(state_dict, dict):
        raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
    if set(state_dict) != {"state", "param_groups", extra}:
        raise ValueError(f"this is not a state_dict saved by rbdlib.{who}: expected the keys "
                         f"['param_groups', 'state', {extra!r}], got {sorted(map(str, state_dict))}")
    if not isinstance(state_dict["state"], dict) or (state_dict["state"] and not state_keys):
        raise ValueError(f"rbdlib.{who} keeps no per-parameter state, but the saved 'state' holds "
                         f"{type(state_dict['state']).__name__} {str(state_dict['state'])[:60]} (saved with "
                         "momentum? build the optimizer with the same options)")
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for i, entry in state_dict["state"].items():
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(params):
            raise ValueError(f"the saved 'state' is keyed by parameter index in [0, {len(params)}), got {i!r}")
        if not isinstance(entry, dict) or not set(entry) <= set(state_keys) or not all(
                isinstance(v, torch.Tensor) and v.dtype == torch.float32 and v.shape == params[i].shape
                and bool(torch.isfinite(v).all()) for v in entry.values()):
            raise ValueError(f"the saved state of parameter {i} must map some of {sorted(state_keys)} to finite "
                             f"float32 tensors of shape {tuple(params[i].shape)}, got {str(entry)[:80]}")
    groups = state_dict["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(optimizer.param_groups) or not all(
            isinstance(g, dict) and isinstance(g.get("params"), list) and len(g["params"]) == len(h["params"])
            for g, h in zip(groups, optimizer.param_groups)):
        raise ValueError(f"the saved param_groups do not match this optimizer's "
                         f"{[len(g['params']) for g in optimizer.param_groups]} parameters per group")
    scheduler = {"initial_lr"}  # what torch.optim.lr_scheduler adds to a group
    for g, h in zip(groups, optimizer.param_groups):
        if set(g) - scheduler != set(h) - scheduler:
            raise ValueError(f"a saved parameter group has the keys {sorted(map(str, g))}, expected {sorted(h)}")
        for key in ("lr", *(scheduler & set(g))):
            _check_lr(g[key], f" ({key}) in the saved param_groups")
    if not isinstance(state_dict[extra], dict):
        raise ValueError(f"the saved {extra!r} entry must be a dict, got {type(state_dict[extra]).__name__}")
    return state_dict[extra]


def _dot(x: torch.Tensor, y: torch.Tensor, chunk: int = 2**20) -> float:
    """x @ y in float64, a chunk at a time: exact enough for a cosine, with no float64 copy of x or y (at
    D = 50M, whole copies would hold 4 x 4D bytes beyond the step)."""
    return sum(float(x[i:i + chunk].double() @ y[i:i + chunk].double()) for i in range(0, len(x), chunk))


def _check_count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"the saved {name} must be a non-negative int, got {value!r}")
    return value


def _weights_digest(tensors) -> str:
    """SHA-256 of the float32 bytes of ``tensors``, in order: the fingerprint of the weights a log starts from."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy())  # the buffer itself, no bytes copy
    return h.hexdigest()


def _log_digest(log: list, config: dict, initial: str | None = None) -> str:
    """SHA-256 of a coordinate log (coordinates, lrs, frozen parameters), the configuration it was made with
    and the fingerprint of the weights it starts from.

    Trust model: the digest is unkeyed, so it gives integrity, not authenticity. It catches a log changed by
    accident (a truncated or corrupted file, an edit by hand that forgot the digest, a log paired with another
    run's configuration), but whoever can write the file can recompute it: a record from someone you do not
    trust must come through a channel that authenticates it (a signature, a checksum published apart).
    :func:`replay` validates every index of a record before it changes anything, so a forged record can give
    wrong weights, never an out-of-range write."""
    h = hashlib.sha256(repr(sorted(config.items())).encode())
    if initial is not None:  # absent from records without a log, whose digests are as they always were
        h.update(initial.encode())
    for entry in log:
        h.update(entry["coords"].detach().cpu().contiguous().numpy().tobytes())
        h.update(repr((list(entry["lrs"]), list(entry["frozen"]))).encode())
    return h.hexdigest()


def _check_log(log, steps: int, config: dict, digest, initial=None) -> None:
    """A coordinate log must hold ``steps`` well-formed finite entries, start from fingerprinted weights
    (``initial``) and match its digest."""
    if not isinstance(log, list):
        raise ValueError(f"the coordinate log must be a list, got {type(log).__name__}")
    if len(log) != steps:
        raise ValueError(f"the coordinate log holds {len(log)} entries but the optimizer made {steps} steps "
                         "(truncated, or recorded without record=True from the start)")
    n, groups, params = sum(config["dims"]), len(config["groups"]), len(config["shapes"])
    for t, entry in enumerate(log):
        if not isinstance(entry, dict) or set(entry) != {"coords", "lrs", "frozen"}:
            raise ValueError(f"log entry {t} must be a dict with 'coords', 'lrs' and 'frozen', got "
                             f"{sorted(map(str, entry)) if isinstance(entry, dict) else type(entry).__name__}")
        c = entry["coords"]
        if not isinstance(c, torch.Tensor) or c.dtype != torch.float32 or c.shape != (n,):
            raise ValueError(f"log entry {t}: coords must be a float32 tensor of shape ({n},), got "
                             f"{getattr(c, 'dtype', type(c).__name__)} {tuple(getattr(c, 'shape', ()))}")
        if not bool(torch.isfinite(c).all()):
            raise ValueError(f"log entry {t}: coords hold NaN or inf")
        if not isinstance(entry["lrs"], list) or len(entry["lrs"]) != groups:
            raise ValueError(f"log entry {t}: lrs must list one lr per parameter group ({groups}), "
                             f"got {entry['lrs']!r}")
        for lr in entry["lrs"]:
            _check_lr(lr, f" in log entry {t}")
        frozen = entry["frozen"]
        if not isinstance(frozen, list) or not all(
                isinstance(i, int) and not isinstance(i, bool) and 0 <= i < params for i in frozen):
            raise ValueError(f"log entry {t}: frozen must list parameter indices in [0, {params}), got {frozen!r}")
    if log and not (isinstance(initial, str) and len(initial) == 64 and set(initial) <= set("0123456789abcdef")):
        raise ValueError(f"the record's initial_weights must be the SHA-256 (64 hex digits) of the weights its log "
                         f"starts from, got {str(initial)[:70]!r} (a record made before rbdlib kept it cannot be "
                         "checked: record the run again)")
    if digest != _log_digest(log, config, initial if log else None):
        raise ValueError("the coordinate log does not match its digest: it was edited after it was saved")


def _check_plan(config: dict, shapes: list[list[int]]) -> None:
    """A record's dims, layout and groups, checked against the parameters' ``shapes`` before replay changes
    anything: every segment (i, a, b) names an existing parameter and elements a..b inside it, and the segments
    cover every element of every parameter exactly once (as :class:`RBD` lays them out)."""
    dims, layout, groups = config["dims"], config["layout"], config["groups"]
    if not isinstance(dims, list) or not dims or not all(
            isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= ref.MAX_INDEX for n in dims):
        raise ValueError(f"the record's dims must list positive directions per compartment, got {str(dims)[:60]}")
    if not isinstance(groups, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1
                                               for n in groups) or sum(groups) != len(shapes):
        raise ValueError(f"the record's groups {str(groups)[:60]} do not hold its {len(shapes)} parameters")
    if not isinstance(layout, list) or len(layout) != len(dims):
        raise ValueError(f"the record's layout must list the segments of its {len(dims)} compartment(s)")
    covered = [[] for _ in shapes]
    for k, compartment in enumerate(layout):
        if not isinstance(compartment, list) or not compartment:
            raise ValueError(f"the record's layout: compartment {k} must be a non-empty list of [i, a, b] segments")
        for seg in compartment:
            ok = isinstance(seg, (list, tuple)) and len(seg) == 3 and all(
                isinstance(x, int) and not isinstance(x, bool) for x in seg)
            if not ok or not 0 <= seg[0] < len(shapes) or not 0 <= seg[1] < seg[2] <= math.prod(shapes[seg[0]]):
                raise ValueError(f"the record's layout: compartment {k} holds the segment {str(seg)[:60]}, not "
                                 f"[i, a, b] with parameter i in [0, {len(shapes)}) and 0 <= a < b <= its size")
            covered[seg[0]].append(tuple(seg[1:]))
    for i, (segments, shape) in enumerate(zip(covered, shapes)):
        ends = [0] + [b for _, b in sorted(segments)]
        if [a for a, _ in sorted(segments)] != ends[:-1] or ends[-1] != math.prod(shape):
            raise ValueError(f"the record's layout does not cover the elements of parameter {i} exactly once")


def _getstate(optimizer: torch.optim.Optimizer) -> dict:
    """What copy.deepcopy and pickle keep of an rbdlib optimizer: every attribute but the hooks (as torch).

    torch's ``Optimizer.__getstate__`` keeps ``defaults``, ``state`` and ``param_groups`` only, which is all its
    own optimizers hold; rbdlib's keep their layout, counters and log beside them, without which a copy could
    not step. Hooks are dropped, as torch drops them (they are often lambdas, which do not pickle), and so is
    the ``step`` wrapper an lr scheduler puts on the instance (it calls the original optimizer's step)."""
    return {k: v for k, v in optimizer.__dict__.items() if not k.startswith("_optimizer_") and k != "step"}


_EAGER: dict = {}  # step -> torch.compiler.disable(step), made when first compiled


def eager(step):
    """Mark an optimizer's ``step`` to run eagerly inside a ``torch.compile``d function, at a graph break, as a
    user expects of an optimizer the compiler cannot trace (rbdlib's kernels are compiled by Numba).

    ``torch.compiler.disable(step)`` at class definition would import the compiler with rbdlib (seconds, for
    everyone): the disabled step is made the first time a step is traced, when the compiler is loaded anyway."""
    @functools.wraps(step)
    def run(*args, **kwargs):
        if torch.compiler.is_compiling():
            if step not in _EAGER:
                _EAGER[step] = torch.compiler.disable(step)
            return _EAGER[step](*args, **kwargs)
        return step(*args, **kwargs)
    return run


def _check_shapes(optimizer: torch.optim.Optimizer) -> None:
    """Each parameter still has the shape the optimizer was built for (``p.data = ...`` can change it)."""
    for i, (p, shape) in enumerate(zip(optimizer.params, optimizer.shapes)):
        if list(p.shape) != shape:
            raise ValueError(f"{core.name_of(i, optimizer.names)} has shape {tuple(p.shape)}, but the optimizer was "
                             f"built for {tuple(shape)} (was p.data replaced?); build a new optimizer")


def _flat_params(params) -> tuple[list, list[dict], list[str] | None]:
    """Normalise what torch optimizers accept into (param_groups, layers-or-None, names-or-None)."""
    if isinstance(params, (torch.Tensor, dict)):
        raise TypeError(f"params must be an iterable of tensors, (name, tensor) pairs or parameter groups, got "
                        f"a single {type(params).__name__}; wrap it in a list: [params]")
    params = list(params)
    if not params:
        raise ValueError("the optimizer got an empty parameter list")
    if isinstance(params[0], dict):
        bad = next((g for g in params if not isinstance(g, dict) or "params" not in g), None)
        if bad is not None:
            raise TypeError(f"a parameter group must be a dict with a 'params' entry, got {bad!r}")
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
        momentum: mu in [0, 1): heavy-ball momentum over the re-drawn steps, b <- mu b + P c,
            theta <- theta - lr b. 0 (default) is plain RBD.
        nesterov: with momentum, step by P c + mu b instead of b (torch.optim.SGD's ``nesterov=True``).
        memory: where the momentum is kept. "parameters" (default): torch.optim.SGD's buffer
            ``state[p]["momentum_buffer"]``, 4 bytes per parameter element. "coordinates": d_k numbers per
            compartment in the basis they were made in, carried onto each new basis by P_new^T P_old m
            (Flora's rule; 4 d_k bytes, but a re-draw costs one more expand and project, and with
            ``redraw=1`` little of m survives the carry: pair it with ``redraw=N``).
        adaptive: beta in [0, 1): divide each compartment's coordinates by the running root mean square of
            its coordinates (bias-corrected, plus ``eps``), one number per compartment; 0 (default): off. The
            lr is then a step size free of the gradient's scale. Why per compartment: :func:`rbdlib.step.scale`.
        eps: added to the root mean square of ``adaptive``.
        weight_decay: wd >= 0, coupled as in torch.optim.SGD: the projected gradient is g + wd theta.
            Coupled rather than decoupled (AdamW's theta <- (1 - lr wd) theta) so that the decay, like
            every other term of the loss, moves theta only inside the step's random subspace, the
            coordinates carry it (replay and the ranks need nothing more) and it enters the momentum as
            torch's does. No state.

    The rules are written once, in :mod:`rbdlib.step`, which replay and distributed training call too.
    The rules' state is saved by :meth:`state_dict` and rebuilt by :func:`replay` from the coordinates.
    Bytes of state: momentum 4 D ("parameters") or 4 d_k per compartment plus its basis' step ("coordinates");
    adaptive a float64 and a count per compartment; weight decay none.

    Recipe for your own model: one RBD step moves on average as SGD at lr x dim/D (D its parameters), so
    start from the lr that suits SGD scaled by D/dim, then tune (the paper's 0.5 at dim = 250 suits D of
    about 1e5); prefer ``distribution="rademacher"`` on a CPU (one random bit per entry, the fastest); a larger
    ``dim`` costs time in proportion and buys a cosine sqrt(dim/D) with the gradient; keep float32 parameters.
    Notebook 01 ends with this recipe on a model of its own, notebook 09 with what momentum does (it moves
    as plain RBD at lr / (1 - momentum)).

    Threads: the bases are made by rbdlib's kernels on as many threads as ``torch.get_num_threads()``, on
    torch's own OpenMP threads where torch has them (Linux), so ``import torch`` before or after ``import
    rbdlib`` makes no difference.

    After ``step()``, ``last_cosine`` is the cosine between the applied step and the gradient
    (two O(D) dot products, nothing next to the bases, in float64 a chunk at a time) and ``last_coords`` the
    coordinates.

    Conventions of ``torch.optim``: a parameter frozen with ``requires_grad_(False)`` never moves, whatever its
    ``.grad``; the lr of each group is read from ``param_groups`` at every step (so schedulers, and hands, set
    it, before and after :meth:`load_state_dict`); ``copy.deepcopy`` and pickle copy everything but hooks;
    ``step`` is excluded from ``torch.compile`` graphs (its kernels are compiled by Numba): a compiled
    training step runs it eagerly, at a graph break. Memory of a step beyond the parameters and gradients:
    the gradient of a compartment (4 D_k, when it spans several tensors), its step P c (4 D_k) and the
    rule's state.

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
        _check_lr(lr)
        self.rule = _check_rule(momentum, nesterov, memory, adaptive, eps)
        self.weight_decay = _check_weight_decay(weight_decay)
        dim = check_index("dim", dim, ref.MAX_INDEX)
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        seed = check_index("seed", seed, ref.MAX_SEED)
        if redraw is not None:
            redraw = check_index("redraw", redraw, ref.MAX_INDEX)
            if redraw < 1:
                raise ValueError("redraw must be a positive number of steps, or None for fixed bases")
        check_distribution(distribution)
        _check_flag("split_dim", split_dim)
        _check_flag("record", record)
        self._scale = _check_scale(scale)
        if nonfinite not in ("raise", "skip"):
            raise ValueError(f'nonfinite must be "raise" or "skip", got {nonfinite!r}')
        groups, group_layers, names = _flat_params(params)
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
        _check_params(flat, "RBD")
        _check_size(flat, "RBD")
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
        _check_lr(param_group.get("lr", self.defaults["lr"]), " in the added parameter group")
        building = not hasattr(self, "layout")
        if not building and any(self.compartment_state):
            raise RuntimeError("cannot add parameters once a rule that keeps state per compartment (coordinate "
                               "momentum, adaptive) has stepped: its state is laid out by compartment; build a "
                               "new optimizer")
        if not building and self.record and self.log:
            raise RuntimeError("cannot add parameters to a recording RBD that has stepped: the log "
                               "could not be replayed; build a new optimizer")
        _check_params([p for g in self.param_groups for p in g["params"]] + new, "RBD")
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
            self.initial_weights = _weights_digest(self.params)
        return core.update(self.params, self.layout, core.bases(self._plan(), self.steps, worker, workers), coords,
                           [rate * weight for rate in rates], frozen, self.state, self.rule,
                           self.compartment_state)

    def check_gradients(self) -> None:
        """The gradients a step will use are dense float32 tensors of their parameters' shapes and devices, or an
        error names the parameter; raises before anything changes."""
        core.check_grads(self.params, self.names)

    def frozen(self) -> list[int]:
        """Indices of the parameters that stay as they are this step: no gradient, or ``requires_grad`` off."""
        return [i for i, p in enumerate(self.params) if core.grad_of(p) is None]

    def check(self) -> None:
        """Step-time checks of what may have changed since construction (lrs, parameters, their shapes);
        raises before anything changes."""
        _check_groups(self)
        _check_shapes(self)

    __getstate__ = _getstate

    @eager
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
                        "log_digest": _log_digest(self.log, self.config(), initial), "config": self.config()}
        if initial is not None:
            state["rbd"]["initial_weights"] = initial
        if self.rule.per_compartment:
            state["rbd"]["compartments"] = [{k: v.clone() if isinstance(v, torch.Tensor) else v
                                             for k, v in entry.items()} for entry in self.compartment_state]
        return state

    def load_state_dict(self, state_dict):
        """Load a state saved by :meth:`state_dict`; everything is checked before anything is loaded."""
        buffers = self.rule.momentum and self.rule.memory == "parameters"
        extra = _check_saved_groups(self, state_dict, "rbd", ("momentum_buffer",) if buffers else ())
        keys = {"steps", "skipped", "log", "config"} | ({"compartments"} if self.rule.per_compartment else set())
        optional = {"log_digest", "initial_weights"}
        if not keys <= set(extra) <= keys | optional or (extra["log"] and "log_digest" not in extra):
            raise ValueError(f"the saved 'rbd' entry has the keys {sorted(map(str, extra))}, expected "
                             f"{sorted(keys | {'log_digest'})} and, with a log, 'initial_weights' (states saved "
                             "before the digest existed may lack it when their log is empty)")
        if extra["config"] != self.config():
            raise ValueError(f"state_dict was saved with a different configuration:\n saved {extra['config']}\n"
                             f" here  {self.config()}")
        steps, skipped = _check_count("steps", extra["steps"]), _check_count("skipped", extra["skipped"])
        log = extra["log"]
        if log:
            _check_log(log, steps, self.config(), extra["log_digest"], extra.get("initial_weights"))
        elif "initial_weights" in extra:
            raise ValueError("the saved 'rbd' entry has initial_weights but no log")
        kept = _check_compartment_state(extra.get("compartments", [{} for _ in self.dims]), self.dims, self.rule)
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
        config.update(_rule_config(self.rule))
        if self.weight_decay:
            config.update(weight_decay=self.weight_decay)
        return config


def FPD(params, lr: float, dim: int, reset_coords: bool = True, **kwargs) -> RBD:
    """Fixed projection descent: RBD whose bases are drawn once (``redraw=None``), as in Li et al.

    ``reset_coords=False`` gives :class:`StaleFPD`, the reference code's variant (an ablation)."""
    if "redraw" in kwargs:
        raise TypeError("FPD fixes the bases; use RBD(..., redraw=N) to choose how often they change")
    if not _check_flag("reset_coords", reset_coords):
        return StaleFPD(params, lr, dim, **kwargs)
    return RBD(params, lr, dim, redraw=None, **kwargs)


class StaleFPD(RBD):
    """FPD as the reference code runs it, kept to measure what that costs (``FPD(..., reset_coords=False)``).

    The reference re-parameterises every weight as theta + P c and computes c = P^T g by back-propagation.
    For FPD it never resets c to 0 (``reset_coordinates_each_step: False``), so each gradient is taken at
    theta_t + P c_{t-1}, where c_{t-1} = P^T g_{t-1} are the previous step's coordinates, while the update
    theta <- theta - lr P c_t and the validation use theta itself. ``step(closure)`` therefore needs a
    closure (the training loop passes one): it moves to theta + P c_{t-1}, evaluates the closure there,
    puts every parameter back bit for bit, and steps. Fixed bases only; not recordable (``replay`` knows
    the plain methods only) and not distributed.
    """

    needs_closure = True

    def __init__(self, params, lr: float, dim: int, **kwargs):
        if "redraw" in kwargs or kwargs.get("record"):
            raise TypeError("StaleFPD has fixed bases (redraw=None) and does not record")
        super().__init__(params, lr, dim, redraw=None, **kwargs)
        self.stale = None  # the previous step's coordinates, one tensor per compartment

    @eager
    @torch.no_grad()
    def step(self, closure=None):
        if closure is None:
            raise TypeError("StaleFPD.step needs a closure that computes the loss and its gradients: the "
                            "gradient is taken at theta + P c_prev (rbdlib.train.train passes one)")
        self.check()
        saved = None
        if self.stale is not None:
            saved = [p.detach().clone() for p in self.params]
            # theta + P c_prev, whatever the learning rates: a displacement, not an update (no rule, no state)
            core.move(self.params, self.layout, [b.expand(c) for b, c in zip(
                core.bases(self._plan(), self.steps), self.stale)], [1.0] * len(self.params))
        try:
            with torch.enable_grad():
                loss = closure()
        finally:
            for p, s in zip(self.params, saved or ()):
                p.copy_(s)
        coords = self.update()
        if coords is not None:
            self.stale = [c.clone() for c in coords]
        return loss

    def state_dict(self):
        state = super().state_dict()
        state["rbd"]["stale"] = None if self.stale is None else [c.clone() for c in self.stale]
        return state

    def load_state_dict(self, state_dict):
        """As :meth:`RBD.load_state_dict`, plus the previous coordinates (checked first)."""
        extra = state_dict.get("rbd") if isinstance(state_dict, dict) else None
        if not isinstance(extra, dict) or "stale" not in extra:
            raise ValueError("the state has no 'stale' coordinates: it was not saved by a StaleFPD")
        stale = extra["stale"]
        if stale is not None and (not isinstance(stale, list) or len(stale) != len(self.dims) or not all(
                isinstance(c, torch.Tensor) and c.dtype == torch.float32 and c.shape == (n,)
                and bool(torch.isfinite(c).all()) for c, n in zip(stale, self.dims))):
            raise ValueError(f"the saved stale coordinates must be None or finite float32 tensors of the "
                             f"shapes {[(n,) for n in self.dims]}")
        super().load_state_dict(dict(state_dict, rbd={k: v for k, v in extra.items() if k != "stale"}))
        self.stale = None if stale is None else [c.to(self.params[0].device).clone() for c in stale]


@torch.no_grad()
def replay(params, initial_state: dict | list, record, upto: int | None = None) -> None:
    """Rebuild trained weights from the initial weights, the seed and the coordinate log alone.

    ``params`` are the parameters (in the optimizer's order) to overwrite; ``initial_state`` their
    values before training (a list of tensors or a ``state_dict`` with the same order); ``record``
    is ``opt.state_dict()["rbd"]`` of an optimizer built with ``record=True``. Replays the first
    ``upto`` steps (all by default). d floats per step replace checkpoints of D floats.

    The steps are those of :mod:`rbdlib.step`, as in training: a run with momentum rebuilds its buffers
    from the coordinates on the way (weight decay is already in the coordinates).

    Everything is checked before a parameter changes: the record's layout (every index), its log and digest,
    and that ``initial_state`` is the weights the log starts from (the record keeps their SHA-256,
    ``initial_weights``, taken when recording started). The digest protects against accidents, not against
    forgery: see :func:`_log_digest` for its trust model.
    """
    params = list(params)
    values = list(initial_state.values()) if isinstance(initial_state, dict) else list(initial_state)
    if not isinstance(record, dict) or not {"config", "log", "steps"} <= set(record):
        raise ValueError("record must be opt.state_dict()['rbd'] of an RBD built with record=True "
                         f"(a dict with 'config', 'log', 'steps'), got {type(record).__name__}")
    config, log = record["config"], record["log"]
    keys = {"seed", "redraw", "distribution", "scale", "dims", "layout", "shapes", "groups"}
    rule = {"momentum", "nesterov", "weight_decay", "memory", "adaptive", "eps"}
    if not isinstance(config, dict) or not keys <= set(config) <= keys | rule:
        raise ValueError(f"record['config'] must be an RBD config with the keys {sorted(keys)} "
                         f"(and, where set, {sorted(rule)})")
    _check_params(params, "replay")
    if [list(p.shape) for p in params] != config["shapes"]:
        raise ValueError("params do not match the shapes the record was made with")
    _check_plan(config, config["shapes"])
    steps = _check_count("steps", record["steps"])
    if steps and not log:
        raise ValueError(f"the record holds no coordinate log for its {steps} steps: build the optimizer "
                         "with record=True to make a replayable run")
    _check_log(log, steps, config, record.get("log_digest"), record.get("initial_weights"))
    if upto is not None and (isinstance(upto, bool) or not isinstance(upto, int) or not 0 <= upto <= steps):
        raise ValueError(f"upto must be None or an int in [0, {steps}], got {upto!r}")
    if not all(isinstance(v, torch.Tensor) for v in values) or [list(v.shape) for v in values] != config["shapes"]:
        raise ValueError(f"initial_state holds {len(values)} tensors whose shapes do not match the "
                         f"{len(params)} parameters (pass the initial parameters only, in optimizer order)")
    if log and _weights_digest(values) != record["initial_weights"]:
        raise ValueError("initial_state is not the weights this record starts from (their SHA-256 differs from "
                         "the record's initial_weights): pass the run's initial parameters, in optimizer order")
    check_index("seed", config["seed"], ref.MAX_SEED)
    if config["redraw"] is not None and check_index("redraw", config["redraw"], ref.MAX_INDEX) < 1:
        raise ValueError("the record's redraw must be a positive number of steps or None")
    check_distribution(config["distribution"])
    _check_scale(config["scale"])
    rule = _check_rule(config.get("momentum", 0.0), config.get("nesterov", False),
                       config.get("memory", "parameters"), config.get("adaptive", 0.0), config.get("eps", 1e-8))
    if _rule_config(rule) != {k: config[k] for k in ("momentum", "nesterov", "memory", "adaptive", "eps")
                              if k in config}:
        raise ValueError("the record's rule options are not as an RBD writes them (an option at its default, "
                         "or eps without adaptive)")
    plan = dict(config, layout=[[tuple(s) for s in c] for c in config["layout"]])
    group_of = [g for g, n in enumerate(config["groups"]) for _ in range(n)]
    state, kept = {}, [{} for _ in plan["dims"]]  # the rule's state, rebuilt from the coordinates
    for p, v in zip(params, values):
        p.copy_(v)
    for t, entry in enumerate(log[:upto]):
        coords = list(torch.split(entry["coords"].to(params[0].device), plan["dims"]))
        core.update(params, plan["layout"], core.bases(plan, t), coords, [entry["lrs"][g] for g in group_of],
                    entry["frozen"], state, rule, kept)


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
        _check_lr(lr)
        if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not 0 < sigma < math.inf:
            raise ValueError(f"sigma must be a positive finite number, got {sigma!r}")
        dim = check_index("dim", dim, ref.MAX_INDEX)
        if dim < 2:
            raise ValueError(f"NES needs a population (dim) of at least 2, got {dim}")
        _check_flag("shared_batch", shared_batch)
        _check_flag("antithetic", antithetic)
        if antithetic and dim % 2:
            raise ValueError(f"antithetic NES evaluates mirrored pairs, so dim must be even, got {dim}")
        groups, _, self.names = _flat_params(params)
        _check_params([p for g in groups for p in g["params"]], "NES")  # before torch sees duplicates
        super().__init__(groups, dict(lr=lr))
        for g in self.param_groups:
            _check_lr(g["lr"], " in a parameter group")
        if len({g["lr"] for g in self.param_groups}) > 1:
            raise ValueError(f"NES takes one lr for all parameters, got {[g['lr'] for g in self.param_groups]}")
        self.params = [p for g in self.param_groups for p in g["params"]]
        self.shapes = [list(p.shape) for p in self.params]
        self.size = _check_size(self.params, "NES")
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

    def check(self) -> None:
        """Step-time checks of what may have changed since construction (lrs, parameters)."""
        _check_groups(self)
        _check_shapes(self)
        if len({g["lr"] for g in self.param_groups}) > 1:
            raise ValueError(f"NES takes one lr for all parameters, got {[g['lr'] for g in self.param_groups]}")

    __getstate__ = _getstate

    def add_param_group(self, param_group: dict) -> None:
        if hasattr(self, "params"):
            raise NotImplementedError("NES cannot add parameters after construction (its offspring span all "
                                      "of them); build a new NES with every parameter")
        super().add_param_group(param_group)

    @eager
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
        extra = _check_saved_groups(self, state_dict, "nes")
        if set(extra) != {"steps"}:
            raise ValueError(f"the saved 'nes' entry has the keys {sorted(map(str, extra))}, expected ['steps']")
        steps = _check_count("steps", extra["steps"])
        if len({g["lr"] for g in state_dict["param_groups"]}) > 1:
            raise ValueError("the saved param_groups hold different lrs; NES takes one lr for all parameters")
        super().load_state_dict({k: v for k, v in state_dict.items() if k != "nes"})
        self.steps = steps
