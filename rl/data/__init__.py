"""Prompt datasets: loading and checking rows, and the R1-Zero prompt template."""

from rl.data.prompts import PromptRow, apply_template, load_prompts

__all__ = ["PromptRow", "apply_template", "load_prompts"]
