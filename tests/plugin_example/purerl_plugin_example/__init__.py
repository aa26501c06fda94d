"""Example purerl verifier package: see verifiers.py and docs/rewards.md."""
