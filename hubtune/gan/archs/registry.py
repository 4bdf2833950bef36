"""The registry of GAN architectures: :data:`ARCHITECTURES`, a :class:`hubtune.registry.Registry` (the methods' style)."""

from __future__ import annotations

from hubtune.errors import ConfigError
from hubtune.gan.archs.base import ArchConfig, GANArchitecture
from hubtune.registry import Registry

__all__ = ["ARCHITECTURES", "register_architecture", "unregister_architecture", "get_architecture", "architectures",
           "discriminator_for"]


def _check(cls: type[GANArchitecture]) -> None:
    if not (isinstance(cls.config_class, type) and issubclass(cls.config_class, ArchConfig)):
        raise ConfigError(f"{cls.__name__}.config_class must be an ArchConfig dataclass.")
    if cls.role not in ("gan", "discriminator"):
        raise ConfigError(f"{cls.__name__}.role must be 'gan' or 'discriminator', not {cls.role!r}.")
    if cls.role == "discriminator" and not cls.prefixes:
        raise ConfigError(f"{cls.__name__} is a discriminator: name the --discriminator prefixes it answers.")


ARCHITECTURES: Registry[type[GANArchitecture]] = Registry("GAN architecture", ConfigError, _check)


def register_architecture(cls: type[GANArchitecture]) -> type[GANArchitecture]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    return ARCHITECTURES.register(cls)


def unregister_architecture(name: str) -> None:
    ARCHITECTURES.unregister(name)


def architectures(role: str = "gan") -> tuple[str, ...]:
    """The registered names of one role (``"gan"``: ``--arch`` choices; ``"discriminator"``)."""
    return tuple(name for name, cls in ARCHITECTURES.items() if cls.role == role)


def get_architecture(name: str) -> type[GANArchitecture]:
    """The ``--arch`` architecture ``name``; ConfigError naming the valid ones otherwise."""
    cls = ARCHITECTURES.get(name) if name in architectures("gan") else None
    if cls is None:
        raise ConfigError(f"Unknown arch {name!r}; choose one of {', '.join(architectures('gan'))}.")
    return cls


def discriminator_for(spec: str) -> type[GANArchitecture]:
    """The discriminator architecture that answers ``--discriminator spec`` (``PREFIX:...``)."""
    for name in architectures("discriminator"):
        cls = ARCHITECTURES.get(name)
        if any(spec.startswith(prefix + ":") for prefix in cls.prefixes):
            return cls
    forms = [f"'{p}:...'" for name in architectures("discriminator") for p in ARCHITECTURES.get(name).prefixes]
    raise ConfigError(f"discriminator must be '' (the arch's own) or one of {', '.join(forms)}, got {spec!r}")
