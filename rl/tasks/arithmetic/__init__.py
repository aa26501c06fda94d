"""Two-digit addition: the embedded default task (rl/tasks/arithmetic/data/) and its tiny Qwen3-MoE base model."""
