"""Issue 27: RBD beside its successors on one character-level transformer, at an equal number of tokens.

Run from the repository root (``results/successors.sh`` runs the whole comparison)::

    .venv/bin/python results/successors.py --methods adamw sgd:momentum=0.9,lr=0.3 --seeds 0 1 2
    .venv/bin/python results/successors.py --tune --methods adamw:lr=0.001 adamw:lr=0.003 rbd:lr=1 rbd:lr=3
    .venv/bin/python results/successors.py --lr-from results/lm-successors/tuning --methods adamw rbd --seeds 0 1 2
    .venv/bin/python results/successors.py --report          # rewrite table.md, results.json, val_loss.png

The model is :class:`rbdlib.models.CharTransformer` (829,568 parameters at the defaults), the text the Jargon File
(:mod:`rbdlib.text`, Debian's ``jargon-text``; ``--corpus PATH`` takes any UTF-8 file). Every run of a folder has the
same budget: ``--steps`` steps of ``--batch-size`` windows of ``--context`` characters (the same tokens for every
method: a MeZO step sees one batch, as a gradient step does), evaluated every ``--eval-every`` steps on the same
``--eval-windows`` validation windows; a step's batch is a pure function of (seed, step) (``rbdlib.text.windows``).

A method is a name with options, as the image command line's (``rbdlib-experiment``): ``adamw`` (lr,
weight_decay), ``sgd`` (lr, momentum, nesterov, weight_decay), ``rbd`` and ``fpd`` (every :class:`rbdlib.RBD` option
that the image runs take: dim, distribution, compartments, redraw, momentum, nesterov, memory, adaptive, ...), and
from :mod:`rbdlib.successors` (imported only when named) ``flora`` (rank, kappa, beta), ``galore`` and ``golore``
(rank, update_proj_gap, alpha, weight_decay), ``apollo-mini`` (rank, update_proj_gap, alpha, weight_decay) and
``mezo`` (dim, eps, loss only, no backward). Learning rates default to ``DEFAULT_LR`` (starting points, not tuned);
every random projection is seeded by the run's seed (GaLore's is the gradient's SVD). Each run trains on one thread
(``--threads``) so that CPU seconds per step are a cost on one core.

``--tune`` trains on seed 100, which no table reports, for a quarter of ``--steps``, into ``<out>/tuning``.
``--lr-from FOLDER`` completes every spec without ``lr=`` with the tuning run of the same spec and the lowest final
validation loss (refusing seeds that folder trained on, and saying when the best lr is at the edge of its grid).

Each (method, seed) lives in ``<out>/_runs/<run>/`` (:func:`rbdlib.experiments.run_dir`): ``run.json`` (records,
settings, status, bytes) and, while unfinished, ``checkpoint.pt`` (model, optimizer, records; the image runs'
format, loaded by :func:`rbdlib.experiments.load_checkpoint` with ``weights_only=True``), both replaced atomically at
every evaluation. ``epoch`` in a record counts evaluations. Running the same command again resumes every unfinished
run where it stopped, with the numbers of an uninterrupted run; a run, or a folder, trained with other settings is
refused, never mixed. ``--stop-at STEP`` leaves the runs there (to split a run across sessions).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import rbdlib
from rbdlib import _files, experiments, models, text
from rbdlib.footprint import footprint, projection_bytes

OUT = Path("results/lm-successors")
TUNING_SEED = 100
DEFAULT_LR = {"adamw": 1e-3, "sgd": 0.1, "rbd": 1.0, "fpd": 1.0, "flora": 0.1, "galore": 1e-3, "golore": 1e-3,
              "apollo-mini": 1e-3, "mezo": 1e-4}
SUCCESSORS = {"flora": "Flora", "galore": "GaLore", "golore": "GoLore", "apollo-mini": "ApolloMini", "mezo": "MeZO"}
_RBD = {"lr", "dim", "compartments", "distribution", "split_dim", "momentum", "nesterov", "weight_decay", "memory",
        "adaptive"}
_PROJECTED = {"lr", "rank", "update_proj_gap", "alpha", "weight_decay"}
USES = {"adamw": {"lr", "weight_decay"}, "sgd": {"lr", "momentum", "nesterov", "weight_decay"},
        "rbd": _RBD | {"redraw"}, "fpd": _RBD, "flora": {"lr", "rank", "kappa", "beta"}, "galore": _PROJECTED,
        "golore": _PROJECTED, "apollo-mini": _PROJECTED, "mezo": {"lr", "dim", "eps"}}
OPTIONS = dict(experiments._OPTIONS, rank=experiments._positive, kappa=experiments._positive,
               update_proj_gap=experiments._positive, beta=experiments._momentum,
               alpha=lambda v: experiments._rate(v, least=1e-12), eps=lambda v: experiments._rate(v, least=1e-12))
RANK = 16   # rank of Flora's, GaLore's and GoLore's projections unless a spec says (APOLLO-Mini's is 1)
WORKERS = 2  # bytes exchanged per step are counted for data-parallel training on this many workers


def parse_method(spec: str) -> tuple[str, dict]:
    """``"rbd:dim=100,distribution=rademacher"`` -> ``("rbd", {"dim": 100, "distribution": "rademacher"})``;
    every option is checked for its method and value.

    >>> parse_method("galore:rank=8,update_proj_gap=50,lr=0.003")
    ('galore', {'rank': 8, 'update_proj_gap': 50, 'lr': 0.003})
    """
    return experiments.parse_method(spec, USES, OPTIONS)


def make_optimizer(spec: str, model: torch.nn.Module, seed: int) -> torch.optim.Optimizer:
    """The optimizer a spec names, over ``model``'s parameters; its random bases or projections from ``seed``."""
    name, options = parse_method(spec)
    options.setdefault("lr", DEFAULT_LR[name])
    if name in ("adamw", "sgd"):
        return (torch.optim.AdamW if name == "adamw" else torch.optim.SGD)(model.parameters(), **options)
    if name in ("rbd", "fpd"):
        options.setdefault("dim", 250)
        params = model.named_parameters() if options.get("compartments") == "layer" else model.parameters()
        return (rbdlib.RBD if name == "rbd" else rbdlib.FPD)(params, seed=seed, **options)
    if name in ("flora", "galore", "golore"):
        options.setdefault("rank", RANK)
    successors = importlib.import_module("rbdlib.successors")   # only when a successor is named
    return getattr(successors, SUCCESSORS[name])(model.parameters(), seed=seed, **options)


