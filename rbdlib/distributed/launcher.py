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
import threading
import time
import traceback

import torch
import torch.distributed as dist

from .. import checks


def _unreachable(rank: int, host: str, port: int, timeout: float) -> str:
    """Why rank ``rank`` could not reach the store of rank 0 at host:port: what is (not) listening there."""
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return (f"rank {rank} found nothing listening at {host}:{port} within {timeout:g} s: rank 0 has not "
                "started (or failed), or the ranks were given different MASTER_ADDR / MASTER_PORT")
    return (f"rank {rank} reached {host}:{port}, but no process group answered there within {timeout:g} s: "
            "another program holds the port (MASTER_PORT); start the ranks on a free port")


def _store(rank: int, world_size: int, host: str, port: int, timeout: float) -> dist.TCPStore:
    """The process group's TCPStore (rank 0 serves it), or an error naming the cause within ``timeout`` + 1 s.

    torch's client waits for ever on a port that another program holds (it connects, then waits for an
    answer that never comes, whatever its timeout), so the store is made in a thread that we stop waiting
    for; it stays blocked, harmless, until the process ends."""
    made = []

    def make():
        try:
            made.append(dist.TCPStore(host, port, world_size, rank == 0, datetime.timedelta(seconds=timeout),
                                      wait_for_workers=False))
        except Exception as error:  # reported below, with its cause
            made.append(error)

    thread = threading.Thread(target=make, name="rbdlib-store", daemon=True)
    thread.start()
    thread.join(timeout + 1)
    if made and not isinstance(made[0], Exception):
        return made[0]
    if made and rank == 0 and "EADDRINUSE" in str(made[0]):
        raise RuntimeError(f"rank 0 cannot serve the process group on {host}:{port}: the port is in use by another "
                           "program; choose a free MASTER_PORT") from made[0]
    raise RuntimeError(_unreachable(rank, host, port, timeout)) from (made[0] if made else None)


def _join(backend: str, rank: int, world_size: int, host: str, port: int, timeout: float) -> None:
    """``init_process_group`` through :func:`_store`, after the ranks agree on the world size: a rank started
    with another WORLD_SIZE is named at once, not left to a connection reset or a timeout."""
    if not 0 <= rank < world_size:
        raise ValueError(f"RANK={rank} is not in [0, WORLD_SIZE={world_size})")
    store = _store(rank, world_size, host, port, timeout)
    store.set(f"rbdlib/world_size/{rank}", str(world_size))
    for other in range(1, world_size) if rank == 0 else [0]:
        try:
            theirs = int(store.get(f"rbdlib/world_size/{other}"))  # waits at most ``timeout``
        except dist.DistStoreError as error:
            raise RuntimeError(f"rank {other} did not join {host}:{port} within {timeout:g} s (this is rank {rank} "
                               f"of WORLD_SIZE={world_size}): was every rank started, with the same "
                               "WORLD_SIZE?") from error
        if theirs != world_size:
            raise RuntimeError(f"WORLD_SIZE mismatch: rank {other} was started with WORLD_SIZE={theirs}, this rank "
                               f"({rank}) with WORLD_SIZE={world_size}; start every rank with the same world size")
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=timeout))


