"""results/successors.py, the language-model comparison, in miniature: run.json, resume bit for bit, settings
refused when they differ, learning rates chosen on a seed that is not reported, the report."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from rbdlib import experiments

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("lm_successors", ROOT / "results" / "successors.py")
lm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lm)

TINY = ["--steps", "6", "--eval-every", "2", "--eval-windows", "4", "--width", "16", "--layers", "1", "--heads", "2",
        "--context", "16", "--batch-size", "4"]
METHODS = ["adamw", "sgd:momentum=0.9,lr=0.3", "rbd:distribution=rademacher,dim=8,lr=3",
           "rbd:dim=8,momentum=0.9,memory=coordinates,redraw=2,lr=3", "fpd:dim=8"]
SUCCESSORS = ["flora:rank=2,kappa=3", "galore:rank=2,update_proj_gap=3", "golore:rank=2,update_proj_gap=3",
              "apollo-mini:update_proj_gap=3", "mezo:dim=2"]


@pytest.fixture(autouse=True)
def threads():
    """The command sets torch's thread count (one per run): give the rest of the test session its own back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def corpus(tmp_path):
    words = "the hacker wrote a kludge at three in the morning and it was crufty but it ran".split()
    path = tmp_path / "tiny.txt"
    path.write_text(" ".join(words[(i * i + 3 * i) % len(words)] for i in range(1500)) + "\n")
    return str(path)


def run(corpus, out, *extra):
    return lm.main([*TINY, "--corpus", corpus, "--out", str(out), *extra])


def losses(records):
    """What a run computed, without its timings."""
    return [{k: v for k, v in r.items() if "seconds" not in k} for r in records]


def test_a_few_steps_write_run_json_and_the_report(tmp_path, corpus):
    runs = run(corpus, tmp_path / "out", "--methods", "adamw", "rbd:dim=8", "--seeds", "0", "1")
    assert [(r["method"], r["seed"], r["status"]) for r in runs] == [("adamw", 0, "complete"), ("adamw", 1, "complete"),
                                                                     ("rbd:dim=8", 0, "complete"),
                                                                     ("rbd:dim=8", 1, "complete")]
    saved = json.loads((experiments.run_dir(tmp_path / "out", "adamw", 1) / "run.json").read_text())
    assert [r["step"] for r in saved["records"]] == [0, 2, 4, 6] and saved["records"][0]["train_loss"] is None
    assert [r["tokens"] for r in saved["records"]] == [0, 128, 256, 384]
    assert saved["settings"]["steps"] == 6 and saved["settings"]["corpus"] == "tiny.txt"
    assert saved["footprint"]["state"] > 2 * 4 * saved["D"] and saved["bytes_per_step"] == 4 * saved["D"]
    assert not (experiments.run_dir(tmp_path / "out", "adamw", 1) / "checkpoint.pt").exists()   # done: deleted
    rbd = json.loads((experiments.run_dir(tmp_path / "out", "rbd:dim=8", 0) / "run.json").read_text())
    assert rbd["footprint"]["state"] == 0
    assert rbd["bytes_per_step"] == 4 * (8 + 1 + 16)   # 8 coordinates, the flag word, one word per tensor (16)
    table = (tmp_path / "out" / "table.md").read_text()
    assert "| adamw | 2 | 6 | 384 |" in table and " ± " in table
    assert (tmp_path / "out" / "val_loss.png").stat().st_size > 1000
    assert len(json.loads((tmp_path / "out" / "results.json").read_text())["runs"]) == 4


@pytest.mark.parametrize("spec", METHODS + SUCCESSORS)
def test_a_resumed_run_computes_what_an_uninterrupted_one_does(tmp_path, corpus, spec):
    if spec in SUCCESSORS:
        pytest.importorskip("rbdlib.successors")
    whole = run(corpus, tmp_path / "whole", "--methods", spec)[0]
    run(corpus, tmp_path / "split", "--methods", spec, "--stop-at", "2")
    folder = experiments.run_dir(tmp_path / "split", spec, 0)
    stopped = json.loads((folder / "run.json").read_text())
    assert stopped["status"] == "unfinished" and stopped["records"][-1]["step"] == 2
    assert (folder / "checkpoint.pt").exists()
    resumed = run(corpus, tmp_path / "split", "--methods", spec)[0]
    assert resumed["status"] == whole["status"] == "complete"
    assert losses(resumed["records"]) == losses(whole["records"])   # bit for bit: equal floats
    assert resumed["records"][-1]["val_loss"] < resumed["records"][0]["val_loss"] or spec.startswith(("fpd", "mezo"))


