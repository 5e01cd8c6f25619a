"""Benchmarks: fused on-demand bases against storing them, measured in one run.

    python -m rbdlib.bench                  # everything below, in one run (--quick: small sizes, no start-up)
    python -m rbdlib.bench bases            # CPU table: throughput and peak memory
    python -m rbdlib.bench bases --quick    # smaller sizes, for a first look
    python -m rbdlib.bench step             # one training step on the paper's FC network: SGD vs RBD
    python -m rbdlib.bench busy             # an RBD step while another process keeps a core busy
    python -m rbdlib.bench order            # an RBD step with torch imported first and with rbdlib first
    python -m rbdlib.bench limit            # the machine's limit for the kernels, and the fraction reached
    python -m rbdlib.bench start            # a new process to its first RBD step, empty and warm compile cache
    python -m rbdlib.bench gpu              # on a CUDA machine: CPU/GPU agreement and GPU timings (or --gpu)

Throughput counts basis entries (dim x size) per second of one project + expand pair.
The baseline is what a straightforward PyTorch implementation does: ``P = torch.randn(dim, size)``
then ``c = P @ g`` and ``P.T @ c``. Every case runs in a fresh subprocess so that its peak
resident memory (on Linux the peak RSS after a reset through ``/proc/self/clear_refs``, minus the RSS of
the warmed-up process) belongs to it alone. Times are given as the median and the best of the
repeats, and so are the ratios (median over median, best over best): the baseline allocates and
faults in dim x size floats every time, which makes it the noisier of the two. At the paper's size
the methods run in interleaved rounds of fresh processes (``--rounds``), because on a shared machine
a whole process can land in a slow spell.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .. import distributions

#: the programs run in fresh processes (see its docstring), started by path: ``[sys.executable, *program(...)]``
PROCESS = str(Path(__file__).with_name("process.py"))


def program(*args) -> list[str]:
    """The command line of one of :mod:`rbdlib.bench.process`'s programs, without the interpreter."""
    return [PROCESS, *map(str, args)]


def _spinner() -> subprocess.Popen:
    """A process that keeps one core busy until killed."""
    return subprocess.Popen([sys.executable, *program("spin")])

