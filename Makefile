# purerl: every target sets itself up. `make train` and `make test` are all a fresh clone needs.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= configs/tiny.yaml
ARGS ?=
BASE_MODEL ?= models/tiny-moe-base
RUN_DIR ?=
RESUME ?=
CKPT ?=

export VLLM_ENABLE_V1_MULTIPROCESSING ?= 0
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export RAY_USAGE_STATS_ENABLED ?= 0

.PHONY: install train eval test test-slow lint clean base-model bench bench-rewards routing-gap

# The stamp depends on the files that define the environment, so editing them refreshes it.
$(VENV)/.installed: pyproject.toml scripts/install.sh
	bash scripts/install.sh $(VENV) $(PY)
	touch $@

install: $(VENV)/.installed

# Rebuilt when its recipe changes (the corpus comes from the task's generator).
$(BASE_MODEL)/config.json: rl/base_model.py rl/data/arithmetic.py | $(VENV)/.installed
	$(BIN)/python -m rl.base_model --out $(BASE_MODEL) --rebuild
	touch $@

base-model: $(BASE_MODEL)/config.json

train: $(VENV)/.installed $(BASE_MODEL)/config.json
	$(BIN)/python -m rl.train --config $(CONFIG) $(if $(RUN_DIR),run.dir=$(RUN_DIR)) $(if $(RESUME),run.resume=true) $(ARGS)

eval: $(VENV)/.installed $(BASE_MODEL)/config.json
	$(BIN)/python -m rl.evaluate --config $(CONFIG) $(if $(CKPT),--checkpoint $(CKPT)) $(ARGS)

test: $(VENV)/.installed $(BASE_MODEL)/config.json
	$(BIN)/python -m pytest -m "not slow" -q $(ARGS)

test-slow: $(VENV)/.installed $(BASE_MODEL)/config.json
	$(BIN)/python -m pytest -m slow -q $(ARGS)

# Math verifications/s and code programs/s on 2 reward workers, and the ratio to math-verify called directly.
# TRL, the peer, lives in .venv-bench (layered over .venv), never in the runtime environment.
.venv-bench/.installed: $(VENV)/.installed scripts/bench_env.sh
	bash scripts/bench_env.sh $(VENV) .venv-bench
	touch $@

bench: $(VENV)/.installed $(BASE_MODEL)/config.json .venv-bench/.installed
	$(BIN)/python scripts/bench.py $(ARGS)

routing-gap: $(VENV)/.installed $(BASE_MODEL)/config.json
	$(BIN)/python scripts/routing_gap.py $(ARGS)

bench-rewards: $(VENV)/.installed
	$(BIN)/python scripts/bench_rewards.py --workers 2 $(ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check rl rewards rollout tests scripts

clean:
	rm -rf $(VENV) .venv-bench models runs .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
