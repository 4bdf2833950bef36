"""Differentiable augmentation for the discriminator (DiffAugment, Zhao et al., NeurIPS 2020, arXiv 2006.10738)
and an ADA-style adaptive augmentation probability (Karras et al., NeurIPS 2020, arXiv 2006.06676).

:class:`DiffAugment` applies, in this order, the transforms of its policy to a batch of images in [-1, 1]:

* ``"color"``: brightness ``x + b``, ``b ~ U(-0.5, 0.5)``; saturation ``(x - mean_c) s + mean_c``,
  ``s ~ U(0, 2)``; contrast ``(x - mean_chw) c + mean_chw``, ``c ~ U(0.5, 1.5)``;
* ``"translation"``: an integer shift of up to 1/8 of the image on each axis, zero padding
  (``out[i, j] = x[i - dy, j - dx]``);
* ``"cutout"``: a square of half the image size, centred on a random pixel, set to zero (clipped at the border).

Each elementary transform is applied to each sample with probability ``p``, with its own random parameters
per sample; ``p = 0`` returns the input itself. All are torch ops, differentiable w.r.t. the images, so the
generator receives gradients through ``D(augment(G(z)))``. The SAME :class:`DiffAugment` (same policy and p)
must be applied to every image the discriminator sees: the real batch, the fake batch of the D step, and the
fakes of the G step (and R1 is taken w.r.t. the un-augmented reals, through the augmentation, as in ADA).

Order with AdaptiveMix: **augmentation first**. The loop augments the real batch and the fake batch, then
hands the augmented batches to AdaptiveMix, which mixes augmented images with augmented images. The mixed
images therefore stay inside the augmented distribution that the discriminator is trained on (mixing
un-augmented images and augmenting the mix afterwards would give the mixed image a transform that none of its
two sources had, and its shrinkage target would be computed from differently-augmented batches); and the
shrinkage target ``lam f(x) + (1 - lam) f(x)[p]`` is built from the features of the very batch that was mixed.

:class:`AdaptiveAugmentProbability`: ADA's heuristic ``r_t = E[sign(D(real))]`` over an interval of
``interval`` D steps; then ``p += sign(r_t - target) * batch_size * interval / (ada_kimg * 1000)``,
clamped to [0, 1] (``target = 0.6``, ``ada_kimg = 500``: p can go from 0 to 1 in 500k images). The loop:

    ada.observe(real_logits)                      # every D step, the logits of the (augmented) reals
    augment.p = ada.step(global_batch_size, reduce=...)  # every D step; updates every `interval` calls
    tracker.log({"augment_p": ada.p, "augment_rt": ada.last_rt})
    checkpoint["ada"] = ada.state_dict()          # plain floats / ints: JSON; load_state_dict on resume

Under several processes pass ``reduce`` (a sum all-reduce of a 2-element tensor, e.g.
``lambda t: accelerator.reduce(t, "sum")``) so that every process computes the same r_t and p.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

from hubtune.errors import ConfigError

__all__ = [
    "AUGMENTATIONS",
    "AugmentParams",
    "DiffAugment",
    "AdaptiveAugmentProbability",
    "adjust_brightness",
    "adjust_saturation",
    "adjust_contrast",
    "translate",
    "cutout",
]

AUGMENTATIONS = ("color", "translation", "cutout")
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


# --------------------------------------------------------------------------------------------------
# the elementary transforms, with explicit per-sample parameters
# --------------------------------------------------------------------------------------------------


def adjust_brightness(x: Tensor, shift: Tensor) -> Tensor:
    """``x + shift[b]`` per sample; shift (B,)."""
    return x + shift.to(x.dtype).view(-1, 1, 1, 1)


def adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    """``(x - mean over channels) * factor[b] + mean`` per sample; factor (B,)."""
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * factor.to(x.dtype).view(-1, 1, 1, 1) + mean


def adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    """``(x - mean over C, H, W) * factor[b] + mean`` per sample; factor (B,)."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * factor.to(x.dtype).view(-1, 1, 1, 1) + mean


