# Every target sets itself up: a fresh machine needs only Python 3.11+, Node.js and apt.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# tflite-runtime 2.14 is the last release and needs NumPy < 2; it gets its own
# venv so the tests can prove every exported model loads in it too.
TFL214 := .venv-tflite214
TFL214_STAMP := $(TFL214)/.installed
APT_STAMP := .venv/.apt-installed
PYTEST_ARGS ?=

.PHONY: help demo test lint typecheck unit bench synth fuzz soak clean system-deps

help:
	@echo "make demo   - the whole loop on one machine, no AWS account"
	@echo "make test   - lint, type-check and every test tier"
	@echo "make bench  - benchmarks, results in bench/results/ and the README table"
	@echo "make synth  - synthesize the CDK stack (no Docker, no AWS credentials)"
	@echo "make lint   - ruff and mypy only"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[edge,cloud,infra,dev]'
	@touch $@

# bspatch proves our BSDIFF40 patches are the classic format. Installed once per machine.
$(APT_STAMP): | $(STAMP)
	@if ! command -v bspatch >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq bsdiff >/dev/null; \
	  else echo "bspatch missing: run 'sudo apt-get install -y bsdiff'" >&2; exit 1; fi; \
	fi
	@touch $@

system-deps: $(APT_STAMP)

$(TFL214_STAMP):
	@test -x $(TFL214)/bin/python || $(PYTHON) -m venv $(TFL214)
	$(TFL214)/bin/python -m pip install --quiet 'numpy<2' 'tflite-runtime==2.14.0'
	@touch $@

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: $(STAMP) $(APT_STAMP) $(TFL214_STAMP) lint
	EDGELOOP_TFLITE214_PYTHON=$(CURDIR)/$(TFL214)/bin/python \
	  $(PY) -m pytest $(wildcard tests/unit tests/integration tests/infrastructure tests/e2e) $(PYTEST_ARGS)

demo: $(STAMP)
	$(VENV)/bin/edgeloop demo

bench: $(STAMP)
	@echo "make bench: the benchmark suite is not built yet; nothing was measured." >&2
	@exit 2

synth: $(STAMP)
	@echo "make synth: the CDK stack in infra/ is not built yet; nothing was synthesized." >&2
	@exit 2

clean:
	rm -rf $(VENV) $(TFL214) cdk.out .mypy_cache .ruff_cache .pytest_cache