def run_case(size: int, dim: int, method: str, repeats: int) -> dict:
    """:func:`rbdlib.bench.process.case` in a fresh process: its peak memory belongs to it alone."""
    out = subprocess.run([sys.executable, *program("case", size, dim, method, repeats)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


METHODS = ("torch.randn", *distributions.NAMES)


HEADER = ["| size | dim | method | ms per project+expand (median, best) | entries/s | vs baseline (median, best) "
          "| peak extra memory |", "|---:|---:|---|---:|---:|---:|---:|"]


def bases_rows(size: int, dim: int, repeats: int, rounds: int = 1) -> list[str]:
    """One row per method. The case runs ``rounds`` times, interleaved (baseline, normal, uniform, rademacher,
    baseline, ...), so that a slow spell of a shared machine hits every method alike. Times are medians over
    rounds of each process's median and best; ratios are medians over rounds of each round's ratio; memory
    is the largest peak seen."""
    med = statistics.median
    runs = {m: [] for m in METHODS}
    for _ in range(rounds):
        for m in METHODS:
            runs[m].append(run_case(size, dim, m, repeats))
    base, rows = runs["torch.randn"], []
    for m, r in runs.items():
        seconds, best = med(x["seconds"] for x in r), med(x["best"] for x in r)
        speed = med(b["seconds"] / x["seconds"] for b, x in zip(base, r))
        speed_best = med(b["best"] / x["best"] for b, x in zip(base, r))
        name = "baseline: torch.randn + 2 matvec" if m == "torch.randn" else f"fused {m}"
        rows.append(f"| {size:,} | {dim:,} | {name} | {seconds * 1e3:,.1f}, {best * 1e3:,.1f} | "
                    f"{size * dim / seconds:.3g} | {speed:.1f}x, {speed_best:.1f}x | "
                    f"{max(x['peak_bytes'] for x in r) / 2**20:,.1f} MiB |")
    return rows


def bases_table(cases, repeats: int, rounds: int = 1) -> str:
    """A markdown table of :func:`bases_rows` for each (size, dim) case."""
    return "\n".join(HEADER + [row for size, dim in cases for row in bases_rows(size, dim, repeats, rounds)])


def _gpu_agreement(dev) -> list[str]:
    """The GPU kernels against the CPU: raw words, rows (uniform and +-1 bit-identical), project, expand."""
    import numpy as np
    import torch

    from .. import philox as ref
    from ..bases import RandomBases, philox4x32

    problems = []
    counters = np.random.default_rng(0).integers(0, 2**32, (100_000, 4), dtype=np.uint64).astype(np.uint32)
    key = np.array([0xA4093822, 0x299F31D0], np.uint32)
    words = philox4x32(torch.from_numpy(counters.astype(np.int64)).to(dev), key).cpu().numpy()
    if not np.array_equal(words.astype(np.uint32), ref.philox4x32(counters, key)):
        problems.append("raw Philox words differ from the CPU reference")
    for dist in distributions.NAMES:
        b = RandomBases(2**40 + 7, 3, 1, 16, 10_007, dist)
        rows_cpu, rows_gpu = b.materialize(), b.materialize(device=dev).cpu()
        g = torch.randn(10_007)
        c_cpu = b.project(g)
        c_gpu, e_gpu = b.project(g.to(dev)).cpu(), b.expand(c_cpu.to(dev)).cpu()
        e_cpu = b.expand(c_cpu)
        rel_c, rel_e = float((c_gpu - c_cpu).norm() / c_cpu.norm()), float((e_gpu - e_cpu).norm() / e_cpu.norm())
        same = torch.equal(rows_cpu, rows_gpu)
        print(f"{dist:10s} rows identical={same} max|diff|={float((rows_cpu - rows_gpu).abs().max()):.2e} "
              f"project rel={rel_c:.2e} expand rel={rel_e:.2e}")
        if (dist != "normal" and not same) or max(rel_c, rel_e) > 1e-5:
            problems.append(f"{dist}: GPU and CPU disagree")
    return problems


def gpu_table(repeats: int = 5) -> None:
    """On a CUDA machine: the GPU kernels against the CPU, then project + expand against ``torch.randn`` +
    two matvecs at the paper's size (D = 101,770, d = 250), at D = 1e6 and at D = 1e7 (d = 1,000): time,
    basis entries per second and peak GPU memory. Exits non-zero if the GPU and the CPU disagree."""
    import torch

    from ..bases import RandomBases
    from ..kernels import cuda

    if not cuda.available():
        sys.exit("rbdlib.gpu_available() is False: CuPy cannot use a CUDA GPU here")
    dev = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    problems = _gpu_agreement(dev)

    def once(method, g, dim, t):
        if method == "torch.randn":
            P = torch.randn(dim, g.numel(), device=dev)
            return P.T @ (P @ g)
        b = RandomBases(0, t, 0, dim, g.numel(), method)
        return b.expand(b.project(g))

    print("| size | dim | method | ms per project + expand | entries/s | peak MiB |\n|---:|---:|---|---:|---:|---:|")
    for size, dim in ((101_770, 250), (1_000_000, 1_000), (10_000_000, 1_000)):
        g = torch.randn(size, device=dev)
        for method in METHODS:
            try:
                once(method, g, dim, 0)
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                start = time.perf_counter()
                for t in range(repeats):
                    once(method, g, dim, t)
                torch.cuda.synchronize()
                sec = (time.perf_counter() - start) / repeats
                print(f"| {size:,} | {dim:,} | {method} | {sec * 1e3:.2f} | {size * dim / sec:.3g} | "
                      f"{torch.cuda.max_memory_allocated() / 2**20:.0f} |")
            except torch.OutOfMemoryError:
                print(f"| {size:,} | {dim:,} | {method} | out of memory | | |")
            torch.cuda.empty_cache()
    if problems:
        sys.exit("GPU check failed: " + "; ".join(problems))


def step_table(repeats: int) -> str:
    """Median wall time of one training step (forward, backward, optimizer) on FC-Fashion-MNIST shapes."""
    import torch

    from .. import models
    from ..optim import RBD

    rows = ["| optimizer | ms per step | vs SGD |", "|---|---:|---:|"]
    base = None
    for name in ("torch.optim.SGD", *(f"RBD {d} d=250" for d in distributions.NAMES)):
        model = models.fc(seed=0)
        opt = (torch.optim.SGD(model.parameters(), lr=0.25) if name.startswith("torch")
               else RBD(model.parameters(), lr=0.5, dim=250, distribution=name.split()[1]))
        ms = step_ms(opt, model, repeats)
        base = base or ms
        rows.append(f"| {name} | {ms:.1f} | {ms / base:.1f}x |")
    return "\n".join(rows)


def step_ms(opt, model, repeats: int) -> float:
    """Median wall time (ms) of a training step (forward, backward, optimizer) on one fixed batch."""
    import torch

    x, y = torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,))
    times = []
    for _ in range(repeats + 3):
        start = time.perf_counter()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times[3:])  # the first steps compile or load the kernels


