"""Shared-seed training, the example: the paper's FC network (:func:`rbdlib.models.fc`) on Fashion-MNIST (or
synthetic images when it is not on disk), a few distributed RBD steps per scheme, and its command line

    python -m rbdlib.shared_seeds --nproc 2                      # local processes (gloo on 127.0.0.1)
    torchrun --nproc-per-node 2 -m rbdlib.shared_seeds           # under torchrun

Used by notebook 07 (``rbdlib.distributed.launch(train, W, ...)``). This is the study's side of distributed
training: :mod:`rbdlib.distributed` (what ranks exchange, how processes start) knows no datasets and no networks.
Every option of the command line is checked before any process starts.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import torch
import torch.distributed as dist

from .data import DATASETS, load_dataset
from .distributed import SCHEMES, DistributedRBD, init, launch
from .models import fc
from .optim import RBD


def _data(name: str, seed: int):
    """(train_x, train_y, val_x, val_y, description): the dataset if on disk, else synthetic images."""
    try:
        ds = load_dataset(name, download=False)
        return ds.train_x, ds.train_y, ds.val_x, ds.val_y, f"{name} ({len(ds.train_x):,} training images)"
    except Exception as error:  # DatasetNotFoundError, DatasetFormatError, ...: fall back, and say so
        g = torch.Generator().manual_seed(seed)
        centres = torch.rand(10, 1, 28, 28, generator=g)
        y = torch.randint(0, 10, (12_000,), generator=g)
        x = (centres[y] + 0.3 * torch.randn(len(y), 1, 28, 28, generator=g)).clamp(0, 1)
        return x[:10_000], y[:10_000], x[10_000:], y[10_000:], f"synthetic 28x28 data ({name}: {error})"


def train(rank: int, world_size: int, scheme: str = "independent", steps: int = 20, dim: int = 250,
          lr: float = 0.5, batch_size: int = 32, seed: int = 0, dataset: str = "fashion-mnist",
          warmup: int = 2) -> dict:
    """Train the paper's FC network (D = 101,770 on 28x28 images) for ``steps`` distributed RBD steps.

    Needs an initialized process group (under :func:`launch` or after :func:`init`). Each rank takes its
    own ``batch_size`` slice of a global batch of ``world_size * batch_size`` images. Returns a dict with
    the bytes per step, DDP's, milliseconds per step (after ``warmup`` steps, which include compiling),
    the first and last losses, rank 0's validation accuracy and whether all ranks are bit-identical.
    """
    if steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    train_x, train_y, val_x, val_y, source = _data(dataset, seed)
    model = fc(tuple(train_x.shape[1:]), 10, seed=seed).to(device)
    opt = DistributedRBD(RBD(model.parameters(), lr=lr, dim=dim, seed=seed), scheme=scheme, model=model)
    g = torch.Generator().manual_seed(seed + 1)
    order, at, losses = torch.randperm(len(train_x), generator=g), 0, []
    per_step = world_size * batch_size
    timed_from = None
    for t in range(steps):
        if t == warmup:
            if device is not None:
                torch.cuda.synchronize()
            timed_from = time.perf_counter()
            seconds0 = dict(opt.seconds)
        if at + per_step > len(order):
            order, at = torch.randperm(len(train_x), generator=g), 0
        index = order[at + rank * batch_size: at + (rank + 1) * batch_size]
        at += per_step
        x, y = train_x[index].to(device), train_y[index].to(device)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss.detach()))
    if device is not None:
        torch.cuda.synchronize()
    timed = steps - warmup
    ms = 1e3 * (time.perf_counter() - timed_from) / timed if timed_from is not None else math.nan
    phases = {k: 1e3 * (v - seconds0[k]) / timed for k, v in opt.seconds.items()} if timed_from else {}
    with torch.no_grad():
        acc = float((model(val_x.to(device)).argmax(1) == val_y.to(device)).float().mean())
    return {"rank": rank, "world_size": world_size, "scheme": scheme, "source": source,
            "parameters": opt.optimizer.size, "coords": opt.optimizer.num_coords,
            "bytes_per_step": opt.bytes_per_step, "coord_bytes_per_step": opt.coord_bytes_per_step,
            "ddp_bytes_per_step": opt.ddp_bytes_per_step, "ms_per_step": ms, "ms_phases": phases,
            "loss_first": losses[0], "loss_last": losses[-1], "val_acc": acc, "in_sync": opt.in_sync(),
            "summary": opt.summary()}


def report(r: dict) -> str:
    """The result of :func:`train` as a few lines of text."""
    phases = ", ".join(f"{k} {v:.1f}" for k, v in r["ms_phases"].items())
    return (f"{r['scheme']}: {r['world_size']} process(es), data: {r['source']}\n"
            f"  D={r['parameters']:,}, sum(dims)={r['coords']}: {r['bytes_per_step']:,} B/step received "
            f"({r['coord_bytes_per_step']:,} B coordinates) vs DDP {r['ddp_bytes_per_step']:,} B/step "
            f"({r['ddp_bytes_per_step'] / r['bytes_per_step']:,.0f}x less)\n"
            f"  {r['ms_per_step']:.1f} ms/step wall (rank 0; phases: {phases}); "
            f"loss {r['loss_first']:.3f} -> {r['loss_last']:.3f}; val acc {r['val_acc']:.3f}; "
            f"ranks bit-identical: {r['in_sync']}")


def _number(kind, least, most=math.inf, open_low=False):
    """An argparse type: ``kind`` (int or float) in [least, most) (or (least, most)), finite."""
    def parse(text: str):
        value = kind(text)  # ValueError -> argparse's "invalid ... value"
        if not (least < value if open_low else least <= value) or not value < most:
            low = f"> {least}" if open_low else f">= {least}"
            raise argparse.ArgumentTypeError(f"expected a finite {kind.__name__} {low}, got {text!r}")
        return value
    parse.__name__ = kind.__name__
    return parse


def main(argv=None) -> None:
    """``torchrun --nproc-per-node N -m rbdlib.shared_seeds [--scheme ...]`` or, without torchrun,
    ``python -m rbdlib.shared_seeds --nproc N`` (local processes via :func:`rbdlib.distributed.launch`)."""
    parser = argparse.ArgumentParser(prog="python -m rbdlib.shared_seeds", description=main.__doc__)
    parser.add_argument("--scheme", choices=SCHEMES + ("both",), default="both")
    parser.add_argument("--steps", type=_number(int, 1), default=30)
    parser.add_argument("--dim", type=_number(int, 1, 2**32), default=250)
    parser.add_argument("--lr", type=_number(float, 0.0), default=0.5)
    parser.add_argument("--batch-size", type=_number(int, 1), default=32)
    parser.add_argument("--seed", type=_number(int, 0, 2**64), default=0)
    parser.add_argument("--dataset", default="fashion-mnist", choices=DATASETS)
    parser.add_argument("--warmup", type=_number(int, 0), default=3)
    parser.add_argument("--timeout", type=_number(float, 0.0, open_low=True), default=60.0,
                        help="seconds before a collective fails")
    parser.add_argument("--nproc", type=_number(int, 1), default=1, help="processes to start when not under torchrun")
    args = parser.parse_args(argv)
    schemes = SCHEMES if args.scheme == "both" else (args.scheme,)
    options = (args.steps, args.dim, args.lr, args.batch_size, args.seed, args.dataset, args.warmup)
    if "RANK" in os.environ:  # under torchrun
        rank, world_size = init(timeout=args.timeout)
        if not torch.cuda.is_available():  # share the cores among the local processes
            threads = max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world_size)))
            torch.set_num_threads(threads)  # the kernels follow torch's thread count
        for scheme in schemes:
            result = train(rank, world_size, scheme, *options)
            if rank == 0:
                print(report(result), flush=True)
        dist.destroy_process_group()
    else:
        for scheme in schemes:
            result = launch(train, args.nproc, scheme, *options, timeout=args.timeout)[0]
            print(report(result), flush=True)


if __name__ == "__main__":
    main()
