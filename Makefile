# Two commands do everything, set-up included:
#   make lab    JupyterLab on notebooks/ (creates .venv and installs rbdlib when missing)
#   make test   the whole test suite: unit tests, CLI, distributed, the wheel, and every notebook under nbval
# and one more for CI:
#   make test-browser   every notebook run in JupyterLab in a real (headless) Chromium
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# torch comes first, from PyTorch's CPU wheel index, so that pip never picks a multi-GB CUDA build by itself;
# where that index cannot be reached (offline mirrors, a local wheel folder) pip falls back to its default index.
# A CUDA build instead, with CuPy for rbdlib's GPU kernels, whether or not .venv exists yet:
#   make lab GPU=cu128      (cu126, cu128, cu130, ...: a CUDA version your driver supports; see pytorch.org)
# A plain `make lab` afterwards keeps whichever build is installed.
# Jupyter options: make lab JUPYTER_ARGS="--port 8890 --no-browser"  (--allow-root is added for root)
TORCH       ?= torch==2.13.0
GPU         ?=
TORCH_INDEX ?= https://download.pytorch.org/whl/$(if $(GPU),$(GPU),cpu)
CUPY         = cupy-cuda$(if $(filter cu13%,$(GPU)),13x,12x)
JUPYTER_ARGS ?=
STAMP       = $(VENV)/.installed
TORCH_STAMP = $(VENV)/.torch$(if $(GPU),-$(GPU))
# which torch counts as installed: any (plain make), or a CUDA build of exactly $(GPU)
TORCH_OK    = import torch, sys; sys.exit($(if $(GPU),"cu" + (torch.version.cuda or "").replace(".", "") != "$(GPU)",0))

.PHONY: lab test test-isa test-browser env lint bench clean package-results

env: $(STAMP)

$(TORCH_STAMP):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c '$(TORCH_OK)' 2>/dev/null || { \
	  $(BIN)/python -m pip uninstall -q -y torch 2>/dev/null; \
	  $(BIN)/python -m pip install -q --timeout 20 --retries 0 --index-url "$(TORCH_INDEX)" "$(TORCH)" \
	  || $(BIN)/python -m pip install -q "$(TORCH)"; }
	$(if $(GPU),$(BIN)/python -m pip install -q "$(CUPY)")
	touch $(VENV)/.torch $@

$(STAMP): pyproject.toml $(TORCH_STAMP)
	$(BIN)/python -m pip install -q -e ".[dev,notebooks]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (rbdlib)" >/dev/null
	touch $(STAMP)

# NVIDIA's runtime compiler for CUDA 12 and 13 (PyPI, no GPU needed): the tests compile the CUDA kernels with it
$(VENV)/.nvrtc: $(STAMP)
	$(BIN)/python -m pip install -q -e ".[nvrtc]"
	touch $@

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/ $$([ "$$(id -u)" = 0 ] && echo --allow-root) $(JUPYTER_ARGS)

test: $(STAMP) $(VENV)/.nvrtc
	RBDLIB_SMOKE=1 $(BIN)/python -m pytest tests notebooks rbdlib --doctest-modules --nbval-lax --nbval-current-env \
	  --ignore=tests/browser -p no:cacheprovider $(PYTEST_ARGS)

# The kernel and optimizer tests again with torch, oneDNN and Numba held to older instruction sets (as on a CPU
# without AVX-512, or without AVX2): rbdlib's bits must not depend on the CPU, and no test may assume that two
# of torch's code paths round alike.
ISA_TESTS = tests/test_philox.py tests/test_bases.py tests/test_cuda_source.py tests/test_optim.py tests/test_stale_fpd.py
test-isa: $(STAMP)
	ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 NUMBA_CPU_NAME=generic RBDLIB_SMOKE=1 \
	  $(BIN)/python -m pytest $(ISA_TESTS) -q -p no:cacheprovider $(PYTEST_ARGS)

# Debian's chromium (apt, as root; no browser download) driven by Playwright from PyPI; JupyterLab on a free
# local port. Screenshots of failing notebooks land in build/browser/.
test-browser: $(STAMP)
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	  else echo "test-browser needs Chromium: sudo apt-get install chromium"; exit 1; fi; }
	$(BIN)/python -c "import playwright" 2>/dev/null || $(BIN)/python -m pip install -q playwright
	RBDLIB_BROWSER=1 $(BIN)/python -m pytest tests/browser -v -p no:cacheprovider $(PYTEST_ARGS)

# copy results/*/results.json (the committed sets) into the package, for notebook 08 and rbdlib.results
package-results: $(STAMP)
	$(BIN)/python -m rbdlib.results refresh

# every Python file of the repository (rbdlib, tests, tools, results/*.py, notebooks/measure.py); the notebooks
# keep their own house rules (style.md) and are checked by running them
lint: $(STAMP)
	$(BIN)/ruff check --extend-exclude '*.ipynb' .

bench: $(STAMP)
	$(BIN)/python -m rbdlib.bench bases

clean:
	rm -rf $(VENV) *.egg-info
