"""The benchmark commands run and print complete tables (timings are reported, never asserted)."""

import inspect
import re

from rbdlib import bench
from rbdlib.bench import process


def test_bases_quick_table(capsys):
    bench.main(["bases", "--quick", "--repeats", "1", "--rounds", "2"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| 20,000 |")]
    assert [r.split("|")[3].strip() for r in rows] == [
        "baseline: torch.randn + 2 matvec", "fused normal", "fused uniform", "fused rademacher"]
    memory = [float(re.sub("[^0-9.]", "", r.split("|")[7])) for r in rows]
    assert memory[0] > 3.0  # the baseline holds a 50 x 20,000 float32 matrix (3.8 MiB)
    assert rows[0].split("|")[6].strip() == "1.0x, 1.0x"


def test_step_table(capsys):
    bench.main(["step", "--repeats", "2"])
    out = capsys.readouterr().out
    names = [line.split("|")[1].strip() for line in out.splitlines() if line.startswith("| ") and "ms" not in line]
    assert names == ["torch.optim.SGD", "RBD normal d=250", "RBD uniform d=250", "RBD rademacher d=250"]


def test_all_quick_has_every_section(capsys, monkeypatch):
    monkeypatch.setattr(bench, "bases_table", lambda *args: "| bases table |")  # tested above
    bench.main(["--quick", "--repeats", "1", "--rounds", "1"])
    out = capsys.readouterr().out
    for heading in ("## Bases", "## One step", "## An RBD step while one other process", "## The machine's limit"):
        assert heading in out
    assert "| RBD rademacher d=250 |" in out and "fraction of the limit" in out
    assert "load average" in out


def test_start_table_runs(monkeypatch):
    runs = []
    monkeypatch.setattr(bench.subprocess, "run", lambda cmd, env, **kw: runs.append((env["NUMBA_CACHE_DIR"], cmd[1:])))
    table = bench.start_table(warm_runs=2)
    assert "empty compile cache" in table and "warm cache" in table and "torch alone" in table
    assert len(runs) == 5 and len({cache for cache, _ in runs}) == 1  # one temporary cache: compiled once, then loaded
    codes = [code for _, code in runs]
    assert codes[0] == codes[1] == codes[3] == bench.START and codes[2] == codes[4] == bench.START_TORCH
    # the programs are real code (rbdlib/bench/process.py): RBD in one, torch alone in the other
    source = inspect.getsource(process.first_step)
    assert "rbdlib.RBD" in source and "torch.optim.SGD" in source and bench.START[-1] == "rbdlib"