def busy_table(repeats: int) -> str:
    """An RBD step alone, then while one other process spins on a core (a learner's second notebook, a
    neighbour on a shared machine): rounds alternate idle and busy, and the slowdown is their median ratio."""
    from .. import models
    from ..optim import RBD

    rows = ["| optimizer | ms per step, idle | with one busy process | slowdown |", "|---|---:|---:|---:|"]
    for dist in ("rademacher", "normal"):
        model = models.fc(seed=0)
        opt = RBD(model.parameters(), lr=0.5, dim=250, distribution=dist)
        idle, busy = [], []
        for _ in range(3):
            idle.append(step_ms(opt, model, repeats))
            spinner = _spinner()
            try:
                time.sleep(0.2)
                busy.append(step_ms(opt, model, repeats))
            finally:
                spinner.kill()
                spinner.wait()
        ratio = statistics.median(b / i for b, i in zip(busy, idle))
        rows.append(f"| RBD {dist} d=250 | {statistics.median(idle):.1f} | {statistics.median(busy):.1f} | "
                    f"{ratio:.2f}x |")
    return "\n".join(rows)


def order_table(repeats: int, rounds: int = 3) -> str:
    """An RBD step in a fresh process that imports torch first, and one that imports rbdlib first, idle and
    beside one busy process, in interleaved rounds; a third column runs the kernels on their own thread
    pool instead of torch's OpenMP team (RBDLIB_OPENMP=0), the way they ran before, with torch first."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "RBDLIB_OPENMP")}
    cases = {"torch first": ("torch-first", env), "rbdlib first": ("rbdlib-first", env),
             "torch first, own pool": ("torch-first", dict(env, RBDLIB_OPENMP="0"))}

    def fresh_ms(order, env, dist) -> float:
        out = subprocess.run([sys.executable, *program("step-ms", order, dist, repeats)], env=env, check=True,
                             capture_output=True, text=True)
        return float(out.stdout.split()[-1])

    rows = ["| machine | bases | " + " | ".join(f"{c} (ms)" for c in cases) + " | torch first / rbdlib first |",
            "|---|---|" + "---:|" * (len(cases) + 1)]
    for busy in (False, True):
        spinner = _spinner() if busy else None
        try:
            for dist in ("rademacher", "normal"):
                times = {c: [] for c in cases}
                for _ in range(rounds):
                    for c, (order, case_env) in cases.items():
                        times[c].append(fresh_ms(order, case_env, dist))
                med = {c: statistics.median(t) for c, t in times.items()}
                ratio = statistics.median(a / b for a, b in zip(times["torch first"], times["rbdlib first"]))
                rows.append(f"| {'one busy process' if busy else 'idle'} | {dist} | "
                            + " | ".join(f"{m:.1f}" for m in med.values()) + f" | {ratio:.2f} |")
        finally:
            if spinner:
                spinner.kill()
                spinner.wait()
    return "\n".join(rows)


#: the first steps start_table times: rbdlib's RBD, and torch's SGD alone (the baseline)
START, START_TORCH = program("first-step", "rbdlib"), program("first-step", "torch")


def start_table(warm_runs: int = 3) -> str:
    """Wall time of a new Python process to the end of its first RBD step (FC network): once with an empty
    Numba cache (every kernel compiled), then ``warm_runs`` times with that cache filled, each beside a
    process that does the same first step with torch's SGD alone. A temporary NUMBA_CACHE_DIR keeps the
    user's own cache out of it."""
    import os
    import tempfile

    def run(command, env) -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, *command], env=env, check=True, capture_output=True)
        return time.perf_counter() - start

    with tempfile.TemporaryDirectory(prefix="rbdlib-bench-cache-") as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        cold = run(START, env)
        warm, torch_only = [], []
        for _ in range(warm_runs):  # interleaved, so that a change of load hits both alike
            warm.append(run(START, env))
            torch_only.append(run(START_TORCH, env))
    med = statistics.median
    return "\n".join(["| new process to the end of its first step | seconds |", "|---|---:|",
                      f"| torch alone, SGD (median, best of {warm_runs}) | {med(torch_only):.1f}, "
                      f"{min(torch_only):.1f} |",
                      f"| rbdlib RBD, empty compile cache | {cold:.1f} |",
                      f"| rbdlib RBD, warm cache (median, best of {warm_runs}) | {med(warm):.1f}, {min(warm):.1f} |",
                      f"| rbdlib's share of a warm start (median RBD - median torch alone) | "
                      f"{med(warm) - med(torch_only):.1f} |"])


