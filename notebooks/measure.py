"""Run notebooks in full mode (or smoke mode with RBDLIB_SMOKE=1) one at a time with nbclient, and print, per
notebook, one JSON line: wall time, the peak memory of the kernel plus every process it starts (sum of PSS, so
shared pages count once; sum of RSS for comparison), sampled every 0.25 s, and the load average before and after.

    python notebooks/measure.py notebooks/0*.ipynb            # measure only; the notebooks are not changed
    python notebooks/measure.py --write notebooks/04_*.ipynb  # re-execute in place (commit what changed)
    python notebooks/measure.py --busy 1 notebooks/0*.ipynb   # beside one busy process (a busy-looping Python)

The README's table of run times and memory comes from this command.
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time

import nbformat
import psutil
from nbclient import NotebookClient


def measure(path: str, write: bool, exclude: frozenset = frozenset()) -> dict:
    nb = nbformat.read(path, as_version=4)
    peak = {"pss": 0, "rss": 0, "procs": 0}
    done = threading.Event()

    def sample():
        me = psutil.Process()
        while not done.is_set():
            pss = rss = procs = 0
            for p in me.children(recursive=True):
                if p.pid in exclude:   # the busy processes of --busy are not the notebook's
                    continue
                try:
                    info = p.memory_full_info()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                pss, rss, procs = pss + info.pss, rss + info.rss, procs + 1
            if pss > peak["pss"]:
                peak.update(pss=pss, procs=procs)
            peak["rss"] = max(peak["rss"], rss)
            time.sleep(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    load_before, start = os.getloadavg(), time.time()
    sampler.start()
    try:
        NotebookClient(nb, timeout=1800, kernel_name="python3",
                       resources={"metadata": {"path": os.path.dirname(os.path.abspath(path))}}).execute()
    finally:
        done.set()
        sampler.join()
    wall = time.time() - start
    if write:
        nbformat.write(nb, path)
    return {"notebook": os.path.basename(path), "smoke": os.environ.get("RBDLIB_SMOKE") == "1",
            "wall_s": round(wall, 1), "peak_pss_MB": round(peak["pss"] / 1e6), "peak_rss_MB": round(peak["rss"] / 1e6),
            "procs_at_peak": peak["procs"], "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+")
    parser.add_argument("--write", action="store_true", help="save the executed notebooks in place")
    parser.add_argument("--busy", type=int, default=0, metavar="N",
                        help="keep N busy-looping processes running beside the notebooks (a shared machine)")
    args = parser.parse_args()
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        for path in args.notebooks:
            print(json.dumps(dict(measure(path, args.write, frozenset(p.pid for p in busy)), busy=args.busy)),
                  flush=True)
    finally:
        for p in busy:
            p.kill()


if __name__ == "__main__":
    main()
