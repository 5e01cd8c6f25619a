"""The programs the benchmarks run in fresh processes, one subcommand each. This file is run by its path
(``python .../rbdlib/bench/process.py first-step torch``), not as a module of the package, so that a process
imports nothing before the program itself decides what to import, and in which order:

    case SIZE DIM METHOD REPEATS      project + expand pairs (or torch.randn + 2 matvec): times and peak memory, JSON
    first-step torch|rbdlib           a first training step with torch's SGD alone, or with rbdlib's RBD
    step-ms torch-first|rbdlib-first DISTRIBUTION REPEATS
                                      the median ms of an RBD step, after importing torch and rbdlib in that order
    spin                              keep one core busy until killed
"""

from __future__ import annotations

import sys


def case(size: int, dim: int, method: str, repeats: int) -> dict:
    """Median and best seconds of ``repeats`` project + expand pairs at (size, dim) with ``method`` (a distribution,
    or "torch.randn": a stored matrix and two matvecs), and the peak resident memory they added (Linux: the peak
    RSS after a reset through /proc/self/clear_refs, minus the RSS of the warmed-up process)."""
    import resource
    import statistics
    import time

    import torch

    from rbdlib import RandomBases

    g = torch.randn(size)
    if method != "torch.randn":  # warm up: compile (or load) the kernels on a small input
        b = RandomBases(0, 0, 0, 2, 300, method)
        b.expand(b.project(torch.randn(300)))

    def status(field: str) -> int:  # Linux: VmRSS now, VmHWM the peak since the last reset
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))

    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak (VmHWM) to the current RSS
        rss, before = (lambda: status("VmHWM")), status("VmRSS")
    except OSError:  # elsewhere: growth of the lifetime peak, which the import of torch may hide
        def rss() -> int:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        before = rss()
    times = []
    for t in range(repeats):
        start = time.perf_counter()
        if method == "torch.randn":
            P = torch.randn(dim, size)
            c = P @ g
            P.T @ c
            del P
        else:
            b = RandomBases(0, t, 0, dim, size, method)
            b.expand(b.project(g))
        times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times), "best": min(times), "peak_bytes": rss() - before}


def first_step(which: str) -> None:
    """The first training step of a new process on the paper's FC network shapes: with torch's SGD alone (torch's
    import and its optimizer's first call, which imports torch._dynamo, are most of a start), or with rbdlib's RBD
    and +-1 bases (its import and its kernels' compile, or load from the cache)."""
    import torch

    x, y = torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,))
    if which == "rbdlib":
        import rbdlib
        import rbdlib.models

        model = rbdlib.models.fc(seed=0)
        opt = rbdlib.RBD(model.parameters(), lr=0.5, dim=250, distribution="rademacher")
    else:
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 100), torch.nn.ReLU(),
                                    torch.nn.Linear(100, 10))
        opt = torch.optim.SGD(model.parameters(), lr=0.25)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


def step_ms(order: str, distribution: str, repeats: int) -> float:
    """The median ms of an RBD step on the FC network, in a process that imported torch and rbdlib in ``order``."""
    import importlib

    for module in ("torch", "rbdlib") if order == "torch-first" else ("rbdlib", "torch"):
        importlib.import_module(module)
    import rbdlib
    from rbdlib.bench import step_ms as median_ms
    from rbdlib.models import fc

    model = fc(seed=0)
    return median_ms(rbdlib.RBD(model.parameters(), lr=0.5, dim=250, distribution=distribution), model, repeats)


def spin() -> None:
    """Keep one core busy (a learner's second notebook, a neighbour on a shared machine) until killed."""
    while True:
        pass


def main(argv: list[str]) -> None:
    command, args = argv[0], argv[1:]
    if command == "case":
        import json

        size, dim, method, repeats = args
        print(json.dumps(case(int(size), int(dim), method, int(repeats))))
    elif command == "first-step":
        first_step(*args)
    elif command == "step-ms":
        order, distribution, repeats = args
        print(step_ms(order, distribution, int(repeats)))
    elif command == "spin":
        spin()
    else:
        raise SystemExit(f"unknown program {command!r}; see {__file__}")


if __name__ == "__main__":
    main(sys.argv[1:])
