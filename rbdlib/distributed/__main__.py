"""``python -m rbdlib.distributed``: the example of :mod:`rbdlib.distributed.example`, under ``torchrun``
or in local processes started by :func:`rbdlib.distributed.launcher.launch`. Every option is checked before
any process starts."""

from __future__ import annotations

import argparse
import math
import os

import torch
import torch.distributed as dist

from ..data import DATASETS
from .example import _report, train
from .launcher import init, launch
from .protocol import SCHEMES


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
    """``torchrun --nproc-per-node N -m rbdlib.distributed [--scheme ...]`` or, without torchrun,
    ``python -m rbdlib.distributed --nproc N`` (local processes via :func:`launch`)."""
    parser = argparse.ArgumentParser(prog="python -m rbdlib.distributed", description=main.__doc__)
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
                print(_report(result), flush=True)
        dist.destroy_process_group()
    else:
        for scheme in schemes:
            result = launch(train, args.nproc, scheme, *options, timeout=args.timeout)[0]
            print(_report(result), flush=True)


if __name__ == "__main__":
    main()
