"""The experiment CLI end to end in smoke size: files, columns, resume after an interruption."""

import csv
import json
import math
import os
import subprocess
import sys

import pytest
import torch

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
                             "seconds", "cpu_seconds"]
    assert [r["cpu_seconds"] == "" for r in rows] == [True, False] * 4  # epoch 0 trains nothing
    methods = ["sgd", "rbd", "rbd:distribution=rademacher,compartments=layer", "nes"]  # the paper's method order
    assert [r["method"] for r in rows] == [m for m in methods for _ in range(2)]  # epoch 0, epoch 1
    assert [r["epoch"] for r in rows] == ["0", "1"] * 4
    runs = json.load(open(out / "results.json"))["runs"]
    assert runs[1]["coords"] == 20 and runs[2]["coords"] == 40  # smoke d = 20; two layers
    assert {r["status"] for r in runs} == {"complete"}
    table = (out / "table.md").read_text()
    assert "| rbd | 101,770 | 20 | 1 | 1 |" in table and "85.65" in table  # our numbers beside the paper's
    assert not list(out.rglob("*.tmp")) and not list(out.rglob("checkpoint.pt"))  # finished runs keep no checkpoint


def test_writing_the_plot_leaves_a_notebooks_matplotlib_alone(tmp_path):
    # a notebook that runs the command and then draws with pyplot must still see its figures (the command used to
    # switch the backend to Agg, after which plt.show() in the notebook showed nothing)
    import matplotlib
    import matplotlib.pyplot as plt

    before = matplotlib.get_backend()
    try:
        matplotlib.use("svg")
        own = plt.figure()
        _run(tmp_path, "plot", "--methods", "sgd", "--epochs", "1")
        assert (tmp_path / "plot" / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert matplotlib.get_backend() == "svg" and plt.get_fignums() == [own.number]
    finally:
        plt.close("all")
        matplotlib.use(before)


def test_every_history_starts_from_the_measured_initial_weights(tmp_path):
    from rbdlib import models
    from rbdlib.train import evaluate

    run = _run(tmp_path, "start", "--methods", "sgd", "--epochs", "1")["runs"][0]
    first = run["records"][0]
    ds = experiments._smoke(experiments.datasets.load_dataset("fashion-mnist"))
    loss, acc = evaluate(models.build("fc", ds, seed=0), ds.val_x, ds.val_y)
    assert (first["epoch"], first["step"], first["train_loss"]) == (0, 0, None)
    assert (first["val_loss"], first["val_acc"]) == (loss, acc)


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
    assert len(resumed) == len(whole) == 3  # epochs 0, 1, 2
    for a, b in zip(whole, resumed):
        assert (a["step"], a["train_loss"], a["val_loss"], a["val_acc"]) == \
               (b["step"], b["train_loss"], b["val_loss"], b["val_acc"])


def test_cosine_decay_sets_each_epochs_lr_and_resumes_on_its_schedule(tmp_path, monkeypatch):
    real, seen = experiments.train, []

    def spy(model, opt, *a, **k):   # the lr the optimizer holds as each epoch starts; the second epoch is cut
        seen.append(getattr(opt, "optimizer", opt).param_groups[0]["lr"])
        if len(seen) == 2:
            raise KeyboardInterrupt
        return real(model, opt, *a, **k)

    monkeypatch.setattr(experiments, "train", spy)
    spec = "rbd:distribution=rademacher,decay=cosine,lr=0.4"
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, "d", "--methods", spec, "--epochs", "2")   # (--smoke allows at most 2)
    with pytest.raises(ValueError, match="decays over them: --epochs 1 would change its schedule"):
        _run(tmp_path, "d", "--methods", spec, "--epochs", "1")
    runs = _run(tmp_path, "d", "--methods", spec, "--epochs", "2")["runs"]   # resumes from the epoch-1 checkpoint
    cosine = [0.4 * (1 + math.cos(math.pi * e / 2)) / 2 for e in (0, 1, 1)]   # 0.4, then 0.2 twice
    assert seen == pytest.approx(cosine, rel=1e-12) and runs[0]["status"] == "complete"
    assert experiments.make_optimizer("sgd", {"decay": "cosine", "lr": 0.3}, torch.nn.Linear(2, 2),
                                      experiments.PAPER["fc-fmnist"], None).param_groups[0]["lr"] == 0.3


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
    assert runs[0]["coords"] == 20 and [r["epoch"] for r in runs[0]["records"]] == [0, 1]


