"""Lint the notebooks for the house conventions (nbval executes them; this checks how they are built)."""

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SEQUENCE = ["01_welcome", "02_random_subspaces", "03_fixed_projection", "04_redrawn_bases", "05_compartments",
            "06_on_demand_bases", "07_shared_seeds", "08_reproducing_the_paper", "09_memory",
            "10_where_the_idea_went"]


def _load(path):
    return json.loads(path.read_text())


def _source(cell):
    return "".join(cell["source"])


def test_the_sequence_is_complete():
    assert [p.stem for p in NOTEBOOKS] == SEQUENCE


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_conventions(path):
    nb = _load(path)
    cells = nb["cells"]
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    header = _source(cells[0])
    assert cells[0]["cell_type"] == "markdown" and header.startswith(f"# {path.stem[:2]}")
    assert f"colab.research.google.com/github/rbdlib/rbdlib/blob/main/notebooks/{path.name}" in header
    assert "mybinder.org/v2/gh/rbdlib/rbdlib/main" in header and path.name in header
    assert "What you will learn" in header and "Expected run time" in header
    code = [c for c in cells if c["cell_type"] == "code"]
    assert '"google.colab" in sys.modules' in _source(code[0])  # installs only on Colab
    assert 'SMOKE = os.environ.get("RBDLIB_SMOKE") == "1"' in _source(code[1])
    assert "device" in _source(code[1])
    text = "\n".join(_source(c) for c in cells)
    assert "sys.path" not in text, "import the installed library; no sys.path edits"
    markdown = "\n".join(_source(c) for c in cells if c["cell_type"] == "markdown")
    assert "## Summary" in markdown and "## Exercises" in markdown
    assert "$$" in markdown or path.stem == "01_welcome", "math first, as display equations"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_executed_with_clean_outputs(path):
    code = [c for c in _load(path)["cells"] if c["cell_type"] == "code"]
    counts = [c["execution_count"] for c in code]
    assert all(isinstance(n, int) for n in counts), "commit notebooks executed, with execution counts"
    assert counts == sorted(counts) and len(set(counts)) == len(counts), "run top to bottom"
    assert any(c["outputs"] for c in code)
    # nbval compares the outputs of cells tagged nbval-check-output (cell metadata, out of the learner's way);
    # the equivalent `# NBVAL_CHECK_OUTPUT` comment would sit in the code learners read
    checked = [c for c in code if "nbval-check-output" in c["metadata"].get("tags", [])]
    assert 2 <= len(checked), "a few cells per notebook print deterministic values that CI compares"
    assert not any("NBVAL_" in _source(c) for c in code), "use the nbval-check-output tag, not a comment marker"
    for cell in code:
        for out in cell["outputs"]:
            assert out["output_type"] != "error", f"an error is committed in {path.name}"
            data = out.get("data", {})
            assert "image/svg+xml" not in data, "PNG figures only"
    for cell in checked:
        printed = json.dumps(cell["outputs"])
        assert not re.search(r"0x[0-9a-f]{6,}", printed) or "philox" in _source(cell).lower(), \
            "no memory addresses in checked outputs"
        assert not re.search(r"\b(ms|seconds?|s/step)\b", printed), "no timings in checked outputs"


# ---------------------------------------------------------------- exercises and their solutions
def _exercises(cells):
    """The numbers of the exercises listed under '## Exercises' (a numbered Markdown list)."""
    markdown = "\n".join(_source(c) for c in cells if c["cell_type"] == "markdown")
    listed = markdown.split("## Exercises", 1)[1].split("\n## ", 1)[0]
    return [int(n) for n in re.findall(r"^(\d+)\. ", listed, flags=re.M)]


def _solutions(cells):
    return [(i, c) for i, c in enumerate(cells) if "solution" in c.get("metadata", {}).get("tags", [])]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_exercise_has_a_solution_cell_that_says_what_to_expect(path):
    """Solutions are code, tagged `solution`, first line `# Solution k: ...`, one per exercise, in order; the
    Markdown cell just above each says what the reader should see, with a number."""
    cells = _load(path)["cells"]
    exercises, solutions = _exercises(cells), _solutions(cells)
    assert exercises == list(range(1, len(exercises) + 1)) and exercises, "a numbered list of exercises"
    assert [int(re.match(r"# Solution (\d+):", _source(c)).group(1)) for _, c in solutions] == exercises
    for i, cell in solutions:
        assert cell["cell_type"] == "code"
        prose = _source(cells[i - 1])
        expect = re.split(r"you\s+should\s+see", prose, maxsplit=1, flags=re.I)
        assert cells[i - 1]["cell_type"] == "markdown" and len(expect) == 2, \
            f"the text above solution {_source(cell).splitlines()[0]!r} says what to expect"
        assert re.search(r"\d", expect[1]), "with the number to expect"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_solution_runs_in_smoke_mode(path, monkeypatch):
    """Execute the notebook with RBDLIB_SMOKE=1 (the solutions need the cells above them) and fail if any cell,
    a solution in particular, raises."""
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    monkeypatch.setenv("RBDLIB_SMOKE", "1")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute()
    except CellExecutionError as error:
        failing = [c.source.splitlines()[0] for c in nb.cells if c.cell_type == "code"
                   and any(o.get("output_type") == "error" for o in c.get("outputs", []))]
        pytest.fail(f"{path.name}: a cell raised in smoke mode ({failing}): {str(error)[-2000:]}")
    for i, cell in _solutions(nb.cells):
        assert cell.execution_count is not None, f"solution cell {i} of {path.name} did not run"
