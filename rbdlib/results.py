"""The measured results that notebook 08 and the README show, shipped inside the package.

``results/<name>/results.json`` in the repository is what ``rbdlib-experiment`` wrote; a copy of each,
byte for byte, lives in ``rbdlib/_results/<name>.json`` so that an installed wheel (Colab, Binder, a
notebook run from any folder) can show them without a checkout. ``python -m rbdlib.results refresh``
updates the copy, and a test fails whenever it differs from ``results/``.

A run is a dict as the command line writes it: ``config``, ``method``, ``seed``, ``D``, ``coords``,
``records`` (one per measured epoch; newer runs start with a measured ``epoch: 0`` record of the initial
weights, with ``train_loss: None``; ``seconds`` is the training's wall time so far and ``cpu_seconds``, in
records written since 2026-12-03, the process's CPU time in that epoch) and, in newer files, ``epochs`` (the
target) and ``status`` ("unfinished" while a run is still training, "complete", or "diverged"). Nothing here
invents a point: curves contain exactly the recorded epochs.

>>> run = {"records": [{"epoch": 0, "val_acc": 0.061}, {"epoch": 1, "val_acc": 0.5}]}
>>> curve(run)
([0, 1], [6.1, 50.0])
>>> final(run)
(1, 50.0)
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from importlib import resources
from pathlib import Path

from . import _files

__all__ = ["names", "load", "runs", "curve", "curves", "final", "summarize", "summary", "at_common_epoch", "refresh"]

PACKAGE_DIR = "_results"


def _packaged():
    return resources.files("rbdlib").joinpath(PACKAGE_DIR)


def names() -> list[str]:
    """The result sets shipped with the package, e.g. ``"fc-fmnist"``."""
    folder = _packaged()
    if not folder.is_dir():   # no result set committed yet: the wheel has no _results folder
        return []
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def load(name: str) -> dict:
    """The ``results.json`` of one result set, as written by ``rbdlib-experiment``.

    Raises ``KeyError`` naming the sets that exist when ``name`` is not one of them.
    """
    path = _packaged().joinpath(f"{name}.json")
    if not path.is_file():
        raise KeyError(f"no packaged results {name!r}; available: {', '.join(names()) or 'none'}")
    return json.loads(path.read_text())


def _normalised(run: dict) -> dict:
    """A run with ``epochs`` (its target) and ``status`` filled in for files written before they existed."""
    last = run["records"][-1]["epoch"] if run["records"] else 0
    return dict(run, epochs=run.get("epochs", last), status=run.get("status", "complete"))


def runs(name: str) -> list[dict]:
    """Every run of a result set, in the order the command line wrote them."""
    return [_normalised(r) for r in load(name)["runs"]]


def _percent(record: dict) -> float:
    """A record's validation accuracy in %; a set without accuracies (a language model's) is a clear error."""
    if "val_acc" not in record:
        raise ValueError("these runs record no accuracy (a language model's record val_loss): read them with "
                         "results.runs(name) and their records' 'val_loss'")
    return 100 * record["val_acc"]


def curve(run: dict) -> tuple[list[int], list[float]]:
    """(epochs, validation accuracy %) exactly as recorded: epoch 0 only if it was measured."""
    return [r["epoch"] for r in run["records"]], [_percent(r) for r in run["records"]]


def final(run: dict, epoch: int | None = None) -> tuple[int, float]:
    """(epoch, validation accuracy %) at ``epoch``, or at the last recorded epoch."""
    records = run["records"]
    rec = records[-1] if epoch is None else next(r for r in records if r["epoch"] == epoch)
    return rec["epoch"], _percent(rec)


def summarize(all_runs: list[dict]) -> list[dict]:
    """Per method, over its seeds: the last epoch every seed reached (``epoch``), the accuracies there
    (``accs``, %), their ``mean`` and ``sd`` (None for one seed), each seed's best accuracy up to that epoch
    (``best``), the mean measured epoch-0 accuracy (``start``), wall seconds per epoch (None before epoch 1), CPU
    seconds per epoch (``cpu_per_epoch``: the mean over the epochs that recorded it, None if none did),
    ``seeds``, ``coords`` per step, ``D``, the ``target`` epochs and the ``status``.

    Finished and unfinished runs of a method are separate rows (so a 100-epoch result is not hidden behind a
    seed still training); within a row, runs are compared at the epoch all of them reached, never extrapolated.
    The tables of ``rbdlib-experiment`` and notebook 08 are both built from these rows.
    """
    groups: dict[tuple, list[dict]] = {}
    for r in map(_normalised, all_runs):
        if r["records"]:
            groups.setdefault((r["method"], r["status"] == "unfinished"), []).append(r)
    out = []
    for (method, _), group in groups.items():
        epoch = min(r["records"][-1]["epoch"] for r in group)
        accs = [final(r, epoch)[1] for r in group]
        last = [r["records"][-1] for r in group if r["records"][-1]["epoch"] > 0]
        cpu = [x["cpu_seconds"] for r in group for x in r["records"] if "cpu_seconds" in x]
        out.append(dict(method=method, epoch=epoch, accs=accs, mean=statistics.mean(accs),
                        sd=statistics.stdev(accs) if len(accs) > 1 else None,
                        best=[max(_percent(x) for x in r["records"] if x["epoch"] <= epoch) for r in group],
                        start=statistics.mean(_percent(r["records"][0]) for r in group),
                        seconds_per_epoch=statistics.mean(x["seconds"] / x["epoch"] for x in last) if last else None,
                        cpu_per_epoch=statistics.mean(cpu) if cpu else None,
                        seeds=[r["seed"] for r in group], coords=group[0]["coords"], D=group[0]["D"],
                        target=max(r["epochs"] for r in group),
                        status=", ".join(sorted({r["status"] for r in group}))))
    return out


def summary(name: str) -> list[dict]:
    """:func:`summarize` over the runs of a packaged result set."""
    return summarize(runs(name))


def at_common_epoch(name: str) -> tuple[int, dict[str, float]]:
    """The last epoch every run of a result set reached, and each method's mean accuracy (%) there: the
    fair comparison while some runs are still training."""
    all_runs = [r for r in runs(name) if r["records"]]
    epoch = min(r["records"][-1]["epoch"] for r in all_runs)
    accs: dict[str, list[float]] = {}
    for r in all_runs:
        accs.setdefault(r["method"], []).append(final(r, epoch)[1])
    return epoch, {method: statistics.mean(a) for method, a in accs.items()}


def curves(name: str | list[dict]) -> dict[str, tuple[list[int], list[float], list[float] | None]]:
    """Per method: (epochs, mean accuracy %, sd or None for one seed) over the epochs all its seeds
    recorded; only measured points, epoch 0 included where it was measured. ``name`` is a packaged set or
    a list of runs (e.g. a selection of ``runs(name)``)."""
    out = {}
    all_runs = [r for r in (runs(name) if isinstance(name, str) else name) if r["records"]]
    for method in dict.fromkeys(r["method"] for r in all_runs):
        group = [curve(r) for r in all_runs if r["method"] == method]
        shared = sorted(set.intersection(*(set(epochs) for epochs, _ in group)))
        values = [[dict(zip(epochs, acc))[e] for e in shared] for epochs, acc in group]
        mean = [statistics.mean(v) for v in zip(*values)]
        sd = [statistics.stdev(v) for v in zip(*values)] if len(group) > 1 else None
        out[method] = (shared, mean, sd)
    return out


def refresh(results_dir: str | Path = "results", package_dir: str | Path | None = None,
            only: list[str] | None = None) -> list[str]:
    """Copy every ``results_dir/<name>/results.json`` (or those named in ``only``) to the package's
    ``_results/<name>.json``, and remove packaged sets not copied; returns the names copied. Run from a
    checkout; ``python -m rbdlib.results refresh`` copies the sets git tracks (not runs still writing into
    an untracked folder)."""
    results_dir = Path(results_dir)
    target = Path(package_dir) if package_dir else Path(__file__).parent / PACKAGE_DIR
    sources = {p.parent.name: p for p in sorted(results_dir.glob("*/results.json"))
               if only is None or p.parent.name in only}
    if not results_dir.is_dir():
        raise FileNotFoundError(f"no folder {results_dir.resolve()}; run this from the repository root")
    _files.make_folder(target)
    for old in target.glob("*.json"):
        if old.stem not in sources:
            old.unlink()
    for name, path in sources.items():  # read and written safely: a results folder may hold planted links
        _files.write(target / f"{name}.json", _files.read(path, 256 * 2**20))
    return list(sources)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] != ["refresh"] or len(argv) > 2:
        raise SystemExit("usage: python -m rbdlib.results refresh [RESULTS_DIR]   (copies results/*/results.json "
                         "into the package)")
    results_dir = Path(argv[1] if len(argv) > 1 else "results")
    only = None
    try:  # in a git checkout: only the result sets that are committed (or staged)
        listed = subprocess.run(["git", "ls-files", "*/results.json"], cwd=results_dir, capture_output=True,
                                text=True, check=True).stdout.split()
        only = [Path(p).parent.name for p in listed]
    except (OSError, subprocess.CalledProcessError):
        pass
    copied = refresh(results_dir, only=only)
    print(f"packaged {len(copied)} result sets: {', '.join(copied)}")


if __name__ == "__main__":
    main()
