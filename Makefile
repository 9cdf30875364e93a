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

.PHONY: help demo test lint bench bench-data synth fuzz soak clean system-deps lock lambda-package lambda-task-local wheels

help:
	@echo "make demo   - the whole loop on one machine, no AWS account"
	@echo "make test   - lint, type-check and every test tier"
	@echo "make bench  - benchmarks, results in bench/results/ and the README table"
	@echo "make synth  - synthesize the CDK stack (no Docker, no AWS credentials)"
	@echo "make lambda-package    - the functions' /var/task for Lambda (build/lambda/task), no Docker"
	@echo "make lambda-task-local - the same lock for this interpreter, and the template the tests read"
	@echo "make wheels - the device's wheel (edgeloop-agent) and the operator's (edgeloop), build/wheels"
	@echo "make lock   - re-resolve infra/lambda/requirements.lock"
	@echo "make lint   - ruff, mypy and the import layers only"
	@echo "make fuzz   - the fuzzing properties at a long budget"
	@echo "make soak   - 1,000 agents through three updates and a broker restart"

# Two distributions from this tree (docs/DESIGN.md, "What a device installs"): the
# device's edgeloop-agent (packaging/agent) and the operator's edgeloop, which needs it.
AGENT := packaging/agent
AGENT_REQUIREMENTS := $(AGENT)/requirements.txt
AGENT_INPUTS := $(AGENT)/pyproject.toml $(wildcard $(AGENT)/*.txt)

# Both editable. An edgeloop installed before the split owned the edgeloop-agent
# script: it goes first, or replacing it would take the new script with it.
$(STAMP): pyproject.toml $(AGENT_INPUTS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip uninstall --quiet --yes edgeloop
	$(PY) -m pip install --quiet -e ./$(AGENT) -e '.[local,infra,dev]'
	@touch $@

# Debian packages the tests use: bspatch proves our BSDIFF40 patches are the
# classic format; mosquitto is the MQTT broker the agent tests run against
# (amqtt, embedded, is the fallback and has its own test); headless chromium loads the
# dashboard's page and renders it (tests/integration/cli/test_dashboard_fleet.py).
$(APT_STAMP): | $(STAMP)
	@missing=""; \
	command -v bspatch >/dev/null || missing="$$missing bsdiff"; \
	command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing Debian packages:$$missing (sudo apt-get install -y$$missing)" >&2; exit 1; fi; \
	fi
	@touch $@

system-deps: $(APT_STAMP)

# The device's requirements with its tflite214 extra (the Greengrass recipe's NumPy < 2
# path installs the same lists), so `make bench` can run the whole agent there
# (bench/agent_footprint.py), from this source tree on its path.
$(TFL214_STAMP): $(AGENT_REQUIREMENTS) $(AGENT)/tflite214.txt
	@test -x $(TFL214)/bin/python || $(PYTHON) -m venv $(TFL214)
	$(TFL214)/bin/python -m pip install --quiet -r $(AGENT_REQUIREMENTS) -r $(AGENT)/tflite214.txt
	@touch $@

# The two wheels, built from a clean copy of the tree (packaging/build_wheels.py).
WHEELS := build/wheels
wheels: | $(STAMP)
	$(PY) packaging/build_wheels.py --out $(WHEELS)

# What ships: one hashed lock for the functions (infra/lambda/requirements.lock),
# built into /var/task by infra/lambda/build_task.py for the image (the Dockerfile),
# for Lambda's platform without Docker (lambda-package), and for this interpreter
# (lambda-task-local: the tree the tests and the local cloud run the functions from),
# beside the synthesized template whose environment and roles they run with.
# Resolved once for every Python from 3.11 (this machine's, which the tests run) to
# 3.13 (the image's), with the fewest versions, so both get the same pins.
LOCK := infra/lambda/requirements.lock
UV_VERSION := 0.13.8
UV_STAMP := $(VENV)/.uv-$(UV_VERSION)
$(UV_STAMP): | $(STAMP)
	$(PY) -m pip install --quiet uv==$(UV_VERSION)
	@touch $@

# The operator's dependencies are the functions': edgeloop-agent's come from its wheel.
lock: $(UV_STAMP)
	$(PY) packaging/build_wheels.py --out $(WHEELS) agent
	$(VENV)/bin/uv pip compile --quiet pyproject.toml \
	  --find-links $(WHEELS) --no-emit-package edgeloop-agent \
	  --universal --python-version 3.11 --fork-strategy fewest \
	  --constraint infra/lambda/constraints.txt \
	  --generate-hashes --custom-compile-command "make lock" -o $(LOCK)

# The Lambda platform's tree (CPython 3.13, manylinux x86_64), built here without
# Docker and with only the package registry; it prints its size.
LAMBDA_BUILD := build/lambda
lambda-package:
	$(PYTHON) infra/lambda/build_task.py --out $(LAMBDA_BUILD)/task --target lambda

# The same lock built for this machine's interpreter. Rebuilt only when the lock, the
# builder or the packaged sources change (the builder writes edgeloop-task.json last).
TASK_LOCAL := $(LAMBDA_BUILD)/task-local
TASK_SOURCES := $(shell find edgeloop edge functions -name '*.py' -not -path '*/__pycache__/*') \
  $(wildcard models/*.toml)
$(TASK_LOCAL)/edgeloop-task.json: $(LOCK) infra/lambda/build_task.py $(TASK_SOURCES) | $(STAMP)
	$(PY) infra/lambda/build_task.py --out $(TASK_LOCAL) --target local

LAMBDA_TEMPLATE := $(LAMBDA_BUILD)/edgeloop.template.json
INFRA_SOURCES := $(shell find infra functions edgeloop/contract -name '*.py' -not -path '*/__pycache__/*')
$(LAMBDA_TEMPLATE): $(INFRA_SOURCES) | $(STAMP)
	$(PY) -m infra.app --template-into $(LAMBDA_BUILD)

lambda-task-local: $(TASK_LOCAL)/edgeloop-task.json $(LAMBDA_TEMPLATE)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy infra/lambda/build_task.py packaging/build_wheels.py
	$(VENV)/bin/lint-imports --no-cache

# The 25 slowest tests are listed at the end: the suite's time is kept under 20 minutes.
test: $(STAMP) $(APT_STAMP) $(TFL214_STAMP) lambda-task-local lint
	PATH="$$PATH:/usr/sbin" EDGELOOP_TFLITE214_PYTHON=$(CURDIR)/$(TFL214)/bin/python \
	  $(PY) -m pytest --durations=25 $(wildcard tests/unit tests/integration tests/packaged tests/infrastructure tests/security tests/faults tests/e2e) $(PYTEST_ARGS)

# The default scenario (digits, 5 devices); the report lands in demo-report/ and its
# picture refreshes the README's (docs/demo-report.png). DEMO_ARGS adds options, e.g.
# make demo DEMO_ARGS="--scenario anomaly --devices 10".
demo: $(STAMP) lambda-task-local
	$(VENV)/bin/edgeloop demo --picture docs/demo-report.png $(DEMO_ARGS)

# Real sensor recordings the benchmarks read (bench/recordings.py): the wheel that
# ships them, downloaded, never installed, at the version and hash bench/recordings.txt
# pins (pip refuses other bytes). Kept in .cache/, which git ignores.
RECORDINGS := .cache/recordings
AEON_VERSION := $(shell sed -n 's/^aeon==\([^ ]*\) .*/\1/p' bench/recordings.txt)
AEON_WHEEL := $(RECORDINGS)/aeon-$(AEON_VERSION)-py3-none-any.whl
$(AEON_WHEEL): bench/recordings.txt | $(STAMP)
	$(PY) -m pip download --quiet --no-deps --only-binary :all: --require-hashes \
	  -r bench/recordings.txt -d $(RECORDINGS)
	@touch $@

bench-data: $(AEON_WHEEL)

# Writes bench/results/*.json and rewrites the README's benchmark table.
bench: $(STAMP) $(APT_STAMP) $(TFL214_STAMP) lambda-task-local bench-data
	PATH="$$PATH:/usr/sbin" EDGELOOP_TFLITE214_PYTHON=$(CURDIR)/$(TFL214)/bin/python \
	  $(PY) -m bench.run $(BENCH)

# The CDK CLI from npm, kept in the repository's own folder (no global install).
CDK_CLI_VERSION := 2.1148.1
CDK := .tools/node_modules/.bin/cdk
$(CDK):
	npm install --silent --no-audit --no-fund --prefix .tools aws-cdk@$(CDK_CLI_VERSION)

# No Docker and no AWS credentials needed: the functions image is only built by `cdk deploy`.
synth: $(STAMP) $(CDK)
	$(CDK) synth --quiet --no-notices
	@echo "template: cdk.out/edgeloop.template.json"

# The fuzzing properties of tests/security at 20,000 examples each (CI runs 60).
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(PY) -m pytest tests/security/test_fuzz.py tests/security/test_fuzz_models.py -q

# 1,000 real agents, three model updates and a broker restart (not in CI).
SOAK_AGENTS ?= 1000
soak: $(STAMP) $(APT_STAMP) lambda-task-local
	PATH="$$PATH:/usr/sbin" $(PY) -m bench.soak --agents $(SOAK_AGENTS)

clean:
	rm -rf $(VENV) $(TFL214) .tools .cache cdk.out build .mypy_cache .ruff_cache .pytest_cache
