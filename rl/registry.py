"""The one name -> object registry of purerl: advantage estimators, losses, verifiers and their factories.

Each registry holds one kind of swappable piece with one signature. A piece may bring a config dataclass of its
own (its hyperparameters, read from YAML by rl.config); duplicate names fail, an unknown name lists the known.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from rl.errors import UserError

F = TypeVar("F", bound=Callable)


class UnknownNameError(UserError, KeyError):
    """A name that is not registered; the message lists the valid ones."""

    def __str__(self) -> str:  # KeyError would repr-quote the message
        return str(self.args[0])


class Registry(Generic[F]):
    """Maps names to objects of one kind (e.g. "advantage", "loss", "verifier"), each with an optional config
    class. Registering the same object under its name again is a no-op; another object under it is refused."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, F] = {}
        self._configs: dict[str, type | None] = {}

    def register(self, name: str, config: type | None = None) -> Callable[[F], F]:
        """Decorator that registers `fn` (and its config dataclass) under `name`."""

        def decorator(fn: F) -> F:
            if name in self._items and self._items[name] is not fn:
                raise ValueError(f"duplicate {self.kind} name {name!r}: already registered by {_where(self._items[name])}")
            self._items[name] = fn
            self._configs[name] = config
            return fn

        return decorator

    def get(self, name: str) -> F:
        """The object registered as `name`; an unknown name raises UnknownNameError listing the valid ones."""
        if name not in self._items:
            raise UnknownNameError(f"unknown {self.kind} {name!r}; valid names: {', '.join(self.names())}")
        return self._items[name]

    def config_class(self, name: str) -> type | None:
        """The config dataclass `name` was registered with (None: it takes no settings)."""
        self.get(name)
        return self._configs[name]

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._items)

    def copy(self) -> Registry[F]:
        """An independent registry with the same entries (tests register into a copy)."""
        other = Registry(self.kind)
        other._items, other._configs = dict(self._items), dict(self._configs)
        return other

    def __contains__(self, name: object) -> bool:
        return name in self._items


def _where(obj) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"
