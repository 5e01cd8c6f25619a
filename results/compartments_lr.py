"""Do equal-cost compartments pay off at a larger learning rate? (issue 14; notebook 05, section 4)

Run from the repository root (about 15 minutes on 2 shared CPU cores; seeded, so it reproduces)::

    .venv/bin/python results/compartments_lr.py     # writes results/fc-fmnist-compartments/lr_sweep.md

At equal cost (d = 250 directions in each compartment, the same d x D random numbers per step) every layout has
the same expected step, and compartments make it less noisy (cosine.md: chunks of 25,000 keep twice the cosine of
one basis, so their step is less than half as long). Less noise can only help where noise limits training, so
this sweeps the learning rate: the FC network on Fashion-MNIST, +-1 bases, one basis against chunks of 25,000 with
250 directions each, 600 steps of batch 32 (no augmentation; a short budget, not the paper's), seeds 0, 1, 2
(weights, bases and batches), validation accuracy at the end.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

# isort: off
import rbdlib  # (import order does not matter: the kernels run on torch's own threads)
import torch
# isort: on
from rbdlib.models import fc
from rbdlib.train import train

LRS, SEEDS, STEPS = (0.5, 2.0, 8.0, 16.0, 32.0), (0, 1, 2), 600
SCHEMES = {"one basis": "network", "25,000, d each": 25_000}
OUT = Path("results/fc-fmnist-compartments/lr_sweep.md")


def final_accuracy(lr: float, cut, seed: int, ds) -> float:
    model = fc(ds.in_shape, seed=seed)
    opt = rbdlib.RBD(model.named_parameters(), lr=lr, dim=250, compartments=cut, distribution="rademacher",
                     seed=seed, nonfinite="skip")
    history = train(model, opt, ds, max_steps=STEPS, eval_every=STEPS, progress=False, seed=seed)
    return 100 * history.last["val_acc"]


def main() -> None:
    start = time.time()
    torch.set_num_threads(1)
    ds = rbdlib.data.load_dataset("fashion-mnist")
    lines = ["# Equal-cost compartments against one basis as the learning rate grows", "",
             "Written by `.venv/bin/python results/compartments_lr.py` (definitions in its docstring): FC on "
             f"Fashion-MNIST, +-1 bases, d = 250, {STEPS} steps of batch 32, validation accuracy %, mean ± sd over "
             f"seeds {', '.join(map(str, SEEDS))}; the difference is taken per seed.", "",
             "| lr | one basis | 25,000, d each | difference | per seed (one basis / 25,000) |",
             "|---:|---:|---:|---:|---|"]
    for lr in LRS:
        acc = {name: [final_accuracy(lr, cut, seed, ds) for seed in SEEDS] for name, cut in SCHEMES.items()}
        one, comp = acc["one basis"], acc["25,000, d each"]
        diff = [c - o for c, o in zip(comp, one)]
        ms = lambda v: f"{statistics.mean(v):.2f} ± {statistics.stdev(v):.2f}"  # noqa: E731
        lines.append(f"| {lr:g} | {ms(one)} | {ms(comp)} | {statistics.mean(diff):+.2f} ± {statistics.stdev(diff):.2f} "
                     f"| {', '.join(f'{o:.2f} / {c:.2f}' for o, c in zip(one, comp))} |")
        print(lines[-1], f"({time.time() - start:.0f} s)", flush=True)
    lines += ["", f"Run time {time.time() - start:.0f} s."]
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
