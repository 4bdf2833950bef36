"""StyleGAN2 (Karras et al., CVPR 2020, arXiv 1912.04958) in pure PyTorch: no custom CUDA or C++ extensions.

Written from the papers' definitions (StyleGAN, StyleGAN2, StyleGAN2-ADA's configurations):

* **Equalised learning rate** everywhere (:class:`EqualLinear`, :class:`EqualConv2d`, the modulated layers): weights
  are stored N(0, 1) (divided by ``lr_mul``) and scaled at run time by ``lr_mul / sqrt(fan_in)``; the mapping
  network uses ``lr_mul = 0.01``.
* **Generator** (:class:`StyleGAN2Generator`, ``arch = "stylegan2"``): z is normalised (second moment), a mapping
  network of ``mapping_layers`` FC layers (leaky ReLU 0.2, gain sqrt(2)) gives w; a running average ``w_avg``
  (beta 0.995, updated in training) serves truncation. Synthesis starts from a learned 4x4 constant; each layer
  is a modulated and demodulated 3x3 convolution (grouped convolution: ``w' = w * s``, ``w'' = w' /
  sqrt(sum w'^2 + 1e-8)``), plus per-pixel noise with a learned strength, bias and leaky ReLU. Up-sampling is
  zero insertion followed by the separable FIR filter [1, 3, 3, 1] (gain 4), a native ``upfirdn2d``. Skip
  architecture: a toRGB (modulated 1x1, not demodulated) at each resolution, summed with the up-sampled RGB of
  the previous one. Style mixing regularisation in training (probability 0.9: a second latent takes over from a
  random layer, drawn per sample). Truncation at sampling time; ``truncation_psi == 1`` leaves w untouched.
* **Discriminator** (:class:`StyleGAN2Discriminator`): fromRGB at the top resolution, residual blocks (3x3 conv,
  3x3 conv with blurred stride-2 down-sampling, a 1x1 skip with the same down-sampling, the sum times
  1/sqrt(2)), then at 4x4 hubtune's :class:`~hubtune.gan.models.MinibatchStdDev` (it declares
  ``batch_coupled``, so AdaptiveMix makes its third pass), a 3x3 conv, an FC layer (``features``) and the FC to
  one logit (``head``).

Channel widths follow ``min(channel_base // resolution, channel_max)``. Named presets (:data:`STYLEGAN2_PRESETS`):
``"small"`` (a CPU-sized default), ``"paper256"`` and ``"cifar"`` (StyleGAN2-ADA's configurations: paper256 is
fmaps 0.5, i.e. channel_base 16384, channel_max 512, 8 mapping layers, z/w 512, minibatch-stddev group 8).
:data:`STYLEGAN2_TRAINING` holds the matching training hyper-parameters for the loop.

What the training loop (:mod:`hubtune.gan.loop`, ``hubtune gan --arch stylegan2``) does with these models:

* **Lazy R1** (StyleGAN2 appendix B): compute R1 on the real batch only every ``r1_interval = 16`` discriminator
  steps, and add ``r1_gamma / 2 * r1_interval * R1`` on those steps (the penalty scaled by the interval, so its
  average weight is unchanged). Adam for D then uses ``lr * c`` and ``betas ** c`` with
  ``c = r1_interval / (r1_interval + 1)``.
* **Path length** (off by default at small sizes; StyleGAN2-ADA turns it off for CIFAR): every
  ``pl_interval = 4`` generator steps, run G on ``batch // 2`` latents with ``return_ws=True`` and add
  ``pl_weight (2) * pl_interval * penalty`` with :class:`PathLengthPenalty` (running mean decay 0.01). Its
  running mean is checkpointed per process (``process_state_<rank>.json``): each process keeps its own mean, as
  StyleGAN2-ADA does.
* **Style mixing** and the ``w_avg`` update happen inside the generator's training-mode forward; the loop's EMA
  copy of G (decay from ``ema_kimg`` in :data:`STYLEGAN2_TRAINING`) copies buffers (``w_avg``) as well as
  averaging parameters.
* **Minibatch-stddev** groups are formed within each process's batch (as in StyleGAN2-ADA, where the group is
  ``min(group, per-GPU batch)``); :func:`group_preserving_permutation` gives AdaptiveMix partners under which the
  third pass is exactly ``f(x)[p]``.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.utils import save_image

from hubtune.errors import ConfigError
from hubtune.gan.archs.base import GeneratorRegulariser
from hubtune.gan.models import Discriminator, Generator, MinibatchStdDev, check_count, check_seed
from hubtune.gan.presets import STYLEGAN2_PRESETS, STYLEGAN2_TRAINING
from hubtune.hub.generator_card import TRUNCATION_IMAGE

__all__ = [
    "PathLengthRegulariser",
    "STYLEGAN2_PRESETS",
    "STYLEGAN2_TRAINING",
    "EqualLinear",
    "EqualConv2d",
    "modulated_conv2d",
    "upfirdn2d",
    "upsample2d",
    "downsample2d",
    "MappingNetwork",
    "SynthesisNetwork",
    "StyleGAN2Generator",
    "StyleGAN2Discriminator",
    "PathLengthPenalty",
    "path_length_penalty",
    "build_stylegan2",
    "group_preserving_permutation",
    "TRUNCATION_SWEEP",
]

TRUNCATION_SWEEP = (1.0, 0.7, 0.5)  # the card's truncation image: one row per psi
TRUNCATION_COLUMNS = 8

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)
FIR_TAPS = (1.0, 3.0, 3.0, 1.0)
NoiseMode = Literal["random", "none"]

def _check_preset(preset: str) -> dict[str, int]:
    if preset not in STYLEGAN2_PRESETS:
        raise ConfigError(f"StyleGAN2 preset must be one of {sorted(STYLEGAN2_PRESETS)}, got {preset!r}")
    return STYLEGAN2_PRESETS[preset]


def _check_size(image_size: int, channels: int, what: str) -> list[int]:
    """The resolutions 4, 8, ..., image_size."""
    if not isinstance(image_size, int) or image_size < 32 or image_size > 256 or image_size & (image_size - 1):
        raise ConfigError(f"{what}: image_size must be a power of two between 32 and 256, got {image_size!r}")
    if channels not in (1, 3):
        raise ConfigError(f"{what}: channels must be 1 or 3, got {channels!r}")
    return [2 ** i for i in range(2, int(math.log2(image_size)) + 1)]


def _check_positive_int(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a positive int, got {value!r}")
    return value


def check_truncation(truncation_psi: Any, truncation_cutoff: Any) -> tuple[float, int | None]:
    """(psi as a float, cutoff) if psi is one finite real number and cutoff a non-negative int or None; else a
    ConfigError naming the parameter."""
    psi = truncation_psi
    if torch.is_tensor(psi):
        if psi.numel() != 1:
            raise ConfigError(f"truncation_psi must be one number, got a tensor of shape {tuple(psi.shape)}")
        psi = psi.item()
    if isinstance(psi, bool) or not isinstance(psi, numbers.Real) or not math.isfinite(psi):
        raise ConfigError(f"truncation_psi must be a finite real number (1 = no truncation, e.g. 0.7 pulls w towards "
                          f"its average), got {truncation_psi!r}")
    cutoff = truncation_cutoff
    if cutoff is not None and (isinstance(cutoff, bool) or not isinstance(cutoff, numbers.Integral) or cutoff < 0):
        raise ConfigError(f"truncation_cutoff must be a non-negative int (how many of the first ws to truncate) or "
                          f"None (all of them), got {truncation_cutoff!r}")
    return float(psi), None if cutoff is None else int(cutoff)


def check_noise_mode(noise_mode: Any) -> str:
    if noise_mode not in ("random", "none"):
        raise ConfigError(f"noise_mode must be 'random' or 'none', got {noise_mode!r}")
    return noise_mode


def _width(resolution: int, channel_base: int, channel_max: int) -> int:
    return max(1, min(channel_base // resolution, channel_max))


def _lrelu(x: Tensor) -> Tensor:
    return F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN


# --------------------------------------------------------------------------------------------------
# resampling: a native upfirdn2d
# --------------------------------------------------------------------------------------------------


def _fir_1d(taps: Sequence[float] = FIR_TAPS, device=None, dtype=None) -> Tensor:
    f = torch.as_tensor(taps, dtype=torch.float64)
    return (f / f.sum()).to(device=device, dtype=dtype or torch.float32)


def upfirdn2d(x: Tensor, taps: Sequence[float] = FIR_TAPS, up: int = 1, down: int = 1,
              pad: tuple[int, int, int, int] = (0, 0, 0, 0), gain: float = 1.0) -> Tensor:
    """Up-sample by zero insertion, pad (left, right, top, bottom), filter with the separable normalised FIR
    ``taps`` (outer product, times ``gain``), keep every ``down``-th pixel. All channels alike (depthwise)."""
    b, c, h, w = x.shape
    if up > 1:
        x = F.pad(x.reshape(b, c, h, 1, w, 1), [0, up - 1, 0, 0, 0, up - 1]).reshape(b, c, h * up, w * up)
    x = F.pad(x, list(pad))
    f = _fir_1d(taps, x.device, x.dtype).flip(0)  # a true convolution (conv2d correlates)
    k = f.numel()
    x = F.conv2d(x, (f * gain).view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)  # along width
    x = F.conv2d(x, f.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)  # along height
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def upsample2d(x: Tensor, taps: Sequence[float] = FIR_TAPS, factor: int = 2) -> Tensor:
    """(B, C, H, W) -> (B, C, factor H, factor W): zero insertion, then the FIR filter with gain factor^2."""
    k = len(taps)
    p0, p1 = (k + factor - 1) // 2, (k - factor) // 2
    return upfirdn2d(x, taps, up=factor, pad=(p0, p1, p0, p1), gain=factor * factor)


def downsample2d(x: Tensor, taps: Sequence[float] = FIR_TAPS, factor: int = 2) -> Tensor:
    """(B, C, H, W) -> (B, C, H / factor, W / factor): the FIR filter, then every factor-th pixel."""
    k = len(taps)
    p0, p1 = (k - factor + 1) // 2, (k - factor) // 2
    return upfirdn2d(x, taps, down=factor, pad=(p0, p1, p0, p1))


# --------------------------------------------------------------------------------------------------
# equalised learning rate layers
# --------------------------------------------------------------------------------------------------


class EqualLinear(nn.Module):
    """Fully connected layer with equalised learning rate.

    Stored ``weight ~ N(0, 1) / lr_mul`` and ``bias = bias_init / lr_mul``; at run time the weight is
    ``weight * lr_mul / sqrt(in_features)`` and the bias ``bias * lr_mul``. ``activation="lrelu"``: leaky ReLU
    (0.2) times sqrt(2).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, bias_init: float = 0.0,
                 lr_mul: float = 1.0, activation: Literal["linear", "lrelu"] = "linear") -> None:
        super().__init__()
        self.in_features, self.out_features, self.lr_mul, self.activation = in_features, out_features, lr_mul, activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init) / lr_mul)) if bias else None
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.bias_gain = lr_mul

    def runtime_weight(self) -> Tensor:
        return self.weight * self.weight_gain

    def forward(self, x: Tensor) -> Tensor:
        bias = self.bias * self.bias_gain if self.bias is not None else None
        x = F.linear(x, self.runtime_weight().to(x.dtype), None if bias is None else bias.to(x.dtype))
        return _lrelu(x) if self.activation == "lrelu" else x

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, lr_mul={self.lr_mul}, activation={self.activation}"


