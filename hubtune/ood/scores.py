"""OOD scores: pure torch, higher = more in-distribution, registered in ``OOD_SCORES`` (:mod:`hubtune.ood.registry`).

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

Bad input raises :class:`~hubtune.errors.OODError` (a ``ValueError``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from hubtune.errors import OODError
from hubtune.ood.registry import (  # the registry's public names, kept importable from here
    DEFAULT_SCORES,
    OOD_SCORES,
    OODScore,
    get_ood_score,
    register_ood_score,
    resolve_scores,
)

__all__ = [
    "DEFAULT_SCORES",
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
    "resolve_scores",
]

def _check_2d(x: Tensor, what: str) -> Tensor:
    if not isinstance(x, Tensor) or x.ndim != 2:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        columns = "classes" if what == "logits" else "features"
        raise OODError(f"{what} must be a (batch, {columns}) tensor, got {shape}.")
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
        raise OODError(f"temperature must be a positive finite number, got {temperature!r}.")
    logits = _floating(_check_2d(logits, "logits"))
    return temperature * torch.logsumexp(logits / temperature, dim=-1)


def _check_fit_inputs(features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    features = _check_2d(torch.as_tensor(features), "features")
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.shape[0] != features.shape[0]:
        raise OODError(
            f"labels must be a ({features.shape[0]},) tensor matching the features, got shape {tuple(labels.shape)}."
        )
    if labels.is_floating_point():
        raise OODError("labels must be integer class indices, got a floating-point tensor.")
    if features.shape[0] == 0:
        raise OODError("Cannot fit an OOD score on zero training features; pass a non-empty training set.")
    if not torch.isfinite(features).all():
        raise OODError("The training features contain NaN or inf; the model's features are not usable for fitting.")
    return features.detach().to(torch.float64), labels.detach().long().to(features.device)


def _check_feature_size(features: Tensor, expected: int, what: str) -> Tensor:
    features = _check_2d(features, "features")
    if features.shape[1] != expected:
        raise OODError(f"{what} was fitted on {expected}-dimensional features, got {features.shape[1]}.")
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


# --------------------------------------------------------------------------------------------- registration


register_ood_score(OODScore("msp", "logits", False, "maximum softmax probability", lambda: msp_score))
register_ood_score(OODScore("max-logit", "logits", False, "maximum logit", lambda: max_logit_score))
register_ood_score(OODScore("energy", "logits", False, "negative free energy, T * logsumexp(z / T), T = 1",
                            lambda: energy_score))
register_ood_score(OODScore("subspace", "features", True, "max |cos| to each class's leading singular vector",
                            lambda features, labels: ClassSubspaces.fit(features, labels).score))
register_ood_score(OODScore("mahalanobis", "features", True,
                            "-min squared Mahalanobis distance to a class mean (shared covariance)",
                            lambda features, labels: ClassGaussians.fit(features, labels).score))
