# nemo-mlsl: `make demo` runs the CPU study, `make test` the tests; both set up .venv first if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Megatron-Bridge: its own Python 3.12 environment (make setup-bridge), tests in make test-bridge.
BRIDGE_VENV := .venv-bridge
BRIDGE_STAMP := $(BRIDGE_VENV)/.installed
PYTHON312 ?= $(shell for p in python3.12 $$HOME/.pyenv/versions/3.12*/bin/python3.12; do \
	$$p -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null && { echo $$p; break; }; done)

.PHONY: setup setup-bridge demo demo-quick test test-fast test-bridge bench gpu-wheels gpu-wheels-bridge clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip==23.2.1"
	$(BIN)/pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[cpu,nemo,test]'
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e tests/fixtures/thirdparty_plugin
	# setuptools leaves *.egg-info in the source tree; from the repo root it would shadow the installed metadata
	find . -name '*.egg-info' -not -path './.venv*' -prune -exec rm -rf {} +
	touch $(STAMP)

setup-bridge: $(BRIDGE_STAMP)

$(BRIDGE_STAMP): pyproject.toml requirements-bridge.txt
	@test -n "$(PYTHON312)" || { echo "make setup-bridge: needs Python 3.12 (python3.12 on PATH, or PYTHON312=/path/to/python3.12)"; exit 2; }
	$(PYTHON312) -m venv $(BRIDGE_VENV)
	$(BRIDGE_VENV)/bin/pip install --quiet --no-deps -r requirements-bridge.txt
	$(BRIDGE_VENV)/bin/pip install --quiet --no-deps --no-build-isolation -e .
	find . -name '*.egg-info' -not -path './.venv*' -prune -exec rm -rf {} +
	$(BRIDGE_VENV)/bin/python -c "import mlsl_bridge.recipe"
	touch $(BRIDGE_STAMP)

demo: setup
	$(BIN)/mlsl study --config studies/default.yaml --out out/study

demo-quick: setup
	$(BIN)/mlsl study --config studies/default.yaml --out out/study-quick --quick

# Two workers on two cores (one thread each, see tests/conftest.py); a test file stays on one worker, so its
# module fixtures (a trained study, a Slurm cluster) are built once.
PYTEST_PARALLEL := -n auto --dist loadfile

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_PARALLEL)

test-bridge: setup-bridge
	MLSL_REQUIRE_BRIDGE=1 $(BRIDGE_VENV)/bin/python -m pytest -q tests/test_bridge.py

test-fast: setup
	$(BIN)/python -m pytest -q $(PYTEST_PARALLEL) -m "not slow"

bench: setup
	$(BIN)/pip install --quiet -c constraints.txt lightgbm  # the `bench` extra (pyproject.toml)
	$(BIN)/python benchmarks/prepare.py
	$(BIN)/python benchmarks/fit.py
	$(BIN)/python benchmarks/fit_reference.py
	$(BIN)/python benchmarks/train_cpu.py
	$(BIN)/python benchmarks/external.py

gpu-wheels: setup
	gpu/fetch_wheels.sh

gpu-wheels-bridge: setup
	gpu/fetch_wheels.sh --bridge

clean:
	rm -rf out .pytest_cache
