# ruff: noqa: E501  (the notebook's cells, as a learner reads them)
"""Writes notebooks/10_where_the_idea_went.ipynb, unexecuted, from the cells below (the notebook is then executed
in place: ``python notebooks/measure.py --write notebooks/10_where_the_idea_went.ipynb``). Run from the
repository root."""

from notebook_cells import code, md, write

md(r"""
# 10 · Where the idea went: RBD beside its successors

[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/rbdlib/rbdlib/blob/main/notebooks/10_where_the_idea_went.ipynb) [![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/rbdlib/rbdlib/main?labpath=notebooks%2F10_where_the_idea_went.ipynb)

**What you will learn**

- how five optimizers of 2023-2025 (Flora, GaLore, GoLore, APOLLO-Mini, MeZO) relate to Random Bases Descent:
  each as an equation beside RBD's, and all in one table: what is projected, how the projection is made, when it
  is re-drawn, what state is kept, what data-parallel workers must exchange, and whether a shared seed suffices
- all of them on one small problem, run live, with their memory counted byte by byte from the tensors they hold
- GoLore's step from scratch, checked against `rbdlib`
- a counter-example you can run in seconds: when a gradient's noise dominates its top singular vectors, GaLore's
  SVD projection follows the noise and crawls, while random projections (GoLore, RBD) keep descending
- the same methods at scale, from packaged runs: a character-level transformer of 0.83 M parameters, equal tokens,
  3 seeds: which method wins at equal tokens, which at equal memory, and where RBD stands

**Expected run time:** under a minute on a 2-core CPU (44 s measured on an otherwise idle machine;
the README lists every notebook's time and memory), about 30 seconds with `RBDLIB_SMOKE=1`.

Tenth in the sequence, after giving random bases a memory (09). The methods are `rbdlib.Flora`, `rbdlib.GaLore`,
`rbdlib.GoLore`, `rbdlib.ApolloMini` and `rbdlib.MeZO`: `torch.optim` optimizers on the same Philox bases as
`rbdlib.RBD`, each written from its paper's equations (their docstrings give the equations and the arXiv ids).
The symbols are those of the [notation table in 01](01_welcome.ipynb#Notation).
""")

code(r"""
import sys
if "google.colab" in sys.modules:  # Colab: install rbdlib from the repository (elsewhere it is already installed)
    %pip install -q "rbdlib[notebooks] @ git+https://github.com/rbdlib/rbdlib"
""")

code(r"""
import os
import math
import statistics
import torch
import rbdlib
SMOKE = os.environ.get("RBDLIB_SMOKE") == "1"   # CI runs every notebook small; readers get the real run
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
%config InlineBackend.figure_formats = ["png"]
print(f"rbdlib {rbdlib.__version__}, torch {torch.__version__}, device: {device} (the runs here are tiny: CPU)")
torch.set_num_threads(1)   # problems this small run fastest on one thread (notebook 01's recipe, point 5)
import matplotlib.pyplot as plt
import torch.nn.functional as F
from torch.func import grad
from rbdlib.bases import RandomBases
from rbdlib.footprint import nbytes, projection_bytes
from rbdlib.models import fc
from rbdlib.successors import sides
""")