def translate(x: Tensor, dy: Tensor, dx: Tensor, max_shift: int | None = None) -> Tensor:
    """Shift sample b by (dy[b], dx[b]) integer pixels with zero padding: ``out[b, :, i, j] = x[b, :, i - dy, j -
    dx]`` where that pixel exists, else 0. Differentiable w.r.t. ``x`` (a gather).

    ``max_shift``: a bound on ``|dy|`` and ``|dx|`` (saves reading the shifts back from the device); shifts beyond
    the image are clipped to it (an image shifted by its full size is all zeros either way).
    """
    b, c, h, w = x.shape
    dy, dx = dy.to(device=x.device, dtype=torch.long), dx.to(device=x.device, dtype=torch.long)
    if max_shift is None:
        max_shift = int(max(dy.abs().max().item() if dy.numel() else 0, dx.abs().max().item() if dx.numel() else 0))
    pad = min(int(max_shift), max(h, w))
    dy, dx = dy.clamp(-pad, pad), dx.clamp(-pad, pad)
    padded = torch.nn.functional.pad(x, [pad, pad, pad, pad])
    rows = torch.arange(h, device=x.device).view(1, h) - dy.view(b, 1) + pad  # (B, H) rows of `padded`
    cols = torch.arange(w, device=x.device).view(1, w) - dx.view(b, 1) + pad  # (B, W)
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    out = padded.permute(0, 2, 3, 1)[batch, rows.view(b, h, 1), cols.view(b, 1, w)]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2)


def cutout(x: Tensor, center_y: Tensor, center_x: Tensor, size: tuple[int, int]) -> Tensor:
    """Zero, in sample b, the rows ``center_y[b] - size_h // 2 + [0, size_h)`` and the columns
    ``center_x[b] - size_w // 2 + [0, size_w)`` (the part inside the image)."""
    b, _, h, w = x.shape
    sh, sw = size
    top = center_y.to(device=x.device, dtype=torch.long).view(b, 1) - sh // 2
    left = center_x.to(device=x.device, dtype=torch.long).view(b, 1) - sw // 2
    rows = torch.arange(h, device=x.device).view(1, h)
    cols = torch.arange(w, device=x.device).view(1, w)
    in_rows = (rows >= top) & (rows < top + sh)  # (B, H)
    in_cols = (cols >= left) & (cols < left + sw)  # (B, W)
    keep = ~(in_rows.view(b, 1, h, 1) & in_cols.view(b, 1, 1, w))
    return x * keep.to(x.dtype)


# --------------------------------------------------------------------------------------------------
# DiffAugment
# --------------------------------------------------------------------------------------------------


@dataclass
class AugmentParams:
    """The random draws of one :class:`DiffAugment` call (each (B,); ``apply_*`` are bool masks).

    Fields of a transform not in the policy are ignored. Pass them to :meth:`DiffAugment.forward` to
    reproduce a call (tests, or the same draws on two batches).
    """

    brightness: Tensor
    saturation: Tensor
    contrast: Tensor
    dy: Tensor
    dx: Tensor
    center_y: Tensor
    center_x: Tensor
    apply_brightness: Tensor
    apply_saturation: Tensor
    apply_contrast: Tensor
    apply_translation: Tensor
    apply_cutout: Tensor


