"""Why memory helps RBD, measured: the cosine between the step applied and the gradient, per variant (issue 26).

Run from the repository root (a few minutes on 2 shared CPU cores; seeded, so it reproduces)::

    .venv/bin/python results/memory_cosine.py          # writes results/fc-fmnist-memory-tuning/cosine.md

The FC network of the runs (D = 101,770), seed 0, trains for one epoch of Fashion-MNIST (batches of 32, no
augmentation, d = 250, +-1 bases) under each variant at the learning rate chosen for it in results/memory.sh.
Two cosines of the step applied: with that step's mini-batch gradient (``RBD.last_cosine``, every step), and
every 10 steps with the gradient of a fixed 6,000 training images, a stand-in for the full gradient, whose
descent is what the step is for.

Prediction. One basis with s = 1/sqrt(D) and +-1 entries gives cos = sqrt(d / (D + d - 1)) (notebook 05,
equation 2; ``rbdlib.theory.momentum_cosine``), about 0.0495 here. A heavy-ball buffer
b = sum_j mu^j Delta_{t-j} of independent draws around a gradient g that stays the same has
E<b, g> = s^2 d |g|^2 / (1 - mu) and a spread that adds up in squares, Var b ~ Var Delta / (1 - mu^2), so

    cos(b, g) ~ sqrt(d / (D + d - 1)) * sqrt((1 + mu) / (1 - mu))          (4.36x at mu = 0.9)

an upper bound, as gradients change from step to step: against the mini-batch gradient, whose noise the buffer
averages away, the cosine even falls; against the full gradient it is what the averaging gains.

Momentum kept in the coordinates (``memory="coordinates"``) steps inside the current basis' d-dimensional span,
so its cosine with any gradient is at most that of the gradient's projection on the span, sqrt(d / D) (0.0496):
it cannot beat one basis against the mini-batch gradient; what it can gain is against the full gradient, by
averaging the mini-batch noise inside the span for the ``redraw`` steps the basis lives. The adaptive rule
rescales the step and keeps its direction: the cosine of plain RBD (of momentum, with momentum).
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch

import rbdlib
from rbdlib.data import load_dataset
from rbdlib.models import fc
from rbdlib.theory import carried_fraction, measure_cosines, momentum_cosine

DIM, BATCH, MU = 250, 32, 0.9
COORDS = dict(momentum=MU, memory="coordinates")
VARIANTS = {"rbd, lr 0.5 (the paper's)": dict(lr=0.5), "rbd, lr 2": dict(lr=2.0),
            "momentum 0.9, lr 0.2": dict(lr=0.2, momentum=MU),
            "Nesterov 0.9, lr 0.2": dict(lr=0.2, momentum=MU, nesterov=True),
            "coordinates 0.9, redraw 1, lr 2": dict(lr=2.0, **COORDS),
            "coordinates 0.9, redraw 100, lr 0.4": dict(lr=0.4, redraw=100, **COORDS),
            "adaptive 0.999, lr 0.03": dict(lr=0.03, adaptive=0.999),
            "adaptive 0.999 + momentum 0.9, lr 0.003": dict(lr=0.003, adaptive=0.999, momentum=MU)}


def predicted(options: dict, D: int) -> str:
    """The prediction of the module docstring for one variant (a bound where the averaging is involved)."""
    if options.get("memory") == "coordinates":
        return f"{carried_fraction(DIM, D):.4f} (bound)"   # the share of g in a d-dimensional span: sqrt(d / D)
    if options.get("momentum"):
        return f"{momentum_cosine(DIM, D, MU):.4f} (bound)"
    return f"{momentum_cosine(DIM, D):.4f}"


def main() -> None:
    torch.set_num_threads(1)
    ds = load_dataset("fashion-mnist")
    D = sum(p.numel() for p in fc(seed=0).parameters())
    rows = ["| variant | cos with the mini-batch gradient, steps 1-100 | steps 501-1563 | cos with the "
            "6,000-image gradient, steps 1-100 | steps 501-1563 | predicted (mini-batch = full) |",
            "|---|---:|---:|---:|---:|---:|"]
    for name, options in VARIANTS.items():
        model = fc(seed=0)
        opt = rbdlib.RBD(model.parameters(), dim=DIM, seed=0, distribution="rademacher", **options)
        batch, full = measure_cosines(model, opt, ds, steps=len(ds.train_x) // BATCH + 1, batch_size=BATCH)
        rows.append(f"| {name} | {statistics.mean(batch[:100]):.4f} | {statistics.mean(batch[500:]):.4f} | "
                    f"{statistics.mean(full[:10]):.4f} | {statistics.mean(full[50:]):.4f} | "
                    f"{predicted(options, D)} |")
        print(rows[-1], flush=True)
    out = Path("results/fc-fmnist-memory-tuning/cosine.md")
    out.write_text("Written by `.venv/bin/python results/memory_cosine.py` (FC-Fashion-MNIST, seed 0, one epoch, "
                   f"no augmentation, d = {DIM}, +-1 bases, D = {D:,}).\n\n" + "\n".join(rows) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
