"""GAN generators and discriminators: DCGAN and a spectrally normalised ResNet GAN.

Every discriminator splits into ``features(x)`` (all blocks up to the last feature map, flattened) and
``head(f)`` (features -> one logit), and answers the calls AdaptiveMix and the training loop make through its
forward, so that wrappers such as DistributedDataParallel see every computation::

    D(x)                    -> logits (B,)
    D(x, output="both")     -> (logits, features)
    D(x, output="features") -> features
    D(f, output="head")     -> logits of features f

Every generator is a :class:`Generator`: a ``PyTorchModelHubMixin`` whose config.json is JSON-only and names the
architecture (``arch``), so ``Generator.from_pretrained(repo_or_dir)`` rebuilds any hubtune generator.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin, hf_hub_download
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

PAPER_URL = "https://arxiv.org/abs/2303.01559"
REPO_URL = "https://github.com/hubtune/hubtune"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

__all__ = [
    "Discriminator",
    "FeatureHeadDiscriminator",
    "as_discriminator",
    "MinibatchStdDev",
    "Generator",
    "DCGANGenerator",
    "DCGANDiscriminator",
    "ResNetGenerator",
    "ResNetDiscriminator",
    "GENERATOR_CLASSES",
    "build_gan",
    "GeneratorLoadError",
]


class GeneratorLoadError(ValueError):
    """A generator folder or repository that hubtune cannot load."""


def _num_stages(image_size: int, what: str) -> int:
    """Number of x2 resolution changes between 4x4 and ``image_size``."""
    if not isinstance(image_size, int) or image_size < 16 or image_size > 256 or image_size & (image_size - 1):
        raise ValueError(f"{what}: image_size must be a power of two between 16 and 256, got {image_size!r}")
    return int(math.log2(image_size)) - 2


# --------------------------------------------------------------------------------------------------
# discriminator protocol
# --------------------------------------------------------------------------------------------------

DiscriminatorOutput = Literal["logits", "both", "features", "head"]


class Discriminator(nn.Module):
    """Base class: subclasses define ``features(x)`` and ``head(f)``; forward dispatches on ``output``."""

    def features(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def head(self, features: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: Tensor, output: DiscriminatorOutput = "logits"):
        if output == "head":
            return self.head(x).reshape(-1)
        features = self.features(x)
        if output == "features":
            return features
        logits = self.head(features).reshape(-1)
        if output == "both":
            return logits, features
        if output == "logits":
            return logits
        raise ValueError(f"output must be 'logits', 'both', 'features' or 'head', got {output!r}")


class FeatureHeadDiscriminator(Discriminator):
    """Wraps any module that has ``features(x)`` and ``head(f)`` methods in the discriminator protocol."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        for name in ("features", "head"):
            if not callable(getattr(module, name, None)):
                raise TypeError(f"{type(module).__name__} has no callable `{name}`; a discriminator needs features(x) and head(f)")
        self.wrapped = module

    def features(self, x: Tensor) -> Tensor:
        return self.wrapped.features(x)

    def head(self, features: Tensor) -> Tensor:
        return self.wrapped.head(features)


def as_discriminator(module: nn.Module) -> Discriminator:
    """Return ``module`` if it is a :class:`Discriminator`, else wrap its ``features`` / ``head`` methods."""
    return module if isinstance(module, Discriminator) else FeatureHeadDiscriminator(module)


