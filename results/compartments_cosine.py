"""How much of the gradient one RBD step keeps, per compartment scheme, measured beside the theory (issue 14).

Run from the repository root (a few minutes on 2 shared CPU cores; seeded, so it reproduces)::

    .venv/bin/python results/compartments_cosine.py            # writes results/fc-fmnist-compartments/cosine.md

The FC network of the runs (784-128-10, D = 101,770) takes a fixed set of Fashion-MNIST mini-batch gradients
(batches of 32, as in training) at two points: the initial weights of seed 0, and the same weights after one
epoch of SGD (lr 0.25, the paper's), a stand-in for a partly trained network. For every gradient and every
scheme, ``rbdlib.RBD`` with ``lr=0`` draws fresh bases at every step and reports ``last_cosine`` (the cosine
between the step it would apply and the gradient) and the coordinates c_k; nothing moves.

The schemes are those of ``results/compartments.sh``, d = 250, +-1 bases as in the runs (normal bases too):

* one basis (``compartments="network"``), lr 0.5;
* equal coordinates and equal expected step: layers, tensors or 25,000-parameter chunks with d = 250 shared out
  (``split_dim=True``, d_k = ceil(d / K)), lr multiplied by K (the runs: layer lr 1.0, 25,000 lr 2.5; tensor is
  not run);
* equal cost: the same cut with d = 250 directions in every compartment, lr 0.5 (the same d x D random numbers
  per step as one basis, as long as no compartment is capped at its size).

Theory (notebook 05, equation 2; ``rbdlib.theory.predicted_cosine``). Entries of every P_k are s z with
s = 1/sqrt(D) and z i.i.d. with unit variance and fourth moment mu (3 normal, 1 for +-1). With
w_k = |g_k|^2 and m_k = D_k + d_k + mu - 2, the step Delta = sum_k P_k P_k^T g_k has

    <Delta, g> = sum_k |c_k|^2,   E<Delta, g> = s^2 sum_k d_k w_k,   E|Delta|^2 = s^4 sum_k d_k m_k w_k,

    cos(Delta, g) ~ sum_k d_k w_k / (|g| sqrt(sum_k d_k m_k w_k))                                   (2)

(equation 2 of notebook 05 writes D_k + d_k for m_k). Its spread over basis draws, to first order
(the delta method on u_k = |c_k|^2 / s^2, independent across compartments, with Var u_k = d_k (2 w_k^2 +
(mu - 3) sum_i g_ki^4)):

    sd(cos) / cos ~ sqrt( sum_k (1/U - m_k / (2M))^2 Var u_k ),   U = sum_k d_k w_k,   M = sum_k d_k m_k w_k,

which is 1 / sqrt(2 d) for one basis: about 4.5 % at d = 250.

The step applied is lr Delta. Its expected length along the gradient, lr s^2 sum_k d_k w_k / |g|, is given
relative to one basis at lr 0.5 (the lr adjustment of the split runs makes it 1 up to the capped compartments);
its total length lr |Delta| likewise. The measured mean is over all (gradient, draw) pairs; the measured sd is
the spread over basis draws at a fixed gradient (pooled over gradients), the quantity the theory predicts.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

# isort: off
import rbdlib  # (import order does not matter: the kernels run on torch's own threads)
import torch
# isort: on
from rbdlib.models import fc
from rbdlib.theory import FOURTH_MOMENT, expected_step, predicted_cosine

DIM, LR, BATCH = 250, 0.5, 32
# label: (compartments, split_dim, lr, comparison)
SCHEMES = {
    "one basis": ("network", False, LR, "-"),
    "layer, d shared out": ("layer", True, 2 * LR, "equal coords + step"),
    "tensor, d shared out": ("tensor", True, 4 * LR, "equal coords + step"),
    "25,000, d shared out": (25_000, True, 5 * LR, "equal coords + step"),
    "layer, d each": ("layer", False, LR, "equal cost"),
    "tensor, d each": ("tensor", False, LR, "equal cost"),
    "25,000, d each": (25_000, False, LR, "equal cost"),
}
IN_RUNS = {"one basis", "layer, d shared out", "25,000, d shared out", "layer, d each", "tensor, d each",
           "25,000, d each"}


def minibatch_gradients(model, ds, count: int, seed: int) -> list[list[torch.Tensor]]:
    """``count`` gradients of the cross-entropy on disjoint random mini-batches of ``BATCH`` training images."""
    order = torch.randperm(len(ds.train_x), generator=torch.Generator().manual_seed(seed))
    grads = []
    for i in range(count):
        idx = order[i * BATCH:(i + 1) * BATCH]
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(ds.train_x[idx]), ds.train_y[idx]).backward()
        grads.append([p.grad.detach().clone() for p in model.parameters()])
    return grads


def sgd_epoch(model, ds, lr: float = 0.25, seed: int = 0) -> None:
    """One epoch of plain SGD (batch 32, no augmentation): the partly trained point."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    order = torch.randperm(len(ds.train_x), generator=torch.Generator().manual_seed(seed))
    for idx in order.split(BATCH):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(ds.train_x[idx]), ds.train_y[idx]).backward()
        opt.step()


