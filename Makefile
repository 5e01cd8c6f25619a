# Two commands do everything, set-up included:
#   make lab    JupyterLab on notebooks/ (creates .venv and installs rbdlib when missing)
#   make test   the whole test suite: unit tests, CLI, distributed, and every notebook under nbval
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# The CPU build of torch. Installed first so that pip never picks a multi-GB CUDA build by itself.
# Override for a GPU machine, e.g.  make lab TORCH='torch'
TORCH  ?= torch==2.13.0
STAMP   = $(VENV)/.installed

.PHONY: lab test env lint bench clean

env: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (rbdlib)" >/dev/null
	touch $(STAMP)

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

test: $(STAMP)
	RBDLIB_SMOKE=1 $(BIN)/python -m pytest tests notebooks rbdlib --doctest-modules --nbval-lax --nbval-current-env -p no:cacheprovider $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check rbdlib tests

bench: $(STAMP)
	$(BIN)/python -m rbdlib.bench bases

clean:
	rm -rf $(VENV) *.egg-info
