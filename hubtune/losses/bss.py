"""Batch Spectral Shrinkage (Chen, Wang, Fu, Long, Wang, NeurIPS 2019, "Catastrophic Forgetting Meets Negative
Transfer").

    L_bss(F) = eta * sum_{i=1..k} sigma_{-i}(F)^2

F is the (B x D) matrix of the batch's pooled features and sigma_{-1} <= sigma_{-2} <= ... its smallest singular
values. The form of tllib's (thuml/Transfer-Learning-Library c4aa59e): tllib/regularization/bss.py:44-50 (SVD of the
feature matrix, the k smallest squared singular values summed), added as ``cls_loss + trade_off * bss_loss`` at
examples/task_adaptation/image_classification/bss.py:126-128 on the pooled features the head reads.
docs/methods.md, section 6.

Precision: the SVD runs in float32 whatever the features' dtype (bf16 has no SVD and 8 mantissa bits).
Small batches: F has min(B, D) singular values; when k >= min(B, D) all of them are summed, i.e. the penalty
is eta * ||F||_F^2 (on a one-sample batch: eta * ||f||^2, the only singular value). It never fails.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hubtune.losses._precision import at_least_float32

__all__ = ["BSSLoss", "batch_spectral_shrinkage"]


def batch_spectral_shrinkage(features: Tensor, k: int = 1, eta: float = 1.0) -> Tensor:
    """``eta * (sum of the k smallest squared singular values of features)``, a float32 scalar."""
    if features.ndim != 2:
        raise ValueError(f"features must be (batch, dim), got shape {tuple(features.shape)}.")
    singular_values = torch.linalg.svdvals(at_least_float32(features))  # descending
    return eta * singular_values.flip(0)[: int(k)].pow(2).sum()


class BSSLoss(nn.Module):
    """Cross-entropy plus ``eta * sum of the k smallest squared singular values`` of the pooled features."""

    def __init__(self, eta: float, k: int):
        super().__init__()
        self.eta = float(eta)
        self.k = int(k)

    def forward(self, features: Tensor, logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        ce = F.cross_entropy(at_least_float32(logits), labels)
        bss = batch_spectral_shrinkage(features, self.k, self.eta)
        return ce + bss, ce, bss