class EqualConv2d(nn.Module):
    """Convolution with equalised learning rate (run-time weight ``weight / sqrt(in * k * k)``), "same" padding,
    optionally down-sampling by 2 (FIR blur, then stride 2), optional bias and leaky ReLU (gain sqrt(2))."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: Literal["linear", "lrelu"] = "linear", down: bool = False) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.activation, self.down = activation, down
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)

    def runtime_weight(self) -> Tensor:
        return self.weight * self.weight_gain

    def forward(self, x: Tensor) -> Tensor:
        w = self.runtime_weight().to(x.dtype)
        k = self.kernel_size
        if self.down and k == 1:
            x = F.conv2d(downsample2d(x), w)
        elif self.down:  # blur with the padding of the convolution folded in, then a stride-2 convolution
            p = (len(FIR_TAPS) - 2) + (k - 1)
            x = F.conv2d(upfirdn2d(x, pad=((p + 1) // 2, p // 2, (p + 1) // 2, p // 2)), w, stride=2)
        else:
            x = F.conv2d(x, w, padding=k // 2)
        if self.bias is not None:
            x = x + self.bias.to(x.dtype).view(1, -1, 1, 1)
        return _lrelu(x) if self.activation == "lrelu" else x

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"activation={self.activation}, down={self.down}")


def modulated_conv2d(x: Tensor, weight: Tensor, styles: Tensor, demodulate: bool = True, padding: int = 0,
                     eps: float = 1e-8) -> Tensor:
    """StyleGAN2's modulated convolution as one grouped convolution.

    Per sample b: ``w'_b = weight * styles[b]`` (scaling the input channels), and with ``demodulate``
    ``w''_b = w'_b / sqrt(sum_{in, kh, kw} w'_b^2 + eps)`` per output channel; then ``conv2d(x[b], w''_b)``.

    Args:
        x: (B, I, H, W); weight: (O, I, k, k); styles: (B, I).
    """
    b, in_c, h, w = x.shape
    out_c, _, kh, kw = weight.shape
    dtype = torch.promote_types(x.dtype, torch.float32)  # the weights in float32 (float64) also under autocast
    with torch.autocast(device_type=x.device.type, enabled=False):
        wts = weight.to(dtype).unsqueeze(0) * styles.to(dtype).view(b, 1, in_c, 1, 1)  # (B, O, I, k, k)
        if demodulate:
            wts = wts * (wts.square().sum(dim=(2, 3, 4), keepdim=True) + eps).rsqrt()
    wts = wts.to(x.dtype)
    out = F.conv2d(x.reshape(1, b * in_c, h, w), wts.reshape(b * out_c, in_c, kh, kw), padding=padding, groups=b)
    return out.reshape(b, out_c, out.shape[-2], out.shape[-1])


# --------------------------------------------------------------------------------------------------
# generator
# --------------------------------------------------------------------------------------------------


class MappingNetwork(nn.Module):
    """z (B, z_dim) -> ws (B, num_ws, w_dim); keeps the running average ``w_avg`` used by truncation."""

    def __init__(self, z_dim: int, w_dim: int, num_ws: int, num_layers: int = 8, lr_mul: float = 0.01,
                 w_avg_beta: float = 0.995) -> None:
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws, self.w_avg_beta = z_dim, w_dim, num_ws, w_avg_beta
        dims = [z_dim] + [w_dim] * num_layers
        self.layers = nn.Sequential(*[EqualLinear(i, o, lr_mul=lr_mul, activation="lrelu") for i, o in zip(dims[:-1], dims[1:])])
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: Tensor, truncation_psi: float = 1.0, truncation_cutoff: int | None = None,
                update_w_avg: bool = False) -> Tensor:
        z = z.reshape(z.shape[0], -1)
        x = z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()  # second-moment normalisation
        w = self.layers(x)
        if update_w_avg:
            with torch.no_grad():
                self.w_avg.copy_(w.detach().float().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        ws = w.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:  # psi == 1: w is not touched at all
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            ws[:, :cutoff] = self.w_avg.to(ws.dtype).lerp(ws[:, :cutoff], float(truncation_psi))
        return ws


class _SynthesisLayer(nn.Module):
    """Modulated + demodulated 3x3 convolution (optionally after x2 up-sampling), noise, bias, leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: bool) -> None:
        super().__init__()
        self.resolution, self.up = resolution, up
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.weight_gain = 1.0 / math.sqrt(in_channels * 9)
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: Tensor, w: Tensor, noise_mode: NoiseMode = "random", noise: Tensor | None = None) -> Tensor:
        styles = self.affine(w)
        if self.up:
            x = upsample2d(x)
        x = modulated_conv2d(x, self.weight * self.weight_gain, styles, demodulate=True, padding=1)
        if noise is None and noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
        if noise is not None:
            x = x + noise.to(x.dtype) * self.noise_strength.to(x.dtype)
        return _lrelu(x + self.bias.to(x.dtype).view(1, -1, 1, 1))


