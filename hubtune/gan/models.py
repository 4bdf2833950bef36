"""GAN generators and discriminators: DCGAN and a spectrally normalised ResNet GAN.

Every discriminator splits into ``features(x)`` (all blocks up to the last feature map, flattened) and
``head(f)`` (features -> one logit), and answers the calls AdaptiveMix and the training loop make through its
forward, so that wrappers such as DistributedDataParallel see every computation::

    D(x)                    -> logits (B,)
    D(x, output="both")     -> (logits, features)
    D(x, output="features") -> features
    D(f, output="head")     -> logits of features f

Every generator is a :class:`Generator`: a ``PyTorchModelHubMixin`` whose config.json is JSON-only and names the
architecture (``arch``), so ``Generator.from_pretrained(repo_or_dir)`` rebuilds any hubtune generator. It saves and
loads through the mixin's hooks (``_save_pretrained`` / ``_from_pretrained``), and ``save_pretrained`` /
``push_to_hub`` write hubtune's generator card (README.md) and a sample grid (samples.png).
"""

from __future__ import annotations

import inspect
import json
import math
import numbers
import os
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from huggingface_hub import ModelCard, PyTorchModelHubMixin, constants, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors import SafetensorError
from safetensors.torch import save_model
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm
from torchvision.transforms.functional import to_pil_image
from torchvision.utils import save_image

from hubtune.backbones import create_backbone, public_name
from hubtune.errors import ConfigError, GeneratorLoadError, HubPushError
from hubtune.gan.archs import architectures, get_architecture
from hubtune.hub.generator_card import SAMPLE_COUNT, SAMPLE_IMAGE, GeneratorCardValues, render_generator_card
from hubtune.hub.push import check_online, resolve_token, validate_repo_id, wrap_hub_error
from hubtune.layouts.files import check_finite
from hubtune.offline import not_in_cache
from hubtune.permissions import give_default_permissions

PAPER_URL = "https://arxiv.org/abs/2303.01559"
REPO_URL = "https://github.com/hubtune/hubtune"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_NON_FINITE_GENERATOR = ("Use a generator saved before training diverged (Generator.from_pretrained of a good folder, or "
                         "resume from the last good checkpoint-* with lower learning rates or R1).")

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
    "TimmFeatureDiscriminator",
    "build_timm_discriminator",
    "build_gan",
    "GeneratorLoadError",
]

def _num_stages(image_size: int, what: str) -> int:
    """Number of x2 resolution changes between 4x4 and ``image_size``."""
    if not isinstance(image_size, int) or image_size < 16 or image_size > 256 or image_size & (image_size - 1):
        raise ConfigError(f"{what}: image_size must be a power of two between 16 and 256, got {image_size!r}")
    return int(math.log2(image_size)) - 2


def check_count(value: Any, name: str) -> int:
    """``value`` as an int if it is a positive whole number (not a bool); ConfigError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def check_seed(value: Any, allow_none: bool = False) -> int | None:
    """``value`` as an int seed (``None`` too when allowed); ConfigError otherwise."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"seed must be an int{' or None' if allow_none else ''}, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------------------------------
# discriminator protocol
# --------------------------------------------------------------------------------------------------

DiscriminatorOutput = Literal["logits", "both", "features", "head"]


class Discriminator(nn.Module):
    """Base class: subclasses define ``features(x)`` and ``head(f)``; forward dispatches on ``output``."""

    def card_details(self) -> dict[str, Any] | None:
        """What the generator's card says of this discriminator (None: the architecture's own)."""
        return None

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