def init(backend: str | None = None, timeout: float = 60.0) -> tuple[int, int]:
    """Join the process group that ``torchrun`` describes (RANK, WORLD_SIZE, MASTER_ADDR/PORT in the
    environment) unless one exists; returns ``(rank, world_size)``.

    ``backend`` defaults to "nccl" when CUDA is available, else "gloo". ``timeout`` (seconds) bounds every
    collective, so a dead worker produces an error rather than a hang (gloo raises; NCCL's watchdog
    aborts the process). On CUDA the current device becomes ``cuda:LOCAL_RANK``.

    Without torchrun's agent (ranks started by hand with the variables set), joining is bounded by
    ``timeout`` too, and its failures name their cause: MASTER_PORT held by another program, rank 0 not
    there, a rank started with another WORLD_SIZE.
    """
    if not dist.is_initialized():
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":  # torchrun's agent serves the store
            dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
        else:
            missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
            if missing:
                raise RuntimeError(f"init() joins the process group the environment describes, but {missing} "
                                   "are not set: run under torchrun, or use rbdlib.distributed.launch()")
            env = os.environ
            _join(backend, int(env["RANK"]), int(env["WORLD_SIZE"]), env["MASTER_ADDR"], int(env["MASTER_PORT"]),
                  timeout)
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
        _join("gloo", rank, world_size, "127.0.0.1", port, timeout)
        try:
            result = fn(rank, world_size, *args)
        finally:
            dist.destroy_process_group()
        message = (rank, True, pickle.dumps(result))  # by value: the process may exit before it is read
    except BaseException:  # report everything, SystemExit included, to the parent
        message = (rank, False, traceback.format_exc())
    queue.put(message)


def _check_port(port) -> int:
    """A port given to :func:`launch`: an int in [1, 65535] that no other program holds now."""
    if not checks.is_int(port) or not 0 < port < 2**16:
        raise ValueError(f"port must be None (a free port) or an int in [1, 65535], got {port!r}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as error:
            raise RuntimeError(f"port {port} on 127.0.0.1 is in use by another program ({error.strerror}); pass "
                               "another port, or port=None for a free one. No process was started.") from None
    return port


def launch(fn, world_size: int, *args, timeout: float = 60.0, threads: int | None = None,
           join_timeout: float | None = None, port: int | None = None) -> list:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` new processes joined by gloo on 127.0.0.1.

    Returns the results in rank order; raises :class:`LaunchError` (with every rank's traceback) when
    any process raised or died. ``timeout`` (seconds) bounds each collective; ``threads`` (default: the
    cores shared out) is each process's thread count for rbdlib's kernels and torch, so W processes do not
    oversubscribe the machine. ``join_timeout`` (default ``2 * timeout + 120``) is the most seconds to wait
    for all of them; processes still alive then are terminated, as are those still running ``timeout`` + 5 s
    after another one failed (a rank blocked in a collective with a dead peer fails within ``timeout``).
    ``port`` (default: a free one) is where rank 0 serves the process group; a port another program holds is
    refused before any process starts, and joining fails within ``timeout`` with a message that names the
    cause (a port taken, rank 0 gone).

    Processes are started with "spawn", so ``fn`` and ``args`` must be picklable and ``fn`` importable:
    a function defined in a module, not in a notebook cell or ``__main__`` of an interactive session
    (:func:`rbdlib.shared_seeds.train` is one you can use directly). Results travel back pickled. In a script,
    call ``launch`` under ``if __name__ == "__main__":`` (spawned processes re-import the script).

    >>> from rbdlib.shared_seeds import train               # doctest: +SKIP
    >>> results = launch(train, 2, "shared", 3)            # doctest: +SKIP
    >>> [r["rank"] for r in results]                        # doctest: +SKIP
    [0, 1]
    """
    import torch.multiprocessing as mp

    checks.whole("world_size", world_size, low=1)
    if threads is None:
        threads = max(1, (os.cpu_count() or 1) // world_size)
    join_timeout = 2 * timeout + 120 if join_timeout is None else join_timeout
    port = free_port() if port is None else _check_port(port)
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
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
                    # the others fail within ``timeout`` (a collective with a dead peer, joining): wait no longer
                    deadline = min(deadline, time.monotonic() + timeout + 5)
            done = set(results) | set(failures)
            if all(not p.is_alive() for p in procs) and queue.empty():
                for rank, p in enumerate(procs):
                    if rank not in done:
                        failures[rank] = f"process exited with code {p.exitcode} before returning a result"
                break
            if time.monotonic() > deadline:
                why = (f"still running {timeout + 5:g} s after rank(s) {sorted(failures)} failed; terminated"
                       if failures else f"no result after join_timeout={join_timeout} s; terminated")
                for rank in range(world_size):
                    if rank not in done:
                        failures[rank] = why
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