md(r"""
## 1. Six update rules, one table

RBD (notebooks 04-09) projects the whole gradient $g \in \mathbb{R}^D$ on $d$ random directions, new at every step,
and keeps nothing:

$$ c_t = P_t^\top g_t, \qquad \theta_{t+1} = \theta_t - \eta\, P_t c_t, \qquad
   P_t \in \mathbb{R}^{D \times d},\ (P_t)_{ij} \sim \mathcal{N}(0, 1/D). \tag{1} $$

Its successors work **matrix by matrix**. A weight matrix's gradient, turned so that its smaller side comes first,
is $G \in \mathbb{R}^{s \times L}$ ($s \le L$). A projection $P \in \mathbb{R}^{s \times r}$ of rank $r$ turns it
into $rL$ coordinates, the matrix form of $c$, and the step is made from them and the optimizer's state:

$$ R_t = P_j^\top G_t \in \mathbb{R}^{r \times L}, \qquad W_{t+1} = W_t - \eta\, P_j N_t, \qquad
   j = \lfloor t / T \rfloor. \tag{2} $$

(2) is (1) with a block-diagonal $P$: the same $s \times r$ block for each of the $L$ columns. Two things are new.
$P_j$ is re-made only every $T$ steps (refresh $j$), so that a state $N_t$ built from $R_t$ can live in one
subspace for $T$ steps; and vectors (biases, norms) are not projected at all: they get the full-size rule.

**Flora** (Hao et al., 2024) is notebook 09's momentum in the coordinates, on matrices. With
$A_j = P_j^\top \in \mathbb{R}^{r \times s}$, entries $\mathcal{N}(0, 1/r)$, re-drawn every $\kappa$ steps:

$$ M \leftarrow A_j A_{j-1}^\top M \ \ (\text{at a re-draw}), \qquad M \leftarrow \beta M + (1 - \beta)\, A_j G_t,
   \qquad W \leftarrow W - \eta\, A_j^\top M. \tag{3} $$

**GaLore** (Zhao et al., 2024) runs Adam on $R_t$, with $P_j$ the top-$r$ left singular vectors $U_{:,1:r}$ of the
gradient at the refresh, $G_{jT} = U \Sigma Q^\top$, kept (stored) until the next one:

$$ M \leftarrow \beta_1 M + (1 - \beta_1) R_t, \quad V \leftarrow \beta_2 V + (1 - \beta_2)\, R_t \odot R_t, \quad
   N_t = \frac{\hat M}{\sqrt{\hat V} + \epsilon}, \quad W \leftarrow W - \eta\, \alpha\, P_j N_t \tag{4} $$

(hats: Adam's bias correction; $\alpha$ a fixed scale, 1 here). **GoLore** (He et al., 2025) is (4) with a random
orthonormal projection, the polar factor of a Gaussian matrix:

$$ P_j = Z_j \left(Z_j^\top Z_j\right)^{-1/2}, \qquad Z_j \in \mathbb{R}^{s \times r},\ (Z_j)_{ik} \sim \mathcal{N}(0, 1). \tag{5} $$

**APOLLO-Mini** (Zhu et al., 2025) projects on one Gaussian direction ($r = 1$) only to *measure*: Adam's
normalised $\tilde R_t = \hat M / (\sqrt{\hat V} + \epsilon)$ of the $1 \times L$ projection tells how much Adam
would rescale this tensor, and the step is the raw gradient, rescaled by it ($\alpha = \sqrt{128}$, the paper's
scale, and a limit on how fast the step's norm may grow):

$$ W \leftarrow W - \eta\, \alpha\, \frac{\lVert \tilde R_t \rVert}{\lVert R_t \rVert}\, G_t. \tag{6} $$

**MeZO** (Malladi et al., 2023) needs no backward pass. It draws $d$ perturbations $z_i \sim \mathcal{N}(0, I_D)$
at every step and estimates each coordinate from two losses:

$$ c_i = \frac{\mathcal{L}(\theta + \varepsilon z_i) - \mathcal{L}(\theta - \varepsilon z_i)}{2 \varepsilon}
   \approx z_i^\top g, \qquad \theta \leftarrow \theta - \frac{\eta}{d} \sum_{i=1}^{d} c_i z_i. \tag{7} $$

That is (1) with $P = [z_1 \cdots z_d] / \sqrt{d}$ and $c$ measured from function values: RBD's zeroth-order twin
(notebook 08's NES is a cousin).

| method | what is projected | the projection is made by | re-drawn | state per matrix (numbers) | bytes exchanged per step, data-parallel | shared seed suffices |
|---|---|---|---|---|---|---|
| RBD (1) | the whole gradient, $D \to d$ | random Gaussian (or $\pm 1$), $D \times d$ | every step | none | $4d$ | yes |
| FPD | the whole gradient, $D \to d$ | random, fixed | never | none | $4d$ | yes |
| Flora (3) | each $G$, $s \times L \to r \times L$ | random Gaussian, $r \times s$ | every $\kappa$ steps | $M$: $rL$ | $4rL$ per matrix if workers exchanged $A_j G$ (not implemented); $4D$ as shipped | partly |
| GaLore (4) | each $G$, $s \times L \to r \times L$ | SVD of the gradient | every $T$ steps | $M, V$: $2rL$; $P$: $sr$, stored | $4D$: the SVD needs the averaged $G$ | no |
| GoLore (4, 5) | each $G$, $s \times L \to r \times L$ | random orthonormal | every $T$ steps | $2rL$; $P$: $sr$, stored | $4rL$ per matrix if workers exchanged $R$ (not implemented); $4D$ as shipped | partly |
| APOLLO-Mini (6) | each $G$, $s \times L \to 1 \times L$, to estimate a scale | rank-1 random Gaussian | every $T$ steps | $2L$ and one norm | $4D$: the step is the gradient itself | no |
| MeZO (7) | the loss, along $d$ perturbations | zeroth order: $z_i \sim \mathcal{N}(0, I_D)$ | every step | none (and no gradient) | $4d$ | yes |

Bytes are float32's. *Shared seed suffices*: workers that share the seed exchange only the coordinates and
rebuild the same step (notebook 07); *partly*: the projection comes from the seed, so workers could exchange the
$rL$ projected numbers of each matrix instead of $G$ (and the biases' gradients in full), which `rbdlib` does not
implement; *no*: the projection or the step needs the whole averaged gradient.
""")

md(r"""
## 2. One small problem for all

The paper's fully connected network at width 32 on the 8×8 digits: $D = 2{,}410$ parameters, two weight matrices
($32 \times 64$: $s = 32$, $L = 64$; $10 \times 32$: $s = 10$, $L = 32$) and two bias vectors. The matrix methods
run at rank $r = 4$, re-made every $T = \kappa = 20$ steps (15 refreshes in 300 steps); RBD gets
$d = \sum rL = 384$ coordinates per step, as many as the matrix methods' $R_t$ hold, plainly and with notebook 09's momentum in the
coordinates (re-drawn every 20 steps); MeZO gets $d = 8$ perturbations, 16 forward passes and no backward pass per
step. AdamW and SGD with momentum are the full-size baselines. Each learning rate is the best of a grid of
half-decades ($10^{k/2}$) by the validation loss after 300 steps on seed 100, a seed not shown here (exercise 1
checks them). Every method sees the same batches of 32.
""")

