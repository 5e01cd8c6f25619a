"""Bad input, as a careful user and an attacker would give it, across the public API and both command lines.

Every case runs on a fresh :class:`World` (small models, optimizers that have stepped with a coordinate
log, a NES, a FixedSubspace, a scratch folder). A bad input must raise the expected error type with a
message that names what was wrong, and leave every parameter, buffer, gradient, optimizer state and file
bit-identical; a valid input (``good``) must give the correct result, checked explicitly. The cases are
data: ``bad(id, run, error, match)`` and ``good(id, run, check)``; :data:`OUTCOMES` counts them.
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import io
import math
import re
import socket
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import rbdlib
from rbdlib import FPD, NES, RBD, FixedSubspace, RandomBases, data, distributed, experiments, philox4x32, replay
from rbdlib import shared_seeds as example
from rbdlib.data import Dataset, DatasetFormatError, load_dataset
from rbdlib.shared_seeds import main as distributed_main


# ------------------------------------------------------------------------------------------- the world
def net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))


X = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))


def loss(model) -> torch.Tensor:
    return model(X).square().mean()


def toy_dataset() -> Dataset:
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(40, 1, 2, 2, generator=g), torch.randint(0, 2, (40,), generator=g)
    return Dataset(x[:30], y[:30], x[30:], y[30:], x[:0], y[:0], "toy", ("a", "b"), "memory")


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


class World:
    """Objects a case may touch; ``state()`` is everything that must not change under bad input."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.net, self.twin = net(), net()
        self.initial = [p.detach().clone() for p in self.net.parameters()]
        self.rbd = RBD(self.net.parameters(), lr=0.1, dim=3, seed=1, record=True)
        for _ in range(2):
            loss(self.net).backward()
            self.rbd.step()
            self.rbd.zero_grad()
        loss(self.net).backward()  # gradients ready: a step that went through would change the weights
        self.record = copy.deepcopy(self.rbd.state_dict()["rbd"])
        self.nes_net = net(2)
        self.nes = NES(self.nes_net.parameters(), lr=0.1, dim=4, seed=3)
        self.nes.step(lambda: loss(self.nes_net))
        self.sub = FixedSubspace(net(3), dim=4, seed=5)
        with torch.no_grad():
            self.sub.coords.normal_()
        self.data_dir = tmp / "mnist"
        self.data_dir.mkdir()
        for prefix, n in (("train", 20), ("t10k", 5)):
            images = np.random.default_rng(0).integers(0, 256, (n, 28, 28))
            (self.data_dir / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
            (self.data_dir / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(
                gzip.compress(idx_bytes(np.arange(n) % 10)))

    def state(self) -> list:
        modules = (self.net, self.twin, self.nes_net, self.sub)
        return [[copy.deepcopy(m.state_dict()) for m in modules],
                [None if p.grad is None else p.grad.clone() for m in modules for p in m.parameters()],
                [p.dtype for m in modules for p in m.parameters()],
                copy.deepcopy(self.rbd.state_dict()), self.rbd.steps, self.rbd.skipped, len(self.rbd.log),
                copy.deepcopy(self.nes.state_dict()), self.nes.steps,
                sorted((str(p.relative_to(self.tmp)), p.read_bytes()) for p in self.tmp.rglob("*") if p.is_file())]

    def tamper(self, edit: Callable[[dict], Any], source=None) -> dict:
        """A copy of an optimizer's state with a valid change (lr 0.3, so a partial load would show)
        and then ``edit`` applied."""
        state = copy.deepcopy((source or self.rbd).state_dict())
        for g in state["param_groups"]:
            g["lr"] = 0.3
        edit(state)
        return state


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor) and a.is_sparse:
        return isinstance(b, torch.Tensor) and b.is_sparse and same(a.to_dense(), b.to_dense())
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and bool(
            torch.equal(a, b) or (a.isnan() == b.isnan()).all() and torch.equal(a.nan_to_num(), b.nan_to_num()))
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b or (a != a and b != b)


# ------------------------------------------------------------------------------------------- the cases
@dataclass
class Case:
    id: str
    run: Callable[[World], Any]
    error: type | None = None   # the exception a bad input raises (None: the input is valid)
    match: str = ""             # a regex the message (and, for a CLI, its stderr) must contain
    check: Callable[[World, Any], None] | None = None  # for a valid input: asserts the result is right
    prepare: Callable[[World], Any] | None = None      # the user's own change, made before the snapshot


CASES: list[Case] = []


def bad(id, run, error, match, prepare=None):
    CASES.append(Case(id, run, error, match, prepare=prepare))


def good(id, run, check):
    CASES.append(Case(id, run, check=check))


def rbd(w, **kw):
    return RBD(w.twin.parameters(), **{"lr": 0.1, "dim": 3, **kw})


def nes(w, **kw):
    return NES(w.twin.parameters(), **{"lr": 0.1, "dim": 4, **kw})


# --- RBD / FPD construction
LR = "lr must be a non-negative finite number"
for name, kw, error, match in [
    ("lr=-1", dict(lr=-1), ValueError, f"{LR}, got -1"),
    ("lr=inf", dict(lr=math.inf), ValueError, f"{LR}, got inf"),
    ("lr=nan", dict(lr=math.nan), ValueError, f"{LR}, got nan"),
    ("lr='0.1'", dict(lr="0.1"), ValueError, f"{LR}, got '0.1'"),
    ("lr=True", dict(lr=True), ValueError, f"{LR}, got True"),
    ("lr=None", dict(lr=None), ValueError, f"{LR}, got None"),
    ("dim=0", dict(dim=0), ValueError, "dim must be positive, got 0"),
    ("dim=-1", dict(dim=-1), ValueError, r"dim must be in \[0, \d+\], got -1"),
    ("dim=2.5", dict(dim=2.5), TypeError, "dim must be an integer, got float 2.5"),
    ("dim='3'", dict(dim="3"), TypeError, "dim must be an integer, got str '3'"),
    ("dim=True", dict(dim=True), TypeError, "dim must be an integer, got bool True"),
    ("dim=2**40", dict(dim=2**40), ValueError, "dim must be in"),
    ("seed=-1", dict(seed=-1), ValueError, "seed must be in .* got -1"),
    ("seed=2**64", dict(seed=2**64), ValueError, "seed must be in"),
    ("seed=1.5", dict(seed=1.5), TypeError, "seed must be an integer"),
    ("compartments='layers'", dict(compartments="layers"), ValueError, "unknown compartments 'layers'"),
    ("compartments=0", dict(compartments=0), ValueError, "integer compartment size must be positive, got 0"),
    ("compartments=-3", dict(compartments=-3), ValueError, "integer compartment size must be positive, got -3"),
    ("compartments=2.5", dict(compartments=2.5), ValueError, "unknown compartments 2.5"),
    ("compartments=True", dict(compartments=True), ValueError, "unknown compartments True"),
    ("compartments='layer' without names", dict(compartments="layer"), ValueError, "needs to know the layers"),
    ("redraw=0", dict(redraw=0), ValueError, "redraw must be a positive number of steps"),
    ("redraw=-2", dict(redraw=-2), ValueError, "redraw must be in"),
    ("redraw=1.5", dict(redraw=1.5), TypeError, "redraw must be an integer"),
    ("redraw='1'", dict(redraw="1"), TypeError, "redraw must be an integer"),
    ("distribution='gauss'", dict(distribution="gauss"), ValueError, "unknown distribution 'gauss'"),
    ("distribution=None", dict(distribution=None), ValueError, "unknown distribution None"),
    ("split_dim='false'", dict(split_dim="false"), TypeError, "split_dim must be True or False, got str 'false'"),
    ("split_dim=1", dict(split_dim=1), TypeError, "split_dim must be True or False, got int 1"),
    ("record='yes'", dict(record="yes"), TypeError, "record must be True or False"),
    ("scale=True", dict(scale=True), ValueError, "scale must be a positive finite number or None.*got True"),
    ("scale=0", dict(scale=0), ValueError, "scale must be a positive finite number or None.*got 0"),
    ("scale=-1", dict(scale=-1.0), ValueError, "scale must be .*got -1.0"),
    ("scale=inf", dict(scale=math.inf), ValueError, "scale must be .*got inf"),
    ("scale=nan", dict(scale=math.nan), ValueError, "scale must be .*got nan"),
    ("scale='1'", dict(scale="1"), ValueError, "scale must be .*got '1'"),
    ("nonfinite='ignore'", dict(nonfinite="ignore"), ValueError, 'nonfinite must be "raise" or "skip", got \'ignore\''),
]:
    bad(f"RBD({name})", lambda w, kw=kw: rbd(w, **kw), error, match)

for name, params, error, match in [
    ("[]", lambda w: [], ValueError, "empty parameter list"),
    ("float64", lambda w: [torch.zeros(3, dtype=torch.float64)], TypeError,
        "needs float32 parameters, got torch.float64"),
    ("float16", lambda w: [torch.zeros(3, dtype=torch.float16)], TypeError, "got torch.float16"),
    ("bfloat16", lambda w: [torch.zeros(3, dtype=torch.bfloat16)], TypeError, "got torch.bfloat16"),
    ("int64", lambda w: [torch.zeros(3, dtype=torch.int64)], TypeError, "got torch.int64"),
    ("a parameter twice", lambda w: [w.twin[0].weight, w.twin[0].weight], ValueError, "given more than once"),
    ("twice across groups", lambda w: [{"params": [w.twin[0].weight]}, {"params": [w.twin[0].weight]}],
     ValueError, "given more than once"),
    ("no elements", lambda w: [torch.zeros(0), torch.zeros(2, 0)], ValueError, r"no elements \(D = 0\)"),
    ("a string", lambda w: ["abc"], TypeError, "optimizes tensors, got a str"),
    ("group lr=inf", lambda w: [{"params": [w.twin[0].weight], "lr": math.inf}], ValueError, f"{LR}, got inf"),
    ("group lr=-0.5", lambda w: [{"params": [w.twin[0].weight], "lr": -0.5}], ValueError, f"{LR}, got -0.5"),
    ("group lr='x'", lambda w: [{"params": [w.twin[0].weight], "lr": "x"}], ValueError, f"{LR}, got 'x'"),
    ("group without params", lambda w: [{"lr": 0.1}], TypeError, "must be a dict with a 'params' entry"),
    ("meta device", lambda w: [torch.zeros(3, device="meta")], ValueError, "parameters are on meta"),
    ("a single tensor", lambda w: w.twin[0].weight, TypeError, "got a single Parameter; wrap it in a list"),
    ("a single group", lambda w: {"params": [w.twin[0].weight]}, TypeError, "got a single dict; wrap it in a list"),
]:
    bad(f"RBD(params={name})", lambda w, params=params: RBD(params(w), lr=0.1, dim=3), error, match)

bad("FPD(redraw=2)", lambda w: FPD(w.twin.parameters(), lr=0.1, dim=3, redraw=2), TypeError, "FPD fixes the bases")
bad("FPD(lr=inf)", lambda w: FPD(w.twin.parameters(), lr=math.inf, dim=3), ValueError, f"{LR}, got inf")


# --- RBD.step after the user changed something
def set_lr(value):
    return lambda w: w.rbd.param_groups[0].__setitem__("lr", value)


for value in (math.inf, -math.inf, math.nan, -0.5, "0.1", None, True):
    bad(f"RBD.step(param_groups lr={value!r})", lambda w: w.rbd.step(), ValueError,
        f"{LR}, got {value!r}".replace("(", r"\(") + r" in param_groups", prepare=set_lr(value))


def grad_fill(value):
    def prepare(w):
        w.net[0].bias.grad[1] = value
    return prepare


for value in (math.nan, math.inf, -math.inf):
    bad(f"RBD.step(gradient holds {value})", lambda w: w.rbd.step(), FloatingPointError,
        "a gradient holds NaN or inf; no parameter was changed", prepare=grad_fill(value))
bad("RBD.step(sparse gradient)", lambda w: w.rbd.step(), TypeError, "does not support sparse",
    prepare=lambda w: setattr(w.net[2].bias, "grad", torch.zeros(2).to_sparse()))
bad("RBD.step(parameter made float16 after construction)", lambda w: w.rbd.step(), TypeError,
    "needs float32 parameters, got torch.float16",
    prepare=lambda w: (setattr(w.net[2].bias, "grad", None), setattr(w.net[2].bias, "data", w.net[2].bias.data.half())))
bad("RBD.step(param_groups' params replaced)", lambda w: w.rbd.step(), RuntimeError,
    "param_groups' parameters were changed in place",
    prepare=lambda w: w.rbd.param_groups[0].__setitem__("params", list(w.twin.parameters())))
bad("RBD.step(closure raises)", lambda w: w.rbd.step(lambda: 1 / 0), ZeroDivisionError, "division by zero")


def grad_data(module: int, name: str, value):
    """Replace a gradient's data behind torch's back (``p.grad = ...`` checks shape and dtype; ``.data`` does not)."""
    return lambda w: setattr(getattr(w.net[module], name).grad, "data", value)


for name, value, error, match in [
    ("more elements", torch.zeros(5), ValueError,
     r"the gradient of parameter 1 has shape \(5,\), but the parameter has shape \(4,\)"),
    ("fewer elements", torch.zeros(3), ValueError, r"the gradient of parameter 1 has shape \(3,\)"),
    ("another shape", torch.zeros(2, 2), ValueError, r"the gradient of parameter 1 has shape \(2, 2\)"),
    ("float64", torch.zeros(4, dtype=torch.float64), TypeError,
     "the gradient of parameter 1 is torch.float64 on cpu; rbdlib needs a float32 gradient"),
    ("float16", torch.zeros(4, dtype=torch.float16), TypeError, "the gradient of parameter 1 is torch.float16"),
]:
    bad(f"RBD.step(a gradient of {name} than its parameter)" if "elements" in name else
        f"RBD.step(a gradient of {name})", lambda w: w.rbd.step(), error, match, prepare=grad_data(0, "bias", value))


def twin_grads(edit):
    def prepare(w):
        loss(w.twin).backward()
        edit(w)
    return prepare


bad("RBD.step(named parameters, a gradient of another shape) names the parameter",
    lambda w: RBD(w.twin.named_parameters(), lr=0.1, dim=3).step(), ValueError,
    r"the gradient of parameter 2 \('2.weight'\) has shape \(8,\)",
    prepare=twin_grads(lambda w: setattr(w.twin[2].weight.grad, "data", torch.zeros(8))))
bad("RBD.step(named parameters, frozen layer's gradient float64) names the parameter",
    lambda w: RBD(w.twin.named_parameters(), lr=0.1, dim=3).step(), TypeError,
    r"the gradient of parameter 3 \('2.bias'\) is torch.float64",
    prepare=twin_grads(lambda w: setattr(w.twin[2].bias.grad, "data", torch.zeros(2, dtype=torch.float64))))
bad("RBD.step(a parameter given more elements after construction)", lambda w: w.rbd.step(), ValueError,
    r"parameter 3 has shape \(5,\), but the optimizer was built for \(2,\)",
    prepare=lambda w: (setattr(w.net[2].bias, "grad", None), setattr(w.net[2].bias, "data", torch.zeros(5))))
bad("RBD.step(a parameter given fewer elements after construction)", lambda w: w.rbd.step(), ValueError,
    r"parameter 0 has shape \(3, 3\), but the optimizer was built for \(4, 3\)",
    prepare=lambda w: (setattr(w.net[0].weight, "grad", None), setattr(w.net[0].weight, "data", torch.zeros(3, 3))))


def frozen_layer_stays(w, _):
    weight = w.net[0].weight
    before = weight.detach().clone()
    weight.requires_grad_(False)
    weight.grad = torch.ones_like(weight)          # a gradient left from before the freeze
    others = [p.detach().clone() for p in list(w.net.parameters())[1:]]
    w.rbd.step()
    w.rbd.zero_grad(set_to_none=False)             # torch leaves a frozen layer a zero gradient
    loss(w.net).backward()
    w.rbd.step()
    assert torch.equal(weight, before) and w.rbd.log[-1]["frozen"] == [0]
    assert not any(torch.equal(p, q) for p, q in zip(list(w.net.parameters())[1:], others))


good("RBD.step(a layer frozen with requires_grad_(False) and a .grad) never moves it", lambda w: None,
     frozen_layer_stays)

# --- add_param_group
for name, group, error, match in [
    ("a parameter it has", lambda w: {"params": [w.net[0].weight]}, ValueError, "given more than once"),
    ("float64", lambda w: {"params": [torch.zeros(2, dtype=torch.float64)]}, TypeError, "got torch.float64"),
    ("empty", lambda w: {"params": []}, ValueError, "a group without parameters"),
    ("lr=inf", lambda w: {"params": [torch.zeros(2)], "lr": math.inf}, ValueError, f"{LR}, got inf in the added"),
    ("lr=-1", lambda w: {"params": [torch.zeros(2)], "lr": -1}, ValueError, f"{LR}, got -1 in the added"),
    ("a list", lambda w: [torch.zeros(2)], TypeError, "param_group must be a dict with a 'params' entry, got list"),
    ("no params key", lambda w: {"lr": 0.1}, TypeError, "param_group must be a dict with a 'params' entry"),
    ("a string", lambda w: {"params": ["abc"]}, TypeError, "optimizes tensors, got a str"),
]:
    bad(f"RBD.add_param_group({name})", lambda w, group=group: w.rbd.add_param_group(group(w)), error, match,
        prepare=lambda w: setattr(w.rbd, "record", False))
bad("RBD.add_param_group(to a recording optimizer that stepped)",
    lambda w: w.rbd.add_param_group({"params": [torch.zeros(2, requires_grad=True)]}), RuntimeError,
    "cannot add parameters to a recording RBD that has stepped")


def added_group_trains(w, _):
    new = w.rbd.param_groups[-1]["params"][0]
    assert w.rbd.size == 26 + 3 and w.rbd.params[-1] is new
    new.grad = torch.ones(3)
    before = new.detach().clone()
    w.rbd.step()
    assert not torch.equal(new, before) and w.rbd.steps == 3


good("RBD.add_param_group(a new tensor) trains it",
     lambda w: (setattr(w.rbd, "record", False), w.rbd.add_param_group({"params": [torch.zeros(3,
         requires_grad=True)]})),
     added_group_trains)


# --- RBD.load_state_dict of tampered states
def entry(t, key, value):
    return lambda s: s["rbd"]["log"][t].__setitem__(key, value)


for name, edit, error, match in [
    ("a list", None, TypeError, "state_dict must be a dict, got list"),
    ("no 'rbd'", lambda s: s.pop("rbd"), ValueError,
        r"not a state_dict saved by rbdlib.RBD.*got \['param_groups', 'state'\]"),
    ("an extra key", lambda s: s.__setitem__("exploit", 1), ValueError, "not a state_dict saved by rbdlib.RBD"),
    ("per-parameter state", lambda s: s["state"].__setitem__(0, {"momentum_buffer": torch.ones(12)}), ValueError,
     "keeps no per-parameter state"),
    ("state a list", lambda s: s.__setitem__("state", [1]), ValueError, "keeps no per-parameter state"),
    ("a group too many", lambda s: s["param_groups"].append(dict(s["param_groups"][0])), ValueError,
     "saved param_groups do not match"),
    ("a parameter too few", lambda s: s["param_groups"][0]["params"].pop(), ValueError,
        "saved param_groups do not match"),
    ("lr=inf", lambda s: s["param_groups"][0].__setitem__("lr", math.inf), ValueError,
     f"{LR}, got inf \\(lr\\) in the saved"),
    ("lr=nan", lambda s: s["param_groups"][0].__setitem__("lr", math.nan), ValueError,
     f"{LR}, got nan \\(lr\\) in the saved"),
    ("lr='0.1'", lambda s: s["param_groups"][0].__setitem__("lr", "0.1"), ValueError, f"{LR}, got '0.1'"),
    ("initial_lr=inf", lambda s: s["param_groups"][0].__setitem__("initial_lr", math.inf), ValueError,
     f"{LR}, got inf \\(initial_lr\\) in the saved"),
    ("a group key more", lambda s: s["param_groups"][0].__setitem__("momentum", 0.9), ValueError,
     "a saved parameter group has the keys"),
    ("steps=-1", lambda s: s["rbd"].__setitem__("steps", -1), ValueError,
        "saved steps must be a non-negative int, got -1"),
    ("steps='2'", lambda s: s["rbd"].__setitem__("steps", "2"), ValueError, "saved steps must be .*got '2'"),
    ("skipped=-1", lambda s: s["rbd"].__setitem__("skipped", -1), ValueError, "saved skipped must be"),
    ("'rbd' a list", lambda s: s.__setitem__("rbd", []), ValueError, "the saved 'rbd' entry must be a dict"),
    ("'rbd' key more", lambda s: s["rbd"].__setitem__("exec", "rm -rf"), ValueError,
        "the saved 'rbd' entry has the keys"),
    ("another seed", lambda s: s["rbd"]["config"].__setitem__("seed", 2), ValueError, "different configuration"),
    ("truncated log", lambda s: s["rbd"]["log"].pop(), ValueError,
        "log holds 1 entries but the optimizer made 2 steps"),
    ("log a dict", lambda s: s["rbd"].__setitem__("log", {0: 1}), ValueError, "coordinate log must be a list"),
    ("NaN coordinates", lambda s: s["rbd"]["log"][1]["coords"].__setitem__(0, math.nan), ValueError,
     "log entry 1: coords hold NaN or inf"),
    ("coordinates too short", entry(0, "coords", torch.zeros(2)), ValueError,
     r"log entry 0: coords must be a float32 tensor of shape \(3,\)"),
    ("float64 coordinates", entry(0, "coords", torch.zeros(3, dtype=torch.float64)), ValueError,
        "coords must be a float32"),
    ("a missing lrs", lambda s: s["rbd"]["log"][0].pop("lrs"), ValueError,
        "log entry 0 must be a dict with 'coords', 'lrs'"),
    ("lrs=[inf]", entry(0, "lrs", [math.inf]), ValueError, f"{LR}, got inf in log entry 0"),
    ("lrs too many", entry(0, "lrs", [0.1, 0.1]), ValueError, "log entry 0: lrs must list one lr per parameter group"),
    ("frozen out of range", entry(1, "frozen", [7]), ValueError,
        r"log entry 1: frozen must list parameter indices in \[0, 4\)"),
    ("edited coordinates", lambda s: s["rbd"]["log"][0]["coords"].mul_(2), ValueError, "does not match its digest"),
    ("no digest", lambda s: s["rbd"].pop("log_digest"), ValueError, "has the keys .* expected .*log_digest"),
    ("no initial_weights", lambda s: s["rbd"].pop("initial_weights"), ValueError,
     r"initial_weights must be the SHA-256 \(64 hex digits\) of the weights its log starts from, got 'None'"),
    ("initial_weights not hex", lambda s: s["rbd"].__setitem__("initial_weights", "x" * 64), ValueError,
     "initial_weights must be the SHA-256"),
    ("another run's initial_weights", lambda s: s["rbd"].__setitem__("initial_weights", "0" * 64), ValueError,
     "does not match its digest"),
    ("initial_weights without a log", lambda s: s["rbd"].update(log=[], steps=0), ValueError,
     "has initial_weights but no log"),
]:
    if edit is None:
        bad(f"RBD.load_state_dict({name})", lambda w: w.rbd.load_state_dict([w.rbd.state_dict()]), error, match)
    else:
        bad(f"RBD.load_state_dict({name})", lambda w, edit=edit: w.rbd.load_state_dict(w.tamper(edit)), error, match)
bad("RBD.load_state_dict(a NES state)", lambda w: w.rbd.load_state_dict(w.nes.state_dict()), ValueError,
    "not a state_dict saved by rbdlib.RBD")


def loaded_lr(w, _):
    assert w.rbd.param_groups[0]["lr"] == 0.3 and w.rbd.steps == 2 and len(w.rbd.log) == 2


good("RBD.load_state_dict(its own state, lr 0.3)", lambda w: w.rbd.load_state_dict(w.tamper(lambda s: None)), loaded_lr)
good("RBD.load_state_dict(a state saved under an lr scheduler)",
     lambda w: w.rbd.load_state_dict(w.tamper(lambda s: s["param_groups"][0].__setitem__("initial_lr", 0.1))),
     loaded_lr)


# --- replay
def forged(edit):
    """A record whose configuration ``edit`` changed, its (unkeyed) digest recomputed as a forger would."""
    def apply(record):
        edit(record["config"])
        record["log_digest"] = rbdlib.record.log_digest(record["log"], record["config"], record["initial_weights"])
    return apply


def replayed(edit=None, upto=None, params=None, initial=None):
    def run(w):
        record = copy.deepcopy(w.record)
        if edit:
            edit(record)
        return replay(params(w) if params else w.twin.parameters(), initial(w) if initial else w.initial, record, upto)
    return run


for name, kw, error, match in [
    ("record a list", dict(edit=None), ValueError, "record must be opt.state_dict"),
    ("no config", dict(edit=lambda r: r.pop("config")), ValueError, r"a dict with 'config', 'log', 'steps'"),
    ("config without seed", dict(edit=lambda r: r["config"].pop("seed")), ValueError,
        "must be an RBD config with the keys"),
    ("truncated log", dict(edit=lambda r: r["log"].pop()), ValueError, "log holds 1 entries but the optimizer made 2"),
    ("empty log", dict(edit=lambda r: r["log"].clear()), ValueError, "holds no coordinate log for its 2 steps"),
    ("NaN coordinates", dict(edit=lambda r: r["log"][1]["coords"].__setitem__(2, math.nan)), ValueError,
     "log entry 1: coords hold NaN"),
    ("edited coordinates", dict(edit=lambda r: r["log"][1]["coords"].add_(1e-3)), ValueError,
        "does not match its digest"),
    ("edited configuration", dict(edit=lambda r: r["config"].__setitem__("seed", 9)), ValueError,
        "does not match its digest"),
    ("missing lrs", dict(edit=lambda r: r["log"][0].pop("lrs")), ValueError, "log entry 0 must be a dict with"),
    ("lrs=[]", dict(edit=lambda r: r["log"][0].__setitem__("lrs", [])), ValueError,
        "lrs must list one lr per parameter group"),
    ("lrs=[nan]", dict(edit=lambda r: r["log"][0].__setitem__("lrs", [math.nan])), ValueError,
        f"{LR}, got nan in log entry 0"),
    ("steps=-2", dict(edit=lambda r: r.__setitem__("steps", -2)), ValueError, "saved steps must be a non-negative int"),
    ("other shapes", dict(params=lambda w: [torch.zeros(3)]), ValueError, "params do not match the shapes"),
    ("initial state of other shapes", dict(initial=lambda w: [torch.zeros(3)] * 4), ValueError,
     "initial_state holds 4 tensors whose shapes do not match"),
    ("initial state with buffers", dict(initial=lambda w: w.initial + [torch.zeros(1)]), ValueError,
        "initial_state holds 5"),
    ("upto=-1", dict(upto=-1), ValueError, r"upto must be None or an int in \[0, 2\], got -1"),
    ("upto=3", dict(upto=3), ValueError, r"upto must be None or an int in \[0, 2\], got 3"),
    ("upto=1.5", dict(upto=1.5), ValueError, "upto must be None or an int"),
    ("float16 params", dict(params=lambda w: [p.detach().half() for p in w.twin.parameters()]), TypeError,
     "replay needs float32 parameters"),
    ("another run's initial weights", dict(initial=lambda w: [p + 1e-3 for p in w.initial]), ValueError,
     "initial_state is not the weights this record starts from"),
    ("initial weights of another seed", dict(initial=lambda w: list(net(1).parameters())), ValueError,
     "initial_state is not the weights this record starts from"),
    ("no initial_weights", dict(edit=lambda r: r.pop("initial_weights")), ValueError,
     "initial_weights must be the SHA-256"),
    ("initial_weights of other weights", dict(edit=lambda r: r.__setitem__("initial_weights", "ab" * 32)),
     ValueError, "does not match its digest"),
    ("a forged index in the layout, digest recomputed", dict(edit=forged(lambda c: c["layout"][0].__setitem__(
        0, [9, 0, 12]))), ValueError, r"compartment 0 holds the segment \[9, 0, 12\], not \[i, a, b\]"),
    ("a forged segment past its parameter, digest recomputed", dict(edit=forged(
        lambda c: c["layout"][0].__setitem__(1, [1, 0, 400]))), ValueError, r"holds the segment \[1, 0, 400\]"),
    ("a negative start in the layout, digest recomputed", dict(edit=forged(
        lambda c: c["layout"][0].__setitem__(1, [1, -4, 4]))), ValueError, r"holds the segment \[1, -4, 4\]"),
    ("a segment twice, digest recomputed", dict(edit=forged(lambda c: c["layout"][0].append([1, 0, 4]))),
     ValueError, "does not cover the elements of parameter 1 exactly once"),
    ("a parameter left out of the layout, digest recomputed", dict(edit=forged(lambda c: c["layout"][0].pop())),
     ValueError, "does not cover the elements of parameter 3 exactly once"),
    ("a layout of strings, digest recomputed", dict(edit=forged(lambda c: c.__setitem__("layout", ["abc"]))),
     ValueError, "compartment 0 must be a non-empty list of"),
    ("dims=[0], digest recomputed", dict(edit=forged(lambda c: c.__setitem__("dims", [0]))), ValueError,
     "dims must list positive directions per compartment"),
    ("dims a string, digest recomputed", dict(edit=forged(lambda c: c.__setitem__("dims", "3"))), ValueError,
     "dims must list positive directions"),
    ("groups=[5], digest recomputed", dict(edit=forged(lambda c: c.__setitem__("groups", [5]))), ValueError,
     r"groups \[5\] do not hold its 4 parameters"),
]:
    run = (lambda w: replay(w.twin.parameters(), w.initial, [w.record])) if name == "record a list" else replayed(**kw)
    bad(f"replay({name})", run, error, match)


def replay_matches_training(w, _):
    assert all(torch.equal(p, q) for p, q in zip(w.twin.parameters(), w.net.parameters()))


good("replay(the full log) rebuilds the trained weights", replayed(), replay_matches_training)

# --- NES
SIGMA = "sigma must be a positive finite number"
for name, kw, error, match in [
    ("sigma=inf", dict(sigma=math.inf), ValueError, f"{SIGMA}, got inf"),
    ("sigma=True", dict(sigma=True), ValueError, f"{SIGMA}, got True"),
    ("sigma=0", dict(sigma=0), ValueError, f"{SIGMA}, got 0"),
    ("sigma=-0.1", dict(sigma=-0.1), ValueError, f"{SIGMA}, got -0.1"),
    ("sigma=nan", dict(sigma=math.nan), ValueError, f"{SIGMA}, got nan"),
    ("sigma='0.1'", dict(sigma="0.1"), ValueError, f"{SIGMA}, got '0.1'"),
    ("lr=inf", dict(lr=math.inf), ValueError, f"{LR}, got inf"),
    ("lr=-1", dict(lr=-1), ValueError, f"{LR}, got -1"),
    ("dim=1", dict(dim=1), ValueError, r"population \(dim\) of at least 2, got 1"),
    ("dim=0", dict(dim=0), ValueError, r"population \(dim\) of at least 2, got 0"),
    ("dim=2.5", dict(dim=2.5), TypeError, "dim must be an integer"),
    ("antithetic with odd dim", dict(antithetic=True, dim=5), ValueError, "dim must be even, got 5"),
    ("antithetic='yes'", dict(antithetic="yes"), TypeError, "antithetic must be True or False"),
    ("shared_batch=1", dict(shared_batch=1), TypeError, "shared_batch must be True or False"),
    ("distribution='gauss'", dict(distribution="gauss"), ValueError, "unknown distribution 'gauss'"),
    ("seed=-1", dict(seed=-1), ValueError, "seed must be in"),
]:
    bad(f"NES({name})", lambda w, kw=kw: nes(w, **kw), error, match)

for name, params, error, match in [
    ("float16", lambda w: [torch.zeros(3, dtype=torch.float16)], TypeError,
        "NES needs float32 parameters, got torch.float16"),
    ("bfloat16", lambda w: [torch.zeros(3, dtype=torch.bfloat16)], TypeError, "got torch.bfloat16"),
    ("int32", lambda w: [torch.zeros(3, dtype=torch.int32)], TypeError, "got torch.int32"),
    ("float64", lambda w: [torch.zeros(3, dtype=torch.float64)], TypeError, "got torch.float64"),
    ("a parameter twice", lambda w: [w.twin[0].weight, w.twin[0].weight], ValueError, "given more than once"),
    ("no elements", lambda w: [torch.zeros(0)], ValueError, r"no elements \(D = 0\)"),
    ("[]", lambda w: [], ValueError, "empty parameter list"),
    ("a single tensor", lambda w: w.twin[0].weight, TypeError, "got a single Parameter; wrap it in a list"),
    ("two lrs", lambda w: [{"params": [w.twin[0].weight]}, {"params": [w.twin[2].weight], "lr": 0.5}], ValueError,
     "NES takes one lr for all parameters"),
]:
    bad(f"NES(params={name})", lambda w, params=params: NES(params(w), lr=0.1, dim=4), error, match)

bad("NES.step(no closure)", lambda w: w.nes.step(None), ValueError, "NES.step needs a closure")
bad("NES.step(closure='loss')", lambda w: w.nes.step("loss"), ValueError, "NES.step needs a closure .* got 'loss'")
bad("NES.step(lr=inf in param_groups)", lambda w: w.nes.step(lambda: loss(w.nes_net)), ValueError,
    f"{LR}, got inf in param_groups", prepare=lambda w: w.nes.param_groups[0].__setitem__("lr", math.inf))
bad("NES.step(lr=-1 in param_groups)", lambda w: w.nes.step(lambda: loss(w.nes_net)), ValueError,
    f"{LR}, got -1 in param_groups", prepare=lambda w: w.nes.param_groups[0].__setitem__("lr", -1))
bad("NES.step(a NaN loss)", lambda w: w.nes.step(lambda: torch.tensor(math.nan)), FloatingPointError,
    "an offspring's loss is not finite; the parameters were left unchanged")
bad("NES.step(closure raises)", lambda w: w.nes.step(lambda: [][1]), IndexError, "list index out of range")
bad("NES.step(a parameter given more elements after construction)", lambda w: w.nes.step(lambda: loss(w.nes_net)),
    ValueError, r"parameter 3 has shape \(6,\), but the optimizer was built for \(2,\)",
    prepare=lambda w: setattr(w.nes_net[2].bias, "data", torch.zeros(6)))
bad("NES.add_param_group", lambda w: w.nes.add_param_group({"params": [torch.zeros(2)]}), NotImplementedError,
    "NES cannot add parameters after construction")
for name, edit, error, match in [
    ("no 'nes'", lambda s: s.pop("nes"), ValueError, "not a state_dict saved by rbdlib.NES"),
    ("steps=-1", lambda s: s["nes"].__setitem__("steps", -1), ValueError,
        "saved steps must be a non-negative int, got -1"),
    ("steps=1.0", lambda s: s["nes"].__setitem__("steps", 1.0), ValueError, "saved steps must be"),
    ("'nes' key more", lambda s: s["nes"].__setitem__("sigma", 1.0), ValueError, "the saved 'nes' entry has the keys"),
    ("per-parameter state", lambda s: s["state"].__setitem__(0, {"x": torch.ones(1)}), ValueError,
        "keeps no per-parameter state"),
    ("lr=inf", lambda s: s["param_groups"][0].__setitem__("lr", math.inf), ValueError,
     f"{LR}, got inf \\(lr\\) in the saved"),
    ("a group too many", lambda s: s["param_groups"].append(dict(s["param_groups"][0])), ValueError,
     "saved param_groups do not match"),
]:
    bad(f"NES.load_state_dict({name})", lambda w, edit=edit: w.nes.load_state_dict(w.tamper(edit, w.nes)), error, match)
bad("NES.load_state_dict(an RBD state)", lambda w: w.nes.load_state_dict(w.rbd.state_dict()), ValueError,
    "not a state_dict saved by rbdlib.NES")
bad("NES.load_state_dict(a string)", lambda w: w.nes.load_state_dict("state"), TypeError,
    "state_dict must be a dict, got str")

# --- FixedSubspace
for name, make, error, match in [
    ("a list of layers", lambda w: FixedSubspace([nn.Linear(2, 2)], dim=3), TypeError,
     "FixedSubspace wraps a torch.nn.Module, got list"),
    ("float16 model", lambda w: FixedSubspace(nn.Linear(2, 2).half(), dim=3), TypeError,
     "FixedSubspace needs float32 parameters, got torch.float16"),
    ("float64 model", lambda w: FixedSubspace(nn.Linear(2, 2).double(), dim=3), TypeError, "got torch.float64"),
    ("no parameters", lambda w: FixedSubspace(nn.ReLU(), dim=3), ValueError,
        r"ReLU has no trainable parameter elements"),
    ("frozen model", lambda w: FixedSubspace(nn.Linear(2, 2).requires_grad_(False), dim=3), ValueError,
     r"no trainable parameter elements \(D = 0\)"),
    ("dim=0", lambda w: FixedSubspace(w.twin, dim=0), ValueError, "dim and size must be positive, got dim=0"),
    ("seed=-1", lambda w: FixedSubspace(w.twin, dim=3, seed=-1), ValueError, "seed must be in"),
    ("distribution='x'", lambda w: FixedSubspace(w.twin, dim=3, distribution="x"), ValueError,
        "unknown distribution 'x'"),
]:
    bad(f"FixedSubspace({name})", make, error, match)


def sub_state(**change):
    def run(w):
        other = FixedSubspace(net(3), **{"dim": 4, "seed": 5, **change})
        return w.sub.load_state_dict(other.state_dict())
    return run


bad("FixedSubspace.load_state_dict(another seed)", sub_state(seed=6), ValueError, "saved with another configuration")
bad("FixedSubspace.load_state_dict(another distribution)", sub_state(distribution="uniform"), ValueError,
    "saved with another configuration")
bad("FixedSubspace.load_state_dict(another dim)", sub_state(dim=5), ValueError, "saved with another configuration")
bad("FixedSubspace.load_state_dict(inside a larger module, another seed)",
    lambda w: nn.ModuleList([w.sub]).load_state_dict(
        nn.ModuleList([FixedSubspace(net(3), dim=4, seed=6)]).state_dict()),
    ValueError, "saved with another configuration")
bad("FixedSubspace.load_state_dict(no configuration)",
    lambda w: w.sub.load_state_dict({k: v for k, v in w.sub.state_dict().items() if k != "_extra_state"}), ValueError,
    "holds no FixedSubspace configuration")


def merged_trains(w, model):
    assert all(p.requires_grad for p in model.parameters())
    loss(model).backward()
    assert all(p.grad is not None for p in model.parameters())


good("FixedSubspace.merged() is trainable", lambda w: w.sub.merged(), merged_trains)

# --- RandomBases and philox4x32
B = dict(seed=0, step=0, compartment=0, dim=3, size=10)
for name, kw, error, match in [
    ("seed=-1", dict(seed=-1), ValueError, "seed must be in"),
    ("step=-1", dict(step=-1), ValueError, "step must be in"),
    ("compartment=1.5", dict(compartment=1.5), TypeError, "compartment must be an integer"),
    ("dim=0", dict(dim=0), ValueError, "dim and size must be positive, got dim=0"),
    ("size=0", dict(size=0), ValueError, "dim and size must be positive, got dim=3, size=0"),
    ("distribution='gauss'", dict(distribution="gauss"), ValueError, "unknown distribution 'gauss'"),
    ("scale=0", dict(scale=0), ValueError, "scale must be a positive finite number, got 0"),
    ("scale=True", dict(scale=True), ValueError, "scale must be a positive finite number, got True"),
    ("scale=inf", dict(scale=math.inf), ValueError, "scale must be a positive finite number, got inf"),
    ("offset=-1", dict(offset=-1), ValueError, "offset must be in"),
    ("size=2**34+1", dict(size=2**34 + 1), ValueError,
     r"size must be at most 2\*\*34 = 17179869184 elements per compartment .* got 17179869185"),
    ("size=2**40", dict(size=2**40), ValueError, r"size must be at most 2\*\*34"),
]:
    bad(f"RandomBases({name})", lambda w, kw=kw: RandomBases(**{**B, **kw}), error, match)
for name, call, error, match in [
    ("project(wrong length)", lambda b: b.project(torch.zeros(9)), ValueError, r"g must have shape \(10,\)"),
    ("project(float64)", lambda b: b.project(torch.zeros(10, dtype=torch.float64)), TypeError, "g must be float32"),
    ("project(a list)", lambda b: b.project([0.0] * 10), TypeError, "g must be a torch.Tensor, got list"),
    ("project(2-D)", lambda b: b.project(torch.zeros(2, 10)), ValueError, r"g must have shape \(10,\)"),
    ("expand(wrong length)", lambda b: b.expand(torch.zeros(4)), ValueError, r"c must have shape \(3,\)"),
    ("materialize(rows out of range)", lambda b: b.materialize([5]), IndexError, "rows .* out of range for dim=3"),
]:
    bad(f"RandomBases.{name}", lambda w, call=call: call(RandomBases(**B)), error, match)
bad("philox4x32(float counters)", lambda w: philox4x32(np.zeros((1, 4)), np.zeros((1, 2), np.uint32)), TypeError,
    "philox4x32 expects uint32 arrays")
bad("philox4x32(counter of 3 words)", lambda w: philox4x32(np.zeros((1, 3), np.uint32), np.zeros((1, 2), np.uint32)),
    ValueError, r"\(\.\.\., 4\)")

# --- data
for name, kw, error, match in [
    ("name='imagenet'", dict(name="imagenet"), ValueError, "Unknown dataset 'imagenet'"),
    ("val_size=0", dict(val_size=0), ValueError, "val_size=0 must be between 1 and 19"),
    ("val_size=-5", dict(val_size=-5), ValueError, "val_size=-5 must be between 1 and 19"),
    ("val_size=20", dict(val_size=20), ValueError, "val_size=20 must be between 1 and 19"),
    ("val_size=2.5", dict(val_size=2.5), TypeError, "val_size must be an int or None"),
    ("val_size=True", dict(val_size=True), TypeError, "val_size must be an int or None"),
    ("split_seed=-1", dict(split_seed=-1), ValueError, "split_seed must be a non-negative int, got -1"),
    ("split_seed=0.5", dict(split_seed=0.5), ValueError, "split_seed must be a non-negative int, got 0.5"),
]:
    bad(f"load_dataset({name})",
        lambda w, kw=kw: load_dataset(**{"name": "mnist", "root": w.data_dir, "download": False, **kw}), error, match)


def corrupt(filename: str, content: bytes):
    return lambda w: (w.data_dir / filename).write_bytes(content)


for name, filename, content, error, match in [
    ("a 6-byte label file", "train-labels-idx1-ubyte.gz", gzip.compress(b"\0\0\x08\x01\0\0"), DatasetFormatError,
     "6 bytes cannot hold the IDX header"),
    ("label 200", "train-labels-idx1-ubyte.gz", gzip.compress(idx_bytes(np.full(20, 200))), DatasetFormatError,
     "label 200 out of range 0..9"),
    ("wrong magic", "t10k-images-idx3-ubyte.gz", gzip.compress(idx_bytes(np.zeros(5))), DatasetFormatError,
     "magic number 2049, expected 2051"),
    ("truncated gzip", "t10k-labels-idx1-ubyte.gz", gzip.compress(idx_bytes(np.zeros(5)))[:-9], DatasetFormatError,
     "t10k-labels-idx1-ubyte.gz is not a readable IDX file"),
    ("images and labels differ", "t10k-labels-idx1-ubyte.gz", gzip.compress(idx_bytes(np.zeros(4))), DatasetFormatError,
     "has shape .* for 4 labels"),
    ("an IDX file of 2 bytes", "t10k-images-idx3-ubyte.gz", gzip.compress(b"\0\0"), DatasetFormatError,
     "magic number None, expected 2051"),
]:
    bad(f"load_dataset({name})", lambda w: load_dataset("mnist", root=w.data_dir, download=False, val_size=5), error,
        match, prepare=corrupt(filename, content))
good("RandomBases(size=2**34) is the largest direction", lambda w: RandomBases(**{**B, "size": 2**34}),
     lambda w, b: b.size == 2**34 or pytest.fail(str(b)))
good("load_dataset(val_size=1)", lambda w: load_dataset("mnist", root=w.data_dir, download=False, val_size=1),
     lambda w, ds: (len(ds.val_x), len(ds.train_x)) == (1, 19) or pytest.fail("val_size=1 not honoured"))
bad("batches(batch_size=0)", lambda w: next(iter(data.batches(torch.zeros(4, 1), torch.zeros(4), 0))), ValueError,
    "batch_size must be a positive integer, got 0")
bad("batches(x and y differ)", lambda w: next(iter(data.batches(torch.zeros(4, 1), torch.zeros(3), 2))), ValueError,
    r"x and y differ in length \(4 vs 3\)")
for value in (2.5, True, "4", -3):
    bad(f"batches(batch_size={value!r})",
        lambda w, v=value: next(iter(data.batches(torch.zeros(4, 1), torch.zeros(4), v))), ValueError,
        f"batch_size must be a positive integer, got {value!r}")
for value in (-1, 1.5, "2", True):
    bad(f"random_crop(pad={value!r})", lambda w, v=value: data.random_crop(torch.zeros(2, 1, 4, 4), v), ValueError,
        rf"pad must be a non-negative integer \(pixels on each side\), got {re.escape(repr(value))}")
bad("random_crop(a 3-D batch)", lambda w: data.random_crop(torch.zeros(2, 4, 4), 1), ValueError,
    "random_crop expects a batch N x C x H x W")

# --- communication
for value, error, match in [(-2, ValueError, "world_size must be a positive integer, got -2"),
                            (0, ValueError, "world_size must be a positive integer, got 0"),
                            (1.5, ValueError, "world_size must be a positive integer, got 1.5"),
                            (True, ValueError, "world_size must be a positive integer, got True"),
                            ("2", ValueError, "world_size must be a positive integer, got '2'")]:
    bad(f"communication(world_size={value!r})", lambda w, v=value: distributed.communication(w.rbd, v), error, match)
bad("communication(scheme='ring')", lambda w: distributed.communication(w.rbd, 2, "ring"), ValueError,
    "scheme must be one of")
bad("communication(an SGD optimizer)",
    lambda w: distributed.communication(torch.optim.SGD(w.twin.parameters(), lr=0.1), 2), TypeError,
    "communication needs an rbdlib.RBD optimizer, got SGD")
for name, make, error, match in [
    ("an SGD optimizer", lambda w: distributed.DistributedRBD(torch.optim.SGD(w.twin.parameters(), lr=0.1)), TypeError,
     "DistributedRBD wraps an rbdlib.RBD optimizer, got SGD"),
    ("scheme='ring'", lambda w: distributed.DistributedRBD(w.rbd, scheme="ring"), ValueError, "scheme must be one of"),
    ("model=[]", lambda w: distributed.DistributedRBD(w.rbd, model=[]), TypeError, "model must be a torch.nn.Module"),
    ("no process group", lambda w: distributed.DistributedRBD(w.rbd), RuntimeError,
     "torch.distributed is not initialized"),
]:
    bad(f"DistributedRBD({name})", make, error, match)
def held_port(run):
    """``run(port)`` while another program (a listening socket here) holds the port."""
    def case(w):
        with socket.socket() as other:
            other.bind(("127.0.0.1", 0))
            other.listen()
            return run(other.getsockname()[1])
    return case


bad("launch(port held by another program) says so before starting a process",
    held_port(lambda port: distributed.launch(example.train, 2, port=port)), RuntimeError,
    r"port \d+ on 127.0.0.1 is in use by another program .* No process was started")
for value in (0, -1, 2**16, 1.5, "29500", True):
    bad(f"launch(port={value!r})", lambda w, v=value: distributed.launch(example.train, 2, port=v), ValueError,
        f"port must be None \\(a free port\\) or an int in \\[1, 65535\\], got {re.escape(repr(value))}")
good("communication(world_size=2)", lambda w: distributed.communication(w.rbd, 2),
     lambda w, c: c["coord_bytes_per_step"] == 4 * 3 * 2 or pytest.fail(str(c)))


# --- the training loop
def fit(w, **kw):
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    return rbdlib.fit(model, torch.optim.SGD(model.parameters(), lr=0.1), kw.pop("data", toy_dataset()),
                      progress=False, **kw)


for name, kw, error, match in [
    ("epochs=0", dict(epochs=0), ValueError, "epochs must be a positive finite number .* not 0"),
    ("epochs=-1", dict(epochs=-1), ValueError, "epochs must be .* not -1"),
    ("epochs=nan", dict(epochs=math.nan), ValueError, "epochs must be .* not nan"),
    ("epochs=inf", dict(epochs=math.inf), ValueError, "epochs must be .* not inf"),
    ("epochs=True", dict(epochs=True), ValueError, "epochs must be .* not True"),
    ("batch_size=0", dict(batch_size=0), ValueError, "batch_size must be a positive int, not 0"),
    ("batch_size=2.5", dict(batch_size=2.5), ValueError, "batch_size must be a positive int, not 2.5"),
    ("max_steps=-1", dict(max_steps=-1), ValueError, r"max_steps must be a step count >= 0 or None .* not -1"),
    ("max_steps=1.5", dict(max_steps=1.5), ValueError, "max_steps must be .* not 1.5"),
    ("eval_every=0", dict(eval_every=0), ValueError, "eval_every must be a positive step count"),
    ("data=(x, y)", dict(data=(torch.zeros(2), torch.zeros(2))), TypeError, "train needs a Dataset"),
]:
    bad(f"fit({name})", lambda w, kw=kw: fit(w, **kw), error, match)
good("fit(max_steps=0) measures the initial weights only", lambda w: fit(w, max_steps=0),
     lambda w, h: h["step"] == [0] or pytest.fail(str(h.records)))


# --- rbdlib-experiment
def experiment(*argv):
    def run(w):
        return experiments.main(["fc-fmnist", "--out", str(w.tmp / "out"), "--data-root", str(w.tmp / "none"),
                                 *argv])
    return run


for argv, error, match in [
    (["--methods", "sgd:dim=5"], ValueError, "sgd does not use option 'dim'"),
    (["--methods", "fpd:redraw=5"], ValueError, "fpd does not use option 'redraw'"),
    (["--methods", "nes:distribution=gauss"], ValueError, "bad value 'gauss' for distribution"),
    (["--methods", "nes:redraw=2"], ValueError, "nes does not use option 'redraw'"),
    (["--methods", "rbd:dim=abc"], ValueError, "bad value 'abc' for dim"),
    (["--methods", "rbd:sigma=0.1"], ValueError, "rbd does not use option 'sigma'"),
    (["--methods", "sgd", "rbd:sigma=0.1"], ValueError, "rbd does not use option 'sigma'"),
    (["--methods", "rbd:lr=inf"], ValueError, "bad value 'inf' for lr"),
    (["--methods", "rbd:lr=-1"], ValueError, "bad value '-1' for lr"),
    (["--methods", "rbd:lr=nan"], ValueError, "bad value 'nan' for lr"),
    (["--methods", "rbd:compartments=../../../../escaped"], ValueError,
        "bad value '../../../../escaped' for compartments"),
    (["--methods", "sgd:compartments=../../x"], ValueError, "sgd does not use option 'compartments'"),
    (["--methods", "adam"], ValueError, "unknown method 'adam'"),
    (["--methods", "rbd:dim"], ValueError, "bad option 'dim'"),
    (["--methods", "rbd:dim=3,dim=4"], ValueError, "option 'dim' given twice"),
    (["--methods", "rbd:split_dim=maybe"], ValueError, "bad value 'maybe' for split_dim"),
    (["--methods", "nes:sigma=0"], ValueError, "bad value '0' for sigma"),
    (["--methods", "nes:dim=1"], ValueError, r"population \(dim\) of at least 2, got 1"),
    (["--methods", "nes:antithetic=true,dim=5"], ValueError, "dim must be even, got 5"),
    (["--methods", "rbd:width=0"], ValueError, "bad value '0' for width"),
    (["--epochs", "0"], SystemExit, "argument --epochs: invalid _positive value: '0'"),
    (["--epochs", "-1"], SystemExit, "argument --epochs"),
    (["--epochs", "1.5"], SystemExit, "argument --epochs: invalid _positive value: '1.5'"),
    (["--batch-size", "0"], SystemExit, "argument --batch-size"),
    (["--max-steps", "-1"], SystemExit, "argument --max-steps"),
    (["--max-steps", "0"], SystemExit, "argument --max-steps"),
    (["--dim", "0"], SystemExit, "argument --dim"),
    (["--compartments", "0"], SystemExit, "argument --compartments"),
    (["--compartments", "layers"], SystemExit, "argument --compartments"),
    (["--distribution", "gauss"], SystemExit, "argument --distribution: invalid choice: 'gauss'"),
    (["--redraw", "0"], SystemExit, "argument --redraw"),
    (["--nice", "25"], SystemExit, "argument --nice"),
    (["--jobs", "0"], SystemExit, "argument --jobs"),
    (["--scheme", "ring"], SystemExit, "argument --scheme: invalid choice: 'ring'"),
    (["--seeds", "x"], SystemExit, "argument --seeds: invalid int value: 'x'"),
    (["--basis-seed", "-1"], ValueError, "seed must be in"),
]:
    bad(f"rbdlib-experiment {' '.join(argv)}", experiment(*argv), error, match)
bad("rbdlib-experiment (unknown configuration)", lambda w: experiments.main(["fc-imagenet"]), SystemExit,
    "argument config: invalid choice: 'fc-imagenet'")


def lr_zero_honoured(w, opt):
    assert isinstance(opt, RBD) and opt.param_groups[0]["lr"] == 0.0


good("rbdlib-experiment rbd:lr=0 trains at lr 0",
     lambda w: experiments.make_optimizer(*experiments.parse_method("rbd:lr=0"), net(), experiments.PAPER["fc-fmnist"],
                                          experiments.parser().parse_args(["fc-fmnist"])), lr_zero_honoured)
good("run_dir keeps any spec inside --out",
     lambda w: experiments.run_dir(w.tmp / "out", "rbd:compartments=../../../../escaped", 0),
     lambda w, path: path.resolve().is_relative_to((w.tmp / "out").resolve()) or pytest.fail(str(path)))


# --- python -m rbdlib.shared_seeds
def dist_cli(*argv):
    return lambda w: distributed_main(list(argv))


for argv, match in [
    (["--steps", "0"], "argument --steps"),
    (["--steps", "-1"], "argument --steps"),
    (["--dim", "0"], "argument --dim"),
    (["--lr", "inf"], "argument --lr"),
    (["--lr", "-1"], "argument --lr"),
    (["--lr", "nan"], "argument --lr"),
    (["--batch-size", "0"], "argument --batch-size"),
    (["--nproc", "0"], "argument --nproc"),
    (["--nproc", "-2"], "argument --nproc"),
    (["--timeout", "0"], "argument --timeout"),
    (["--timeout", "nan"], "argument --timeout"),
    (["--warmup", "-1"], "argument --warmup"),
    (["--seed", "-1"], "argument --seed"),
    (["--scheme", "ring"], "argument --scheme: invalid choice: 'ring'"),
    (["--dataset", "imagenet"], "argument --dataset: invalid choice: 'imagenet'"),
]:
    bad(f"rbdlib.distributed {' '.join(argv)}", dist_cli(*argv), SystemExit, match)


# ------------------------------------------------------------------------------------------- the test
OUTCOMES = Counter("clear error, nothing changed" if c.error else "correct result" for c in CASES)


def test_enough_cases_with_unique_names():
    assert len({c.id for c in CASES}) == len(CASES)
    assert OUTCOMES["clear error, nothing changed"] >= 150, OUTCOMES


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case: Case, tmp_path):
    w = World(tmp_path)
    if case.prepare:
        case.prepare(w)
    before = w.state()
    stderr = io.StringIO()
    if case.error is None:
        result = case.run(w)
        case.check(w, result)
        return
    with contextlib.redirect_stderr(stderr), pytest.raises(case.error) as raised:
        case.run(w)
    message = f"{raised.value}\n{stderr.getvalue()}"
    assert re.search(case.match, message), f"{case.match!r} not in {message!r}"
    assert same(before, w.state()), "the bad input changed parameters, optimizer state or files"