class BackboneDiscriminator(Discriminator):
    """A timm backbone as a discriminator: its pooled features are ``features``, a new ``nn.Linear(num_features, 1)``
    (trainable, zero bias) is the ``head``.

    Pooled features are ``forward_head(forward_features(x), pre_logits=True)`` when the backbone has those
    methods (timm models), else the backbone's own output (e.g. a timm model created with ``num_classes=0``).
    """

    def __init__(self, backbone: nn.Module, num_features: int | None = None) -> None:
        super().__init__()
        num_features = num_features if num_features is not None else getattr(backbone, "num_features", None)
        if not isinstance(num_features, int) or num_features < 1:
            raise TypeError(
                f"{type(backbone).__name__} has no integer `num_features`; pass num_features= to as_discriminator"
            )
        self.backbone = backbone
        self.num_features = num_features
        self.linear = nn.Linear(num_features, 1)
        nn.init.zeros_(self.linear.bias)

    def features(self, x: Tensor) -> Tensor:
        b = self.backbone
        if callable(getattr(b, "forward_features", None)) and callable(getattr(b, "forward_head", None)):
            pooled = b.forward_head(b.forward_features(x), pre_logits=True)
        else:
            pooled = b(x)
        return pooled.flatten(1)

    def head(self, features: Tensor) -> Tensor:
        return self.linear(features)


def _is_backbone(module: nn.Module) -> bool:
    has_split = callable(getattr(module, "forward_features", None)) and callable(getattr(module, "forward_head", None))
    return has_split or isinstance(getattr(module, "num_features", None), int)


def as_discriminator(module: nn.Module, num_features: int | None = None) -> Discriminator:
    """``module`` in the discriminator protocol (``D(x, output="logits" | "both" | "features" | "head")``).

    * a :class:`Discriminator` is returned as is;
    * a module with ``features(x)`` and ``head(f)`` methods is wrapped (:class:`FeatureHeadDiscriminator`);
    * a timm backbone (``forward_features`` / ``forward_head``, or ``num_features``, e.g.
      ``timm.create_model("resnet10t", num_classes=0)``) becomes a :class:`BackboneDiscriminator`: its pooled
      features are ``features`` and a new trainable ``nn.Linear(num_features, 1)`` is the ``head``.

    Raises:
        TypeError: the module is none of those.
    """
    if isinstance(module, Discriminator):
        return module
    if callable(getattr(module, "features", None)) and callable(getattr(module, "head", None)):
        return FeatureHeadDiscriminator(module)
    if _is_backbone(module) or num_features is not None:
        return BackboneDiscriminator(module, num_features)
    raise TypeError(
        f"{type(module).__name__} cannot be used as a discriminator: give a hubtune Discriminator, a module with "
        "features(x) and head(f) methods, or a timm backbone (forward_features / forward_head, num_features)"
    )


