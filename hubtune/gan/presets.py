"""StyleGAN2 architecture presets and their training hyper-parameters (plain data, no torch).

Kept apart from :mod:`hubtune.gan.stylegan2` so that :mod:`hubtune.gan.archs.stylegan2` can resolve a run's defaults
from them without importing the models (and torch).
"""

from __future__ import annotations

from typing import Any

__all__ = ["STYLEGAN2_PRESETS", "STYLEGAN2_TRAINING"]

# architecture presets: channel_base / channel_max (widths), latent_dim (z), w_dim, mapping_layers, mbstd_group
STYLEGAN2_PRESETS: dict[str, dict[str, int]] = {
    "small": dict(channel_base=2048, channel_max=128, latent_dim=128, w_dim=128, mapping_layers=8, mbstd_group=4),
    # StyleGAN2-ADA cfg "paper256": fmaps 0.5 -> channel_base 0.5 * 32768; mbstd min(8, 64 // 8 GPUs) = 8
    "paper256": dict(channel_base=16384, channel_max=512, latent_dim=512, w_dim=512, mapping_layers=8, mbstd_group=8),
    # StyleGAN2-ADA cfg "cifar": fmaps 1, map 2, mbstd min(32, 64 // 2 GPUs) = 32
    "cifar": dict(channel_base=32768, channel_max=512, latent_dim=512, w_dim=512, mapping_layers=2, mbstd_group=32),
}

# training hyper-parameters of the same configurations (batch = total over processes; ema in thousands of images)
STYLEGAN2_TRAINING: dict[str, dict[str, Any]] = {
    "small": dict(batch_size=32, learning_rate=0.0025, betas=(0.0, 0.99), r1_gamma=0.1, r1_interval=16,
                  ema_kimg=10.0, pl_weight=0.0, pl_interval=4, style_mixing_prob=0.9),
    "paper256": dict(batch_size=64, learning_rate=0.0025, betas=(0.0, 0.99), r1_gamma=1.0, r1_interval=16,
                     ema_kimg=20.0, pl_weight=2.0, pl_interval=4, style_mixing_prob=0.9),
    "cifar": dict(batch_size=64, learning_rate=0.0025, betas=(0.0, 0.99), r1_gamma=0.01, r1_interval=16,
                  ema_kimg=500.0, pl_weight=0.0, pl_interval=4, style_mixing_prob=0.0),
}

