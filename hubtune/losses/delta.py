"""DELTA: deep learning transfer using feature-map attention (Li, Xiong, Wang, Rao, Liu, Chen, Huan, ICLR 2019,
arXiv 1901.09229), in the form of the authors' code (lixingjian/DELTA 6ba10d2) and tllib's (thuml/Transfer-Learning-
Library c4aa59e, tllib/regularization/delta.py):

    Omega(w) = alpha * sum_j 1/2 * sum_b sum_c  C_j * a_jc * ||FM_jc(w, x_b) - FM_jc(w0, x_b)||^2 / P_j
               + beta * 1/2 * ||w_new||^2

over the regularised layers j (the authors hook the last conv of each of ResNet's four stages, train.py:126-129),
with FM_jc channel c of layer j's output (P_j positions: H x W of a CNN map, the tokens of a ViT), w0 the starting
weights (a frozen copy in eval mode: train.py:95-99), a sum over the batch (not a mean) and the factor C_j / P_j:
DELTA train.py:167-178 (``distance = c * channel_weights[i] * ||.||^2 / (h * w)``, ``fea_loss += 0.5 * sum``),
tllib/regularization/delta.py:133-144 (the same). The head term: train.py:142-147 (``0.5 * ||param||^2`` over the
new fc layer, weight and bias; tllib/regularization/delta.py:28-32). Both weighted at train.py:224 (``loss_main +
alpha * loss_feature + beta * loss_classifier``; tllib examples/task_adaptation/image_classification/delta.py:277).

The channel attention a_j is computed ONCE, before fine-tuning, from filter importance on the pre-trained model:
the importance of channel c is the mean, over a few training batches, of the increase of the cross-entropy when
channel c of layer j's output is zeroed (channel_eval.py:178-202 zeroes filter c of the hooked conv, which has no
bias, so channel c of its output is zero: the same), measured with a linear classifier trained on the frozen pre-trained features (channel_eval.py:102-166).
Each layer's importances are standardised and passed through a softmax at temperature 5 (train.py:111-116,
tllib examples/task_adaptation/image_classification/delta.py:224-229): :func:`attention_from_importance`.
docs/methods.md, section 7.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hubtune.losses._precision import at_least_float32
from hubtune.losses.l2_sp import squared_distance

__all__ = ["ATTENTION_TEMPERATURE", "DeltaLoss", "attention_from_importance", "channels_first",
           "delta_feature_penalty"]

# The softmax temperature of the standardised importances: DELTA train.py:115 (``F.softmax(cw / 5)``), tllib
# examples/task_adaptation/image_classification/delta.py:229.
ATTENTION_TEMPERATURE = 5.0


def channels_first(feature_map: Tensor) -> Tensor:
    """A (B, C, H, W) map or (B, N, D) tokens as (B, channels, positions)."""
    if feature_map.ndim == 4:
        return feature_map.flatten(2)
    if feature_map.ndim == 3:
        return feature_map.transpose(1, 2)
    raise ValueError(f"A feature map must be (B, C, H, W) or (B, tokens, D), got shape {tuple(feature_map.shape)}.")


def attention_from_importance(importance: Tensor, temperature: float = ATTENTION_TEMPERATURE) -> Tensor:
    """One layer's channel attention (C,) from its channels' importance (C,): ``softmax(z / temperature)`` of the
    standardised importance ``z = (w - mean) / std`` (population std, numpy's default in the references: DELTA
    train.py:113, tllib's example delta.py:227); uniform
    when every channel is equally important (std 0)."""
    w = importance.double()
    std = w.std(unbiased=False)
    if not bool(torch.isfinite(std)) or float(std) == 0.0:
        return torch.full_like(importance, 1.0 / importance.numel(), dtype=torch.float32)
    return torch.softmax((w - w.mean()) / std / temperature, dim=0).float()


def delta_feature_penalty(feature_maps: Sequence[Tensor], start_maps: Sequence[Tensor],
                          attentions: Sequence[Tensor]) -> Tensor:
    """``sum_j 1/2 sum_b sum_c C_j * a_jc * ||FM_jbc - FM0_jbc||^2 / P_j`` in float32; maps as (B, C, positions),
    attentions (C,) per layer, the starting maps without gradient."""
    total = torch.zeros((), dtype=torch.float32, device=feature_maps[0].device)
    for fm, fm0, att in zip(feature_maps, start_maps, attentions, strict=True):
        channels, positions = fm.shape[1], fm.shape[2]
        distance = (at_least_float32(fm) - at_least_float32(fm0).detach()).pow(2).sum(dim=2)  # (B, C)
        total = total + 0.5 * (channels / positions) * (distance * at_least_float32(att)).sum()
    return total


class DeltaLoss(nn.Module):
    """Cross-entropy plus DELTA's attention-weighted feature-map distance and L2 on the new head; owns no
    parameters. Maps as (B, C, positions) (see :func:`channels_first`)."""

    def __init__(self, alpha: float = 0.01, beta: float = 0.01):  # DELTA train.py:34-35; tllib's example delta.py:326-329
        super().__init__()
        self.alpha = float(alpha)
        self.beta = float(beta)

    def forward(self, logits: Tensor, labels: Tensor, feature_maps: Sequence[Tensor], start_maps: Sequence[Tensor],
                attentions: Sequence[Tensor], new_params: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        ce = F.cross_entropy(at_least_float32(logits), labels)
        feature_term = self.alpha * delta_feature_penalty(feature_maps, start_maps, attentions)
        head_term = 0.5 * self.beta * squared_distance(new_params)
        return ce + feature_term + head_term, ce, feature_term, head_term
