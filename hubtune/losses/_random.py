"""Random draws shared by the losses, written so that ``torch.compile`` traces them in one graph.

``torch.distributions.Beta`` samples through ``aten._sample_dirichlet``, which has no meta kernel: under
``torch.compile`` with a dynamic batch size it cannot be traced (and its argument validation reads tensors back
to the host). A symmetric Beta is a ratio of two Gamma draws, and ``aten._standard_gamma`` traces fine.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["sample_symmetric_beta"]


def sample_symmetric_beta(alpha: float, shape: tuple, device=None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Draws of Beta(alpha, alpha) of ``shape``, as ``G1 / (G1 + G2)`` with ``G1, G2 ~ Gamma(alpha, 1)``.

    The Gamma draws are float64 (they underflow only for alpha far below 0.1); where both do, the draw is a fair
    coin on {0, 1}, the limit of Beta(alpha, alpha) as alpha -> 0 (not 0.5). No host-device synchronisation.
    """
    tiny = torch.finfo(torch.float64).tiny
    concentration = torch.full((2, *shape), float(alpha), dtype=torch.float64, device=device)
    gamma = torch._standard_gamma(concentration)  # clamped to >= tiny by PyTorch: an underflow reads as tiny
    ratio = gamma[0] / (gamma[0] + gamma[1])
    coin = (torch.rand(shape, dtype=torch.float64, device=device) < 0.5).to(torch.float64)
    both_underflowed = (gamma[0] <= tiny) & (gamma[1] <= tiny)
    return torch.where(both_underflowed, coin, ratio).to(dtype)
