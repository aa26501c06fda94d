"""The collect stage: rollout groups from the engines, scored by the verifiers (dynamic sampling, async prefetch)."""