class MinibatchStdDev(nn.Module):
    """StyleGAN's minibatch standard deviation: appends, per group of ``group_size`` samples, the mean std.

    Couples the samples of a batch (a sample's output depends on its group), hence ``batch_coupled``.
    """

    batch_coupled = True

    def __init__(self, group_size: int = 4) -> None:
        super().__init__()
        if group_size < 2:
            raise ValueError(f"group_size must be >= 2, got {group_size}")
        self.group_size = group_size

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        group = min(self.group_size, b)
        if b % group:
            raise ValueError(f"minibatch-stddev: batch size {b} is not a multiple of its group size {group}")
        grouped = x.reshape(group, b // group, c, h, w)
        std = (grouped.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (b // group,)
        std = std.view(1, -1, 1, 1, 1).expand(group, -1, 1, h, w).reshape(b, 1, h, w)
        return torch.cat([x, std], dim=1)


# --------------------------------------------------------------------------------------------------
# generator base (Hub mixin)
# --------------------------------------------------------------------------------------------------

GENERATOR_CLASSES: dict[str, type["Generator"]] = {}


class Generator(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="hubtune",
    tags=["gan", "adaptivemix"],
    pipeline_tag="unconditional-image-generation",
    license="apache-2.0",
    repo_url=REPO_URL,
    paper_url=PAPER_URL,
):
    """Base class of hubtune generators: latent ``z`` (B, latent_dim) -> images (B, C, H, W) in [-1, 1].

    ``Generator.from_pretrained(repo_or_dir)`` reads ``arch`` from config.json and builds that subclass, strictly
    loading ``model.safetensors`` (missing or unexpected weights are an error).
    """

    arch: ClassVar[str] = ""
    latent_dim: int
    image_size: int
    channels: int

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if cls.arch:
            GENERATOR_CLASSES[cls.arch] = cls

    def config_dict(self) -> dict[str, Any]:
        """The JSON config this generator is saved with (constructor arguments + ``arch``)."""
        config = dict(self._hub_mixin_config or {})
        config["arch"] = self.arch
        return config

    def _save_pretrained(self, save_directory: Path) -> None:
        from safetensors.torch import save_model

        save_model(self, str(Path(save_directory) / WEIGHTS_NAME))
        # written here so that the mixin keeps it (it only writes config.json when absent)
        (Path(save_directory) / CONFIG_NAME).write_text(json.dumps(self.config_dict(), sort_keys=True, indent=2))

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        revision: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | os.PathLike | None = None,
        force_download: bool = False,
        local_files_only: bool = False,
        map_location: str | torch.device = "cpu",
        **overrides: Any,
    ) -> "Generator":
        """Load a hubtune generator (any architecture) from a local folder or a Hub repository."""
        source = str(pretrained_model_name_or_path)

        def fetch(filename: str) -> str:
            if os.path.isdir(source):
                path = os.path.join(source, filename)
                if not os.path.isfile(path):
                    raise GeneratorLoadError(f"{source} has no {filename}: not a saved hubtune generator folder")
                return path
            return hf_hub_download(
                repo_id=source, filename=filename, revision=revision, token=token, cache_dir=cache_dir,
                force_download=force_download, local_files_only=local_files_only,
            )

        with open(fetch(CONFIG_NAME), encoding="utf-8") as f:
            config = json.load(f)
        arch = config.pop("arch", None)
        if arch not in GENERATOR_CLASSES:
            raise GeneratorLoadError(
                f"config.json of {source} names arch={arch!r}; hubtune knows {sorted(GENERATOR_CLASSES)}"
            )
        target = GENERATOR_CLASSES[arch]
        if not issubclass(target, cls):
            raise GeneratorLoadError(f"{source} holds a {target.__name__}, not a {cls.__name__}")
        init_params = set(target._hub_mixin_init_parameters) - {"self"}
        kwargs = {k: v for k, v in config.items() if k in init_params}
        kwargs.update(overrides)
        model = target(**kwargs)

        from safetensors.torch import load_file

        state = load_file(fetch(WEIGHTS_NAME), device=str(map_location))
        result = model.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise GeneratorLoadError(
                f"weights of {source} do not match {target.__name__}({kwargs}): missing {result.missing_keys[:5]}, "
                f"unexpected {result.unexpected_keys[:5]}"
            )
        return model.to(map_location).eval()

    def sample_latents(self, num_images: int, seed: int | None = None, device: torch.device | str | None = None) -> Tensor:
        """Standard normal latents; drawn on the CPU from ``seed`` (device-independent), else from the global RNG."""
        device = device if device is not None else next(self.parameters()).device
        if seed is None:
            return torch.randn(num_images, self.latent_dim, device=device)
        rng = torch.Generator(device="cpu").manual_seed(int(seed))
        return torch.randn(num_images, self.latent_dim, generator=rng).to(device)

    @torch.no_grad()
    def generate(self, num_images: int = 16, seed: int = 0, batch_size: int = 256, output_type: str = "pt"):
        """Sample ``num_images`` images, the same for the same ``seed``, in evaluation mode.

        Returns:
            ``output_type="pt"``: a float tensor (N, C, H, W) in [0, 1]; ``"pil"``: a list of PIL images.
        """
        if num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {num_images}")
        if output_type not in ("pt", "pil"):
            raise ValueError(f"output_type must be 'pt' or 'pil', got {output_type!r}")
        was_training = self.training
        self.eval()
        try:
            latents = self.sample_latents(num_images, seed)
            images = torch.cat([self(chunk) for chunk in latents.split(batch_size)])
        finally:
            self.train(was_training)
        images = ((images.float() + 1) / 2).clamp(0, 1).cpu()
        if output_type == "pt":
            return images
        from torchvision.transforms.functional import to_pil_image

        return [to_pil_image(image) for image in images]


# --------------------------------------------------------------------------------------------------
# DCGAN
# --------------------------------------------------------------------------------------------------


class DCGANGenerator(Generator):
    """DCGAN generator (Radford et al. 2016): transposed convolutions with BatchNorm and ReLU, tanh output."""

    arch = "dcgan"

    def __init__(self, latent_dim: int = 64, image_size: int = 32, channels: int = 3, base_channels: int = 32) -> None:
        super().__init__()
        stages = _num_stages(image_size, "DCGANGenerator")
        self.latent_dim, self.image_size, self.channels = latent_dim, image_size, channels
        width = base_channels * 2 ** (stages - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, width, 4, 1, 0, bias=False), nn.BatchNorm2d(width), nn.ReLU(True),
        ]
        for _ in range(stages - 1):
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width // 2), nn.ReLU(True)]
            width //= 2
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        _dcgan_init(self)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z.view(z.shape[0], -1, 1, 1))


