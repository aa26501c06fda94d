"""The addition task's base model on the DeepSeek-V3 architecture: the same corpus and tokenizer recipe as
rl/tasks/arithmetic/base_model.py, pretrained into rl.tasks.pretrain.deepseek_v3 on twice the documents (with 48,000
its column-by-column traces were right 11% of the time, against 69% with 96,000; the tiny Qwen3-MoE's: 88% with
48,000). `configs/tiny-dsv3.yaml` trains it.
`python -m rl.tasks.arithmetic.deepseek --out models/tiny-dsv3-base` (deterministic, minutes on 2 cores).
"""

from __future__ import annotations

from rl.tasks.arithmetic.base_model import CAREFUL_SHARE, corpus
from rl.tasks.pretrain import Recipe, deepseek_v3, main

RECIPE = Recipe(corpus, out="models/tiny-dsv3-base", num_docs=96000, vocab_size=512,
                meta={"careful_share": CAREFUL_SHARE, "architecture": "deepseek_v3"},
                sources=("rl.tasks.arithmetic.task", "rl.tasks.arithmetic.deepseek"), architecture=deepseek_v3)

if __name__ == "__main__":
    main(RECIPE, __doc__)
