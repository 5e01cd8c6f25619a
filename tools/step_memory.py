"""Peak memory of one RBD step beyond the parameters and their gradients, in units of 4 D bytes.

    python tools/step_memory.py                     # D = 50,000,000 in two tensors, d = 2: about 1 GB, a minute
    python tools/step_memory.py --size 1000000 --momentum 0.9

The step runs in this process. Kernels are compiled on a small warm-up first; then the parameters and gradients
are allocated and written, the resident set is read (``/proc/self/statm``), one step runs, and the peak resident
set (``ru_maxrss``) less that reading is what the step held at its peak. Linux only. rbdlib is imported from
wherever Python finds it (``PYTHONPATH=. python tools/step_memory.py`` for this checkout).
"""

from __future__ import annotations

import argparse
import os
import resource

import torch

import rbdlib


def resident() -> int:
    """Bytes resident now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=50_000_000, help="D, the number of parameters")
    parser.add_argument("--dim", type=int, default=2, help="d, directions per step")
    parser.add_argument("--momentum", type=float, default=0.0)
    args = parser.parse_args()
    torch.manual_seed(0)
    warm = [torch.nn.Parameter(torch.randn(100)), torch.nn.Parameter(torch.randn(10))]
    opt = rbdlib.RBD(warm, lr=0.1, dim=args.dim, momentum=args.momentum)
    for p in warm:
        p.grad = torch.randn_like(p)
    opt.step()
    params = [torch.nn.Parameter(torch.randn(args.size - 1000)), torch.nn.Parameter(torch.randn(1000))]
    for p in params:
        p.grad = torch.randn_like(p)
    opt = rbdlib.RBD(params, lr=0.1, dim=args.dim, momentum=args.momentum)
    before = resident()
    opt.step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    unit = 4 * args.size
    print(f"rbdlib {rbdlib.__file__}; torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    print(f"D = {args.size:,}, d = {args.dim}, momentum {args.momentum}: parameters and gradients "
          f"{2 * unit / 2**20:,.0f} MiB; resident before the step {before / 2**20:,.0f} MiB, peak "
          f"{peak / 2**20:,.0f} MiB")
    print(f"one step held {(peak - before) / 2**20:,.0f} MiB at its peak = {(peak - before) / unit:.2f} x 4D bytes "
          f"beyond the parameters and gradients; last_cosine {opt.last_cosine:.6f}")


if __name__ == "__main__":
    main()
