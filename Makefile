# The README's two commands: `make demo` and `make test`. Both build .venv from nothing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.matrank-installed

.PHONY: demo test test-all lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned to the CPU wheel on this machine, so that the package's
	# torch>=2.2 requirement is already met and pip never fetches a CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test,plot,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/matrank demo

test: $(STAMP)
	$(PY) -m pytest

test-all: $(STAMP)
	$(PY) -m pytest -m ''

lint: $(STAMP)
	$(VENV)/bin/ruff check matrank adapters tests benchmarks
	$(VENV)/bin/ruff format --check matrank adapters tests benchmarks
	$(VENV)/bin/mypy matrank

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
