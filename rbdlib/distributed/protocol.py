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

Every rank applies the same additions in rank order, so all ranks end bit-identical without ever
sending weights. At start-up the ranks compare a fingerprint of their initial weights, seed, bases
configuration, hyper-parameters and step counter and raise a clear error naming the ranks that differ.
A non-finite gradient on any rank makes all ranks raise or skip together (a flag rides in the same
message as the coordinates, so agreeing costs no extra round trip).

Launch with ``torchrun --nproc-per-node N -m rbdlib.distributed`` (gloo on CPU, NCCL on GPU), or from a
notebook with :func:`launch`, which starts N local processes (gloo, 127.0.0.1).

>>> import torch, rbdlib
>>> model = torch.nn.Linear(784, 10)
>>> opt = rbdlib.RBD(model.parameters(), lr=0.5, dim=250)
>>> comm = communication(opt, world_size=2, scheme="independent")
>>> comm["coord_bytes_per_step"], comm["ddp_bytes_per_step"]
(2000, 31400)
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import pickle
import socket
import sys
import time
import traceback

import torch
import torch.distributed as dist

from .bases import RandomBases
from .optim import RBD, _add

SCHEMES = ("shared", "independent")
FLOAT_BYTES = 4


# --------------------------------------------------------------------------------------------------
# Bytes


def communication(optimizer: RBD, world_size: int, scheme: str = "independent") -> dict:
    """Bytes one rank receives per step from the coordinate collective, next to what DDP would all-reduce.

    The message of one rank is ``sum(dims)`` float32 coordinates plus ``1 + len(params)`` float32 control
    words (the non-finite flag and which parameters have a gradient). ``shared`` all-reduces it
    (payload 4 * message bytes); ``independent`` all-gathers it (4 * W * message bytes arrive at each
    rank). DDP all-reduces the float32 gradient: 4 * D bytes. Payload sizes, not wire traffic: a ring
    all-reduce moves about 2 (W-1)/W times its payload per rank, for DDP and ``shared`` alike.
    """
    _check_scheme(scheme)
    copies = 1 if scheme == "shared" else int(world_size)
    control = 1 + len(optimizer.params)
    coord = FLOAT_BYTES * optimizer.num_coords * copies
    return {"scheme": scheme, "world_size": int(world_size), "coords": optimizer.num_coords,
            "parameters": optimizer.size, "coord_bytes_per_step": coord,
            "bytes_per_step": coord + FLOAT_BYTES * control * copies,
            "ddp_bytes_per_step": FLOAT_BYTES * optimizer.size}


def _check_scheme(scheme) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")


# --------------------------------------------------------------------------------------------------
# Process groups


def init(backend: str | None = None, timeout: float = 60.0) -> tuple[int, int]:
    """Join the process group that ``torchrun`` describes (RANK, WORLD_SIZE, MASTER_ADDR/PORT in the
    environment) unless one exists; returns ``(rank, world_size)``.

    ``backend`` defaults to "nccl" when CUDA is available, else "gloo". ``timeout`` (seconds) bounds every
    collective, so a dead worker produces an error rather than a hang (gloo raises; NCCL's watchdog
    aborts the process). On CUDA the current device becomes ``cuda:LOCAL_RANK``.
    """
    if not dist.is_initialized():
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
    return dist.get_rank(), dist.get_world_size()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host`` (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class LaunchError(RuntimeError):
    """One or more processes of :func:`launch` failed; ``failures`` maps rank -> message/traceback."""

    def __init__(self, failures: dict[int, str], results: dict):
        self.failures, self.results = failures, results
        lines = [f"{len(failures)} of the launched processes failed:"]
        for rank in sorted(failures):
            lines.append(f"--- rank {rank}:\n{failures[rank].rstrip()}")
        super().__init__("\n".join(lines))


def _launched(fn, rank, world_size, port, timeout, threads, queue, args):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world_size))
    if sys.platform.startswith("linux"):  # keep gloo on the loopback device (not the host name's address)
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    elif sys.platform == "darwin":
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo0")
    try:
        from . import set_threads

        set_threads(threads)
        torch.set_num_threads(threads)
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world_size, timeout=datetime.timedelta(seconds=timeout))
        try:
            result = fn(rank, world_size, *args)
        finally:
            dist.destroy_process_group()
        message = (rank, True, pickle.dumps(result))  # by value: the process may exit before it is read
    except BaseException:  # report everything, SystemExit included, to the parent
        message = (rank, False, traceback.format_exc())
    queue.put(message)


