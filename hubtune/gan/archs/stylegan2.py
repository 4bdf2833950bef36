"""StyleGAN2 (:mod:`hubtune.gan.stylegan2`) as a registered architecture: presets (widths and training defaults,
:mod:`hubtune.gan.presets`) and the path-length regulariser."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from hubtune.errors import ConfigError
from hubtune.gan.archs.registry import register_architecture
from hubtune.gan.archs.base import (
    ArchConfig,
    GANArchitecture,
    TrainingDefaults,
    check_fraction,
    check_positive_int,
    load,
    option,
)
from hubtune.gan.presets import STYLEGAN2_PRESETS, STYLEGAN2_TRAINING

__all__ = ["StyleGAN2Config", "StyleGAN2"]

_WIDTHS = ("w_dim", "mapping_layers", "channel_base", "channel_max")


@dataclass
class StyleGAN2Config(ArchConfig):
    arch_preset: Literal["small", "paper256", "cifar"] = option("small", "stylegan2 widths and training defaults: small (CPU-sized), paper256, cifar "
                                       "(StyleGAN2-ADA's configs)")
    w_dim: int | None = option(None, "stylegan2: w size (default: the preset's)")
    mapping_layers: int | None = option(None, "stylegan2: mapping network depth (preset's)")
    channel_base: int | None = option(None, "stylegan2: widths min(channel_base // resolution, channel_max) (preset's)")
    channel_max: int | None = option(None, "stylegan2: largest width (preset's)")
    minibatch_std_group: int | None = option(
        None, "minibatch-stddev group size (resnet: default 0 = off; stylegan2: default the preset's). Groups are "
        "formed within each process's batch")
    style_mixing_prob: float | None = option(None, "stylegan2: style mixing probability (preset's)")
    pl_weight: float | None = option(
        None, "stylegan2 path-length regularisation weight (0 = off; default: the preset's, off for small and cifar)")
    pl_interval: int = option(4, "lazy path length: every N generator steps")

    def __post_init__(self) -> None:
        if self.arch_preset not in STYLEGAN2_PRESETS:
            raise ConfigError(f"arch_preset must be one of {', '.join(map(repr, STYLEGAN2_PRESETS))}, "
                              f"got {self.arch_preset!r}")
        for name in _WIDTHS:
            check_positive_int(name, getattr(self, name), optional=True)
        check_positive_int("pl_interval", self.pl_interval)


@register_architecture
class StyleGAN2(GANArchitecture):
    name = "stylegan2"
    title = "StyleGAN2"
    config_class = StyleGAN2Config
    generator = "hubtune.gan.stylegan2:StyleGAN2Generator"

    def resolve(self, batch_size):
        c = self.config
        widths, training = STYLEGAN2_PRESETS[c.arch_preset], STYLEGAN2_TRAINING[c.arch_preset]
        for name in _WIDTHS:
            if getattr(c, name) is None:
                setattr(c, name, widths[name])
        if c.minibatch_std_group is None:
            c.minibatch_std_group = widths["mbstd_group"]
        if c.pl_weight is None:
            c.pl_weight = training["pl_weight"]
        if c.style_mixing_prob is None:
            c.style_mixing_prob = training["style_mixing_prob"]

    def latent_dim(self):
        return STYLEGAN2_PRESETS[self.config.arch_preset]["latent_dim"]

    def training_defaults(self, batch_size):
        training = STYLEGAN2_TRAINING[self.config.arch_preset]
        # StyleGAN2-ADA: ema_beta = 0.5 ** (batch / (ema_kimg * 1000)) (WentianZhang-ML/AdaptiveMix
        # generation/training/training_loop.py:301-304, without its ramp-up), with this process's batch
        ema = 0.5 ** (batch_size / (training["ema_kimg"] * 1000.0))
        return TrainingDefaults(lr=training["learning_rate"], betas=training["betas"], r1_gamma=training["r1_gamma"],
                                r1_every=training["r1_interval"], ema_decay=ema)

    def check(self, image_size, batch_size):
        c = self.config
        if not isinstance(image_size, int) or image_size < 32 or image_size > 256 or image_size & (image_size - 1):
            raise ConfigError(f"arch='stylegan2' needs image_size a power of two between 32 and 256, got {image_size!r}")
        if isinstance(c.minibatch_std_group, bool) or not isinstance(c.minibatch_std_group, int) \
                or c.minibatch_std_group < 1:
            raise ConfigError(f"stylegan2's minibatch_std_group must be >= 1, got {c.minibatch_std_group}")
        group = min(c.minibatch_std_group, batch_size)
        if batch_size % group:
            raise ConfigError(
                f"per_device_train_batch_size={batch_size} is not a multiple of the minibatch-stddev group {group} "
                "(--minibatch_std_group); the groups are formed per process"
            )
        check_fraction("style_mixing_prob", c.style_mixing_prob)
        if not (isinstance(c.pl_weight, (int, float)) and math.isfinite(c.pl_weight) and c.pl_weight >= 0):
            raise ConfigError(f"pl_weight must be a finite number >= 0, got {c.pl_weight}")

    def build(self, image_size, channels, latent_dim):
        c = self.config
        return load("hubtune.gan.stylegan2:build_stylegan2")(image_size, channels, c.arch_preset, latent_dim=latent_dim, w_dim=c.w_dim,
                               mapping_layers=c.mapping_layers, channel_base=c.channel_base,
                               channel_max=c.channel_max, mbstd_group=c.minibatch_std_group,
                               style_mixing_prob=c.style_mixing_prob)

    def generator_regularisers(self, batch_size):
        if not self.config.pl_weight:
            return []
        return [load("hubtune.gan.stylegan2:PathLengthRegulariser")(self.config.pl_weight, self.config.pl_interval)]
