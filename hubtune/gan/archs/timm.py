"""A timm backbone as the discriminator (:class:`hubtune.gan.models.TimmFeatureDiscriminator`): ``--discriminator
timm:NAME`` (pretrained), ``timm-random:NAME[:seed]`` (random initialisation) or ``local-dir:PATH`` (a timm
``save_for_hf`` folder)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hubtune.errors import ConfigError
from hubtune.gan.archs.registry import register_architecture
from hubtune.gan.archs.base import ArchConfig, GANArchitecture, check_positive_int, load, option

__all__ = ["TimmDiscriminatorConfig", "TimmDiscriminator"]


@dataclass
class TimmDiscriminatorConfig(ArchConfig):
    discriminator_frozen: bool = option(False, "freeze the timm backbone (eval mode)")
    discriminator_stages: list[int] = field(default_factory=list, metadata={"help": (
        "timm feature stages (feature_info indices) whose average-pooled maps are concatenated (default: the "
        "backbone's pooled output)")})
    discriminator_input_size: int | None = option(
        None, "resize images to this size before the timm backbone (default: keep image_size)")
    discriminator_hidden: int = option(
        256, "width of the trainable projection after the timm backbone (AdaptiveMix's feature space)")

    def __post_init__(self) -> None:
        try:
            self.discriminator_stages = [int(i) for i in (self.discriminator_stages or [])]
        except (TypeError, ValueError):
            raise ConfigError(f"discriminator_stages must be integers, got {self.discriminator_stages!r}") from None
        check_positive_int("discriminator_input_size", self.discriminator_input_size, optional=True)
        check_positive_int("discriminator_hidden", self.discriminator_hidden)


@register_architecture
class TimmDiscriminator(GANArchitecture):
    name = "timm"
    title = "timm backbone"
    role = "discriminator"
    prefixes = ("timm", "timm-random", "local-dir")
    config_class = TimmDiscriminatorConfig

    def build_discriminator(self, spec, image_size, channels):
        c = self.config
        return load("hubtune.gan.models:build_timm_discriminator")(spec, c.discriminator_stages, c.discriminator_frozen,
                                        c.discriminator_input_size, c.discriminator_hidden)