class TimmFeatureDiscriminator(Discriminator):
    """A timm backbone's features as a GAN discriminator ("projected" / "vision-aided" discriminators).

    ``features(x)``: G's [-1, 1] images -> [0, 1] -> (optionally) resized to ``input_size`` -> grey repeated to
    3 channels -> the backbone's own normalisation (``mean`` / ``std`` of its pretrained_cfg) -> the backbone's
    pooled features, or the average-pooled maps of the feature ``stages`` (timm ``feature_info`` indices)
    concatenated -> a trainable projection ``Linear + LeakyReLU(0.2)`` of ``hidden`` units. ``head(f)``: a trainable
    ``Linear(hidden, 1)``.

    The projection belongs to ``features`` so that AdaptiveMix's shrinkage acts on a trainable feature space even
    when the backbone is frozen (``frozen=True``: no gradient to its weights, kept in eval mode so its BatchNorm
    statistics stay those of its pretraining; images still receive gradients, for G and R1).
    """

    def __init__(self, backbone: nn.Module, mean: tuple[float, ...], std: tuple[float, ...],
                 stages: list[int] | tuple[int, ...] = (), frozen: bool = False, input_size: int | None = None,
                 hidden: int = 256, name: str = "") -> None:
        super().__init__()
        self.backbone, self.name = backbone, name
        self.stages = [int(i) for i in stages]
        self.frozen, self.input_size = bool(frozen), input_size
        self.in_chans = int(getattr(backbone, "pretrained_cfg", {}).get("input_size", (3,))[0]) if hasattr(
            backbone, "pretrained_cfg") else 3
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        if self.stages:
            info = getattr(backbone, "feature_info", None)
            if info is None or not callable(getattr(backbone, "forward_intermediates", None)):
                raise ConfigError(f"timm model {name!r} has no feature_info / forward_intermediates: use it without "
                                  "--discriminator_stages")
            channels = [f["num_chs"] for f in info]
            bad = [i for i in self.stages if not -len(channels) <= i < len(channels)]
            if bad:
                raise ConfigError(f"discriminator_stages {bad} out of range: {name!r} has {len(channels)} feature "
                                  f"stages (0-{len(channels) - 1}, channels {channels})")
            backbone_features = sum(channels[i] for i in self.stages)
        else:
            backbone_features = int(backbone.num_features)
        self.backbone_features = backbone_features
        if self.frozen:
            backbone.requires_grad_(False)
        self.project = nn.Linear(backbone_features, hidden)
        self.linear = nn.Linear(hidden, 1)
        self.num_features = hidden

    def train(self, mode: bool = True) -> "TimmFeatureDiscriminator":
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def normalise(self, x: Tensor) -> Tensor:
        """[-1, 1] images -> the backbone's input (range, size, channels, mean / std)."""
        x = (x + 1) / 2
        if self.input_size is not None and x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        if x.shape[1] == 1 and self.in_chans == 3:
            x = x.expand(-1, 3, -1, -1)
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def backbone_output(self, x: Tensor) -> Tensor:
        x = self.normalise(x)
        b = self.backbone
        if self.stages:
            maps = b.forward_intermediates(x, indices=sorted(set(i % len(b.feature_info) for i in self.stages)),
                                           intermediates_only=True)
            return torch.cat([m.float().mean(dim=(2, 3)).to(m.dtype) for m in maps], dim=1)
        return b.forward_head(b.forward_features(x), pre_logits=True).flatten(1)

    def features(self, x: Tensor) -> Tensor:
        return F.leaky_relu(self.project(self.backbone_output(x)), 0.2)

    def head(self, features: Tensor) -> Tensor:
        return self.linear(features)

    def card_details(self) -> dict[str, Any]:
        return {"name": self.name, "stages": self.stages, "frozen": self.frozen, "hidden": self.num_features,
                "input_size": self.input_size}


def build_timm_discriminator(spec: str, stages: list[int] | tuple[int, ...] = (), frozen: bool = False,
                             input_size: int | None = None, hidden: int = 256) -> TimmFeatureDiscriminator:
    """``"timm:NAME"`` (pretrained weights), ``"timm-random:NAME[:seed]"`` (random) or ``"local-dir:PATH"`` (a
    timm ``save_for_hf`` folder, pretrained) as a :class:`TimmFeatureDiscriminator`.

    Raises:
        BackboneError / PretrainedWeightsError: unknown model, weights not available (offline).
    """
    seed = None
    if spec.startswith("timm-random:"):
        name, _, seed_text = spec[len("timm-random:"):].partition(":")
        seed = int(seed_text) if seed_text else 0
        pretrained = False
    elif spec.startswith("timm:"):
        name, pretrained = spec[len("timm:"):], True
    elif spec.startswith("local-dir:"):
        name, pretrained = spec, True
    else:
        raise ConfigError(f"discriminator must be 'timm:NAME', 'timm-random:NAME[:seed]' or 'local-dir:PATH', got {spec!r}")
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            backbone = create_backbone(name, pretrained=False, library="timm")
    else:
        architecture = name if spec.startswith("timm:") and not name.startswith("hf-hub:") else "NAME"
        backbone = create_backbone(name, pretrained=pretrained, library="timm",
                                   random_weights=f"--discriminator timm-random:{architecture}")
    pre = backbone.preprocessing
    return TimmFeatureDiscriminator(backbone.model, tuple(pre.mean), tuple(pre.std), stages=stages, frozen=frozen,
                                    input_size=input_size, hidden=hidden, name=public_name(spec) or spec)


class MinibatchStdDev(nn.Module):
    """StyleGAN's minibatch standard deviation: appends, per group of ``group_size`` samples, the mean std.

    Couples the samples of a batch (a sample's output depends on its group), hence ``batch_coupled``.
    """

    batch_coupled = True

    def __init__(self, group_size: int = 4) -> None:
        super().__init__()
        if group_size < 2:
            raise ConfigError(f"group_size must be >= 2, got {group_size}")
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


