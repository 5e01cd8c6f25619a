"""What every rbdlib optimizer owes ``torch.optim``'s conventions, written once: the parameters it accepts
(tensors, ``(name, tensor)`` pairs, groups), the checks at construction, at every step (what a user may change in
``param_groups``, ``p.data`` or ``.grad``; frozen parameters) and before a saved state is loaded, ``copy.deepcopy``
and pickle, and running eagerly inside ``torch.compile``. :class:`rbdlib.RBD`, :class:`rbdlib.NES` and
:class:`rbdlib.distributed.DistributedRBD` are built on these.
"""

from __future__ import annotations

import functools

import torch

from . import checks

LR = "a non-negative finite number"  # what an lr must be


def check_lr(lr, where: str = "") -> float:
    """A learning rate: a non-negative finite number (``where`` says where it was found, for the message)."""
    return checks.real("lr", lr, what=LR, where=where)


def check_count(name: str, value) -> int:
    """A count saved in a state (steps, skipped steps): a non-negative int."""
    return checks.whole(f"the saved {name}", value, what="a non-negative int")


def flat_params(params) -> tuple[list, list[dict], list[str] | None]:
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


def check_params(flat: list, who: str) -> None:
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


def check_size(flat: list, who: str) -> int:
    """D, the number of elements of ``flat``: positive, or there is nothing to train."""
    size = sum(p.numel() for p in flat)
    if size == 0:
        raise ValueError(f"{who} got {len(flat)} parameter(s) with no elements (D = 0): nothing to train")
    return size


def check_groups(optimizer: torch.optim.Optimizer) -> None:
    """Step-time checks of what a user may have changed in ``param_groups`` since construction."""
    for g in optimizer.param_groups:
        check_lr(g["lr"], " in param_groups (changed after construction?)")
    flat = [p for g in optimizer.param_groups for p in g["params"]]
    if len(flat) != len(optimizer.params) or any(p is not q for p, q in zip(flat, optimizer.params)):
        raise RuntimeError("param_groups' parameters were changed in place; use add_param_group "
                           "(or build a new optimizer) to change what is trained")
    check_params(flat, type(optimizer).__name__)


def grad_of(p: torch.Tensor) -> torch.Tensor | None:
    """The gradient a step uses: ``p.grad``, or None for a parameter frozen with ``requires_grad_(False)``.

    A frozen parameter never moves, whatever its ``.grad`` (``zero_grad(set_to_none=False)`` leaves frozen layers
    a zero gradient): torch's SGD keeps such a layer still because a zero gradient moves nothing, but a random
    basis spreads the other parameters' gradients over every element, so here it is skipped like one without
    a gradient."""
    return p.grad if p.requires_grad else None


def name_of(i: int, names: list[str] | None = None) -> str:
    """How errors name parameter i: "parameter 3 ('2.bias')", with its name where names were given."""
    return f"parameter {i} ({names[i]!r})" if names is not None and i < len(names) else f"parameter {i}"


def check_grads(params: list[torch.Tensor], names: list[str] | None = None) -> None:
    """Every gradient a step uses is a dense float32 tensor of its parameter's shape and device, or an error
    naming the parameter (raised before anything changes)."""
    for i, p in enumerate(params):
        g = grad_of(p)
        if g is None:
            continue
        if g.is_sparse or g.is_complex():
            raise TypeError(f"RBD does not support sparse or complex gradients ({name_of(i, names)})")
        if g.shape != p.shape:
            raise ValueError(f"the gradient of {name_of(i, names)} has shape {tuple(g.shape)}, but the parameter "
                             f"has shape {tuple(p.shape)}; was .grad (or .grad.data) replaced?")
        if g.dtype != torch.float32 or g.device != p.device:
            raise TypeError(f"the gradient of {name_of(i, names)} is {g.dtype} on {g.device}; rbdlib needs a "
                            f"float32 gradient on the parameter's device ({p.device})")


def check_shapes(optimizer: torch.optim.Optimizer) -> None:
    """Each parameter still has the shape the optimizer was built for (``p.data = ...`` can change it)."""
    for i, (p, shape) in enumerate(zip(optimizer.params, optimizer.shapes)):
        if list(p.shape) != shape:
            raise ValueError(f"{name_of(i, optimizer.names)} has shape {tuple(p.shape)}, but the optimizer was "
                             f"built for {tuple(shape)} (was p.data replaced?); build a new optimizer")


def check_saved_groups(optimizer: torch.optim.Optimizer, state_dict, extra: str, state_keys=()) -> dict:
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
        if not checks.is_int(i) or not 0 <= i < len(params):
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
            check_lr(g[key], f" ({key}) in the saved param_groups")
    if not isinstance(state_dict[extra], dict):
        raise ValueError(f"the saved {extra!r} entry must be a dict, got {type(state_dict[extra]).__name__}")
    return state_dict[extra]


def getstate(optimizer: torch.optim.Optimizer) -> dict:
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
