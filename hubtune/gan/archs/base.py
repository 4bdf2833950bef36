"""What every GAN architecture is: a name and a title, a typed options dataclass (its command-line flags are generated
from it), per-preset training defaults, ``build(...)`` and optional generator regularisers.

An architecture is one :class:`GANArchitecture` subclass registered in :data:`hubtune.gan.archs.ARCHITECTURES`
(``@register_architecture``). ``role = "gan"`` builds a generator and its discriminator (``--arch NAME``);
``role = "discriminator"`` builds a discriminator that replaces the arch's own (``--discriminator PREFIX:...``, with
``prefixes`` naming the prefixes it answers). The run config, the loop, the card and ``Generator.from_pretrained``
ask the architecture; none of them compares architecture names. Nothing here imports torch: the models are
imported by ``build`` and ``generator_class`` when called, so ``hubtune gan --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from dataclasses import dataclass
from typing import Any, ClassVar

from hubtune.errors import ConfigError

__all__ = ["ArchConfig", "GANArchitecture", "TrainingDefaults", "GeneratorRegulariser", "check_positive_int", "option",
           "load"]


def load(reference: str) -> Any:
    """The object named by ``"package.module:attribute"``, its module imported on first use: an architecture names
    its model classes this way, so that registering it (and ``hubtune gan --help``) imports no torch."""
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)


def option(default: Any = None, help: str = "", **metadata: Any) -> Any:  # noqa: A002 - argparse's word
    """A field of an :class:`ArchConfig`: its default and the help of its generated flag."""
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


def check_positive_int(name: str, value: Any, optional: bool = False) -> None:
    """ConfigError unless ``value`` is an int >= 1 (or None when ``optional``)."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def check_fraction(name: str, value: Any) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= 1):
        raise ConfigError(f"{name} must be in [0, 1], got {value!r}")


@dataclass
class ArchConfig:
    """Base of an architecture's options: dataclass fields with defaults (``None``: the architecture's or its
    preset's value, filled by :meth:`GANArchitecture.resolve`). Each field is a ``hubtune gan`` flag."""

    @classmethod
    def option_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainingDefaults:
    """What a run's training fields left ``None`` take (per architecture and preset)."""

    lr: float
    betas: tuple[float, float]
    r1_gamma: float
    r1_every: int
    ema_decay: float


class GeneratorRegulariser:
    """A penalty on the generator applied every ``interval`` generator steps, weighted ``weight * interval`` (lazy
    regularisation), with a per-process state that checkpoints keep (JSON values)."""

    interval: int = 1
    weight: float = 0.0

    def penalty(self, G: Any, batch_size: int, device: Any, autocast: Any) -> Any:
        raise NotImplementedError

    def logged_values(self, penalty: Any) -> dict[str, Any]:
        """Tensors to log on the steps the penalty ran."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def to(self, device: Any) -> "GeneratorRegulariser":
        return self


class GANArchitecture:
    """A registered GAN architecture bound to one validated options object (``config_class``).

    Class attributes: ``name`` (registry key, written into the generator's config.json as ``arch``), ``title``
    (the card's), ``config_class``, ``role`` (``"gan"`` or ``"discriminator"``) and, for discriminators,
    ``prefixes``. ``resume_keys`` are the options that a checkpoint and the run resuming from it must agree on
    (default: all of them).
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    config_class: ClassVar[type[ArchConfig]] = ArchConfig
    role: ClassVar[str] = "gan"
    prefixes: ClassVar[tuple[str, ...]] = ()
    default_latent_dim: ClassVar[int] = 64

    def __init__(self, config: ArchConfig | dict[str, Any] | None = None) -> None:
        if not isinstance(config, ArchConfig):
            values = dict(config or {})
            unknown = sorted(set(values) - set(self.config_class.option_names()))
            if unknown:
                raise ConfigError(
                    f"--{unknown[0]} does not apply to {self.describe()} (its options: "
                    f"{', '.join(self.config_class.option_names()) or 'none'}); remove it or choose the architecture "
                    "it belongs to."
                )
            config = self.config_class(**values)
        self.config = config

    @classmethod
    def describe(cls) -> str:
        return f"--arch {cls.name}" if cls.role == "gan" else f"--discriminator {cls.prefixes[0] if cls.prefixes else cls.name}:..."

    @property
    def resume_keys(self) -> list[str]:
        return self.config_class.option_names()

    # -------------------------------------------------------------------------------- the run's values

    def resolve(self, batch_size: int) -> None:
        """Fill the options left ``None`` (e.g. from a preset); given values are kept."""

    def latent_dim(self) -> int:
        """The latent size when the run leaves ``latent_dim`` unset."""
        return self.default_latent_dim

    def training_defaults(self, batch_size: int) -> TrainingDefaults:
        """Learning rates, Adam betas, R1 and EMA that the run's fields left ``None`` take."""
        return TrainingDefaults(lr=2e-4, betas=(0.5, 0.999), r1_gamma=0.0, r1_every=1, ema_decay=0.999)

    def check(self, image_size: int, batch_size: int) -> None:
        """ConfigError for options that do not fit together or with the run (called after :meth:`resolve`)."""

    # -------------------------------------------------------------------------------- models

    def build(self, image_size: int, channels: int, latent_dim: int) -> tuple[Any, Any]:
        """A matching (generator, discriminator) pair (role ``"gan"``)."""
        raise NotImplementedError

    def build_discriminator(self, spec: str, image_size: int, channels: int) -> Any:
        """The discriminator named by ``spec`` (role ``"discriminator"``)."""
        raise NotImplementedError

    generator: ClassVar[str | type | None] = None  # the Generator subclass, or its "module:Class" reference

    @classmethod
    def generator_class(cls) -> type:
        """The :class:`~hubtune.gan.models.Generator` subclass that ``Generator.from_pretrained`` builds for
        ``arch = name`` (role ``"gan"``): ``generator``, loaded when a reference."""
        if cls.generator is None:
            raise NotImplementedError(f"{cls.__name__} names no generator class")
        return load(cls.generator) if isinstance(cls.generator, str) else cls.generator

    def generator_regularisers(self, batch_size: int) -> list[GeneratorRegulariser]:
        """Penalties on the generator (e.g. StyleGAN2's path length); none by default."""
        return []

    def card_details(self) -> dict[str, Any]:
        """What the card shows of a discriminator built from ``spec`` (role ``"discriminator"``)."""
        return {}
