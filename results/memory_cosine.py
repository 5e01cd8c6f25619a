"""Why memory helps RBD, measured: the cosine between the step applied and the gradient, per variant (issue 26).

Run from the repository root (a few minutes on 2 shared CPU cores; seeded, so it reproduces)::

    .venv/bin/python results/memory_cosine.py          # writes results/fc-fmnist-memory-tuning/cosine.md

The FC network of the runs (D = 101,770), seed 0, trains for one epoch of Fashion-MNIST (batches of 32, no
augmentation, d = 250, +-1 bases) under each variant at the learning rate chosen for it in results/memory.sh.
Two cosines of the step applied: with that step's mini-batch gradient (``RBD.last_cosine``, every step), and
every 10 steps with the gradient of a fixed 6,000 training images, a stand-in for the full gradient, whose
descent is what the step is for.

Prediction. One basis with s = 1/sqrt(D) and +-1 entries gives cos = sqrt(d / (D + d - 1)) (notebook 05,
equation 2; ``rbdlib.compartments.predicted_cosine``), about 0.0495 here. A heavy-ball buffer
b = sum_j mu^j Delta_{t-j} of independent draws around a gradient g that stays the same has
E<b, g> = s^2 d |g|^2 / (1 - mu) and a spread that adds up in squares, Var b ~ Var Delta / (1 - mu^2), so

    cos(b, g) ~ sqrt(d / (D + d - 1)) * sqrt((1 + mu) / (1 - mu))          (4.36x at mu = 0.9)

an upper bound, as gradients change from step to step: against the mini-batch gradient, whose noise the buffer
averages away, the cosine even falls; against the full gradient it is what the averaging gains.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import torch

import rbdlib
from rbdlib.data import batches, load_dataset
from rbdlib.models import fc

DIM, BATCH, MU = 250, 32, 0.9
VARIANTS = {"rbd, lr 0.5 (the paper's)": dict(lr=0.5), "rbd, lr 2": dict(lr=2.0),
            "momentum 0.9, lr 0.2": dict(lr=0.2, momentum=MU),
            "Nesterov 0.9, lr 0.2": dict(lr=0.2, momentum=MU, nesterov=True)}


def flat_grad(model) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def cosines(ds, options: dict, every: int = 10) -> tuple[list[float], list[float]]:
    """(cosine with the mini-batch gradient at every step, cosine with the 6,000-image gradient every 10)."""
    model = fc(seed=0)
    opt = rbdlib.RBD(model.parameters(), dim=DIM, seed=0, distribution="rademacher", **options)
    full_x, full_y = ds.train_x[:6000], ds.train_y[:6000]
    batch, full = [], []
    stream = batches(ds.train_x, ds.train_y, BATCH, generator=torch.Generator().manual_seed(0))
    for t, (x, y) in enumerate(stream):
        if t % every == 0:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(full_x), full_y).backward()
            g, before = flat_grad(model), torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        batch.append(opt.last_cosine)
        if t % every == 0:
            step = before - torch.cat([p.detach().reshape(-1) for p in model.parameters()])
            full.append(float(step @ g / (step.norm() * g.norm())))
    return batch, full


def main() -> None:
    torch.set_num_threads(1)
    ds = load_dataset("fashion-mnist")
    D = sum(p.numel() for p in fc(seed=0).parameters())
    one = math.sqrt(DIM / (D + DIM - 1))
    rows = ["| variant | cos with the mini-batch gradient, steps 1-100 | steps 501-1563 | cos with the "
            "6,000-image gradient, steps 1-100 | steps 501-1563 | predicted (mini-batch = full) |",
            "|---|---:|---:|---:|---:|---:|"]
    for name, options in VARIANTS.items():
        batch, full = cosines(ds, options)
        predicted = one * (math.sqrt((1 + MU) / (1 - MU)) if "momentum" in options else 1)
        rows.append(f"| {name} | {statistics.mean(batch[:100]):.4f} | {statistics.mean(batch[500:]):.4f} | "
                    f"{statistics.mean(full[:10]):.4f} | {statistics.mean(full[50:]):.4f} | {predicted:.4f}"
                    f"{' (bound)' if 'momentum' in options else ''} |")
        print(rows[-1], flush=True)
    out = Path("results/fc-fmnist-memory-tuning/cosine.md")
    out.write_text("Written by `.venv/bin/python results/memory_cosine.py` (FC-Fashion-MNIST, seed 0, one epoch, "
                   f"no augmentation, d = {DIM}, +-1 bases, D = {D:,}).\n\n" + "\n".join(rows) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
