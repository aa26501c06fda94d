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
SUPERVISE ?=
CKPT ?=
RUN ?=
RAY_PORT ?= 6379
RAY_DASHBOARD_PORT ?= 8265
RAY_CPUS ?=

export VLLM_ENABLE_V1_MULTIPROCESSING ?= 0
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export RAY_USAGE_STATS_ENABLED ?= 0

.PHONY: install train eval plan plot test test-unit test-gpu test-slow lint clean base-model bench bench-sweep bench-long bench-lora bench-rewards bench-storage bench-sync bf16-gap precision chaos bench-trainer routing-gap moe-bias ray-up ray-down submit

# The stamp depends on the files that define the environment, so editing them refreshes it.
$(VENV)/.installed: pyproject.toml scripts/install.sh
	bash scripts/install.sh $(VENV) $(PY)
	touch $@

install: $(VENV)/.installed

# Built when missing, rebuilt when its recipe's code changes (rl/tasks/build.py; the corpus comes from the task's
# generator). `make train` builds the embedded model its CONFIG names (models/tiny-code-base for tiny-code).
base-model: $(VENV)/.installed
	$(BIN)/python -m rl.tasks.build --model $(BASE_MODEL)

train: $(VENV)/.installed
	$(BIN)/python -m rl.tasks.build --config $(CONFIG) $(ARGS)
	$(BIN)/python -m rl.train --config $(CONFIG) $(if $(RUN_DIR),'run.dir=$(RUN_DIR)') $(if $(RESUME),run.resume=true) $(if $(SUPERVISE),run.supervise=true) $(ARGS)

eval: $(VENV)/.installed
	$(BIN)/python -m rl.tasks.build --config $(CONFIG) $(ARGS)
	$(BIN)/python -m rl.evaluate --config $(CONFIG) $(if $(CKPT),--checkpoint $(CKPT)) $(ARGS)

# Check and place a (GPU) run without a GPU or weights: the plan and each GPU's memory (rl/run/plan.py).
plan: $(VENV)/.installed
	$(BIN)/python -m rl.train --config $(CONFIG) --dry-run $(ARGS)

# PNG curves of a run into RUN/plots (make train draws them at its end too).
plot: $(VENV)/.installed
	@test -n "$(RUN)" || { echo "make plot: set RUN=<run dir>, e.g. RUN=runs/20261203-120000" >&2; exit 2; }
	$(BIN)/python -m rl.run.plot $(RUN)

test: $(VENV)/.installed base-model
	$(BIN)/python -m pytest -m "not slow" -q $(ARGS)

# The pure tests: no Ray, no vLLM engine (about a minute).
test-unit: $(VENV)/.installed base-model
	$(BIN)/python -m pytest -m "not slow and not engines" -q $(ARGS)

# On a machine with CUDA GPUs and vLLM: tests/gpu/ (a short run with parity, separate and colocated; sleep and
# wake; TP=2 with enough GPUs). Skipped, with the reason shown, anywhere else.
test-gpu: $(VENV)/.installed base-model
	$(BIN)/python -m pytest -q -rs tests/gpu $(ARGS)

# The 40-step learning runs of the README's tables, and the runs make test leaves to a sibling test (a SIGKILL and
# resume in a local folder and with LoRA, two replicated ranks resumed, a job on a local head, two of the four dataset
# formats, the countdown config, a short run's local outputs).
test-slow: $(VENV)/.installed base-model
	$(BIN)/python -m pytest -m slow -q $(ARGS)

# Math verifications/s and code programs/s on 2 reward workers, and the ratio to math-verify called directly.
# TRL, the peer, lives in .venv-bench (layered over .venv), never in the runtime environment.
.venv-bench/.installed: $(VENV)/.installed scripts/bench_env.sh
	bash scripts/bench_env.sh $(VENV) .venv-bench
	touch $@

bench: $(VENV)/.installed base-model .venv-bench/.installed
	$(BIN)/python scripts/bench.py $(ARGS)

# The same comparison over response length x model x group size (docs/benchmarks.md); ARGS="--lengths 64 --steps 2".
bench-sweep: $(VENV)/.installed base-model .venv-bench/.installed
	$(BIN)/python scripts/bench_sweep.py $(ARGS)

