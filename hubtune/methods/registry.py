"""The registry of training methods (see :mod:`hubtune.methods`)."""

from __future__ import annotations

from typing import Any

from hubtune.errors import MethodError
from hubtune.methods.base import MethodConfig, TrainingMethod
from hubtune.registry import Registry

__all__ = ["METHODS", "register_method", "unregister_method", "get_method", "available_methods", "create_method"]



def _check_method(cls: type[TrainingMethod]) -> None:
    if not (isinstance(cls.config_class, type) and issubclass(cls.config_class, MethodConfig)):
        raise MethodError(f"{cls.__name__}.config_class must be a MethodConfig dataclass.")


METHODS: Registry[type[TrainingMethod]] = Registry("method", MethodError, _check_method)


def register_method(cls: type[TrainingMethod]) -> type[TrainingMethod]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    return METHODS.register(cls)


def unregister_method(name: str) -> None:
    """Remove a registered method (for tests and plug-ins)."""
    METHODS.unregister(name)


def available_methods() -> tuple[str, ...]:
    return METHODS.names()


def get_method(name: str) -> type[TrainingMethod]:
    """The registered method class ``name``; MethodError listing the valid names otherwise."""
    return METHODS.get(name)


def create_method(name: str, config: MethodConfig | dict[str, Any] | None = None) -> TrainingMethod:
    """The method ``name`` bound to a validated config (a dict of knobs, a config object or None)."""
    return get_method(name)(config)
