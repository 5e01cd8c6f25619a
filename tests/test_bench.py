"""The benchmark commands run and print complete tables (timings are reported, never asserted)."""

import re

from rbdlib import bench


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
