"""OOD metrics (torchmetrics): the in-distribution images are the positive class.

AUROC, AUPR-in, and the TPR in "FPR at 95% TPR" are about in-distribution images; AUPR-out makes the OOD
images the positives. Scores follow the convention of :mod:`hubtune.ood.scores`: higher = more in-distribution.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from hubtune.errors import OODError

__all__ = ["CONVENTION", "METRIC_NAMES", "ood_metrics"]

METRIC_NAMES = ("auroc", "fpr_at_95_tpr", "aupr_in", "aupr_out", "detection_error")
CONVENTION = (
    "higher score = more in-distribution; in-distribution is the positive class (AUROC, AUPR-in, TPR); "
    "metrics are fractions in [0, 1]"
)


def _as_score_vector(scores: Any, what: str) -> Tensor:
    scores = torch.as_tensor(scores).detach().flatten().to("cpu", torch.float64)
    if scores.numel() == 0:
        raise OODError(f"The {what} scores are empty; every set needs at least one image.")
    if not torch.isfinite(scores).all():
        raise OODError(f"The {what} scores contain NaN or inf; check the model's outputs on these images.")
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
    # torchmetrics takes seconds to import: only when metrics are computed (heavy third-party import).
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
