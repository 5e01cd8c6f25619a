"""Files of a results folder, planted by someone else: links, named pipes, huge files, concurrent writers.

Every file the experiment command line writes goes through ``rbdlib._files.write`` and every file it reads
through ``rbdlib._files.read``; these tests plant what a pull request or a shared disk could carry and check
that each is refused with a clear error and that nothing outside the folder changes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rbdlib import _files, experiments
from rbdlib._files import UnsafePathError

FMNIST = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


def planted_link(tmp_path: Path) -> tuple[Path, Path]:
    victim = tmp_path / "victim.sh"
    victim.write_text("echo untouched\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").symlink_to(victim)
    return out, victim


def test_write_refuses_a_planted_link_and_leaves_its_target_alone(tmp_path):
    out, victim = planted_link(tmp_path)
    with pytest.raises(UnsafePathError, match="symbolic link"):
        _files.write(out / "results.json", "attacker's lines")
    assert victim.read_text() == "echo untouched\n"
    assert sorted(p.name for p in out.iterdir()) == ["results.json"]  # no temporary file left behind


@pytest.mark.timeout(20)
def test_fifo_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "checkpoint.pt"
    os.mkfifo(fifo)
    with pytest.raises(UnsafePathError, match="named pipe"):
        _files.read(fifo, 1000)
    with pytest.raises(UnsafePathError, match="named pipe"):
        _files.write(fifo, b"x")


def test_read_refuses_links_and_files_over_the_limit_before_reading(tmp_path):
    real = tmp_path / "run.json"
    real.write_bytes(b"{}" + b" " * 998)
    (tmp_path / "link.json").symlink_to(real)
    with pytest.raises(UnsafePathError, match="symbolic link"):
        _files.read(tmp_path / "link.json", 10_000)
    with pytest.raises(ValueError, match="1,000 bytes, more than the 999"):
        _files.read(real, 999)
    assert _files.read(real, 1000) == real.read_bytes()


def test_make_folder_refuses_a_linked_folder_on_the_way(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "_runs").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePathError, match="_runs is a symbolic link"):
        _files.make_folder(out / "_runs" / "sgd_seed0", root=out)
    assert not list(outside.iterdir())
    (out / "file").write_text("")
    with pytest.raises(UnsafePathError, match="not a folder"):
        _files.make_folder(out / "file" / "x", root=out)
    assert _files.make_folder(out / "a" / "b", root=out).is_dir()


def test_concurrent_writers_never_fail_and_never_leave_half_a_file(tmp_path):
    target = tmp_path / "table.md"
    writer = ("import sys; from pathlib import Path; from rbdlib import _files\n"
              "for i in range(150): _files.write(Path(sys.argv[1]), sys.argv[2] * 5000)")
    procs = [subprocess.Popen([sys.executable, "-c", writer, str(target), c]) for c in "ab"]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    assert target.read_text() in ("a" * 5000, "b" * 5000)
    assert [p.name for p in tmp_path.iterdir()] == ["table.md"]


def test_write_keeps_what_was_there_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    target.write_text("old")

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="no space left on the device to write .*results.json"):
        _files.write(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["results.json"]


@pytest.mark.skipif(not os.path.exists(FMNIST), reason="needs Debian's dataset-fashion-mnist (CI installs it)")
def test_the_command_line_refuses_planted_files(tmp_path):
    """A folder whose results.json is a link to a script, and one whose _runs is a link: each refused with a
    clear error before any training, the script unchanged."""
    out, victim = planted_link(tmp_path)
    with pytest.raises(UnsafePathError, match="results.json is a symbolic link"):
        experiments.main(["fc-fmnist", "--smoke", "--methods", "sgd", "--epochs", "1", "--out", str(out)])
    assert victim.read_text() == "echo untouched\n" and not (out / "_runs").exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "_runs").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(UnsafePathError, match="_runs is a symbolic link"):
        experiments.main(["fc-fmnist", "--smoke", "--methods", "sgd", "--epochs", "1", "--out", str(other)])
