# Drover — developer entry points. `make dev` and `make test` are the two commands a fresh
# machine needs; everything else is called by them or is a convenience.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
CLUSTER_DIR ?= .cluster

.PHONY: help bootstrap dashboard-assets binaries tools images image-requirements cluster-up cluster-down dev test test-unit test-store test-e2e chaos lint fmt crds docs helm-lint openapi bench clean

# Tests run in parallel (pytest-xdist): they share one cluster and one Postgres, and each
# isolates itself with a namespace and a database of its own. Files go out in collection
# order, which puts the slowest first (tests/conftest.py), not xdist's order by test count.
# Two workers on two cores: with four, tests starved of CPU ran past their hang-stops.
TEST_WORKERS ?= 2
PYTEST_PARALLEL := -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=15

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml uv.lock runner/pyproject.toml operator/pyproject.toml cli/pyproject.toml \
		localcluster/pyproject.toml scripts/bootstrap.sh \
		operator/assets/package-lock.json scripts/dashboard-assets.sh
	VENV=$(VENV) scripts/bootstrap.sh
	@touch $@

bootstrap: $(VENV)/.installed  ## System packages and the Python venv

dashboard-assets:  ## Copy the dashboard's npm libraries into the operator package (bootstrap does)
	scripts/dashboard-assets.sh

binaries: bootstrap  ## Build (once, cached) kube-apiserver & co. and etcd from Go modules
	$(PY) -m drover_localcluster build

tools: bootstrap  ## Build (once, cached) helm and promtool, which only some tests need
	$(PY) -m drover_localcluster build --with helm --with promtool

images: bootstrap  ## Build (once, cached) the operator, runner and example images without Docker
	$(PY) -m drover_localcluster images

image-requirements: bootstrap  ## Pin the images' dependencies from uv.lock (images/*/requirements.txt)
	$(PY) -m drover_localcluster image-requirements

cluster-up: binaries  ## Start the local cluster in the background; writes .cluster/env
	$(PY) -m drover_localcluster up --dir $(CLUSTER_DIR)

cluster-down:  ## Stop the local cluster; no process is left behind
	@if [ -x $(PY) ]; then $(PY) -m drover_localcluster down --dir $(CLUSTER_DIR); fi

dev: cluster-up  ## Bring everything up, apply the examples and run the operator (Ctrl-C stops it)
	@source $(CLUSTER_DIR)/env && \
	  kubectl apply --server-side --force-conflicts -f crds/ >/dev/null && \
	  { kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null 2>&1 || \
	    { sleep 1; kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null; }; } && \
	  kubectl apply -f $(CLUSTER_DIR)/apiservice.yaml >/dev/null && \
	  kubectl apply -f examples/
	@echo
	@echo "The local cluster is up and the operator starts below. In another shell:"
	@echo "  source $(CLUSTER_DIR)/env"
	@echo "  kubectl get nodes                 # drover-local Ready"
	@echo "  kubectl get tasks,taskruns        # the examples"
	@echo "  kubectl describe taskrun sync-customer-tenant-42"
	@echo "  echo '{\"payload\": {\"customerId\": \"cus_1\"}}' | kubectl create --raw \\"
	@echo "    /apis/api.drover.dev/v1/namespaces/default/tasks/sync-customer/trigger -f -"
	@echo "Stop the operator with Ctrl-C and the cluster with: make cluster-down"
	@echo
	@source $(CLUSTER_DIR)/env && exec $(VENV)/bin/drover-operator run

test: binaries tools images  ## Every test: unit, store, end to end (its own throwaway cluster)
	$(VENV)/bin/pytest $(PYTEST_PARALLEL)

test-unit: bootstrap  ## Unit tests only: pure logic, no Postgres, no cluster, no Go tools
	$(VENV)/bin/pytest -m "not e2e and not postgres and not tools and not packaging"

test-store: bootstrap  ## The store against a real Postgres (no cluster)
	$(VENV)/bin/pytest -m postgres

test-e2e: binaries tools images  ## End-to-end tests only
	$(VENV)/bin/pytest $(PYTEST_PARALLEL) -m e2e

# The chaos suite in full: 10 faults of each kind (DROVER_CHAOS_FAULTS), seeded
# (DROVER_CHAOS_SEED replays a run); its table goes to the terminal and to CHAOS_REPORT.
CHAOS_FAULTS ?= 10
CHAOS_SEED ?= 18
CHAOS_REPORT ?= chaos-report.txt
chaos: binaries  ## Faults under load on a cluster of its own; prints faults, runs, violations
	DROVER_CHAOS_FAULTS=$(CHAOS_FAULTS) DROVER_CHAOS_SEED=$(CHAOS_SEED) \
	  DROVER_CHAOS_REPORT=$(abspath $(CHAOS_REPORT)) \
	  $(VENV)/bin/pytest -p no:xdist --timeout=3600 -s tests/e2e/test_chaos.py

lint: bootstrap  ## ruff, mypy --strict, the import layers, generated files up to date
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(PY) -m drover_operator.settings --check
	$(PY) -m drover_operator.api.openapi --check
	$(PY) -m drover_localcluster image-requirements --check

fmt: bootstrap  ## Apply ruff's formatting and safe fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

crds: bootstrap  ## Generate crds/*.yaml from the pydantic models (and copy them into the chart)
	$(PY) -m drover_operator.crd
	cp crds/*.yaml helm/drover/crds/

docs: bootstrap  ## Regenerate the settings table in docs/operator.md
	$(PY) -m drover_operator.settings

helm-lint: bootstrap  ## helm lint and the chart's unit tests
	$(VENV)/bin/pytest tests/tools/test_helm_chart.py

openapi: bootstrap  ## Generate docs/openapi.json from the run API's wire models
	$(PY) -m drover_operator.api.openapi

bench: binaries  ## Benchmarks against their peers (Kubernetes Jobs, DBOS); prints figures
	VENV=$(VENV) BOOTSTRAP_GROUPS="--group bench" scripts/bootstrap.sh
	rm -rf .bench
	-$(PY) -m bench.bench_operator
	-$(PY) -m bench.bench_steps
	-$(PY) -m bench.bench_triggers
	-$(PY) -m bench.bench_workflows
	-$(PY) -m bench.bench_scale
	-$(PY) -m bench.bench_heartbeats
	$(PY) -m bench.summary

clean: cluster-down  ## Remove the venv and local state (the binary cache stays)
	rm -rf $(VENV) $(CLUSTER_DIR)