def test_runs_and_folders_of_other_settings_are_refused(tmp_path, corpus):
    out = tmp_path / "out"
    run(corpus, out, "--methods", "adamw", "--stop-at", "2")
    with pytest.raises(ValueError, match="batch_size=4.*this command has batch_size=8"):
        run(corpus, out, "--methods", "adamw", "--batch-size", "8")
    other = tmp_path / "other.txt"
    other.write_text(Path(corpus).read_text().upper())
    with pytest.raises(ValueError, match="sha256="):
        run(str(other), out, "--methods", "sgd")   # a new method, but the folder is of another corpus
    with pytest.raises(ValueError, match="steps=6.*steps=8"):
        run(corpus, out, "--methods", "adamw", "--steps", "8")
    assert json.loads((experiments.run_dir(out, "adamw", 0) / "run.json").read_text())["records"][-1]["step"] == 2


def test_a_checkpoint_that_does_not_belong_to_its_run_is_refused(tmp_path, corpus):
    out = tmp_path / "out"
    run(corpus, out, "--methods", "adamw", "--seeds", "0", "1", "--stop-at", "2")
    one, two = (experiments.run_dir(out, "adamw", s) / "checkpoint.pt" for s in (0, 1))
    one.write_bytes(two.read_bytes())
    with pytest.raises(ValueError, match="belongs to 'adamw' seed 1, not 'adamw' seed 0"):
        run(corpus, out, "--methods", "adamw")


def test_bad_methods_fail_before_anything_trains(tmp_path, corpus):
    for spec, message in (("adam", "unknown method 'adam'"), ("rbd:rank=3", "rbd does not use option .rank."),
                          ("galore:rank=0", "bad value '0' for rank"), ("adamw:lr=1,lr=2", "given twice")):
        with pytest.raises(ValueError, match=message):
            run(corpus, tmp_path / "out", "--methods", "adamw", spec)
    assert not (tmp_path / "out" / "_runs").exists()
    with pytest.raises(ValueError, match="multiple of --eval-every"):
        run(corpus, tmp_path / "out", "--methods", "adamw", "--stop-at", "3")


def test_learning_rates_are_chosen_on_the_tuning_seed_only(tmp_path, corpus, capsys):
    tuning = tmp_path / "tuning"
    runs = run(corpus, tuning, "--tune", "--steps", "8", "--methods", "sgd:lr=0.001", "sgd:lr=0.3", "sgd:lr=0.03")
    assert {r["seed"] for r in runs} == {100} and {r["records"][-1]["step"] for r in runs} == {2}   # a quarter
    best = lm.best_lrs(runs)
    assert best["sgd"][0] == min(runs, key=lambda r: r["records"][-1]["val_loss"])["method"]
    assert "Best learning rate per method" in (tuning / "table.md").read_text()
    assert lm.with_lrs(["sgd", "adamw:lr=0.01"], tuning, [0, 1]) == [best["sgd"][0], "adamw:lr=0.01"]
    assert "sgd: sgd:lr=" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"seeds \[100\] were used to choose learning rates"):
        lm.with_lrs(["sgd"], tuning, [0, 100])
    with pytest.raises(ValueError, match="no complete tuning run of 'adamw'"):
        lm.with_lrs(["adamw"], tuning, [0])
    assert lm.family("sgd:momentum=0.9,lr=0.1") == lm.family("sgd:lr=0.3,momentum=0.9") == "sgd:momentum=0.9"


def test_a_diverged_run_is_recorded_and_not_resumed(tmp_path, corpus):
    runs = run(corpus, tmp_path / "out", "--methods", "sgd:lr=1e30")
    assert runs[0]["status"] == "diverged" and runs[0]["diverged_at"] <= 6
    assert not (experiments.run_dir(tmp_path / "out", "sgd:lr=1e30", 0) / "checkpoint.pt").exists()
    assert "| diverged |" in (tmp_path / "out" / "table.md").read_text()
    assert run(corpus, tmp_path / "out", "--methods", "sgd:lr=1e30")[0] == runs[0]


def test_the_budget_is_in_tokens_and_equal_for_every_method(tmp_path, corpus):
    runs = run(corpus, tmp_path / "out", "--methods", "adamw", "mezo:dim=1" if _has_successors() else "fpd:dim=4")
    assert {r["records"][-1]["tokens"] for r in runs} == {6 * 4 * 16}
    assert torch.get_num_threads() == 1   # each run on one core: CPU s/step is a cost on one core


def _has_successors() -> bool:
    return importlib.util.find_spec("rbdlib.successors") is not None