def _read_generator_config(config_path: str | os.PathLike, source: str) -> dict[str, Any]:
    """The JSON object in a generator's config.json; GeneratorLoadError naming the file when it is not one."""
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        where = config_path if os.path.isdir(source) else f"config.json of {source!r}"
        raise GeneratorLoadError(
            f"{where} is not valid JSON ({type(err).__name__}: {str(err).splitlines()[0][:120]}); it is corrupt or "
            "was not written by Generator.save_pretrained: restore it, re-download it or re-save the generator"
        ) from err
    if not isinstance(config, dict):
        raise GeneratorLoadError(f"{config_path} holds a JSON {type(config).__name__}, not a generator config (a JSON "
                                 "object with 'arch', 'image_size', ...)")
    return config


_JSON_TYPES = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
}


def _check_constructor_types(target: type, kwargs: dict[str, Any], config_path: str | os.PathLike) -> None:
    """GeneratorLoadError naming the key when a config.json value does not have its constructor argument's type."""
    parameters = inspect.signature(target.__init__).parameters
    for name, value in kwargs.items():
        annotation = getattr(parameters.get(name), "annotation", inspect.Parameter.empty)
        annotation = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
        options = [part.strip() for part in annotation.split("|") if part.strip()]
        if value is None and "None" in options:
            continue
        kinds = [option for option in options if option != "None"]
        if not kinds or any(kind not in _JSON_TYPES for kind in kinds):
            continue  # a type this check does not know: the constructor checks it
        if not any(_JSON_TYPES[kind](value) for kind in kinds):
            raise GeneratorLoadError(
                f"{config_path}: {name} must be {' or '.join(options)}, not {json.dumps(value)[:60]} "
                f"({type(value).__name__}); the file is corrupt or was edited: restore it or re-save the generator"
            )


_DOWNLOAD_OPTIONS = ("revision", "cache_dir", "force_download", "local_files_only", "token")  # what the mixin passes


def _fetch(source: str, filename: str, hub: dict[str, Any]) -> str:
    """The path of ``filename`` in a generator folder, or downloaded from the Hub repo ``source`` (as the mixin
    downloads it); GeneratorLoadError saying why it cannot be had."""
    if os.path.isdir(source):
        path = os.path.join(source, filename)
        if not os.path.isfile(path):
            raise GeneratorLoadError(f"{source} has no {filename}: not a saved hubtune generator folder")
        return path
    try:
        return hf_hub_download(repo_id=source, filename=filename, **hub)
    except LocalEntryNotFoundError as err:
        raise GeneratorLoadError(f"cannot load generator {source!r}: {not_in_cache(f'its {filename}')}") from err
    except (EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError) as err:
        raise GeneratorLoadError(
            f"cannot load {filename} of {source!r} ({type(err).__name__}): not a hubtune generator repository"
        ) from err
    except HfHubHTTPError as err:
        raise GeneratorLoadError(f"cannot download {filename} of {source!r}: {err}".splitlines()[0]) from err


