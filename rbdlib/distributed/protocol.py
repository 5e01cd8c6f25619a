"""Shared-seed data-parallel RBD on ``torch.distributed``: workers exchange coordinates, not gradients.

Every worker computes the gradient g_r of its own mini-batch. Because a basis is a pure function of
(seed, step, compartment, direction), a worker needs only the *coordinates* of the others to rebuild
their updates; with d = sum_k dim_k coordinates that is d floats per worker instead of the D floats of a
gradient all-reduce (DDP). Two schemes:

``scheme="shared"`` (every worker uses the same bases P, ``worker=0``):

    c = (1/W) sum_r P^T g_r        (one all-reduce of d floats)
    theta <- theta - lr * P c

  which equals single-process RBD on the concatenated batch (when the W batches have equal size, the mean
  of the per-worker gradients is the gradient of the mean loss; P^T is linear). A shared run can be
  replayed by :func:`rbdlib.replay` from its coordinate log.

``scheme="independent"`` (the paper's: worker r uses its own directions, ``worker=r``):

    c_r = P_r^T g_r                 (one all-gather of d floats per worker)
    theta <- theta - (lr / W) sum_r P_r c_r      (every worker regenerates every P_r from the seed)

  W * dim directions explore per step. The reference code (Ray, ``rbd_dist.py``) *sums* the W updates
  (weight 1, so the step grows with W; the IPU version also scales the LR by W). Here they are
  *averaged* (weight 1/W), so that ``lr`` means the same for both schemes and for any W: the expected step
  is -lr (dim/D) mean_r g_r in both. To reproduce the reference, multiply ``lr`` by W.

Both schemes step through the wrapped optimizer's :meth:`~rbdlib.RBD.apply`, that is the functional core
:mod:`rbdlib.step` that single-process training and replay use, so every update rule (momentum
in parameters or coordinates, Nesterov, the adaptive scale, weight decay) works here as there: its state is a
function of the exchanged coordinates, the same on every rank. Every rank applies the same additions in rank
order, so all ranks end bit-identical without ever sending weights or optimizer state. At start-up the ranks
compare a fingerprint of their initial weights and rule state, seed, bases configuration, hyper-parameters and
step counter and raise a clear error naming the ranks that differ.
A non-finite gradient on any rank makes all ranks raise or skip together, and an error on one rank inside
``step`` (its closure, a sparse gradient, a bad lr) reaches the others at once: flags ride in the same
message as the coordinates, so agreeing costs no extra round trip. Buffers of the model (batch-norm running
statistics), when ``model`` is given, are broadcast from rank 0 after every step, as DDP does, and are part
of the fingerprint that :meth:`DistributedRBD.check` and :meth:`DistributedRBD.in_sync` compare.

This module is the protocol (what ranks exchange) and imports nothing of rbdlib but the optimizer, its
conventions and the checks. Starting processes is :mod:`rbdlib.distributed.launcher` (under ``torchrun``, or
:func:`~rbdlib.distributed.launcher.launch` from a notebook); an example training loop and its command line
are :mod:`rbdlib.shared_seeds` (``torchrun --nproc-per-node N -m rbdlib.shared_seeds``).

>>> import torch, rbdlib
>>> model = torch.nn.Linear(784, 10)
>>> opt = rbdlib.RBD(model.parameters(), lr=0.5, dim=250)
>>> comm = communication(opt, world_size=2, scheme="independent")
>>> comm["coord_bytes_per_step"], comm["ddp_bytes_per_step"]
(2000, 31400)
"""

from __future__ import annotations

import hashlib
import json
import time

import torch
import torch.distributed as dist

from .. import checks
from ..conventions import eager, getstate
from ..optim import RBD

SCHEMES = ("shared", "independent")
FLOAT_BYTES = 4


# --------------------------------------------------------------------------------------------------
# Bytes


