"""A tiny name -> function registry, shared by advantages, losses and verifiers.

Each registry holds one kind of swappable piece with one signature; unknown or duplicate names fail loudly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

F = TypeVar("F", bound=Callable)


class Registry(Generic[F]):
    """Maps names to functions of one kind (e.g. "advantage", "loss")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, F] = {}

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator that registers `fn` under `name`; a name already taken raises ValueError."""

        def decorator(fn: F) -> F:
            if name in self._items:
                raise ValueError(f"duplicate {self.kind} name {name!r}: already registered")
            self._items[name] = fn
            return fn

        return decorator

    def get(self, name: str) -> F:
        """The function registered as `name`; an unknown name raises ValueError listing the valid ones."""
        if name not in self._items:
            raise ValueError(f"unknown {self.kind} {name!r}; valid names: {', '.join(self.names())}")
        return self._items[name]

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