class DiffAugment(nn.Module):
    """DiffAugment with a per-sample application probability ``p`` (settable, e.g. from ADA).

    Args:
        policy: comma-separated subset of ``"color,translation,cutout"`` (applied in that order).
        p: probability that each elementary transform is applied to each sample.
        translation_ratio: the largest shift, as a fraction of the image side (1/8).
        cutout_ratio: the cutout square's side, as a fraction of the image side (1/2).
    """

    def __init__(self, policy: str = "color,translation,cutout", p: float = 1.0,
                 translation_ratio: float = TRANSLATION_RATIO, cutout_ratio: float = CUTOUT_RATIO) -> None:
        super().__init__()
        names = [name.strip() for name in policy.split(",") if name.strip()]
        unknown = [name for name in names if name not in AUGMENTATIONS]
        if unknown:
            raise ConfigError(f"unknown augmentation(s) {unknown} in policy {policy!r}; choose from {AUGMENTATIONS}")
        self.policy = tuple(name for name in AUGMENTATIONS if name in names)
        self.p = p
        self.translation_ratio = float(translation_ratio)
        self.cutout_ratio = float(cutout_ratio)

    @property
    def p(self) -> float:
        return self._p

    @p.setter
    def p(self, value: float) -> None:
        if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0):
            raise ConfigError(f"augmentation probability p must be in [0, 1], got {value!r}")
        self._p = float(value)

    def extra_repr(self) -> str:
        return f"policy={','.join(self.policy)!r}, p={self.p}"

    def sample_params(self, x: Tensor, generator: torch.Generator | None = None) -> AugmentParams:
        """Fresh draws for the batch ``x`` (on x's device, from ``generator`` or the global RNG)."""
        b, _, h, w = x.shape
        kw = dict(device=x.device, generator=generator)

        def uniform(low: float, high: float) -> Tensor:
            return torch.rand(b, **kw) * (high - low) + low

        def applied() -> Tensor:
            return torch.rand(b, **kw) < self.p

        sy, sx = int(h * self.translation_ratio + 0.5), int(w * self.translation_ratio + 0.5)
        return AugmentParams(
            brightness=uniform(-0.5, 0.5), saturation=uniform(0.0, 2.0), contrast=uniform(0.5, 1.5),
            dy=torch.randint(-sy, sy + 1, (b,), **kw), dx=torch.randint(-sx, sx + 1, (b,), **kw),
            center_y=torch.randint(0, h, (b,), **kw), center_x=torch.randint(0, w, (b,), **kw),
            apply_brightness=applied(), apply_saturation=applied(), apply_contrast=applied(),
            apply_translation=applied(), apply_cutout=applied(),
        )

    def cutout_size(self, h: int, w: int) -> tuple[int, int]:
        return int(h * self.cutout_ratio + 0.5), int(w * self.cutout_ratio + 0.5)

    def forward(self, x: Tensor, params: AugmentParams | None = None) -> Tensor:
        """Augment the batch ``x`` (B, C, H, W); ``params`` fixes the draws (else fresh ones)."""
        if self.p == 0 and params is None or not self.policy:
            return x
        drawn = self.sample_params(x) if params is None else None
        params = params if params is not None else drawn

        def where(mask: Tensor, new: Tensor, old: Tensor) -> Tensor:
            return torch.where(mask.to(x.device).view(-1, 1, 1, 1), new, old)

        if "color" in self.policy:
            x = where(params.apply_brightness, adjust_brightness(x, params.brightness), x)
            x = where(params.apply_saturation, adjust_saturation(x, params.saturation), x)
            x = where(params.apply_contrast, adjust_contrast(x, params.contrast), x)
        if "translation" in self.policy:
            zero = torch.zeros_like(params.dy)
            h, w = x.shape[2:]
            bound = max(int(h * self.translation_ratio + 0.5), int(w * self.translation_ratio + 0.5))
            x = translate(x, torch.where(params.apply_translation, params.dy, zero),
                          torch.where(params.apply_translation, params.dx, zero),
                          max_shift=bound if params is drawn else None)
        if "cutout" in self.policy:
            x = where(params.apply_cutout, cutout(x, params.center_y, params.center_x, self.cutout_size(*x.shape[2:])), x)
        return x


# --------------------------------------------------------------------------------------------------
# ADA's adaptive probability
# --------------------------------------------------------------------------------------------------


