# whylake — `make demo` runs the main job on the embedded default; `make test` runs the suite.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
BENCH_ARGS ?=
STAMP := $(VENV)/.installed
INFRA := bash infra/services.sh

.DEFAULT_GOAL := help

help: ## Show the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml setup.py
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11) on PATH"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip check
	touch $(STAMP)

setup: $(STAMP) ## Create .venv and install whylake with pinned dependencies

demo: setup ## Train demo models, generate a day of logs, run the batch job, audit it
	$(VENV)/bin/whylake demo

test: setup ## Whole suite; starts OpenSearch/Kafka/MLflow/SeaweedFS if needed, stops what it started
	@started=""; for s in opensearch kafka mlflow seaweedfs; do \
	  $(INFRA) status $$s >/dev/null 2>&1 || started="$$started $$s"; done; \
	$(MAKE) --no-print-directory up || exit $$?; \
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ -n "$$started" ]; then $(INFRA) down $$started; fi; exit $$rc

test-unit: setup ## Unit tests only
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

lint: setup ## ruff, the import contracts, mypy --strict on the pure packages
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	@tree=$$($(PY) tools/package_tree.py build/package-tree) && cd $$tree && \
	  $(CURDIR)/$(VENV)/bin/lint-imports --config $(CURDIR)/pyproject.toml && \
	  $(CURDIR)/$(VENV)/bin/mypy --config-file $(CURDIR)/pyproject.toml \
	    -p whylake.schemas -p whylake.transforms.sampling -p whylake.transforms.explainers \
	    -p whylake.monitor

bench: bench-batch bench-explainers bench-models bench-replica bench-stream bench-storage bench-api bench-monitor bench-explain-stage bench-commits ## Run every benchmark (figures in bench/results/)

bench-batch: setup ## 1M and 10M records through the batch job, 2% explained -> bench/results/batch.json, batch-10m.json
	$(PY) -m bench.batch
	$(PY) -m bench.batch --records 10000000 --out bench/results/batch-10m.json

bench-storage: setup ## Commit latency into 0/1M/10M-row partitions, tenant SQL + reconstruction over 10M rows -> bench/results/storage.json
	$(PY) -m bench.storage $(BENCH_ARGS)

bench-explain-stage: setup ## The explain stage's rate against its kernels' rate in the same run -> bench/results/explain_stage.json
	$(PY) -m bench.explain_stage $(BENCH_ARGS)

bench-explainers: setup ## Ours vs captum / shap / dice-ml -> bench/results/explainers.json
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m bench.explainers $(BENCH_ARGS)

bench-models: setup ## TreeSHAP / agnostic Shapley / token IG vs shap, the boosters, captum -> bench/results/models.json
	$(PY) -m bench.models $(BENCH_ARGS)

bench-stream: up ## Kafka -> Prism -> Iceberg/OpenSearch events/s and latency -> bench/results/streaming.json
	$(PY) -m bench.streaming

bench-replica: up ## OpenSearch docs/s and lookup p50/p99 over 1M docs -> bench/results/replica.json
	$(PY) -m bench.replica

bench-api: up ## whylake serve: lookup p50/p99 at 50 clients, 500 SSE streams -> bench/results/api.json
	$(PY) -m bench.api $(BENCH_ARGS)

bench-monitor: setup ## Drift test: false alarms without drift, power, cost -> bench/results/monitor_drift.json
	$(PY) -m bench.monitor_drift $(BENCH_ARGS)

bench-commits: setup ## Same-key writers (attempts, duplicates) and commit cost vs snapshots kept -> bench/results/commits.json
	$(PY) -m bench.commits

up: setup ## Fetch pinned servers, build Prism, SeaweedFS and Prometheus, install Chromium; start OpenSearch, Kafka, MLflow, SeaweedFS
	$(INFRA) fetch opensearch kafka flink prism chromium mlflow seaweedfs iceberg-rest prometheus
	$(INFRA) up opensearch kafka mlflow seaweedfs

up-all: up ## Also start a long-running Flink job server and the Iceberg REST catalog (on SeaweedFS)
	$(INFRA) up flink iceberg-rest

down: ## Stop the local services
	$(INFRA) down

status: ## pid, port, health and memory of each local service
	$(INFRA) status

clean: ## Remove the embedded catalog, warehouse and demo data (.whylake)
	rm -rf .whylake

.PHONY: help setup demo test test-unit lint bench bench-batch bench-explainers bench-models bench-replica bench-stream bench-api bench-storage bench-monitor bench-explain-stage bench-commits up up-all down status clean
