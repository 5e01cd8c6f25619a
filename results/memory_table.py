"""The table of issue 26: every 100-epoch run without augmentation, per method, beside what it holds and sends.

Run from the repository root (a few seconds; reads the runs' results.json, trains nothing)::

    .venv/bin/python results/memory_table.py      # writes results/fc-fmnist-no-augment/memory.md

Per method of ``fc-fmnist-no-augment`` and ``cnn-fmnist-no-augment``: the seeds that finished 100 epochs, the
final validation accuracy (mean +- sd over them), the CPU seconds of one epoch on one thread (the mean over every
recorded epoch), the bytes of optimizer state after one step (``rbdlib.footprint``, counted from the tensors the
optimizer holds) and the bytes one worker receives per step when training is data-parallel over 2 workers
(``rbdlib.distributed.communication``: DDP's all-reduced gradient for SGD, the shared seed's coordinates and
control words for RBD and FPD).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import torch

from rbdlib import experiments, models, results
from rbdlib.distributed import communication
from rbdlib.footprint import state_bytes

FOLDERS = ("fc-fmnist-no-augment", "cnn-fmnist-no-augment")
OUT = Path("results/fc-fmnist-no-augment/memory.md")


def costs(spec: str, config_name: str) -> tuple[int, int]:
    """(bytes of optimizer state after one step, bytes one of 2 workers receives per step)."""
    config = experiments.PAPER[config_name]
    model = models.build(config["model"], config["dataset"], seed=0)
    run = experiments.RunOptions.from_args(experiments.parser().parse_args([config_name]))   # the CLI's defaults
    opt = experiments.make_optimizer(*experiments.parse_method(spec), model, config, run)
    shape = (4, 1, 28, 28)
    torch.nn.functional.cross_entropy(model(torch.zeros(shape)), torch.arange(4)).backward()
    opt.step()
    size = sum(p.numel() for p in model.parameters())
    sent = 4 * size if isinstance(opt, torch.optim.SGD) else communication(opt, 2, "shared")["bytes_per_step"]
    return state_bytes(opt), sent


def rows(folder: str) -> list[str]:
    data = json.loads(Path(f"results/{folder}/results.json").read_text())
    done = [r for r in data["runs"] if r.get("status") == "complete" and r["records"][-1]["epoch"] == 100]
    out = []
    for s in results.summarize(done):
        spread = f" ± {s['sd']:.2f}" if s["sd"] is not None else ""
        cpu = f"{s['cpu_per_epoch']:.1f}" if s["cpu_per_epoch"] else ""
        state, sent = costs(s["method"], done[0]["config"])
        out.append(f"| {folder.split('-')[0].upper()} | `{s['method']}` | {len(s['seeds'])} | {s['mean']:.2f}{spread} "
                   f"| {statistics.mean(s['best']):.2f} | {cpu} | {state:,} | {sent:,} |")
    return out


def main() -> None:
    torch.manual_seed(0)
    lines = ["| net | method | seeds | val acc % after 100 epochs | best epoch % | CPU s/epoch | state bytes | "
             "bytes received per step |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for folder in FOLDERS:
        if Path(f"results/{folder}/results.json").is_file():
            lines += rows(folder)
    text = "\n".join(lines) + "\n"
    OUT.write_text(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