class AdaptiveAugmentProbability:
    """ADA's adaptive augmentation probability (see the module docstring).

    Args:
        target: the r_t target (0.6).
        interval: D steps per update (4).
        ada_kimg: thousands of images for p to move by 1 (500).
        p: the initial probability.
    """

    def __init__(self, target: float = 0.6, interval: int = 4, ada_kimg: float = 500.0, p: float = 0.0) -> None:
        if not 0.0 <= float(target) <= 1.0:
            raise ConfigError(f"ADA target must be in [0, 1], got {target!r}")
        if not isinstance(interval, int) or interval < 1:
            raise ConfigError(f"ADA interval must be a positive int, got {interval!r}")
        if not float(ada_kimg) > 0:
            raise ConfigError(f"ada_kimg must be > 0, got {ada_kimg!r}")
        if not 0.0 <= float(p) <= 1.0:
            raise ConfigError(f"initial p must be in [0, 1], got {p!r}")
        self.target, self.interval, self.ada_kimg = float(target), interval, float(ada_kimg)
        self.p = float(p)
        self.last_rt: float | None = None
        self._sign_sum: Tensor | float = 0.0  # pending statistics of the current interval
        self._count: Tensor | float = 0.0
        self._steps = 0

    def observe(self, real_logits: Tensor) -> None:
        """Accumulate ``sign(D(real))`` of one D step (no host sync: kept as tensors until the update)."""
        logits = real_logits.detach().float().reshape(-1)
        self._sign_sum = self._sign_sum + logits.sign().sum().double()
        self._count = self._count + float(logits.numel())

    def step(self, batch_size: int, reduce: Callable[[Tensor], Tensor] | None = None) -> float:
        """Count one D step; every ``interval`` steps compute r_t from the observed logits (summed over processes
        by ``reduce``), move p, and reset the statistics. Returns the current p.

        Args:
            batch_size: images per D step over all processes.
        """
        self._steps += 1
        if self._steps % self.interval:
            return self.p
        stats = torch.stack([torch.as_tensor(self._sign_sum, dtype=torch.float64).reshape(()).cpu(),
                             torch.as_tensor(self._count, dtype=torch.float64).reshape(()).cpu()])
        if reduce is not None:
            device = self._sign_sum.device if isinstance(self._sign_sum, Tensor) else "cpu"
            stats = reduce(stats.to(device)).cpu()
        sign_sum, count = (float(v) for v in stats.tolist())
        self._sign_sum, self._count = 0.0, 0.0
        if count > 0:
            self.update(sign_sum / count, batch_size)
        return self.p

    def update(self, rt: float, batch_size: int) -> float:
        """One ADA adjustment from a given ``r_t``: ``p += sign(r_t - target) * batch_size * interval /
        (ada_kimg * 1000)``, clamped to [0, 1]."""
        self.last_rt = float(rt)
        sign = (rt > self.target) - (rt < self.target)
        adjust = sign * (batch_size * self.interval) / (self.ada_kimg * 1000.0)
        self.p = min(max(self.p + adjust, 0.0), 1.0)
        return self.p

    def state_dict(self) -> dict[str, Any]:
        """Plain JSON values: p, the last r_t, the step count and the pending statistics of the interval."""
        return {
            "p": self.p, "last_rt": self.last_rt, "steps": self._steps,
            "sign_sum": float(self._sign_sum), "count": float(self._count),
            "target": self.target, "interval": self.interval, "ada_kimg": self.ada_kimg,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            self.p = float(state["p"])
            self.last_rt = None if state.get("last_rt") is None else float(state["last_rt"])
            self._steps = int(state["steps"])
            self._sign_sum, self._count = float(state["sign_sum"]), float(state["count"])
            self.target = float(state.get("target", self.target))
            self.interval = int(state.get("interval", self.interval))
            self.ada_kimg = float(state.get("ada_kimg", self.ada_kimg))
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"not an AdaptiveAugmentProbability state ({err!r}): {state!r}") from err
