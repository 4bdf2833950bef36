"""Out-of-distribution (OOD) detection: scores, metrics, an evaluation over datasets and ``hubtune ood``.

Sign convention: every score is **higher = more in-distribution**, and the metrics treat the
in-distribution images as the **positive** class (AUROC, AUPR-in, and TPR in "FPR at 95% TPR" are about
in-distribution images; AUPR-out makes the OOD images the positives).

Scores (``OOD_SCORES``):

============  =========  ============================================================================
name          reads      score of one image
============  =========  ============================================================================
msp           logits     maximum softmax probability, ``max_c softmax(z)_c`` (Hendrycks & Gimpel 2017)
max-logit     logits     ``max_c z_c`` (Hendrycks et al. 2022)
energy        logits     ``T * logsumexp(z / T)``, the negative free energy (Liu et al. 2020)
subspace      features   ``max_c |cos(h, v_c)|``, v_c the leading right-singular vector of class c's
                         training features: the smallest angle to a class's 1-D subspace (the score of
                         the "union of 1-D subspaces" line that AdaptiveMix's classifier follows)
mahalanobis   features   ``-min_c (h - mu_c)^T S^+ (h - mu_c)``, class means and one shared covariance S
                         fitted on training features (Lee et al. 2018)
============  =========  ============================================================================

:func:`evaluate_ood` runs a model over an in-distribution dataset and one or more OOD datasets, each
passed through the model's own eval preprocessing (so OOD images of any size or channel count work),
and reports, per OOD set and score, AUROC, FPR at 95% TPR, AUPR-in, AUPR-out and detection error,
computed with torchmetrics. ``hubtune ood`` (see :func:`add_parser`) does the same from the command line.

Besides anything :func:`hubtune.data.load_image_classification_data` reads, two built-in OOD sources need
no data: ``"noise"`` (uniform noise images) and ``"skimage-photos"`` (random crops of scikit-image's
bundled photos), both made with the in-distribution images' size and mode so that only content differs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "msp_score",
    "max_logit_score",
    "energy_score",
    "ClassSubspaces",
    "subspace_angle_score",
    "ClassGaussians",
    "mahalanobis_score",
    "OODScore",
    "OOD_SCORES",
    "get_ood_score",
    "ood_metrics",
    "BUILTIN_OOD_SOURCES",
    "SKIMAGE_PHOTOS",
    "load_ood_data",
    "evaluate_ood",
    "format_ood_table",
    "add_parser",
]

DEFAULT_SCORES = ("msp", "max-logit", "energy", "subspace", "mahalanobis")
METRIC_NAMES = ("auroc", "fpr_at_95_tpr", "aupr_in", "aupr_out", "detection_error")


# --------------------------------------------------------------------------------------------------
# scores: pure torch, higher = more in-distribution
# --------------------------------------------------------------------------------------------------


def _check_2d(x: Tensor, what: str) -> Tensor:
    if not isinstance(x, Tensor) or x.ndim != 2:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        columns = "classes" if what == "logits" else "features"
        raise ValueError(f"{what} must be a (batch, {columns}) tensor, got {shape}.")
    return x


def _floating(x: Tensor) -> Tensor:
    """Score maths in at least float32 (float64 stays float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32)) if x.is_floating_point() else x.float()


def msp_score(logits: Tensor) -> Tensor:
    """Maximum softmax probability, ``max_c softmax(logits)_c``: (B, C) -> (B,); higher = more in-distribution."""
    logits = _floating(_check_2d(logits, "logits"))
    return F.softmax(logits, dim=-1).amax(dim=-1)


def max_logit_score(logits: Tensor) -> Tensor:
    """Maximum logit, ``max_c logits_c``: (B, C) -> (B,); higher = more in-distribution."""
    return _floating(_check_2d(logits, "logits")).amax(dim=-1)


