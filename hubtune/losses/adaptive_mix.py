"""AdaptiveMix (Liu, Zhang et al., CVPR 2023, arXiv 2303.01559): feature-space shrinkage.

One implementation of the mixing and of the shrinkage term, shared by the GAN discriminator
regulariser (:class:`AdaptiveMix`) and the classifier loss (:class:`AdaptiveMixClassifierLoss`).

The method shrinks the regions that training data occupy in the feature space of a network split into a
feature extractor ``f`` (for a discriminator: all blocks up to the last feature map, flattened) and a head
``h`` (features -> logit(s)). Hard samples are built by mixing pairs of images, and the features of a mixed
image are pulled towards the same mix of the two images' features. For a batch ``x`` (in a GAN, real and fake
batches are treated separately: a real image is never mixed with a fake one)::

    lam ~ Beta(alpha, alpha)          (alpha = 1; one per call as in the reference, or one per sample)
    p   = a random permutation        (each sample's mixing partner)
    x~  = lam x + (1 - lam) x[p]
    t   = lam f(x) + (1 - lam) f(x)[p]
    L   = 1 - cos(f(x~), sg(t + eps)),  eps ~ N(0, sigma^2), sigma = 0.05,  mean over the batch   (or MSE)

The reference, WentianZhang-ML/AdaptiveMix 163e5d5: generation/training/networks.py:747-761 (``adaptive_mix``:
one ``lam = np.random.beta(alpha, alpha)`` per call, three passes of the feature extractor, the noise added to the
target) and generation/training/loss.py:84, :117, :137 (``-cosine_similarity(f(x~), (t + eps).detach())``, the
same gradient as 1 - cos); classification/models.py:126-148 (the classifier script's: ``F.mse_loss`` at :144).
The defaults and their sources: :class:`hubtune.losses.adaptive_mix_settings.AdaptiveMixSettings`.

``f(x)[p]`` replaces the reference's third pass ``f(x[p])``: the two are equal when ``f`` treats samples
independently, so the regulariser costs two passes of ``f`` instead of three. BatchNorm in training mode does
not break the identity (a permuted batch has the same batch statistics, so ``f(x[p]) == f(x)[p]``); layers
that treat sub-groups of the batch differently (StyleGAN2's minibatch-stddev) do, and only for those (see
:func:`features_are_batch_coupled`) is the third pass made.

GAN presets: ``"paper"`` (a plain regulariser: the adversarial loss is unchanged and ``weight * L`` is added
on the discriminator step) and ``"reference"`` (the public StyleGAN2-ADA-based script: the adversarial logit
becomes ``h(t) + h(f(x~))`` (networks.py:760), with ``t`` carrying gradient, in the real, fake and R1 terms
(loss.py:114, :129, :143), so the discriminator never scores an unmixed image; the generator step adds ``L`` on
its fakes too (loss.py:80-87)).

Classifier use: mixup cross-entropy on the mixed images plus the shrinkage term. Preset ``"paper"``: cosine
shrinkage plus clean cross-entropy, mixup CE on ``W f(x~)`` (the clean term is not in the classifier
script, classification/train.py:127-129; its effect is not measured separately). Preset
``"reference"`` (the public classifier script): MSE shrinkage (classification/models.py:144), and the mixup
cross-entropy (models.py:28-29, train.py:127) scores ``classifier(t) + classifier(f(x~))`` where ``t`` is the same
mix of the clean features and carries gradient (models.py:140, :146; with that script's ``|W u|`` classifier on
L2-normalised features, models.py:121 and :124: ``|W t| + |W f(x~)|``).

Pure torch: no Trainer, Accelerate or Hub knowledge here.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hubtune.errors import ConfigError
from hubtune.losses._random import sample_symmetric_beta
from hubtune.losses._precision import at_least_float32
from hubtune.losses.adaptive_mix_settings import (
    DISTANCES,
    AdaptiveMixSettings,
    _check_alpha,
    _check_distance,
    _check_sigma,
)

__all__ = [
    "AdaptiveMixSettings",
    "MixDraws",
    "sample_mix_coefficients",
    "mix_pairs",
    "shrinkage_loss",
    "features_are_batch_coupled",
    "AdaptiveMix",
    "AdaptiveMixOutput",
    "AdaptiveMixClassifierLoss",
    "AdaptiveMixLossOutput",
]



# --------------------------------------------------------------------------------------------------
# helpers: the draws, the mixing and the shrinkage term
# --------------------------------------------------------------------------------------------------


@dataclass
class MixDraws:
    """The random quantities of one AdaptiveMix call; pass them to reproduce a call exactly.

    Attributes:
        lam: (B,) mixing weight of each sample itself (its partner gets ``1 - lam``).
        permutation: (B,) long, ``permutation[i]`` is sample i's partner.
        noise: optional, shaped like the flattened features (B, D); ``None`` draws N(0, sigma^2).
    """

    lam: Tensor
    permutation: Tensor
    noise: Tensor | None = None




def _weight_argument(shrinkage_weight: float | None, weight: float | None, default: float) -> float:
    """The losses' ``shrinkage_weight``, also given under its older name ``weight``."""
    if weight is not None:
        if shrinkage_weight is not None:
            raise ConfigError("give shrinkage_weight or its older name weight, not both")
        warnings.warn("AdaptiveMix's `weight` argument is now `shrinkage_weight`", DeprecationWarning, stacklevel=3)
        return weight
    return default if shrinkage_weight is None else shrinkage_weight


