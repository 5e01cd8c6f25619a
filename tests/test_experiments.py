"""The experiment CLI end to end in smoke size: files, columns, resume after an interruption."""

import csv
import json

import pytest

from rbdlib import experiments

FMNIST = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
pytestmark = pytest.mark.skipif(not __import__("os").path.exists(FMNIST),
                                reason="needs Debian's dataset-fashion-mnist (CI installs it)")


def _run(tmp_path, name, *extra):
    return experiments.main(["fc-fmnist", "--smoke", "--out", str(tmp_path / name), *extra])


def test_cli_writes_results_with_the_right_columns(tmp_path):
    _run(tmp_path, "a", "--methods", "sgd", "rbd", "nes", "rbd:distribution=rademacher,compartments=layer",
         "--epochs", "1")
    out = tmp_path / "a"
    for name in ("results.json", "results.csv", "table.md", "accuracy.png", "command.txt"):
        assert (out / name).stat().st_size > 0, name
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert list(rows[0]) == ["config", "method", "seed", "epoch", "step", "train_loss", "val_loss", "val_acc",
                             "seconds"]
    assert [r["method"] for r in rows] == ["sgd", "rbd", "nes", "rbd:distribution=rademacher,compartments=layer"]
    runs = json.load(open(out / "results.json"))["runs"]
    assert runs[1]["coords"] == 20 and runs[3]["coords"] == 40  # smoke d = 20; two layers
    table = (out / "table.md").read_text()
    assert "| rbd | 20 |" in table and "85.65" in table  # our numbers beside the paper's
    assert not list(out.glob("*.tmp"))  # atomic writes leave no temporaries


def test_resume_after_interruption_gives_the_same_numbers(tmp_path, monkeypatch):
    whole = _run(tmp_path, "whole", "--methods", "rbd", "--epochs", "2")["runs"][0]["records"]
    real_train, calls = experiments.train, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed during the second epoch
        return real_train(*args, **kwargs)

    monkeypatch.setattr(experiments, "train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, "cut", "--methods", "rbd", "--epochs", "2")
    monkeypatch.setattr(experiments, "train", real_train)
    resumed = _run(tmp_path, "cut", "--methods", "rbd", "--epochs", "2")["runs"][0]["records"]
    assert len(resumed) == len(whole) == 2
    for a, b in zip(whole, resumed):
        assert (a["step"], a["train_loss"], a["val_loss"], a["val_acc"]) == \
               (b["step"], b["train_loss"], b["val_loss"], b["val_acc"])


def test_bad_method_fails_before_training(tmp_path):
    with pytest.raises(ValueError, match="unknown method 'adam'"):
        _run(tmp_path, "bad", "--methods", "rbd", "adam")
    with pytest.raises(ValueError, match="bad option"):
        experiments.parse_method("rbd:colour=blue")
    assert not (tmp_path / "bad").exists()


def test_cli_runs_distributed_under_torchrun(tmp_path):
    import subprocess
    import sys

    from rbdlib.distributed import free_port

    out = tmp_path / "dist"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(free_port()), "-m", "rbdlib.experiments", "fc-fmnist", "--methods", "rbd",
           "--smoke", "--epochs", "1", "--scheme", "independent", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = json.load(open(out / "results.json"))["runs"]
    assert runs[0]["coords"] == 20 and len(runs[0]["records"]) == 1
