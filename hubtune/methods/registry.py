"""The registry of training methods (see :mod:`hubtune.methods`)."""

from __future__ import annotations

from typing import Any

from hubtune.errors import MethodError
from hubtune.methods.base import MethodConfig, TrainingMethod

__all__ = ["register_method", "unregister_method", "get_method", "available_methods", "create_method"]

_REGISTRY: dict[str, type[TrainingMethod]] = {}


def register_method(cls: type[TrainingMethod]) -> type[TrainingMethod]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if not cls.name:
        raise MethodError(f"{cls.__name__} needs a non-empty `name` to be registered.")
    if not (isinstance(cls.config_class, type) and issubclass(cls.config_class, MethodConfig)):
        raise MethodError(f"{cls.__name__}.config_class must be a MethodConfig dataclass.")
    _REGISTRY[cls.name] = cls
    return cls


def unregister_method(name: str) -> None:
    """Remove a registered method (for tests and plug-ins)."""
    _REGISTRY.pop(name, None)


def available_methods() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get_method(name: str) -> type[TrainingMethod]:
    """The registered method class ``name``; MethodError listing the valid names otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise MethodError(f"Unknown method {name!r}; choose one of {', '.join(_REGISTRY)}.") from None


def create_method(name: str, config: MethodConfig | dict[str, Any] | None = None) -> TrainingMethod:
    """The method ``name`` bound to a validated config (a dict of knobs, a config object or None)."""
    return get_method(name)(config)
