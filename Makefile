# `make demo` and `make test` work on a fresh machine: they create (or reuse) .venv, install the CPU
# build of torch first when no torch is present (an unpinned torch pulls a multi-GB CUDA build), then
# ragtune with its dev extras.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.ragtune-installed

.PHONY: install demo test test-slow lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q --disable-pip-version-check torch==$(TORCH_VERSION)
	@$(PY) -m pip install -q --disable-pip-version-check -e ".[dev]"
	@touch $(STAMP)

demo: install
	$(PY) examples/demo.py

# pytest exits 5 when it collected no test: that is a failure of the suite, not a pass.
test: install
	$(PY) -m pytest -q tests; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$rc

test-slow: install
	$(PY) -m pytest -q -m slow tests

lint: install
	$(VENV)/bin/ruff check ragtune integrations tests benchmarks examples cli.py
	$(VENV)/bin/mypy ragtune integrations

clean:
	rm -rf build dist *.egg-info .ragtune examples/.demo-workspace
