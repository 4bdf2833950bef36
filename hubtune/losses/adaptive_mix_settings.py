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

    Args:
        alpha: Beta(alpha, alpha) concentration of the mixing weight.
        sigma: std of the Gaussian noise added to the detached target.
        shrinkage_weight: multiplier of the shrinkage term (older names: ``weight`` in the losses, ``ada_weight``
            in GAN configs). ``None``: :meth:`default_shrinkage_weight` of the use and preset.
        distance: ``"cosine"`` or ``"mse"`` (``None``: the preset's; cosine for GANs).
        per_sample: one lam per sample instead of one per batch.
        preset: ``"paper"`` or ``"reference"``.
    """

    alpha: float = 1.0
    sigma: float = 0.05
    shrinkage_weight: float | None = None
    distance: str | None = None
    per_sample: bool = False
    preset: str = "paper"

    PRESETS = ("paper", "reference")
    # measured defaults of the shrinkage weight: the classifier's (the paper's 1.0 for both presets); the GAN's (0.1
    # with the paper preset, the best of 0.1 and 1 in the FID benchmark of the README; 1.0 with the public script)
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
