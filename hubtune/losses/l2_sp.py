"""L2-SP: an L2 penalty towards the starting point (Li, Grandvalet, Davoine, ICML 2018, arXiv 1802.01483).

    Omega(w) = alpha / 2 * ||w_S - w_S^0||^2 + beta / 2 * ||w_new||^2

w_S are the parameters the pre-trained model provides (the backbone), w_S^0 their values at the start of
fine-tuning, w_new the parameters fine-tuning adds (the new classifier). The form of the references: DELTA train.py:
149-154 and 142-147 (lixingjian/DELTA 6ba10d2, ``--reg_type l2_sp``, weighted at :224); tllib/regularization/
delta.py:55-66 (``SPRegularization``) and :28-32 (``L2Regularization``), weighted at examples/task_adaptation/
image_classification/delta.py:277 (thuml/Transfer-Learning-Library c4aa59e). docs/methods.md, section 5.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hubtune.losses._precision import at_least_float32

__all__ = ["L2SPLoss", "L2SPLossOutput", "l2_sp_penalty", "squared_distance"]


def squared_distance(params: Sequence[Tensor], starts: Sequence[Tensor] | None = None) -> Tensor:
    """``sum_i ||p_i - s_i||^2`` in float32 (``||p_i||^2`` without starts); 0 for no parameters."""
    if starts is not None and len(starts) != len(params):
        raise ValueError(f"{len(params)} parameters but {len(starts)} starting values.")
    total = torch.zeros((), dtype=torch.float32, device=params[0].device if params else None)
    for i, p in enumerate(params):
        diff = at_least_float32(p) if starts is None else at_least_float32(p) - at_least_float32(starts[i])
        total = total + diff.pow(2).sum()
    return total


def l2_sp_penalty(params: Sequence[Tensor], starts: Sequence[Tensor], new_params: Sequence[Tensor],
                  alpha: float, beta: float) -> tuple[Tensor, Tensor]:
    """``(alpha / 2 * ||w_S - w_S^0||^2, beta / 2 * ||w_new||^2)``."""
    return 0.5 * alpha * squared_distance(params, starts), 0.5 * beta * squared_distance(new_params)


class L2SPLossOutput(NamedTuple):
    loss: Tensor
    ce_loss: Tensor
    sp_loss: Tensor
    head_loss: Tensor


class L2SPLoss(nn.Module):
    """Cross-entropy plus the L2-SP penalty; owns no parameters (the weights are passed to ``forward``)."""

    # alpha and beta 0.01: tllib's example delta.py:326 and :328 (--regularization-type l2_sp), DELTA train.py:34-35.
    def __init__(self, alpha: float = 0.01, beta: float = 0.01):
        super().__init__()
        self.alpha = float(alpha)
        self.beta = float(beta)

    def forward(self, logits: Tensor, labels: Tensor, params: Sequence[Tensor], starts: Sequence[Tensor],
                new_params: Sequence[Tensor]) -> L2SPLossOutput:
        ce = F.cross_entropy(at_least_float32(logits), labels)
        sp, head = l2_sp_penalty(params, starts, new_params, self.alpha, self.beta)
        return L2SPLossOutput(ce + sp + head, ce, sp, head)
