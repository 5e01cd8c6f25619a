"""Package shape: the library imports and trains without the [notebooks] extra; the public API."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tomllib

import rbdlib

ROOT = Path(__file__).resolve().parents[1]
EXTRA = ("matplotlib", "ipywidgets", "tqdm", "sklearn")

WITHOUT_EXTRA = f"""
import importlib.machinery, sys
find = importlib.machinery.PathFinder.find_spec  # as if the extra were not installed: not found on sys.path
importlib.machinery.PathFinder.find_spec = classmethod(
    lambda cls, name, path=None, target=None: None if name.split(".")[0] in {EXTRA!r} else find(name, path, target))
import torch, rbdlib, rbdlib.optim, rbdlib.subspace, rbdlib.data, rbdlib.train, rbdlib.models
import rbdlib.distributed, rbdlib.experiments
from rbdlib.data import Dataset
g = torch.Generator().manual_seed(0)
x, y = torch.rand(64, 1, 4, 4, generator=g), torch.randint(0, 2, (64,), generator=g)
ds = Dataset(x[:48], y[:48], x[48:], y[48:], x[:0], y[:0], "toy", ("a", "b"), "memory")
model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
h = rbdlib.fit(model, rbdlib.RBD(model.parameters(), lr=0.5, dim=4), ds, epochs=2, progress=True)
assert len(h.records) == 3, h.records
try:
    rbdlib.data.load_dataset("digits")
except ImportError as error:
    assert "rbdlib[notebooks]" in str(error), error
else:
    raise AssertionError("digits loaded without scikit-learn")
print("imported without", sorted(set(sys.modules) & set({EXTRA!r})))
"""


def test_the_library_imports_and_trains_without_the_notebooks_extra():
    run = subprocess.run([sys.executable, "-c", WITHOUT_EXTRA], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "imported without []" in run.stdout
    assert "train: 2/" in run.stderr  # the plain progress fallback reports each evaluation


def test_core_dependencies_are_torch_numpy_numba_and_the_rest_is_an_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = sorted(d.split(">")[0].split("=")[0].strip() for d in project["dependencies"])
    assert core == ["numba", "numpy", "torch"]
    notebooks = {d.split(">")[0].strip() for d in project["optional-dependencies"]["notebooks"]}
    assert {"matplotlib", "ipywidgets", "tqdm", "scikit-learn"} <= notebooks


def test_public_api_lists_functions_and_classes_and_modules_stay_modules():
    import types

    assert all(not isinstance(getattr(rbdlib, name), types.ModuleType) for name in rbdlib.__all__)
    assert {"RBD", "FPD", "NES", "replay", "FixedSubspace", "RandomBases", "philox4x32", "fit"} <= set(rbdlib.__all__)
    import rbdlib.train as train_module
    from rbdlib.train import train

    assert isinstance(rbdlib.train, types.ModuleType) and rbdlib.train is train_module
    assert rbdlib.fit is train is train_module.train


def _rbdlib_imports(path: Path) -> set[str]:
    """The rbdlib modules ``path`` imports (relative imports resolved against its package)."""
    import ast

    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(filter(None, [base, node.module or ""]))
            found |= {module} if node.module else {f"{module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m.startswith("rbdlib")}


def test_the_distributed_protocol_stands_apart_from_launcher_example_cli_and_experiments():
    folder = ROOT / "rbdlib" / "distributed"
    assert _rbdlib_imports(folder / "protocol.py") == {"rbdlib.optim", "rbdlib.bases"}
    assert _rbdlib_imports(folder / "launcher.py") <= {"rbdlib.set_threads"}
    for path in folder.glob("*.py"):  # no tie back to the experiment modules
        assert not {m for m in _rbdlib_imports(path) if m.startswith(("rbdlib.experiments", "rbdlib.results"))}, path
    example = (folder / "example.py").read_text()
    assert "rbdlib.models" in _rbdlib_imports(folder / "example.py") and "nn.Linear" not in example