def communication(optimizer: RBD, world_size: int, scheme: str = "independent") -> dict:
    """Bytes one rank receives per step from the coordinate collective, next to what DDP would all-reduce.

    The message of one rank is ``sum(dims)`` float32 coordinates plus ``1 + len(params)`` float32 control
    words (the flag word: non-finite gradient or error, and which parameters have a gradient). ``shared`` all-reduces it
    (payload 4 * message bytes); ``independent`` all-gathers it (4 * W * message bytes arrive at each
    rank). DDP all-reduces the float32 gradient: 4 * D bytes. Payload sizes, not wire traffic: a ring
    all-reduce moves about 2 (W-1)/W times its payload per rank, for DDP and ``shared`` alike.
    """
    if not isinstance(optimizer, RBD):
        raise TypeError(f"communication needs an rbdlib.RBD optimizer, got {type(optimizer).__name__}")
    checks.whole("world_size", world_size, low=1)
    checks.choice("scheme", scheme, SCHEMES)
    copies = 1 if scheme == "shared" else int(world_size)
    control = 1 + len(optimizer.params)
    coord = FLOAT_BYTES * optimizer.num_coords * copies
    return {"scheme": scheme, "world_size": int(world_size), "coords": optimizer.num_coords,
            "parameters": optimizer.size, "coord_bytes_per_step": coord,
            "bytes_per_step": coord + FLOAT_BYTES * control * copies,
            "ddp_bytes_per_step": FLOAT_BYTES * optimizer.size}


def agree(value, what: str, group=None) -> None:
    """Raise on every rank, before any other collective, unless every rank holds the same ``value`` (JSON).

    One all-gather of a 32-byte digest: e.g. ``agree([run_status, checkpoint_exists], "resume state")``
    before a resumed run, so that no rank starts training (or a collective) that its peers do not.
    """
    mine = torch.tensor([_signed(_digest(json.dumps(value, sort_keys=True, default=str).encode()))])
    rows = _gather_cpu(mine, group)
    differ = [r for r, row in enumerate(rows) if not torch.equal(row, rows[0])]
    if differ:
        raise RuntimeError(f"ranks disagree on the {what}: rank(s) {differ} differ from rank 0 (this rank, "
                           f"{dist.get_rank(group)}, has {value!r}); nothing was started on any rank")


def _gather_cpu(tensor: torch.Tensor, group=None) -> list[torch.Tensor]:
    if dist.get_backend(group) == "nccl":
        tensor = tensor.to(torch.device("cuda", torch.cuda.current_device()))
    out = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
    dist.all_gather(out, tensor, group=group)
    return [t.cpu() for t in out]


ERROR_FLAG = float(2**20)  # added to the flag word by a rank whose step failed; a non-finite gradient adds 1


# --------------------------------------------------------------------------------------------------
# The optimizer


class _Shared:
    """An attribute of the wrapped optimizer (``param_groups``, ``state``), read and written through, so that
    whatever replaces it there (the wrapped optimizer's ``load_state_dict``, a copy) is what the wrapper and
    the schedulers built on it see. torch's ``Optimizer.__init__`` sets it before the wrapped optimizer is
    known: until then it is kept on the wrapper."""

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        return getattr(obj.optimizer, self.name) if "optimizer" in obj.__dict__ else obj.__dict__[self.name]

    def __set__(self, obj, value):
        if "optimizer" in obj.__dict__:
            setattr(obj.optimizer, self.name, value)
        else:
            obj.__dict__[self.name] = value


def _digest(data: bytes) -> int:
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "little") & (2**63 - 1)


def _signed(u: int) -> int:
    return u - 2**64 if u >= 2**63 else u


