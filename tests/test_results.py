"""rbdlib.results: the packaged copy of results/ cannot drift, and the loader never invents a point."""

import json
import subprocess
from pathlib import Path

import pytest

from rbdlib import results

REPO = Path(__file__).parents[1]


def _committed_result_sets() -> list[str]:
    """The result sets in results/: in a git checkout only those git tracks, so that runs still writing into
    an untracked folder (a long run in progress) are not yet expected in the package."""
    try:
        listed = subprocess.run(["git", "ls-files", "results/*/results.json"], cwd=REPO, capture_output=True,
                                text=True, check=True).stdout.split()
        return sorted(Path(p).parent.name for p in listed if (REPO / p).exists())
    except (OSError, subprocess.CalledProcessError):
        return sorted(p.parent.name for p in (REPO / "results").glob("*/results.json"))


def test_packaged_results_equal_the_repository_results():
    folders = _committed_result_sets()
    assert results.names() == folders, "run `python -m rbdlib.results refresh` after changing results/"
    for name in folders:
        packaged = (REPO / "rbdlib" / "_results" / f"{name}.json").read_bytes()
        assert packaged == (REPO / "results" / name / "results.json").read_bytes(), \
            f"rbdlib/_results/{name}.json differs from results/{name}/results.json: " \
            "run `python -m rbdlib.results refresh`"


def _rec(epoch, acc, train_loss=1.0):
    return dict(epoch=epoch, step=100 * epoch, train_loss=train_loss, val_loss=1.0, val_acc=acc, seconds=float(epoch))


@pytest.fixture
def packaged(tmp_path, monkeypatch):
    """A package directory with one legacy set (no status, no epoch 0) and one set of newer runs:
    two seeds of rbd (one unfinished), one of sgd, all starting from a measured epoch 0."""
    monkeypatch.setattr(results, "_packaged", lambda: tmp_path)
    legacy = {"command": "old", "runs": [dict(config="fc-fmnist", method="sgd", seed=0, D=10, coords=None,
                                             test_acc=None, records=[_rec(1, 0.7), _rec(2, 0.8)])]}
    base = dict(config="fc-fmnist", D=10, coords=5, epochs=100, test_acc=None)
    new = {"commands": ["new"], "runs": [
        dict(base, method="rbd", seed=0, status="unfinished",
             records=[_rec(0, 0.06, None), _rec(1, 0.5), _rec(2, 0.6), _rec(3, 0.65)]),
        dict(base, method="rbd", seed=1, status="unfinished",
             records=[_rec(0, 0.08, None), _rec(1, 0.52), _rec(2, 0.58)]),
        dict(base, method="sgd", seed=0, status="complete", epochs=3,
             records=[_rec(0, 0.1, None), _rec(1, 0.7), _rec(2, 0.75), _rec(3, 0.8)])]}
    (tmp_path / "legacy.json").write_text(json.dumps(legacy))
    (tmp_path / "new.json").write_text(json.dumps(new))
    return tmp_path


def test_legacy_runs_are_complete_and_start_where_they_were_measured(packaged):
    assert results.names() == ["legacy", "new"]
    (run,) = results.runs("legacy")
    assert run["status"] == "complete" and run["epochs"] == 2
    assert results.curve(run) == ([1, 2], [70.0, 80.0])   # no epoch-0 point that was never measured


def test_epoch_zero_and_partial_runs(packaged):
    rbd0 = results.runs("new")[0]
    assert results.curve(rbd0)[0] == [0, 1, 2, 3]
    assert results.final(rbd0) == (3, 65.0)
    rows = {s["method"]: s for s in results.summary("new")}
    # rbd: seed 1 reached epoch 2 only, so both seeds are compared at epoch 2, never extrapolated
    assert rows["rbd"]["epoch"] == 2 and rows["rbd"]["seeds"] == [0, 1] and rows["rbd"]["status"] == "unfinished"
    assert rows["rbd"]["mean"] == pytest.approx(59.0) and rows["rbd"]["sd"] == pytest.approx(1.4142, abs=1e-4)
    assert rows["rbd"]["target"] == 100 and rows["sgd"]["sd"] is None
    epochs, mean, sd = results.curves("new")["rbd"]
    assert epochs == [0, 1, 2] and mean == pytest.approx([7.0, 51.0, 59.0]) and len(sd) == 3
    assert results.curves([r for r in results.runs("new") if r["method"] == "rbd"]) == {"rbd": (epochs, mean, sd)}
    assert results.at_common_epoch("new") == (2, pytest.approx({"rbd": 59.0, "sgd": 75.0}))


def test_finished_and_unfinished_seeds_are_separate_rows(packaged):
    data = json.loads((packaged / "new.json").read_text())
    done = dict(data["runs"][2], seed=1)  # a second, finished sgd seed beside one still training
    data["runs"] += [done, dict(done, seed=2, status="unfinished", records=done["records"][:2])]
    (packaged / "new.json").write_text(json.dumps(data))
    rows = [(s["method"], s["epoch"], s["seeds"], s["status"]) for s in results.summary("new") if s["method"] == "sgd"]
    assert rows == [("sgd", 3, [0, 1], "complete"), ("sgd", 1, [2], "unfinished")]


def test_unknown_set_names_the_available_ones(packaged):
    with pytest.raises(KeyError, match="available: legacy, new"):
        results.load("nope")


def test_no_packaged_results_is_an_empty_list(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "_packaged", lambda: tmp_path / "missing")
    assert results.names() == []


def test_refresh_copies_and_prunes(tmp_path):
    src = tmp_path / "results"
    (src / "a").mkdir(parents=True)
    (src / "a" / "results.json").write_text('{"runs": []}')
    target = tmp_path / "pkg"
    target.mkdir()
    (target / "stale.json").write_text("{}")
    assert results.refresh(src, target) == ["a"]
    assert sorted(p.name for p in target.iterdir()) == ["a.json"]
    assert (target / "a.json").read_text() == '{"runs": []}'
    assert results.refresh(src, target, only=[]) == [] and not list(target.iterdir())


def test_cpu_seconds_per_epoch_average_the_epochs_that_recorded_them(packaged):
    runs = results.runs("new")
    runs[0]["records"][2]["cpu_seconds"] = 10.0   # a run resumed by newer code: only later epochs have it
    runs[0]["records"][3]["cpu_seconds"] = 14.0
    runs[1]["records"][2]["cpu_seconds"] = 15.0
    rows = {s["method"]: s for s in results.summarize(runs)}
    assert rows["rbd"]["cpu_per_epoch"] == pytest.approx(13.0)
    assert rows["sgd"]["cpu_per_epoch"] is None   # never measured: no number rather than a wrong one


def test_a_set_without_accuracies_is_a_clear_error_not_a_key_error(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "_packaged", lambda: tmp_path)
    lm = {"commands": ["lm"], "runs": [dict(config="lm", method="adamw", seed=0, D=10, coords=None, status="complete",
                                            records=[dict(epoch=0, step=0, val_loss=5.0), dict(epoch=1, step=50,
                                                                                             val_loss=3.0)])]}
    (tmp_path / "lm.json").write_text(json.dumps(lm))
    for read in (results.summary, results.curves):
        with pytest.raises(ValueError, match="val_loss"):
            read("lm")
    assert [r["records"][-1]["val_loss"] for r in results.runs("lm")] == [3.0]
