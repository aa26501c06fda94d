"""The "math" verifier: answer selection, normalisation, exact arithmetic, and math-verify behind guards."""

from rewards.math.verifier import MathVerifier, math_reward, math_verifier

__all__ = ["MathVerifier", "math_reward", "math_verifier"]
