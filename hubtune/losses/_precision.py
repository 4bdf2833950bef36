"""The precision the regularisers' maths runs in."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["at_least_float32"]


def at_least_float32(x: Tensor) -> Tensor:
    """``x`` in float32, or float64 when given float64 (never bf16 / fp16: no SVD, 8 mantissa bits)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))
