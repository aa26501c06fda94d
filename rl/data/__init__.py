"""The prompts stage: loading and checking datasets, the prompt template, and the data cursor."""

from rl.data.prompts import PromptRow, PromptSet, apply_template, concat, encode, load_prompts

__all__ = ["PromptRow", "PromptSet", "apply_template", "concat", "encode", "load_prompts"]
