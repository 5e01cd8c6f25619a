"""The paper's configurations and the experiment command line.

    rbdlib-experiment fc-fmnist --methods sgd fpd rbd --epochs 3 --out results/fc-fmnist
    rbdlib-experiment fc-fmnist --methods rbd rbd:distribution=rademacher rbd:compartments=layer
    python -m rbdlib.experiments cnn-fmnist --methods rbd --smoke
    torchrun --nproc-per-node 2 -m rbdlib.experiments fc-fmnist --methods rbd --scheme independent

A method is ``sgd``, ``fpd``, ``rbd`` or ``nes``, optionally with options after a colon:
``rbd:compartments=layer,dim=125,split_dim=true,distribution=uniform,redraw=10,lr=0.25``.
Learning rates default to the paper's (``PAPER``); d defaults to 250.

The run writes, into ``--out``: ``results.json`` (every run with its history), ``results.csv`` (one row
per evaluation), ``table.md`` (final validation accuracy, mean +- std over seeds, beside Table 1),
``accuracy.png`` and ``command.txt``. Each (method, seed) checkpoints after every epoch under
``_runs/``; running the same command again resumes from the last completed epoch, and every file is
written atomically. Each epoch's shuffling and augmentation are seeded by (seed, epoch), so a resumed
run gives the same numbers as an uninterrupted one.

Under ``torchrun`` (``WORLD_SIZE`` > 1) RBD and FPD run data-parallel with shared seeds
(:class:`rbdlib.distributed.DistributedRBD`): each rank shuffles with its own seed, the ranks exchange only
coordinates, and rank 0 writes the results. An epoch then counts the batches of one rank.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from . import data as datasets
from . import models
from .optim import FPD, NES, RBD
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
NES_LR, NES_SIGMA = 0.05, 0.01  # the paper's NES learning rate is not known; sigma is the reference's
METHODS = ("sgd", "fpd", "rbd", "nes")
_OPTIONS = {"dim": int, "lr": float, "compartments": str, "distribution": str, "redraw": str,
            "split_dim": str, "sigma": float}


def parse_method(spec: str) -> tuple[str, dict]:
    """``"rbd:dim=100,compartments=layer"`` -> ("rbd", {"dim": 100, "compartments": "layer"}).

    >>> parse_method("rbd:compartments=1000,split_dim=true,redraw=none")
    ('rbd', {'compartments': 1000, 'split_dim': True, 'redraw': None})
    """
    name, _, rest = spec.partition(":")
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r} in {spec!r}; expected one of {METHODS}")
    options = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in _OPTIONS:
            raise ValueError(f"bad option {item!r} in {spec!r}; options are {sorted(_OPTIONS)} as key=value")
        if key == "split_dim":
            options[key] = value.lower() in ("1", "true", "yes")
        elif key == "redraw":
            options[key] = None if value.lower() == "none" else int(value)
        elif key == "compartments":
            options[key] = int(value) if value.isdigit() else value
        else:
            options[key] = _OPTIONS[key](value)
    return name, options


def make_optimizer(method: str, options: dict, model: torch.nn.Module, config: dict, args) -> torch.optim.Optimizer:
    options = dict(options)
    lr = options.pop("lr", None)
    if method == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr or config["lr"]["sgd"])
    dim = options.pop("dim", args.dim)
    if method == "nes":
        return NES(model.parameters(), lr=lr or NES_LR, dim=dim, sigma=options.pop("sigma", NES_SIGMA),
                   seed=args.basis_seed)
    kwargs = dict(compartments=args.compartments, distribution=args.distribution, seed=args.basis_seed)
    kwargs.update(options)
    params = model.named_parameters() if kwargs["compartments"] == "layer" else model.parameters()
    if method == "fpd":
        kwargs.pop("redraw", None)
        return FPD(params, lr=lr or config["lr"]["fpd"], dim=dim, **kwargs)
    kwargs.setdefault("redraw", args.redraw)
    return RBD(params, lr=lr or config["lr"]["rbd"], dim=dim, **kwargs)


def _atomic_write(path: Path, text: str | bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(text.encode() if isinstance(text, str) else text)
    os.replace(tmp, path)


def _smoke(ds: datasets.Dataset) -> datasets.Dataset:
    """A tiny subset for CI: 512 training and 256 validation images."""
    return datasets.Dataset(ds.train_x[:512], ds.train_y[:512], ds.val_x[:256], ds.val_y[:256],
                            ds.test_x[:256], ds.test_y[:256], ds.name, ds.classes, ds.source_path)


def run_one(name: str, spec: str, seed: int, ds, config: dict, args, run_dir: Path) -> dict:
    """Train one (method, seed) for ``args.epochs``, resuming from ``run_dir`` if it holds a checkpoint."""
    method, options = parse_method(spec)
    model = models.build(config["model"], ds, seed=seed)
    opt = make_optimizer(method, options, model, config, args)
    rank = 0
    if args.world_size > 1:
        from .distributed import DistributedRBD

        if not isinstance(opt, RBD):
            raise ValueError(f"only rbd and fpd run distributed (shared seeds); got {method!r}")
        opt = DistributedRBD(opt, scheme=args.scheme, sync_weights=True)
        rank = opt.rank
    augment = None if args.no_augment else (datasets.augment_cifar if config["dataset"] == "cifar10"
                                            else datasets.augment_mnist)
    ckpt, records, done = run_dir / "checkpoint.pt", [], 0
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        records, done = state["records"], state["epochs"]
    steps = records[-1]["step"] if records else 0
    seconds = records[-1]["seconds"] if records else 0.0
    for epoch in range(done, args.epochs):
        history = train(model, opt, ds, epochs=1, batch_size=args.batch_size, augment=augment,
                        seed=(seed * 100_003 + epoch) * 1_009 + rank, device=args.device, progress=args.progress,
                        max_steps=args.max_steps)
        rec = dict(history.last, epoch=epoch + 1, step=steps + history.last["step"],
                   seconds=round(seconds + history.last["seconds"], 3))
        steps, seconds = rec["step"], rec["seconds"]
        records.append(rec)
        if rank == 0:
            run_dir.mkdir(parents=True, exist_ok=True)
            buffer = io.BytesIO()
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "records": records,
                        "epochs": epoch + 1}, buffer)
            _atomic_write(ckpt, buffer.getvalue())
        print(f"  {name} {spec} seed={seed} epoch {epoch + 1}/{args.epochs}: val_acc={rec['val_acc']:.4f} "
              f"({rec['seconds']:.0f} s)", flush=True)
        if history.config.get("diverged"):
            break
    test_loss, test_acc = evaluate(model, ds.test_x, ds.test_y) if args.test else (None, None)
    inner = getattr(opt, "optimizer", opt)
    coords = getattr(inner, "num_coords", None) or (inner.dim if isinstance(inner, NES) else None)
    return dict(config=name, method=spec, seed=seed, D=models.count_parameters(model), coords=coords,
                records=records, test_acc=test_acc)


def summary_table(name: str, runs: list[dict], config: dict) -> str:
    """Markdown: final validation accuracy per method (mean +- std over seeds) beside the paper's."""
    lines = [f"| {name} | coords/step | epochs | seeds | val acc % (ours) | paper (100 epochs) | s/epoch |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for spec in dict.fromkeys(r["method"] for r in runs):
        group = [r for r in runs if r["method"] == spec and r["records"]]
        accs = [100 * r["records"][-1]["val_acc"] for r in group]
        mean = statistics.mean(accs)
        std = f" ± {statistics.stdev(accs):.2f}" if len(accs) > 1 else ""
        paper = config["table"].get(parse_method(spec)[0])
        epochs = group[0]["records"][-1]["epoch"]
        per_epoch = statistics.mean(r["records"][-1]["seconds"] / r["records"][-1]["epoch"] for r in group)
        lines.append(f"| {spec} | {group[0]['coords'] or group[0]['D']:,} | {epochs} | {len(group)} | "
                     f"{mean:.2f}{std} | {'' if paper is None else paper} | {per_epoch:.0f} |")
    return "\n".join(lines) + "\n"


def plot(runs: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for spec in dict.fromkeys(r["method"] for r in runs):
        for i, r in enumerate(x for x in runs if x["method"] == spec):
            ax.plot([0] + [rec["epoch"] for rec in r["records"]], [0.1] + [rec["val_acc"] for rec in r["records"]],
                    marker="o", color=f"C{list(dict.fromkeys(x['method'] for x in runs)).index(spec)}",
                    label=spec if i == 0 else None, alpha=0.8)
    ax.set(xlabel="epoch", ylabel="validation accuracy", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    _atomic_write(path, buffer.getvalue())


def write_results(out: Path, name: str, runs: list[dict], config: dict, command: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    _atomic_write(out / "results.json", json.dumps({"command": command, "runs": runs}, indent=1))
    text = io.StringIO()
    columns = ["config", "method", "seed", "epoch", "step", "train_loss", "val_loss", "val_acc", "seconds"]
    writer = csv.DictWriter(text, columns)
    writer.writeheader()
    for r in runs:
        for rec in r["records"]:
            writer.writerow({"config": r["config"], "method": r["method"], "seed": r["seed"],
                             **{k: rec.get(k) for k in columns[3:]}})
    _atomic_write(out / "results.csv", text.getvalue())
    _atomic_write(out / "table.md", f"Command: `{command}`\n\n" + summary_table(name, runs, config))
    _atomic_write(out / "command.txt", command + "\n")
    plot(runs, out / "accuracy.png", name)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rbdlib-experiment", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", choices=sorted(PAPER), help="model-dataset configuration of the paper")
    p.add_argument("--methods", nargs="+", default=["sgd", "fpd", "rbd"], help="methods, with options")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--dim", type=int, default=250)
    p.add_argument("--compartments", default="network", type=lambda s: int(s) if s.isdigit() else s)
    p.add_argument("--distribution", default="normal", choices=["normal", "uniform", "rademacher"])
    p.add_argument("--redraw", default=1, type=lambda s: None if s.lower() == "none" else int(s))
    p.add_argument("--basis-seed", type=int, default=0, help="seed of the random bases")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--data-root", default=None)
    p.add_argument("--out", default=None, help="output folder (default results/<config>)")
    p.add_argument("--max-steps", type=int, default=None, help="cap optimizer steps per epoch")
    p.add_argument("--smoke", action="store_true", help="tiny data, d <= 20, 8 steps per epoch, <= 2 epochs (CI)")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--test", action="store_true", help="also report test accuracy at the end")
    p.add_argument("--progress", action="store_true", default=None)
    p.add_argument("--scheme", default="independent", choices=["shared", "independent"],
                   help="under torchrun: shared bases or independent bases per worker")
    return p


def main(argv=None) -> dict:
    args = parser().parse_args(argv)
    config = PAPER[args.config]
    command = "rbdlib-experiment " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    for spec in args.methods:
        parse_method(spec)  # fail before any training on a bad method
    if args.smoke:
        args.epochs, args.dim, args.max_steps = min(args.epochs, 2), min(args.dim, 20), args.max_steps or 8
    args.world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if args.world_size > 1:
        from .distributed import init

        init()
    ds = datasets.load_dataset(config["dataset"], root=args.data_root)
    if args.smoke:
        ds = _smoke(ds)
    out = Path(args.out or Path("results") / args.config)
    started = time.time()
    runs = []
    for spec in args.methods:
        for seed in args.seeds:
            run_dir = out / "_runs" / f"{spec.replace(':', '_').replace(',', '_').replace('=', '-')}_seed{seed}"
            runs.append(run_one(args.config, spec, seed, ds, config, args, run_dir))
            if int(os.environ.get("RANK", "0")) == 0:
                write_results(out, args.config, runs, config, command)
    if int(os.environ.get("RANK", "0")) != 0:
        return {"out": str(out), "runs": runs}
    print(f"wrote {out}/table.md, results.json, results.csv, accuracy.png in {time.time() - started:.0f} s")
    print((out / "table.md").read_text())
    return {"out": str(out), "runs": runs}


if __name__ == "__main__":
    main()