code(r"""
digits = rbdlib.data.load_dataset("digits")
RANK, T, DIM = 4, 20, 384
LRS = {"SGD momentum": 0.1, "AdamW": 10 ** -1.5, "RBD": 10 ** 0.5, "RBD, coordinate momentum": 1.0,
       "Flora": 10 ** -0.5, "GaLore": 0.1, "GoLore": 0.1, "APOLLO-Mini": 10 ** -1.5, "MeZO": 10 ** -1.5}

def make(name, params, lr, seed, rank=RANK):
    return {"SGD momentum": lambda: torch.optim.SGD(params, lr=lr, momentum=0.9),
            "AdamW": lambda: torch.optim.AdamW(params, lr=lr, weight_decay=0.0),
            "RBD": lambda: rbdlib.RBD(params, lr=lr, dim=DIM, seed=seed),
            "RBD, coordinate momentum": lambda: rbdlib.RBD(params, lr=lr, dim=DIM, seed=seed, momentum=0.9,
                                                           memory="coordinates", redraw=T),
            "Flora": lambda: rbdlib.Flora(params, lr=lr, rank=rank, seed=seed, kappa=T),
            "GaLore": lambda: rbdlib.GaLore(params, lr=lr, rank=rank, update_proj_gap=T, alpha=1.0),
            "GoLore": lambda: rbdlib.GoLore(params, lr=lr, rank=rank, seed=seed, update_proj_gap=T, alpha=1.0),
            "APOLLO-Mini": lambda: rbdlib.ApolloMini(params, lr=lr, seed=seed, update_proj_gap=T),
            "MeZO": lambda: rbdlib.MeZO(params, lr=lr, dim=8, seed=seed)}[name]()
""")

code(r"""
SEEDS, STEPS, EVERY = (0, 1, 2), 100 if SMOKE else 300, 20
curves, kept = {}, {}
for name, lr in LRS.items():
    curves[name] = []
    for seed in SEEDS:
        model = fc(digits.in_shape, hidden=32, seed=seed)
        opt = make(name, model.parameters(), lr, seed)
        history = rbdlib.fit(model, opt, digits, epochs=10_000, max_steps=STEPS, eval_every=EVERY, seed=seed, progress=False)
        curves[name].append(history["val_loss"])
        kept.setdefault(name, (model, opt))   # seed 0's model and optimizer, for the memory table
    final = [c[-1] for c in curves[name]]
    print(f"{name:>24}: validation loss {statistics.mean(final):.3f} ± {statistics.stdev(final):.3f}")
""")

code(r"""
fig, ax = plt.subplots(figsize=(8, 3.8))
for name, runs in curves.items():
    mean = [statistics.mean(values) for values in zip(*runs)]
    ax.plot(range(0, STEPS + 1, EVERY), mean, label=name, ls="--" if name in ("AdamW", "SGD momentum") else "-")
ax.set(xlabel="step", ylabel="validation loss (mean of 3 seeds)", yscale="log")
ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
plt.show()
""")

code(r"""
final = {name: statistics.mean(c[-1] for c in runs) for name, runs in curves.items()}
start = statistics.mean(c[0] for c in curves["AdamW"])
baselines, first_order = ("AdamW", "SGD momentum"), [n for n in final if n != "MeZO"]
projected = [n for n in first_order if n not in baselines]
assert all(final[n] < start / 3 for n in first_order)                       # every first-order method learns
assert min(final[n] for n in baselines) < min(final[n] for n in projected)  # the full-size baselines lead ...
assert max(final[n] for n in projected) < 4 * min(final[n] for n in baselines)   # ... the projected ones follow
assert start > final["MeZO"] > 2 * max(final[n] for n in first_order)      # MeZO descends, far behind per step
print(f"initial loss {start:.2f}; best baseline {min(final[n] for n in baselines):.3f}, best projected method "
      f"{min(projected, key=final.get)} {min(final[n] for n in projected):.3f}, MeZO {final['MeZO']:.3f}")
""")

md(r"""
At equal steps the full-size baselines lead, and every projected first-order method follows within a factor of
four in validation loss. The $\pm$ column is the spread over seeds: as large as most gaps between the projected
methods, so a problem this small does not rank them. MeZO, which sees 16 loss values per step where the others see
a gradient of 2,410 numbers, descends slowly: its saving is memory, not steps.

## 3. What each holds in memory, and what workers would exchange

`rbdlib.footprint` counts the bytes of the tensors a model and its optimizer hold; `projection_bytes` says how much
of the state is stored projections. Taken after the runs above (seed 0):
""")

code(r"""
print(f"{'method':>24} {'parameters':>10} {'gradients':>9} {'state':>7} {'of which stored P':>17}")
for name, (model, opt) in kept.items():
    f = rbdlib.footprint(model, opt)
    print(f"{name:>24} {f['parameters']:>10,} {f['gradients']:>9,} {f['state']:>7,} {projection_bytes(opt):>17,}")
""", check=True)

md(r"""
The table's column *state per matrix*, checked tensor by tensor (each parameter's state also holds its step count,
8 bytes): Flora keeps $rL$ numbers, GaLore and GoLore $2rL + sr$, APOLLO-Mini $2L$ and one norm. GaLore and GoLore
store their projections, $sr$ numbers per matrix; Flora, APOLLO-Mini, RBD and MeZO regenerate theirs from the seed
and store none. Plain RBD and MeZO keep no state at all, and MeZO holds no gradient either.
""")

code(r"""
def per_matrix(name):   # ((s, L), bytes of the matrix's state without its step count) for each weight matrix
    model, opt = kept[name]
    return [(sides(p), nbytes(opt.state[p]) - 8) for p in model.parameters() if p.dim() == 2]

assert all(b == 4 * RANK * L for (s, L), b in per_matrix("Flora"))
assert all(b == 4 * (2 * RANK * L + s * RANK) for n in ("GaLore", "GoLore") for (s, L), b in per_matrix(n))
assert all(b == 4 * 2 * L + 8 for (s, L), b in per_matrix("APOLLO-Mini"))   # M, V of 1 x L; the norm (8 bytes)
stored = {name: projection_bytes(opt) for name, (model, opt) in kept.items()}
assert stored["GaLore"] == stored["GoLore"] == 4 * RANK * (32 + 10) and sum(stored.values()) == 2 * stored["GaLore"]
assert rbdlib.footprint(*kept["RBD"])["state"] == 0 == rbdlib.footprint(*kept["MeZO"])["gradients"]
assert rbdlib.footprint(*kept["MeZO"])["state"] == 0
assert rbdlib.footprint(*kept["RBD, coordinate momentum"])["state"] == 4 * DIM + 24   # m, and its basis' address
print("state per matrix as in the table; stored projections only in GaLore and GoLore:", stored["GaLore"], "bytes")
""", check=True)

