"""FID and KID through torchmetrics, with the feature extractor chosen by name.

The standard extractor, Inception-v3 with the FID weights, is downloaded at run time by every FID library;
where it cannot be had (offline machines), hubtune computes the same statistics on another named network and
records which one, so numbers are only compared between runs that used the same extractor name:

``"inception"``              torchmetrics' Inception-v3 (needs ``torch-fidelity`` and its cached weights)
``"timm:<model>"``           a timm model with pretrained weights (cached, or from the Hub)
``"timm-random:<model>[:seed]"``  a timm model randomly initialised from ``seed`` (default 0): always available,
                             reproducible, but a weak judge of image quality; for smoke tests and comparisons
``"hubtune:<folder>"``       the pooled features of a hubtune classifier (``HubtuneForImageClassification``),
                             e.g. one fine-tuned on the same data: the better offline choice
``"auto"``                   ``inception`` if it loads, else ``timm-random:resnet18:0``

FID/KID are never computed on a single batch: images go through the extractor in batches, and at least two
batches of real and of generated images are required.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hubtune.errors import FeatureExtractorError
from hubtune.modeling import HubtuneForImageClassification

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FALLBACK_EXTRACTOR = "timm-random:resnet18:0"

__all__ = ["FeatureExtractorError", "NamedFeatureExtractor", "build_feature_extractor", "compute_fid_kid",
           "evaluate_generator"]


class NamedFeatureExtractor(nn.Module):
    """Images in [0, 1] (B, C, H, W) -> features (B, D) of a named network.

    Grayscale images are repeated to 3 channels, resized to ``input_size`` when given, then normalised.
    """

    def __init__(self, name: str, network: nn.Module, num_features: int, input_size: int | None = None,
                 mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD) -> None:
        super().__init__()
        self.name, self.network, self.num_features, self.input_size = name, network, num_features, input_size
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        x = images.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.input_size is not None and x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        x = (x - self.mean) / self.std
        return self.network(x).flatten(1).float()


def _timm_extractor(name: str, model_name: str, pretrained: bool, seed: int = 0) -> NamedFeatureExtractor:
    import timm

    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            network = timm.create_model(model_name, pretrained=pretrained, num_classes=0)
    except Exception as err:  # download errors come in many types
        if "Unknown model" in str(err):
            raise FeatureExtractorError(f"feature extractor {name!r}: timm has no model {model_name!r}") from err
        raise FeatureExtractorError(
            f"feature extractor {name!r}: cannot load pretrained weights offline ({type(err).__name__}: {err}); "
            f"use 'timm-random:{model_name}' or 'hubtune:<classifier folder>'"
        ) from err
    return NamedFeatureExtractor(name, network.eval(), network.num_features)


def _hubtune_extractor(name: str, folder: str) -> NamedFeatureExtractor:
    try:
        model = HubtuneForImageClassification.from_pretrained(folder)
    except (OSError, ValueError) as err:
        raise FeatureExtractorError(f"feature extractor {name!r}: cannot load a hubtune classifier from {folder}: {err}") from err
    model.eval()
    prep = model.preprocessing

    class _Pooled(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner.forward_features(x)

    channels = prep.input_size[0]
    return NamedFeatureExtractor(name, _Pooled(model), model.backbone.num_features, prep.input_size[1],
                                 tuple(prep.mean)[:channels] if channels == 3 else IMAGENET_MEAN,
                                 tuple(prep.std)[:channels] if channels == 3 else IMAGENET_STD)


class _InceptionExtractor(nn.Module):
    def __init__(self):
        super().__init__()
        from torchmetrics.image.fid import NoTrainInceptionV3

        self.name, self.num_features = "inception", 2048
        self.network = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"])

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        x = images.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.network((x * 255).round().to(torch.uint8)).flatten(1).float()


def build_feature_extractor(name: str = "auto") -> nn.Module:
    """Resolve a feature-extractor name (see the module docstring); the result has ``name`` and ``num_features``."""
    if name == "auto":
        try:
            return build_feature_extractor("inception")
        except FeatureExtractorError as err:
            logger.info("FID: %s; using %s instead", err, FALLBACK_EXTRACTOR)
            return build_feature_extractor(FALLBACK_EXTRACTOR)
    if name == "inception":
        try:
            return _InceptionExtractor()
        except Exception as err:  # ModuleNotFoundError (torch-fidelity) or a failed weight download
            raise FeatureExtractorError(
                f"the Inception FID extractor is unavailable here ({type(err).__name__}: {err}); "
                f"choose another, e.g. {FALLBACK_EXTRACTOR!r} or 'hubtune:<classifier folder>'"
            ) from err
    kind, _, rest = name.partition(":")
    if kind == "timm" and rest:
        return _timm_extractor(name, rest, pretrained=True)
    if kind == "timm-random" and rest:
        model_name, _, seed = rest.partition(":")
        if seed and not seed.isdigit():
            raise FeatureExtractorError(f"feature extractor {name!r}: the seed after the model name must be an integer")
        return _timm_extractor(name if seed else f"{name}:0", model_name, pretrained=False, seed=int(seed or 0))
    if kind == "hubtune" and rest:
        return _hubtune_extractor(name, rest)
    raise FeatureExtractorError(
        f"unknown feature extractor {name!r}: use 'auto', 'inception', 'timm:<model>', 'timm-random:<model>[:seed]' "
        "or 'hubtune:<folder>'"
    )


def _batches(images: Tensor, batch_size: int):
    for start in range(0, images.shape[0], batch_size):
        yield images[start: start + batch_size]


def compute_fid_kid(
    real_images: Tensor,
    fake_images: Tensor,
    feature_extractor: str | nn.Module = "auto",
    batch_size: int = 250,
    kid_subset_size: int = 1000,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """FID and KID between two image sets (float in [0, 1], (N, C, H, W)), with the named extractor.

    Returns a dict with ``fid``, ``kid_mean``, ``kid_std``, ``feature_extractor`` (its name), ``feature_dim``,
    ``num_real``, ``num_fake``.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    for what, images in (("real", real_images), ("generated", fake_images)):
        if images.shape[0] < 2 * batch_size:
            raise ValueError(
                f"{images.shape[0]} {what} images is less than two batches of {batch_size}: FID/KID are never computed "
                "on a single batch; use more images or a smaller batch_size"
            )
    extractor = build_feature_extractor(feature_extractor) if isinstance(feature_extractor, str) else feature_extractor
    device = torch.device(device) if device is not None else torch.device("cpu")
    extractor = extractor.to(device).eval()
    # KID averages an unbiased MMD over random subsets; half the smaller set keeps the subsets different
    subset = min(kid_subset_size, real_images.shape[0] // 2, fake_images.shape[0] // 2)
    # the features are computed once and fed to both metrics through an identity "extractor"
    fid = FrechetInceptionDistance(feature=_Precomputed(extractor.num_features), normalize=True,
                                   sync_on_compute=False).to(device)
    with warnings.catch_warnings():  # "KID will save all extracted features": expected, they are few
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        kid = KernelInceptionDistance(feature=_Precomputed(extractor.num_features), subset_size=subset, normalize=True,
                                      sync_on_compute=False).to(device)
    fid.set_dtype(torch.float64)
    for images, real in ((real_images, True), (fake_images, False)):
        for batch in _batches(images, batch_size):
            feats = extractor(batch.to(device)).float()
            fid.update(feats.double(), real=real)
            kid.update(feats, real=real)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # KID's subsets are random: keep them reproducible and the caller's RNG untouched
        kid_mean, kid_std = kid.compute()
    return {
        "fid": float(fid.compute()),
        "kid_mean": float(kid_mean),
        "kid_std": float(kid_std),
        "feature_extractor": getattr(extractor, "name", type(extractor).__name__),
        "feature_dim": int(extractor.num_features),
        "num_real": int(real_images.shape[0]),
        "num_fake": int(fake_images.shape[0]),
    }


class _Precomputed(nn.Module):
    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features


def evaluate_generator(generator, dataset, num_samples: int = 1000, feature_extractor: str = "auto",
                       batch_size: int = 250, seed: int = 0) -> dict[str, Any]:
    """FID/KID of ``generator`` (eval mode, latents from ``seed``) against up to ``num_samples`` real images."""
    num_real = min(num_samples, len(dataset))
    gen = torch.Generator().manual_seed(seed)
    indices = torch.randperm(len(dataset), generator=gen)[:num_real]
    real = (dataset.batch(indices) + 1) / 2
    fake = generator.generate(num_samples, seed=seed + 1, batch_size=batch_size)
    device = next(generator.parameters()).device
    result = compute_fid_kid(real, fake, feature_extractor, batch_size=batch_size, device=device)
    result["generator_seed"] = seed + 1
    return result
