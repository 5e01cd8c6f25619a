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
# A CUDA build instead: make lab TORCH_INDEX=https://download.pytorch.org/whl/cu126  (or any PyTorch index)
TORCH       ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
STAMP   = $(VENV)/.installed

.PHONY: lab test test-browser env lint bench clean package-results

env: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null \
	  || $(BIN)/python -m pip install -q --timeout 20 --retries 0 --index-url "$(TORCH_INDEX)" "$(TORCH)" \
	  || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev,notebooks]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (rbdlib)" >/dev/null
	touch $(STAMP)

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

test: $(STAMP)
	RBDLIB_SMOKE=1 $(BIN)/python -m pytest tests notebooks rbdlib --doctest-modules --nbval-lax --nbval-current-env \
	  --ignore=tests/browser -p no:cacheprovider $(PYTEST_ARGS)

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

lint: $(STAMP)
	$(BIN)/ruff check rbdlib tests

bench: $(STAMP)
	$(BIN)/python -m rbdlib.bench bases

clean:
	rm -rf $(VENV) *.egg-info
