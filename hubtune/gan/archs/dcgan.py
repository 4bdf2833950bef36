"""DCGAN and the SNGAN-style ResNet (:mod:`hubtune.gan.models`) as registered architectures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from hubtune.errors import ConfigError
from hubtune.gan.archs.registry import register_architecture
from hubtune.gan.archs.base import ArchConfig, GANArchitecture, check_positive_int, load, option

__all__ = ["DCGANConfig", "DCGAN", "ResNetConfig", "ResNetGAN"]

D_NORMS = ("spectral", "batch", "none")


@dataclass
class DCGANConfig(ArchConfig):
    g_channels: int | None = option(None, "generator width (dcgan default 32, resnet 64)")
    d_channels: int | None = option(None, "discriminator width (dcgan default 32, resnet 64)")
    d_norm: Literal["spectral", "batch", "none"] = option("spectral", "normalisation of the DCGAN discriminator: spectral, batch or none")

    def __post_init__(self) -> None:
        check_positive_int("g_channels", self.g_channels, optional=True)
        check_positive_int("d_channels", self.d_channels, optional=True)
        if self.d_norm not in D_NORMS:
            raise ConfigError(f"d_norm must be one of {', '.join(map(repr, D_NORMS))}, got {self.d_norm!r}")


@register_architecture
class DCGAN(GANArchitecture):
    name = "dcgan"
    title = "DCGAN"
    config_class = DCGANConfig
    default_latent_dim = 64
    generator = "hubtune.gan.models:DCGANGenerator"

    def build(self, image_size, channels, latent_dim):
        c = self.config
        return (self.generator_class()(latent_dim, image_size, channels, c.g_channels or 32),
                load("hubtune.gan.models:DCGANDiscriminator")(image_size, channels, c.d_channels or 32, norm=c.d_norm))


@dataclass
class ResNetConfig(ArchConfig):
    g_channels: int | None = option(None, "generator width (dcgan default 32, resnet 64)")
    d_channels: int | None = option(None, "discriminator width (dcgan default 32, resnet 64)")
    minibatch_std_group: int | None = option(
        None, "minibatch-stddev group size (resnet: default 0 = off; stylegan2: default the preset's). Groups are "
        "formed within each process's batch")

    def __post_init__(self) -> None:
        check_positive_int("g_channels", self.g_channels, optional=True)
        check_positive_int("d_channels", self.d_channels, optional=True)
        group = self.minibatch_std_group
        if group is not None and (isinstance(group, bool) or not isinstance(group, int) or group < 0):
            raise ConfigError(f"minibatch_std_group must be >= 0, got {group!r}")


@register_architecture
class ResNetGAN(GANArchitecture):
    name = "resnet"
    title = "ResNet (SNGAN-style)"
    config_class = ResNetConfig
    default_latent_dim = 128
    generator = "hubtune.gan.models:ResNetGenerator"

    def resolve(self, batch_size):
        if self.config.minibatch_std_group is None:
            self.config.minibatch_std_group = 0

    def build(self, image_size, channels, latent_dim):
        c = self.config
        return (self.generator_class()(latent_dim, image_size, channels, c.g_channels or 64),
                load("hubtune.gan.models:ResNetDiscriminator")(image_size, channels, c.d_channels or 64,
                                                               c.minibatch_std_group))
