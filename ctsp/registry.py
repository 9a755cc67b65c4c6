"""Named choices: one registry per kind of choice (solver, rate function, learning rule, …).

A :class:`Registry` maps names to objects (classes, functions, or a description string for a
plain option). It is the single source of truth for its choice: the configuration validates a
value against it, the error lists the valid names, ``ctsp simulate --help-config`` prints them,
and adding an entry is one line (or one :meth:`Registry.register` call). Names that look
plausible but are refused for a reason (a solver that is known to be wrong here) carry that
reason into the error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> entries of one kind; unknown names raise :class:`ConfigError` with the list.

    Args:
        kind: what an entry is, for messages ("solver", "learning rule", …).
        entries: the initial name -> entry table, in the order the names are listed.
        refused: names that are recognised but refused, name -> the reason.
    """

    def __init__(
        self, kind: str, entries: dict[str, T] | None = None, refused: dict[str, str] | None = None
    ) -> None:
        self.kind = kind
        self._entries: dict[str, T] = dict(entries or {})
        self._refused: dict[str, str] = dict(refused or {})

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def items(self):
        return self._entries.items()

    def error(self, name: object, key: str | None = None) -> ConfigError:
        """The one-line error for a name that is not registered (``key``: the config key)."""
        valid = ", ".join(self._entries)
        what = f"invalid value for {key}: {name!r}" if key else f"unknown {self.kind} {name!r}"
        reason = self._refused.get(name) if isinstance(name, str) else None
        if reason:
            return ConfigError(f"{what} is refused: {reason}; valid: {valid}")
        return ConfigError(f"{what}; valid: {valid}")

    def check(self, name: str, key: str | None = None) -> str:
        """``name`` if registered, else raise :meth:`error`."""
        if name not in self._entries:
            raise self.error(name, key)
        return name

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise self.error(name) from None

    def register(self, name: str, entry: T | None = None) -> Callable[[T], T] | T:
        """Add ``entry`` under ``name`` (or use as a decorator: ``@REG.register("name")``).
        A name may be registered once; :meth:`unregister` removes it again."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered already")

        def add(obj: T) -> T:
            self._entries[name] = obj
            return obj

        return add if entry is None else add(entry)

    def unregister(self, name: str) -> None:
        del self._entries[name]

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"
