"""AdaptiveMix's settings (:class:`AdaptiveMixSettings`), stated and validated once for the classifier method, the
GAN config and the losses of :mod:`hubtune.losses.adaptive_mix`. Plain Python (no torch), so that a config can be
built and checked, and ``hubtune gan --help`` printed, without importing torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from hubtune.errors import ConfigError

__all__ = ["AdaptiveMixSettings", "DISTANCES"]

DISTANCES = ("cosine", "mse")


@dataclass
class AdaptiveMixSettings:
    """AdaptiveMix's settings, validated in one place: the classifier method
    (:class:`hubtune.methods.adaptive_mix.AdaptiveMixConfig`), the GAN config (``adaptivemix_*`` fields of
    :class:`hubtune.gan.GANTrainingConfig`) and the two losses below all take them from here.

    Sources: WentianZhang-ML/AdaptiveMix 163e5d5; "classification/" is its classifier script, "generation/" its
    StyleGAN2-ADA-based GAN code.

    Args:
        alpha: Beta(alpha, alpha) concentration of the mixing weight; 1.0: classification/train.py:34 (``--alpha``
            default) and generation/training/networks.py:747 (``adaptive_mix(..., alpha=1.0)``, called without
            alpha at generation/training/loss.py:62).
        sigma: std of the Gaussian noise added to the detached target; 0.05: classification/train.py:35
            (``--noise``), generation/training/loss.py:24 and training_loop.py:122 (``noise_std``), and the
            authors' GAN commands (run_cat_styleganv2.sh:14, run_ffhq_full_styleganv2.sh:14).
        shrinkage_weight: multiplier of the shrinkage term (older names: ``weight`` in the losses, ``ada_weight``
            in GAN configs). ``None``: the use's and preset's default, ``CLASSIFIER_WEIGHT`` /
            ``GAN_WEIGHT`` below.
        distance: ``"cosine"`` or ``"mse"`` (``None``: the preset's; cosine for GANs). The classifier script uses
            MSE (``F.mse_loss``, classification/models.py:144), the GAN code cosine (generation/training/loss.py:84,
            :117, :137); the classifier's paper preset takes the GAN code's cosine (hubtune's choice; cosine against
            MSE for classifiers not measured).
        per_sample: one lam per sample instead of one per batch. False: the authors draw one lam per call
            (``np.random.beta(alpha, alpha)``, classification/models.py:128, generation/training/networks.py:749).
        preset: ``"paper"`` or ``"reference"``.
    """

    alpha: float = 1.0
    sigma: float = 0.05
    shrinkage_weight: float | None = None
    distance: str | None = None
    per_sample: bool = False
    preset: str = "paper"

    PRESETS = ("paper", "reference")
    # Defaults of the shrinkage weight. The classifier's: 1.0 for both presets, the authors' (the shrinkage term is
    # added unweighted: ``total_loss = mix_cate_loss + mix_consist``, classification/train.py:129); not measured
    # against other weights for fine-tuning. The GAN's: 1.0 with the reference preset, the authors' (the cosine
    # term enters unweighted at generation/training/loss.py:117-120 and :137, :150); 0.1 with the paper preset,
    # hubtune's measured choice (the better of 0.1 and 1 in the FID benchmark: README, Evidence, "GAN FID";
    # benchmarks/results/adaptivemix_fid.md).
    CLASSIFIER_WEIGHT = {"paper": 1.0, "reference": 1.0}
    GAN_WEIGHT = {"paper": 0.1, "reference": 1.0}

    def __post_init__(self) -> None:
        if self.preset not in self.PRESETS:
            raise ConfigError(f"preset must be one of {self.PRESETS}, got {self.preset!r}")
        _check_alpha(self.alpha)
        _check_sigma(self.sigma)
        if self.shrinkage_weight is not None:
            _check_weight(self.shrinkage_weight)
        if self.distance is not None:
            _check_distance(self.distance)

    def resolved(self, weights: dict[str, float], distance: str) -> "AdaptiveMixSettings":
        """A copy with ``shrinkage_weight`` / ``distance`` left ``None`` filled (``weights``: per preset)."""
        return AdaptiveMixSettings(
            self.alpha, self.sigma, weights[self.preset] if self.shrinkage_weight is None else self.shrinkage_weight,
            distance if self.distance is None else self.distance, self.per_sample, self.preset)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_weight(weight: float) -> None:
    if not (isinstance(weight, (int, float)) and not isinstance(weight, bool) and math.isfinite(weight)
            and weight >= 0):
        raise ConfigError(f"shrinkage_weight must be a finite number >= 0, got {weight!r}")


def _check_alpha(alpha: float) -> None:
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
        raise ConfigError(f"alpha must be a positive finite number (Beta(alpha, alpha)), got {alpha!r}")


def _check_sigma(sigma: float) -> None:
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma >= 0):
        raise ConfigError(f"sigma (std of the target noise) must be a finite number >= 0, got {sigma!r}")


def _check_distance(distance: str) -> None:
    if distance not in DISTANCES:
        raise ConfigError(f"distance must be one of {DISTANCES}, got {distance!r}")
