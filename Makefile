# textclf: train -> export -> serve a disaster-message classifier on CPU.
# `make help` lists the targets. Everything runs from a fresh clone: `make run` and `make test` install first.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON_BOOT ?= python3.11
VENV        := .venv
PY          := $(VENV)/bin/python
EXTRAS      := serve,train,tracking,loadtest,dev
STAMP       := $(VENV)/.installed

CONFIG      ?= training/configs/quick.yaml
RUNS_DIR    ?= artifacts/runs
RUN_DIR     ?= $(RUNS_DIR)/latest
MODEL_DIR   ?= models/disaster-related
HOST        ?= 127.0.0.1
PORT        ?= 8000
PYTEST_ARGS ?=
# torch comes from the PyTorch CPU wheel index (PyPI's Linux wheel bundles CUDA: several GB). When that index is
# unreachable, .ci/install-torch.sh falls back to pip's own configuration, but only if it offers a CPU build.
TORCH_VERSION   := $(shell sed -n 's/^torch==//p' constraints.txt)
TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu

# Load test knobs (make loadtest USERS=32 DURATION=60s).
USERS       ?= 16
SPAWN_RATE  ?= 8
DURATION    ?= 30s

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

# Variables that target descriptions mention; `make help` shows their current values.
HELP_VARS := CONFIG RUN_DIR MODEL_DIR HOST PORT TORCH_INDEX_URL USERS DURATION

.PHONY: help
help: ## List the targets.
	@awk -v vars='$(foreach v,$(HELP_VARS),$(v)=$($(v)) )' \
	  'BEGIN {FS = ":.*## "; n = split(vars, kv, " "); for (i = 1; i <= n; i++) { split(kv[i], p, "="); val[p[1]] = p[2] }} \
	   /^[a-zA-Z_-]+:.*## / {d = $$2; for (k in val) gsub("\\$$\\(" k "\\)", val[k], d); \
	   printf "  \033[36m%-17s\033[0m %s\n", $$1, d}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON_BOOT) >/dev/null || { echo "error: $(PYTHON_BOOT) not found (Python 3.11 is required)"; exit 1; }
	@echo "[install] 1/3 creating $(VENV) with $(PYTHON_BOOT)"
	@$(PYTHON_BOOT) -m venv $(VENV)
	@echo "[install] 2/3 torch $(TORCH_VERSION), CPU build (TORCH_INDEX_URL=$(TORCH_INDEX_URL))"
	@bash .ci/install-torch.sh $(PY) $(TORCH_VERSION) $(TORCH_INDEX_URL)
	@echo "[install] 3/3 textclf with extras [$(EXTRAS)]: about 170 packages pinned by constraints.txt;" \
	  "3-5 minutes on 2 cores (one line per package downloaded)"
	@$(PY) -m pip install --progress-bar off -c constraints.txt -e ".[$(EXTRAS)]" \
	  | { grep --line-buffered -E '^(Collecting|Successfully installed)' || true; } \
	  | sed -u -e 's/^Collecting /[install]   /' -e 's/^Successfully installed .*/[install] done/'
	@touch $(STAMP)

.PHONY: install
install: $(STAMP) ## Create .venv with every extra, pinned by constraints.txt.

.PHONY: system-deps
system-deps: ## Install the Debian packages the tests use (prometheus/promtool, chromium), when missing and root.
	@bash .ci/system-deps.sh

.PHONY: lock
lock: $(STAMP) ## Regenerate constraints.txt from the current .venv.
	@{ echo "# Exact versions for reproducible installs: make install runs pip install -c constraints.txt."; \
	   echo "# Regenerate with 'make lock' after changing pyproject.toml. torch is pinned to 2.13.0 (CPU wheel)."; \
	   $(PY) -m pip freeze --exclude-editable | grep -v '^-e' | sed 's/^torch==2.13.0+cpu/torch==2.13.0/'; } > constraints.txt

.PHONY: data
data: $(STAMP) ## Fetch and verify the disaster-response dataset into artifacts/data/.
	$(PY) -m training.data --config $(CONFIG)

.PHONY: train
train: $(STAMP) ## Fine-tune the base model (CONFIG=training/configs/quick.yaml) into artifacts/runs/.
	$(PY) -m training --config $(CONFIG)