md(r"""
At this size none of it matters: the largest state, AdamW's, is 19 KB. The formulas are what scale. For one
$4096 \times 4096$ matrix at $r = 128$ Adam keeps $2 \cdot 4096^2 \approx 3.4 \cdot 10^7$ numbers, GaLore
$2 \cdot 128 \cdot 4096 + 4096 \cdot 128 \approx 1.6 \cdot 10^6$, Flora $5.2 \cdot 10^5$, APOLLO-Mini $8{,}192$,
RBD and MeZO none (exercise 4 measures a $1024 \times 1024$ layer).

Data-parallel workers exchange, per step, what the last column of the table says: the averaged gradient
($4D$ bytes, as `DistributedDataParallel` does) unless a shared seed lets them exchange less. For this network:
""")

code(r"""
D_TOY, BIASES = 2410, 32 + 10
RL = RANK * (64 + 32)                          # sum of r L over the two matrices
EXCHANGED = {"SGD momentum": 4 * D_TOY, "AdamW": 4 * D_TOY, "RBD": 4 * DIM, "RBD, coordinate momentum": 4 * DIM,
             "Flora": 4 * (RL + BIASES), "GaLore": 4 * D_TOY, "GoLore": 4 * (RL + BIASES),
             "APOLLO-Mini": 4 * D_TOY, "MeZO": 4 * 8}
for name, nb in EXCHANGED.items():
    note = " (possible from the seed; rbdlib exchanges 4D)" if name in ("Flora", "GoLore") else ""
    print(f"{name:>24}: {nb:>6,} bytes per step{note}")
""", check=True)

md(r"""
## 4. From scratch: GoLore's step, checked against `rbdlib`

Equations (2), (4) and (5) in float64 for a single weight matrix, the $10 \times 64$ layer of a logistic
regression on the digits ($s = 10$, $L = 64$), at rank $r = 3$ with a new projection every $T = 3$ steps. The
projection is rebuilt from the same Philox directions `rbdlib` draws (refresh $j$ of parameter 0), and its polar
factor is computed another way: from the SVD $Z = U S Q^\top$, $Z (Z^\top Z)^{-1/2} = U Q^\top$.
""")

code(r"""
layer = torch.nn.Linear(64, 10, bias=False)                 # W: 10 x 64, so s = 10, L = 64
with torch.no_grad():
    layer.weight.copy_(0.1 * torch.randn(10, 64, generator=torch.Generator().manual_seed(0)))
W0 = layer.weight.detach().double().clone()
xs, ys = digits.train_x[:64].flatten(1), digits.train_y[:64]

def loss_of(W):   # the logistic regression's loss, in float64
    return F.cross_entropy(xs.double() @ W.T, ys)
""")

code(r"""
def golore_scratch(W, steps, lr, rank, gap, seed, b1=0.9, b2=0.999, eps=1e-8):
    M = V = torch.zeros(rank, W.shape[1], dtype=torch.float64)
    for t in range(steps):
        G = grad(loss_of)(W)                                                      # s x L
        if t % gap == 0:                                                           # refresh j = t // gap, eq. (5)
            Z = RandomBases(seed, t // gap, 0, rank, W.shape[0], "normal", 1.0).materialize().double().T
            U, _, Qt = torch.linalg.svd(Z, full_matrices=False)
            P = U @ Qt                                                             # Z (Z^T Z)^(-1/2)
        R = P.T @ G                                                                # eq. (2)
        M, V = b1 * M + (1 - b1) * R, b2 * V + (1 - b2) * R * R                    # eq. (4)
        N = (M / (1 - b1 ** (t + 1))) / ((V / (1 - b2 ** (t + 1))).sqrt() + eps)
        W = W - lr * P @ N
    return W
""")

code(r"""
scratch = golore_scratch(W0, 7, lr=0.05, rank=3, gap=3, seed=11)
opt = rbdlib.GoLore(layer.parameters(), lr=0.05, rank=3, seed=11, update_proj_gap=3, alpha=1.0)
for _ in range(7):
    opt.zero_grad()
    F.cross_entropy(layer(xs), ys).backward()
    opt.step()
moved, difference = float((scratch - W0).abs().max()), float((layer.weight.detach().double() - scratch).abs().max())
assert difference < 1e-5 and moved > 0.1
print(f"7 steps over 3 projections: W moved by up to {moved:.2f}; from scratch (float64) = rbdlib.GoLore (float32) "
      "to within 1e-5")
""", check=True)