class _ToRGB(nn.Module):
    """Modulated 1x1 convolution without demodulation, plus bias (no activation)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int) -> None:
        super().__init__()
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.weight_gain = 1.0 / math.sqrt(in_channels)
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        x = modulated_conv2d(x, self.weight * self.weight_gain, self.affine(w), demodulate=False)
        return x + self.bias.to(x.dtype).view(1, -1, 1, 1)


class SynthesisNetwork(nn.Module):
    """ws (B, num_ws, w_dim) -> images (B, channels, R, R), skip architecture from a learned 4x4 constant.

    Layer order: ``convs[0]`` at 4x4, then per resolution r = 8 ... R an up-sampling conv and a conv. ToRGB of
    resolution r reads the w of the next conv (as in StyleGAN2), the last toRGB the last w: ``num_ws =
    len(convs) + 1``.
    """

    def __init__(self, image_size: int, channels: int, w_dim: int, channel_base: int, channel_max: int) -> None:
        super().__init__()
        self.resolutions = _check_size(image_size, channels, "SynthesisNetwork")
        width = {r: _width(r, channel_base, channel_max) for r in self.resolutions}
        self.const = nn.Parameter(torch.randn(width[4], 4, 4))
        convs = [_SynthesisLayer(width[4], width[4], w_dim, 4, up=False)]
        torgbs = [_ToRGB(width[4], channels, w_dim)]
        for r in self.resolutions[1:]:
            convs.append(_SynthesisLayer(width[r // 2], width[r], w_dim, r, up=True))
            convs.append(_SynthesisLayer(width[r], width[r], w_dim, r, up=False))
            torgbs.append(_ToRGB(width[r], channels, w_dim))
        self.convs, self.torgbs = nn.ModuleList(convs), nn.ModuleList(torgbs)
        self.num_ws = len(convs) + 1

    def noise_resolutions(self) -> list[int]:
        """The spatial size of each conv layer's noise input, in layer order."""
        return [layer.resolution for layer in self.convs]

    def forward(self, ws: Tensor, noise_mode: NoiseMode = "random", noise: Sequence[Tensor] | None = None) -> Tensor:
        if ws.dim() != 3 or ws.shape[1] != self.num_ws:
            raise ValueError(f"ws must have shape (B, {self.num_ws}, w_dim), got {tuple(ws.shape)}")
        if noise is not None and len(noise) != len(self.convs):
            raise ValueError(f"noise must hold {len(self.convs)} tensors (one per conv layer), got {len(noise)}")
        x = self.const.to(ws.dtype).unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
        layer_noise = (lambda i: None) if noise is None else (lambda i: noise[i])
        x = self.convs[0](x, ws[:, 0], noise_mode, layer_noise(0))
        img = self.torgbs[0](x, ws[:, 1])
        for block in range(1, len(self.torgbs)):
            i = 2 * block - 1
            x = self.convs[i](x, ws[:, i], noise_mode, layer_noise(i))
            x = self.convs[i + 1](x, ws[:, i + 1], noise_mode, layer_noise(i + 1))
            img = upsample2d(img) + self.torgbs[block](x, ws[:, i + 2])
        return img


