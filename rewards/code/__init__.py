"""The "code" verifier: program extraction, test kinds, and the process sandbox it runs programs in."""

from rewards.code.verifier import code_verifier, extract_program, json_equal

__all__ = ["code_verifier", "extract_program", "json_equal"]
