"""Benchmarks: fused on-demand bases against storing them, measured in one run.

    python -m rbdlib.bench bases            # CPU table: throughput and peak memory
    python -m rbdlib.bench bases --quick    # smaller sizes, for a first look
    python -m rbdlib.bench step             # one training step on the paper's FC network: SGD vs RBD
    python -m rbdlib.bench --gpu            # on a CUDA machine: CPU/GPU agreement and GPU timings

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


_GPU = r"""
import time, numpy as np, torch, rbdlib
from rbdlib import philox as ref
assert rbdlib.gpu_available(), "CuPy cannot see a GPU"
dev = torch.device("cuda")
print("device:", torch.cuda.get_device_name(0))
ctr = np.random.default_rng(0).integers(0, 2**32, (100000, 4), dtype=np.uint64).astype(np.uint32)
key = np.array([0xA4093822, 0x299F31D0], np.uint32)
gpu_words = rbdlib.philox4x32(torch.from_numpy(ctr.astype(np.int64)).to(dev), key).cpu().numpy().astype(np.uint32)
print("raw words bit-identical to the CPU reference:", np.array_equal(gpu_words, ref.philox4x32(ctr, key)))
for dist in ("normal", "uniform", "rademacher"):
    b = rbdlib.RandomBases(2**40 + 7, 3, 1, 16, 10007, dist)
    cpu_rows, gpu_rows = b.materialize(), b.materialize(device=dev).cpu()
    g = torch.randn(10007)
    c_cpu, c_gpu = b.project(g), b.project(g.to(dev)).cpu()
    e_cpu, e_gpu = b.expand(c_cpu), b.expand(c_cpu.to(dev)).cpu()
    rel = lambda a, b: float((a - b).norm() / b.norm())
    diff = float((cpu_rows - gpu_rows).abs().max())
    print(f"{dist:10s} rows identical={torch.equal(cpu_rows, gpu_rows)} max|diff|={diff:.2e}"
          f" project rel={rel(c_gpu, c_cpu):.2e} expand rel={rel(e_gpu, e_cpu):.2e}")
for size, dim in ((101770, 250), (1000000, 1000), (10000000, 1000)):
    g = torch.randn(size, device=dev)
    for dist in ("torch.randn", "normal", "uniform", "rademacher"):
        def once(t):
            if dist == "torch.randn":
                P = torch.randn(dim, size, device=dev)
                return P.T @ (P @ g)
            b = rbdlib.RandomBases(0, t, 0, dim, size, dist)
            return b.expand(b.project(g))
        try:
            once(0); torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            for t in range(5):
                once(t)
            torch.cuda.synchronize()
            sec = (time.perf_counter() - start) / 5
            peak = torch.cuda.max_memory_allocated() / 2**20
            print(f"size={size:>10,} dim={dim:>5} {dist:11s} {sec*1e3:9.2f} ms  {size*dim/sec:.3g} entries/s"
                  f"  peak {peak:.0f} MiB")
        except torch.OutOfMemoryError:
            print(f"size={size:>10,} dim={dim:>5} {dist:11s} out of memory")
        torch.cuda.empty_cache()
"""


def step_table(repeats: int) -> str:
    """Median wall time of one training step (forward, backward, optimizer) on FC-Fashion-MNIST shapes."""
    import time

    import torch

    from . import RBD, models

    x, y = torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,))
    rows = ["| optimizer | ms per step | vs SGD |", "|---|---:|---:|"]
    base = None
    for name in ("torch.optim.SGD", "RBD normal d=250", "RBD uniform d=250", "RBD rademacher d=250"):
        model = models.fc(seed=0)
        opt = (torch.optim.SGD(model.parameters(), lr=0.25) if name.startswith("torch")
               else RBD(model.parameters(), lr=0.5, dim=250, distribution=name.split()[1]))
        times = []
        for _ in range(repeats + 3):
            start = time.perf_counter()
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            times.append(time.perf_counter() - start)
        ms = 1e3 * statistics.median(times[3:])  # the first steps compile or load the kernels
        base = base or ms
        rows.append(f"| {name} | {ms:.1f} | {ms / base:.0f}x |")
    return "\n".join(rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rbdlib.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="?", default="bases", choices=["bases", "step"])
    parser.add_argument("--quick", action="store_true", help="small sizes only")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per process")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of fresh processes (bases)")
    parser.add_argument("--gpu", action="store_true", help="check and time the CUDA kernels instead")
    args = parser.parse_args(argv)
    if args.gpu:
        exec(compile(_GPU, "rbdlib-bench-gpu", "exec"), {})
        return
    import torch

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