class StyleGAN2Generator(Generator):
    """StyleGAN2 generator (see the module docstring): z (B, latent_dim) -> images (B, C, R, R), about [-1, 1].

    The constructor's parameters are the keys of the config.json the generator is saved with (``config_dict()``:
    every one written out, the preset's values resolved), which is how ``Generator.from_pretrained`` rebuilds it;
    hence their number. :meth:`from_config` takes such a config (a mapping: a loaded config.json, ``config_dict()``)
    instead of the keywords.

    Args:
        image_size: 32, 64, 128 or 256. channels: 1 or 3.
        preset: ``"small"``, ``"paper256"`` or ``"cifar"`` (:data:`STYLEGAN2_PRESETS`); explicit arguments left
            ``None`` take the preset's value.
        latent_dim: z dimension. w_dim: w dimension. mapping_layers: FC layers of the mapping network.
        channel_base, channel_max: widths ``min(channel_base // res, channel_max)``.
        mapping_lr_mul: equalised-lr multiplier of the mapping network (0.01).
        style_mixing_prob: probability, per sample in training, that a second latent takes over from a random
            layer on.
        w_avg_beta: decay of the running average of w (updated by training-mode forwards).
    """

    arch = "stylegan2"

    def __init__(
        self,
        image_size: int = 32,
        channels: int = 3,
        preset: str = "small",
        latent_dim: int | None = None,
        w_dim: int | None = None,
        mapping_layers: int | None = None,
        channel_base: int | None = None,
        channel_max: int | None = None,
        mapping_lr_mul: float = 0.01,
        style_mixing_prob: float = 0.9,
        w_avg_beta: float = 0.995,
    ) -> None:
        super().__init__()
        values = _check_preset(preset)
        _check_size(image_size, channels, "StyleGAN2Generator")
        resolved = dict(
            latent_dim=latent_dim if latent_dim is not None else values["latent_dim"],
            w_dim=w_dim if w_dim is not None else values["w_dim"],
            mapping_layers=mapping_layers if mapping_layers is not None else values["mapping_layers"],
            channel_base=channel_base if channel_base is not None else values["channel_base"],
            channel_max=channel_max if channel_max is not None else values["channel_max"],
        )
        for name, value in resolved.items():
            _check_positive_int(value, name)
        if not 0.0 <= float(style_mixing_prob) <= 1.0:
            raise ConfigError(f"style_mixing_prob must be in [0, 1], got {style_mixing_prob!r}")
        if not (0.0 <= float(w_avg_beta) < 1.0) or not float(mapping_lr_mul) > 0:
            raise ConfigError(f"need 0 <= w_avg_beta < 1 and mapping_lr_mul > 0, got {w_avg_beta!r}, {mapping_lr_mul!r}")
        self.preset = preset
        self.latent_dim, self.image_size, self.channels = resolved["latent_dim"], image_size, channels
        self.w_dim = resolved["w_dim"]
        self.style_mixing_prob = float(style_mixing_prob)
        self._resolved: dict[str, Any] = dict(
            resolved, image_size=image_size, channels=channels, preset=preset, mapping_lr_mul=float(mapping_lr_mul),
            style_mixing_prob=float(style_mixing_prob), w_avg_beta=float(w_avg_beta),
        )
        self.synthesis = SynthesisNetwork(image_size, channels, self.w_dim, resolved["channel_base"], resolved["channel_max"])
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(self.latent_dim, self.w_dim, self.num_ws, resolved["mapping_layers"],
                                      float(mapping_lr_mul), float(w_avg_beta))

    def config_dict(self) -> dict[str, Any]:
        """The JSON config: every constructor argument resolved (preset values written out), plus ``arch``."""
        config = super().config_dict()
        config.update(self._resolved)
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "StyleGAN2Generator":
        """A new (randomly initialised) generator from a saved config: the constructor's keys of ``config``
        (others, such as ``arch``, are left out)."""
        keys = set(inspect.signature(cls.__init__).parameters) - {"self"}
        return cls(**{k: v for k, v in config.items() if k in keys})

    @property
    def w_avg(self) -> Tensor:
        return self.mapping.w_avg

    def save_card_images(self, directory) -> None:
        """``samples.png`` and ``truncation.png``: one row per psi in :data:`TRUNCATION_SWEEP`, the same 8 seeds'
        latents and noise in every row."""
        super().save_card_images(directory)
        seed = int(self.training_info.get("sample_seed", 0))
        rows = [self.generate(TRUNCATION_COLUMNS, seed=seed, truncation_psi=psi) for psi in TRUNCATION_SWEEP]
        save_image(torch.cat(rows), str(Path(directory) / TRUNCATION_IMAGE), nrow=TRUNCATION_COLUMNS, padding=2)

    def card_values(self) -> dict[str, Any]:
        return {"arch_preset": self.preset, "truncation_image": TRUNCATION_IMAGE,
                "truncation_psis": list(TRUNCATION_SWEEP), "truncation_columns": TRUNCATION_COLUMNS,
                "arch_details": {k: self._resolved[k] for k in ("w_dim", "mapping_layers", "channel_base",
                                                                "channel_max", "style_mixing_prob")}}

    def _style_mix(self, z: Tensor, ws: Tensor) -> Tensor:
        batch = z.shape[0]
        mixing = torch.rand(batch, device=z.device) < self.style_mixing_prob
        ws2 = self.mapping(torch.randn_like(z))
        cutoff = torch.randint(1, self.num_ws, (batch,), device=z.device)
        cutoff = torch.where(mixing, cutoff, torch.full_like(cutoff, self.num_ws))
        take_second = torch.arange(self.num_ws, device=z.device).view(1, -1) >= cutoff.view(-1, 1)
        return torch.where(take_second.unsqueeze(-1), ws2, ws)

    def forward(
        self,
        z: Tensor,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        noise_mode: NoiseMode = "random",
        noise: Sequence[Tensor] | None = None,
        return_ws: bool = False,
    ):
        """Images from latents ``z``.

        In training mode the forward updates ``w_avg`` and applies style mixing (``style_mixing_prob``).

        Args:
            truncation_psi: ``w_avg + psi (w - w_avg)`` on the first ``truncation_cutoff`` (all if None) ws;
                1 leaves w untouched.
            noise_mode: ``"random"`` draws the noise inputs from the global RNG, ``"none"`` turns them off.
            noise: explicit noise inputs (one (B, 1, r, r) tensor per conv layer, see
                ``synthesis.noise_resolutions()``), overriding ``noise_mode``.
            return_ws: also return the ws (B, num_ws, w_dim) the synthesis read (for the path length penalty).
        """
        check_noise_mode(noise_mode)
        truncation_psi, truncation_cutoff = check_truncation(truncation_psi, truncation_cutoff)
        ws = self.mapping(z, truncation_psi, truncation_cutoff, update_w_avg=self.training)
        if self.training and self.style_mixing_prob > 0:
            ws = self._style_mix(z, ws)
        # float32 ws (a no-op without autocast): the tensor returned for the path length penalty is then the one the
        # synthesis read, also when a mixed-precision wrapper (Accelerate) converts half-precision outputs to float32
        ws = ws.float()
        images = self.synthesis(ws, noise_mode, noise)
        return (images, ws) if return_ws else images

    def sample_noise(self, num_images: int, seed: int, device: torch.device | str | None = None) -> list[Tensor]:
        """Noise inputs for ``num_images`` images of ``seed``: image i's noise comes from its own CPU generator
        (seeded from ``seed`` and i), so it does not depend on the device, the batch size or ``num_images``."""
        num_images, seed = check_count(num_images, "num_images"), check_seed(seed)
        device = device if device is not None else self.synthesis.const.device
        per_layer: list[list[Tensor]] = [[] for _ in self.synthesis.convs]
        for i in range(num_images):
            rng = torch.Generator(device="cpu").manual_seed((int(seed) * 1_000_003 + 7_919 * (i + 1)) % (2 ** 63))
            for layer, r in enumerate(self.synthesis.noise_resolutions()):
                per_layer[layer].append(torch.randn(1, 1, r, r, generator=rng))
        return [torch.cat(n).to(device) for n in per_layer]

    @torch.no_grad()
    def generate(self, num_images: int = 16, seed: int = 0, batch_size: int = 256, output_type: str = "pt",
                 truncation_psi: float = 1.0, truncation_cutoff: int | None = None, noise_mode: NoiseMode = "random"):
        """Sample ``num_images`` images in evaluation mode, the same for the same ``seed`` (latents as
        :meth:`sample_latents`, noise from :meth:`sample_noise`; image i does not depend on ``num_images`` or
        ``batch_size``). ``truncation_psi`` < 1 pulls w towards its average (1 = no truncation); it must be a finite
        real number, ``truncation_cutoff`` a non-negative int or None (a ConfigError names a bad one).

        Returns:
            ``output_type="pt"``: a float tensor (N, C, H, W) in [0, 1]; ``"pil"``: a list of PIL images.
        """
        truncation_psi, truncation_cutoff = check_truncation(truncation_psi, truncation_cutoff)
        check_noise_mode(noise_mode)
        return super().generate(num_images, seed, batch_size, output_type, truncation_psi=truncation_psi,
                                truncation_cutoff=truncation_cutoff, noise_mode=noise_mode)

    def _sample(self, num_images: int, seed: int, batch_size: int, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, noise_mode: NoiseMode = "random") -> Tensor:
        latents = self.sample_latents(num_images, seed)
        noise = self.sample_noise(num_images, seed) if noise_mode == "random" else None
        chunks = []
        for start in range(0, num_images, batch_size):
            stop = min(start + batch_size, num_images)
            chunk_noise = None if noise is None else [n[start:stop] for n in noise]
            chunks.append(self(latents[start:stop], truncation_psi, truncation_cutoff, noise_mode="none",
                               noise=chunk_noise))
        return torch.cat(chunks)


