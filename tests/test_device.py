"""The trainer's device and precision on this CPU machine: trainer.device resolution, bf16 mixed precision with
fp32 master weights, activation checkpointing (same values and gradients), and the GPU-only parts refusing
clearly where no GPU is."""

import pytest
import torch
from test_update import batch_for

from rl.config import load_config
from rl.errors import ConfigError
from rl.trainer.device import compute_dtype, trainer_device
from rl.trainer.rank import Trainer

MODEL = "models/tiny-moe-base"


def test_device_and_precision_resolution_on_cpu():
    cfg = load_config("configs/tiny.yaml")
    assert trainer_device(cfg) == torch.device("cpu") and compute_dtype(cfg, torch.device("cpu")) is None
    assert compute_dtype(load_config("configs/tiny.yaml", ["trainer.mixed_precision=bf16"]), torch.device("cpu")) == torch.bfloat16
    assert compute_dtype(cfg, torch.device("cuda")) == torch.bfloat16  # auto: bf16 on cuda
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="trainer.device=cuda, but this process sees no GPU"):
            trainer_device(load_config("configs/tiny.yaml", ["trainer.device=cuda"]))


def test_bf16_mixed_precision_keeps_fp32_masters_and_close_logprobs():
    fp32 = Trainer(load_config("configs/tiny.yaml", ["algo.kl_coef=0"]), MODEL, MODEL)
    mixed = Trainer(load_config("configs/tiny.yaml", ["algo.kl_coef=0", "trainer.mixed_precision=bf16"]), MODEL, MODEL)
    from rl.data import apply_template
    from rl.trainer.policy import load_tokenizer

    text = apply_template("What is 47 + 85?", "r1_zero") + " 7+5=12 , 40+80=120 , 120+12=132 </think> <answer> 132 </answer>"
    ids = torch.tensor([load_tokenizer(MODEL)(text)["input_ids"]])
    a, _ = fp32.logprobs(ids, torch.ones_like(ids))
    b, _ = mixed.logprobs(ids, torch.ones_like(ids))
    gap = (a - b)[0, -20:].abs()  # the answer's tokens
    assert gap.max() > 1e-6 and gap.mean() < 0.02  # bf16 arithmetic: a real difference, and a small one
    batch = batch_for(fp32.policy)
    m = mixed.update(batch).metrics
    assert m["grad_norm"] > 0 and all(p.dtype == torch.float32 for p in mixed.policy.parameters())


def test_activation_checkpointing_changes_memory_not_values():
    plain = Trainer(load_config("configs/tiny.yaml", ["algo.kl_coef=0", "trainer.pack_sequences=false"]), MODEL, MODEL)
    ckpt = Trainer(load_config("configs/tiny.yaml", ["algo.kl_coef=0", "trainer.pack_sequences=false",
                                                     "trainer.activation_checkpointing=true"]), MODEL, MODEL)
    assert ckpt.policy.is_gradient_checkpointing and not plain.policy.is_gradient_checkpointing
    batch = batch_for(plain.policy)
    ma, mb = plain.update(batch).metrics, ckpt.update(batch).metrics
    assert mb["loss/policy"] == pytest.approx(ma["loss/policy"], rel=1e-5)
    assert mb["grad_norm"] == pytest.approx(ma["grad_norm"], rel=1e-4)
    for (n, p), (_, q) in zip(plain.policy.named_parameters(), ckpt.policy.named_parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5, msg=n)  # the same step from the same start