def measure(model, grads, scheme, distribution: str, draws: int, seed: int) -> dict:
    """Per (gradient, draw): cos(Delta, g), the step along g and its length, both relative to one basis
    at lr 0.5 in expectation; per gradient: the predictions."""
    cut, split, lr, _ = scheme
    rows = dict(cos=[], along=[], length=[], within=[], pred_cos=[], pred_sd=[], pred_along=[], pred_length=[])
    for i, grad in enumerate(grads):
        for p, g in zip(model.parameters(), grad):
            p.grad = g.clone()
        opt = rbdlib.RBD(model.named_parameters(), lr=0.0, dim=DIM, compartments=cut, split_dim=split,
                         distribution=distribution, seed=seed + i)
        g_k = opt.gradient()
        norm_g = math.sqrt(sum(float(g.double().square().sum()) for g in g_k))
        # one basis at lr 0.5: E[lr <Delta, g>/|g|] and RMS lr |Delta|, the units of the step columns
        along_one, length_one = expected_step([torch.cat(g_k)], [DIM], LR, opt.scale, distribution)
        cosines = []
        for _ in range(draws):
            opt.step()                                              # lr = 0: fresh bases, nothing moves
            along = sum(float(c.double().square().sum()) for c in opt.last_coords) / norm_g   # <Delta,g> = |c|^2
            cosines.append(opt.last_cosine)
            rows["along"].append(lr * along / along_one)
            rows["length"].append(lr * along / opt.last_cosine / length_one)
        rows["cos"] += cosines
        rows["within"] += [c - statistics.mean(cosines) for c in cosines]
        mean, sd = predicted_cosine(g_k, opt.dims, distribution)
        rows["pred_cos"].append(mean)
        rows["pred_sd"].append(sd)
        along, length = expected_step(g_k, opt.dims, lr, opt.scale, distribution)
        rows["pred_along"].append(along / along_one)
        rows["pred_length"].append(length / length_one)
    n = len(rows["within"])
    return dict(K=len(opt.dims), coords=opt.num_coords, lr=lr,
                cost=sum(d * sum(b - a for _, a, b in c) for d, c in zip(opt.dims, opt.layout)) / (DIM * opt.size),
                cos=statistics.mean(rows["cos"]), pred_cos=statistics.mean(rows["pred_cos"]),
                sd=math.sqrt(sum(x * x for x in rows["within"]) / (n - len(grads))),
                pred_sd=math.sqrt(statistics.mean(s * s for s in rows["pred_sd"])),
                along=statistics.mean(rows["along"]), pred_along=statistics.mean(rows["pred_along"]),
                length=statistics.mean(rows["length"]), pred_length=statistics.mean(rows["pred_length"]))


def table(results: dict) -> list[str]:
    lines = ["| scheme | compared at | K | coords/step | random numbers (x d D) | lr | cos measured | cos eq. (2) "
             "| sd measured | sd predicted | step along g (x one basis) measured / predicted "
             "| step length (x one basis) measured / predicted |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, r in results.items():
        name = label if label in IN_RUNS else f"{label} (not run)"
        lines.append(f"| {name} | {SCHEMES[label][3]} | {r['K']} | {r['coords']:,} | {r['cost']:.2f} | {r['lr']:g} "
                     f"| {r['cos']:.4f} | {r['pred_cos']:.4f} | {r['sd']:.4f} | {r['pred_sd']:.4f} "
                     f"| {r['along']:.3f} / {r['pred_along']:.3f} | {r['length']:.3f} / {r['pred_length']:.3f} |")
    return lines


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gradients", type=int, default=20, help="mini-batch gradients per point")
    p.add_argument("--draws", type=int, default=5, help="basis draws per gradient and scheme")
    p.add_argument("--distributions", nargs="+", default=["rademacher", "normal"], choices=sorted(FOURTH_MOMENT))
    p.add_argument("--out", default="results/fc-fmnist-compartments/cosine.md")
    args = p.parse_args(argv)
    if args.draws < 2:
        p.error("--draws must be at least 2: the sd is measured over draws at a fixed gradient")
    start = time.time()
    torch.manual_seed(0)
    ds = rbdlib.data.load_dataset("fashion-mnist")
    model = fc(ds.in_shape, seed=0)
    points = {"initial weights (seed 0)": minibatch_gradients(model, ds, args.gradients, seed=1)}
    sgd_epoch(model, ds)
    points["after 1 epoch of SGD (lr 0.25)"] = minibatch_gradients(model, ds, args.gradients, seed=2)
    out = ["# cos(RBD step, gradient) per compartment scheme, measured beside the theory", "",
           f"Written by `{' '.join(['.venv/bin/python', 'results/compartments_cosine.py'] + (argv or sys.argv[1:]))}`"
           f" ({rbdlib.__version__}); theory and definitions in the script's docstring.", "",
           f"FC network on Fashion-MNIST (D = {sum(p.numel() for p in model.parameters()):,}), d = {DIM}, "
           f"{args.gradients} mini-batch gradients (batch {BATCH}) per point, {args.draws} basis draws per "
           f"gradient and scheme ({args.gradients * args.draws} steps per row). `cos measured`: mean over all "
           "steps; `sd measured`: spread over basis draws at a fixed gradient (pooled); `cos eq. (2)` and "
           "`sd predicted`: notebook 05's equation (2) and its first-order spread, per gradient, averaged. "
           "Steps along g and lengths are lr x E<Delta, g>/|g| and lr x |Delta|, relative to one basis at "
           f"lr {LR}.", ""]
    for point, grads in points.items():
        for offset, distribution in enumerate(args.distributions):
            results = {label: measure(model, grads, scheme, distribution, args.draws, seed=1000 * offset)
                       for label, scheme in SCHEMES.items()}
            out += [f"## {point}, {'+-1' if distribution == 'rademacher' else distribution} bases", ""]
            out += table(results) + [""]
            print("\n".join(out[-len(results) - 5:]), flush=True)
    out.append(f"Run time {time.time() - start:.0f} s.")
    Path(args.out).write_text("\n".join(out) + "\n")
    print(f"wrote {args.out} in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