# --------------------------------------------------------------------------------------------------
# discriminator
# --------------------------------------------------------------------------------------------------


class _DiscriminatorBlock(nn.Module):
    """Residual block: 3x3 conv, 3x3 conv with down-sampling, 1x1 skip with down-sampling, sum / sqrt(2)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv0 = EqualConv2d(in_channels, in_channels, 3, activation="lrelu")
        self.conv1 = EqualConv2d(in_channels, out_channels, 3, activation="lrelu", down=True)
        self.skip = EqualConv2d(in_channels, out_channels, 1, bias=False, down=True)

    def forward(self, x: Tensor) -> Tensor:
        return (self.skip(x) + self.conv1(self.conv0(x))) * math.sqrt(0.5)


class StyleGAN2Discriminator(Discriminator):
    """StyleGAN2's residual discriminator (see the module docstring).

    ``features(x)``: fromRGB, residual blocks down to 4x4, minibatch-stddev, 3x3 conv, FC with leaky ReLU ->
    (B, width at 4x4). ``head(f)``: the last FC -> (B, 1).

    Args:
        image_size: 32, 64, 128 or 256. channels: 1 or 3. preset: as for the generator.
        channel_base, channel_max, mbstd_group: ``None`` takes the preset's value. The batch must be a multiple
            of ``min(mbstd_group, batch)``.
    """

    def __init__(self, image_size: int = 32, channels: int = 3, preset: str = "small", channel_base: int | None = None,
                 channel_max: int | None = None, mbstd_group: int | None = None) -> None:
        super().__init__()
        values = _check_preset(preset)
        resolutions = _check_size(image_size, channels, "StyleGAN2Discriminator")
        channel_base = _check_positive_int(channel_base if channel_base is not None else values["channel_base"], "channel_base")
        channel_max = _check_positive_int(channel_max if channel_max is not None else values["channel_max"], "channel_max")
        mbstd_group = _check_positive_int(mbstd_group if mbstd_group is not None else values["mbstd_group"], "mbstd_group")
        width = {r: _width(r, channel_base, channel_max) for r in resolutions}
        self.image_size, self.channels, self.preset = image_size, channels, preset
        self.from_rgb = EqualConv2d(channels, width[image_size], 1, activation="lrelu")
        self.blocks = nn.Sequential(*[_DiscriminatorBlock(width[r], width[r // 2]) for r in reversed(resolutions[1:])])
        self.mbstd = MinibatchStdDev(mbstd_group)
        self.conv = EqualConv2d(width[4] + 1, width[4], 3, activation="lrelu")
        self.fc = EqualLinear(width[4] * 16, width[4], activation="lrelu")
        self.out = EqualLinear(width[4], 1)
        self.num_features = width[4]

    def features(self, x: Tensor) -> Tensor:
        x = self.conv(self.mbstd(self.blocks(self.from_rgb(x))))
        return self.fc(x.flatten(1))

    def head(self, features: Tensor) -> Tensor:
        return self.out(features)


# --------------------------------------------------------------------------------------------------
# path length regularisation
# --------------------------------------------------------------------------------------------------


def path_length_penalty(images: Tensor, ws: Tensor, pl_mean: Tensor, decay: float = 0.01,
                        noise: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """StyleGAN2's path length penalty.

    ``y ~ N(0, I) / sqrt(H W)``; ``L_i = sqrt(mean_layers ||d (g(w_i) . y) / d w_i||^2)``;
    ``a = pl_mean + decay (mean_i L_i - pl_mean)``; penalty ``mean_i (L_i - a)^2`` (with a graph, for G's
    backward).

    Args:
        images: G's output for ``ws`` (with a graph). ws: (B, num_ws, w_dim), the tensor G read.
        pl_mean: the running mean (scalar tensor). noise: optional fixed ``y``.

    Returns:
        ``(penalty, new_pl_mean (detached), lengths (B,))``.
    """
    if noise is None:
        noise = torch.randn_like(images) / math.sqrt(images.shape[2] * images.shape[3])
    (grad,) = torch.autograd.grad((images.float() * noise.float()).sum(), ws, create_graph=True)
    lengths = grad.float().square().sum(dim=2).mean(dim=1).sqrt()
    new_mean = pl_mean.float().lerp(lengths.mean().detach(), decay)
    penalty = (lengths - new_mean).square().mean()
    return penalty, new_mean.detach(), lengths


class PathLengthPenalty(nn.Module):
    """:func:`path_length_penalty` with its running mean kept in the ``pl_mean`` buffer (updated per call).

    The loop adds ``pl_weight * pl_interval * penalty`` to G's loss every ``pl_interval`` steps.
    """

    def __init__(self, decay: float = 0.01) -> None:
        super().__init__()
        self.decay = float(decay)
        self.register_buffer("pl_mean", torch.zeros(()))

    def forward(self, images: Tensor, ws: Tensor, noise: Tensor | None = None) -> Tensor:
        penalty, new_mean, _ = path_length_penalty(images, ws, self.pl_mean, self.decay, noise)
        self.pl_mean.copy_(new_mean)
        return penalty


class PathLengthRegulariser(GeneratorRegulariser):
    """StyleGAN2's path-length regularisation as the loop's lazy generator regulariser: every ``interval`` generator
    steps, on a fresh batch of latents, ``weight * interval * penalty``; the running mean ``pl_mean`` is this
    process's state (checkpointed as ``process_state_<rank>.json``)."""

    def __init__(self, weight: float, interval: int, decay: float = 0.01) -> None:
        self.weight, self.interval = float(weight), int(interval)
        self.module = PathLengthPenalty(decay)

    def to(self, device) -> "PathLengthRegulariser":
        self.module.to(device)
        return self

    def penalty(self, G, batch_size, device, accelerator) -> Tensor:
        latent_dim = accelerator.unwrap_model(G).latent_dim
        with accelerator.autocast():
            images, ws = G(torch.randn(batch_size, latent_dim, device=device), return_ws=True)
        return self.module(images, ws)

    def logged_values(self, penalty: Tensor) -> dict[str, Tensor]:
        return {"pl_penalty": penalty.detach().float(), "pl_mean": self.module.pl_mean.detach().float().clone()}

    def state_dict(self) -> dict[str, float]:
        return {"pl_mean": float(self.module.pl_mean)}

    def load_state_dict(self, state) -> None:
        self.module.pl_mean.fill_(float(state["pl_mean"]))


