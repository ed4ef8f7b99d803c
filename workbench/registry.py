"""One registry per method family (KD methods, filter-pruning methods, CIL methods, RL algorithms, ...).

In the style of Torch-Pruning's importance registry: a family declares ``METHODS = Registry("KD method")``;
each method's module registers itself once, with ``@METHODS.register("name")`` on a class or function (or
``METHODS.register("name", obj)``). The CLI's choices, ``--help``, the compares' defaults and the
registry-wide tests read ``METHODS.names()``; lookup of an unknown name is the standard one-line error with
a did-you-mean. The entry is whatever the family needs (a class with a config dataclass and a ``build``,
a function); the registry does not impose it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar, overload

from workbench.errors import unknown

T = TypeVar("T")


class Registry(Generic[T]):
    """Name → entry for one method family, in registration order.

    Args:
        family: what an entry is, for error messages (``"KD method"`` → ``unknown KD method 'x'``).
        modules: modules imported on first lookup, so that entries defined there register themselves
            (lets a family's ``__init__`` stay free of heavy imports).
    """

    def __init__(self, family: str, modules: Sequence[str] = ()) -> None:
        self.family = family
        self._modules = tuple(modules)
        self._loaded = not self._modules
        self._entries: dict[str, T] = {}

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for m in self._modules:
                importlib.import_module(m)

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, entry: T) -> T: ...

    def register(self, name: str, entry: Any = None) -> Any:
        """Register ``entry`` under ``name`` (or decorate it); a name registered twice is a programming error."""

        def add(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.family} '{name}' is registered twice")
            self._entries[name] = obj
            return obj

        return add if entry is None else add(entry)

    def __getitem__(self, name: str) -> T:
        self._load()
        if name not in self._entries:
            raise unknown(self.family, name, self._entries)
        return self._entries[name]

    def get(self, name: str) -> T:
        """``self[name]``: the entry, or the one-line ``unknown ...`` error naming the valid choices."""
        return self[name]

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load()
        return len(self._entries)

    def names(self) -> tuple[str, ...]:
        """Registered names, in registration order."""
        self._load()
        return tuple(self._entries)

    def items(self) -> list[tuple[str, T]]:
        self._load()
        return list(self._entries.items())

    def __repr__(self) -> str:
        return f"Registry({self.family!r}, {list(self._entries)})"
