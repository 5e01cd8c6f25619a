"""The paper's configurations and the experiment command line.

    rbdlib-experiment fc-fmnist --methods sgd fpd rbd --epochs 3 --out results/fc-fmnist
    rbdlib-experiment fc-fmnist --methods rbd rbd:distribution=rademacher rbd:compartments=layer
    rbdlib-experiment fc-fmnist --methods sgd rbd --seeds 0 1 2 --jobs 2 --nice 19
    python -m rbdlib.experiments cnn-fmnist --methods rbd --smoke
    torchrun --nproc-per-node 2 -m rbdlib.experiments fc-fmnist --methods rbd --scheme independent

A method is ``sgd``, ``fpd``, ``rbd`` or ``nes``, optionally with options after a colon:
``rbd:compartments=layer,dim=125,split_dim=true,distribution=uniform,redraw=10,lr=0.25`` or
``nes:shared_batch=true,antithetic=true,sigma=0.01``; ``fpd:reset_coords=false`` is the reference code's FPD, an
ablation (:class:`rbdlib.fpd.StaleFPD`); ``width=512`` (any method) widens the FC network's hidden layer.
Learning rates default to the paper's (``PAPER``; NES takes the configuration's rbd rate, as the reference code
does), constant as in the paper; ``decay=cosine`` (any method) lowers them along a cosine over ``--epochs``
(:func:`decayed`). d defaults to 250. Each option is checked for its method and value before any run starts.

The run writes, into ``--out``: ``results.json`` (every run with its history, each starting from a
measured epoch-0 record of the initial weights), ``results.csv`` (one row per evaluation), ``table.md``
(validation accuracy, mean +- sd over seeds, beside Table 1), ``accuracy.png`` and ``command.txt``, all
rewritten as runs progress. Each (method, seed) keeps ``_runs/<run>/run.json`` (its records and status) and,
while unfinished, ``_runs/<run>/checkpoint.pt``, written atomically after every epoch and loaded with
``weights_only=True``. Running the same command again resumes every unfinished run from its last completed
epoch, in a later process or session; the checkpoint is deleted when the run completes. Each epoch's
shuffling and augmentation are seeded by (seed, epoch), so a resumed run gives the same numbers as an
uninterrupted one. ``--jobs N`` trains N runs at once in processes with one thread each, at low priority.

Under ``torchrun`` (``WORLD_SIZE`` > 1) RBD and FPD run data-parallel with shared seeds
(:class:`rbdlib.distributed.DistributedRBD`): each rank shuffles with its own seed, the ranks exchange only
coordinates, and rank 0 writes the results. An epoch then counts the batches of one rank.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import os
import re
import shlex
import statistics
import sys
import time
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from . import _files, distributions, models, results
from . import data as datasets
from .fpd import FPD
from .nes import NES
from .optim import RBD
from .train import evaluate, train

# Table 1 of the paper (validation accuracy, %) and the learning rates of the reference code.
PAPER = {
    "fc-mnist": dict(model="fc", dataset="mnist", D=101_770, lr=dict(rbd=1.0, fpd=1.0, sgd=0.125),
                     table=dict(nes=22.5, fpd=80.0, rbd=93.893, sgd=98.27)),
    "fc-fmnist": dict(model="fc", dataset="fashion-mnist", D=101_770, lr=dict(rbd=0.5, fpd=0.5, sgd=0.25),
                      table=dict(nes=45.0, fpd=77.3, rbd=85.65, sgd=87.32)),
    "fc-cifar10": dict(model="fc", dataset="cifar10", D=394_634, lr=dict(rbd=0.25, fpd=0.25, sgd=0.0078125),
                       table=dict(nes=17.8, fpd=21.4, rbd=43.77, sgd=52.09)),
    "cnn-mnist": dict(model="cnn", dataset="mnist", D=93_322, lr=dict(rbd=0.0625, fpd=0.0625, sgd=0.03125),
                      table=dict(nes=51.0, fpd=88.9, rbd=97.17, sgd=99.41)),
    "cnn-fmnist": dict(model="cnn", dataset="fashion-mnist", D=93_322, lr=dict(rbd=0.125, fpd=0.125, sgd=0.0625),
                       table=dict(nes=37.0, fpd=77.8, rbd=85.56, sgd=91.95)),
    "cnn-cifar10": dict(model="cnn", dataset="cifar10", D=122_570, lr=dict(rbd=0.125, fpd=0.125, sgd=0.015625),
                        table=dict(nes=20.3, fpd=37.2, rbd=54.64, sgd=81.4)),
    "resnet8-cifar10": dict(model="resnet8", dataset="cifar10", D=77_850, lr=dict(rbd=0.125, fpd=0.125, sgd=0.05),
                            table=dict()),
}
NES_SIGMA = 0.01  # the reference code's; NES's lr is the configuration's rbd lr, which the reference inherits
METHODS = ("sgd", "fpd", "rbd", "nes")
_BASES = {"lr", "dim", "compartments", "distribution", "split_dim"}
_MEMORY = {"momentum", "nesterov", "weight_decay"}  # update rules with memory (rbdlib/step.py), as torch's SGD has
_SUBSPACE = _BASES | _MEMORY | {"memory", "adaptive"}  # and where RBD keeps its momentum; its adaptive scale
USES = {"sgd": {"lr"} | _MEMORY, "fpd": _SUBSPACE | {"reset_coords"}, "rbd": _SUBSPACE | {"redraw"},
        "nes": {"lr", "dim", "sigma", "distribution", "shared_batch", "antithetic"}}  # options each method takes
for _uses in USES.values():
    _uses |= {"width", "decay"}  # the network's hidden units (fc), and the run's learning-rate schedule


def _flag(value: str) -> bool:
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise ValueError("expected true or false")


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise ValueError("expected a positive integer")
    return int(value)


def _rate(value: str, least: float = 0.0) -> float:
    number = float(value)
    if not least <= number < float("inf") or number == least > 0:
        raise ValueError(f"expected a {'positive' if least else 'non-negative'} finite number")
    return number


def _momentum(value: str) -> float:
    number = float(value)
    if not 0 <= number < 1:
        raise ValueError("expected a number in [0, 1)")
    return number


def _memory(value: str) -> str:
    if value not in ("parameters", "coordinates"):
        raise ValueError("expected parameters or coordinates")
    return value


def _decay(value: str) -> str:
    if value != "cosine":
        raise ValueError("expected cosine (the default is a constant learning rate, as in the paper)")
    return value


def decayed(lr: float, epoch: int, epochs: int) -> float:
    """The learning rate of epoch ``epoch`` (from 0) of ``epochs`` under ``decay=cosine``: lr (1 + cos(pi epoch /
    epochs)) / 2, as torch's ``CosineAnnealingLR(T_max=epochs)`` stepped once per epoch.

    >>> [round(decayed(1.0, e, 4), 3) for e in range(4)]
    [1.0, 0.854, 0.5, 0.146]
    """
    return lr * (1 + math.cos(math.pi * epoch / epochs)) / 2


def _compartments(value: str):
    if value.isdigit():
        return _positive(value)
    if value not in ("network", "layer", "tensor"):
        raise ValueError("expected network, layer, tensor or a positive integer")
    return value


def _distribution(value: str) -> str:
    if value not in distributions.NAMES:
        raise ValueError(f"expected {', '.join(distributions.NAMES[:-1])} or {distributions.NAMES[-1]}")
    return value


_OPTIONS = {"dim": _positive, "lr": _rate, "compartments": _compartments, "distribution": _distribution,
            "redraw": lambda v: None if v.lower() == "none" else _positive(v), "split_dim": _flag,
            "sigma": lambda v: _rate(v, least=1e-12), "shared_batch": _flag, "antithetic": _flag,
            "width": _positive, "reset_coords": _flag, "momentum": _momentum, "nesterov": _flag,
            "weight_decay": _rate, "memory": _memory, "adaptive": _momentum, "decay": _decay}


def parse_method(spec: str, uses: dict | None = None, checks: dict | None = None) -> tuple[str, dict]:
    """``"rbd:dim=100,compartments=layer"`` -> ("rbd", {"dim": 100, "compartments": "layer"}).

    Every option is checked for its method and value before anything runs: ``uses`` maps each method to the
    options it takes (default :data:`USES`), ``checks`` each option to its parser (default the CLI's).

    >>> parse_method("rbd:compartments=1000,split_dim=true,redraw=none")
    ('rbd', {'compartments': 1000, 'split_dim': True, 'redraw': None})
    """
    uses, checks = uses or USES, checks or _OPTIONS
    name, _, rest = spec.partition(":")
    if name not in uses:
        raise ValueError(f"unknown method {name!r} in {spec!r}; expected one of {tuple(uses)}")
    options = {}
    for item in rest.split(",") if rest else []:
        key, eq, value = item.partition("=")
        if not eq or key not in checks:
            raise ValueError(f"bad option {item!r} in {spec!r}; options are {sorted(checks)} as key=value")
        if key not in uses[name]:
            raise ValueError(f"{name} does not use option {key!r} (in {spec!r}); it takes {sorted(uses[name])}")
        if key in options:
            raise ValueError(f"option {key!r} given twice in {spec!r}")
        try:
            options[key] = checks[key](value)
        except ValueError as error:
            raise ValueError(f"bad value {value!r} for {key} in {spec!r}: {error}") from None
    return name, options


def make_model(options: dict, config: dict, dataset, seed: int | None = None) -> torch.nn.Module:
    return models.build(config["model"], dataset, seed=seed, width=options.get("width"))


@dataclass(frozen=True)
class RunOptions:
    """How every run of a command trains, the same for all its (method, seed) runs: what the command line's
    options become (:meth:`from_args`). ``dim``, ``compartments``, ``distribution``, ``redraw`` and
    ``basis_seed`` are the defaults of a method's options; ``world_size`` and ``scheme`` are set under
    ``torchrun``."""

    epochs: int = 100
    dim: int = 250
    compartments: str | int = "network"
    distribution: str = "normal"
    redraw: int | None = 1
    basis_seed: int = 0
    batch_size: int = 32
    augment: str = "paper"
    max_steps: int | None = None
    smoke: bool = False
    device: str = "cpu"
    progress: bool | None = None
    test: bool = False
    stop_on_divergence: bool = False
    data_root: str | None = None
    world_size: int = 1
    scheme: str = "independent"

    @classmethod
    def from_args(cls, args: argparse.Namespace, **changes) -> RunOptions:
        """The options parsed by :func:`parser`, with ``changes``."""
        return cls(**{**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}, **changes})


def make_optimizer(method: str, options: dict, model: torch.nn.Module, config: dict,
                   run: RunOptions) -> torch.optim.Optimizer:
    """The optimizer of ``method`` with its ``options`` (:func:`parse_method`), the defaults taken from ``run``
    (dim, compartments, distribution, redraw, basis_seed) and the learning rates from ``config``."""
    options = dict(options)
    options.pop("width", None)
    options.pop("decay", None)   # the run's schedule: run_one sets each epoch's lr
    lr = options.pop("lr", None)
    if method == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config["lr"]["sgd"] if lr is None else lr, **options)
    dim = options.pop("dim", run.dim)
    lr = config["lr"]["rbd" if method == "nes" else method] if lr is None else lr
    if method == "nes":
        options.setdefault("sigma", NES_SIGMA)
        return NES(model.parameters(), lr=lr, dim=dim, seed=run.basis_seed, **options)
    kwargs = dict(compartments=run.compartments, distribution=run.distribution, seed=run.basis_seed)
    kwargs.update(options)
    params = model.named_parameters() if kwargs["compartments"] == "layer" else model.parameters()
    if method == "fpd":
        return FPD(params, lr=lr, dim=dim, **kwargs)
    kwargs.setdefault("redraw", run.redraw)
    return RBD(params, lr=lr, dim=dim, **kwargs)


# every option that changes what a run computes: recorded in its run.json, checked on resume and in tables
SETTINGS = ("batch_size", "augment", "max_steps", "smoke", "dim", "distribution", "compartments", "redraw",
            "basis_seed", "world_size", "scheme")


def run_settings(run: RunOptions) -> dict:
    """The options of ``run`` that change what it computes (``SETTINGS``), as its run.json records them."""
    return {k: getattr(run, k, None) for k in SETTINGS}


def _check_settings(where, recorded: dict | None, settings: dict, how: str) -> None:
    """A run recorded with other settings than ``settings`` is an error naming both (runs written before
    settings were recorded have none, and pass)."""
    if recorded is None:
        return
    differ = [k for k in SETTINGS if recorded.get(k) != settings.get(k)]
    if differ:
        theirs = ", ".join(f"{k}={recorded.get(k)!r}" for k in differ)
        ours = ", ".join(f"{k}={settings.get(k)!r}" for k in differ)
        raise ValueError(f"{where} was trained with {theirs}, {how} {ours}; use the same options, choose another "
                         "--out, or delete that run's folder")


JSON_LIMIT = 256 * 2**20  # run.json and results.json: records of many runs take a few MB
OUTPUTS = ("results.json", "results.csv", "table.md", "command.txt", "accuracy.png")  # what write_results writes


def _read_json(path: Path):
    """A JSON file of a results folder, read safely (no link, no special file, bounded); None if absent."""
    return json.loads(_files.read(path, JSON_LIMIT)) if _files.exists(path) else None


def _smoke(ds: datasets.Dataset) -> datasets.Dataset:
    """A tiny subset for CI: 512 training and 256 validation images."""
    return datasets.Dataset(ds.train_x[:512], ds.train_y[:512], ds.val_x[:256], ds.val_y[:256],
                            ds.test_x[:256], ds.test_y[:256], ds.name, ds.classes, ds.source_path)


def run_dir(out: Path, spec: str, seed: int) -> Path:
    """The folder of one (method, seed) under ``out/_runs``: a readable slug of the spec plus a hash of it,
    so no spec can name a path outside ``out`` and two specs never share a folder.

    >>> run_dir(Path("r"), "sgd:lr=../../x", 0).as_posix()
    'r/_runs/sgd_lr_x_cf918194_seed0'
    """
    slug = re.sub(r"[^A-Za-z0-9]+", "_", spec).strip("_")[:80]
    return out / "_runs" / f"{slug}_{hashlib.sha1(spec.encode()).hexdigest()[:8]}_seed{seed}"


CHECKPOINT_KEYS = {"format", "method", "seed", "epochs", "model", "optimizer", "records"}


def save_run(folder: Path, result: dict, model: torch.nn.Module, opt: torch.optim.Optimizer, final: bool) -> None:
    """Write a run's ``run.json`` (``result``, its records included) and, unless ``final``, its checkpoint (the
    format :func:`load_checkpoint` reads; a final run keeps none), each replaced atomically."""
    _files.make_folder(folder, root=folder.parents[1])  # out/_runs/<run>: no link on the way
    ckpt, records = folder / "checkpoint.pt", result["records"]
    if not final:
        buffer = io.BytesIO()
        torch.save({"format": "rbdlib-run-1", "method": result["method"], "seed": result["seed"],
                    "epochs": records[-1]["epoch"], "model": model.state_dict(), "optimizer": opt.state_dict(),
                    "records": records}, buffer)
        _files.write(ckpt, buffer.getvalue())
    _files.write(folder / "run.json", json.dumps(result, indent=1))
    if final:
        ckpt.unlink(missing_ok=True)


def load_checkpoint(path: Path, spec: str, seed: int, limit: int = 2**31) -> dict:
    """A run's checkpoint, read with ``weights_only=True`` (tensors and plain data only: loading runs no code),
    and checked to be the checkpoint of this (method, seed) before anything is restored from it. The file is
    read safely (no link, no special file) and only if it holds, and unpacks to, at most ``limit`` bytes."""
    data = _files.read(path, limit)
    try:  # a zip entry may be compressed: what it unpacks to counts against the limit, checked before loading
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(entry.file_size for entry in archive.infolist())
    except zipfile.BadZipFile:
        unpacked = 0   # not a zip: torch.load's own error says so below
    if unpacked > limit:
        raise ValueError(f"checkpoint {path} unpacks to {unpacked:,} bytes, more than the {limit:,} its run can "
                         "need; delete it to start that run again")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # a crafted or damaged file: say which and why, restore nothing
        raise ValueError(f"cannot load checkpoint {path} safely ({type(error).__name__}: {error}); "
                         "delete it to start that run again") from None
    if not isinstance(state, dict) or set(state) != CHECKPOINT_KEYS or state["format"] != "rbdlib-run-1":
        raise ValueError(f"{path} is not an rbdlib run checkpoint (expected keys {sorted(CHECKPOINT_KEYS)})")
    if (state["method"], state["seed"]) != (spec, seed):
        raise ValueError(f"{path} belongs to {state['method']!r} seed {state['seed']}, not {spec!r} seed {seed}")
    records = state["records"]
    if not isinstance(records, list) or not records or records[-1].get("epoch") != state["epochs"]:
        raise ValueError(f"{path}: its records do not end at its epoch count {state['epochs']!r}")
    return state


def _record_start(model, ds) -> dict:
    """Epoch 0: the loss and accuracy of the initial weights, measured."""
    val_loss, val_acc = evaluate(model, ds.val_x, ds.val_y)
    return dict(epoch=0, step=0, train_loss=None, val_loss=val_loss, val_acc=val_acc, seconds=0.0)


def augmentation(kind: str, dataset: str):
    """``"paper"``: the paper's augmentation; ``"crop-only"``: its pad-and-crop alone (an ablation: no
    brightness shift, no flip); ``"none"``."""
    pad = 4 if dataset == "cifar10" else 3
    paper = datasets.augment_cifar if dataset == "cifar10" else datasets.augment_mnist
    return {"paper": paper, "crop-only": lambda x, g: datasets.random_crop(x, pad, g), "none": None}[kind]


def run_one(name: str, spec: str, seed: int, ds, config: dict, run: RunOptions, folder: Path,
            on_epoch=None) -> dict:
    """Train one (method, seed) for ``run.epochs``, resuming from ``folder`` if it holds a checkpoint.

    ``folder/run.json`` (plain JSON) holds the run's records and its status: "unfinished" while a
    ``folder/checkpoint.pt`` (model, optimizer, records) lets a later process continue, "complete" (or
    "diverged") once it ended, when the checkpoint is deleted. Both are replaced atomically every epoch.
    """
    method, options = parse_method(spec)
    model = make_model(options, config, ds, seed).to(run.device)  # before the optimizer: its state lives there
    opt = make_optimizer(method, options, model, config, run)
    rank = 0
    if run.world_size > 1:
        from .distributed import DistributedRBD

        if not isinstance(opt, RBD):
            raise ValueError(f"only rbd and fpd run distributed (shared seeds); got {method!r}")
        from .distributed.protocol import agree

        status = folder / "run.json"  # every rank must resume (or start) alike, before any other collective
        agree([(_read_json(status) or {}).get("status"), _files.exists(folder / "checkpoint.pt")],
              f"resume state of {folder} (it must be on a disk all ranks see)")
        opt = DistributedRBD(opt, scheme=run.scheme, sync_weights=True, model=model)
        rank = opt.rank
    augment = augmentation(run.augment, config["dataset"])
    inner = getattr(opt, "optimizer", opt)
    base_lrs = [group["lr"] for group in inner.param_groups]   # before a checkpoint brings a decayed lr back
    coords = getattr(inner, "num_coords", None) or (inner.dim if isinstance(inner, NES) else None)
    result = dict(config=name, method=spec, seed=seed, D=models.count_parameters(model), coords=coords,
                  epochs=run.epochs, status="unfinished", records=[], test_acc=None)
    ckpt, status = folder / "checkpoint.pt", folder / "run.json"
    saved = _read_json(status)
    result["settings"] = run_settings(run)
    if saved:
        _check_settings(folder, saved.get("settings"), result["settings"], "this command has")
        if saved["status"] == "unfinished" and options.get("decay") and run.epochs != saved["epochs"]:
            raise ValueError(f"{folder} holds an unfinished run of {saved['epochs']} epochs whose learning rate "
                             f"decays over them: --epochs {run.epochs} would change its schedule midway; use "
                             f"--epochs {saved['epochs']}, or delete that folder")
        if saved["status"] == "unfinished" and run.epochs < saved["epochs"]:
            raise ValueError(f"{folder} holds an unfinished run of {saved['epochs']} epochs: --epochs {run.epochs} "
                             f"would end it early as if complete; use --epochs {saved['epochs']} (or more), or "
                             "delete that folder")
    if saved and saved["status"] != "unfinished":
        if saved["epochs"] != run.epochs:
            raise ValueError(f"{folder} holds a {saved['status']} run of {saved['epochs']} epochs, not "
                             f"{run.epochs}; choose another --out or delete that folder")
        return saved
    if _files.exists(ckpt):  # bounded by what the model and its optimizer can hold, with room for the records
        state = load_checkpoint(ckpt, spec, seed, limit=64 * 2**20 + 16 * 4 * models.count_parameters(model))
        if state["epochs"] > run.epochs or (saved and saved.get("records")
                                             and saved["records"][-1]["epoch"] != state["epochs"]):
            raise ValueError(f"{ckpt} is at epoch {state['epochs']}, but its run.json is at epoch "
                             f"{saved['records'][-1]['epoch'] if saved and saved.get('records') else 'none'} "
                             f"and --epochs is {run.epochs}; they must agree: delete the folder to start again")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        result["records"] = state["records"]
    else:
        result["records"] = [_record_start(model, ds)]
    records = result["records"]

    def save(final: bool) -> None:
        if rank == 0:
            save_run(folder, result, model, opt, final)

    for epoch in range(records[-1]["epoch"], run.epochs):
        for group, lr in zip(inner.param_groups, base_lrs) if options.get("decay") else ():
            group["lr"] = decayed(lr, epoch, run.epochs)
        cpu = time.process_time()
        history = train(model, opt, ds, epochs=1, batch_size=run.batch_size, augment=augment,
                        seed=(seed * 100_003 + epoch) * 1_009 + rank, device=run.device, progress=run.progress,
                        max_steps=run.max_steps, eval_at_start=False)
        rec = dict(history.last, epoch=epoch + 1, step=records[-1]["step"] + history.last["step"],
                   seconds=round(records[-1]["seconds"] + history.last["seconds"], 3),
                   cpu_seconds=round(time.process_time() - cpu, 3))
        records.append(rec)
        if history.config.get("diverged"):
            result["status"] = "diverged"
            print(f"  {name} {spec} seed={seed} diverged in epoch {epoch + 1} (non-finite loss or gradient)",
                  flush=True)
            if run.stop_on_divergence:
                save(final=True)
                raise FloatingPointError(f"{spec} seed {seed} diverged in epoch {epoch + 1}; recorded in "
                                         f"{status} (--stop-on-divergence)")
            break
        save(final=False)
        if on_epoch is not None:
            on_epoch()
        print(f"  {name} {spec} seed={seed} epoch {epoch + 1}/{run.epochs}: val_acc={rec['val_acc']:.4f} "
              f"({rec['seconds']:.0f} s)", flush=True)
    if result["status"] == "unfinished":
        result["status"] = "complete"
    if run.test:
        result["test_acc"] = evaluate(model, ds.test_x, ds.test_y)[1]
    save(final=True)
    return result


def collect(out: Path, tasks: list[tuple[str, int]]) -> list[dict]:
    """Every run under ``out/_runs`` as far as it got (from its ``run.json``), in a fixed order: by method as in
    the paper's table (``METHODS``), then each method's variants in the order they first came into the folder
    (its ``results.json``, then this command's), then seed; so a table that several commands share (more seeds,
    other methods) reads the same whichever of them wrote it last."""
    if _files.exists(out / "_runs"):
        _files.make_folder(out / "_runs", root=out)  # refuses a _runs that is a link
    runs = [_read_json(p) for p in sorted((out / "_runs").glob("*/run.json"))]
    first = {}
    for r in runs:  # one row averages the seeds of one method: they must have been trained alike
        if r.get("settings") is not None:
            seen = first.setdefault(r["method"], r)
            _check_settings(f"{out}: {r['method']} seed {r['seed']}", r["settings"], seen["settings"],
                            f"seed {seen['seed']} has")
    known = [r["method"] for r in (_read_json(out / "results.json") or {"runs": []})["runs"]]
    specs = dict.fromkeys(known + [spec for spec, _ in tasks] + [r["method"] for r in runs])
    first = {spec: i for i, spec in enumerate(specs)}
    return sorted(runs, key=lambda r: (METHODS.index(r["method"].partition(":")[0]), first[r["method"]], r["seed"]))


def _mean_sd(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f}" + (f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else "")


def summary_table(name: str, runs: list[dict], config: dict) -> str:
    """Markdown: the rows of :func:`rbdlib.results.summarize` beside the paper's numbers: validation accuracy,
    mean +- sd over seeds at the last epoch every seed of the row reached (finished and unfinished runs of a
    method in separate rows), the best epoch's accuracy, the measured epoch-0 accuracy and the status."""
    lines = [f"| {name} | D | coords/step | epochs | seeds | val acc % (ours) | best epoch % | at epoch 0 | "
             "paper (100 epochs) | s/epoch | CPU s/epoch | status |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in results.summarize(runs):
        paper = config["table"].get(parse_method(row["method"])[0])
        per_epoch, cpu = ("" if row[k] is None else f"{row[k]:.0f}" for k in ("seconds_per_epoch", "cpu_per_epoch"))
        status = row["status"] + (f" (target {row['target']} epochs)" if row["status"] == "unfinished" else "")
        lines.append(f"| {row['method']} | {row['D']:,} | {row['coords'] or row['D']:,} | {row['epoch']} | "
                     f"{len(row['seeds'])} | {_mean_sd(row['accs'])} | {_mean_sd(row['best'])} | "
                     f"{row['start']:.2f} | {'' if paper is None else paper} | {per_epoch} | {cpu} | {status} |")
    return "\n".join(lines) + "\n"


def plot(runs: list[dict], path: Path, title: str) -> None:
    """Validation accuracy against epochs from the measured epoch 0: the mean over a method's seeds at the
    epochs all of them reached, shaded +- sd, and each seed as a thin line as far as it got."""
    from matplotlib.figure import Figure  # not pyplot: a notebook's backend and open figures stay as they are

    from .viz import mean_band, save_png

    fig = Figure(figsize=(6.5, 4))
    ax = fig.subplots()
    for i, (spec, (x, mean, sd)) in enumerate(results.curves(runs).items()):
        seeds = [r for r in runs if r["method"] == spec and r["records"]]
        for r in seeds if len(seeds) > 1 else []:
            ax.plot(*results.curve(r), color=f"C{i}", lw=0.6, alpha=0.5)
        mean_band(ax, x, mean, sd, color=f"C{i}", label=spec + (f" ({len(seeds)} seeds)" if len(seeds) > 1 else ""),
                   marker="o" if len(x) < 12 else None)
    ax.set(xlabel="epoch", ylabel="validation accuracy (%)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_png(fig, path)


def write_results(out: Path, name: str, runs: list[dict], config: dict, command: str) -> None:
    """results.json, results.csv, table.md, accuracy.png and command.txt for ``runs``; the commands of every
    earlier write into ``out`` are kept, since its runs may come from several commands."""
    _files.make_folder(out)
    commands = (_read_json(out / "results.json") or {}).get("commands", [])
    commands = list(dict.fromkeys(commands + [command]))
    _files.write(out / "results.json", json.dumps({"commands": commands, "runs": runs}, indent=1))
    text = io.StringIO()
    columns = ["config", "method", "seed", "epoch", "step", "train_loss", "val_loss", "val_acc", "seconds",
               "cpu_seconds"]
    writer = csv.DictWriter(text, columns)
    writer.writeheader()
    for r in runs:
        for rec in r["records"]:
            writer.writerow({"config": r["config"], "method": r["method"], "seed": r["seed"],
                             **{k: rec.get(k) for k in columns[3:]}})
    _files.write(out / "results.csv", text.getvalue())
    listed = "\n".join(f"    {c}" for c in commands)
    _files.write(out / "table.md", f"Commands:\n\n{listed}\n\n" + summary_table(name, runs, config))
    _files.write(out / "command.txt", "\n".join(commands) + "\n")
    plot(runs, out / "accuracy.png", name)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rbdlib-experiment", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", choices=sorted(PAPER), help="model-dataset configuration of the paper")
    p.add_argument("--methods", nargs="+", default=["sgd", "fpd", "rbd"], help="methods, with options")
    p.add_argument("--epochs", type=_positive, default=100)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--dim", type=_positive, default=250)
    p.add_argument("--compartments", default="network", type=_compartments)
    p.add_argument("--distribution", default="normal", choices=distributions.NAMES)
    p.add_argument("--redraw", default=1, type=lambda s: None if s.lower() == "none" else _positive(s))
    p.add_argument("--basis-seed", type=int, default=0, help="seed of the random bases")
    p.add_argument("--batch-size", type=_positive, default=32)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--data-root", default=None)
    p.add_argument("--out", default=None, help="output folder (default results/<config>)")
    p.add_argument("--max-steps", type=_positive, default=None, help="cap optimizer steps per epoch")
    p.add_argument("--smoke", action="store_true", help="tiny data, d <= 20, 8 steps per epoch, <= 2 epochs (CI)")
    p.add_argument("--augment", default="paper", choices=["paper", "crop-only", "none"],
                   help="the paper's training augmentation (default), its pad-and-crop alone, or none")
    p.add_argument("--no-augment", dest="augment", action="store_const", const="none", help="--augment none")
    p.add_argument("--test", action="store_true", help="also report test accuracy at the end")
    p.add_argument("--stop-on-divergence", action="store_true",
                   help="stop the command when a run diverges (default: record it as diverged and go on)")
    p.add_argument("--progress", action="store_true", default=None)
    p.add_argument("--jobs", type=_positive, default=None,
                   help="train the (method, seed) runs in this many worker processes, one thread each, at --nice "
                        "priority (default: one after another in this process, with all threads)")
    p.add_argument("--nice", type=int, default=10, choices=range(20), metavar="0..19",
                   help="niceness of the --jobs processes (default 10), so interactive work keeps the CPU (under "
                        "Linux's autogroup scheduler, relative to processes of the same session only)")
    p.add_argument("--report", action="store_true",
                   help="train nothing: rewrite the tables, CSV, JSON and plot of --out from its runs so far")
    p.add_argument("--scheme", default="independent", choices=["shared", "independent"],
                   help="under torchrun: shared bases or independent bases per worker")
    return p


def _load(config: dict, run: RunOptions) -> datasets.Dataset:
    ds = datasets.load_dataset(config["dataset"], root=run.data_root)
    return _smoke(ds) if run.smoke else ds


def _job_init(nice: int) -> None:
    """A --jobs worker: low priority and one thread, so parallel runs do not fight over the cores; on Linux it
    ends with its parent (a killed command leaves no worker writing into --out)."""
    if sys.platform == "linux":
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before that took effect
            os._exit(1)
    os.nice(nice)
    torch.set_num_threads(1)  # the kernels follow torch's thread count


def _job(name: str, spec: str, seed: int, config: dict, run: RunOptions, folder: Path) -> dict:
    return run_one(name, spec, seed, _load(config, run), config, run, folder)


def _in_parallel(name: str, tasks, config: dict, run: RunOptions, out: Path, report, jobs: int, nice: int) -> None:
    """Run the tasks in ``jobs`` processes at niceness ``nice``; rewrite the results from the runs' files every
    minute."""
    import concurrent.futures as cf
    import multiprocessing

    with cf.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                initializer=_job_init, initargs=(nice,)) as pool:
        pending = {pool.submit(_job, name, spec, seed, config, run, run_dir(out, spec, seed))
                   for spec, seed in tasks}
        while pending:
            done, pending = cf.wait(pending, timeout=60, return_when=cf.FIRST_EXCEPTION)
            for future in done:
                future.result()  # a failed run stops the command with its error
            report()