md(r"""
Swap eq. (5) for the top-$r$ left singular vectors of `G` at each refresh and the same function is GaLore; keep
$M$ only, carry it with $A_j A_{j-1}^\top$ and drop the normalisation, and it is Flora (exercise 3).

## 5. When the SVD follows the noise: a counter-example

GaLore chooses its subspace from one stochastic gradient. He et al. (2025) prove that this can fail: with small
batches, the top singular vectors of a mini-batch gradient can be those of its noise, and GaLore then does not
converge; random projections, which know nothing of the gradient, do. Here is a version small enough to run in
seconds: a matrix $W \in \mathbb{R}^{s \times L}$ ($s = 8$, $L = 32$), a quadratic loss, and a mini-batch gradient
whose noise is large but confined to $r = 2$ rows:

$$ f(W) = \tfrac12 \lVert W - W^\star \rVert_F^2, \qquad G_t = (W_t - W^\star) + \Xi_t, \qquad
   \Xi_t = \sigma \begin{bmatrix} Z_t \\ 0 \end{bmatrix},\ Z_t \in \mathbb{R}^{r \times L},\
   (Z_t)_{ik} \sim \mathcal{N}(0, 1). \tag{8} $$

$W^\star$ is zero in the first $r$ rows and standard normal in the other $s - r$: starting from $W = 0$, the true
gradient lies in the rows the noise never touches. The noise averages to zero, as a mini-batch's does, but it is
anisotropic, $\sigma = 4$ times the size of the signal's entries in a few directions. Its $r$ singular values are
about $\sigma(\sqrt{L} \pm \sqrt{r}) \approx 17$ to $28$; the true gradient's largest is at most about
$\sqrt{L} + \sqrt{s - r} \approx 8$ at the start and shrinks as the loss falls. So GaLore's $P_j$ lies close to
the first $r$ rows, where $f$ is already at its minimum. A random projection knows nothing of $G$:
$\mathbb{E}[P P^\top] = (r/s)\, I$ for GoLore, $(d/D)\, I$ for RBD, so every direction of the true gradient gets
its share in expectation, and the noise averages out.
""")

code(r"""
S_SIDE, L_SIDE, R_RANK, SIGMA, COUNTER_STEPS = 8, 32, 2, 4.0, 1000

def problem(seed):   # W* of eq. (8), and the generator of the run's noise
    gen = torch.Generator().manual_seed(seed)
    target = torch.zeros(S_SIDE, L_SIDE)
    target[R_RANK:] = torch.randn(S_SIDE - R_RANK, L_SIDE, generator=gen)
    return target, gen

def noise(gen, sigma=SIGMA):   # Xi_t of eq. (8)
    xi = torch.zeros(S_SIDE, L_SIDE)
    xi[:R_RANK] = sigma * torch.randn(R_RANK, L_SIDE, generator=gen)
    return xi
""")

code(r"""
for seed in SEEDS:
    target, gen = problem(seed)
    noisy = float(torch.linalg.svdvals(noise(gen))[R_RANK - 1])    # the noise's r-th singular value
    signal = float(torch.linalg.svdvals(target)[0])                 # the true gradient's largest, at W = 0
    assert noisy > 1.5 * signal
    print(f"seed {seed}: the noise's smallest of {R_RANK} singular values {noisy:.1f}, the true gradient's largest {signal:.1f}")
""")

md(r"""
Each method runs 1,000 steps from $W = 0$ on the same noise (the runs take a few seconds, so smoke mode runs them
whole), at every learning rate of a grid: a counter-example should not hinge on one learning rate. GaLore and
GoLore refresh every $T = 20$ steps with $\alpha = 1$; RBD gets $d = rL = 64$ coordinates of $D = sL = 256$, so
that $d/D = r/s$.
""")

code(r"""
def counter_run(name, lr, seed, sigma=SIGMA, steps=COUNTER_STEPS):
    target, gen = problem(seed)
    W = torch.nn.Parameter(torch.zeros(S_SIDE, L_SIDE))
    opt = {"GaLore": lambda: rbdlib.GaLore([W], lr=lr, rank=R_RANK, update_proj_gap=20, alpha=1.0),
           "GoLore": lambda: rbdlib.GoLore([W], lr=lr, rank=R_RANK, seed=seed, update_proj_gap=20, alpha=1.0),
           "RBD": lambda: rbdlib.RBD([W], lr=lr, dim=R_RANK * L_SIDE, seed=seed)}[name]()
    losses = [0.5 * float(target.square().sum())]
    for _ in range(steps):
        W.grad = W.detach() - target + noise(gen, sigma)                  # eq. (8)
        opt.step()
        losses.append(0.5 * float((W.detach() - target).square().sum()))
    return losses, opt, W, target
""")

code(r"""
GRID, COUNTER = (0.003, 0.01, 0.03, 0.1, 0.3), ("GaLore", "GoLore", "RBD")
runs = {(name, lr): [counter_run(name, lr, seed) for seed in SEEDS] for name in COUNTER for lr in GRID}
kept_share = {key: [r[0][-1] / r[0][0] for r in value] for key, value in runs.items()}   # final / initial loss
best = {name: min(GRID, key=lambda lr: statistics.mean(kept_share[name, lr])) for name in COUNTER}
for name in COUNTER:
    print(f"{name:>6}, share of the loss left after {COUNTER_STEPS} steps: "
          + "  ".join(f"lr {lr}: {statistics.mean(kept_share[name, lr]):.3f}" for lr in GRID))
""")

code(r"""
fig, ax = plt.subplots(figsize=(8, 3.5))
for name in COUNTER:
    curves_here = [r[0] for r in runs[name, best[name]]]
    ax.plot([statistics.mean(v) for v in zip(*curves_here)], label=f"{name}, lr {best[name]}")
ax.set(xlabel="step", ylabel="f(W), mean of 3 seeds", yscale="log")
ax.legend()
plt.show()
""")

md(r"""
Why GaLore crawls shows in its projector. The part of the true gradient that matters is its rows $r+1 \ldots s$,
the ones the noise never touches; a random orthonormal $P$ keeps about $r/s = 1/4$ of its squared norm. We measure
what the last projector of each run keeps of it.
""")