def bytes_per_step(opt: torch.optim.Optimizer, model: torch.nn.Module) -> int:
    """Bytes one of ``WORKERS`` data-parallel workers receives per step, as the methods are implemented: RBD's and
    FPD's shared-seed coordinates and control words (:func:`rbdlib.distributed.communication`), MeZO's ``dim``
    float32 projected gradients, and for every other method the float32 gradient that DDP all-reduces (4 D)."""
    if isinstance(opt, rbdlib.RBD):
        from rbdlib.distributed import communication

        return communication(opt, WORKERS, "shared")["bytes_per_step"]
    if type(opt).__name__ == "MeZO":
        return 4 * opt.options["dim"]
    return 4 * models.count_parameters(model)


def settings(args, corpus: text.TextCorpus) -> dict:
    """Everything that changes what a run computes: recorded in its run.json, equal across a folder."""
    return dict(corpus.describe(), model="CharTransformer", context=args.context, width=args.width,
                layers=args.layers, heads=args.heads, batch_size=args.batch_size, steps=args.steps,
                eval_every=args.eval_every, eval_windows=args.eval_windows, threads=args.threads)


def check_settings(where, recorded: dict, ours: dict, how: str) -> None:
    """An error naming every setting that differs (the image runs' rule: never mix budgets in one folder)."""
    differ = sorted(k for k in set(recorded) | set(ours) if recorded.get(k) != ours.get(k))
    if differ:
        theirs = ", ".join(f"{k}={recorded.get(k)!r}" for k in differ)
        mine = ", ".join(f"{k}={ours.get(k)!r}" for k in differ)
        raise ValueError(f"{where} was trained with {theirs}, {how} {mine}; use the same options, choose another "
                         "--out, or delete that run's folder")


@torch.no_grad()
def val_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 32) -> float:
    """Mean cross-entropy (nats per character) over every position of the validation windows."""
    total = sum(F.cross_entropy(model(x[i:i + chunk]).flatten(0, 1), y[i:i + chunk].flatten(), reduction="sum").item()
                for i in range(0, len(x), chunk))
    return total / y.numel()


