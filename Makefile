# The two commands of README.md:
#   make demo   set up .venv (first time only) and run the demo
#   make test   set up .venv (first time only) and run the test suite
# Everything installs in ONE pip command, so that no later install downgrades torch or
# torchvision. The install is redone only when pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
VENV_PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup demo test lint benchmarks benchmark-losses benchmark-samplers benchmark-routing flower-env clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(VENV_PYTHON) || $(PYTHON) -m venv $(VENV)
	$(VENV_PYTHON) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/equipoise demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV_PYTHON) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

benchmarks: benchmark-losses benchmark-samplers benchmark-routing

benchmark-losses: $(STAMP)
	$(VENV_PYTHON) tools/benchmarks/losses.py

# torchsampler is the comparison, not a dependency: installed here only.
benchmark-samplers: $(STAMP)
	$(VENV_PYTHON) -m pip install --quiet --disable-pip-version-check torchsampler
	$(VENV_PYTHON) tools/benchmarks/samplers.py

benchmark-routing: $(STAMP)
	$(VENV_PYTHON) tools/benchmarks/routing.py

# Flower is the comparison of the federated benchmark, not a dependency: flwr[simulation] pins its
# own ray, so it lives in a venv of its own, with the project's torch, all in ONE pip command.
FLOWER_VENV := .venv-flower
FLOWER_STAMP := $(FLOWER_VENV)/.installed
FLOWER_REQUIREMENTS := torch==2.14.1 'flwr[simulation]==1.42.0' numpy

flower-env: $(FLOWER_STAMP)

$(FLOWER_STAMP): Makefile
	@test -x $(FLOWER_VENV)/bin/python || $(PYTHON) -m venv $(FLOWER_VENV)
	$(FLOWER_VENV)/bin/python -m pip install --quiet --disable-pip-version-check $(FLOWER_REQUIREMENTS)
	@touch $(FLOWER_STAMP)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