code(r"""
def captured(run):   # the share of the true gradient's noise-free rows that the run's last projector keeps
    _, opt, W, target = run
    S = (W.detach() - target)[R_RANK:]
    P = opt.state[W]["projector"][R_RANK:]
    return float((P.T @ S).square().sum() / S.square().sum())

share = {name: [captured(r) for r in runs[name, best[name]]] for name in ("GaLore", "GoLore")}
left = {name: kept_share[name, best[name]] for name in COUNTER}
assert min(statistics.mean(kept_share["GaLore", lr]) for lr in GRID) > 0.5    # no learning rate rescues GaLore
assert min(left["GaLore"]) > 0.5 and max(left["GoLore"] + left["RBD"]) < 0.15  # every seed, at each one's best lr
assert max(share["GaLore"]) < 0.02 < 0.1 < statistics.mean(share["GoLore"])
print({name: [round(v, 3) for v in values] for name, values in left.items()}, "of the loss left")
print({name: [round(v, 3) for v in values] for name, values in share.items()}, "of the noise-free gradient kept")
""")

md(r"""
At its best learning rate GaLore still holds more than half of its loss after 1,000 steps, on every seed, while
GoLore and RBD have removed more than 85 % of theirs; at no learning rate of the grid does GaLore remove even half. Its
projector keeps well under 2 % of the gradient that matters, against about a quarter for a random one: what little
GaLore learns comes from the small part of the signal that leaks into the noise's singular vectors, and that part
shrinks as the loss does. He et al. prove that GaLore does converge when the batch is large enough (the noise
shrinks as $\sigma/\sqrt{B}$, exercise 2) or when the noise is isotropic; their practical recipe runs GaLore early in
training and GoLore in the final phase, where the gradient is small and its noise dominates. RBD needs no such switch: its bases never look at
the gradient, and it re-draws them at every step.
""")

md(r"""
## 6. At scale: a character-level transformer

The problems above run in seconds. The packaged runs below put the same methods on a network 340 times larger:
`rbdlib.models.CharTransformer` (4 pre-norm blocks of width 128 with 4 heads, context 128, the output layer tied to
the embedding; $D$ = 829,568) predicting the next character of the Jargon File (Debian's `jargon-text`, public
domain; 1.46 M training characters, 155 symbols; `rbdlib.text`). Every method gets the same budget: 1,000 steps of
16 windows of 128 characters, 2.05 M characters, 1.4 passes over the training text. Its learning rate was chosen by
250-step runs on seed 100, which no table reports, on a grid a half-decade apart and widened until the best had a
worse neighbour on each side; then 3 seeds (0, 1, 2) at that rate, one CPU thread per run. RBD and FPD use
$d = 250$ and $\pm 1$ bases, as in notebook 08; GaLore, GoLore and Flora rank 16, APOLLO-Mini rank 1, MeZO one
direction. The validation loss is in nats per character on 128 fixed windows; a uniform guess scores
$\ln 155 = 5.04$. The runs are `bash results/successors.sh` (it resumes where it stopped; about 2 CPU hours in
all); `python results/successors.py --report` rewrites `results/lm-successors/table.md`.
""")

code(r"""
import rbdlib.results, rbdlib.viz   # the packaged runs; the mean-and-sd band of the plot below
LM = [r for r in rbdlib.results.runs("lm-successors") if r["status"] == "complete"]
lm = {}
for r in LM:
    lm.setdefault(r["method"], []).append(r)
s = LM[0]["settings"]
print(f"{len(LM)} runs of {len(lm)} methods; D = {LM[0]['D']:,}; {s['steps']:,} steps of {s['batch_size']} windows "
      f"x {s['context']} characters of {s['corpus']} ({s['vocab']} symbols); initial loss {LM[0]['records'][0]['val_loss']:.2f}")
""")

md(r"""
Per method, over its 3 seeds: the final validation loss, the CPU time per step on one thread, the optimizer's state
(`rbdlib.footprint`) and the bytes one of 2 data-parallel workers would receive per step as the methods are
implemented (RBD and FPD: shared-seed coordinates; MeZO: its projected gradient; the rest: DDP's $4D$).
""")

code(r"""
def lm_row(method):
    last = [r["records"][-1] for r in lm[method]]
    loss = [x["val_loss"] for x in last]
    return dict(loss=statistics.mean(loss), sd=statistics.stdev(loss) if len(loss) > 1 else 0.0,
                cpu=statistics.mean(x["cpu_seconds"] / x["step"] for x in last),
                state=lm[method][0]["footprint"]["state"], sent=lm[method][0]["bytes_per_step"])

table = {m: lm_row(m) for m in sorted(lm, key=lambda m: lm_row(m)["loss"])}
print(f"{'method (±1: distribution=rademacher)':<56}{'val loss':>14}{'CPU s/step':>11}{'state MB':>9}{'B/step':>11}")
for m, r in table.items():
    print(f"{m.replace('distribution=rademacher', '±1'):<56}{r['loss']:>7.3f} ± {r['sd']:.3f}{r['cpu']:>11.3f}"
          f"{r['state'] / 1e6:>9.2f}{r['sent']:>11,}")
""")

code(r"""
fig, ax = plt.subplots(figsize=(8, 4.2))
for i, (m, runs) in enumerate(lm.items()):
    tokens = [x["tokens"] / 1e6 for x in runs[0]["records"]]
    losses = [[x["val_loss"] for x in r["records"]] for r in runs]
    sd = [statistics.stdev(v) for v in zip(*losses)] if len(runs) > 1 else None
    rbdlib.viz.mean_band(ax, tokens, [statistics.mean(v) for v in zip(*losses)], sd, color=f"C{i % 10}",
                         ls="-" if i < 10 else "--", label=m.replace("distribution=rademacher", "±1"))
ax.set(xlabel="training characters (millions)", ylabel="validation loss (nats / character)", ylim=(1.8, 5.1))
ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
plt.show()
""")

