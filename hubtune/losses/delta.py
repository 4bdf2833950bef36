"""DELTA: deep learning transfer using feature-map attention (Li, Xiong, Wang, Rao, Liu, Chen, Huan, ICLR 2019,
arXiv 1901.09229).

    Omega(w) = alpha * mean_b sum_c W_bc * ||FM_c(w, x_b) - FM_c(w0, x_b)||^2  +  beta / 2 * ||w_new||^2

FM_c is channel c of the backbone's last feature map (a CNN's C x H x W map, a ViT's N tokens x D), w0 the
starting backbone (frozen), ||.||^2 the sum over the channel's positions. The attention W_b. is the paper's
"supervised attention": the softmax over channels of how much the classification loss of sample b grows when
channel c is removed. Removing channel c of the map removes coordinate c of the pooled feature (average
pooling, CLS token: the pooled feature's coordinate c is read from channel c only), so for all channels at
once: logits_c = logits - f_c * W[:, c]; W_b. = softmax_c(CE(logits_c, y_b) - CE(logits, y_b)), computed from the
starting features f = pool(FM(w0, x)) and the current classifier, without gradient. docs/methods.md, section 7.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hubtune.losses._precision import at_least_float32

from hubtune.losses.l2_sp import squared_distance

__all__ = ["DeltaLoss", "channels_first", "channel_attention", "delta_feature_penalty"]


def channels_first(feature_map: Tensor) -> Tensor:
    """A (B, C, H, W) map or (B, N, D) tokens as (B, channels, positions)."""
    if feature_map.ndim == 4:
        return feature_map.flatten(2)
    if feature_map.ndim == 3:
        return feature_map.transpose(1, 2)
    raise ValueError(f"A feature map must be (B, C, H, W) or (B, tokens, D), got shape {tuple(feature_map.shape)}.")


@torch.no_grad()
def channel_attention(features: Tensor, labels: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """(B, C) softmax over channels of the loss increase when pooled-feature channel c is removed.

    features: (B, C) pooled starting features; weight: (K, C) and bias: (K,) the classifier. Costs B x C x K.
    """
    f = at_least_float32(features)
    w = at_least_float32(weight)
    logits = F.linear(f, w, at_least_float32(bias) if bias is not None else None)  # (B, K)
    removed = logits[:, None, :] - f[:, :, None] * w.t()[None, :, :]                        # (B, C, K)
    base = torch.logsumexp(logits, dim=1) - logits.gather(1, labels[:, None]).squeeze(1)   # (B,)
    target = removed.gather(2, labels[:, None, None].expand(-1, f.shape[1], 1)).squeeze(2)  # (B, C)
    increase = torch.logsumexp(removed, dim=2) - target - base[:, None]
    return torch.softmax(increase, dim=1)


def delta_feature_penalty(feature_maps: Sequence[Tensor], start_maps: Sequence[Tensor],
                          attentions: Sequence[Tensor]) -> Tensor:
    """``sum_j mean_b sum_c W_jbc * ||FM_jbc - FM0_jbc||^2`` over layers j, in float32; maps as (B, C, positions)."""
    total = torch.zeros((), dtype=torch.float32, device=feature_maps[0].device)
    for fm, fm0, att in zip(feature_maps, start_maps, attentions, strict=True):
        distance = (at_least_float32(fm) - at_least_float32(fm0)).pow(2).sum(dim=2)  # (B, C)
        total = total + (at_least_float32(att) * distance).sum(dim=1).mean()
    return total


class DeltaLoss(nn.Module):
    """Cross-entropy plus DELTA's attention-weighted feature-map distance and L2 on the new head; owns no
    parameters. Maps as (B, C, positions); ``start_features`` the starting model's pooled features."""

    def __init__(self, alpha: float = 0.01, beta: float = 0.01):
        super().__init__()
        self.alpha = float(alpha)
        self.beta = float(beta)

    def forward(self, logits: Tensor, labels: Tensor, feature_map: Tensor, start_map: Tensor, start_features: Tensor,
                classifier: nn.Linear, new_params: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        ce = F.cross_entropy(at_least_float32(logits), labels)
        attention = channel_attention(start_features, labels, classifier.weight.detach(),
                                      classifier.bias.detach() if classifier.bias is not None else None)
        feature_term = self.alpha * delta_feature_penalty([feature_map], [start_map], [attention])
        head_term = 0.5 * self.beta * squared_distance(new_params)
        return ce + feature_term + head_term, ce, feature_term, head_term