def main(argv=None) -> dict:
    args = parser().parse_args(argv)
    config = PAPER[args.config]
    command = "rbdlib-experiment " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    for spec in args.methods:  # fail before any training on a bad method, option or value
        method, options = parse_method(spec)
        make_optimizer(method, options, make_model(options, config, config["dataset"]), config,
                       RunOptions.from_args(args))
    smoke = dict(epochs=min(args.epochs, 2), dim=min(args.dim, 20), max_steps=args.max_steps or 8) if args.smoke else {}
    run = RunOptions.from_args(args, world_size=int(os.environ.get("WORLD_SIZE", "1")), **smoke)
    if run.world_size > 1:
        if args.jobs:
            raise ValueError("--jobs runs processes of its own; it cannot be combined with torchrun")
        from .distributed import init

        init()
    out = Path(args.out or Path("results") / args.config)
    tasks = [(spec, seed) for spec in args.methods for seed in dict.fromkeys(args.seeds)]
    started = time.time()
    writer = int(os.environ.get("RANK", "0")) == 0
    if writer:  # before any training: an output folder or file that is a link or not what it should be
        _files.make_folder(out)
        for name in OUTPUTS:
            _files.check_replaceable(out / name)
        if _files.exists(out / "_runs"):
            _files.make_folder(out / "_runs", root=out)

    def report() -> list[dict]:
        runs = collect(out, tasks)
        if writer and runs:
            write_results(out, args.config, runs, config, command)
        return runs

    if args.report:
        runs = collect(out, tasks)
        if not runs:
            raise FileNotFoundError(f"--report: no runs under {out / '_runs'}")
        write_results(out, args.config, runs, config, command)
        print(_files.read(out / "table.md", JSON_LIMIT).decode())
        return {"out": str(out), "runs": runs}
    if args.jobs:
        _in_parallel(args.config, tasks, config, run, out, report, args.jobs, args.nice)
        runs = report()
    else:
        ds = _load(config, run)
        runs = [run_one(args.config, spec, seed, ds, config, run, run_dir(out, spec, seed), on_epoch=report)
                for spec, seed in tasks]
        if writer:
            runs = report()
    if not writer:
        return {"out": str(out), "runs": runs}
    print(f"wrote {out}/table.md, results.json, results.csv, accuracy.png in {time.time() - started:.0f} s")
    print(_files.read(out / "table.md", JSON_LIMIT).decode())
    return {"out": str(out), "runs": runs}


def cli() -> None:
    """The ``rbdlib-experiment`` command: :func:`main`, exiting 0 on success (a console script exits with what
    its function returns, and ``main`` returns the runs, which would make the exit status 1)."""
    main()


if __name__ == "__main__":
    cli()
