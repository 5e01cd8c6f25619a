"""What a recording :class:`rbdlib.RBD` keeps beyond torch's state, checked before anything is loaded, and
:func:`replay`, which rebuilds the trained weights from it.

A record (``opt.state_dict()["rbd"]``) holds the configuration that fixes every basis (:meth:`rbdlib.RBD.config`),
the coordinates, learning rates and frozen parameters of every step (the log), the SHA-256 of the weights the
log starts from and a digest of it all. d floats per step replace checkpoints of D floats.
"""

from __future__ import annotations

import hashlib
import math

import torch

from . import checks
from . import philox as ref
from . import step as core
from .conventions import check_count, check_lr, check_params
from .options import Rule, check_bases, check_rule


def check_compartment_state(saved, dims: list[int], rule: Rule) -> list[dict]:
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
                       and all(checks.is_int(x) and 0 <= x <= ref.MAX_INDEX for x in basis)
                       and basis[2] == m.numel() and basis[2] >= 1)
        if not bad and "count" in entry:
            v, t = entry["second_moment"], entry["count"]
            bad = not (isinstance(v, float) and 0 <= v < math.inf and checks.is_int(t) and t >= 1)
        if bad:
            raise ValueError(f"the saved state of compartment {k} must map some of {sorted(allowed)} (momentum: "
                             "finite float32 coordinates with their basis [step, offset, dim]; second_moment: "
                             f"a finite float >= 0 with its count >= 1), got {str(entry)[:80]}")
        out.append({**entry, **({"momentum": entry["momentum"].clone(), "basis": tuple(entry["basis"])}
                                if "momentum" in entry else {})})
    return out


def check_entry(extra: dict, config: dict, rule: Rule) -> tuple[int, int, list, list[dict]]:
    """The 'rbd' entry of a saved RBD state, checked against the optimizer's ``config`` before anything is loaded:
    returns its (steps, skipped, log, compartment state)."""
    keys = {"steps", "skipped", "log", "config"} | ({"compartments"} if rule.per_compartment else set())
    optional = {"log_digest", "initial_weights"}
    if not keys <= set(extra) <= keys | optional or (extra["log"] and "log_digest" not in extra):
        raise ValueError(f"the saved 'rbd' entry has the keys {sorted(map(str, extra))}, expected "
                         f"{sorted(keys | {'log_digest'})} and, with a log, 'initial_weights' (states saved "
                         "before the digest existed may lack it when their log is empty)")
    if extra["config"] != config:
        raise ValueError(f"state_dict was saved with a different configuration:\n saved {extra['config']}\n"
                         f" here  {config}")
    steps, skipped = check_count("steps", extra["steps"]), check_count("skipped", extra["skipped"])
    log = extra["log"]
    if log:
        check_log(log, steps, config, extra["log_digest"], extra.get("initial_weights"))
    elif "initial_weights" in extra:
        raise ValueError("the saved 'rbd' entry has initial_weights but no log")
    kept = check_compartment_state(extra.get("compartments", [{} for _ in config["dims"]]), config["dims"], rule)
    return steps, skipped, log, kept


def weights_digest(tensors) -> str:
    """SHA-256 of the float32 bytes of ``tensors``, in order: the fingerprint of the weights a log starts from."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy())  # the buffer itself, no bytes copy
    return h.hexdigest()


def log_digest(log: list, config: dict, initial: str | None = None) -> str:
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


def check_log(log, steps: int, config: dict, digest, initial=None) -> None:
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
            check_lr(lr, f" in log entry {t}")
        frozen = entry["frozen"]
        if not isinstance(frozen, list) or not all(
                checks.is_int(i) and 0 <= i < params for i in frozen):
            raise ValueError(f"log entry {t}: frozen must list parameter indices in [0, {params}), got {frozen!r}")
    if log and not (isinstance(initial, str) and len(initial) == 64 and set(initial) <= set("0123456789abcdef")):
        raise ValueError(f"the record's initial_weights must be the SHA-256 (64 hex digits) of the weights its log "
                         f"starts from, got {str(initial)[:70]!r} (a record made before rbdlib kept it cannot be "
                         "checked: record the run again)")
    if digest != log_digest(log, config, initial if log else None):
        raise ValueError("the coordinate log does not match its digest: it was edited after it was saved")


def check_plan(config: dict, shapes: list[list[int]]) -> None:
    """A record's dims, layout and groups, checked against the parameters' ``shapes`` before replay changes
    anything: every segment (i, a, b) names an existing parameter and elements a..b inside it, and the segments
    cover every element of every parameter exactly once (as :class:`RBD` lays them out)."""
    dims, layout, groups = config["dims"], config["layout"], config["groups"]
    if not isinstance(dims, list) or not dims or not all(
            checks.is_int(n) and 1 <= n <= ref.MAX_INDEX for n in dims):
        raise ValueError(f"the record's dims must list positive directions per compartment, got {str(dims)[:60]}")
    if not isinstance(groups, list) or not all(checks.is_int(n) and n >= 1
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
                checks.is_int(x) for x in seg)
            if not ok or not 0 <= seg[0] < len(shapes) or not 0 <= seg[1] < seg[2] <= math.prod(shapes[seg[0]]):
                raise ValueError(f"the record's layout: compartment {k} holds the segment {str(seg)[:60]}, not "
                                 f"[i, a, b] with parameter i in [0, {len(shapes)}) and 0 <= a < b <= its size")
            covered[seg[0]].append(tuple(seg[1:]))
    for i, (segments, shape) in enumerate(zip(covered, shapes)):
        ends = [0] + [b for _, b in sorted(segments)]
        if [a for a, _ in sorted(segments)] != ends[:-1] or ends[-1] != math.prod(shape):
            raise ValueError(f"the record's layout does not cover the elements of parameter {i} exactly once")


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
    forgery: see :func:`log_digest` for its trust model.
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
    check_params(params, "replay")
    if [list(p.shape) for p in params] != config["shapes"]:
        raise ValueError("params do not match the shapes the record was made with")
    check_plan(config, config["shapes"])
    steps = check_count("steps", record["steps"])
    if steps and not log:
        raise ValueError(f"the record holds no coordinate log for its {steps} steps: build the optimizer "
                         "with record=True to make a replayable run")
    check_log(log, steps, config, record.get("log_digest"), record.get("initial_weights"))
    if upto is not None and (not checks.is_int(upto) or not 0 <= upto <= steps):
        raise ValueError(f"upto must be None or an int in [0, {steps}], got {upto!r}")
    if not all(isinstance(v, torch.Tensor) for v in values) or [list(v.shape) for v in values] != config["shapes"]:
        raise ValueError(f"initial_state holds {len(values)} tensors whose shapes do not match the "
                         f"{len(params)} parameters (pass the initial parameters only, in optimizer order)")
    if log and weights_digest(values) != record["initial_weights"]:
        raise ValueError("initial_state is not the weights this record starts from (their SHA-256 differs from "
                         "the record's initial_weights): pass the run's initial parameters, in optimizer order")
    check_bases(config["seed"], config["redraw"], config["distribution"], config["scale"], "the record's ")
    rule = check_rule(config.get("momentum", 0.0), config.get("nesterov", False),
                      config.get("memory", "parameters"), config.get("adaptive", 0.0), config.get("eps", 1e-8))
    if rule.options() != {k: config[k] for k in ("momentum", "nesterov", "memory", "adaptive", "eps") if k in config}:
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