def run_one(spec: str, seed: int, corpus: text.TextCorpus, args, folder: Path) -> dict:
    """Train one (method, seed) for ``args.steps`` steps, resuming from ``folder`` if it holds a checkpoint."""
    ours = settings(args, corpus)
    model = models.CharTransformer(corpus.vocab.size, args.context, args.width, args.layers, args.heads, seed=seed)
    opt = make_optimizer(spec, model, seed)
    status, ckpt = folder / "run.json", folder / "checkpoint.pt"
    saved = experiments._read_json(status)
    if saved:
        check_settings(folder, saved["settings"], ours, "this command has")
        if saved["status"] != "unfinished":
            return saved
    result = dict(method=spec, seed=seed, D=models.count_parameters(model), settings=ours, status="unfinished",
                  records=[])
    val_x, val_y = text.eval_windows(corpus.val, args.context, args.eval_windows)
    if _files.exists(ckpt):
        state = experiments.load_checkpoint(ckpt, spec, seed, limit=64 * 2**20 + 16 * 4 * result["D"])
        if not saved or saved["records"][-1]["epoch"] != state["epochs"]:
            raise ValueError(f"{ckpt} and its run.json disagree on where the run is; delete {folder} to start again")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        result["records"] = state["records"]
    else:
        result["records"] = [dict(epoch=0, step=0, tokens=0, train_loss=None, val_loss=val_loss(model, val_x, val_y),
                                  seconds=0.0, train_seconds=0.0, cpu_seconds=0.0)]
    records = result["records"]
    closure_only = getattr(opt, "needs_closure", False)   # MeZO: losses only, no backward

    def save(final: bool) -> None:
        result.update(footprint=footprint(model, opt), projection_bytes=projection_bytes(opt),
                      bytes_per_step=bytes_per_step(opt, model), workers=WORKERS)
        experiments.save_run(folder, result, model, opt, final)

    stop = min(args.steps, args.stop_at or args.steps)
    while records[-1]["step"] < stop and result["status"] == "unfinished":
        last, losses, wall, trained, cpu = records[-1], [], time.perf_counter(), 0.0, 0.0
        for step in range(last["step"], min(last["step"] + args.eval_every, args.steps)):
            x, y = text.windows(corpus.train, args.batch_size, args.context, seed, step)
            start, start_cpu = time.perf_counter(), time.process_time()
            try:
                if closure_only:
                    loss = opt.step(lambda x=x, y=y: F.cross_entropy(model(x).flatten(0, 1), y.flatten()))
                else:
                    opt.zero_grad(set_to_none=True)
                    loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
                    loss.backward()
                    opt.step()
                    loss = loss.item()
            except FloatingPointError:   # a non-finite gradient or loss, refused before anything changed
                loss = math.nan
            trained, cpu = trained + time.perf_counter() - start, cpu + time.process_time() - start_cpu
            losses.append(loss)
            if not math.isfinite(loss):
                result.update(status="diverged", diverged_at=step + 1)
                break
        if result["status"] == "diverged":
            print(f"  {spec} seed={seed} diverged at step {result['diverged_at']}", flush=True)
            break
        step = last["step"] + len(losses)
        records.append(dict(epoch=last["epoch"] + 1, step=step, tokens=step * args.batch_size * args.context,
                            train_loss=statistics.mean(losses), val_loss=val_loss(model, val_x, val_y),
                            seconds=round(last["seconds"] + time.perf_counter() - wall, 3),
                            train_seconds=round(last["train_seconds"] + trained, 3),
                            cpu_seconds=round(last["cpu_seconds"] + cpu, 3)))
        if step == args.steps:
            result["status"] = "complete"
        save(final=result["status"] != "unfinished")
        print(f"  {spec} seed={seed} step {step}/{args.steps}: val_loss={records[-1]['val_loss']:.4f} "
              f"({records[-1]['seconds']:.0f} s)", flush=True)
    if result["status"] == "diverged":
        save(final=True)
    return result


