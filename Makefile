# Ops and developer targets. Every target runs as a thin wrapper over the `anywhere` CLI or
# the project's own tools; `make help` lists them.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
ANYWHERE := $(BIN)/anywhere
INVENTORY ?= inventory/example.yml
LIMIT ?=
OUT ?= rendered
DEMO_HOSTS ?= 3
PYTEST_ARGS ?=
BENCH_N ?= 20 50 100
BENCH_RUNS ?= 5
BENCH_LATENCY_MS ?= 0
BENCH_ARGS ?=
LIMIT_FLAG = $(if $(LIMIT),--limit '$(LIMIT)',)
ENGINE ?=
ENGINE_FLAG = $(if $(ENGINE),--engine $(ENGINE),)
FLEET ?= fleet.yml
ECS_VERSION ?=
BATCH ?=
MAX_UNAVAILABLE ?=
UPGRADE_FLAGS = $(if $(ECS_VERSION),--ecs-version '$(ECS_VERSION)',) \
  $(if $(BATCH),--batch-size $(BATCH),) $(if $(MAX_UNAVAILABLE),--max-unavailable '$(MAX_UNAVAILABLE)',)

.DEFAULT_GOAL := help
.PHONY: help install lint test test-unit test-e2e demo clean lab-up lab-down plan register \
        check-fleet deregister upgrade render bench playbook-register export-ansible

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(BIN)/activate: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(BIN)/activate

install: $(BIN)/activate ## create .venv and install anywhere (editable) with dev tools

lint: install ## ruff (lint, format check), mypy --strict (code, tests, benchmarks), import-linter
	$(BIN)/ruff check anywhere tests $(wildcard benchmarks)
	$(BIN)/ruff format --check anywhere tests $(wildcard benchmarks)
	$(BIN)/mypy
	$(BIN)/lint-imports

# The unit run alone must cover 85 % of anywhere/ outside lab/ (pyproject: tool.coverage).
COV_ARGS = --cov --cov-report=term --cov-fail-under=85

# The slowest e2e steps are listed after the run: the time budget of `make test` is watched.
test: lint ## lint, then every test: unit (with coverage) then e2e on the lab (root)
	$(BIN)/pytest -q -rs -m 'not e2e' $(COV_ARGS) $(PYTEST_ARGS)
	$(BIN)/pytest -q -rs -m e2e --durations=12 $(PYTEST_ARGS)

test-unit: install ## pure tests only (no root needed), with their coverage
	$(BIN)/pytest -q -m 'not e2e' $(COV_ARGS) $(PYTEST_ARGS)

demo: install ## build the lab and register its hosts end to end
	$(ANYWHERE) lab up --hosts $(DEMO_HOSTS)
	set -a; eval "$$($(ANYWHERE) lab env)"; set +a; \
	  $(ANYWHERE) register "$$ANYWHERE_LAB_INVENTORY" --yes --report-json "$${ANYWHERE_LAB_DIR}/report.json"

lab-up: install ## boot the lab (HOSTS=N)
	$(ANYWHERE) lab up --hosts $(or $(HOSTS),$(DEMO_HOSTS))

lab-down: install ## remove the lab and everything it created
	$(ANYWHERE) lab down

plan: install ## show what register would do (INVENTORY=… LIMIT=…)
	$(ANYWHERE) plan $(INVENTORY) $(LIMIT_FLAG)

render: install ## write install scripts to OUT (INVENTORY=… OUT=…)
	$(ANYWHERE) render $(INVENTORY) --out $(OUT) $(LIMIT_FLAG)

register: install ## register hosts (INVENTORY=… LIMIT=… ENGINE=ssh|ansible)
	$(ANYWHERE) register $(INVENTORY) $(LIMIT_FLAG) $(ENGINE_FLAG)

playbook-register: install ## register with plain ansible-playbook ansible/register.yml (INVENTORY=… LIMIT=…)
	$(BIN)/ansible-playbook -i $(INVENTORY) ansible/register.yml $(LIMIT_FLAG)

export-ansible: install ## write the fleet with mi- ids and readiness as an Ansible inventory (INVENTORY=… FLEET=fleet.yml)
	$(ANYWHERE) inventory export-ansible $(INVENTORY) $(LIMIT_FLAG) --out $(FLEET)

check-fleet: install ## verify hosts are fit for EXTERNAL tasks (INVENTORY=… LIMIT=…)
	$(ANYWHERE) check $(INVENTORY) $(LIMIT_FLAG)

deregister: install ## take hosts out (INVENTORY=… LIMIT=… required)
	@test -n "$(LIMIT)" || { echo "deregister needs LIMIT=PATTERN" >&2; exit 2; }
	$(ANYWHERE) deregister $(INVENTORY) $(LIMIT_FLAG)

upgrade: install ## rolling ecs-init upgrade (INVENTORY=… LIMIT=… ECS_VERSION=… BATCH=N or MAX_UNAVAILABLE=P%)
	$(ANYWHERE) upgrade $(INVENTORY) $(LIMIT_FLAG) $(UPGRADE_FLAGS)

bench: install ## fleet benchmark on the lab (root; BENCH_N="20 50 100", BENCH_LATENCY_MS="0 25")
	$(BIN)/python -m benchmarks.fleet --hosts $(BENCH_N) --runs $(BENCH_RUNS) \
	  --latency-ms $(BENCH_LATENCY_MS) $(BENCH_ARGS)

clean: ## remove the venv, caches and build output (not the lab: use lab-down)
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache .coverage rendered
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