def _generator_class_and_arguments(cls: type, source: str, config: dict[str, Any],
                                   model_kwargs: dict[str, Any]) -> tuple[type, dict[str, Any]]:
    """The registered Generator subclass config.json's ``arch`` names (a subclass of ``cls``) and its constructor
    arguments (config.json's, overridden by ``model_kwargs``), their JSON types checked."""
    where = os.path.join(source, CONFIG_NAME) if os.path.isdir(source) else f"config.json of {source!r}"
    arch = config.get("arch")
    if not isinstance(arch, str) or arch not in architectures("gan"):
        hint = (" (it looks like a training configuration: load the run's output folder root, or the "
                "folder that holds the generator's config.json)" if "max_steps" in config or "steps" in config
                else "")
        raise GeneratorLoadError(f"{where} names arch={arch!r}, not a hubtune generator architecture "
                                 f"(known: {sorted(architectures('gan'))}){hint}")
    target = get_architecture(arch).generator_class()
    if not issubclass(target, cls):
        raise GeneratorLoadError(f"{source} holds a {target.__name__}, not a {cls.__name__}")
    init_params = set(target._hub_mixin_init_parameters) - {"self"}
    kwargs = {k: v for k, v in config.items() if k in init_params}
    kwargs.update({k: v for k, v in model_kwargs.items() if k in init_params})
    _check_constructor_types(target, kwargs, where)
    return target, kwargs


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

    arch: ClassVar[str] = ""  # the registered architecture's name (hubtune.gan.archs), written into config.json
    latent_dim: int
    image_size: int
    channels: int

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # What the training run hands over before saving, as plain values for the model card: the fields of
        # hubtune.hub.generator_card.GeneratorCardValues that say how it was trained ("training": the run's
        # settings by name, "adaptivemix", "augmentation", "discriminator", "arch_title", "metrics", "data_source",
        # "num_images", "num_processes", "sample_seed").
        self.training_info: dict[str, Any] = {}

    def config_dict(self) -> dict[str, Any]:
        """The JSON config this generator is saved with (constructor arguments + ``arch``)."""
        config = dict(self._hub_mixin_config or {})
        config["arch"] = self.arch
        return config

    # ------------------------------------------------------------------------------------- mixin hooks

    def _save_pretrained(self, save_directory: Path) -> None:
        """Write model.safetensors, config.json (with ``arch``) and samples.png; the mixin then writes README.md."""
        save_directory = Path(save_directory)
        check_finite(self.state_dict(), str(save_directory / WEIGHTS_NAME), advice=_NON_FINITE_GENERATOR)
        save_model(self, str(save_directory / WEIGHTS_NAME))
        give_default_permissions(save_directory / WEIGHTS_NAME)  # safetensors writes 0600 files
        # written here so that the mixin keeps it (it only writes config.json when absent)
        (save_directory / CONFIG_NAME).write_text(json.dumps(self.config_dict(), sort_keys=True, indent=2))
        self.save_card_images(save_directory)
        # the mixin never overwrites a README.md: drop a stale card so that this save writes a fresh one
        (save_directory / "README.md").unlink(missing_ok=True)

    def save_card_images(self, directory: Path) -> None:
        """The images the card shows: ``samples.png`` (``generate(64, seed)``); subclasses add more."""
        seed = int(self.training_info.get("sample_seed", 0))
        save_image(self.generate(SAMPLE_COUNT, seed=seed), str(Path(directory) / SAMPLE_IMAGE), nrow=8, padding=2)

    def card_values(self) -> dict[str, Any]:
        """Architecture-specific values for the card (e.g. stylegan2's preset and truncation sweep)."""
        return {}

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        """hubtune's generator card (``model_cards/generator.md``) from this generator and its ``training_info``.

        Keyword arguments override the card's values (``repo_id`` names the repository in the loading snippet).
        """
        card_info = type(self)._hub_mixin_info.model_card_data
        known = GeneratorCardValues.field_names()
        values = GeneratorCardValues(
            arch=self.arch, image_size=self.image_size, channels=self.channels, latent_dim=self.latent_dim,
            library_name=card_info.library_name, license=card_info.license, pipeline_tag=card_info.pipeline_tag,
            tags=list(card_info.tags or []), paper_url=PAPER_URL,
            **{k: v for k, v in self.training_info.items() if k in known},
        )
        return render_generator_card(values, **{**self.card_values(), **kwargs})

    def push_to_hub(
        self,
        repo_id: str,
        *,
        token: str | None = None,
        private: bool | None = None,
        commit_message: str = "Upload generator trained with hubtune",
        model_card_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> str:
        """Upload this generator (config.json, model.safetensors, README.md card naming ``repo_id``, samples.png).

        The files are written to a temporary folder (nothing local is modified); the token is only handed to
        the client. A generator whose weights hold NaN or inf is refused before any request
        (:class:`~hubtune.errors.ExportError`). Raises :class:`~hubtune.errors.HubPushError`
        (:class:`~hubtune.errors.HubAuthError` for a missing or rejected token) with a one-line message on any Hub or
        connection failure.
        """
        validate_repo_id(repo_id)
        check_finite(self.state_dict(), f"the generator to {repo_id}", refusing="upload",
                     advice=f"nothing was uploaded. {_NON_FINITE_GENERATOR}")
        check_online()
        token = resolve_token(token)
        card_kwargs = {"repo_id": repo_id, **(model_card_kwargs or {})}
        try:
            return super().push_to_hub(repo_id, token=token, private=private, commit_message=commit_message,
                                       model_card_kwargs=card_kwargs, **kwargs)
        except HubPushError:
            raise
        except Exception as err:  # noqa: BLE001 - every Hub failure is said in words, as a HubPushError
            raise wrap_hub_error(err, repo_id, constants.ENDPOINT, "upload the generator") from err

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> "Generator":
        """Load a generator folder or Hub repo: the mixin's ``from_pretrained`` (which downloads and reads
        config.json, once) calling :meth:`_from_pretrained`. A config.json that is not a JSON object, or that is not
        in the cache when offline, raises :class:`GeneratorLoadError` naming it instead of the mixin's bare error."""
        source = str(pretrained_model_name_or_path)
        try:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except LocalEntryNotFoundError as err:  # offline or unreachable: not "not a generator repository"
            raise GeneratorLoadError(f"cannot load generator {source!r}: {not_in_cache('its config.json')}") from err
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:  # the mixin's json.load / .items()
            path = _fetch(source, CONFIG_NAME, dict(revision=kwargs.get("revision"), cache_dir=kwargs.get("cache_dir"),
                                                    token=kwargs.get("token"), local_files_only=True))
            _read_generator_config(path, source)  # raises, naming the file, when it is not a JSON object
            raise err

    @classmethod
    def _from_pretrained(cls, *, model_id: str, config: dict[str, Any] | None = None,
                         map_location: str | torch.device = "cpu", strict: bool = True, **kwargs: Any) -> "Generator":
        """The mixin's loading hook: build the registered subclass that config.json's ``arch`` names (``config``, the
        mixin's reading of it) and load ``model.safetensors`` strictly with the mixin's safetensors loader
        (``_load_as_safetensor``), the file fetched as the mixin fetches it (``hf_hub_download``; a folder's own file).
        Not the mixin's ``_from_pretrained`` itself: it prints a line on every local load and, on the Hub, falls back
        to unpickling ``pytorch_model.bin``. Any unloadable folder or repo raises :class:`GeneratorLoadError`.

        ``kwargs``: the mixin's download options (``revision``, ``cache_dir``, ``force_download``,
        ``local_files_only``, ``token``), then the model's (filled by the mixin from config.json, or given by the
        caller), which override constructor arguments of the subclass; other keys are ignored.
        """
        hub = {name: kwargs.pop(name) for name in _DOWNLOAD_OPTIONS if name in kwargs}
        model_kwargs = kwargs
        if config is None:  # the mixin found none: say why (missing here, not in the cache, not a repository)
            _read_generator_config(_fetch(model_id, CONFIG_NAME, hub), model_id)
        target, kwargs = _generator_class_and_arguments(cls, model_id, config, model_kwargs)
        try:
            model = target(**kwargs)
        except (TypeError, ValueError) as err:
            raise GeneratorLoadError(f"{model_id}: config.json: cannot build {target.__name__}({kwargs}): {err}") from err
        weights_path = _fetch(model_id, WEIGHTS_NAME, hub)
        try:
            return cls._load_as_safetensor(model, weights_path, str(map_location), strict)
        except (SafetensorError, OSError, ValueError) as err:
            raise GeneratorLoadError(f"{weights_path} is truncated or not a safetensors file ({err})") from err
        except RuntimeError as err:  # missing or unexpected weights, other shapes
            first = " ".join(str(err).split())[:300]
            raise GeneratorLoadError(f"{weights_path} does not match {target.__name__}({kwargs}): missing, unexpected or "
                                     f"differently shaped weights ({first})") from err

    def sample_latents(self, num_images: int, seed: int | None = None, device: torch.device | str | None = None) -> Tensor:
        """Standard normal latents; drawn on the CPU from ``seed`` (device-independent), else from the global RNG."""
        num_images, seed = check_count(num_images, "num_images"), check_seed(seed, allow_none=True)
        device = device if device is not None else next(self.parameters()).device
        if seed is None:
            return torch.randn(num_images, self.latent_dim, device=device)
        rng = torch.Generator(device="cpu").manual_seed(int(seed))
        return torch.randn(num_images, self.latent_dim, generator=rng).to(device)

    @torch.no_grad()
    def generate(self, num_images: int = 16, seed: int = 0, batch_size: int = 256, output_type: str = "pt",
                 **sample_kwargs: Any):
        """Sample ``num_images`` images, the same for the same ``seed``, in evaluation mode.

        ``sample_kwargs`` go to the architecture's sampler (StyleGAN2: ``truncation_psi``, ``truncation_cutoff``,
        ``noise_mode``). A bad argument raises :class:`~hubtune.errors.ConfigError` (a ValueError) naming it.

        Returns:
            ``output_type="pt"``: a float tensor (N, C, H, W) in [0, 1]; ``"pil"``: a list of PIL images.
        """
        num_images, batch_size = check_count(num_images, "num_images"), check_count(batch_size, "batch_size")
        seed = check_seed(seed)
        if output_type not in ("pt", "pil"):
            raise ConfigError(f"output_type must be 'pt' or 'pil', got {output_type!r}")
        accepted = [name for name in inspect.signature(self._sample).parameters
                    if name not in ("num_images", "seed", "batch_size")]
        unknown = sorted(set(sample_kwargs) - set(accepted))
        if unknown:
            raise ConfigError(
                f"{type(self).__name__}.generate does not take {', '.join(unknown)}"
                + (f" (it takes {', '.join(accepted)})" if accepted else " (only StyleGAN2 generators take truncation "
                   "and noise options)")
            )
        was_training = self.training
        self.eval()
        try:
            images = self._sample(num_images, seed, batch_size, **sample_kwargs)
        finally:
            self.train(was_training)
        images = ((images.float() + 1) / 2).clamp(0, 1).cpu()
        if output_type == "pt":
            return images
        return [to_pil_image(image) for image in images]

    def _sample(self, num_images: int, seed: int, batch_size: int) -> Tensor:
        """Images in [-1, 1] for ``generate`` (eval mode, no gradient): the seed's latents, in chunks."""
        return torch.cat([self(chunk) for chunk in self.sample_latents(num_images, seed).split(batch_size)])


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
        norm: ``"spectral"`` (SN-DCGAN), ``"batch"`` (the original DCGAN; BatchNorm does not couple samples for
            AdaptiveMix's purpose, a permuted batch has the same statistics) or ``"none"``.
    """

    def __init__(self, image_size: int = 32, channels: int = 3, base_channels: int = 32,
                 norm: Literal["spectral", "batch", "none"] = "spectral") -> None:
        super().__init__()
        if norm not in ("spectral", "batch", "none"):
            raise ConfigError(f"norm must be 'spectral', 'batch' or 'none', got {norm!r}")
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

def build_gan(arch: str = "dcgan", image_size: int = 32, channels: int = 3, latent_dim: int | None = None,
              **options: Any) -> tuple[Generator, Discriminator]:
    """A matching (generator, discriminator) pair of the registered architecture ``arch``
    (:data:`hubtune.gan.archs.ARCHITECTURES`); ``options`` are its options by name (e.g. ``g_channels``,
    ``d_norm`` for dcgan; ``arch_preset``, ``w_dim``, ``channel_base`` ... for stylegan2), ``None`` ones left out."""
    architecture = get_architecture(arch)({k: v for k, v in options.items() if v is not None})
    architecture.resolve(batch_size=None)
    return architecture.build(image_size, channels, architecture.latent_dim() if latent_dim is None else latent_dim)
