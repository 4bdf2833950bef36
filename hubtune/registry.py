"""The one registry style of hubtune: a named table of plug-ins, filled by a decorator.

Methods, GAN architectures, OOD scores and export layouts are each one :class:`Registry`. A plug-in is a
class (or an object) with a ``name``; its module registers it with ``@REGISTRY.register`` (or
``REGISTRY.register(obj)``), and a test or a plug-in package can add its own the same way and remove it with
:meth:`Registry.unregister`. Looking up an unknown name raises the registry's error class with the valid
names, so the command line prints one line.

Nothing here imports the rest of hubtune but :mod:`hubtune.errors`: every layer may hold a registry.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from hubtune.errors import ConfigError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Named plug-ins of one kind (``kind`` is what the error messages call them, e.g. ``"method"``).

    ``check`` (optional) is called with each plug-in before it is registered and raises if it is malformed.
    """

    def __init__(self, kind: str, error: type[Exception] = ConfigError,
                 check: Callable[[T], None] | None = None) -> None:
        self.kind = kind
        self.error = error
        self._check = check
        self._entries: dict[str, T] = {}

    def register(self, entry: T) -> T:
        """Make ``entry`` available under ``entry.name``; returns ``entry`` (usable as a class decorator)."""
        name = getattr(entry, "name", None)
        if not isinstance(name, str) or not name:
            what = getattr(entry, "__name__", type(entry).__name__)
            raise self.error(f"{what} needs a non-empty `name` to be registered as a {self.kind}.")
        if self._check is not None:
            self._check(entry)
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove ``name`` (for tests and plug-ins); a name that is not registered is ignored."""
        self._entries.pop(name, None)

    def get(self, name: str) -> T:
        """The plug-in registered as ``name``; the registry's error, naming the valid choices, otherwise."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise self.error(
                f"Unknown {self.kind} {name!r}; choose one of {', '.join(self._entries) or '(none registered)'}."
            ) from None

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def items(self):
        return self._entries.items()

    def values(self):
        return self._entries.values()

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"
