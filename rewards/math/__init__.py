"""The "math" verifier: answer selection, normalisation, exact arithmetic, and math-verify behind guards."""

from rewards.math.verifier import math_verifier

__all__ = ["math_verifier"]