code(r"""
loss = {m: row["loss"] for m, row in table.items()}
def of(prefix):   # the tuned spec of a method, e.g. of("galore") -> "galore:lr=0.01"
    return next(m for m in loss if m.startswith(prefix))
ADAMW, RBD, RBD_M = of("adamw"), of("rbd:distribution=rademacher,lr"), of("rbd:distribution=rademacher,momentum")
stateless = [m for m in table if table[m]["state"] == 0]
small = [m for m in table if 0 < table[m]["state"] < 500_000]     # under 0.5 MB of optimizer state
assert min(loss, key=loss.get) == ADAMW and all(v < LM[0]["records"][0]["val_loss"] - 1.5 for v in loss.values())
assert loss[of("galore")] < loss[of("sgd")] and 3 * table[of("galore")]["state"] < table[of("sgd")]["state"]
assert min(small, key=loss.get) == of("apollo-mini") and loss[RBD_M] > loss[RBD]
assert min(stateless, key=loss.get) == RBD and loss[RBD] < loss[of("fpd")] - 0.3 < loss[of("mezo")] - 0.3
assert 2000 * table[RBD]["sent"] < table[ADAMW]["sent"]        # d coordinates against the whole gradient
print(f"with no state: {RBD} {loss[RBD]:.3f}; under 0.5 MB: {min(small, key=loss.get)}; at equal tokens: {ADAMW}")
""")

md(r"""
At equal tokens AdamW wins (2.00 nats per character), and GaLore and GoLore follow (2.19, 2.24) with a sixth of
its optimizer state, ahead of SGD with momentum (2.39) at a third of SGD's. With a rank-1 projection and one scale
per matrix, APOLLO-Mini holds 0.1 MB of state and ends at 2.47: at equal memory it is the method to beat. RBD
holds no state at all and ends at 2.77. That is 0.77 nats behind AdamW, level with Flora (2.76, whose seeds spread by
$\pm 0.12$), and well ahead of the other two state-free methods: FPD (3.17), whose fixed subspace flattens out
early, and MeZO (3.42), which sees two losses per step instead of a gradient. As on Fashion-MNIST (notebook 09),
momentum kept in the coordinates does not help RBD (2.91). Where RBD stands apart is communication. Each worker
receives 1,212 bytes per step, about 2,700 times less than the 3.3 MB gradient that every method needing the
gradient must all-reduce. Only MeZO sends less (4 bytes), and it learns least. The price is CPU time: 0.20 s per
step against 0.17 s for AdamW, because it generates 250 directions of 829,568 entries twice per step.

## Summary

- The five successors train, as RBD does, in low-dimensional projections of the gradient. They differ in what
  they project (the whole gradient, or each matrix on its smaller side), how the projection is made (SVD of the
  gradient, random Gaussian, random orthonormal, rank-1 random, perturbations measured by losses), how often it
  is re-made (every step, or every $T$), and what state they keep in it (none, $rL$, $2rL + sr$, $2L$).
- On one small problem at learning rates tuned alike, the full-size baselines lead at equal steps, every projected
  first-order method follows, and MeZO, with 16 losses per step instead of a gradient, is far behind.
- Memory, counted from the tensors: GaLore and GoLore store their projections ($sr$ numbers per matrix); Flora,
  APOLLO-Mini, RBD and MeZO regenerate theirs from the seed; plain RBD and MeZO keep no state, and MeZO no gradient.
- Communication: RBD and MeZO need only their $d$ coordinates per step from workers that share the seed; Flora
  and GoLore could exchange $rL$ per matrix; GaLore and APOLLO-Mini need the whole gradient.
- A projection chosen from a noisy gradient can follow the noise: on (8), GaLore keeps more than half of its loss
  after 1,000 steps at any learning rate, while GoLore and RBD, whose projections ignore the gradient, remove more
  than 85 % of theirs.
- At scale (a 0.83 M-parameter character transformer, 1,000 steps, 3 seeds; `results/lm-successors`): AdamW wins at
  equal tokens (2.00 nats per character), GaLore and GoLore follow (2.19, 2.24), APOLLO-Mini wins among methods with
  under 0.5 MB of state (2.47), and RBD, with no state and 1,212 bytes per step, ends at 2.77: level with Flora,
  ahead of FPD (3.17) and MeZO (3.42), behind every method that keeps state in the full space.

## Exercises

1. Check the learning rates of section 2: run each method on seed 100 at its learning rate and a half-decade
   either side. Does the chosen one win its bracket?
2. The large-batch cure: divide $\sigma$ by 8 in the counter-example (a batch 64 times larger) and run GaLore and
   GoLore at the learning rates chosen above. Does GaLore descend now?
3. Write Flora's step (eq. 3) from scratch in float64, as GoLore's in section 4, and check it against
   `rbdlib.Flora` over 7 steps with a re-draw every 3, on the same layer.
4. Measure the state of AdamW, Flora, GaLore, APOLLO-Mini and MeZO for one $1024 \times 1024$ layer without bias,
   at $r = 32$, after one step, and compare with the table's formulas.

## Solutions
""")

md("**Solution 1.** Each run takes the 300 steps the grid used in full mode: you should see all 9 learning rates "
   "win their bracket (in smoke mode the runs are shorter, and a neighbour may win).")
code(r"""
# Solution 1: each learning rate against its neighbours a half-decade away, on seed 100 (expect 9 of 9 in full mode)
wins = 0
for name, lr in LRS.items():
    loss = {}
    for factor in (10 ** -0.5, 1.0, 10 ** 0.5):
        model = fc(digits.in_shape, hidden=32, seed=100)
        history = rbdlib.fit(model, make(name, model.parameters(), lr * factor, 100), digits, epochs=10_000,
                             max_steps=STEPS, eval_every=STEPS, seed=100, progress=False)
        value = history.last["val_loss"]
        loss[factor] = value if value is not None and math.isfinite(value) else math.inf
    wins += min(loss, key=loss.get) == 1.0
    print(f"{name:>24}: " + "  ".join(f"lr {lr * f:.3g}: {v:.3f}" for f, v in loss.items()))
print(f"{wins} of {len(LRS)} learning rates win their bracket")
""", tags=["solution"])

