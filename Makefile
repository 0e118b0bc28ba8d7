# sidecar-injector — developer entry points. `make help` lists them.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

HOST ?= 127.0.0.1
PORT ?= 8443
SERVICE ?= sidecar-injector
NAMESPACE ?= sidecar-injector
PYTEST_ARGS ?=

BENCH_ARGS ?=

.PHONY: help install run dev-certs test bench fuzz constraints clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --constraint constraints.txt --editable '.[test]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install the project with its pinned dependencies

certs/tls.crt: | $(STAMP)
	$(BIN)/sidecar-injector certs generate --service $(SERVICE) --namespace $(NAMESPACE) \
		--out certs --extra-dns localhost --extra-ip 127.0.0.1

dev-certs: certs/tls.crt ## generate a dev CA + serving certificate under certs/ (once)

run: install dev-certs ## run the webhook over HTTPS on localhost with dev certs and the built-in profiles
	@echo "sidecar-injector: https://$(HOST):$(PORT)/mutate  metrics: http://$(HOST):9090/metrics  (Ctrl-C to stop)"
	@echo "try it from another terminal:"
	@echo "  curl -s --cacert certs/ca.crt -H 'Content-Type: application/json' \\"
	@echo "       --data @examples/admission-review.json https://localhost:$(PORT)/mutate"
	@echo "  $(BIN)/sidecar-injector inject -f examples/workloads.yaml"
	$(BIN)/sidecar-injector serve --host $(HOST) --port $(PORT) \
		--cert-file certs/tls.crt --key-file certs/tls.key

test: install ## lint, then run the whole test suite (what CI runs)
	$(BIN)/ruff check app tests bench
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install ## benchmark /mutate against a bare-ASGI floor with wrk on loopback (~3 min; BENCH_ARGS="--quick")
	@command -v wrk >/dev/null || { echo "wrk not found: installing it with apt-get"; \
		if [ "$$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq wrk; }
	$(PY) bench/run.py $(BENCH_ARGS)

fuzz: install ## the hostile-input suite with many more examples (minutes; CI runs a bounded version)
	HYPOTHESIS_PROFILE=long $(PY) -m pytest tests/test_fuzz.py $(PYTEST_ARGS)

constraints: ## re-pin constraints.txt from a fresh resolve of pyproject.toml
	rm -rf .venv-pin && $(PYTHON) -m venv .venv-pin
	.venv-pin/bin/pip install --quiet --upgrade pip && .venv-pin/bin/pip install --quiet '.[test]'
	{ sed -n '1,2p' constraints.txt; .venv-pin/bin/pip freeze --exclude sidecar-injector; } > constraints.new
	mv constraints.new constraints.txt && rm -rf .venv-pin

clean: ## remove the venv, caches and dev certificates
	rm -rf $(VENV) .pytest_cache build *.egg-info
	find certs -type f ! -name README.md -delete
