"""Names of a package imported when first used (PEP 562), so that importing the package stays light.

    __getattr__, __dir__ = lazy_exports(__name__, {"Name": "hubtune.module", ...}, globals())

Nothing here imports the rest of hubtune.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: Mapping[str, str], namespace: dict[str, Any],
                 fallback: Callable[[str], Any] | None = None) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module-level ``__getattr__`` and ``__dir__`` of ``package``: ``exports`` maps a name to the module that
    defines it; a name is imported on first use and then kept in ``namespace`` (the package's ``globals()``).
    ``fallback(name)`` answers names that are not exported (or raises AttributeError)."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            if fallback is not None:
                return fallback(name)
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
