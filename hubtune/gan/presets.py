"""StyleGAN2 architecture presets and their training hyper-parameters (plain data, no torch).

Kept apart from :mod:`hubtune.gan.stylegan2` so that :mod:`hubtune.gan.archs.stylegan2` can resolve a run's defaults
from them without importing the models (and torch).
"""

from __future__ import annotations

from typing import Any

__all__ = ["STYLEGAN2_PRESETS", "STYLEGAN2_TRAINING"]

# Sources: StyleGAN2-ADA's train.py as the AdaptiveMix authors ship it (WentianZhang-ML/AdaptiveMix 163e5d5,
# generation/train.py; "paper256" is what their GAN commands use, run_cat_styleganv2.sh:11 and
# run_ffhq_full_styleganv2.sh:11) and its training loop (generation/training/training_loop.py). "small" is hubtune's
# CPU-sized preset, with no reference.

# architecture presets: channel_base / channel_max (widths), latent_dim (z), w_dim, mapping_layers, mbstd_group
STYLEGAN2_PRESETS: dict[str, dict[str, int]] = {
    "small": dict(channel_base=2048, channel_max=128, latent_dim=128, w_dim=128, mapping_layers=8, mbstd_group=4),
    # cfg "paper256" (train.py:159): fmaps 0.5 -> channel_base int(0.5 * 32768) (:181), channel_max 512 (:182),
    # z_dim = w_dim = 512 (:179), map 8 (:183), mbstd 8 (:186; 64 images over ref_gpus 8 = 8 per GPU, :194)
    "paper256": dict(channel_base=16384, channel_max=512, latent_dim=512, w_dim=512, mapping_layers=8, mbstd_group=8),
    # cfg "cifar" (train.py:163): fmaps 1, map 2, mbstd 32 (64 images over ref_gpus 2 = 32 per GPU)
    "cifar": dict(channel_base=32768, channel_max=512, latent_dim=512, w_dim=512, mapping_layers=2, mbstd_group=32),
}

# training hyper-parameters of the same configurations (batch = total over processes; ema in thousands of images):
# batch ``mb``, lr ``lrate``, R1 ``gamma`` and ``ema`` of train.py:159 / :163, Adam betas (0, 0.99) (train.py:188-189),
# R1 every 16 D steps and path length every 4 G steps (training_loop.py:106-107), path-length weight 2 and style
# mixing 0.9 (generation/training/loss.py:24), both off for "cifar" (train.py:199-200). "small" is hubtune's own (no
# reference): paper256's optimiser, R1 gamma 0.1, EMA 10 kimg, no path length.
STYLEGAN2_TRAINING: dict[str, dict[str, Any]] = {
    "small": dict(batch_size=32, learning_rate=0.0025, betas=(0.0, 0.99), r1_gamma=0.1, r1_interval=16,
                  ema_kimg=10.0, pl_weight=0.0, pl_interval=4, style_mixing_prob=0.9),
    "paper256": dict(batch_size=64, learning_rate=0.0025, betas=(0.0, 0.99), r1_gamma=1.0, r1_interval=16,
                     ema_kimg=20.0, pl_weight=2.0, pl_interval=4, style_mixing_prob=0.9),
    "cifar": dict(batch_size=64, learning_rate=0.0025, betas=(0.0, 0.99), r1_gamma=0.01, r1_interval=16,
                  ema_kimg=500.0, pl_weight=0.0, pl_interval=4, style_mixing_prob=0.0),
}

