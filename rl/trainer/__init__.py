"""The trainer: one rank or a group of them, the update, its forward passes, MoE, FSDP, checkpoints, weight export."""
