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


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted((ROOT / "rbdlib").rglob("*.py"))}


def _imports(path: Path) -> list[tuple[str, str | None, int]]:
    """(module, name or None, line) of every rbdlib import in ``path``, at any depth (functions too), relative
    imports resolved; ``from rbdlib.x import y`` gives ("rbdlib.x.y", None) when y is a module."""
    import ast

    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package if node.level else ""
            source = ".".join(filter(None, [base, node.module or ""]))
            if source.split(".")[0] == "rbdlib":
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    found.append((sub, None, node.lineno) if sub in MODULES else (source, alias.name, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, None, node.lineno) for a in node.names if a.name.split(".")[0] == "rbdlib"]
    return found


def _rbdlib_imports(path: Path) -> set[str]:
    """The rbdlib modules ``path`` imports."""
    return {m for m, _, _ in _imports(path)}


def _layers() -> dict[str, int]:
    """Module -> layer, from the table of ARCHITECTURE.md (the rule the import graph keeps)."""
    import re

    layers = {}
    for line in (ROOT / "ARCHITECTURE.md").read_text().splitlines():
        row = re.match(r"\| (\d+) [^|]*\| ([^|]*) \|", line)
        if row:
            for name in re.findall(r"`([\w.]+)`", row.group(2)):
                layers["rbdlib." + name] = int(row.group(1))
    return layers


def test_every_module_has_a_layer_and_imports_only_its_own_layer_or_lower_ones():
    layers, problems = _layers(), []
    unplaced = sorted(set(MODULES) - set(layers) - {"rbdlib", "rbdlib.kernels"})
    assert not unplaced, f"modules missing from ARCHITECTURE.md's table of layers: {unplaced}"
    unknown = sorted(set(layers) - set(MODULES))
    assert not unknown, f"ARCHITECTURE.md lists modules that do not exist: {unknown}"
    for module, path in MODULES.items():
        for target, name, line in _imports(path):
            where = f"{path.relative_to(ROOT)}:{line}"
            if target == "rbdlib" and module != "rbdlib.bench.process":
                problems.append(f"{where} imports the package root{f' for {name}' if name else ''}: import the module "
                                "that owns what it needs")
            elif module in layers and target in layers and layers[target] > layers[module]:
                problems.append(f"{where}: {module} (layer {layers[module]}) imports {target} (layer {layers[target]})")
            if name is not None and name.startswith("_") and target != module:
                problems.append(f"{where} imports the private name {name} of {target}")
    assert not problems, "\n".join(problems)


def test_no_module_reads_a_private_name_of_another():
    """``module._name`` on an imported rbdlib module (``cpu._words``): a back door past its interface."""
    import ast

    problems = []
    for path in MODULES.values():
        tree = ast.parse(path.read_text())
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    aliases[alias.asname or alias.name] = alias.name
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    aliases[alias.asname or alias.name.split(".")[0]] = alias.name
        imported = {a for a, target in aliases.items() if any(m == target or m.endswith("." + target) for m in MODULES)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in imported
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                problems.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value.id}.{node.attr}")
    assert not problems, "\n".join(problems)


def test_the_import_graph_has_no_cycle():
    graph = {m: {t for t, _, _ in _imports(p) if t in MODULES and t != m} for m, p in MODULES.items()}
    done, path = set(), []

    def visit(m):
        assert m not in path, f"import cycle: {' -> '.join(path[path.index(m):] + [m])}"
        if m in done:
            return
        path.append(m)
        for t in sorted(graph[m]):
            visit(t)
        path.pop()
        done.add(m)

    for m in sorted(graph):
        visit(m)


def test_the_distributed_protocol_stands_apart_from_launcher_example_cli_and_experiments():
    folder = ROOT / "rbdlib" / "distributed"
    assert _rbdlib_imports(folder / "protocol.py") == {"rbdlib.optim", "rbdlib.conventions", "rbdlib.checks"}
    assert _rbdlib_imports(folder / "launcher.py") <= {"rbdlib.checks"}
    for path in folder.glob("*.py"):  # no tie to the study: datasets, networks, experiments, results
        assert not {m for m in _rbdlib_imports(path) if _layers().get(m, 0) > _layers()["rbdlib.distributed"]}, path
    example = (ROOT / "rbdlib" / "shared_seeds.py").read_text()
    assert "rbdlib.models" in _rbdlib_imports(ROOT / "rbdlib" / "shared_seeds.py") and "nn.Linear" not in example


def test_import_rbdlib_loads_the_optimizers_not_the_study():
    code = ("import sys, rbdlib; loaded = sorted(m for m in sys.modules if m.startswith('rbdlib')); print(loaded); "
            "assert not {'rbdlib.data', 'rbdlib.models', 'rbdlib.train', 'rbdlib.experiments', 'rbdlib.viz', "
            "'rbdlib.distributed'} & set(loaded), loaded; "
            "assert rbdlib.fit is rbdlib.train.train and 'rbdlib.data' in sys.modules")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