md("**Solution 2.** With a 64 times larger batch the noise no longer owns the top singular vectors: you should "
   "see GaLore keep about 0.05 of its loss instead of more than half (GoLore about 0.003).")
code(r"""
# Solution 2: sigma / 8, a batch 64 times larger (expect GaLore to descend as GoLore does)
for name in ("GaLore", "GoLore"):
    left_small_noise = [(lambda l: l[-1] / l[0])(counter_run(name, best[name], seed, sigma=SIGMA / 8)[0]) for seed in SEEDS]
    print(f"{name}: share of the loss left {statistics.mean(left_small_noise):.3f} "
          f"(with sigma = {SIGMA}: {statistics.mean(kept_share[name, best[name]]):.3f})")
""", tags=["solution"])

md("**Solution 3.** Flora's step is linear in the gradient, so float32 and float64 part only by rounding: you "
   "should see a largest difference below 1e-6, float32's rounding.")
code(r"""
# Solution 3: Flora from scratch, eq. (3), with a re-draw every 3 steps (expect a difference below 1e-6)
def flora_scratch(W, steps, lr, rank, kappa, seed, beta=0.9):
    M, A_old = torch.zeros(rank, W.shape[1], dtype=torch.float64), None
    for t in range(steps):
        A = RandomBases(seed, t // kappa, 0, rank, W.shape[0], "normal", rank ** -0.5).materialize().double()
        if t % kappa == 0 and t > 0:
            M = A @ (A_old.T @ M)                                  # the carry onto the new projection
        M = beta * M + (1 - beta) * A @ grad(loss_of)(W)
        W, A_old = W - lr * A.T @ M, A
    return W

with torch.no_grad():
    layer.weight.copy_(W0)
opt = rbdlib.Flora(layer.parameters(), lr=0.5, rank=3, seed=11, kappa=3)
for _ in range(7):
    opt.zero_grad()
    F.cross_entropy(layer(xs), ys).backward()
    opt.step()
print(f"largest difference: {float((layer.weight.detach().double() - flora_scratch(W0, 7, 0.5, 3, 3, 11)).abs().max()):.1e}")
""", tags=["solution"])

md("**Solution 4.** The state follows the table's formulas: you should see AdamW at 8.39 MB, GaLore at 0.39 MB "
   "(0.13 MB of it its stored projection), Flora at 0.13 MB, APOLLO-Mini at 0.008 MB and MeZO at 0, and MeZO "
   "holding no gradient (4.19 MB less).")
code(r"""
# Solution 4: one 1024 x 1024 layer at r = 32 (expect AdamW 8.39 MB, GaLore 0.39 MB, Flora 0.13 MB, APOLLO-Mini 0.008 MB)
x_big = torch.randn(8, 1024, generator=torch.Generator().manual_seed(0))
for name in ("AdamW", "Flora", "GaLore", "APOLLO-Mini", "MeZO"):
    big = torch.nn.Linear(1024, 1024, bias=False)
    opt = make(name, big.parameters(), 1e-3, 0, rank=32)
    if name == "MeZO":
        opt.step(lambda: big(x_big).square().mean())
    else:
        big(x_big).square().mean().backward()
        opt.step()
    f = rbdlib.footprint(big, opt)
    print(f"{name:>12}: state {f['state'] / 1e6:.3f} MB (stored P {projection_bytes(opt) / 1e6:.3f} MB), "
          f"gradients {f['gradients'] / 1e6:.2f} MB")
""", tags=["solution"])

md(r"""
## References

- M. Gressmann, Z. Eaton-Rosen, C. Luschi. *Improving Neural Network Training in Low Dimensional Random
  Bases.* NeurIPS 2020. [arXiv:2011.04720](https://arxiv.org/abs/2011.04720) (RBD).
- Y. Hao, Y. Cao, L. Mou. *Flora: Low-Rank Adapters Are Secretly Gradient Compressors.* ICML 2024.
  [arXiv:2402.03293](https://arxiv.org/abs/2402.03293).
- J. Zhao et al. *GaLore: Memory-Efficient LLM Training by Gradient Low-Rank Projection.* ICML 2024.
  [arXiv:2403.03507](https://arxiv.org/abs/2403.03507).
- Y. He, P. Li, Y. Hu, C. Chen, K. Yuan. *Subspace Optimization for Large Language Models with Convergence
  Guarantees.* ICML 2025. [arXiv:2410.11289](https://arxiv.org/abs/2410.11289) (GoLore, and the counter-example).
- H. Zhu et al. *APOLLO: SGD-like Memory, AdamW-level Performance.* MLSys 2025.
  [arXiv:2412.05270](https://arxiv.org/abs/2412.05270) (APOLLO-Mini).
- S. Malladi et al. *Fine-Tuning Language Models with Just Forward Passes.* NeurIPS 2023.
  [arXiv:2305.17333](https://arxiv.org/abs/2305.17333) (MeZO).
- C. Li, H. Farkhoor, R. Liu, J. Yosinski. *Measuring the Intrinsic Dimension of Objective Landscapes.*
  ICLR 2018. [arXiv:1804.08838](https://arxiv.org/abs/1804.08838) (FPD).
""")

write("notebooks/10_where_the_idea_went.ipynb")