def sample_mix_coefficients(
    batch_size: int,
    alpha: float = 1.0,
    per_sample: bool = False,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Draw ``lam ~ Beta(alpha, alpha)`` and a partner permutation from torch's global RNG.

    Returns:
        ``(lam, permutation)``: lam is float32 (B,) (one value repeated B times unless ``per_sample``),
        permutation is a long (B,) random permutation of ``range(B)``.
    """
    # torch.SymInt: the batch size as torch.compile sees it when the batch dimension is dynamic
    if not isinstance(batch_size, (int, torch.SymInt)) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    _check_alpha(alpha)
    device = torch.device(device) if device is not None else torch.device("cpu")
    # no host-device sync, and one graph under torch.compile (see hubtune.losses._random)
    if per_sample:
        lam = sample_symmetric_beta(alpha, (batch_size,), device=device)
    else:
        lam = sample_symmetric_beta(alpha, (1,), device=device).expand(batch_size).clone()
    permutation = torch.randperm(batch_size, device=device)
    return lam, permutation


def mix_pairs(x: Tensor, lam: Tensor, permutation: Tensor) -> Tensor:
    """``lam * x + (1 - lam) * x[permutation]`` with ``lam`` (B,) broadcast over the trailing dims."""
    if lam.dim() != 1 or lam.shape[0] != x.shape[0] or permutation.shape != lam.shape:
        raise ValueError(
            f"lam and permutation must both have shape ({x.shape[0]},) to mix a batch of shape {tuple(x.shape)}; "
            f"got lam {tuple(lam.shape)} and permutation {tuple(permutation.shape)}"
        )
    weight = lam.to(dtype=x.dtype, device=x.device).view(-1, *([1] * (x.dim() - 1)))
    return weight * x + (1 - weight) * x[permutation]


def shrinkage_loss(
    mixed_features: Tensor,
    target_features: Tensor,
    sigma: float = 0.05,
    distance: Literal["cosine", "mse"] = "cosine",
    noise: Tensor | None = None,
) -> Tensor:
    """The AdaptiveMix shrinkage term between ``f(x~)`` and the (detached, noisy) target ``t``.

    Features are flattened to (B, D) and the maths runs in float32 (float64 for float64 inputs) whatever
    the autocast state.

    Args:
        mixed_features: f(x~), gradient flows into it.
        target_features: t; detached here (stop-gradient), then ``noise`` (or N(0, sigma^2)) is added.
        distance: ``"cosine"``: mean over the batch of ``1 - cos``; ``"mse"``: mean squared error over all
            elements (``F.mse_loss``), as the public classifier script does.
        noise: optional fixed noise of the flattened shape (B, D), for reproducible calls.
    """
    _check_sigma(sigma)
    _check_distance(distance)
    if mixed_features.shape != target_features.shape:
        raise ValueError(
            f"mixed and target features must have the same shape, got {tuple(mixed_features.shape)} "
            f"and {tuple(target_features.shape)}"
        )
    batch = mixed_features.shape[0]
    with torch.autocast(device_type=mixed_features.device.type, enabled=False):
        mixed = at_least_float32(mixed_features.reshape(batch, -1))
        target = at_least_float32(target_features.detach().reshape(batch, -1)).to(mixed.dtype)
        if noise is not None:
            if noise.shape != target.shape:
                raise ValueError(f"noise must have the flattened feature shape {tuple(target.shape)}, got {tuple(noise.shape)}")
            target = target + noise.to(device=target.device, dtype=target.dtype)
        elif sigma > 0:
            target = target + sigma * torch.randn_like(target)
        if distance == "cosine":
            return (1.0 - F.cosine_similarity(mixed, target, dim=1)).mean()
        return F.mse_loss(mixed, target)


def features_are_batch_coupled(module: nn.Module) -> bool:
    """Whether ``module``'s output for one sample may depend on the other samples of its batch.

    For AdaptiveMix's purpose "coupled" means that ``f(x[p]) != f(x)[p]`` for a permutation ``p`` of the
    batch. True when any submodule declares ``batch_coupled = True`` (hubtune's minibatch-stddev layer does, as
    it treats groups of samples differently; any layer may declare it); AdaptiveMix then makes the third pass
    ``f(x[p])`` instead of using ``f(x)[p]``. BatchNorm, even in training mode, is NOT coupled in this sense:
    a permutation of the same batch has the same batch statistics, so ``f(x[p]) == f(x)[p]``.
    """
    return any(getattr(sub, "batch_coupled", False) is True for sub in module.modules())


# --------------------------------------------------------------------------------------------------
# discriminator regulariser
# --------------------------------------------------------------------------------------------------


@dataclass
class AdaptiveMixOutput:
    """What one :class:`AdaptiveMix` call on one batch produced.

    Attributes:
        logits: the adversarial logits to use for this batch: ``head(f(x))`` with the paper preset,
            ``head(t) + head(f(x~))`` with the reference preset.
        loss: ``weight * shrinkage_loss`` (add it to the discriminator loss).
        shrinkage_loss: the unweighted shrinkage term (detached), for logging.
        features: f(x), flattened as the discriminator returns it.
        feature_passes: 2 or 3, how many passes of the feature extractor over the batch this call made.
        draws: the draws used (pass them back to reproduce the call).
    """

    logits: Tensor
    loss: Tensor
    shrinkage_loss: Tensor
    features: Tensor
    feature_passes: int
    draws: MixDraws


class AdaptiveMix(nn.Module):
    """AdaptiveMix regulariser for a GAN discriminator.

    The discriminator is called only through its forward (so DistributedDataParallel and other wrappers keep
    working): ``D(x, output="features")`` -> f(x), ``D(f, output="head")`` -> logits of features,
    ``D(x, output="both")`` -> ``(logits, features)``. hubtune's discriminators
    (:class:`hubtune.gan.models.Discriminator`) implement that protocol; ``hubtune.gan.as_discriminator`` wraps any
    module that has ``features(x)`` and ``head(f)`` methods.

    Real and fake batches are regularised by separate calls: a real image is never mixed with a fake one.

    Args:
        shrinkage_weight: multiplier of the shrinkage term (``loss = weight * shrinkage``; older name ``weight``,
            kept as the attribute :attr:`weight`).
        alpha: Beta(alpha, alpha) concentration of the mixing weight.
        sigma: std of the Gaussian noise added to the detached target.
        distance: ``"cosine"`` (``1 - cos``, the paper) or ``"mse"``.
        per_sample: one lam per sample instead of one per call (the reference draws one per call).
        preset: ``"paper"``: a plain regulariser, the adversarial logits stay ``head(f(x))`` and the term is
            added on the discriminator step only. ``"reference"``: the public StyleGAN2-ADA script's semantics:
            the adversarial logits are ``head(t) + head(f(x~))`` with the target ``t`` carrying gradient (the
            discriminator never scores an unmixed image; also in the R1 term), and the generator step adds the
            shrinkage term on its fakes too (see :meth:`generator_terms`).
        feature_passes: ``"auto"`` (3 when :func:`features_are_batch_coupled`, else 2), or force 2 or 3.
            With 3, ``f(x[p])`` is computed; with the paper preset it only feeds the detached target and so
            runs without a graph, with the reference preset it carries gradient (through ``head(t)``).
    """

    def __init__(
        self,
        shrinkage_weight: float | None = None,
        alpha: float = 1.0,
        sigma: float = 0.05,
        distance: Literal["cosine", "mse"] = "cosine",
        per_sample: bool = False,
        preset: Literal["paper", "reference"] = "paper",
        feature_passes: Literal["auto", 2, 3] = "auto",
        *,
        weight: float | None = None,
    ) -> None:
        super().__init__()
        s = AdaptiveMixSettings(alpha, sigma, _weight_argument(shrinkage_weight, weight, 1.0), distance, per_sample,
                                preset)
        _check_distance(s.distance)
        if feature_passes not in ("auto", 2, 3):
            raise ConfigError(f"feature_passes must be 'auto', 2 or 3, got {feature_passes!r}")
        self.weight = float(s.shrinkage_weight)
        self.alpha = float(s.alpha)
        self.sigma = float(s.sigma)
        self.distance = s.distance
        self.per_sample = bool(s.per_sample)
        self.preset = s.preset
        self.feature_passes = feature_passes

    @classmethod
    def from_settings(cls, settings: AdaptiveMixSettings, **kwargs: Any) -> "AdaptiveMix":
        """The GAN regulariser of ``settings`` (unset weight / distance: the GAN defaults of its preset)."""
        s = settings.resolved(AdaptiveMixSettings.GAN_WEIGHT, "cosine")
        return cls(s.shrinkage_weight, s.alpha, s.sigma, s.distance, s.per_sample, s.preset, **kwargs)

    @property
    def applies_to_generator(self) -> bool:
        """Whether the generator step gets a shrinkage term too (the reference preset)."""
        return self.preset == "reference"

    def settings(self) -> dict:
        """JSON-serialisable settings (for logs and model cards)."""
        return {
            "weight": self.weight,
            "alpha": self.alpha,
            "sigma": self.sigma,
            "distance": self.distance,
            "per_sample": self.per_sample,
            "preset": self.preset,
            "feature_passes": self.feature_passes,
        }

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.settings().items())

    def draw(self, images: Tensor) -> MixDraws:
        """Fresh draws for a batch of ``images`` (noise is drawn later, once the feature shape is known)."""
        lam, permutation = sample_mix_coefficients(images.shape[0], self.alpha, self.per_sample, images.device)
        return MixDraws(lam=lam, permutation=permutation)

    def _passes(self, discriminator: nn.Module) -> int:
        if self.feature_passes != "auto":
            return int(self.feature_passes)
        return 3 if features_are_batch_coupled(discriminator) else 2

    def forward(self, discriminator: nn.Module, images: Tensor, draws: MixDraws | None = None) -> AdaptiveMixOutput:
        """Regularise one batch (all real, or all fake) for the discriminator step.

        Args:
            discriminator: a module answering ``output="both" | "features" | "head"`` in its forward.
            images: (B, C, H, W); pass fakes detached from the generator on the discriminator step.
            draws: fixed draws, else fresh ones from the global RNG.
        """
        if draws is None:
            draws = self.draw(images)
        lam, permutation = draws.lam.to(images.device), draws.permutation.to(images.device)
        passes = self._passes(discriminator)
        reference = self.preset == "reference"

        # separate calls, not one batch of 2B: an R1 penalty on `logits` then differentiates through B samples only
        logits, features = discriminator(images, output="both")
        mixed_features = discriminator(mix_pairs(images, lam, permutation), output="features")
        if passes == 3:
            with torch.set_grad_enabled(torch.is_grad_enabled() and reference):
                partner_features = discriminator(images[permutation], output="features")
        else:
            partner_features = features[permutation]
        weight = lam.to(features.dtype).view(-1, *([1] * (features.dim() - 1)))
        target = weight * features + (1 - weight) * partner_features

        shrinkage = shrinkage_loss(mixed_features, target, self.sigma, self.distance, draws.noise)
        if reference:
            logits = discriminator(target, output="head") + discriminator(mixed_features, output="head")
        return AdaptiveMixOutput(
            logits=logits,
            loss=self.weight * shrinkage,
            shrinkage_loss=shrinkage.detach(),
            features=features,
            feature_passes=passes,
            draws=draws,
        )

    def generator_terms(
        self, discriminator: nn.Module, fake_images: Tensor, draws: MixDraws | None = None
    ) -> AdaptiveMixOutput:
        """What the generator step scores its (non-detached) fakes with.

        Paper preset: plain ``D(fake)`` logits and a zero loss (AdaptiveMix regularises the discriminator
        only). Reference preset: the mixed logits and the weighted shrinkage term on the fakes, so the generator
        receives that term's gradient too.
        """
        if self.applies_to_generator:
            return self(discriminator, fake_images, draws)
        logits, features = discriminator(fake_images, output="both")
        zero = logits.new_zeros((), dtype=torch.float32)
        empty = MixDraws(lam=fake_images.new_ones(fake_images.shape[0]), permutation=torch.arange(
            fake_images.shape[0], device=fake_images.device))
        return AdaptiveMixOutput(logits, zero, zero, features, 1, empty)


# --------------------------------------------------------------------------------------------------
# classifier loss
# --------------------------------------------------------------------------------------------------


@dataclass
class AdaptiveMixLossOutput:
    """Result of :class:`AdaptiveMixClassifierLoss`.

    Attributes:
        loss: the total to back-propagate.
        ce_loss: cross-entropy part (clean CE if enabled + mixup CE), detached.
        shrinkage_loss: the unweighted shrinkage term, detached.
        logits: logits of the clean images (for accuracy); without gradient when ``clean_ce`` is off.
    """

    loss: Tensor
    ce_loss: Tensor
    shrinkage_loss: Tensor
    logits: Tensor


class AdaptiveMixClassifierLoss(nn.Module):
    """AdaptiveMix as a classifier loss: mixup cross-entropy on mixed images plus feature shrinkage.

    ``loss = [CE(W f(x), y)] + mean_i(lam_i CE(z_i, y_i) + (1 - lam_i) CE(z_i, y_p(i)))
    + weight * shrinkage(f(x~), sg(t) + eps)`` with ``t = lam f(x) + (1 - lam) f(x)[p]``; the bracketed clean term
    only with ``clean_ce``. The mixup logits ``z`` are ``W f(x~)`` with the ``"paper"`` preset and
    ``W t + W f(x~)`` (``t`` carrying gradient) with the ``"reference"`` preset.

    Two passes of ``features_fn`` per call: on ``x`` (target, and clean logits) and on ``x~``. All loss maths
    in float32, also under autocast.

    Presets (``distance`` / ``clean_ce`` left as ``None`` take the preset's value):
        ``"paper"``: cosine shrinkage, clean cross-entropy on.
        ``"reference"`` (see :meth:`reference`): the public classifier script: MSE shrinkage, no clean CE term,
        mixup cross-entropy on ``classifier(t) + classifier(f(x~))`` where ``t`` (the mix of the clean features)
        carries gradient, so the clean pass runs with a graph. That script also L2-normalises the features and scores with a frozen, orthogonally initialised ``|W u|`` head:
        those belong to the MODEL (``features_fn`` / ``classifier``), not to this loss.

    Args:
        alpha: Beta(alpha, alpha) concentration.
        sigma: std of the noise added to the detached target.
        shrinkage_weight: multiplier of the shrinkage term (older name ``weight``; the attribute stays
            :attr:`weight`).
        distance: ``"cosine"`` or ``"mse"``.
        clean_ce: add cross-entropy on the clean images.
        per_sample: one lam per sample instead of one per batch.
        preset: ``"paper"`` or ``"reference"``.
    """

    def __init__(
        self,
        alpha: float = 1.0,
        sigma: float = 0.05,
        shrinkage_weight: float | None = None,
        distance: Literal["cosine", "mse"] | None = None,
        clean_ce: bool | None = None,
        per_sample: bool = False,
        preset: Literal["paper", "reference"] = "paper",
        *,
        weight: float | None = None,
    ) -> None:
        super().__init__()
        given = AdaptiveMixSettings(alpha, sigma, _weight_argument(shrinkage_weight, weight, None), distance,
                                    per_sample, preset)
        s = given.resolved(AdaptiveMixSettings.CLASSIFIER_WEIGHT, "mse" if given.preset == "reference" else "cosine")
        if clean_ce is None:
            clean_ce = preset != "reference"
        if not isinstance(clean_ce, bool):
            raise ConfigError(f"clean_ce must be a bool, got {clean_ce!r}")
        self.alpha = float(s.alpha)
        self.sigma = float(s.sigma)
        self.weight = float(s.shrinkage_weight)
        self.distance = s.distance
        self.clean_ce = clean_ce
        self.per_sample = bool(s.per_sample)
        self.preset = s.preset

    @classmethod
    def from_settings(cls, settings: AdaptiveMixSettings, clean_ce: bool | None = None) -> "AdaptiveMixClassifierLoss":
        """The classifier loss of ``settings`` (unset weight / distance: the classifier defaults of its preset)."""
        return cls(settings.alpha, settings.sigma, settings.shrinkage_weight, settings.distance, clean_ce,
                   settings.per_sample, settings.preset)

    @classmethod
    def reference(cls, **overrides) -> "AdaptiveMixClassifierLoss":
        """The public classifier script's semantics: MSE shrinkage, no clean CE, mixup CE on ``W t + W f(x~)``."""
        kwargs = {"distance": "mse", "clean_ce": False, "preset": "reference"}
        kwargs.update(overrides)
        return cls(**kwargs)

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, sigma={self.sigma}, weight={self.weight}, distance={self.distance!r}, "
            f"clean_ce={self.clean_ce}, per_sample={self.per_sample}, preset={self.preset!r}"
        )

    def forward(
        self,
        pixel_values: Tensor,
        labels: Tensor,
        features_fn: Callable[[Tensor], Tensor],
        classifier: Callable[[Tensor], Tensor],
        draws: MixDraws | None = None,
    ) -> AdaptiveMixLossOutput:
        """Compute the loss for one batch.

        Args:
            pixel_values: (B, C, H, W) images.
            labels: (B,) integer class labels.
            features_fn: images -> (B, D) pooled features (as the classifier reads them).
            classifier: features -> (B, num_classes) logits.
            draws: fixed draws (lam, permutation, noise (B, D)), else fresh ones.
        """
        if labels.dim() != 1 or labels.shape[0] != pixel_values.shape[0]:
            raise ValueError(
                f"labels must be a (B,) tensor of class indices matching the {pixel_values.shape[0]} images, "
                f"got shape {tuple(labels.shape)}"
            )
        if labels.dtype.is_floating_point:
            raise ValueError("labels must be integer class indices, got a floating-point tensor")
        if draws is None:
            lam, permutation = sample_mix_coefficients(
                pixel_values.shape[0], self.alpha, self.per_sample, pixel_values.device
            )
            draws = MixDraws(lam, permutation)
        lam = draws.lam.to(pixel_values.device)
        permutation = draws.permutation.to(pixel_values.device)

        reference = self.preset == "reference"
        # the clean pass needs a graph for the clean CE term, and (reference) for the mixed logits classifier(t)
        with torch.set_grad_enabled(torch.is_grad_enabled() and (self.clean_ce or reference)):
            features = features_fn(pixel_values)
            logits = classifier(features)
        mixed_features = features_fn(mix_pairs(pixel_values, lam, permutation))
        mixed_logits = classifier(mixed_features)
        if reference:
            weight = lam.to(features.dtype).view(-1, *([1] * (features.dim() - 1)))
            mixed_target = weight * features + (1 - weight) * features[permutation]  # t, with gradient
            mixed_logits = classifier(mixed_target) + mixed_logits

        device_type = pixel_values.device.type
        with torch.autocast(device_type=device_type, enabled=False):
            feats = at_least_float32(features.detach())
            lam32 = lam.to(feats.dtype)
            target = lam32.view(-1, 1) * feats + (1 - lam32.view(-1, 1)) * feats[permutation]
            shrinkage = shrinkage_loss(mixed_features, target, self.sigma, self.distance, draws.noise)
            log_probs = F.log_softmax(at_least_float32(mixed_logits), dim=1)
            nll_own = F.nll_loss(log_probs, labels, reduction="none")
            nll_partner = F.nll_loss(log_probs, labels[permutation], reduction="none")
            ce = (lam32 * nll_own + (1 - lam32) * nll_partner).mean()
            if self.clean_ce:
                ce = ce + F.cross_entropy(at_least_float32(logits), labels)
            loss = ce + self.weight * shrinkage
        return AdaptiveMixLossOutput(loss=loss, ce_loss=ce.detach(), shrinkage_loss=shrinkage.detach(), logits=logits)
