"""Verifier registry: built-in names, `pkg.mod:attr` dotted paths, and the `purerl.verifiers` entry points."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points

from rewards.types import Reward

Verifier = Callable[..., Reward]
ENTRY_POINT_GROUP = "purerl.verifiers"

_REGISTRY: dict[str, Verifier] = {}


class UnknownVerifierError(KeyError, ValueError):
    """Raised for a name that is neither registered, a dotted path, nor an entry point."""

    def __str__(self) -> str:  # KeyError would repr-quote the message
        return str(self.args[0])
_BUILTIN_MODULES = ("rewards.math_verifier", "rewards.code", "rewards.format")


def register_verifier(name: str) -> Callable[[Verifier], Verifier]:
    """Decorator: `@register_verifier("math")`. A name can be registered only once."""

    def deco(fn: Verifier) -> Verifier:
        if name in _REGISTRY:
            raise ValueError(f"verifier {name!r} is already registered (by {_describe(_REGISTRY[name])})")
        _REGISTRY[name] = fn
        return fn

    return deco


def verifier_name(fn: Verifier) -> str:
    """A readable name for a verifier or a factory product."""
    return getattr(fn, "name", None) or getattr(fn, "__name__", None) or repr(fn)


def _describe(fn: Verifier) -> str:
    return f"{getattr(fn, '__module__', '?')}.{verifier_name(fn)}"


def _load_builtins() -> None:
    for mod in _BUILTIN_MODULES:
        importlib.import_module(mod)  # each module registers its verifiers on import


def discover_entry_points(eps=None) -> dict[str, object]:
    """Entry points of group `purerl.verifiers` as {name: EntryPoint}; `eps` overrides discovery (tests)."""
    if eps is None:
        eps = entry_points(group=ENTRY_POINT_GROUP)
    return {ep.name: ep for ep in eps}


def _load_dotted(path: str) -> Verifier:
    mod_name, _, attr = path.partition(":")
    obj = importlib.import_module(mod_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{path!r} is not callable")
    return obj


def get_verifier(name: str, eps=None) -> Verifier:
    """Resolve a registered name, a `pkg.mod:attr` path, or an entry point of group `purerl.verifiers`."""
    _load_builtins()
    if name in _REGISTRY:
        return _REGISTRY[name]
    if ":" in name:
        return _load_dotted(name)
    found = discover_entry_points(eps)
    if name in found:
        fn = found[name].load()
        _REGISTRY.setdefault(name, fn)
        return fn
    known = sorted(set(_REGISTRY) | set(found))
    raise UnknownVerifierError(f"unknown verifier {name!r}; known: {', '.join(known)} (or use a 'pkg.module:function' path)")


def list_verifiers() -> list[str]:
    _load_builtins()
    return sorted(set(_REGISTRY) | set(discover_entry_points()))
