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

_CASE = r"""
import json, resource, statistics, sys, time, torch, numpy as np
import rbdlib
size, dim, method, repeats = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
g = torch.randn(size)
if method != "torch.randn":  # warm up: compile (or load) the kernels on a small input
    b = rbdlib.RandomBases(0, 0, 0, 2, 300, method)
    b.expand(b.project(torch.randn(300)))
def status(field):  # Linux: VmRSS now, VmHWM the peak since the last reset
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
try:
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
    rss, before = (lambda: status("VmHWM")), status("VmRSS")
except OSError:  # elsewhere: growth of the lifetime peak, which the import of torch may hide
    rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    before = rss()
times = []
for t in range(repeats):
    start = time.perf_counter()
    if method == "torch.randn":
        P = torch.randn(dim, size)
        c = P @ g
        delta = P.T @ c
        del P
    else:
        b = rbdlib.RandomBases(0, t, 0, dim, size, method)
        delta = b.expand(b.project(g))
    times.append(time.perf_counter() - start)
print(json.dumps({"seconds": statistics.median(times), "best": min(times), "peak_bytes": rss() - before}))
"""


def run_case(size: int, dim: int, method: str, repeats: int) -> dict:
    out = subprocess.run([sys.executable, "-c", _CASE, str(size), str(dim), method, str(repeats)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


METHODS = ("torch.randn", "normal", "uniform", "rademacher")


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

    import rbdlib
    from rbdlib import philox as ref

    problems = []
    counters = np.random.default_rng(0).integers(0, 2**32, (100_000, 4), dtype=np.uint64).astype(np.uint32)
    key = np.array([0xA4093822, 0x299F31D0], np.uint32)
    words = rbdlib.philox4x32(torch.from_numpy(counters.astype(np.int64)).to(dev), key).cpu().numpy()
    if not np.array_equal(words.astype(np.uint32), ref.philox4x32(counters, key)):
        problems.append("raw Philox words differ from the CPU reference")
    for dist in ("normal", "uniform", "rademacher"):
        b = rbdlib.RandomBases(2**40 + 7, 3, 1, 16, 10_007, dist)
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
    import time

    import torch

    import rbdlib

    if not rbdlib.gpu_available():
        sys.exit("rbdlib.gpu_available() is False: CuPy cannot use a CUDA GPU here")
    dev = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    problems = _gpu_agreement(dev)

    def once(method, g, dim, t):
        if method == "torch.randn":
            P = torch.randn(dim, g.numel(), device=dev)
            return P.T @ (P @ g)
        b = rbdlib.RandomBases(0, t, 0, dim, g.numel(), method)
        return b.expand(b.project(g))

    print("| size | dim | method | ms per project + expand | entries/s | peak MiB |\n|---:|---:|---|---:|---:|---:|")
    for size, dim in ((101_770, 250), (1_000_000, 1_000), (10_000_000, 1_000)):
        g = torch.randn(size, device=dev)
        for method in ("torch.randn", "normal", "uniform", "rademacher"):
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

    from . import RBD, models

    rows = ["| optimizer | ms per step | vs SGD |", "|---|---:|---:|"]
    base = None
    for name in ("torch.optim.SGD", "RBD normal d=250", "RBD uniform d=250", "RBD rademacher d=250"):
        model = models.fc(seed=0)
        opt = (torch.optim.SGD(model.parameters(), lr=0.25) if name.startswith("torch")
               else RBD(model.parameters(), lr=0.5, dim=250, distribution=name.split()[1]))
        ms = _step_ms(opt, model, repeats)
        base = base or ms
        rows.append(f"| {name} | {ms:.1f} | {ms / base:.1f}x |")
    return "\n".join(rows)


def _step_ms(opt, model, repeats: int) -> float:
    """Median wall time (ms) of a training step (forward, backward, optimizer) on one fixed batch."""
    import time

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
    import time

    from . import RBD, models

    rows = ["| optimizer | ms per step, idle | with one busy process | slowdown |", "|---|---:|---:|---:|"]
    for dist in ("rademacher", "normal"):
        model = models.fc(seed=0)
        opt = RBD(model.parameters(), lr=0.5, dim=250, distribution=dist)
        idle, busy = [], []
        for _ in range(3):
            idle.append(_step_ms(opt, model, repeats))
            spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            try:
                time.sleep(0.2)
                busy.append(_step_ms(opt, model, repeats))
            finally:
                spinner.kill()
                spinner.wait()
        ratio = statistics.median(b / i for b, i in zip(busy, idle))
        rows.append(f"| RBD {dist} d=250 | {statistics.median(idle):.1f} | {statistics.median(busy):.1f} | "
                    f"{ratio:.2f}x |")
    return "\n".join(rows)


def _print_step_ms(distribution: str, repeats: int) -> None:
    """Print the median ms of an RBD step on the FC network (run by order_table in a fresh process)."""
    from . import RBD, models

    model = models.fc(seed=0)
    print(_step_ms(RBD(model.parameters(), lr=0.5, dim=250, distribution=distribution), model, repeats))


def order_table(repeats: int, rounds: int = 3) -> str:
    """An RBD step in a fresh process that imports torch first, and one that imports rbdlib first, idle and
    beside one busy process, in interleaved rounds; a third column runs the kernels on their own thread
    pool instead of torch's OpenMP team (RBDLIB_OPENMP=0), the way they ran before, with torch first."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "RBDLIB_OPENMP")}
    cases = {"torch first": ("import torch, rbdlib", env), "rbdlib first": ("import rbdlib, torch", env),
             "torch first, own pool": ("import torch, rbdlib", dict(env, RBDLIB_OPENMP="0"))}

    def step_ms(imports, env, dist) -> float:
        code = f"{imports}; from rbdlib.bench import _print_step_ms; _print_step_ms({dist!r}, {repeats})"
        out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
        return float(out.stdout.split()[-1])

    rows = ["| machine | bases | " + " | ".join(f"{c} (ms)" for c in cases) + " | torch first / rbdlib first |",
            "|---|---|" + "---:|" * (len(cases) + 1)]
    for busy in (False, True):
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
        try:
            for dist in ("rademacher", "normal"):
                times = {c: [] for c in cases}
                for _ in range(rounds):
                    for c, (imports, case_env) in cases.items():
                        times[c].append(step_ms(imports, case_env, dist))
                med = {c: statistics.median(t) for c, t in times.items()}
                ratio = statistics.median(a / b for a, b in zip(times["torch first"], times["rbdlib first"]))
                rows.append(f"| {'one busy process' if busy else 'idle'} | {dist} | "
                            + " | ".join(f"{m:.1f}" for m in med.values()) + f" | {ratio:.2f} |")
        finally:
            if spinner:
                spinner.kill()
                spinner.wait()
    return "\n".join(rows)


_START = r"""
import time, torch, rbdlib
model = rbdlib.models.fc(seed=0)
opt = rbdlib.RBD(model.parameters(), lr=0.5, dim=250, distribution="rademacher")
torch.nn.functional.cross_entropy(model(torch.rand(32, 1, 28, 28)), torch.randint(0, 10, (32,))).backward()
opt.step()
"""
# the baseline: the same first step with torch alone (torch's import and its optimizer's first call, which
# imports torch._dynamo, are most of a start)
_START_TORCH = r"""
import torch
model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 100), torch.nn.ReLU(), torch.nn.Linear(100, 10))
opt = torch.optim.SGD(model.parameters(), lr=0.25)
torch.nn.functional.cross_entropy(model(torch.rand(32, 1, 28, 28)), torch.randint(0, 10, (32,))).backward()
opt.step()
"""


def start_table(warm_runs: int = 3) -> str:
    """Wall time of a new Python process to the end of its first RBD step (FC network): once with an empty
    Numba cache (every kernel compiled), then ``warm_runs`` times with that cache filled, each beside a
    process that does the same first step with torch's SGD alone. A temporary NUMBA_CACHE_DIR keeps the
    user's own cache out of it."""
    import os
    import tempfile

    def run(code, env) -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
        return time.perf_counter() - start

    with tempfile.TemporaryDirectory(prefix="rbdlib-bench-cache-") as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        cold = run(_START, env)
        warm, torch_only = [], []
        for _ in range(warm_runs):  # interleaved, so that a change of load hits both alike
            warm.append(run(_START, env))
            torch_only.append(run(_START_TORCH, env))
    med = statistics.median
    return "\n".join(["| new process to the end of its first step | seconds |", "|---|---:|",
                      f"| torch alone, SGD (median, best of {warm_runs}) | {med(torch_only):.1f}, "
                      f"{min(torch_only):.1f} |",
                      f"| rbdlib RBD, empty compile cache | {cold:.1f} |",
                      f"| rbdlib RBD, warm cache (median, best of {warm_runs}) | {med(warm):.1f}, {min(warm):.1f} |",
                      f"| rbdlib's share of a warm start (median RBD - median torch alone) | "
                      f"{med(warm) - med(torch_only):.1f} |"])


