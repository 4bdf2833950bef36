"""Co-Tuning (You, Kou, Long, Wang, NeurIPS 2020, "Co-Tuning for Transfer Learning").

The pre-trained model's own classifier (the source head, over the source label space Y_s, e.g. ImageNet's 1000
classes) is fine-tuned next to the new one, with targets translated from the target labels through the category
relationship R[y_t] = p(y_s | y_t):

    L = CE(W_t f(x), y_t) + lambda * CE_soft(W_s f(x), R[y_t])

R is learned once, before fine-tuning, from the source model's predictions on the target training data (the
"direct approach" as tllib names and implements it, thuml/Transfer-Learning-Library c4aa59e,
tllib/regularization/co_tuning.py:67-108): R[t] = mean over the training samples of class t of softmax(W_s f0(x)).
A target class with no training sample gets the uniform row (tllib would give it NaN, the mean of no rows). The
soft cross-entropy is tllib's ``CoTuningLoss`` (co_tuning.py:35-38, mean over the batch of the sum over source
classes), added as ``tgt_loss + trade_off * src_loss`` at examples/task_adaptation/image_classification/
co_tuning.py:160-162. docs/methods.md, section 8.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hubtune.losses._precision import at_least_float32

__all__ = ["CoTuningLoss", "accumulate_relationship", "category_relationship", "co_tuning_loss"]


@torch.no_grad()
def accumulate_relationship(sums: Tensor, counts: Tensor, source_logits: Tensor, labels: Tensor) -> None:
    """Add one batch's source probabilities into ``sums`` (K, S) by target label, and its labels into ``counts`` (K,)."""
    sums.index_add_(0, labels, torch.softmax(source_logits.double(), dim=1).to(sums.dtype))
    counts.index_add_(0, labels, torch.ones_like(labels, dtype=counts.dtype))


def category_relationship(sums: Tensor, counts: Tensor) -> Tensor:
    """p(y_s | y_t) (K, S) from the accumulated sums and counts; uniform for a class never seen."""
    uniform = torch.full_like(sums, 1.0 / sums.shape[1])
    return torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], uniform)


def co_tuning_loss(logits: Tensor, source_logits: Tensor, labels: Tensor, relationship: Tensor,
                   trade_off: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(loss, ce, source_ce)``: target cross-entropy plus ``trade_off`` times the soft source cross-entropy."""
    ce = F.cross_entropy(at_least_float32(logits), labels)
    target = at_least_float32(relationship)[labels]
    source_ce = -(target * torch.log_softmax(at_least_float32(source_logits), dim=1)).sum(dim=1).mean()
    return ce + trade_off * source_ce, ce, source_ce


class CoTuningLoss(nn.Module):
    """``co_tuning_loss`` as a module (parameter-free; the relationship and heads are passed to ``forward``)."""

    def __init__(self, trade_off: float = 2.3):  # tllib's --trade-off default (its example co_tuning.py:206)
        super().__init__()
        self.trade_off = float(trade_off)

    def forward(self, logits: Tensor, source_logits: Tensor, labels: Tensor, relationship: Tensor):
        return co_tuning_loss(logits, source_logits, labels, relationship, self.trade_off)
