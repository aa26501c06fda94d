"""Verifiers that fail, for tests/test_bad_inputs.py: one raises on every item, one returns a bare float."""


def always_raises(response: str, reference, **metadata):
    raise ValueError("boom")


def returns_float(response: str, reference, **metadata):
    return 0.5