def energy_score(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Negative free energy ``T * logsumexp(logits / T)``: (B, C) -> (B,); higher = more in-distribution."""
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}.")
    logits = _floating(_check_2d(logits, "logits"))
    return temperature * torch.logsumexp(logits / temperature, dim=-1)


def _check_fit_inputs(features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    features = _check_2d(torch.as_tensor(features), "features")
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.shape[0] != features.shape[0]:
        raise ValueError(
            f"labels must be a ({features.shape[0]},) tensor matching the features, got shape {tuple(labels.shape)}."
        )
    if labels.is_floating_point():
        raise ValueError("labels must be integer class indices, got a floating-point tensor.")
    if features.shape[0] == 0:
        raise ValueError("Cannot fit an OOD score on zero training features; pass a non-empty training set.")
    if not torch.isfinite(features).all():
        raise ValueError("The training features contain NaN or inf; the model's features are not usable for fitting.")
    return features.detach().to(torch.float64), labels.detach().long().to(features.device)


def _check_feature_size(features: Tensor, expected: int, what: str) -> Tensor:
    features = _check_2d(features, "features")
    if features.shape[1] != expected:
        raise ValueError(f"{what} was fitted on {expected}-dimensional features, got {features.shape[1]}.")
    return features


@dataclass
class ClassSubspaces:
    """One 1-D subspace per class: the leading right-singular vector of that class's training features.

    The features are not centred: the "union of 1-D subspaces" classifier puts each class's features along a
    line through the origin, and the direction of that line is what the leading singular vector estimates.

    Attributes:
        directions: (K, D) float64 unit vectors, one per class seen in training (sign arbitrary).
        classes: (K,) the class label of each row of ``directions``.
    """

    directions: Tensor
    classes: Tensor

    @classmethod
    def fit(cls, features: Tensor, labels: Tensor) -> "ClassSubspaces":
        """Fit on training ``features`` (N, D) and integer ``labels`` (N,)."""
        features, labels = _check_fit_inputs(features, labels)
        classes = torch.unique(labels)
        directions = []
        for c in classes:
            class_features = features[labels == c]
            # Vh[0] is the unit vector maximising ||X v||: the class's leading right-singular vector.
            directions.append(torch.linalg.svd(class_features, full_matrices=False).Vh[0])
        return cls(directions=torch.stack(directions), classes=classes)

    def score(self, features: Tensor) -> Tensor:
        """``max_c |cos(h, v_c)|`` for features (B, D) -> (B,), in [0, 1]; a zero feature scores 0."""
        features = _check_feature_size(features, self.directions.shape[1], "ClassSubspaces")
        h = features.to(torch.float64)
        v = self.directions.to(h.device)
        cosines = (h @ v.T) / h.norm(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
        return cosines.abs().amax(dim=1).to(_floating(features).dtype)

    __call__ = score


def subspace_angle_score(features: Tensor, subspaces: ClassSubspaces) -> Tensor:
    """Class-subspace score ``max_c |cos(h, v_c)|`` (cosine of the smallest angle); higher = more in-distribution."""
    return subspaces.score(features)


@dataclass
class ClassGaussians:
    """Class-conditional Gaussians with one shared covariance, fitted on training features (Lee et al. 2018).

    Attributes:
        means: (K, D) float64 class means.
        precision: (D, D) float64 pseudo-inverse of the shared (pooled within-class, biased) covariance.
        classes: (K,) the class label of each mean.
    """

    means: Tensor
    precision: Tensor
    classes: Tensor

    @classmethod
    def fit(cls, features: Tensor, labels: Tensor, rtol: float = 1e-10) -> "ClassGaussians":
        """Fit on training ``features`` (N, D) and integer ``labels`` (N,).

        ``rtol``: eigenvalues of the covariance below ``rtol`` times the largest are treated as zero by the
        pseudo-inverse (a covariance from fewer samples than feature dimensions is singular).
        """
        features, labels = _check_fit_inputs(features, labels)
        classes, index = torch.unique(labels, return_inverse=True)
        counts = torch.bincount(index, minlength=len(classes)).to(features.dtype)
        means = torch.zeros(len(classes), features.shape[1], dtype=features.dtype, device=features.device)
        means.index_add_(0, index, features)
        means /= counts[:, None]
        centred = features - means[index]
        covariance = centred.T @ centred / features.shape[0]
        precision = torch.linalg.pinv(covariance, rtol=rtol, hermitian=True)
        return cls(means=means, precision=precision, classes=classes)

    def distances(self, features: Tensor) -> Tensor:
        """Squared Mahalanobis distances (B, K) of features (B, D) to each class mean."""
        features = _check_feature_size(features, self.means.shape[1], "ClassGaussians")
        h = features.to(torch.float64)
        diff = h[:, None, :] - self.means.to(h.device)[None, :, :]  # (B, K, D)
        return torch.einsum("bkd,de,bke->bk", diff, self.precision.to(h.device), diff)

    def score(self, features: Tensor) -> Tensor:
        """``-min_c`` squared Mahalanobis distance, (B, D) -> (B,); higher = more in-distribution."""
        return (-self.distances(features).amin(dim=1)).to(_floating(features).dtype)

    __call__ = score


def mahalanobis_score(features: Tensor, gaussians: ClassGaussians) -> Tensor:
    """``-min_c (h - mu_c)^T S^+ (h - mu_c)``; higher = more in-distribution."""
    return gaussians.score(features)


# --------------------------------------------------------------------------------------------------
# the registry
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OODScore:
    """A named OOD score.

    Attributes:
        name: registry name.
        reads: ``"logits"`` or ``"features"`` (pooled features as the classifier sees them).
        fitted: whether it is fitted on the training split's features and labels.
        description: one line for tables and help.
        build: ``build()`` (not fitted) or ``build(train_features, train_labels)`` (fitted) returns the function
            mapping logits or features (B, .) to scores (B,).
    """

    name: str
    reads: Literal["logits", "features"]
    fitted: bool
    description: str
    build: Callable[..., Callable[[Tensor], Tensor]]


OOD_SCORES: dict[str, OODScore] = {
    s.name: s
    for s in (
        OODScore("msp", "logits", False, "maximum softmax probability", lambda: msp_score),
        OODScore("max-logit", "logits", False, "maximum logit", lambda: max_logit_score),
        OODScore("energy", "logits", False, "negative free energy, T * logsumexp(z / T), T = 1", lambda: energy_score),
        OODScore(
            "subspace", "features", True, "max |cos| to each class's leading singular vector",
            lambda features, labels: ClassSubspaces.fit(features, labels).score,
        ),
        OODScore(
            "mahalanobis", "features", True, "-min squared Mahalanobis distance to a class mean (shared covariance)",
            lambda features, labels: ClassGaussians.fit(features, labels).score,
        ),
    )
}


def get_ood_score(name: str) -> OODScore:
    """The registered score ``name``; a ValueError listing the valid names otherwise."""
    try:
        return OOD_SCORES[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown OOD score {name!r}. Valid scores: {', '.join(OOD_SCORES)}.") from None


# --------------------------------------------------------------------------------------------------
# metrics (torchmetrics); in-distribution = positive class
# --------------------------------------------------------------------------------------------------


def _as_score_vector(scores: Any, what: str) -> Tensor:
    scores = torch.as_tensor(scores).detach().flatten().to("cpu", torch.float64)
    if scores.numel() == 0:
        raise ValueError(f"The {what} scores are empty; every set needs at least one image.")
    if not torch.isfinite(scores).all():
        raise ValueError(f"The {what} scores contain NaN or inf; check the model's outputs on these images.")
    return scores


def _rank_normalise(scores: Tensor) -> Tensor:
    """Map scores into [0, 1] keeping their order and ties exactly.

    torchmetrics passes predictions outside [0, 1] through a sigmoid, which in float32 saturates large scores
    (energies, logits, negative distances) into ties; ranks cannot saturate.
    """
    _, ranks = torch.unique(scores, sorted=True, return_inverse=True)
    top = ranks.max()
    return ranks.to(torch.float64) / top if top > 0 else torch.full_like(scores, 0.5)


def ood_metrics(in_scores: Tensor, out_scores: Tensor) -> dict[str, float]:
    """OOD metrics from scores of in-distribution and OOD images (higher score = more in-distribution).

    Returns a dict of floats in [0, 1]:
        ``auroc``: binary AUROC with in-distribution as the positive class;
        ``fpr_at_95_tpr``: fraction of OOD images scored at or above the highest threshold that keeps at least
        95% of the in-distribution images (from torchmetrics' ROC curve);
        ``aupr_in`` / ``aupr_out``: average precision with in-distribution / OOD as the positive class;
        ``detection_error``: ``min_threshold 0.5 (1 - TPR) + 0.5 FPR`` (equal priors).
    """
    from torchmetrics.functional.classification import binary_auroc, binary_average_precision, binary_roc

    in_scores = _as_score_vector(in_scores, "in-distribution")
    out_scores = _as_score_vector(out_scores, "OOD")
    preds = _rank_normalise(torch.cat([in_scores, out_scores]))
    is_in = torch.cat([torch.ones(len(in_scores)), torch.zeros(len(out_scores))]).long()

    auroc = binary_auroc(preds, is_in)
    aupr_in = binary_average_precision(preds, is_in)
    aupr_out = binary_average_precision(1.0 - preds, 1 - is_in)
    fpr, tpr, _ = binary_roc(preds, is_in)
    # torchmetrics returns float32 rates; the count of in-distribution images kept is exact after rounding.
    kept_in = torch.round(tpr.double() * len(in_scores))
    fpr95 = fpr[kept_in >= math.ceil(0.95 * len(in_scores) - 1e-9)].min()
    detection_error = (0.5 * (1.0 - tpr.double()) + 0.5 * fpr.double()).min()
    return {
        "auroc": float(auroc),
        "fpr_at_95_tpr": float(fpr95),
        "aupr_in": float(aupr_in),
        "aupr_out": float(aupr_out),
        "detection_error": float(detection_error),
    }


# --------------------------------------------------------------------------------------------------
# OOD sources
# --------------------------------------------------------------------------------------------------

# scikit-image's bundled photos (no download): natural images, textures, text and microscopy.
SKIMAGE_PHOTOS = (
    "astronaut", "camera", "coffee", "chelsea", "rocket", "coins", "moon", "page", "text", "clock",
    "brick", "grass", "gravel", "immunohistochemistry", "hubble_deep_field", "colorwheel",
)
BUILTIN_OOD_SOURCES = {
    "noise": "uniform noise images with the in-distribution images' size and mode",
    "skimage-photos": "random crops of scikit-image's bundled photos, resized to the in-distribution size and mode",
}
DEFAULT_BUILTIN_SIZE = 500


def _noise_images(num_images: int, size: tuple[int, int], mode: str, generator: torch.Generator) -> list:
    from PIL import Image

    width, height = size
    channels = len(Image.new(mode, (1, 1)).getbands())
    pixels = torch.randint(0, 256, (num_images, height, width, channels), generator=generator, dtype=torch.uint8)
    images = []
    for p in pixels.numpy():
        image = Image.fromarray(p[..., 0], mode="L") if channels == 1 else Image.fromarray(p, mode="RGB")
        images.append(image.convert(mode))
    return images


def _skimage_photos() -> list:
    import numpy as np
    from PIL import Image

    try:
        import skimage.data
    except ImportError as e:
        raise ImportError("The 'skimage-photos' OOD source needs scikit-image: pip install scikit-image.") from e
    photos = []
    for name in SKIMAGE_PHOTOS:
        try:
            array = np.asarray(getattr(skimage.data, name)())
        except Exception:  # noqa: BLE001 - a photo that this scikit-image version would download: skip it
            continue
        if array.dtype != np.uint8:
            continue
        photos.append(Image.fromarray(array).convert("RGB"))
    if not photos:
        raise ValueError("None of scikit-image's bundled photos could be read; use another OOD source.")
    return photos


def _photo_crops(num_images: int, size: tuple[int, int], mode: str, generator: torch.Generator) -> list:
    from PIL import Image

    photos = _skimage_photos()
    images = []
    for _ in range(num_images):
        photo = photos[int(torch.randint(len(photos), (1,), generator=generator))]
        short = min(photo.size)
        # A square crop of a quarter to all of the shorter side: from textures to whole scenes.
        side = int(torch.randint(max(short // 4, 1), short + 1, (1,), generator=generator))
        left = int(torch.randint(photo.size[0] - side + 1, (1,), generator=generator))
        top = int(torch.randint(photo.size[1] - side + 1, (1,), generator=generator))
        crop = photo.crop((left, top, left + side, top + side))
        images.append(crop.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0).convert(mode))
    return images


def _image_dataset(images: list):
    import datasets

    return datasets.Dataset.from_dict({"image": images}, features=datasets.Features({"image": datasets.Image()}))


def load_ood_data(
    source: Any,
    *,
    image_size: tuple[int, int] | int | None = None,
    mode: str | None = None,
    num_images: int | None = None,
    seed: int = 0,
):
    """An OOD dataset (a ``datasets.Dataset`` with an ``"image"`` column) from a source.

    Args:
        source: ``"noise"`` or ``"skimage-photos"`` (built in, made here), a ``datasets.Dataset``, or anything
            :func:`hubtune.data.load_image_classification_data` reads (then its evaluation split: the test
            / validation split when it has one); a folder of unlabelled images also works.
        image_size: (width, height) or one int, for the built-in sources (default 32 x 32).
        mode: PIL mode of the built-in sources' images (default ``"RGB"``).
        num_images: images in a built-in source (default 500), or the most to keep from a dataset (a seeded
            random subset).
        seed: random seed of the built-in sources and of subsampling.
    """
    import datasets

    if num_images is not None and (not isinstance(num_images, int) or isinstance(num_images, bool) or num_images < 0):
        raise ValueError(f"num_images must be a non-negative integer or None, not {num_images!r}.")
    if isinstance(source, str) and source in BUILTIN_OOD_SOURCES:
        size = (32, 32) if image_size is None else image_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        generator = torch.Generator().manual_seed(seed)
        count = DEFAULT_BUILTIN_SIZE if num_images is None else num_images
        make = _noise_images if source == "noise" else _photo_crops
        return _image_dataset(make(count, size, mode or "RGB", generator))
    if isinstance(source, datasets.Dataset):
        dataset = source
    elif isinstance(source, (str, os.PathLike, datasets.DatasetDict)):
        from .data import DatasetError, load_image_classification_data

        try:
            dataset = load_image_classification_data(source, seed=seed).eval
        except DatasetError:
            if not (isinstance(source, (str, os.PathLike)) and Path(source).is_dir()):
                raise
            # A folder of images without class sub-folders: OOD images need no labels.
            loaded = datasets.load_dataset("imagefolder", data_dir=str(source))
            dataset = datasets.concatenate_datasets(list(loaded.values()))
    else:
        raise ValueError(
            f"Unsupported OOD source {source!r}: pass {' or '.join(map(repr, BUILTIN_OOD_SOURCES))}, a "
            "datasets.Dataset with an image column, or a dataset source (image folder, saved dataset, Hub name)."
        )
    if num_images is not None and len(dataset) > num_images:
        dataset = dataset.shuffle(seed=seed).select(range(num_images))
    return dataset


# --------------------------------------------------------------------------------------------------
# running a model over datasets
# --------------------------------------------------------------------------------------------------


class _ModelOutputs:
    """Logits and / or pooled features of a model, however it exposes them."""

    def __init__(self, model: Any):
        self.module = model if isinstance(model, torch.nn.Module) else None
        if isinstance(model, (tuple, list)):
            if len(model) != 2 or not all(f is None or callable(f) for f in model):
                raise ValueError("A model given as a pair must be (features_fn, head_fn): pixel_values -> (B, D) "
                                 "features and features -> (B, C) logits; either may be None.")
            self.features_fn, self.head_fn, self.logits_fn = model[0], model[1], None
            if self.features_fn is None and self.head_fn is not None:
                raise ValueError("A (features_fn, head_fn) pair needs features_fn to compute logits.")
            return
        if not callable(model) and not callable(getattr(model, "forward_features", None)):
            raise ValueError(f"The model must be callable or expose forward_features, got {type(model).__name__}.")
        self.features_fn = getattr(model, "forward_features", None)
        self.features_fn = self.features_fn if callable(self.features_fn) else None
        head = getattr(model, "classifier", None)
        self.head_fn = head if callable(head) and self.features_fn is not None else None
        self.logits_fn = model if self.head_fn is None and callable(model) else None

    @property
    def has_features(self) -> bool:
        return self.features_fn is not None

    @property
    def has_logits(self) -> bool:
        return self.head_fn is not None or self.logits_fn is not None

    def __call__(self, pixel_values: Tensor, need_features: bool) -> tuple[Tensor | None, Tensor | None]:
        features = logits = None
        if self.features_fn is not None and (need_features or self.head_fn is not None):
            features = self.features_fn(pixel_values)
            if not isinstance(features, Tensor) or features.ndim != 2:
                shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
                raise ValueError(
                    f"forward_features returned {shape}, not pooled (batch, features); hubtune's feature scores need "
                    "pooled features as the classifier reads them."
                )
        if self.head_fn is not None:
            logits = self.head_fn(features)
        elif self.logits_fn is not None:
            out = self.logits_fn(pixel_values)
            logits = out if isinstance(out, Tensor) else getattr(out, "logits", None)
            if logits is None and isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
                logits = out[0]
            if not isinstance(logits, Tensor):
                raise ValueError(f"The model returned {type(out).__name__}; expected logits or an output with .logits.")
        return features, logits


def _find_preprocessing(model: Any, preprocessing: Any):
    from .backbones import PreprocessingConfig

    candidates = [preprocessing, getattr(model, "preprocessing", None)]
    config = getattr(model, "config", None)
    candidates.append(getattr(config, "preprocessing", None) if config is not None else None)
    backbone = getattr(model, "backbone", None)
    candidates.append(getattr(backbone, "preprocessing", None) if backbone is not None else None)
    for candidate in candidates:
        if isinstance(candidate, PreprocessingConfig):
            return candidate
        if isinstance(candidate, Mapping):
            return PreprocessingConfig.from_dict(dict(candidate))
    raise ValueError(
        "Cannot tell how to preprocess images for this model: it has no preprocessing config (model.preprocessing, "
        "model.config.preprocessing or model.backbone.preprocessing). Pass preprocessing=PreprocessingConfig(...)."
    )


def _image_column(dataset, name: str) -> str:
    import datasets

    if "image" in dataset.column_names:
        return "image"
    columns = [c for c, f in dataset.features.items() if isinstance(f, datasets.Image)]
    if len(columns) != 1:
        raise ValueError(
            f"Dataset {name!r} needs one image column (a datasets.Image feature or a column named 'image'); its "
            f"columns are: {', '.join(dataset.column_names) or 'none'}."
        )
    return columns[0]


class _PixelTransform:
    """``Dataset.with_transform`` function: images to pixel_values (labels kept when there are any)."""

    def __init__(self, transform: Callable, image_column: str, label_column: str | None):
        self.transform, self.image_column, self.label_column = transform, image_column, label_column

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        out = {"pixel_values": [self.transform(image) for image in batch[self.image_column]]}
        if self.label_column is not None:
            out["labels"] = [int(label) for label in batch[self.label_column]]
        return out


@dataclass
class _Collected:
    logits: Tensor | None
    features: Tensor | None
    labels: Tensor | None


def _collect(outputs: _ModelOutputs, dataset, name: str, transform, batch_size: int, device, need_features: bool,
             need_labels: bool = False) -> _Collected:
    if len(dataset) == 0:
        raise ValueError(f"Dataset {name!r} is empty; an OOD evaluation needs at least one image in every set.")
    image_column = _image_column(dataset, name)
    label_column = "label" if "label" in dataset.column_names else None
    if need_labels and label_column is None:
        raise ValueError(
            f"Dataset {name!r} has no 'label' column, but fitting the feature scores needs class labels; load it "
            "with hubtune.data.load_image_classification_data."
        )
    columns = [image_column] + ([label_column] if label_column else [])
    view = dataset.with_transform(_PixelTransform(transform, image_column, label_column), columns=columns)
    logits, features, labels = [], [], []
    for start in range(0, len(view), batch_size):
        batch = view[start:start + batch_size]
        pixel_values = torch.stack([torch.as_tensor(p) for p in batch["pixel_values"]]).float().to(device)
        batch_features, batch_logits = outputs(pixel_values, need_features)
        if batch_logits is not None:
            logits.append(batch_logits.detach().float().cpu())
        if need_features and batch_features is not None:
            features.append(batch_features.detach().float().cpu())
        if label_column is not None:
            labels.append(torch.tensor(batch["labels"], dtype=torch.long))
    return _Collected(
        logits=torch.cat(logits) if logits else None,
        features=torch.cat(features) if features else None,
        labels=torch.cat(labels) if labels else None,
    )


def _in_distribution_splits(in_data: Any, train_data: Any, seed: int):
    """(eval dataset, its name, train dataset or None) from whatever the caller passed."""
    import datasets

    from .data import ImageClassificationData, load_image_classification_data

    name = "in-distribution"
    if isinstance(in_data, (str, os.PathLike, datasets.DatasetDict)):
        name = str(in_data) if isinstance(in_data, (str, os.PathLike)) else name
        in_data = load_image_classification_data(in_data, seed=seed)
    if isinstance(in_data, ImageClassificationData):
        name = in_data.name if name == "in-distribution" else name
        train = in_data.train if train_data is None else train_data
        in_data = in_data.eval
    else:
        train = train_data
    if isinstance(train, (str, os.PathLike, datasets.DatasetDict)):
        train = load_image_classification_data(train, seed=seed).train
    elif isinstance(train, ImageClassificationData):
        train = train.train
    if not isinstance(in_data, datasets.Dataset):
        raise ValueError(
            f"in_data must be a datasets.Dataset, an ImageClassificationData or a dataset source, not "
            f"{type(in_data).__name__}."
        )
    return in_data, name, train


def _first_image(dataset):
    image_column = _image_column(dataset, "in-distribution")
    return dataset[0][image_column]


def _score_summary(collected: _Collected) -> dict[str, Any]:
    return {"num_images": int(len(collected.logits if collected.logits is not None else collected.features))}


def evaluate_ood(
    model: Any,
    in_data: Any,
    out_data: Mapping[str, Any] | Sequence[str],
    scores: Sequence[str] = DEFAULT_SCORES,
    train_data: Any = None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    *,
    preprocessing: Any = None,
    max_ood_images: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Score in-distribution and OOD images with a model and report OOD metrics per OOD set and score.

    Args:
        model: a :class:`~hubtune.modeling.HubtuneForImageClassification` (or any module with
            ``forward_features(pixel_values)`` -> pooled (B, D) features and ``classifier`` features -> logits);
            a callable returning logits (or an output with ``.logits``) if only logit scores are asked for; or a
            pair ``(features_fn, head_fn)``. It is moved to ``device`` and run in eval mode without gradients.
        in_data: the in-distribution test images: a ``datasets.Dataset`` (``"image"`` column, ``"label"``
            optional), an :class:`~hubtune.data.ImageClassificationData` (its eval split; its train split is
            the default ``train_data``) or a source string for ``load_image_classification_data``.
        out_data: ``{name: dataset or source}``, or a list of sources (built-in ``"noise"``,
            ``"skimage-photos"``, or anything :func:`load_ood_data` reads). The built-in sources copy the
            in-distribution images' size and mode and hold as many images as ``in_data``.
        scores: names from ``OOD_SCORES``.
        train_data: labelled training images that the fitted scores (``subspace``, ``mahalanobis``) are fitted
            on; a dataset, ``ImageClassificationData`` (its train split) or a source string.
        preprocessing: a ``PreprocessingConfig`` (or dict) overriding the one found on the model.
        max_ood_images: keep at most this many images of each dataset-backed OOD source.
        seed: seed of the built-in OOD sources and of subsampling (and of the split of a source string).

    Returns:
        ``{"in_distribution": {...}, "scores": [...], "results": {ood_name: {"num_images": n, "metrics":
        {score: {auroc, fpr_at_95_tpr, aupr_in, aupr_out, detection_error}}}}, "mean": {score: {...}},
        "convention": ...}``; all metrics are fractions in [0, 1].

    Raises:
        ValueError: an unknown score, no or an empty OOD set, a model without the logits / features a score
            needs, fitted scores without labelled training data.
    """
    if isinstance(scores, str):
        scores = [scores]
    specs = [get_ood_score(name) for name in scores]
    if not specs:
        raise ValueError(f"Give at least one OOD score; valid scores: {', '.join(OOD_SCORES)}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if isinstance(out_data, (str, os.PathLike)):
        out_data = [out_data]
    if not isinstance(out_data, Mapping):
        out_data = {str(source): source for source in out_data}
    if not out_data:
        raise ValueError(
            f"Give at least one OOD dataset (out_data), e.g. {{'noise': 'noise'}}; built-in sources: "
            f"{', '.join(BUILTIN_OOD_SOURCES)}."
        )

    outputs = _ModelOutputs(model)
    for spec in specs:
        if spec.reads == "features" and not outputs.has_features:
            raise ValueError(
                f"Score {spec.name!r} needs pooled features, but the model has no forward_features(pixel_values). "
                f"Pass a model with forward_features or a (features_fn, head_fn) pair, or use logit scores "
                f"({', '.join(s.name for s in OOD_SCORES.values() if s.reads == 'logits')})."
            )
        if spec.reads == "logits" and not outputs.has_logits:
            raise ValueError(
                f"Score {spec.name!r} needs logits, but the model gives none (a (features_fn, None) pair). Pass a "
                f"head_fn or use feature scores ({', '.join(s.name for s in OOD_SCORES.values() if s.fitted)})."
            )
    need_features = any(spec.reads == "features" for spec in specs)
    fitted = [spec for spec in specs if spec.fitted]

    in_eval, in_name, train = _in_distribution_splits(in_data, train_data, seed)
    if fitted and train is None:
        raise ValueError(
            f"Score(s) {', '.join(s.name for s in fitted)} are fitted on training features: pass train_data (the "
            "labelled training split), or in_data as an ImageClassificationData / source string."
        )
    if len(in_eval) == 0:
        raise ValueError(f"The in-distribution dataset {in_name!r} is empty; it needs at least one image.")
    reference = _first_image(in_eval)
    transform = _build_eval_transform(model, preprocessing)

    module = outputs.module
    was_training = module.training if module is not None else None
    if module is not None:
        module.to(device)
        module.eval()
    try:
        with torch.no_grad():
            def run(dataset, name: str, need_labels: bool = False) -> _Collected:
                return _collect(outputs, dataset, name, transform, batch_size, device, need_features, need_labels)

            in_outputs = run(in_eval, in_name)
            score_fns = {spec.name: spec.build() for spec in specs if not spec.fitted}
            if fitted:
                train_outputs = run(train, "train", need_labels=True)
                for spec in fitted:
                    score_fns[spec.name] = spec.build(train_outputs.features, train_outputs.labels)

            def apply(collected: _Collected) -> dict[str, Tensor]:
                inputs = {"features": collected.features, "logits": collected.logits}
                return {spec.name: score_fns[spec.name](inputs[spec.reads]) for spec in specs}

            in_scores = apply(in_outputs)
            results: dict[str, Any] = {}
            for ood_name, source in out_data.items():
                if isinstance(source, str) and source in BUILTIN_OOD_SOURCES:
                    ood = load_ood_data(
                        source, image_size=reference.size, mode=reference.mode, num_images=len(in_eval), seed=seed
                    )
                else:
                    ood = load_ood_data(source, num_images=max_ood_images, seed=seed)
                ood_outputs = run(ood, str(ood_name))
                ood_scores = apply(ood_outputs)
                results[str(ood_name)] = {
                    **_score_summary(ood_outputs),
                    "metrics": {name: ood_metrics(in_scores[name], ood_scores[name]) for name in in_scores},
                }
    finally:
        if module is not None:
            module.train(was_training)

    in_summary = {"name": in_name, **_score_summary(in_outputs)}
    if in_outputs.logits is not None and in_outputs.labels is not None:
        in_summary["accuracy"] = float((in_outputs.logits.argmax(dim=1) == in_outputs.labels).float().mean())
    mean = {
        name: {m: sum(r["metrics"][name][m] for r in results.values()) / len(results) for m in METRIC_NAMES}
        for name in in_scores
    }
    return {
        "in_distribution": in_summary,
        "train_images": int(len(train)) if fitted else None,
        "scores": [spec.name for spec in specs],
        "results": results,
        "mean": mean,
        "convention": "higher score = more in-distribution; in-distribution is the positive class "
        "(AUROC, AUPR-in, TPR); metrics are fractions in [0, 1]",
    }


def _build_eval_transform(model: Any, preprocessing: Any):
    from .data import build_transforms

    return build_transforms(_find_preprocessing(model, preprocessing), train=False)


# --------------------------------------------------------------------------------------------------
# reporting and the command line
# --------------------------------------------------------------------------------------------------


def format_ood_table(results: Mapping[str, Any]) -> str:
    """A Markdown table (percentages) of :func:`evaluate_ood`'s results: one row per OOD set and score."""
    header = "| OOD set | score | AUROC ↑ | FPR@95TPR ↓ | AUPR-in ↑ | AUPR-out ↑ | det. error ↓ |"
    lines = [header, "|" + "---|" * 7]

    def row(set_name: str, score: str, metrics: Mapping[str, float]) -> str:
        values = " | ".join(f"{100 * metrics[m]:.1f}" for m in METRIC_NAMES)
        return f"| {set_name} | {score} | {values} |"

    for set_name, entry in results["results"].items():
        for score, metrics in entry["metrics"].items():
            lines.append(row(f"{set_name} ({entry['num_images']})", score, metrics))
    if len(results["results"]) > 1:
        for score, metrics in results["mean"].items():
            lines.append(row("**mean**", score, metrics))
    in_info = results["in_distribution"]
    caption = f"In-distribution: {in_info['name']} ({in_info['num_images']} images"
    if "accuracy" in in_info:
        caption += f", accuracy {100 * in_info['accuracy']:.1f}%"
    return caption + "). Metrics in %.\n\n" + "\n".join(lines)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``hubtune ood`` on an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "ood",
        help="out-of-distribution detection: score in-distribution and OOD images, print AUROC / FPR95 / AUPR",
        description="Evaluate OOD detection of a fine-tuned classifier. In-distribution test images are --in-data's "
        "evaluation split (the same seeded split finetune held out, with the same --seed); the feature scores are "
        f"fitted on its training split. Built-in OOD sources: {', '.join(BUILTIN_OOD_SOURCES)}.",
    )
    p.add_argument("--model", required=True,
                   help="a folder or Hub repo written by hubtune finetune (or a timm / transformers classifier)")
    p.add_argument("--in-data", required=True,
                   help="the in-distribution dataset source ('digits', an image folder, a saved dataset, a Hub name)")
    p.add_argument("--out-data", required=True, nargs="+", metavar="SRC",
                   help=f"OOD sources: {', '.join(BUILTIN_OOD_SOURCES)}, image folders, saved datasets, Hub names")
    p.add_argument("--score", dest="scores", action="extend", nargs="+", metavar="NAME", default=None,
                   help=f"scores to compute (default: all): {', '.join(OOD_SCORES)}")
    p.add_argument("--output-dir", default=None,
                   help="where to write ood_results.json (default: the model folder if local, else the current folder)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--max-ood-images", type=int, default=None,
                   help="at most this many images per dataset-backed OOD set")
    p.add_argument("--seed", type=int, default=0, help="split seed of --in-data (use finetune's) and OOD sampling seed")
    p.add_argument("--allow-pickle", action="store_true",
                   help="allow loading a pickle checkpoint (trusted sources only)")
    p.set_defaults(func=run_ood_command)
    return p


def run_ood_command(args: argparse.Namespace) -> int:
    """What ``hubtune ood`` runs: load the model, evaluate, print the table, write ood_results.json."""
    from .modeling import HubtuneForImageClassification

    scores = list(args.scores) if args.scores else list(DEFAULT_SCORES)
    for name in scores:
        get_ood_score(name)  # fail on a typo before loading anything
    model = HubtuneForImageClassification.from_pretrained(args.model, allow_pickle=args.allow_pickle)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    results = evaluate_ood(
        model,
        args.in_data,
        {source: source for source in args.out_data},
        scores=scores,
        batch_size=args.batch_size,
        device=device,
        max_ood_images=args.max_ood_images,
        seed=args.seed,
    )
    results["model"] = str(args.model)
    print(format_ood_table(results))
    if args.output_dir:
        output_dir = Path(args.output_dir)
    else:  # next to a local model, so that a later push can put the results in its model card
        output_dir = Path(args.model) if Path(args.model).is_dir() else Path(".")
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / "ood_results.json"
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"OOD results written to {path.resolve()}")
    _add_to_model_card(output_dir, results)
    return 0


def _add_to_model_card(folder: Path, results: dict[str, Any]) -> None:
    """Put the results into the model card of a ``hubtune finetune`` output folder, so a later push carries them."""
    from .hub import RUN_INFO_FILENAME, write_model_card, write_run_info

    run_info_path = folder / RUN_INFO_FILENAME
    if not run_info_path.is_file():
        return
    run_info = json.loads(run_info_path.read_text(encoding="utf-8"))
    run_info["ood_results"] = results
    write_run_info(folder, run_info)
    write_model_card(folder, run_info)
    print(f"Model card {folder / 'README.md'} updated with the OOD results.")
