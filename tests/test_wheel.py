"""The Colab situation: rbdlib installed from its wheel, every notebook run from a folder outside the
repository (smoke size). Catches files the notebooks read from a checkout (../results), package data
missing from the wheel, and imports that only work from the source tree."""

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(site folder holding the installed wheel, the wheel's file names)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(REPO / "rbdlib", src / "rbdlib", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ["pyproject.toml", "README.md", "LICENSE"]:
        shutil.copy(REPO / name, src)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp / "dist"), str(src)], check=True)
    (wheel,) = (tmp / "dist").glob("rbdlib-*.whl")
    site = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True)
    return site, zipfile.ZipFile(wheel).namelist()


@pytest.mark.slow
def test_the_wheel_ships_the_packaged_results(installed):
    _, files = installed
    packaged = sorted(p.name for p in (REPO / "rbdlib" / "_results").glob("*.json"))
    assert sorted(Path(f).name for f in files if f.startswith("rbdlib/_results/")) == packaged
    assert "rbdlib/results.py" in files


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_from_the_wheel_outside_the_repository(path, installed, tmp_path, monkeypatch):
    site, _ = installed
    monkeypatch.setenv("PYTHONPATH", str(site))   # the kernel imports the wheel's copy, ahead of any checkout
    monkeypatch.setenv("RBDLIB_SMOKE", "1")
    work = tmp_path / "work"
    work.mkdir()
    assert REPO not in work.parents
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import rbdlib, json; print(json.dumps(rbdlib.__file__))"))
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()
    printed = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream")
    assert Path(json.loads(printed)).is_relative_to(site), f"the kernel imported rbdlib from {printed}"