# ------------------------------------------------------------------------------------------------ the report
def collect(out: Path) -> list[dict]:
    """Every run under ``out/_runs`` as far as it got, by method (in the order of ``USES``), spec and seed; runs of
    other settings than the first are refused: one folder is one budget."""
    if not _files.exists(out / "_runs"):
        return []
    _files.make_folder(out / "_runs", root=out)   # refuses a _runs that is a link
    runs = [experiments._read_json(p) for p in sorted((out / "_runs").glob("*/run.json"))]
    for r in runs[1:]:
        check_settings(f"{out}: {r['method']} seed {r['seed']}", r["settings"], runs[0]["settings"],
                       f"{runs[0]['method']} seed {runs[0]['seed']} has")
    return sorted(runs, key=lambda r: (list(USES).index(r["method"].partition(":")[0]), r["method"], r["seed"]))


def family(spec: str) -> str:
    """A spec without its lr, options in a fixed order: the runs one learning rate is chosen among.

    >>> family("rbd:lr=2,distribution=rademacher,dim=100")
    'rbd:dim=100,distribution=rademacher'
    """
    name, options = parse_method(spec)
    kept = [f"{k}={v}" for k, v in sorted(options.items()) if k != "lr"]
    return name + (":" + ",".join(kept) if kept else "")


def _lr(spec: str) -> float:
    return parse_method(spec)[1].get("lr", DEFAULT_LR[spec.partition(":")[0]])


def best_lrs(runs: list[dict]) -> dict[str, tuple[str, float, str]]:
    """Per :func:`family`: the spec with the lowest final validation loss among its complete runs (averaged over
    seeds), that loss, and a warning when the grid may not bracket it (its lr the smallest or largest tried, or
    the only one)."""
    finals: dict[str, dict[str, list[float]]] = {}
    for r in runs:
        if r["status"] == "complete":
            finals.setdefault(family(r["method"]), {}).setdefault(r["method"], []).append(r["records"][-1]["val_loss"])
    out = {}
    for name, specs in finals.items():
        best = min(specs, key=lambda s: statistics.mean(specs[s]))
        lrs = sorted({_lr(s) for s in specs})
        note = "the only lr tried" if len(lrs) == 1 else "at the edge of its grid" if _lr(best) in (lrs[0], lrs[-1]) \
            else ""
        out[name] = (best, statistics.mean(specs[best]), note)
    return out


def _mean_sd(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f}" + (f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else "")