# One trainer update on one long answer (1k-32k tokens): purerl chunked / materialized / TRL, memory and time, and an
# end-to-end step at 8,192 forced tokens (docs/benchmarks.md); ARGS="--lengths 1024 4096 --no-e2e".
bench-long: $(VENV)/.installed base-model .venv-bench/.installed
	$(BIN)/python scripts/bench_long.py $(ARGS)

# Full fine-tuning against LoRA (rank 8, 32; merged and adapter syncs): sync bytes and seconds, trainer memory, step
# time, on the tiny MoE, the sweep's 57 M MoE and a dense model of its size (docs/lora.md).
bench-lora: $(VENV)/.installed base-model
	$(BIN)/python scripts/bench_lora.py $(ARGS)

# The sync check's figures after a correct sync and after a missed one, fp32 and bf16 side by side (docs/objectives.md).
bf16-gap: $(VENV)/.installed base-model
	$(BIN)/python scripts/bf16_gap.py $(ARGS)

# The learning table in bf16: fp32, bf16, bf16+TIS, bf16+replay, bf16+both on the tiny MoE and the tiny DeepSeek-V3,
# the extremes with a second seed; runs/precision/ and docs/img/precision.png (docs/objectives.md).
precision: $(VENV)/.installed base-model
	$(BIN)/python scripts/precision.py $(ARGS)

# Seeded faults (engines, trainer ranks, a reward worker, the driver killed or frozen; a checkpoint cut short) over
# a supervised 40-step run with 2 trainer ranks, checked against an undisturbed run (about 25 minutes).
chaos: $(VENV)/.installed base-model
	$(BIN)/python scripts/chaos.py $(ARGS)

routing-gap: $(VENV)/.installed base-model
	$(BIN)/python scripts/routing_gap.py $(ARGS)

# DeepSeek-V3's correction bias kept alive during RL or frozen, with routing replay on and off (docs/objectives.md).
moe-bias: $(VENV)/.installed
	$(BIN)/python scripts/moe_bias.py $(ARGS)

# A checkpoint of the tiny MoE written locally, uploaded to S3 on loopback and downloaded (docs/cluster.md).
bench-storage: $(VENV)/.installed base-model
	$(BIN)/python scripts/bench_storage.py $(ARGS)

bench-rewards: $(VENV)/.installed
	$(BIN)/python scripts/bench_rewards.py --workers 2 $(ARGS)

bench-sync: $(VENV)/.installed base-model
	$(BIN)/python scripts/bench_sync.py $(ARGS)

bench-trainer: $(VENV)/.installed base-model
	$(BIN)/python scripts/bench_trainer.py $(ARGS)

# A Ray head on this machine (add workers with `ray start --address=<head>:$(RAY_PORT)`). Jobs go to its
# dashboard address; a run started in a shell with RAY_ADDRESS=<head>:$(RAY_PORT) joins the cluster directly.
# The venv's bin comes first on the head's PATH, so a job's `python` is the project's.
ray-up: $(VENV)/.installed
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/ray start --head --port=$(RAY_PORT) --dashboard-host=127.0.0.1 --dashboard-port=$(RAY_DASHBOARD_PORT) \
		$(if $(RAY_CPUS),--num-cpus=$(RAY_CPUS)) --disable-usage-stats
	@echo "submit jobs with: RAY_ADDRESS=http://127.0.0.1:$(RAY_DASHBOARD_PORT) make submit"

ray-down: $(VENV)/.installed
	$(BIN)/ray stop

# Sends `python -m rl.train` to the cluster at RAY_ADDRESS (its dashboard, http://<head>:8265) with this folder
# as the job's working_dir; the cluster's nodes need the same Python environment (make install).
submit: $(VENV)/.installed base-model
	@test -n "$$RAY_ADDRESS" || { echo "make submit: set RAY_ADDRESS to the cluster's dashboard, e.g. http://127.0.0.1:8265" >&2; exit 2; }
	$(BIN)/python scripts/submit.py --config $(CONFIG) -- $(if $(RUN_DIR),'run.dir=$(RUN_DIR)') $(if $(RESUME),run.resume=true) $(ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check rl rewards rollout tests scripts

clean:
	rm -rf $(VENV) .venv-bench models runs .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