def test_unfinished_runs_resume_from_a_checkpoint_in_a_later_process(tmp_path):
    """What a later session sees: run.json marked unfinished and a checkpoint; the same command finishes it."""
    first = _run(tmp_path, "later", "--methods", "rbd:distribution=rademacher", "--epochs", "1")["runs"][0]
    folder = experiments.run_dir(tmp_path / "later", "rbd:distribution=rademacher", 0)
    assert first["status"] == "complete" and not (folder / "checkpoint.pt").exists()
    # a fresh 2-epoch command in the same place refuses to mix budgets
    with pytest.raises(ValueError, match="complete run of 1 epochs, not 2"):
        _run(tmp_path, "later", "--methods", "rbd:distribution=rademacher", "--epochs", "2")
    whole = _run(tmp_path, "whole2", "--methods", "rbd:distribution=rademacher", "--epochs", "2")["runs"][0]
    real_train = experiments.train
    calls = []

    def stop_in_epoch_two(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_train(*args, **kwargs)

    experiments.train = stop_in_epoch_two
    try:
        with pytest.raises(KeyboardInterrupt):
            _run(tmp_path, "cut2", "--methods", "rbd:distribution=rademacher", "--epochs", "2")
    finally:
        experiments.train = real_train
    folder = experiments.run_dir(tmp_path / "cut2", "rbd:distribution=rademacher", 0)
    saved = json.loads((folder / "run.json").read_text())
    assert saved["status"] == "unfinished" and [r["epoch"] for r in saved["records"]] == [0, 1]
    assert (folder / "checkpoint.pt").exists()
    table = (tmp_path / "cut2" / "table.md").read_text()
    assert "unfinished (target 2 epochs)" in table  # partial tables say how far they got
    resumed = subprocess.run([sys.executable, "-m", "rbdlib.experiments", "fc-fmnist", "--smoke", "--methods",
                              "rbd:distribution=rademacher", "--epochs", "2", "--out", str(tmp_path / "cut2")],
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    done = json.loads((folder / "run.json").read_text())
    assert done["status"] == "complete" and not (folder / "checkpoint.pt").exists()
    assert [(r["step"], r["val_loss"], r["val_acc"]) for r in done["records"]] == \
           [(r["step"], r["val_loss"], r["val_acc"]) for r in whole["records"]]


def test_checkpoints_load_without_running_code_and_are_checked(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"model": Payload()}, folder / "evil.pt")
    with pytest.raises(ValueError, match="cannot load checkpoint .* safely"):
        experiments.load_checkpoint(folder / "evil.pt", "sgd", 0)
    assert not marker.exists()
    torch.save({"model": {}}, folder / "odd.pt")
    with pytest.raises(ValueError, match="not an rbdlib run checkpoint"):
        experiments.load_checkpoint(folder / "odd.pt", "sgd", 0)
    good = {"format": "rbdlib-run-1", "method": "sgd", "seed": 0, "epochs": 1, "model": {}, "optimizer": {},
            "records": [{"epoch": 0}, {"epoch": 1}]}
    torch.save(good, folder / "good.pt")
    assert experiments.load_checkpoint(folder / "good.pt", "sgd", 0)["epochs"] == 1
    with pytest.raises(ValueError, match="belongs to 'sgd' seed 0"):
        experiments.load_checkpoint(folder / "good.pt", "rbd", 0)


def test_a_checkpoint_that_unpacks_beyond_its_limit_is_refused_before_loading(tmp_path):
    # a 2 MB zip whose compressed tensor record unpacks to 256 MB (a bomb): refused by its declared sizes
    import zipfile
    torch.save({"x": torch.zeros(4)}, tmp_path / "plain.pt")
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(tmp_path / "plain.pt") as src, zipfile.ZipFile(bomb, "w") as dst:
        for entry in src.infolist():
            data = src.read(entry)
            if entry.filename.endswith("/data/0"):
                data = bytes(256 * 2**20)
            dst.writestr(entry.filename, data, compress_type=zipfile.ZIP_DEFLATED)
    assert bomb.stat().st_size < 2**21
    with pytest.raises(ValueError, match=r"unpacks to 268,4\d\d,\d+ bytes, more than the 67,108,864"):
        experiments.load_checkpoint(bomb, "sgd", 0, limit=64 * 2**20)


@pytest.mark.parametrize("spec, match", [
    ("sgd:compartments=../../../../escaped", "sgd does not use option 'compartments'"),
    ("rbd:compartments=../../escaped", "bad value '../../escaped' for compartments"),
    ("sgd:dim=5", "sgd does not use option 'dim'"),
    ("fpd:redraw=5", "fpd does not use option 'redraw'"),
    ("nes:redraw=5", "nes does not use option 'redraw'"),
    ("rbd:dim=abc", "bad value 'abc' for dim"),
    ("rbd:dim=0", "bad value '0' for dim"),
    ("rbd:split_dim=false,split_dim=true", "given twice"),
    ("rbd:split_dim=maybe", "bad value 'maybe' for split_dim"),
    ("rbd:lr=inf", "bad value 'inf' for lr"),
    ("rbd:lr=-1", "bad value '-1' for lr"),
    ("nes:sigma=0", "bad value '0' for sigma"),
    ("rbd:distribution=cauchy", "bad value 'cauchy' for distribution"),
    ("rbd:width=0", "bad value '0' for width"),
    ("rbd:momentum=1", "bad value '1' for momentum"),
    ("sgd:nesterov=true", "Nesterov momentum requires a momentum"),
    ("rbd:nesterov=true", "nesterov"),
    ("nes:momentum=0.9", "nes does not use option 'momentum'"),
    ("sgd:decay=linear", "bad value 'linear' for decay in 'sgd:decay=linear': expected cosine"),
])
def test_bad_options_fail_before_any_run_and_write_nothing(tmp_path, spec, match):
    with pytest.raises(ValueError, match=match):
        _run(tmp_path, "bad", "--methods", "sgd", spec, "--epochs", "1")
    assert not (tmp_path / "bad").exists() and not (tmp_path.parent / "escaped").exists()


def test_options_mean_what_they_say():
    assert experiments.parse_method("rbd:split_dim=false")[1] == {"split_dim": False}
    model = torch.nn.Linear(3, 2)
    args = experiments.parser().parse_args(["fc-fmnist"])
    opt = experiments.make_optimizer("rbd", {"lr": 0.0}, model, experiments.PAPER["fc-fmnist"], args)
    assert opt.param_groups[0]["lr"] == 0.0  # lr=0 is honoured, not replaced by the paper's
    nes = experiments.make_optimizer("nes", {"shared_batch": True}, model, experiments.PAPER["fc-fmnist"], args)
    assert nes.param_groups[0]["lr"] == 0.5 and nes.shared_batch and nes.sigma == 0.01
    sgd = experiments.make_optimizer("sgd", {"momentum": 0.9, "nesterov": True}, model,
                                     experiments.PAPER["fc-fmnist"], args)
    assert sgd.param_groups[0]["momentum"] == 0.9 and sgd.param_groups[0]["nesterov"]
    spec = "rbd:momentum=0.5,weight_decay=0.01,memory=coordinates,adaptive=0.99,redraw=10"
    rbd = experiments.make_optimizer("rbd", experiments.parse_method(spec)[1], model, experiments.PAPER["fc-fmnist"],
                                     args)
    assert (rbd.rule.momentum, rbd.rule.nesterov, rbd.rule.memory, rbd.rule.adaptive, rbd.weight_decay,
            rbd.redraw) == (0.5, False, "coordinates", 0.99, 0.01, 10)


def test_run_folders_stay_inside_out_and_differ_per_spec(tmp_path):
    specs = ["rbd:lr=0.5", "rbd:lr=0_5", "sgd:lr=../../x", "rbd:compartments=layer,split_dim=true"]
    folders = [experiments.run_dir(tmp_path, spec, 0) for spec in specs]
    assert len(set(folders)) == len(specs)
    assert all(f.resolve().parent == (tmp_path / "_runs").resolve() for f in folders)


def test_jobs_run_in_parallel_processes_with_one_thread_at_low_priority(tmp_path):
    out = _run(tmp_path, "jobs", "--methods", "sgd", "rbd:distribution=rademacher", "--epochs", "1",
               "--jobs", "2", "--nice", "5")
    serial = _run(tmp_path, "serial", "--methods", "sgd", "rbd:distribution=rademacher", "--epochs", "1")
    assert [r["method"] for r in out["runs"]] == ["sgd", "rbd:distribution=rademacher"]
    for a, b in zip(out["runs"], serial["runs"]):  # the same runs; one thread sums in another order than two
        assert [r["step"] for r in a["records"]] == [r["step"] for r in b["records"]]
        assert [r["val_loss"] for r in a["records"]] == pytest.approx([r["val_loss"] for r in b["records"]], rel=1e-4)
    assert json.load(open(tmp_path / "jobs" / "results.json"))["runs"][1]["status"] == "complete"
    for r in out["runs"]:  # one thread: a worker's CPU time per epoch cannot exceed the epoch's wall time
        for before, rec in zip(r["records"], r["records"][1:]):
            assert 0 < rec["cpu_seconds"] <= rec["seconds"] - before["seconds"] + 0.2
    assert "| CPU s/epoch |" in (tmp_path / "jobs" / "table.md").read_text()
    with pytest.raises(SystemExit):
        experiments.main(["fc-fmnist", "--jobs", "0"])


def test_commands_sharing_a_folder_share_its_table(tmp_path):
    """More seeds of one method and another method, from two commands, end up in one table."""
    _run(tmp_path, "shared", "--methods", "sgd", "--seeds", "0", "1", "--epochs", "1")
    both = _run(tmp_path, "shared", "--methods", "rbd", "--epochs", "1")
    assert [(r["method"], r["seed"]) for r in both["runs"]] == [("sgd", 0), ("sgd", 1), ("rbd", 0)]
    saved = json.load(open(tmp_path / "shared" / "results.json"))
    assert len(saved["commands"]) == 2 and len(saved["runs"]) == 3
    table = (tmp_path / "shared" / "table.md").read_text()
    assert "| sgd | 101,770 | 101,770 | 1 | 2 |" in table and "| rbd | 101,770 | 20 | 1 | 1 |" in table
    _run(tmp_path, "shared", "--methods", "rbd:lr=0.1", "--epochs", "1")
    # rows keep their places whichever command writes: methods in the paper's order, variants as they came
    again = _run(tmp_path, "shared", "--methods", "rbd:lr=0.1", "sgd", "--seeds", "0", "--report")
    assert [(r["method"], r["seed"]) for r in again["runs"]] == [("sgd", 0), ("sgd", 1), ("rbd", 0), ("rbd:lr=0.1", 0)]


def test_width_sweeps_the_fc_network_in_one_folder(tmp_path):
    runs = _run(tmp_path, "width", "--methods", "sgd", "sgd:width=32", "--epochs", "1")["runs"]
    assert [r["D"] for r in runs] == [101_770, 784 * 32 + 32 + 32 * 10 + 10]
    with pytest.raises(ValueError, match="width sets the hidden units of the fc network"):
        experiments.main(["cnn-fmnist", "--smoke", "--methods", "sgd:width=32", "--out", str(tmp_path / "cnn")])


def test_report_rewrites_the_tables_without_training(tmp_path, monkeypatch):
    _run(tmp_path, "rep", "--methods", "sgd", "--epochs", "1")
    (tmp_path / "rep" / "table.md").unlink()
    monkeypatch.setattr(experiments, "train", lambda *a, **k: pytest.fail("--report must not train"))
    runs = _run(tmp_path, "rep", "--methods", "sgd", "--epochs", "1", "--report")["runs"]
    assert len(runs) == 1 and "| sgd |" in (tmp_path / "rep" / "table.md").read_text()
    with pytest.raises(FileNotFoundError, match="no runs"):
        _run(tmp_path, "empty", "--report")


def test_augmentation_ablations_change_only_what_they_name():
    x = torch.rand(64, 1, 28, 28) + 1.0  # every pixel in [1, 2): zero padding is the only source of a 0
    args = lambda *a: experiments.parser().parse_args(["fc-fmnist", *a]).augment  # noqa: E731
    assert (args(), args("--no-augment"), args("--augment", "crop-only")) == ("paper", "none", "crop-only")
    assert experiments.augmentation("none", "fashion-mnist") is None
    crop = experiments.augmentation("crop-only", "fashion-mnist")(x, torch.Generator().manual_seed(0))
    paper = experiments.augmentation("paper", "fashion-mnist")(x, torch.Generator().manual_seed(0))
    kept = crop[crop > 0]  # crop-only: pixels of the image or padding, never shifted
    assert torch.isin(kept, x).all() and (crop == 0).any()
    assert not torch.isin(paper[paper.abs() > 0.5], x).all()  # the paper's adds a brightness shift per image
    assert experiments.augmentation("paper", "cifar10") is experiments.datasets.augment_cifar


def test_a_diverging_run_is_recorded_and_the_next_one_runs(tmp_path):
    """rbd at lr 1e30: its gradient turns non-finite, RBD refuses the step, the run is recorded as diverged
    (status and epoch in run.json and the table) and sgd still runs; --stop-on-divergence stops instead."""
    runs = _run(tmp_path, "div", "--methods", "rbd:lr=1e30", "sgd", "--epochs", "2")["runs"]
    status = {r["method"]: (r["status"], r["records"][-1]["epoch"]) for r in runs}
    assert status == {"rbd:lr=1e30": ("diverged", 1), "sgd": ("complete", 2)}
    with pytest.raises(FloatingPointError, match="diverged in epoch 1.*--stop-on-divergence"):
        _run(tmp_path, "stop", "--methods", "rbd:lr=1e30", "sgd", "--epochs", "2", "--stop-on-divergence")
    assert not list((tmp_path / "stop" / "_runs").glob("sgd*"))


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_jobs_workers_end_with_their_parent(tmp_path):
    """SIGKILL the --jobs parent mid-run: its workers stop too, instead of training on into --out."""
    import signal
    import time

    parent = subprocess.Popen([sys.executable, "-m", "rbdlib.experiments", "fc-fmnist", "--methods", "sgd",
                               "--seeds", "0", "1", "--jobs", "2", "--epochs", "3", "--out", str(tmp_path / "j")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def children() -> list[int]:
        found = []
        for stat in __import__("glob").glob("/proc/[0-9]*/stat"):
            try:
                fields = open(stat).read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent.pid:
                found.append(int(stat.split("/")[2]))
        return found

    deadline = time.time() + 120
    while len(children()) < 3 and time.time() < deadline:  # the pool's 2 workers and its resource tracker
        time.sleep(0.5)
    workers = children()
    assert len(workers) >= 2, "the workers did not start"
    time.sleep(3)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 20
    alive = lambda: [w for w in workers if os.path.exists(f"/proc/{w}") and "Z" not in open(f"/proc/{w}/stat").read().rsplit(")", 1)[1].split()[0]]  # noqa: E501, E731
    while alive() and time.time() < deadline:
        time.sleep(0.5)
    assert not alive(), "workers kept running after their parent was killed"


def test_the_command_exits_0_when_it_succeeds(tmp_path):
    """`rbdlib-experiment` as a shell sees it: status 0 after a complete run (a script with `set -e` goes on)."""
    command = [os.path.join(os.path.dirname(sys.executable), "rbdlib-experiment"), "fc-fmnist", "--smoke",
               "--methods", "sgd", "--epochs", "1", "--out", str(tmp_path / "cli")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| sgd |" in done.stdout


def test_a_run_is_its_settings(tmp_path):
    """Resuming or re-reporting with other settings is an error naming both values, with nothing changed; a
    folder whose seeds of one method were trained differently cannot become one table row."""
    _run(tmp_path, "s", "--methods", "sgd", "--epochs", "1")
    folder = experiments.run_dir(tmp_path / "s", "sgd", 0)
    before = (folder / "run.json").read_bytes()
    with pytest.raises(ValueError, match=r"trained with batch_size=32, this command has batch_size=64"):
        _run(tmp_path, "s", "--methods", "sgd", "--epochs", "1", "--batch-size", "64")
    with pytest.raises(ValueError, match=r"augment='paper', this command has augment='none'"):
        _run(tmp_path, "s", "--methods", "sgd", "--epochs", "1", "--augment", "none")
    assert (folder / "run.json").read_bytes() == before
    other = experiments.run_dir(tmp_path / "s", "sgd", 1)  # a seed trained with another batch size
    other.mkdir()
    run = json.loads(before)
    run["seed"], run["settings"]["batch_size"] = 1, 64
    (other / "run.json").write_text(json.dumps(run))
    with pytest.raises(ValueError, match=r"sgd seed 1 was trained with batch_size=64, seed 0 has batch_size=32"):
        _run(tmp_path, "s", "--methods", "sgd", "--epochs", "1", "--report")


def test_a_smaller_epochs_cannot_end_an_unfinished_run(tmp_path, monkeypatch):
    real, calls = experiments.train, []

    def interrupted(*a, **k):  # the second epoch is interrupted: the run stays unfinished at epoch 1 of 2
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(experiments, "train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, "u", "--methods", "sgd", "--epochs", "2")
    monkeypatch.setattr(experiments, "train", real)
    with pytest.raises(ValueError, match="unfinished run of 2 epochs: --epochs 1 would end it early"):
        _run(tmp_path, "u", "--methods", "sgd", "--epochs", "1")
    runs = _run(tmp_path, "u", "--methods", "sgd", "--epochs", "2")["runs"]
    assert runs[0]["status"] == "complete" and runs[0]["records"][-1]["epoch"] == 2
