# nemo-mlsl: `make demo` runs the CPU study, `make test` the tests; both set up .venv first if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo demo-quick test test-fast bench gpu-wheels clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip==23.2.1"
	$(BIN)/pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[nemo,test]'
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e tests/fixtures/thirdparty_plugin
	# setuptools leaves *.egg-info in the source tree; from the repo root it would shadow the installed metadata
	find . -name '*.egg-info' -not -path './$(VENV)/*' -prune -exec rm -rf {} +
	touch $(STAMP)

demo: setup
	$(BIN)/mlsl study --config studies/default.yaml --out out/study

demo-quick: setup
	$(BIN)/mlsl study --config studies/default.yaml --out out/study-quick --quick

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

bench: setup
	$(BIN)/python benchmarks/prepare.py
	$(BIN)/python benchmarks/fit.py
	$(BIN)/python benchmarks/train_cpu.py

gpu-wheels: setup
	gpu/fetch_wheels.sh

clean:
	rm -rf out .pytest_cache