def limit_table(size: int = 101_770, dim: int = 250, repeats: int = 5) -> str:
    """What the kernels could reach on this machine, from three rates measured on one tile in L1 cache on
    one thread: Philox words, the normal transform (per element), and a float32 dot (one pass over the
    elements). project + expand must generate 2 dim size elements and touch each once, on ``threads()``
    threads (assumed to scale linearly), so the limit is
    ``2 dim size (words per element / word rate + transform + dot) / threads``; the fraction reached is that
    time over the measured one (best of ``repeats``)."""
    import torch

    from ..bases import RandomBases
    from ..kernels import cpu

    rates = cpu.piece_rates()
    threads = cpu.threads()
    g = torch.randn(size)
    rows = [f"Philox4x32-10: {1e-9 / rates['word']:.2f} G words/s per thread; normal transform "
            f"{rates['normal'] * 1e9:.2f} ns per element; float32 dot {rates['dot'] * 1e9:.3f} ns per element; "
            f"{threads} threads",
            "", f"| size | dim | bases | limit ms per project+expand | measured ms (best of {repeats}) "
            "| fraction of the limit |",
            "|---:|---:|---|---:|---:|---:|"]
    # per element: a share of a Philox call (four words per block), the transform where it was measured (the
    # normal one; uniform's is not counted, so its limit is a lower bound; a sign costs nothing) and the dot
    per = {d.name: rates["word"] * 4 / d.per_block + rates.get(d.name, 0.0) + rates["dot"] for d in distributions.ALL}
    for dist, cost in per.items():
        b = RandomBases(0, 0, 0, dim, size, dist)
        b.expand(b.project(g))
        times = []
        for t in range(repeats):
            b = RandomBases(0, t, 0, dim, size, dist)
            start = time.perf_counter()
            b.expand(b.project(g))
            times.append(time.perf_counter() - start)
        limit = 2 * dim * size * cost / threads
        measured = min(times)  # like the rates: the best, which a busy machine disturbs least
        rows.append(f"| {size:,} | {dim:,} | {dist} | {limit * 1e3:.1f} | {measured * 1e3:.1f} | "
                    f"{limit / measured:.0%} |")
    return "\n".join(rows)


def _context() -> str:
    import os
    import platform

    import torch

    from ..kernels import cpu

    model = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return (f"{model}, {os.cpu_count()} CPUs, torch {torch.__version__}, {cpu.threads()} threads "
            f"(torch.get_num_threads()), load average {load}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rbdlib.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="?", default="all",
                        choices=["all", "bases", "step", "busy", "limit", "start", "order", "gpu"])
    parser.add_argument("--quick", action="store_true", help="small sizes only")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per process")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of fresh processes (bases)")
    parser.add_argument("--gpu", action="store_true", help="check and time the CUDA kernels instead")
    args = parser.parse_args(argv)
    if args.gpu or args.what == "gpu":
        gpu_table(args.repeats)
        return
    import torch

    if args.what == "all":
        print(f"rbdlib benchmark: {_context()}\n")
        print(f"## Bases: project + expand against torch.randn + 2 matvec ({args.repeats} repeats per process, "
              f"{args.rounds} interleaved rounds at the first size)\n")
        if args.quick:
            print(bases_table([(20_000, 50)], args.repeats, args.rounds))
        else:
            print("\n".join(HEADER + bases_rows(101_770, 250, args.repeats, args.rounds)
                            + bases_rows(1_000_000, 1_000, args.repeats)))
        steps = 2 if args.quick else 30
        print(f"\n## One step on the paper's FC network (D = 101,770), batch 32, median of {steps}\n")
        print(step_table(steps))
        print(f"\n## An RBD step while one other process keeps a core busy (3 alternating rounds of {steps})\n")
        print(busy_table(steps))
        print("\n## The machine's limit\n")
        print(limit_table(20_000, 50, 2) if args.quick else limit_table())
        if not args.quick:
            print("\n## Start-up\n")
            print(start_table())
        print(f"\nload average at the end: {_context().rsplit('load average ', 1)[1]}")
        return
    tables = {"busy": lambda: busy_table(args.repeats), "limit": lambda: limit_table(repeats=args.repeats),
              "order": lambda: order_table(max(args.repeats, 20), args.rounds),
              "start": start_table}
    if args.what in tables:
        print(f"{_context()}\n{tables[args.what]()}")
        return
    if args.what == "step":
        print(f"one step on the paper's FC network (D = 101,770), batch 32, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads; median of {args.repeats}")
        print(step_table(args.repeats))
        return
    print(f"rbdlib bases benchmark, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{args.repeats} repeats per process; {args.rounds} interleaved rounds"
          + ("" if args.quick else " at the first size, 1 at the second"))
    if args.quick:
        print(bases_table([(20_000, 50)], args.repeats, args.rounds))
    else:  # the second size needs no rounds: its ratios are far from any target, and a round takes minutes
        rows = bases_rows(101_770, 250, args.repeats, args.rounds) + bases_rows(1_000_000, 1_000, args.repeats)
        print("\n".join(HEADER + rows))


if __name__ == "__main__":
    main()
