"""Verifier lookup: built-in names, factory calls, `pkg.mod:attr` dotted paths, and the `purerl.verifiers` entry
points. Names live in two `rl.registry.Registry` objects, the one registry class of purerl."""

from __future__ import annotations

import ast
import functools
import importlib
import re
from collections.abc import Callable, Iterable
from importlib.metadata import EntryPoint, entry_points

from rewards.types import Reward
from rl.errors import UserError
from rl.registry import Registry, UnknownNameError

Verifier = Callable[..., Reward]
ENTRY_POINT_GROUP = "purerl.verifiers"
_BUILTIN_MODULES = ("rewards.math.verifier", "rewards.code.verifier", "rewards.format", "rewards.procedural")

VERIFIERS: Registry[Verifier] = Registry("verifier")
FACTORIES: Registry[Callable[..., Verifier]] = Registry("verifier factory")
_PRODUCTS: dict[str, Verifier] = {}  # "format(partial_credit=0.5)" -> the factory's product, made once
_ENTRY_POINT_PATHS: dict[str, str] = {}  # name -> "pkg.mod:attr" of verifiers loaded from entry points
_FACTORY_CALL = re.compile(r"([A-Za-z_]\w*)\((.*)\)", re.DOTALL)


class UnknownVerifierError(UnknownNameError):
    """Raised for a name that is neither registered, a factory call, a dotted path, nor an entry point."""


def register_verifier(name: str) -> Callable[[Verifier], Verifier]:
    """Decorator: `@register_verifier("math")`. A name can be registered only once."""
    return VERIFIERS.register(name)


def register_verifier_factory(name: str) -> Callable[[Callable[..., Verifier]], Callable[..., Verifier]]:
    """Decorator for a factory of parameterised verifiers, so that a config can name a product by its call:
    `@register_verifier_factory("format")` makes "format(partial_credit=0.5)" a verifier name."""
    return FACTORIES.register(name)


def _product(spec: str) -> Verifier:
    """The verifier named by a factory call such as "format(partial_credit=0.5)"; literal keyword arguments only."""
    m = _FACTORY_CALL.fullmatch(spec.strip())
    if m is None or m.group(1) not in FACTORIES:
        raise UnknownVerifierError(f"unknown verifier factory in {spec!r}; known factories: {', '.join(FACTORIES.names())}")
    try:
        call = ast.parse(f"f({m.group(2)})", mode="eval").body
        if call.args:
            raise ValueError("positional arguments are not accepted")
        kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
    except (SyntaxError, ValueError) as e:
        raise UserError(f"bad verifier factory call {spec!r}: use literal keyword arguments ({e})") from e
    return FACTORIES.get(m.group(1))(**kwargs)


def verifier_name(fn: Verifier) -> str:
    """A readable name for a verifier or a factory product."""
    return getattr(fn, "name", None) or getattr(fn, "__name__", None) or repr(fn)


def _load_builtins() -> None:
    for mod in _BUILTIN_MODULES:
        importlib.import_module(mod)  # each module registers its verifiers on import


def _by_name(eps: Iterable[EntryPoint]) -> dict[str, tuple[EntryPoint, ...]]:
    found: dict[str, tuple[EntryPoint, ...]] = {}
    for ep in eps:
        if all(other.value != ep.value for other in found.get(ep.name, ())):
            found[ep.name] = (*found.get(ep.name, ()), ep)
    return found


@functools.lru_cache(maxsize=1)
def _installed() -> dict[str, tuple[EntryPoint, ...]]:
    return _by_name(entry_points(group=ENTRY_POINT_GROUP))  # scanning installed packages is slow: once a process


def discover_entry_points(eps: Iterable[EntryPoint] | None = None) -> dict[str, tuple[EntryPoint, ...]]:
    """Entry points of group `purerl.verifiers` by name; `eps` replaces the installed ones (tests)."""
    return _installed() if eps is None else _by_name(eps)


def _adopt(name: str, candidates: tuple[EntryPoint, ...]) -> Verifier:
    if len(candidates) > 1:
        raise UserError(f"verifier {name!r} is declared by several entry points: {[ep.value for ep in candidates]}")
    fn = candidates[0].load()
    register_verifier(name)(fn)  # rejects an entry point that reuses a name registered by another verifier
    _ENTRY_POINT_PATHS[name] = candidates[0].value
    return fn


def _load_dotted(path: str) -> Verifier:
    """The verifier at `pkg.mod:attr`; UnknownVerifierError naming what is missing (the module, the attribute,
    or a callable). An error inside the module's own code keeps its traceback: that is a bug in it."""
    mod_name, _, attr = path.partition(":")
    try:
        obj = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        if e.name is None or not (mod_name == e.name or mod_name.startswith(e.name + ".")):
            raise  # the module exists, and fails importing something of its own
        raise UnknownVerifierError(f"verifier {path!r}: no module named {e.name!r} (is its folder on PYTHONPATH, or "
                                   f"its package installed?)") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UnknownVerifierError(f"verifier {path!r}: {mod_name} has no {part!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UnknownVerifierError(f"verifier {path!r} is a {type(obj).__name__}, not a callable")
    return obj


def get_verifier(name: str, eps: Iterable[EntryPoint] | None = None) -> Verifier:
    """Resolve a registered name, a `pkg.mod:attr` path, a factory call like "format(partial_credit=0.5)",
    or an entry point of group `purerl.verifiers`.

    A name claimed by two verifiers (two entry points, or an entry point and a registration) is an error."""
    _load_builtins()
    found = discover_entry_points(eps)
    if name in VERIFIERS:
        if name in found and name not in _ENTRY_POINT_PATHS:
            _adopt(name, found[name])  # raises unless the entry point is this very verifier
        return VERIFIERS.get(name)
    if ":" in name:
        return _load_dotted(name)
    if name.endswith(")"):
        if name not in _PRODUCTS:
            _PRODUCTS[name] = _product(name)
        return _PRODUCTS[name]
    if name in found:
        return _adopt(name, found[name])
    known = sorted(set(VERIFIERS.names()) | set(found))
    raise UnknownVerifierError(f"unknown verifier {name!r}; known: {', '.join(known)} (or use a 'pkg.module:function' path)")


def portable_ref(name: str) -> str:
    """How a worker process finds the verifier `name` resolved here: entry points travel as their dotted path."""
    return _ENTRY_POINT_PATHS.get(name, name)


def list_verifiers() -> list[str]:
    _load_builtins()
    return sorted(set(VERIFIERS.names()) | set(discover_entry_points()))
