"""The successors of Random Bases Descent on rbdlib's Philox bases: Flora, GaLore, GoLore, APOLLO-Mini and MeZO.

RBD (:class:`rbdlib.RBD`) projects the gradient onto d random directions and steps along them, with no state:

    c = P^T g;   theta <- theta - lr P c                                                          (RBD)

Its successors (2023-2025) project each weight *matrix* on one side, re-make the projection lazily (every
100-1000 steps) and keep optimizer state in the small space. Here a parameter of two or more dimensions is read as
a matrix turned so that its smaller side comes first (the side GaLore's, Flora's and APOLLO's code project):

    G = grad.reshape(n, m), n = shape[0], transposed when n > m:   s x L with s = min(n, m)          (1)
    R = P^T G                   P is s x r (r: the rank), R is r x L: what the state sees           (2)
    theta <- theta - lr * back(P N)   for an r x L update N made from R and the state (back: undo (1)) (3)

One-dimensional parameters (biases, norms) are not projected; each class says what they get. A random P is made
of :class:`rbdlib.RandomBases` directions: at refresh j of parameter i (its index over all parameter groups),
``RandomBases(seed, j, i, r, s, "normal", scale).materialize()`` is P^T: the projections are the same from the seed
in any process and on any device, and none is stored. Each parameter counts its own steps t = 0, 1, ... (as
torch's Adam does); refresh j = t // gap begins when t % gap == 0.

| class       | P (s x r)                         | re-made      | state per matrix  | P stored | shared seed   |
|-------------|-----------------------------------|--------------|-------------------|----------|---------------|
| Flora       | Gaussian, entries N(0, 1/r)       | every kappa  | r L               | no       | partly        |
| GaLore      | top-r left singular vectors of G  | every T      | 2 r L + s r       | yes      | no            |
| GoLore      | Z (Z^T Z)^(-1/2), Z Gaussian      | every T      | 2 r L + s r       | yes      | partly        |
| ApolloMini  | Gaussian, r = 1                   | every T      | 2 L + 1 number    | no       | no            |
| MeZO        | none: z over all parameters       | every step   | none              | no       | yes (dim)     |

Conventions as :class:`rbdlib.RBD`: options are checked, with errors that name what was wrong, before anything
changes; lr is read from ``param_groups`` at every step; a parameter frozen with ``requires_grad_(False)`` never
moves (nor does one without ``.grad``); ``state_dict`` carries the configuration and is checked whole before
``load_state_dict`` changes anything; ``copy.deepcopy`` and pickle copy everything but hooks.
:func:`rbdlib.footprint` counts their state, stored projections included (``projection_bytes`` in
``rbdlib/footprint.py`` says how much of it is projections: GaLore's and GoLore's P; the others regenerate theirs).
"""

from __future__ import annotations

import math

import torch

from . import checks, philox
from .bases import RandomBases
from .conventions import check_count, check_grads, check_params, flat_params, getstate, grad_of, name_of


# --------------------------------------------------------------------------------------------- checks
def _real(name: str, value, low: float, high: float = math.inf, low_open: bool = False, hint: str = "") -> float:
    """A real number in [low, high) (or (low, high)) (:func:`rbdlib.checks.real`), its range in the message."""
    span = f"{'(' if low_open else '['}{low}, {high})"
    return checks.real(name, value, low, high, low_open=low_open, what=f"a number in {span}", hint=hint)


def _positive_int(name: str, value, hint: str = "") -> int:
    value = checks.index(name, value, philox.MAX_INDEX)
    if value < 1:
        raise ValueError(f"{name} must be a positive integer{hint}, got {value}")
    return value


def _betas(betas) -> tuple[float, float]:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2) of numbers in [0, 1), got {betas!r}")
    return tuple(_real(f"betas[{k}]", b, 0.0, 1.0) for k, b in enumerate(betas))


