"""tests/gpu/ runs on a machine with CUDA GPUs and vLLM (`make test-gpu`); anywhere else it is skipped, and the
reason is shown."""

import importlib.util

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    reason = None
    if not torch.cuda.is_available():
        reason = "no CUDA GPU on this machine (tests/gpu/ needs one: make test-gpu)"
    elif importlib.util.find_spec("vllm") is None:
        reason = "vLLM is not installed (make install picks it on a GPU machine)"
    for item in items:
        if "tests/gpu/" in str(item.fspath):
            item.add_marker(pytest.mark.gpu)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))
