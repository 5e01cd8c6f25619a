"""Starting the processes of shared-seed training: joining a ``torchrun`` process group, or launching N
local processes from a notebook or script (gloo on 127.0.0.1). Nothing here knows what ranks exchange;
that is :mod:`rbdlib.distributed.protocol`.
"""

from __future__ import annotations

import datetime
import os
import pickle
import socket
import sys
import time
import traceback

import torch
import torch.distributed as dist


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
        torch.set_num_threads(threads)  # the kernels follow torch's thread count
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