class DistributedRBD(torch.optim.Optimizer):
    """Data-parallel RBD over ``torch.distributed``: wraps an :class:`rbdlib.RBD` built on every rank.

    Args:
        optimizer: the RBD (or FPD) optimizer of this rank, built identically on every rank.
        scheme: "independent" (each worker its own bases; the paper's) or "shared" (one basis for all).
        group: the process group (default: the world). Call :func:`init` or ``init_process_group`` first.
        sync_weights: broadcast rank 0's parameters (and buffers) first, as DDP does, instead of requiring
            equal ones.
        check: compare the fingerprints of all ranks now; on mismatch raise ``RuntimeError`` naming the
            ranks and what differs (initial weights or buffers, seed, bases configuration, hyper-parameters,
            step).
        model: the module whose buffers (batch-norm running statistics) must stay identical: they are
            broadcast from rank 0 after every step (DDP's ``broadcast_buffers``) and fingerprinted.

    Use it like the optimizer: ``loss.backward(); dopt.step(); dopt.zero_grad()``. It is a
    ``torch.optim.Optimizer`` whose ``param_groups`` and ``state`` are the wrapped optimizer's, read through (also
    after either one's ``load_state_dict``), so ``torch.optim.lr_scheduler`` schedulers drive it. ``copy.deepcopy``
    and pickle copy it with the wrapped optimizer (on the default process group only); ``step`` runs eagerly
    under ``torch.compile``. Attributes: ``bytes_per_step`` (what one rank receives per step: the coordinate
    collective and the buffers), ``coord_bytes_per_step`` (of which coordinates), ``ddp_bytes_per_step``
    (4 D), ``bytes_total``, ``seconds`` (cumulative time in project / communicate / expand), ``rank``,
    ``world_size``. :meth:`summary` prints them.
    """

    def __init__(self, optimizer: RBD, scheme: str = "independent", group=None, sync_weights: bool = False,
                 check: bool = True, model: torch.nn.Module | None = None):
        if not isinstance(optimizer, RBD):
            raise TypeError(f"DistributedRBD wraps an rbdlib.RBD optimizer, got {type(optimizer).__name__}")
        checks.choice("scheme", scheme, SCHEMES)
        if model is not None and not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module (its buffers are kept in sync), "
                            f"got {type(model).__name__}")
        if not dist.is_initialized():
            raise RuntimeError("torch.distributed is not initialized: call rbdlib.distributed.init() (under "
                               "torchrun) or use rbdlib.distributed.launch(), then build DistributedRBD")
        if getattr(optimizer, "needs_closure", False):
            raise TypeError(f"DistributedRBD cannot wrap {type(optimizer).__name__}: its step needs a closure")
        if scheme == "independent" and optimizer.record:
            raise ValueError("record=True with scheme='independent' would log only this rank's coordinates, "
                             "which rbdlib.replay cannot replay; use scheme='shared' (replayable) or "
                             "record=False")
        super().__init__(optimizer.param_groups, optimizer.defaults)
        for name in ("param_groups", "state"):  # torch's own: from now on, the wrapped optimizer's (_Shared)
            self.__dict__.pop(name, None)
        self.optimizer, self.scheme, self.group = optimizer, scheme, group
        self.buffers = [] if model is None else [b for b in model.buffers() if b is not None]
        self.rank, self.world_size = dist.get_rank(group), dist.get_world_size(group)
        self.device = optimizer.params[0].device
        if scheme == "independent":  # rank r draws directions r d_k ... (r+1) d_k - 1: a 32-bit counter word
            checks.index("world_size * dim (the directions of all workers)", self.world_size * max(optimizer.dims),
                        2**32)
        comm = communication(optimizer, self.world_size, scheme)
        self.buffer_bytes_per_step = sum(b.numel() * b.element_size() for b in self.buffers)
        self.bytes_per_step = comm["bytes_per_step"] + self.buffer_bytes_per_step
        self.coord_bytes_per_step = comm["coord_bytes_per_step"]
        self.ddp_bytes_per_step = comm["ddp_bytes_per_step"]
        self.bytes_total = 0
        self.seconds = {"project": 0.0, "communicate": 0.0, "expand": 0.0}
        if sync_weights:
            with torch.no_grad():
                for p in optimizer.params:
                    dist.broadcast(p.data, src=self._source, group=group)
            self._broadcast_buffers()
        if check:
            self.check()

    @property
    def _source(self) -> int:
        return dist.get_global_rank(self.group, 0) if self.group else 0

    @torch.no_grad()
    def _broadcast_buffers(self) -> None:
        """Rank 0's buffers to every rank, one broadcast per dtype (DDP's ``broadcast_buffers``)."""
        for dtype in dict.fromkeys(b.dtype for b in self.buffers):
            same = [b for b in self.buffers if b.dtype == dtype]
            flat = torch.cat([b.reshape(-1) for b in same])
            dist.broadcast(flat, src=self._source, group=self.group)
            at = 0
            for b in same:
                b.copy_(flat[at:at + b.numel()].view_as(b))
                at += b.numel()

    # ------------------------------------------------------------------ delegation
    param_groups, state = _Shared(), _Shared()

    def __getstate__(self) -> dict:
        if self.group is not None:
            raise TypeError("a DistributedRBD on a process group other than the default one cannot be copied or "
                            "pickled (the group is a set of connections); copy the wrapped RBD and wrap the copy")
        return getstate(self)

    def add_param_group(self, param_group: dict) -> None:
        if hasattr(self, "optimizer"):
            raise NotImplementedError("add parameters to the wrapped RBD on every rank and build a new "
                                      "DistributedRBD (the ranks must agree on the layout)")
        super().add_param_group(param_group)

    @property
    def steps(self) -> int:
        return self.optimizer.steps

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict) -> None:
        """Load into the wrapped optimizer, then re-run :meth:`check` (a collective: call on every rank)."""
        self.optimizer.load_state_dict(state_dict)
        self.check()

    # ------------------------------------------------------------------ agreement
    def fingerprint(self) -> dict:
        """What must agree across ranks: seed, bases configuration (and update rule), hyper-parameters, step,
        weights, buffers and the update rule's state (momentum buffers)."""
        opt = self.optimizer
        config = {k: v for k, v in opt.config().items() if k != "seed"}
        hyper = {"scheme": self.scheme, "lrs": [g["lr"] for g in opt.param_groups],
                 "nonfinite": opt.nonfinite, "record": opt.record}
        weights = hashlib.sha256()
        total = 0.0
        with torch.no_grad():
            kept = [v for p in opt.params for _, v in sorted(opt.state.get(p, {}).items())]
            kept += [torch.as_tensor(v, dtype=torch.float64 if isinstance(v, float) else None)
                     for entry in opt.compartment_state for _, v in sorted(entry.items())]
            for p in [*opt.params, *self.buffers, *kept]:
                host = p.detach().cpu().contiguous()
                weights.update(host.numpy().tobytes())
                total += float(host.double().sum())
        return {"seed": opt.seed,
                "bases configuration": _digest(json.dumps(config, sort_keys=True, default=str).encode()),
                "hyper-parameters": _digest(json.dumps(hyper, sort_keys=True, default=str).encode()),
                "step counter": opt.steps,
                "weights": int.from_bytes(weights.digest()[:8], "little") & (2**63 - 1),
                "weight sum": total}

    def check(self) -> None:
        """All-gather every rank's :meth:`fingerprint`; raise ``RuntimeError`` naming ranks that differ."""
        mine = self.fingerprint()
        keys = list(mine)
        row = [_signed(mine["seed"])] + [mine[k] for k in keys[1:-1]]
        row.append(int(torch.tensor([mine["weight sum"]], dtype=torch.float64).view(torch.int64)))
        rows = self._gather(torch.tensor(row, dtype=torch.int64))
        rows = [r.tolist() for r in rows]
        ref = rows[0]
        problems = []
        for rank, r in enumerate(rows[1:], start=1):
            diff = [k for k, a, b in zip(keys, r, ref, strict=True) if a != b and k != "weight sum"]
            if not diff:
                continue
            shown = []
            for k in diff:
                i = keys.index(k)
                if k == "seed":
                    shown.append(f"seed ({r[i] % 2**64} vs {ref[i] % 2**64})")
                elif k == "step counter":
                    shown.append(f"step counter ({r[i]} vs {ref[i]})")
                elif k == "weights":
                    sums = [float(torch.tensor([x[-1]]).view(torch.float64)) for x in (r, ref)]
                    shown.append(f"weights or buffers (float64 sum {sums[0]!r} vs {sums[1]!r})")
                else:
                    shown.append(k)
            problems.append(f"rank {rank} differs from rank 0 in: {', '.join(shown)}")
        if problems:
            raise RuntimeError(
                f"DistributedRBD start-up check failed (world size {self.world_size}, scheme "
                f"{self.scheme!r}); training would silently diverge:\n  " + "\n  ".join(problems) +
                "\nBuild the model and the optimizer identically on every rank (seed the model's "
                "initialisation, e.g. rbdlib.models.fc(seed=0); pass the same RBD arguments), or pass "
                "sync_weights=True to copy rank 0's weights.")

    def in_sync(self) -> bool:
        """True when the parameters and buffers are bit-identical on every rank (one all-gather of 16 bytes)."""
        fp = self.fingerprint()
        mine = torch.tensor([fp["weights"], fp["step counter"]], dtype=torch.int64)
        return all(torch.equal(r, mine) for r in self._gather(mine))

    def _gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        return _gather_cpu(tensor, self.group)

    # ------------------------------------------------------------------ the step
    @eager  # Numba kernels and collectives: a compiled training step runs it eagerly
    @torch.no_grad()
    def step(self, closure=None):
        """One distributed RBD step. Returns the closure's loss, if a closure was given.

        Whatever fails on this rank before the exchange (the closure, the step-time checks, a sparse
        gradient) is flagged in this rank's message, so every other rank raises at once instead of
        waiting for the timeout; no rank changes a parameter.
        """
        opt = self.optimizer
        n = opt.num_coords
        worker = 0 if self.scheme == "shared" else self.rank
        message = torch.zeros(n + 1 + len(opt.params), dtype=torch.float32, device=self.device)
        loss = grads = coords = error = None
        finite = True
        t0 = time.perf_counter()
        try:
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            opt.check()
            opt.check_gradients()  # a gradient of another shape or dtype: an error naming the parameter
            still = set(opt.frozen())  # no gradient here, or requires_grad off
            message[n + 1:] = torch.tensor([i not in still for i in range(len(opt.params))], dtype=torch.float32)
            finite = all(bool(torch.isfinite(p.grad).all()) for i, p in enumerate(opt.params) if i not in still)
            if finite:
                grads = opt.gradient()
                coords = opt.coordinates(grads, worker=worker)
                torch.cat(coords, out=message[:n])
            else:
                message[n] = 1.0
        except Exception as caught:  # tell the others, then raise it here
            error = caught
            message.zero_()
            message[n] = ERROR_FLAG
        t1 = time.perf_counter()
        if self.scheme == "shared":
            dist.all_reduce(message, group=self.group)
            messages = [message]
        else:
            messages = [torch.empty_like(message) for _ in range(self.world_size)]
            dist.all_gather(messages, message, group=self.group)
        self.bytes_total += self.bytes_per_step
        t2 = time.perf_counter()
        self.seconds["project"] += t1 - t0
        self.seconds["communicate"] += t2 - t1
        control = sum(m[n:].cpu() for m in messages)  # [flag word, has_grad counts]
        flags = int(control[0])
        if flags >= ERROR_FLAG:
            failed = self._flagged_ranks(messages, n, ERROR_FLAG if error is not None else 0.0, ERROR_FLAG)
            if error is not None:
                raise error
            raise RuntimeError(f"rank(s) {failed} failed in this step (their own error says why); no parameter "
                               "was changed on any rank")
        self._broadcast_buffers()
        if flags > 0:
            bad = self._flagged_ranks(messages, n, 0.0 if finite else 1.0, 1.0)
            if opt.nonfinite == "skip":
                opt.skipped += 1
                return loss
            raise FloatingPointError(f"rank(s) {bad} have a gradient holding NaN or inf; no parameter was "
                                     'changed on any rank (use nonfinite="skip" to skip such steps)')
        frozen = [i for i, c in enumerate(control[1:].tolist()) if c == 0]  # no gradient on any rank
        split = opt.dims
        if self.scheme == "shared":
            mean = list(torch.split(messages[0][:n] / self.world_size, split))
            steps = opt.apply(mean, worker=0, frozen=frozen)
            logged = mean
        else:  # worker w's directions are w*d_k ... (w+1)*d_k - 1, so all workers' updates are one expand
            parts = [torch.split(m[:n] / self.world_size, split) for m in messages]  # rank order: same bits
            every = [torch.cat([p[k] for p in parts]) for k in range(len(split))]
            steps = opt.apply(every, worker=0, frozen=frozen, workers=self.world_size)
            logged = coords
        self.seconds["expand"] += time.perf_counter() - t2
        opt.finish(logged, grads, steps, frozen)  # its cosine: the applied step against this rank's gradient
        return loss

    def _flagged_ranks(self, messages, n, mine: float, flag: float) -> list[int]:
        """The ranks whose flag word holds ``flag`` (every rank calls this together)."""
        if self.scheme == "independent":
            return [r for r, m in enumerate(messages) if m[n] >= flag]
        flags = self._gather(torch.tensor([mine]))  # rare path: learn who it was
        self.bytes_total += FLOAT_BYTES * self.world_size
        return [r for r, f in enumerate(flags) if f.item() >= flag]

    # ------------------------------------------------------------------ reporting
    def summary(self) -> str:
        """Bytes per step against DDP's, and the mean time per step in each phase so far."""
        opt = self.optimizer
        ratio = self.ddp_bytes_per_step / self.bytes_per_step
        lines = [f"DistributedRBD scheme={self.scheme!r}, {self.world_size} worker(s), D={opt.size:,}, "
                 f"sum(dims)={opt.num_coords:,}",
                 f"  received per step: {self.bytes_per_step:,} B ({self.coord_bytes_per_step:,} B "
                 f"coordinates + control) vs DDP all-reduce {self.ddp_bytes_per_step:,} B: "
                 f"{ratio:,.0f}x less"]
        if opt.steps:
            ms = {k: 1e3 * v / opt.steps for k, v in self.seconds.items()}
            lines.append("  ms/step: " + ", ".join(f"{k} {v:.2f}" for k, v in ms.items()))
        return "\n".join(lines)