def launch(fn, world_size: int, *args, timeout: float = 60.0, threads: int | None = None,
           join_timeout: float | None = None) -> list:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` new processes joined by gloo on 127.0.0.1.

    Returns the results in rank order; raises :class:`LaunchError` (with every rank's traceback) when
    any process raised or died. ``timeout`` (seconds) bounds each collective; ``threads`` (default: the
    cores shared out) is each process's thread count for rbdlib's kernels and torch, so W processes do not
    oversubscribe the machine. ``join_timeout`` (default ``2 * timeout + 120``) is the most seconds to wait
    for all of them; processes still alive then are terminated.

    Processes are started with "spawn", so ``fn`` and ``args`` must be picklable and ``fn`` importable:
    a function defined in a module, not in a notebook cell or ``__main__`` of an interactive session
    (:func:`train` is one you can use directly). Results travel back pickled. In a script, call
    ``launch`` under ``if __name__ == "__main__":`` (spawned processes re-import the script).

    >>> results = launch(train, 2, "shared", 3)            # doctest: +SKIP
    >>> [r["rank"] for r in results]                        # doctest: +SKIP
    [0, 1]
    """
    import torch.multiprocessing as mp

    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive integer, got {world_size!r}")
    if threads is None:
        threads = max(1, (os.cpu_count() or 1) // world_size)
    join_timeout = 2 * timeout + 120 if join_timeout is None else join_timeout
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    port = free_port()
    procs = [ctx.Process(target=_launched, args=(fn, r, world_size, port, timeout, threads, queue, args),
                         daemon=True) for r in range(world_size)]
    for p in procs:
        p.start()
    results, failures = {}, {}
    deadline = time.monotonic() + join_timeout
    try:
        while len(results) + len(failures) < world_size:
            while not queue.empty():
                rank, ok, payload = queue.get()
                if ok:
                    results[rank] = pickle.loads(payload)
                else:
                    failures[rank] = payload
            done = set(results) | set(failures)
            if all(not p.is_alive() for p in procs) and queue.empty():
                for rank, p in enumerate(procs):
                    if rank not in done:
                        failures[rank] = f"process exited with code {p.exitcode} before returning a result"
                break
            if time.monotonic() > deadline:
                for rank in range(world_size):
                    if rank not in done:
                        failures[rank] = f"no result after join_timeout={join_timeout} s; terminated"
                break
            time.sleep(0.02)
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
    if failures:
        raise LaunchError(failures, results)
    return [results[r] for r in range(world_size)]


# --------------------------------------------------------------------------------------------------
# The optimizer


def _digest(data: bytes) -> int:
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "little") & (2**63 - 1)


def _signed(u: int) -> int:
    return u - 2**64 if u >= 2**63 else u


def _apply(opt: RBD, k: int, coords: torch.Tensor, frozen) -> torch.Tensor:
    """theta <- theta - lr * P c over compartment k, where P holds the directions of all workers
    (``len(coords)`` of them, from direction 0); returns P c. One expand instead of one per worker."""
    b = opt.bases(k)
    delta = RandomBases(b.seed, b.step, b.compartment, len(coords), b.size, b.distribution, b.scale).expand(coords)
    at = 0
    for i, lo, hi in opt.layout[k]:
        if i not in frozen:
            _add(opt.params[i], lo, hi, delta[at:at + hi - lo], -opt.param_groups[opt._group_of[i]]["lr"])
        at += hi - lo
    return delta


class DistributedRBD:
    """Data-parallel RBD over ``torch.distributed``: wraps an :class:`rbdlib.RBD` built on every rank.

    Args:
        optimizer: the RBD (or FPD) optimizer of this rank, built identically on every rank.
        scheme: "independent" (each worker its own bases; the paper's) or "shared" (one basis for all).
        group: the process group (default: the world). Call :func:`init` or ``init_process_group`` first.
        sync_weights: broadcast rank 0's parameters first (as DDP does) instead of requiring equal ones.
        check: compare the fingerprints of all ranks now; on mismatch raise ``RuntimeError`` naming the
            ranks and what differs (initial weights, seed, bases configuration, hyper-parameters, step).

    Use it like the optimizer: ``loss.backward(); dopt.step(); dopt.zero_grad()``. Attributes:
    ``bytes_per_step`` (what one rank receives from the coordinate collective per step),
    ``coord_bytes_per_step`` (of which coordinates), ``ddp_bytes_per_step`` (4 D), ``bytes_total``,
    ``seconds`` (cumulative time in project / communicate / expand), ``rank``, ``world_size``.
    :meth:`summary` prints them.
    """

    def __init__(self, optimizer: RBD, scheme: str = "independent", group=None, sync_weights: bool = False,
                 check: bool = True):
        if not isinstance(optimizer, RBD):
            raise TypeError(f"DistributedRBD wraps an rbdlib.RBD optimizer, got {type(optimizer).__name__}")
        _check_scheme(scheme)
        if not dist.is_initialized():
            raise RuntimeError("torch.distributed is not initialized: call rbdlib.distributed.init() (under "
                               "torchrun) or use rbdlib.distributed.launch(), then build DistributedRBD")
        if scheme == "independent" and optimizer.record:
            raise ValueError("record=True with scheme='independent' would log only this rank's coordinates, "
                             "which rbdlib.replay cannot replay; use scheme='shared' (replayable) or "
                             "record=False")
        self.optimizer, self.scheme, self.group = optimizer, scheme, group
        self.rank, self.world_size = dist.get_rank(group), dist.get_world_size(group)
        self.device = optimizer.params[0].device
        comm = communication(optimizer, self.world_size, scheme)
        self.bytes_per_step = comm["bytes_per_step"]
        self.coord_bytes_per_step = comm["coord_bytes_per_step"]
        self.ddp_bytes_per_step = comm["ddp_bytes_per_step"]
        self.bytes_total = 0
        self.seconds = {"project": 0.0, "communicate": 0.0, "expand": 0.0}
        if sync_weights:
            with torch.no_grad():
                for p in optimizer.params:
                    dist.broadcast(p.data, src=dist.get_global_rank(group, 0) if group else 0, group=group)
        if check:
            self.check()

    # ------------------------------------------------------------------ delegation
    @property
    def param_groups(self):
        return self.optimizer.param_groups

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
        """What must agree across ranks: seed, bases configuration, hyper-parameters, step, weights."""
        opt = self.optimizer
        config = {k: v for k, v in opt.config().items() if k != "seed"}
        hyper = {"scheme": self.scheme, "lrs": [g["lr"] for g in opt.param_groups],
                 "nonfinite": opt.nonfinite, "record": opt.record}
        weights = hashlib.sha256()
        total = 0.0
        with torch.no_grad():
            for p in opt.params:
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
                    shown.append(f"initial weights (float64 sum {sums[0]!r} vs {sums[1]!r})")
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
        """True when the parameters are bit-identical on every rank (one all-gather of 16 bytes)."""
        fp = self.fingerprint()
        mine = torch.tensor([fp["weights"], fp["step counter"]], dtype=torch.int64)
        return all(torch.equal(r, mine) for r in self._gather(mine))

    def _gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        if dist.get_backend(self.group) == "nccl":
            tensor = tensor.to(self.device)
        out = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(out, tensor, group=self.group)
        return [t.cpu() for t in out]

    # ------------------------------------------------------------------ the step
    @torch.no_grad()
    def step(self, closure=None):
        """One distributed RBD step. Returns the closure's loss, if a closure was given."""
        opt = self.optimizer
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        n = opt.num_coords
        worker = 0 if self.scheme == "shared" else self.rank
        params = opt.params
        finite = all(bool(torch.isfinite(p.grad).all()) for p in params if p.grad is not None)
        message = torch.zeros(n + 1 + len(params), dtype=torch.float32, device=self.device)
        message[n + 1:] = torch.tensor([p.grad is not None for p in params], dtype=torch.float32)
        grads = coords = None
        t0 = time.perf_counter()
        if finite:
            grads = opt.gradient()
            coords = opt.coordinates(grads, worker=worker)
            torch.cat(coords, out=message[:n])
        else:
            message[n] = 1.0
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
        control = sum(m[n:].cpu() for m in messages)  # [ranks with a non-finite gradient, has_grad counts]
        if control[0] > 0:
            bad = self._nonfinite_ranks(messages, n, finite)
            if opt.nonfinite == "skip":
                opt.skipped += 1
                return loss
            raise FloatingPointError(f"rank(s) {bad} have a gradient holding NaN or inf; no parameter was "
                                     'changed on any rank (use nonfinite="skip" to skip such steps)')
        frozen = [i for i, c in enumerate(control[1:].tolist()) if c == 0]  # no gradient on any rank
        split = opt.dims
        if self.scheme == "shared":
            mean = list(torch.split(messages[0][:n] / self.world_size, split))
            deltas = opt.apply(mean, worker=0, frozen=frozen)
            logged = mean
        else:  # worker w's directions are w*d_k ... (w+1)*d_k - 1, so all workers' updates are one expand
            parts = [torch.split(m[:n] / self.world_size, split) for m in messages]  # rank order: same bits
            deltas = [_apply(opt, k, torch.cat([p[k] for p in parts]), frozen) for k in range(len(split))]
            logged = coords
        self.seconds["expand"] += time.perf_counter() - t2
        opt.finish(logged, grads, deltas, frozen)  # its cosine: the applied step against this rank's gradient
        return loss

    def _nonfinite_ranks(self, messages, n, finite) -> list[int]:
        if self.scheme == "independent":
            return [r for r, m in enumerate(messages) if m[n] > 0]
        flags = self._gather(torch.tensor([0.0 if finite else 1.0]))  # rare path: learn who it was
        self.bytes_total += FLOAT_BYTES * self.world_size
        return [r for r, f in enumerate(flags) if f.item() > 0]

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


# --------------------------------------------------------------------------------------------------
# A runnable example: the paper's FC network


def _fc(seed: int, in_shape, classes: int) -> torch.nn.Module:
    try:
        from .models import fc
    except ImportError:
        fc = None
    if fc is not None:
        return fc(in_shape, classes, seed=seed)
    torch.manual_seed(seed)
    c, h, w = in_shape
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(c * h * w, 128), torch.nn.ReLU(),
                                torch.nn.Linear(128, classes))
    for m in model:
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.xavier_uniform_(m.weight)
            torch.nn.init.zeros_(m.bias)
    return model


def _data(name: str, seed: int):
    """(train_x, train_y, val_x, val_y, description): the dataset if on disk, else synthetic images."""
    try:
        from .data import load_dataset

        ds = load_dataset(name, download=False)
        return ds.train_x, ds.train_y, ds.val_x, ds.val_y, f"{name} ({len(ds.train_x):,} training images)"
    except Exception as error:  # ImportError, DatasetNotFoundError, ...: fall back, and say so
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
    model = _fc(seed, tuple(train_x.shape[1:]), 10).to(device)
    opt = DistributedRBD(RBD(model.parameters(), lr=lr, dim=dim, seed=seed), scheme=scheme)
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


def _report(r: dict) -> str:
    phases = ", ".join(f"{k} {v:.1f}" for k, v in r["ms_phases"].items())
    return (f"{r['scheme']}: {r['world_size']} process(es), data: {r['source']}\n"
            f"  D={r['parameters']:,}, sum(dims)={r['coords']}: {r['bytes_per_step']:,} B/step received "
            f"({r['coord_bytes_per_step']:,} B coordinates) vs DDP {r['ddp_bytes_per_step']:,} B/step "
            f"({r['ddp_bytes_per_step'] / r['bytes_per_step']:,.0f}x less)\n"
            f"  {r['ms_per_step']:.1f} ms/step wall (rank 0; phases: {phases}); "
            f"loss {r['loss_first']:.3f} -> {r['loss_last']:.3f}; val acc {r['val_acc']:.3f}; "
            f"ranks bit-identical: {r['in_sync']}")


def main(argv=None) -> None:
    """``torchrun --nproc-per-node N -m rbdlib.distributed [--scheme ...]`` or, without torchrun,
    ``python -m rbdlib.distributed --nproc N`` (local processes via :func:`launch`)."""
    parser = argparse.ArgumentParser(prog="python -m rbdlib.distributed", description=main.__doc__)
    parser.add_argument("--scheme", choices=SCHEMES + ("both",), default="both")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--dim", type=int, default=250)
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before a collective fails")
    parser.add_argument("--nproc", type=int, default=1, help="processes to start when not under torchrun")
    args = parser.parse_args(argv)
    schemes = SCHEMES if args.scheme == "both" else (args.scheme,)
    options = (args.steps, args.dim, args.lr, args.batch_size, args.seed, args.dataset, args.warmup)
    if "RANK" in os.environ:  # under torchrun
        rank, world_size = init(timeout=args.timeout)
        if not torch.cuda.is_available():  # share the cores among the local processes
            from . import set_threads

            threads = max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world_size)))
            set_threads(threads)
            torch.set_num_threads(threads)
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
