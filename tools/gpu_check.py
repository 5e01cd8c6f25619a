"""Check and time rbdlib's whole GPU path in one call, on a machine with a CUDA GPU and CuPy.

    python tools/gpu_check.py            # from the repository root; about 2-5 minutes on a data-centre GPU

1. the environment: GPU, torch, CuPy, and ``rbdlib.gpu_available()`` (must be True);
2. every ``gpu`` test (``pytest -m gpu tests``): each must pass, none may be skipped;
3. ``python -m rbdlib.bench gpu``: the kernels against the CPU, entries/s and peak memory against
   ``torch.randn`` + matvec at the paper's size and at D = 1e7, d = 1e3;
4. notebook 06 in full (``RBDLIB_SMOKE`` unset, ``device = cuda``): its code cells run in order in one
   process, the way a kernel would run them (IPython magics dropped, figures to Agg).

It prints one summary at the end and exits non-zero if any step failed. Nothing here runs in CI (CI has no
GPU); what the CPU-only CI checks of the CUDA path instead is listed in the README. The script runs with the
python it is started with and needs torch (a CUDA build), CuPy, numba and pytest there; rbdlib is taken
from this checkout (PYTHONPATH), so nothing has to be installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
ENV.pop("RBDLIB_SMOKE", None)


def step(name: str, command: list[str], timeout: int) -> tuple[str, bool, float, str]:
    print(f"\n=== {name}: {' '.join(command)}", flush=True)
    start = time.perf_counter()
    try:
        out = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)
        ok, text = out.returncode == 0, out.stdout + out.stderr
    except subprocess.TimeoutExpired as e:
        ok, text = False, f"timed out after {timeout} s\n{e.stdout or ''}"
    print(text[-6000:], flush=True)
    return name, ok, time.perf_counter() - start, text


def notebook_cells(path: Path) -> str:
    """The code cells of a notebook as one script (IPython magics and shell lines become ``pass``)."""
    def line(text: str) -> str:
        body = text.lstrip()
        return text[:len(text) - len(body)] + "pass" if body.startswith(("%", "!")) else text

    cells = json.loads(path.read_text())["cells"]
    code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    return "\n\n".join("\n".join(map(line, cell.splitlines())) for cell in code)


def main() -> int:
    results = [step("environment", [sys.executable, "-c", (
        "import torch, cupy, rbdlib; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0),"
        " 'cupy', cupy.__version__, 'gpu_available', rbdlib.gpu_available());"
        " assert rbdlib.gpu_available(), 'rbdlib cannot use the GPU'")], 120)]
    tests = step("gpu tests", [sys.executable, "-m", "pytest", "-m", "gpu", "tests", "-q", "-rs",
                               "-p", "no:cacheprovider"], 300)
    last = tests[3].strip().splitlines()[-1:] or [""]
    if "skipped" in last[0]:  # a skipped GPU test on a GPU machine is a failure
        tests = (tests[0], False, tests[2], tests[3])
    results.append(tests)
    results.append(step("gpu benchmark", [sys.executable, "-m", "rbdlib.bench", "gpu"], 300))
    notebook = next(ROOT.glob("notebooks/06_*.ipynb"))
    script = ROOT / "build" / "gpu_check_06.py"
    script.parent.mkdir(exist_ok=True)
    script.write_text("import matplotlib\nmatplotlib.use('Agg')\ndisplay = print\n" + notebook_cells(notebook))
    results.append(step(f"{notebook.name} in full", [sys.executable, str(script)], 600))
    print("\n=== summary")
    for name, ok, seconds, text in results:
        last = text.strip().splitlines()[-1] if text.strip() else ""
        print(f"{'PASS' if ok else 'FAIL'}  {name:28s} {seconds:7.1f} s  {last[:100]}")
    return 0 if all(ok for _, ok, _, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