class DCGANDiscriminator(Discriminator):
    """DCGAN discriminator: strided convolutions with LeakyReLU down to 4x4; features = that map, flattened.

    Args:
        norm: ``"spectral"`` (SN-DCGAN, per-sample), ``"batch"`` (the original DCGAN; couples the batch in
            training mode, so AdaptiveMix makes its third pass) or ``"none"``.
    """

    def __init__(self, image_size: int = 32, channels: int = 3, base_channels: int = 32,
                 norm: Literal["spectral", "batch", "none"] = "spectral") -> None:
        super().__init__()
        if norm not in ("spectral", "batch", "none"):
            raise ValueError(f"norm must be 'spectral', 'batch' or 'none', got {norm!r}")
        stages = _num_stages(image_size, "DCGANDiscriminator")
        wrap = spectral_norm if norm == "spectral" else (lambda m: m)
        layers: list[nn.Module] = [wrap(nn.Conv2d(channels, base_channels, 4, 2, 1)), nn.LeakyReLU(0.2, True)]
        width = base_channels
        for _ in range(stages - 1):
            layers.append(wrap(nn.Conv2d(width, width * 2, 4, 2, 1, bias=norm != "batch")))
            if norm == "batch":
                layers.append(nn.BatchNorm2d(width * 2))
            layers.append(nn.LeakyReLU(0.2, True))
            width *= 2
        self.blocks = nn.Sequential(*layers)
        self.num_features = width * 16
        self.linear = wrap(nn.Linear(self.num_features, 1))
        _dcgan_init(self)

    def features(self, x: Tensor) -> Tensor:
        return self.blocks(x).flatten(1)

    def head(self, features: Tensor) -> Tensor:
        return self.linear(features)


def _dcgan_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            weight = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
            nn.init.normal_(weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------------------------------
# ResNet GAN (SNGAN, Miyato et al. 2018)
# --------------------------------------------------------------------------------------------------


class _GeneratorBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(in_ch), nn.BatchNorm2d(out_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1)
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = F.interpolate(F.relu(self.bn1(x)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h))))
        return h + self.shortcut(F.interpolate(x, scale_factor=2, mode="nearest"))


class _DiscriminatorBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, downsample: bool, first: bool) -> None:
        super().__init__()
        self.conv1 = spectral_norm(nn.Conv2d(in_ch, out_ch, 3, 1, 1))
        self.conv2 = spectral_norm(nn.Conv2d(out_ch, out_ch, 3, 1, 1))
        self.shortcut = spectral_norm(nn.Conv2d(in_ch, out_ch, 1)) if (in_ch != out_ch or downsample) else None
        self.downsample, self.first = downsample, first

    def forward(self, x: Tensor) -> Tensor:
        h = x if self.first else F.relu(x)
        h = self.conv2(F.relu(self.conv1(h)))
        if self.downsample:
            h = F.avg_pool2d(h, 2)
        skip = x
        if self.first:  # SNGAN's optimised first block: pool before the 1x1 shortcut
            skip = F.avg_pool2d(skip, 2) if self.downsample else skip
            skip = self.shortcut(skip) if self.shortcut is not None else skip
        else:
            skip = self.shortcut(skip) if self.shortcut is not None else skip
            skip = F.avg_pool2d(skip, 2) if self.downsample else skip
        return h + skip


