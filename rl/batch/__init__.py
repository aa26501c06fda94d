"""Scored rollout groups -> the typed batches the update consumes (tokens, shaping, advantages)."""