# --------------------------------------------------------------------------------------------------
# builder
# --------------------------------------------------------------------------------------------------


def build_stylegan2(image_size: int = 32, channels: int = 3, preset: str = "small", mbstd_group: int | None = None,
                    **generator_options: Any) -> tuple[StyleGAN2Generator, StyleGAN2Discriminator]:
    """A matching StyleGAN2 (generator, discriminator) pair; ``generator_options`` are :class:`StyleGAN2Generator`'s
    (``latent_dim``, ``w_dim``, ``mapping_layers``, ``channel_base``, ``channel_max``, ``style_mixing_prob``, ...;
    the discriminator takes the same widths); ``None`` takes the preset's value."""
    g = StyleGAN2Generator(image_size, channels, preset, **generator_options)
    d = StyleGAN2Discriminator(image_size, channels, preset, channel_base=generator_options.get("channel_base"),
                               channel_max=generator_options.get("channel_max"), mbstd_group=mbstd_group)
    return g, d





def group_preserving_permutation(batch_size: int, group_size: int, device=None,
                                 generator: torch.Generator | None = None) -> Tensor:
    """A random partner permutation under which minibatch-stddev commutes: ``f(x[p]) == f(x)[p]`` exactly.

    :class:`~hubtune.gan.models.MinibatchStdDev` with group size ``g`` (``G = min(g, B)``) puts sample
    ``i = s * n + m`` (``n = B // G``) in group ``m``. This permutation moves whole groups: ``p(s * n + m) = s * n +
    sigma(m)`` for a random permutation ``sigma`` of the ``n`` groups, so the permuted batch has the same groups
    (with the members in the same order) and every layer before and after the statistic is per-sample: the
    discriminator's features of ``x[p]`` are bit-for-bit ``f(x)[p]``, and AdaptiveMix may use 2 passes instead
    of 3 (pass ``MixDraws(lam, this)`` and ``feature_passes=2``). Each sample's partner is still a uniformly
    random image of the (shuffled) batch, from its own slot ``s``; only pairs inside one group are excluded
    (unless ``sigma(m) == m``, which pairs a sample with itself, as any random permutation can).

    This does NOT let the MIXED batch reuse the clean batch's statistics: the std of ``lam x + (1 - lam) x[p]``'s
    activations is not a function of the clean activations' std (the layers before the statistic are
    non-linear), so the mixed pass computes its own.
    """
    group = min(group_size, batch_size)
    if group < 1 or batch_size % group:
        raise ValueError(f"batch {batch_size} is not a multiple of the minibatch-stddev group {group}")
    n = batch_size // group
    sigma = torch.randperm(n, generator=generator).to(device)
    slots = torch.arange(group).view(group, 1).to(device) * n
    return (slots + sigma.view(1, n)).reshape(-1)