def summarize(runs: list[dict]) -> list[dict]:
    """Per method (its complete, unfinished and diverged runs in separate rows): the seeds, the last step all of
    them reached, the validation losses there, CPU seconds per training step, and the bytes each run recorded."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["method"], r["status"]), []).append(r)
    rows = []
    for (method, status), group in groups.items():
        step = min(r["records"][-1]["step"] for r in group)
        at = [next(x for x in r["records"] if x["step"] == step) for r in group]
        trained = [r["records"][-1] for r in group if r["records"][-1]["step"] > 0]
        cpu = statistics.mean(x["cpu_seconds"] / x["step"] for x in trained) if trained else None
        rows.append(dict(method=method, status=status, seeds=[r["seed"] for r in group], step=step,
                         tokens=at[0]["tokens"], losses=[x["val_loss"] for x in at],
                         best=[min(x["val_loss"] for x in r["records"] if x["step"] <= step) for r in group],
                         start=statistics.mean(r["records"][0]["val_loss"] for r in group),
                         cpu_per_step=cpu, state=group[0].get("footprint", {}).get("state"),
                         projections=group[0].get("projection_bytes"),
                         sent=group[0].get("bytes_per_step"), D=group[0]["D"]))
    return rows


def table(runs: list[dict]) -> str:
    """Markdown: one row per method and status (validation loss in nats per character, mean ± sd over seeds)."""
    lines = ["| method | seeds | steps | tokens | val loss | best val loss | at step 0 | optimizer state (bytes) | "
             f"of it projections | CPU s/step | bytes/step, {WORKERS} workers | status |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in summarize(runs):
        cpu = "" if row["cpu_per_step"] is None else f"{row['cpu_per_step']:.3f}"
        lines.append(f"| {row['method']} | {len(row['seeds'])} | {row['step']:,} | {row['tokens']:,} | "
                     f"{_mean_sd(row['losses'])} | {_mean_sd(row['best'])} | {row['start']:.3f} | {row['state']:,} | "
                     f"{row['projections']:,} | {cpu} | {row['sent']:,} | {row['status']} |")
    return "\n".join(lines) + "\n"


def plot(runs: list[dict], path: Path) -> None:
    """Validation loss against tokens: the mean over a method's seeds at the steps all of them reached, ± sd."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rbdlib.viz import mean_band, save_png

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, method in enumerate(dict.fromkeys(r["method"] for r in runs)):
        group = [r for r in runs if r["method"] == method]
        shared = sorted(set.intersection(*({x["tokens"] for x in r["records"]} for r in group)))
        values = [[{x["tokens"]: x["val_loss"] for x in r["records"]}[t] for t in shared] for r in group]
        mean = [statistics.mean(v) for v in zip(*values)]
        sd = [statistics.stdev(v) for v in zip(*values)] if len(group) > 1 else None
        mean_band(ax, [t / 1e6 for t in shared], mean, sd, color=f"C{i % 10}", ls="-" if i < 10 else "--",
                   label=method + (f" ({len(group)} seeds)" if len(group) > 1 else ""))
    ax.set(xlabel="training tokens (millions)", ylabel="validation loss (nats / character)",
           title=f"CharTransformer on {runs[0]['settings']['corpus']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save_png(fig, path)


def report(out: Path, runs: list[dict], command: str | None) -> str:
    """results.json (every run, and the commands that wrote into ``out``), table.md and val_loss.png."""
    _files.make_folder(out)
    commands = (experiments._read_json(out / "results.json") or {}).get("commands", [])
    commands = list(dict.fromkeys(commands + ([command] if command else [])))
    _files.write(out / "results.json", json.dumps({"commands": commands, "runs": runs}, indent=1))
    s = runs[0]["settings"]
    budget = (f"Budget: {s['steps']:,} steps x {s['batch_size']} windows x {s['context']} characters "
              f"= {s['steps'] * s['batch_size'] * s['context']:,} tokens; validation loss on {s['eval_windows']} "
              f"windows every {s['eval_every']} steps; {s['corpus']} ({s['chars']:,} characters, {s['vocab']} "
              f"distinct, {s['val_fraction']:.0%} held out); CharTransformer of width {s['width']}, "
              f"{s['layers']} block(s) of {s['heads']} heads, D = {runs[0]['D']:,}; {s['threads']} thread(s) a run.\n\n"
              "Validation loss in nats per character (mean ± sd over seeds). CPU s/step: the run's own CPU time in "
              f"training steps, evaluations excluded. Bytes/step: what one of {WORKERS} data-parallel workers "
              "receives per step as the methods are implemented: the shared seed's coordinates and control words "
              "for RBD and FPD, MeZO's dim projected gradients, DDP's float32 gradient (4 D) for the rest (Flora and "
              "GoLore could send r L numbers per matrix with a shared seed; not implemented).")
    tuned = {k: v for k, v in best_lrs(runs).items() if v[2] != "the only lr tried"}
    chosen = "".join(f"- {name}: {spec} ({loss:.3f}){f' ({note})' if note else ''}\n"
                     for name, (spec, loss, note) in tuned.items())
    listed = "\n".join(f"    {c}" for c in commands)
    body = f"Commands:\n\n{listed}\n\n{budget}\n\n{table(runs)}"
    if tuned:
        body += f"\nBest learning rate per method (lowest final validation loss):\n\n{chosen}"
    _files.write(out / "table.md", body)
    plot(runs, out / "val_loss.png")
    return body


# ------------------------------------------------------------------------------------------------ the command
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=[], help="methods with options, e.g. rbd:distribution=rademacher")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--steps", type=experiments._positive, default=1000)
    p.add_argument("--batch-size", type=experiments._positive, default=16)
    p.add_argument("--context", type=experiments._positive, default=128)
    p.add_argument("--width", type=experiments._positive, default=128)
    p.add_argument("--layers", type=experiments._positive, default=4)
    p.add_argument("--heads", type=experiments._positive, default=4)
    p.add_argument("--eval-every", type=experiments._positive, default=50)
    p.add_argument("--eval-windows", type=experiments._positive, default=128)
    p.add_argument("--threads", type=experiments._positive, default=1, help="torch threads per run (default 1)")
    p.add_argument("--corpus", default=None, help="a UTF-8 text file instead of the Jargon File")
    p.add_argument("--out", default=None, help=f"output folder (default {OUT}, with --tune {OUT}/tuning)")
    p.add_argument("--tune", action="store_true", help=f"seed {TUNING_SEED} only, a quarter of --steps, into tuning/")
    p.add_argument("--lr-from", default=None, help="a tuning folder: its best lr for every spec without lr=")
    p.add_argument("--stop-at", type=experiments._positive, default=None, help="leave the runs unfinished there")
    p.add_argument("--jobs", type=experiments._positive, default=None, help="runs at once, in processes")
    p.add_argument("--nice", type=int, default=10, choices=range(20), metavar="0..19")
    p.add_argument("--report", action="store_true", help="train nothing: rewrite the folder's table and plot")
    return p