class ResNetGenerator(Generator):
    """SNGAN ResNet generator: linear to 4x4, residual up-sampling blocks, BN-ReLU-conv-tanh."""

    arch = "resnet"

    def __init__(self, latent_dim: int = 128, image_size: int = 32, channels: int = 3, base_channels: int = 64) -> None:
        super().__init__()
        stages = _num_stages(image_size, "ResNetGenerator")
        self.latent_dim, self.image_size, self.channels = latent_dim, image_size, channels
        self.base_channels = base_channels
        self.linear = nn.Linear(latent_dim, 16 * base_channels)
        self.blocks = nn.Sequential(*[_GeneratorBlock(base_channels, base_channels) for _ in range(stages)])
        self.out = nn.Sequential(nn.BatchNorm2d(base_channels), nn.ReLU(True), nn.Conv2d(base_channels, channels, 3, 1, 1), nn.Tanh())

    def forward(self, z: Tensor) -> Tensor:
        h = self.linear(z.reshape(z.shape[0], -1)).view(z.shape[0], self.base_channels, 4, 4)
        return self.out(self.blocks(h))


class ResNetDiscriminator(Discriminator):
    """SNGAN ResNet discriminator with spectral norm; features = ReLU then global sum pooling (B, C).

    Args:
        minibatch_std_group: if > 0, a :class:`MinibatchStdDev` layer with that group size before the last block
            (couples the batch, so AdaptiveMix makes its third pass).
    """

    def __init__(self, image_size: int = 32, channels: int = 3, base_channels: int = 64, minibatch_std_group: int = 0) -> None:
        super().__init__()
        stages = _num_stages(image_size, "ResNetDiscriminator")
        blocks: list[nn.Module] = [_DiscriminatorBlock(channels, base_channels, downsample=True, first=True)]
        blocks += [_DiscriminatorBlock(base_channels, base_channels, downsample=True, first=False) for _ in range(stages - 1)]
        if minibatch_std_group:
            blocks.append(MinibatchStdDev(minibatch_std_group))
        blocks.append(_DiscriminatorBlock(base_channels + (1 if minibatch_std_group else 0), base_channels, downsample=False, first=False))
        self.blocks = nn.Sequential(*blocks)
        self.num_features = base_channels
        self.linear = spectral_norm(nn.Linear(base_channels, 1))

    def features(self, x: Tensor) -> Tensor:
        return F.relu(self.blocks(x)).sum(dim=(2, 3))

    def head(self, features: Tensor) -> Tensor:
        return self.linear(features)


# --------------------------------------------------------------------------------------------------
# builder
# --------------------------------------------------------------------------------------------------

ARCHS = ("dcgan", "resnet")


def build_gan(
    arch: str = "dcgan",
    image_size: int = 32,
    channels: int = 3,
    latent_dim: int | None = None,
    g_channels: int | None = None,
    d_channels: int | None = None,
    d_norm: str = "spectral",
    minibatch_std_group: int = 0,
) -> tuple[Generator, Discriminator]:
    """Build a matching (generator, discriminator) pair by architecture name (``"dcgan"`` or ``"resnet"``)."""
    if arch == "dcgan":
        g = DCGANGenerator(latent_dim or 64, image_size, channels, g_channels or 32)
        if minibatch_std_group:
            raise ValueError("minibatch_std_group is only available with arch='resnet'")
        d = DCGANDiscriminator(image_size, channels, d_channels or 32, norm=d_norm)
    elif arch == "resnet":
        if d_norm != "spectral":
            raise ValueError("the ResNet discriminator always uses spectral norm; d_norm applies to arch='dcgan'")
        g = ResNetGenerator(latent_dim or 128, image_size, channels, g_channels or 64)
        d = ResNetDiscriminator(image_size, channels, d_channels or 64, minibatch_std_group)
    else:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    return g, d