# --------------------------------------------------------------------------------------------- shared pieces
def as_matrix(t: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Eq. (1): t as an s x L matrix (s <= L), and whether it was transposed."""
    g = t.reshape(t.shape[0], -1)
    return (g.T, True) if g.shape[0] > g.shape[1] else (g, False)


def sides(p: torch.Tensor) -> tuple[int, int]:
    """(s, L) of eq. (1) for a parameter of two or more dimensions."""
    n = p.shape[0]
    return tuple(sorted((n, p.numel() // max(n, 1))))


def from_matrix(x: torch.Tensor, turned: bool, shape) -> torch.Tensor:
    """Undo :func:`as_matrix`."""
    return (x.T if turned else x).reshape(shape)


def gaussian(seed: int, refresh: int, index: int, rank: int, size: int, scale: float, device) -> torch.Tensor:
    """P^T, r x s: ``rank`` Philox normal directions of length ``size``, scaled (the same on every device)."""
    return RandomBases(seed, refresh, index, rank, size, "normal", scale).materialize(device=device)


def orthonormal(z: torch.Tensor) -> torch.Tensor:
    """Z (Z^T Z)^(-1/2) for an s x r Z (r <= s), in float64: the orthonormal matrix nearest to Z (the polar factor).

    Chosen over QR because it is a function of Z alone (QR's columns carry a sign convention) and it is what
    GoLore's code computes; Z^T Z is r x r, so this costs O(s r^2)."""
    z = z.double()
    w, v = torch.linalg.eigh(z.T @ z)
    return (z @ (v * w.rsqrt()) @ v.T).float()


def top_singular(g: torch.Tensor, rank: int) -> torch.Tensor:
    """The top-``rank`` left singular vectors of g (s x L): s x r, each column's largest entry made positive.

    LAPACK may return u or -u; GaLore carries its moments across a refresh, so that sign would change the run.
    Fixing it makes the projector a function of the gradient alone."""
    u = torch.linalg.svd(g, full_matrices=False)[0][:, :rank]
    signs = torch.sign(u.gather(0, u.abs().argmax(0, keepdim=True)))
    return u * torch.where(signs == 0, 1.0, signs)


def adam(state: dict, r: torch.Tensor, t: int, betas: tuple[float, float], eps: float) -> torch.Tensor:
    """Adam's moments of r kept in ``state`` (exp_avg, exp_avg_sq, made at the first call); returns the
    normalised update  m_hat / (sqrt(v_hat) + eps)  of step t + 1 (bias-corrected, as torch.optim.Adam)."""
    b1, b2 = betas
    if "exp_avg" not in state:
        state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(r), torch.zeros_like(r)
    m, v = state["exp_avg"], state["exp_avg_sq"]
    m.mul_(b1).add_(r, alpha=1 - b1)
    v.mul_(b2).addcmul_(r, r, value=1 - b2)
    return (m / (1 - b1 ** (t + 1))) / ((v / (1 - b2 ** (t + 1))).sqrt_().add_(eps))


# --------------------------------------------------------------------------------------------- the base class
class _Successor(torch.optim.Optimizer):
    """What the five share: parameters, lr through ``param_groups``, checks, the per-parameter step count and a
    state_dict that carries the configuration (under ``state_dict()["successor"]``)."""

    projection_keys: tuple[str, ...] = ()   # the state entries that are stored projections (rbdlib.footprint)

    def __init__(self, params, lr: float, options: dict):
        _real("lr", lr, 0.0, hint=" (a non-negative finite learning rate)")
        groups, _, self.names = flat_params(params)
        self.options, self.steps, self.shapes = options, 0, []
        super().__init__(groups, dict(lr=lr))

    @property
    def params(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def add_param_group(self, param_group: dict) -> None:
        """Add parameters, as torch's optimizers do; a group may set its own lr, nothing else."""
        if not isinstance(param_group, dict) or "params" not in param_group:
            raise TypeError(f"a parameter group must be a dict with a 'params' entry, got {param_group!r:.60}")
        extra = sorted(set(param_group) - {"params", "lr"})
        if extra:
            raise ValueError(f"a parameter group may set only 'lr', got {extra}: {type(self).__name__} takes its "
                             "options in the constructor (every matrix is projected, every 1-D tensor is not)")
        new = param_group["params"]
        new = [new] if isinstance(new, torch.Tensor) else list(new)
        _real("lr", param_group.get("lr", self.defaults["lr"]), 0.0, hint=" in the parameter group")
        check_params(self.params + new, type(self).__name__)
        super().add_param_group(dict(param_group, params=new))
        self.shapes = [list(p.shape) for p in self.params]

    def config(self) -> dict:
        """The options, the parameters' shapes and groups: what a saved state must have been made with."""
        return {**self.options, "shapes": [list(s) for s in self.shapes],
                "groups": [len(g["params"]) for g in self.param_groups]}

    __getstate__ = getstate  # copy.deepcopy and pickle keep every attribute but the hooks, as RBD

    def check(self) -> None:
        """Step-time checks of what may have changed since construction (lrs, shapes), before anything changes."""
        for g in self.param_groups:
            _real("lr", g["lr"], 0.0, hint=" in param_groups (changed after construction?)")
        for i, (p, shape) in enumerate(zip(self.params, self.shapes)):
            if list(p.shape) != shape:
                raise ValueError(f"{name_of(i, self.names)} has shape {tuple(p.shape)}, but the optimizer was built "
                                 f"for {tuple(shape)} (was p.data replaced?); build a new optimizer")

    def gradients(self) -> list[tuple[int, torch.Tensor, torch.Tensor, float]]:
        """(index, parameter, gradient, lr) of every parameter that moves this step, after checks (a gradient of
        another shape, dtype or device, or holding NaN or inf, raises before anything changes)."""
        params = self.params
        check_grads(params, self.names)
        lrs = [g["lr"] for g in self.param_groups for _ in g["params"]]
        moving = [(i, p, grad_of(p).detach(), lr) for i, (p, lr) in enumerate(zip(params, lrs))
                  if grad_of(p) is not None and p.numel()]
        for i, _, g, _ in moving:
            if not bool(torch.isfinite(g).all()):
                raise FloatingPointError(f"the gradient of {name_of(i, self.names)} holds NaN or inf; no parameter "
                                         "was changed")
        return moving

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.check()
        for i, p, g, lr in self.gradients():
            state = self.state[p]
            t = state.get("step", 0)
            self.update(i, p, g, lr, state, t)
            state["step"] = t + 1
        self.steps += 1
        return loss

    def update(self, i: int, p: torch.Tensor, g: torch.Tensor, lr: float, state: dict, t: int) -> None:
        raise NotImplementedError

    def expected_state(self, p: torch.Tensor) -> dict:
        """The entries of a parameter's state after its first step: shape for tensors, type for numbers."""
        raise NotImplementedError

    def state_dict(self):
        out = super().state_dict()
        out["successor"] = {"steps": self.steps, "config": self.config()}
        return out

    def load_state_dict(self, state_dict):
        """Load a state saved by :meth:`state_dict`; everything is checked before anything is loaded."""
        who = type(self).__name__
        keys = sorted(map(str, state_dict)) if isinstance(state_dict, dict) else type(state_dict).__name__
        if keys != ["param_groups", "state", "successor"]:
            raise ValueError(f"this is not a state_dict saved by rbdlib.{who}: expected the keys ['param_groups', "
                             f"'state', 'successor'], got {keys}")
        extra = state_dict["successor"]
        if not isinstance(extra, dict) or set(extra) != {"steps", "config"} or extra["config"] != self.config():
            raise ValueError(f"state_dict was saved with a different configuration:\n saved {str(extra)[:300]}\n"
                             f" here  {self.config()}")
        steps = extra["steps"]
        check_count("steps", steps)
        params, saved = self.params, state_dict["state"]
        if not isinstance(saved, dict):
            raise ValueError(f"the saved 'state' must be a dict, got {type(saved).__name__}")
        for i, entry in saved.items():
            if not checks.is_int(i) or not 0 <= i < len(params):
                raise ValueError(f"the saved 'state' is keyed by parameter index in [0, {len(params)}), got {i!r}")
            want = self.expected_state(params[i])
            ok = isinstance(entry, dict) and set(entry) == set(want) and all(
                (isinstance(v, torch.Tensor) and v.dtype == torch.float32 and tuple(v.shape) == want[k]
                 and bool(torch.isfinite(v).all())) if isinstance(want[k], tuple) else
                (type(v) is want[k] and 0 <= v < math.inf) for k, v in entry.items())
            if not ok:
                kinds = {k: w if isinstance(w, tuple) else w.__name__ for k, w in want.items()}
                raise ValueError(f"the saved state of {name_of(i, self.names)} must map {kinds} (finite float32 "
                                 f"tensors of these shapes, numbers >= 0), got {str(entry):.100}")
        groups = state_dict["param_groups"]   # torch checks their sizes; here their lrs (and a scheduler's)
        for g in groups if isinstance(groups, list) else ():
            for key in {"lr", "initial_lr"} & set(g):
                _real(key, g[key], 0.0, hint=" in the saved param_groups")
        # torch loads state tensors without copying them: clone, so that this optimizer's state is its own
        copies = {i: {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in e.items()}
                  for i, e in saved.items()}
        super().load_state_dict({"state": copies, "param_groups": groups})
        self.steps = steps


# --------------------------------------------------------------------------------------------- Flora
class Flora(_Successor):
    """Flora (Hao, Cao and Mou, ICML 2024, arXiv:2402.03293): momentum kept in a random down-projection of each
    matrix, re-drawn every ``kappa`` steps and carried across the re-draw.

    With P_j^T = A_j the Gaussian r x s matrix of refresh j = t // kappa (entries N(0, 1/r), Philox) and the
    compressed momentum M (r x L, zero at first):

        M <- A_j A_{j-1}^T M          at a re-draw (t % kappa == 0, t > 0): the carry            (Flora 1)
        M <- beta M + (1 - beta) A_j G                                                            (Flora 2)
        theta <- theta - lr back(A_j^T M)                                                         (Flora 3)

    This is the paper's Algorithm 2 (momentum with compression), i.e. RBD's rule ``memory="coordinates"`` (whose
    carry :func:`rbdlib.step.carry` is m <- P_new^T P_old m for one vector) applied to the L columns of M at
    once as one matrix product; Flora's released optimizer also wraps it in Adafactor (second moments, update
    clipping), which is left out here. A 1-D parameter, or a matrix whose smaller side s < rank, keeps an
    uncompressed EMA momentum M <- beta M + (1 - beta) g; theta <- theta - lr M (as flora-opt).

    State: M (4 r L bytes per matrix) and a step count; A_j is regenerated when needed (4 r s bytes for the step).
    Shared seed: partly. Every worker can regenerate A_j, so data-parallel workers could all-reduce A_j G (r L
    numbers per matrix) instead of G and keep identical momenta; that is r L per matrix, not d per step, and is
    not implemented here.

    >>> model = torch.nn.Linear(16, 8)
    >>> opt = Flora(model.parameters(), lr=0.1, rank=2, kappa=10)
    >>> model(torch.ones(1, 16)).sum().backward(); opt.step()
    >>> tuple(opt.state[model.weight]["momentum"].shape)    # r x L: 2 x 16 (s = 8 rows projected)
    (2, 16)
    """

    def __init__(self, params, lr: float, rank: int, seed: int = 0, kappa: int = 1000, beta: float = 0.9):
        options = dict(rank=_positive_int("rank", rank, " (the rows of the random projection)"),
                       seed=checks.index("seed", seed, philox.MAX_SEED),
                       kappa=_positive_int("kappa", kappa, " (steps between re-draws)"),
                       beta=_real("beta", beta, 0.0, 1.0, hint=" (the momentum's decay; 0.9 is usual)"))
        super().__init__(params, lr, options)

    def compressed(self, p: torch.Tensor) -> bool:
        return p.dim() >= 2 and sides(p)[0] >= self.options["rank"]

    def expected_state(self, p):
        if not self.compressed(p):
            return {"step": int, "momentum": tuple(p.shape)}
        return {"step": int, "momentum": (self.options["rank"], sides(p)[1])}

    def update(self, i, p, g, lr, state, t):
        o = self.options
        beta, r = o["beta"], o["rank"]
        if not self.compressed(p):
            m = state.setdefault("momentum", torch.zeros_like(g, memory_format=torch.contiguous_format))
            m.mul_(beta).add_(g, alpha=1 - beta)
            p.add_(m, alpha=-lr)
            return
        G, turned = as_matrix(g)
        a = gaussian(o["seed"], t // o["kappa"], i, r, G.shape[0], 1 / math.sqrt(r), g.device)
        if "momentum" not in state:
            state["momentum"] = torch.zeros(r, G.shape[1], device=g.device)
        elif t % o["kappa"] == 0:   # (Flora 1): the old A^T M in parameter space, projected onto the new A
            old = gaussian(o["seed"], t // o["kappa"] - 1, i, r, G.shape[0], 1 / math.sqrt(r), g.device)
            state["momentum"] = a @ (old.T @ state["momentum"])
        m = state["momentum"].mul_(beta).add_(a @ G, alpha=1 - beta)
        p.add_(from_matrix(a.T @ m, turned, p.shape), alpha=-lr)


# --------------------------------------------------------------------------------------------- GaLore, GoLore, APOLLO
class _ProjectedAdam(_Successor):
    """AdamW on 1-D parameters, a projected rule (:meth:`matrix_step`) on matrices, decoupled weight decay applied
    as torch.optim.AdamW applies it: theta <- (1 - lr wd) theta - lr step."""

    random = True   # whether the projection is drawn from the seed

    def __init__(self, params, lr, rank, seed, update_proj_gap, alpha, betas, eps, weight_decay, **more):
        options = dict(rank=_positive_int("rank", rank, " (the dimension of the subspace)"),
                       seed=checks.index("seed", seed, philox.MAX_SEED),
                       update_proj_gap=_positive_int("update_proj_gap", update_proj_gap, " (steps between refreshes)"),
                       alpha=_real("alpha", alpha, 0.0, low_open=True, hint=" (the scale of the update)"),
                       betas=_betas(betas), eps=_real("eps", eps, 0.0, low_open=True),
                       weight_decay=_real("weight_decay", weight_decay, 0.0), **more)
        if not self.random:   # GaLore draws nothing: its seed is accepted for a uniform signature, not kept
            del options["seed"]
        super().__init__(params, lr, options)

    def expected_state(self, p):
        if p.dim() < 2:
            return {"step": int, "exp_avg": tuple(p.shape), "exp_avg_sq": tuple(p.shape)}
        s, L = sides(p)
        r = min(self.options["rank"], s)
        extra = {"projector": (s, r)} if self.projection_keys else {"norm": float}
        return {"step": int, "exp_avg": (r, L), "exp_avg_sq": (r, L), **extra}

    def update(self, i, p, g, lr, state, t):
        o = self.options
        step = adam(state, g, t, o["betas"], o["eps"]) if p.dim() < 2 else self.matrix_step(i, g, state, t)
        if o["weight_decay"]:
            p.mul_(1 - lr * o["weight_decay"])
        p.add_(step, alpha=-lr)


class GaLore(_ProjectedAdam):
    """GaLore (Zhao et al., ICML 2024, arXiv:2403.03507): Adam in the top-r singular subspace of each matrix's
    gradient, the projector re-made from the gradient every ``update_proj_gap`` = T steps.

    At a refresh (t % T == 0) P = the top-r left singular vectors of G (s x r, r = min(rank, s); eq. (1): the
    smaller side, as GaLore's code), kept until the next one; Adam's moments of R (r x L) are carried across
    refreshes unchanged (the paper's Algorithm 1 and its code):

        R = P^T G;   M <- b1 M + (1 - b1) R;   V <- b2 V + (1 - b2) R^2                          (GaLore 1)
        N = (M / (1 - b1^(t+1))) / (sqrt(V / (1 - b2^(t+1))) + eps)                              (GaLore 2)
        theta <- (1 - lr wd) theta - lr alpha back(P N)                                          (GaLore 3)

    A 1-D parameter gets plain AdamW (P = I, alpha = 1). One deviation, for reproducibility: each singular
    vector's sign is fixed (its largest entry positive), where GaLore takes LAPACK's, which would move the
    carried moments with the library.

    State: M, V (4 r L bytes each) and P (4 s r bytes, stored: it comes from a past gradient) per matrix.
    Shared seed: no. P is the SVD of the gradient, so data-parallel workers must first all-reduce G itself
    (D numbers, as DDP) or ship P.

    >>> model = torch.nn.Linear(16, 8)
    >>> opt = GaLore(model.parameters(), lr=0.01, rank=2)
    >>> model(torch.ones(1, 16)).sum().backward(); opt.step()
    >>> tuple(opt.state[model.weight]["projector"].shape)   # P: s x r = 8 x 2
    (8, 2)
    """

    projection_keys = ("projector",)
    random = False

    def __init__(self, params, lr: float, rank: int, seed: int = 0, update_proj_gap: int = 200,
                 alpha: float = 0.25, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, lr, rank, seed, update_proj_gap, alpha, betas, eps, weight_decay)

    def projector(self, i: int, refresh: int, G: torch.Tensor, rank: int) -> torch.Tensor:
        return top_singular(G, rank)

    def matrix_step(self, i, g, state, t):
        o = self.options
        G, turned = as_matrix(g)
        if t % o["update_proj_gap"] == 0:
            state["projector"] = self.projector(i, t // o["update_proj_gap"], G, min(o["rank"], G.shape[0]))
        P = state["projector"]
        return from_matrix(P @ adam(state, P.T @ G, t, o["betas"], o["eps"]), turned, g.shape) * o["alpha"]


class GoLore(GaLore):
    """GoLore (He et al., ICML 2025, arXiv:2410.11289): GaLore with random projections, which converge under
    small-batch noise where gradient SVD can stall.

    The equations (GaLore 1-3), with P made at refresh j = t // T from the seed instead of the gradient:

        Z = (the Philox directions of refresh j)^T, s x r, entries N(0, 1);   P = Z (Z^T Z)^(-1/2)     (GoLore)

    the orthonormal polar factor of Z (:func:`orthonormal`; not QR), as GoLore's code makes it.

    State: as GaLore; P is stored (as GoLore's code does), although it could be regenerated from the seed.
    Shared seed: partly. Workers can make the same P, so they could all-reduce R = P^T G (r L numbers per
    matrix) instead of G; not implemented here.
    """

    random = True

    def projector(self, i, refresh, G, rank):
        return orthonormal(gaussian(self.options["seed"], refresh, i, rank, G.shape[0], 1.0, G.device).T)


class ApolloMini(_ProjectedAdam):
    """APOLLO-Mini (Zhu et al., MLSys 2025, arXiv:2412.05270): Adam's moments of a rank-1 random projection of each
    matrix estimate one learning-rate scale for the whole tensor, which then scales the raw gradient.

    With P^T the Gaussian r x s matrix of refresh j = t // T (entries N(0, 1/r), Philox; r = 1 for APOLLO-Mini)
    and the paper's Algorithm 1 with its tensor-wise scale and Fira's norm-growth limiter (gamma = 1.01):

        R = P^T G;   M <- b1 M + (1 - b1) R;   V <- b2 V + (1 - b2) R^2                          (APOLLO 1)
        R~ = (M / (1 - b1^(t+1))) / (sqrt(V / (1 - b2^(t+1))) + eps);   s = ||R~|| / ||R||          (APOLLO 2)
        G~ = s grad;  if ||G~|| > gamma n_prev:  G~ <- G~ gamma n_prev / ||G~||;  n_prev <- ||G~||   (APOLLO 3)
        theta <- (1 - lr wd) theta - lr alpha G~                                                  (APOLLO 4)

    (Frobenius norms; s = 0 when R = 0; no limit at a parameter's first step.) alpha = sqrt(128) is the paper's
    scale for APOLLO-Mini (the code's ``scale=128`` under a square root). The released code applies Adam's bias
    correction after the limiter and adds eps to the uncorrected sqrt(V); here the update is (APOLLO 1-4) as
    written. A 1-D parameter gets plain AdamW. ``limiter=None`` turns the limiter off; ``rank`` > 1 is APOLLO
    with the tensor-wise scale.

    State: M, V (4 r L bytes each) and n_prev per matrix; P is regenerated (the code stores it).
    Shared seed: no. The step is the raw gradient scaled, so workers must all-reduce G (D numbers).
    """

    def __init__(self, params, lr: float, rank: int = 1, seed: int = 0, update_proj_gap: int = 200,
                 alpha: float = math.sqrt(128), betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, limiter: float | None = 1.01):
        if limiter is not None:
            limiter = _real("limiter", limiter, 1.0, low_open=True, hint=" (the norm's largest growth) or None")
        super().__init__(params, lr, rank, seed, update_proj_gap, alpha, betas, eps, weight_decay, limiter=limiter)

    def matrix_step(self, i, g, state, t):
        o = self.options
        G, _ = as_matrix(g)
        r = min(o["rank"], G.shape[0])
        R = gaussian(o["seed"], t // o["update_proj_gap"], i, r, G.shape[0], 1 / math.sqrt(r), g.device) @ G
        norm_r = float(R.norm())
        scale = float(adam(state, R, t, o["betas"], o["eps"]).norm()) / norm_r if norm_r > 0 else 0.0
        norm, limit = scale * float(g.norm()), o["limiter"]
        if limit is not None and "norm" in state and norm > limit * state["norm"]:
            scale, norm = scale * limit * state["norm"] / norm, limit * state["norm"]
        state["norm"] = norm
        return g * (scale * o["alpha"])


# --------------------------------------------------------------------------------------------- MeZO
class MeZO(_Successor):
    """MeZO (Malladi et al., NeurIPS 2023, arXiv:2305.17333): zeroth-order SGD (SPSA) in place, from losses only.

    At step t, direction i < ``dim`` is z_i = the Philox direction i of step t, one compartment per parameter
    tensor k (``RandomBases(seed, t, k, dim, numel_k, "normal", 1.0)``, entries N(0, 1)); ``closure()`` returns the
    loss (no backward) on one mini-batch for all its calls:

        c_i = (L(theta + eps z_i) - L(theta - eps z_i)) / (2 eps)    (projected gradient: a coordinate)  (MeZO 1)
        theta <- theta - (lr / dim) sum_i c_i z_i                                                       (MeZO 2)

    RBD's step lr P P^T g with P = [z_1 ... z_dim] / sqrt(dim), each z_i^T g estimated from two losses
    (dim = 1 is MeZO; dim = n its n-SPSA). As the paper's Algorithm 1, theta is moved to theta + eps z, to
    theta - eps z and back in place, regenerating z tensor by tensor from the seed, so no z of D numbers is ever
    stored (a tensor's z lives while it is added); the return to theta is exact up to float32 rounding, as MeZO's.
    ``step`` returns the mean of the 2 dim losses. Parameters with ``requires_grad`` off are never perturbed.

    State: none (the step count). Shared seed: yes. ``coordinates(closure)`` gives the dim numbers c and
    ``apply(c)`` steps; data-parallel workers all-reduce c (dim floats per step) between the two and all apply
    the same update (tests/test_successors.py runs 2 ranks).

    >>> model = torch.nn.Linear(4, 1)
    >>> opt = MeZO(model.parameters(), lr=0.01)
    >>> loss = opt.step(lambda: model(torch.ones(2, 4)).square().mean())
    """

    needs_closure = True   # rbdlib.fit passes a closure ...
    shared_batch = True    # ... that returns the loss of one mini-batch for every call of a step

    def __init__(self, params, lr: float, dim: int = 1, seed: int = 0, eps: float = 1e-3):
        options = dict(dim=_positive_int("dim", dim, " (perturbations per step)"),
                       seed=checks.index("seed", seed, philox.MAX_SEED),
                       eps=_real("eps", eps, 0.0, low_open=True, hint=" (the perturbation's size; 1e-3 is usual)"))
        super().__init__(params, lr, options)
        self.losses: list[float] = []   # the losses the last step saw

    def expected_state(self, p):
        return {}

    def bases(self, k: int, p: torch.Tensor, direction: int | None = None) -> RandomBases:
        """Direction ``direction`` (all when None) of parameter k's perturbations at this step."""
        dim, seed = self.options["dim"], self.options["seed"]
        if direction is None:
            return RandomBases(seed, self.steps, k, dim, p.numel(), "normal", 1.0)
        return RandomBases(seed, self.steps, k, 1, p.numel(), "normal", 1.0, offset=direction)

    def _moving(self) -> list[tuple[int, torch.Tensor]]:
        return [(k, p) for k, p in enumerate(self.params) if p.requires_grad and p.numel()]

    def _perturb(self, direction: int, alpha: float) -> None:
        for k, p in self._moving():
            one = torch.tensor([alpha], device=p.device)
            p.add_(self.bases(k, p, direction).expand(one).view(p.shape))

    @torch.no_grad()
    def coordinates(self, closure) -> torch.Tensor:
        """(MeZO 1): the ``dim`` projected gradients of this step (float32), theta left where it was."""
        if closure is None or not callable(closure):
            raise ValueError(f"MeZO needs a closure that returns the loss of one mini-batch, got {closure!r}")
        self.check()
        eps, coords, self.losses = self.options["eps"], [], []
        for i in range(self.options["dim"]):
            self._perturb(i, eps)
            at = eps   # where theta is, along z_i: put back there whatever the closure does
            try:
                plus = float(closure())
                self._perturb(i, -2 * eps)
                at = -eps
                minus = float(closure())
            finally:
                self._perturb(i, -at)
            self.losses += [plus, minus]
            coords.append((plus - minus) / (2 * eps))
        if not all(math.isfinite(x) for x in coords):
            raise FloatingPointError("a loss is not finite; the parameters were left unchanged")
        return torch.tensor(coords, dtype=torch.float32)

    @torch.no_grad()
    def apply(self, coords: torch.Tensor) -> None:
        """(MeZO 2) with these coordinates (this step's, or their mean over workers); then the next step."""
        dim = self.options["dim"]
        if not isinstance(coords, torch.Tensor) or coords.dtype != torch.float32 or coords.shape != (dim,) or not bool(
                torch.isfinite(coords).all()):
            raise ValueError(f"coords must be a finite float32 tensor of shape ({dim},), got {coords!r:.60}")
        lrs = [g["lr"] for g in self.param_groups for _ in g["params"]]
        for k, p in self._moving():
            p.add_(self.bases(k, p).expand(coords.to(p.device)).view(p.shape), alpha=-lrs[k] / dim)
        self.steps += 1

    def step(self, closure=None):
        coords = self.coordinates(closure)
        self.apply(coords)
        return sum(self.losses) / len(self.losses)