def with_lrs(specs: list[str], folder: Path, seeds: list[int]) -> list[str]:
    """Every spec without ``lr=`` replaced by the best tuned spec of ``folder`` (:func:`best_lrs`)."""
    runs = collect(folder)
    reused = sorted({r["seed"] for r in runs} & set(seeds))
    if reused:
        raise ValueError(f"seeds {reused} were used to choose learning rates in {folder}; report other seeds")
    best, out = best_lrs(runs), []
    for spec in specs:
        if "lr" in parse_method(spec)[1]:
            out.append(spec)
            continue
        if family(spec) not in best:
            raise ValueError(f"{folder} holds no complete tuning run of {spec!r} (with lr=...); tune it first")
        chosen, loss, note = best[family(spec)]
        print(f"{spec}: {chosen} (tuning val loss {loss:.3f}){f'; {note}' if note else ''}", flush=True)
        out.append(chosen)
    return out


def _corpus(args) -> text.TextCorpus:
    return text.load_corpus(args.corpus)


def _job(spec: str, seed: int, args, folder: Path) -> dict:
    torch.set_num_threads(args.threads)   # after experiments._job_init's one thread and niceness
    return run_one(spec, seed, _corpus(args), args, folder)


def main(argv=None) -> list[dict]:
    args = parser().parse_args(argv)
    command = "python results/successors.py " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None
                                                                                  else argv))
    out = Path(args.out or (OUT / "tuning" if args.tune else OUT))
    if args.report:
        runs = collect(out)
        if not runs:
            raise FileNotFoundError(f"--report: no runs under {out / '_runs'}")
        print(report(out, runs, None))
        return runs
    if not args.methods:
        raise SystemExit("--methods is required (or --report)")
    if args.tune:
        args.seeds, args.steps = [TUNING_SEED], max(1, args.steps // 4)
    if args.stop_at is not None and args.stop_at % args.eval_every:
        raise ValueError(f"--stop-at {args.stop_at} must be a multiple of --eval-every {args.eval_every}: runs stop "
                         "where they are checkpointed")
    specs = with_lrs(args.methods, Path(args.lr_from), args.seeds) if args.lr_from else args.methods
    corpus = _corpus(args)
    torch.set_num_threads(args.threads)
    probe = models.CharTransformer(corpus.vocab.size, args.context, args.width, args.layers, args.heads)
    for spec in specs:   # a bad method, option or value fails before anything trains
        make_optimizer(spec, probe, 0)
    known = collect(out)   # and so does a folder of another budget
    if known:
        check_settings(out, known[0]["settings"], settings(args, corpus), "this command has")
    tasks = [(spec, seed) for spec in dict.fromkeys(specs) for seed in dict.fromkeys(args.seeds)]
    if args.jobs:
        import concurrent.futures as cf
        import multiprocessing

        with cf.ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"),
                                    initializer=experiments._job_init, initargs=(args.nice,)) as pool:
            futures = [pool.submit(_job, spec, seed, args, experiments.run_dir(out, spec, seed))
                       for spec, seed in tasks]
            for future in futures:
                future.result()
    else:
        for spec, seed in tasks:
            run_one(spec, seed, corpus, args, experiments.run_dir(out, spec, seed))
    runs = collect(out)
    print(report(out, runs, command))
    return runs


if __name__ == "__main__":
    main()