.PHONY: export
export: $(STAMP) ## Export the latest run to an int8 ONNX bundle in $(MODEL_DIR) (parity-gated).
	$(PY) -m export --run-dir $(RUN_DIR) --out $(MODEL_DIR) --force

.PHONY: serve
serve: $(STAMP) ## Serve $(MODEL_DIR) on http://$(HOST):$(PORT).
	$(PY) -m service --model-dir $(MODEL_DIR) --host $(HOST) --port $(PORT)

$(RUN_DIR)/metrics.json:
	$(MAKE) train

$(MODEL_DIR)/manifest.json: $(RUN_DIR)/metrics.json
	$(PY) -m export --run-dir $(RUN_DIR) --out $(MODEL_DIR) --force

.PHONY: run
run: $(STAMP) $(MODEL_DIR)/manifest.json ## The main job: install, fetch data, train (quick), export, serve.
	$(MAKE) serve

.PHONY: test
test: $(STAMP) system-deps ## Install and run every test folder (unit, fuzz, integration, quality), then compose-test.
	@status=0; \
	$(PY) -m pytest tests --ignore=tests/compose $(PYTEST_ARGS) || status=$$?; \
	$(MAKE) --no-print-directory compose-test || status=$$?; \
	exit $$status

.PHONY: compose-test
compose-test: $(STAMP) ## Build the images, docker compose up (real trainer, api, prometheus, locust), down -v.
	$(PY) -m pytest tests/compose -s -rs $(PYTEST_ARGS)

# One target per test folder; the folder sets the marker (tests/conftest.py), so `pytest -m unit` is the same.
.PHONY: test-unit
test-unit: $(STAMP) system-deps ## tests/unit: offline, tiny models only (about a minute on 2 cores).
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

.PHONY: test-fuzz
test-fuzz: $(STAMP) ## tests/fuzz: schemathesis + Hypothesis against the app in process, 500 cases each (minutes).
	$(PY) -m pytest tests/fuzz $(PYTEST_ARGS)

.PHONY: test-integration
test-integration: $(STAMP) system-deps ## tests/integration: the real service, Prometheus, Chromium on a tiny bundle.
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

.PHONY: test-quality
test-quality: $(STAMP) ## tests/quality: trains the quick profile on the real data, exports it, checks the model.
	$(PY) -m pytest tests/quality $(PYTEST_ARGS)

.PHONY: lint
lint: $(STAMP) ## ruff check + format check, mypy, pip-audit.
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	bash .ci/audit.sh

.PHONY: format
format: $(STAMP) ## Apply ruff fixes and formatting.
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

.PHONY: loadtest
loadtest: $(STAMP) ## Headless Locust run against a running service, then the SLO gate (loadtest/slo.yaml).
	$(PY) -m loadtest.run --host http://$(HOST):$(PORT) --users $(USERS) --spawn-rate $(SPAWN_RATE) --duration $(DURATION)

.PHONY: bench
bench: $(STAMP) system-deps $(MODEL_DIR)/manifest.json ## Side-by-side benchmark: this service vs the PyTorch baseline -> bench/.
	$(PY) -m loadtest.bench --model-dir $(MODEL_DIR) --run-dir $(RUN_DIR)

.PHONY: stack
stack: $(STAMP) $(MODEL_DIR)/manifest.json ## docker-compose topology natively: service + Prometheus (+ Locust).
	$(PY) -m deploy.stack --model-dir $(MODEL_DIR)

.PHONY: soak
soak: $(STAMP) $(MODEL_DIR)/manifest.json ## 10-minute soak at 50% of saturation (not in CI).
	$(PY) -m loadtest.soak --model-dir $(MODEL_DIR)

.PHONY: fuzz
fuzz: $(STAMP) ## tests/fuzz with 5,000 cases per test instead of 500.
	FUZZ_EXAMPLES=5000 $(PY) -m pytest tests/fuzz $(PYTEST_ARGS)

.PHONY: docs
docs: $(STAMP) ## Rewrite the measured tables in docs/ from the artifacts on this machine (MODEL_DIR=$(MODEL_DIR)).
	$(PY) -m docs.generate --model-dir $(MODEL_DIR)

.PHONY: clean
clean: ## Remove build output, caches and artifacts (keeps .venv; `make distclean` removes it too).
	rm -rf artifacts models bench reports .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -not -path './.venv/*' -exec rm -rf {} +

.PHONY: distclean
distclean: clean ## clean + remove .venv.
	rm -rf $(VENV)