def _rates(repeats: int = 15) -> dict:
    """Seconds per Philox word, per normal transform (one element) and per float32 dot element, on one
    thread over one tile in L1 cache (best of ``repeats``), with the kernels' own inlined pieces."""
    import time

    import numpy as np
    from numba import njit

    from .kernels import cpu

    u = np.uint64

    @njit(nogil=True, error_model="numpy")
    def words(bits, reps):
        for r in range(reps):
            cpu._words(bits, 0, bits.shape[0] // 4, r, 0, 0, u(1), u(2))

    @njit(nogil=True, error_model="numpy")
    def transform(top, out, reps):  # the second pass of cpu.fill for normal bases, on int32 words
        for _ in range(reps):
            for p in range(top.shape[0] // 2):
                r = cpu._radius(top[2 * p])
                s, c = cpu._sincos(top[2 * p + 1])
                out[2 * p], out[2 * p + 1] = r * c, r * s

    @njit(nogil=True, error_model="numpy")
    def dot(basis, g, reps):
        acc = 0.0
        for _ in range(reps):
            acc += cpu._dot(basis, g, 0, basis.shape[0])
        return acc

    n, reps = cpu.TILE, 200
    bits = np.empty(n, np.uint32)
    top = np.random.default_rng(0).integers(0, 1 << 24, n).astype(np.int32)  # the top 24 bits of words
    g = np.ones(n, np.float32)

    def best(f, *args):
        f(*args, 1)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            f(*args, reps)
            times.append(time.perf_counter() - start)
        return min(times) / (reps * n)

    return {"word": best(words, bits), "normal": best(transform, top, g.copy()), "dot": best(dot, g.copy(), g)}


def limit_table(size: int = 101_770, dim: int = 250, repeats: int = 5) -> str:
    """What the kernels could reach on this machine, from three rates measured on one tile in L1 cache on
    one thread: Philox words, the normal transform (per element), and a float32 dot (one pass over the
    elements). project + expand must generate 2 dim size elements and touch each once, on ``threads()``
    threads (assumed to scale linearly), so the limit is
    ``2 dim size (words per element / word rate + transform + dot) / threads``; the fraction reached is that
    time over the measured one (best of ``repeats``)."""
    import time

    import torch

    from . import RandomBases
    from .kernels import cpu

    rates = _rates()
    threads = cpu.threads()
    g = torch.randn(size)
    rows = [f"Philox4x32-10: {1e-9 / rates['word']:.2f} G words/s per thread; normal transform "
            f"{rates['normal'] * 1e9:.2f} ns per element; float32 dot {rates['dot'] * 1e9:.3f} ns per element; "
            f"{threads} threads",
            "", f"| size | dim | bases | limit ms per project+expand | measured ms (best of {repeats}) "
            "| fraction of the limit |",
            "|---:|---:|---|---:|---:|---:|"]
    per = {"normal": rates["word"] + rates["normal"] + rates["dot"],
           "uniform": rates["word"] + rates["dot"],  # its transform is not counted: a lower bound
           "rademacher": rates["word"] / 32 + rates["dot"]}
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

    from .kernels import cpu

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
