# Two entry points that work on a fresh machine (Python 3.11, PyPI reachable):
#   make demo   set up .venv, train + evaluate a small U-Net on built-in phantom data
#   make test   set up .venv, run the checks (ruff lint, ruff format --check, mypy, generated docs
#               up to date) and the test suite
# Both are idempotent: the virtual environment is rebuilt only when pyproject.toml changes.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.medseg-installed
PYTEST_ARGS ?=

.PHONY: setup demo test pytest lint bench-env clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# the CPU build of torch first, pinned, so nothing pulls a CUDA build
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[test,export,itk]"
	@$(BIN)/python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	@touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/medseg demo

test: lint pytest

pytest: setup
	$(BIN)/python -m pytest -n 2 -q $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check medseg tests bench
	$(BIN)/ruff format --check medseg tests bench
	$(BIN)/mypy medseg
	bash bench/build_docs.sh --check

bench-env:
	bash bench/setup_env.sh

clean:
	rm -rf $(VENV) outputs .pytest_cache .mypy_cache
