"""The typed configuration of a GAN run: :class:`GANTrainingConfig`, composed of small frozen parts.

Each part is a frozen dataclass whose fields are flags, in the vocabulary of the Hugging Face ``TrainingArguments``
used by every hubtune command, grouped as ``hubtune finetune``'s arguments are (model, data, training):

=====================  ==========================  =====================================================================
part                   class                       what reads it
=====================  ==========================  =====================================================================
``data``               :class:`GANDataArguments`    the image set (``dataset``, ``image_size``, ``channels``, ...)
``model``              :class:`GANModelArguments`   building G and D: ``arch``, ``latent_dim``, ``discriminator`` and the
                                                    registered architectures' options (``arch_config``, an
                                                    :class:`~hubtune.gan.archs.ArchConfig` of the architecture registry)
``optim``              :class:`GANOptimArguments`   the steps: batch, Adam, loss, R1, EMA, mixed precision
``adaptive_mix``       :class:`GANAdaptiveMixArguments`  AdaptiveMix on the discriminator
``augment``            :class:`GANAugmentArguments` DiffAugment / ADA on everything D sees
``schedule``           :class:`GANScheduleArguments`  max_steps, logging, samples and checkpoints
``evaluation``         :class:`GANEvalArguments`    FID/KID at the end
``hub``                :class:`GANHubArguments`     the exported generator and its push
=====================  ==========================  =====================================================================

and the run's own fields (``output_dir``, ``overwrite_output_dir``, ``resume_from_checkpoint``, ``seed``,
``log_with``, ``progress_bar``), which the run layer (:mod:`hubtune.runs`) reads.

Built once and validated once: :meth:`GANTrainingConfig.from_options` (options by name, as keywords: the flags'
names and every registered architecture's options), :meth:`GANTrainingConfig.from_dict` (a saved
``training_config.json`` or checkpoint config, also one written by an older hubtune) and the command line
(:func:`gan_arguments_class`, parsed by ``transformers.HfArgumentParser``) all go through one builder, which fills
the values left to the architecture (learning rates, betas, R1, EMA, latent size: ``None`` flags) and then makes
each part once. A run then hands each step the part it needs. Nothing here imports torch.

Why one flat dataclass on the command line rather than one per part (as ``hubtune finetune``'s four): the flags
of ``hubtune gan`` have always been one dataclass, ``(arguments,) = parse_command_line(parser, argv)`` followed by
``arguments.to_config()``, in scripts such as ``examples/train_gan.py``; :func:`gan_arguments_class` generates it
from the parts' fields (each field is declared once, in its part) and the registry's options.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from hubtune.arguments import check_number, optional_flag, registry_fields
from hubtune.errors import ConfigError
from hubtune.gan.archs import ARCHITECTURES, ArchConfig, GANArchitecture, architectures, discriminator_for, get_architecture
from hubtune.gan.archs.base import check_positive_int
from hubtune.losses.adaptive_mix_settings import AdaptiveMixSettings
from hubtune.runs.checkpoints import resume_request
from hubtune.trackers import check_trackers_installed

__all__ = ["GANTrainingConfig", "GANDataArguments", "GANModelArguments", "GANOptimArguments",
           "GANAdaptiveMixArguments", "GANAugmentArguments", "GANScheduleArguments", "GANEvalArguments",
           "GANHubArguments", "RESUME_KEYS", "RENAMED_OPTIONS", "TRAINING_CONFIG_NAME", "gan_arguments_class"]

TRAINING_CONFIG_NAME = "training_config.json"

# what must agree between a checkpoint and the run resuming from it (the rest, e.g. max_steps, may change), besides
# the options of the architecture and of the discriminator (:meth:`GANTrainingConfig.resume_keys`)
RESUME_KEYS = ("arch", "image_size", "channels", "latent_dim", "per_device_train_batch_size", "seed", "dataset", "streaming",
               "adaptivemix", "adaptivemix_preset", "loss", "r1_every", "diffaugment", "augment_target",
               "augment_interval", "augment_kimg", "discriminator")

# names of older hubtune versions -> today's; read from old checkpoints, training_config.json, YAML files and flags
RENAMED_OPTIONS = {
    "data": "dataset", "steps": "max_steps", "batch_size": "per_device_train_batch_size",
    "resume": "resume_from_checkpoint",
    "ada_weight": "adaptivemix_shrinkage_weight", "ada_alpha": "adaptivemix_alpha", "ada_sigma": "adaptivemix_sigma",
    "ada_distance": "adaptivemix_distance", "ada_per_sample": "adaptivemix_per_sample",
    "ada_mix_fakes": "adaptivemix_mix_fakes", "ada_preset": "adaptivemix_preset",
    "ada_target": "augment_target", "ada_interval": "augment_interval", "ada_kimg": "augment_kimg",
}
# flags of older versions that still parse, with a deprecation line (the rest above only ever were file keys)
DEPRECATED_FLAGS = tuple(name for name in RENAMED_OPTIONS if name.startswith("ada_"))
_SECRET = ("hub_token",)  # never written to a file (checkpoints, training_config.json, model cards)
_AUGMENTATIONS = ("color", "translation", "cutout")
_MIX = AdaptiveMixSettings()  # AdaptiveMix's defaults, stated once
_NOT_A_FLAG = {"flag": False}


def _help(text: str, **extra: Any) -> dict[str, Any]:
    return {"help": text, **extra}


def _check_positive(part: Any, *names: str, optional: bool = False) -> None:
    for name in names:
        check_positive_int(name, getattr(part, name), optional=optional)


# ------------------------------------------------------------------------------------------ the parts


@dataclass(frozen=True)
class GANDataArguments:
    """The training images: ``"digits"``, an image folder, a folder written by ``datasets``' ``save_to_disk`` or a Hub
    dataset name; a dataset with fewer images than one step's batch (per process x processes) is refused. With
    ``streaming``, a stream read as it goes (:func:`hubtune.gan.data.load_image_stream`)."""

    _argument_group_name = "data"

    dataset: str = field(default="digits", metadata=_help(
        "'digits', an image folder, a folder written by datasets' save_to_disk, or a Hub dataset name"))
    image_size: int = field(default=32, metadata=_help("power of two; dcgan 16-64, resnet 16-128, stylegan2 32-256"))
    channels: int | None = field(default=None, metadata=_help("1 or 3; default: 1 for digits, 3 otherwise"))
    max_images: int | None = field(default=None, metadata=_help("use at most this many training images"))
    strict_data: bool = field(default=False, metadata=_help("fail on an unreadable image instead of skipping it"))
    streaming: bool = field(default=False, metadata=_help(
        "read the images as they are needed, never all in memory: a Hub data set, a folder (or glob) of WebDataset "
        ".tar shards or Parquet files; each process reads its own part"))
    dataloader_num_workers: int = field(default=-1, metadata=_help(
        "with --streaming: data-loading processes; -1 = min(8, CPU cores) when CUDA is present, else 0"))
    shuffle_buffer: int = field(default=1000, metadata=_help(
        "with --streaming: shuffle among this many images per data-loading process (and the shard order)"))

    def __post_init__(self) -> None:
        _check_positive(self, "image_size", "shuffle_buffer")
        _check_positive(self, "max_images", optional=True)
        check_number("dataloader_num_workers", self.dataloader_num_workers, minimum=0, integer=True, allow=(-1,))
        if self.channels is not None and self.channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {self.channels!r}")


@dataclass(frozen=True)
class GANModelArguments:
    """The generator / discriminator architecture (:data:`hubtune.gan.archs.ARCHITECTURES`: ``dcgan``, ``resnet``
    (SNGAN), ``stylegan2``) with its options (``arch_config``: e.g. stylegan2's ``arch_preset``, ``w_dim``,
    ``pl_weight``), and optionally a registered discriminator instead of the arch's own: ``"timm:NAME"``,
    ``"timm-random:NAME[:seed]"``, ``"local-dir:PATH"`` (a timm backbone, :mod:`hubtune.gan.archs.timm`) with its
    options in ``discriminator_config``. ``latent_dim`` None: the architecture's."""

    _argument_group_name = "model"

    arch: str = field(default="dcgan", metadata=_help("generator / discriminator architecture"))
    latent_dim: int | None = field(default=None, metadata=_help(
        "latent size (default: the architecture's: 64 dcgan, 128 resnet, the preset's for stylegan2)"))
    discriminator: str = field(default="", metadata=_help(
        "'' (the arch's own), 'timm:NAME' (pretrained), 'timm-random:NAME[:seed]' or 'local-dir:PATH': a timm "
        "backbone's features + a small trainable head as D"))
    # the options of the architecture and of the discriminator (resolved), not flags: their fields are
    arch_config: ArchConfig | None = field(default=None, repr=False, metadata=_NOT_A_FLAG)
    discriminator_config: ArchConfig | None = field(default=None, repr=False, metadata=_NOT_A_FLAG)

    def __post_init__(self) -> None:
        _check_positive(self, "latent_dim", optional=True)
        arch_cls = get_architecture(self.arch)
        if self.arch_config is None:
            object.__setattr__(self, "arch_config", arch_cls().config)
        _check_options_class(self.arch_config, arch_cls)
        if self.discriminator:
            _check_options_class(self.discriminator_config, discriminator_for(self.discriminator))

    @property
    def architecture(self) -> GANArchitecture:
        """The registered architecture, bound to this run's options."""
        return get_architecture(self.arch)(self.arch_config)

    @property
    def discriminator_architecture(self) -> GANArchitecture | None:
        """The registered discriminator named by ``discriminator`` (bound to its options), or None."""
        return discriminator_for(self.discriminator)(self.discriminator_config) if self.discriminator else None


@dataclass(frozen=True)
class GANOptimArguments:
    """What every training step does: the batch, Adam, the adversarial loss, R1, the EMA and mixed precision.

    The fields left ``None`` (``lr_g``, ``lr_d``, ``adam_beta1/2``, ``r1_gamma``, ``r1_every`` alias
    ``r1_interval``, ``ema_decay``) take the architecture's defaults
    (:meth:`~hubtune.gan.archs.GANArchitecture.training_defaults`; stylegan2: its preset's, Adam lr 0.0025, betas
    (0, 0.99), lazy R1 every 16 steps; dcgan / resnet: lr 2e-4, betas (0.5, 0.999), no R1, EMA 0.999) when the
    config is built; values you give are kept. Lazy regularisation follows StyleGAN2: R1 every ``r1_every`` steps
    weighs ``r1_gamma / 2 * r1_every``, and D's Adam then runs with ``lr * c`` and ``betas ** c``,
    ``c = r1_every / (r1_every + 1)`` (G's likewise with a lazy generator regulariser, e.g. path length).
    """

    _argument_group_name = "optimisation"

    per_device_train_batch_size: int = field(default=64, metadata=_help(
        "images per process per step", aliases=["--batch-size"]))
    lr_g: float | None = field(default=None, metadata=_help(
        "generator learning rate (Adam; default 2e-4, stylegan2: the preset's 0.0025)"))
    lr_d: float | None = field(default=None, metadata=_help("discriminator learning rate (Adam; default as lr_g)"))
    adam_beta1: float | None = field(default=None, metadata=_help("Adam beta1 (default 0.5; stylegan2: 0)"))
    adam_beta2: float | None = field(default=None, metadata=_help("Adam beta2 (default 0.999; stylegan2: 0.99)"))
    loss: Literal["non-saturating", "hinge"] = field(default="non-saturating", metadata=_help("adversarial loss"))
    r1_gamma: float | None = field(default=None, metadata=_help(
        "R1 penalty weight (0 = off; default 0, stylegan2: the preset's)"))
    r1_every: int | None = field(default=None, metadata=_help(
        "lazy R1: apply it every N steps (default 1; stylegan2: 16)", aliases=["--r1_interval"]))
    ema_decay: float | None = field(default=None, metadata=_help(
        "EMA decay of the exported generator (default 0.999; stylegan2: from the preset's ema_kimg)"))
    bf16: bool = field(default=False, metadata=_help("bfloat16 mixed precision"))
    fp16: bool = field(default=False, metadata=_help("float16 mixed precision (with a loss scaler)"))

    def __post_init__(self) -> None:
        _check_positive(self, "per_device_train_batch_size")
        _check_positive(self, "r1_every", optional=True)
        if self.loss not in ("non-saturating", "hinge"):
            raise ConfigError(f"loss must be one of 'non-saturating', 'hinge', got {self.loss!r}")
        if self.bf16 and self.fp16:
            raise ConfigError("bf16 and fp16 are both set; choose one mixed precision (bf16 is preferred for GANs).")
        for name in ("lr_g", "lr_d"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number, got {value}")
        if self.r1_gamma is not None and not (math.isfinite(self.r1_gamma) and self.r1_gamma >= 0):
            raise ConfigError(f"r1_gamma must be a finite number >= 0, got {self.r1_gamma}")
        for name in ("ema_decay", "adam_beta1", "adam_beta2"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < 1:
                raise ConfigError(f"{name} must be in [0, 1), got {value}")

    @property
    def betas(self) -> tuple[float, float]:
        return (self.adam_beta1, self.adam_beta2)

    @property
    def mixed_precision(self) -> str:
        """Accelerate's spelling: ``"bf16"``, ``"fp16"`` or ``"no"``."""
        return "bf16" if self.bf16 else "fp16" if self.fp16 else "no"


@dataclass(frozen=True)
class GANAdaptiveMixArguments:
    """AdaptiveMix on the discriminator (on by default), its settings checked by
    :class:`~hubtune.losses.adaptive_mix_settings.AdaptiveMixSettings` (older names ``ada_weight``, ``ada_alpha``,
    ...). ``adaptivemix_shrinkage_weight`` None: the preset's measured default."""

    _argument_group_name = "AdaptiveMix"

    adaptivemix: bool = field(default=True, metadata=_help("AdaptiveMix on the discriminator (--no_adaptivemix: off)"))
    adaptivemix_shrinkage_weight: float | None = field(default=None, metadata=_help(
        "weight of the shrinkage term (default: 0.1 with adaptivemix_preset 'paper', the best of 0.1 and 1 in the "
        "FID benchmark of the README; 1.0 with 'reference', the public script's); formerly --ada_weight"))
    adaptivemix_alpha: float = field(default=_MIX.alpha, metadata=_help(
        "Beta(alpha, alpha) of the mixing weight; formerly --ada_alpha"))
    adaptivemix_sigma: float = field(default=_MIX.sigma, metadata=_help(
        "std of the noise added to the shrinkage target; formerly --ada_sigma"))
    adaptivemix_distance: Literal["cosine", "mse"] = field(default="cosine", metadata=_help(
        "shrinkage distance; formerly --ada_distance"))
    adaptivemix_per_sample: bool = field(default=_MIX.per_sample, metadata=_help(
        "one mixing weight per sample; formerly --ada_per_sample"))
    adaptivemix_mix_fakes: bool = field(default=True, metadata=_help(
        "mix the fake batch too (the paper: real and fake batches are mixed separately); false mixes only reals; "
        "formerly --ada_mix_fakes"))
    adaptivemix_preset: Literal["paper", "reference"] = field(default=_MIX.preset, metadata=_help(
        "'paper': plain regulariser; 'reference': the public script (mixed logits, term on the G step too); "
        "formerly --ada_preset"))

    def __post_init__(self) -> None:
        if self.adaptivemix_distance not in ("cosine", "mse"):
            raise ConfigError(f"adaptivemix_distance must be one of 'cosine', 'mse', got {self.adaptivemix_distance!r}")
        if self.adaptivemix_preset not in AdaptiveMixSettings.PRESETS:
            raise ConfigError(f"adaptivemix_preset must be one of {', '.join(map(repr, AdaptiveMixSettings.PRESETS))}, "
                              f"got {self.adaptivemix_preset!r}")
        # validates every adaptivemix_* field (also when AdaptiveMix is off) and fills the weight from the preset
        object.__setattr__(self, "adaptivemix_shrinkage_weight", self.settings().shrinkage_weight)
        if self.adaptivemix and not self.adaptivemix_mix_fakes and self.adaptivemix_preset == "reference":
            raise ConfigError("adaptivemix_mix_fakes=false needs adaptivemix_preset='paper': the reference preset "
                              "scores every image through a mix (h(t) + h(f(x~))), so reals and fakes must be mixed "
                              "alike")

    def settings(self) -> AdaptiveMixSettings:
        """AdaptiveMix's validated settings (the shrinkage weight resolved from the preset when unset)."""
        settings = AdaptiveMixSettings(self.adaptivemix_alpha, self.adaptivemix_sigma,
                                       self.adaptivemix_shrinkage_weight, self.adaptivemix_distance,
                                       self.adaptivemix_per_sample, self.adaptivemix_preset)
        return settings.resolved(AdaptiveMixSettings.GAN_WEIGHT, "cosine")

    def card_settings(self) -> dict[str, Any] | None:
        """The settings plus which batches are mixed (for the model card), or None when off."""
        if not self.adaptivemix:
            return None
        return {**self.settings().to_dict(), "mix_fakes": self.adaptivemix_mix_fakes}


@dataclass(frozen=True)
class GANAugmentArguments:
    """DiffAugment on every image D sees (reals, fakes of the D step, fakes of the G step), optionally with ADA's
    adaptive probability.

    ``diffaugment`` (``"color,translation,cutout"``, any subset; empty = off); R1 is taken w.r.t. the
    un-augmented reals through it. ``augment_target`` (e.g. 0.6; older name ``ada_target``) makes its probability
    adaptive (ADA's r_t = E[sign D(real)] heuristic, updated every ``augment_interval`` D steps, p moves by 1 in
    ``augment_kimg`` thousand images; the policy defaults to all three); without it p = 1. The probability is logged
    (``augment_p``, ``augment_rt``) and checkpointed.

    **Augmentation runs before AdaptiveMix**: the real and fake batches are augmented, then AdaptiveMix mixes
    augmented images with augmented images, so the mixed images stay inside the (augmented) distribution D is
    trained on and the shrinkage target ``lam f(x) + (1 - lam) f(x)[p]`` is built from the features of the very
    images that were mixed; augmenting after mixing would give the mix a transform that neither source had and a
    target computed from differently augmented images.
    """

    _argument_group_name = "augmentation"

    diffaugment: str = field(default="", metadata=_help(
        "DiffAugment policy for everything D sees, e.g. 'color,translation,cutout' (empty = off); runs before "
        "AdaptiveMix"))
    augment_target: float | None = field(default=None, metadata=_help(
        "adaptive augmentation probability (ADA r_t target, e.g. 0.6; unset = off, p = 1); needs --diffaugment "
        "(default policy color,translation,cutout); formerly --ada_target"))
    augment_interval: int = field(default=4, metadata=_help(
        "ADA: update the probability every N D steps; formerly --ada_interval"))
    augment_kimg: float = field(default=500.0, metadata=_help(
        "ADA: thousands of images for p to move by 1; formerly --ada_kimg"))

    def __post_init__(self) -> None:
        names = [name.strip() for name in (self.diffaugment or "").split(",") if name.strip()]
        unknown = [name for name in names if name not in _AUGMENTATIONS]
        if unknown:
            raise ConfigError(f"diffaugment: unknown augmentation(s) {unknown}; choose from {', '.join(_AUGMENTATIONS)}")
        if self.augment_target is not None:
            if not 0 <= self.augment_target <= 1:
                raise ConfigError(f"augment_target must be in [0, 1], got {self.augment_target}")
            names = names or list(_AUGMENTATIONS)
        object.__setattr__(self, "diffaugment", ",".join(names))
        _check_positive(self, "augment_interval")
        if not (math.isfinite(self.augment_kimg) and self.augment_kimg > 0):
            raise ConfigError(f"augment_kimg must be > 0, got {self.augment_kimg}")

    def card_settings(self) -> dict[str, Any] | None:
        """The augmentation of D's inputs (policy, adaptive or fixed p), or None when off."""
        if not self.diffaugment:
            return None
        return {"policy": self.diffaugment, "adaptive": self.augment_target is not None,
                "target": self.augment_target, "interval": self.augment_interval, "kimg": self.augment_kimg}


@dataclass(frozen=True)
class GANScheduleArguments:
    """How long the run trains and when it logs, writes sample grids and checkpoints."""

    _argument_group_name = "schedule"

    max_steps: int = field(default=500, metadata=_help("training steps (one D and one G update each)"))
    log_every: int = field(default=10, metadata=_help("log losses every N steps"))
    sample_every: int = field(default=250, metadata=_help("write a sample grid every N steps"))
    num_sample_images: int = field(default=64, metadata=_help("images per sample grid"))
    checkpoint_every: int = field(default=250, metadata=_help("write checkpoint-<step>/ every N steps"))
    keep_checkpoints: int = field(default=2, metadata=_help("how many checkpoints to keep"))

    def __post_init__(self) -> None:
        _check_positive(self, *(f.name for f in fields(self)))


@dataclass(frozen=True)
class GANEvalArguments:
    """FID/KID of the EMA generator at the end (``eval_num_samples`` 0 skips them), with a named feature extractor."""

    _argument_group_name = "evaluation"

    eval_num_samples: int = field(default=1000, metadata=_help("images for FID/KID (0 skips the metrics)"))
    eval_feature_extractor: str = field(default="auto", metadata=_help(
        "FID/KID features: auto, inception, inception:<pt_inception-2015-12-05-6726825d.pth>, timm:<model>, "
        "local-dir:<timm folder>, timm-random:<model>[:seed] (not comparable), hubtune:<folder>"))
    eval_batch_size: int = field(default=250, metadata=_help("batch size of the FID/KID evaluation"))

    def __post_init__(self) -> None:
        _check_positive(self, "eval_batch_size")
        check_number("eval_num_samples", self.eval_num_samples, minimum=0, integer=True)
        if self.eval_num_samples and self.eval_num_samples < 2 * self.eval_batch_size:
            raise ConfigError(
                f"eval_num_samples={self.eval_num_samples} is less than two evaluation batches of {self.eval_batch_size}: "
                "FID/KID are never computed on a single batch; raise eval_num_samples or lower eval_batch_size "
                "(or set eval_num_samples=0 to skip the metrics)"
            )


@dataclass(frozen=True)
class GANHubArguments:
    """The final (EMA) generator saved at the output root, and its push to the Hub (the token is never written)."""

    _argument_group_name = "hub"

    export_generator: bool = field(default=True, metadata=_help(
        "save the final EMA generator (config.json, model.safetensors, README.md, samples.png) at the output root"))
    push_to_hub: bool = field(default=False, metadata=_help("push the final generator to --hub_model_id"))
    hub_model_id: str | None = field(default=None, metadata=_help("Hub repo id ORG/NAME to push to"))
    hub_token: str | None = field(default=None, repr=False, metadata=_help(
        "Hub token (default: HF_TOKEN or the stored login); never written to any file"))
    hub_private_repo: bool = field(default=False, metadata=_help("create the Hub repo private"))
    hub_space: str | None = field(default=None, metadata=_help(
        "with --push_to_hub: also publish a Gradio Space NAME (in the model's namespace) or ORG/NAME running "
        "`hubtune demo` on the generator; the card links to it"))

    def __post_init__(self) -> None:
        if self.push_to_hub and not self.hub_model_id:
            raise ConfigError("push_to_hub needs hub_model_id ORG/NAME (--hub_model_id ORG/NAME).")
        if self.push_to_hub and not self.export_generator:
            raise ConfigError("push_to_hub needs export_generator=True (the pushed generator is the exported one)")
        if self.hub_space is not None and not (self.push_to_hub and self.hub_model_id):
            raise ConfigError("hub_space needs push_to_hub and hub_model_id ORG/NAME (--push_to_hub --hub_model_id "
                              "ORG/NAME --hub_space NAME): the Space shows that model.")


_PARTS = {"data": GANDataArguments, "model": GANModelArguments, "optim": GANOptimArguments,
          "adaptive_mix": GANAdaptiveMixArguments, "augment": GANAugmentArguments,
          "schedule": GANScheduleArguments, "evaluation": GANEvalArguments, "hub": GANHubArguments}


# ------------------------------------------------------------------------------------------ the run's config


@dataclass(frozen=True)
class GANTrainingConfig:
    """Every knob of :func:`hubtune.gan.train_gan`: the run's own fields and its eight parts (see the module).

    Build it with :meth:`from_options` (``GANTrainingConfig.from_options(dataset="digits", arch="stylegan2",
    w_dim=16)``), :meth:`from_dict` or the command line; its parts are resolved (no ``None`` left to an
    architecture) and checked together. ``to_dict()`` gives the flat JSON values stored in checkpoints,
    ``training_config.json`` and the card (never the Hub token).

    ``resume_from_checkpoint``: ``None`` / ``False`` starts afresh; ``True`` (or ``"latest"``, or the bare flag
    ``--resume_from_checkpoint``) continues from the latest complete ``checkpoint-*`` in ``output_dir``; a path
    continues from that checkpoint folder (:mod:`hubtune.runs.checkpoints`).

    Raises:
        ConfigError: a value out of range, an option of another architecture, or ``bf16`` and ``fp16`` both set.
    """

    data: GANDataArguments
    model: GANModelArguments
    optim: GANOptimArguments
    adaptive_mix: GANAdaptiveMixArguments
    augment: GANAugmentArguments
    schedule: GANScheduleArguments
    evaluation: GANEvalArguments
    hub: GANHubArguments
    output_dir: str = field(default="gan-output", metadata=_help(
        "run folder: the final (EMA) generator at its root, checkpoint-<step>/, samples/, logs.jsonl, metrics.json"))
    overwrite_output_dir: bool = field(default=False, metadata=_help(
        "start afresh in an --output_dir that already holds another run's generator or checkpoints"))
    resume_from_checkpoint: str | None = field(default=None, metadata=_help(
        "continue from the latest checkpoint in --output_dir (flag alone) or from the given checkpoint folder",
        nargs="?", const="latest"))
    seed: int = field(default=0, metadata=_help("random seed (initialisation, data order, latents, samples)"))
    log_with: list[str] = field(default_factory=list, metadata=_help(
        "extra Accelerate trackers (tensorboard, wandb, ...)"))
    progress_bar: bool = field(default=True, metadata=_help("show a progress bar (--no_progress_bar hides it)"))

    _argument_group_name = "run"

    def __post_init__(self) -> None:
        object.__setattr__(self, "resume_from_checkpoint", resume_request(self.resume_from_checkpoint))
        object.__setattr__(self, "log_with", list(self.log_with or []))
        check_trackers_installed(self.log_with, "--log_with")
        check_number("seed", self.seed, minimum=0, integer=True)
        unresolved = [f"{name}" for name in ("lr_g", "lr_d", "adam_beta1", "adam_beta2", "r1_gamma", "r1_every",
                                             "ema_decay") if getattr(self.optim, name) is None]
        if unresolved or self.model.latent_dim is None:
            raise ConfigError(f"{', '.join(unresolved or ['latent_dim'])} left to the architecture: build the config "
                              "with GANTrainingConfig.from_options(...), which fills them")
        self.model.architecture.check(self.data.image_size, self.optim.per_device_train_batch_size)

    # ------------------------------------------------------------------------------ building

    @classmethod
    def from_options(cls, **options: Any) -> "GANTrainingConfig":
        """Build from options by name: the flags' names and the registered architectures' options (older names of
        :data:`RENAMED_OPTIONS` with a DeprecationWarning); ``arch_config`` / ``discriminator_config`` may hold the
        options as a mapping or an ArchConfig. An option of no architecture in use is an error naming its owner."""
        old = sorted(k for k in options if k in RENAMED_OPTIONS)
        if old:
            warnings.warn(f"GANTrainingConfig: {', '.join(old)} {'is' if len(old) == 1 else 'are'} now "
                          f"{', '.join(RENAMED_OPTIONS[k] for k in old)}", DeprecationWarning, stacklevel=2)
        return _build(_renamed(options), strict=True)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "GANTrainingConfig":
        """Build from saved values (``training_config.json``, a checkpoint's config), also ones written by an older
        hubtune (the names of :data:`RENAMED_OPTIONS`, ``mixed_precision``, ``betas``, preset ``"default"``, the
        options of every architecture side by side); unknown keys and options of other architectures are ignored."""
        d = _renamed(values)
        if "mixed_precision" in d:
            precision = d.pop("mixed_precision")
            d.setdefault("bf16", precision == "bf16")
            d.setdefault("fp16", precision == "fp16")
        if "betas" in d:
            beta1, beta2 = d.pop("betas")
            d.setdefault("adam_beta1", beta1)
            d.setdefault("adam_beta2", beta2)
        if d.get("adaptivemix_preset") == "default":
            d["adaptivemix_preset"] = "paper"
        return _build(d, strict=False)

    # ------------------------------------------------------------------------------ reading

    def to_dict(self) -> dict[str, Any]:
        """JSON values of every field and option (flat, by name) except the Hub token (never written anywhere)."""
        d = {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.name not in _PARTS}
        for name in _PARTS:
            part = getattr(self, name)
            d.update({f.name: _plain(getattr(part, f.name)) for f in fields(part)
                      if f.metadata.get("flag", True) and f.name not in _SECRET})
        for options in (self.model.arch_config, self.model.discriminator_config):
            if options is not None:
                d.update(options.to_dict())
        return d

    def resume_keys(self) -> list[str]:
        """What a checkpoint and the run resuming from it must agree on."""
        discriminator = self.model.discriminator_architecture
        return [*RESUME_KEYS, *self.model.architecture.resume_keys, *(discriminator.resume_keys if discriminator else [])]


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value


def _renamed(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with the names of older hubtune versions replaced by today's (a value under today's name wins)."""
    d = dict(values)
    for old, new in RENAMED_OPTIONS.items():
        if old in d:
            value = d.pop(old)
            d.setdefault(new, value)
    return d


# ------------------------------------------------------------------------------------------ the builder


def _flag_names(cls: type) -> list[str]:
    return [f.name for f in fields(cls) if f.init and f.metadata.get("flag", True)]


_RUN_FIELDS = tuple(name for name in _flag_names(GANTrainingConfig) if name not in _PARTS)
_PART_FIELDS = {name: _flag_names(cls) for name, cls in _PARTS.items()}
_OWN = {*_RUN_FIELDS, *(name for names in _PART_FIELDS.values() for name in names), "arch_config",
        "discriminator_config"}


def _build(values: dict[str, Any], strict: bool) -> GANTrainingConfig:
    """The one builder: split ``values`` among the parts, bind and resolve the architectures' options, fill what was
    left to the architecture, make each part once."""
    unknown = {k: v for k, v in values.items() if k not in _OWN}
    model = _model_part(values, unknown, strict)
    batch = values.get("per_device_train_batch_size", GANOptimArguments.per_device_train_batch_size)
    check_positive_int("per_device_train_batch_size", batch)
    resolved = {**values, **_training_defaults(values, model.architecture, batch)}
    parts = {name: cls(**{k: resolved[k] for k in _PART_FIELDS[name] if k in resolved})
             for name, cls in _PARTS.items() if name != "model"}
    return GANTrainingConfig(model=model, **parts, **{k: values[k] for k in _RUN_FIELDS if k in values})


def _model_part(values: dict[str, Any], options: dict[str, Any], strict: bool) -> GANModelArguments:
    """The architecture part: the options given by name split between the architecture and the discriminator,
    both bound and resolved; ``latent_dim`` from the architecture when unset."""
    arch_cls = get_architecture(values.get("arch", GANModelArguments.arch))
    spec = values.get("discriminator", GANModelArguments.discriminator)
    disc_cls = discriminator_for(spec) if spec else None
    arch_values = _option_values(values.get("arch_config"), arch_cls)
    disc_values = _option_values(values.get("discriminator_config"), disc_cls) if disc_cls else {}
    if values.get("discriminator_config") is not None and disc_cls is None:
        options = {**_option_values(values["discriminator_config"], None), **options}
    for name, value in options.items():
        if name in arch_cls.config_class.option_names():
            arch_values[name] = value
        elif disc_cls is not None and name in disc_cls.config_class.option_names():
            disc_values[name] = value
        elif strict:
            raise ConfigError(_foreign_option(name, arch_cls, disc_cls))
    architecture = arch_cls(arch_values)
    architecture.resolve(values.get("per_device_train_batch_size", GANOptimArguments.per_device_train_batch_size))
    latent_dim = values.get("latent_dim")
    return GANModelArguments(arch=arch_cls.name, latent_dim=latent_dim if latent_dim is not None else
                             architecture.latent_dim(), discriminator=spec, arch_config=architecture.config,
                             discriminator_config=disc_cls(disc_values).config if disc_cls else None)


_TRAINING_DEFAULTS = ("lr_g", "lr_d", "adam_beta1", "adam_beta2", "r1_gamma", "r1_every", "ema_decay")


def _training_defaults(values: dict[str, Any], architecture: GANArchitecture, batch: int) -> dict[str, Any]:
    """The optimisation values left None, from the architecture (given values are kept)."""
    defaults = architecture.training_defaults(batch)
    fill = dict(zip(_TRAINING_DEFAULTS, (defaults.lr, defaults.lr, defaults.betas[0], defaults.betas[1],
                                         defaults.r1_gamma, defaults.r1_every, defaults.ema_decay)))
    return {name: value for name, value in fill.items() if values.get(name) is None}


def _check_options_class(options: Any, arch_cls: type[GANArchitecture]) -> None:
    if not isinstance(options, arch_cls.config_class):
        raise ConfigError(f"{arch_cls.describe()} takes a {arch_cls.config_class.__name__}, not a "
                          f"{type(options).__name__}")


def _option_values(options: Any, arch_cls: type[GANArchitecture] | None) -> dict[str, Any]:
    if options is None:
        return {}
    if isinstance(options, ArchConfig):
        if arch_cls is not None:
            _check_options_class(options, arch_cls)
        return options.to_dict()
    if isinstance(options, Mapping):
        return dict(options)
    raise ConfigError(f"architecture options must be a mapping or an ArchConfig, got {type(options).__name__}")


def _foreign_option(name: str, arch_cls: type[GANArchitecture], disc_cls: type[GANArchitecture] | None) -> str:
    owners = [cls for _, cls in ARCHITECTURES.items() if name in cls.config_class.option_names()]
    if not owners:
        return f"{name} is not an option of hubtune gan; see `hubtune gan --help`"
    where = ", ".join(cls.describe() for cls in owners)
    if disc_cls is None and all(cls.role == "discriminator" for cls in owners):
        return f"{name} needs {where} (it is an option of that discriminator)"
    return (f"{name} does not apply to --arch {arch_cls.name}"
            + (f" with --discriminator {disc_cls.prefixes[0]}:..." if disc_cls else "")
            + f"; it is an option of {where}")


# ------------------------------------------------------------------------------------------ the command line


def _flag_specs() -> list[tuple[str, Any, dataclasses.Field]]:
    """(name, type, field) of every flag of the run and of its parts, each taken from the field that declares it."""
    specs = []
    for cls in (GANDataArguments, GANTrainingConfig, *(c for c in _PARTS.values() if c is not GANDataArguments)):
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            if f.name in _PARTS or not f.metadata.get("flag", True):
                continue
            kind = Literal[architectures("gan")] if f.name == "arch" else hints[f.name]  # the registered choices
            default = {"default_factory": f.default_factory} if f.default is dataclasses.MISSING else {"default": f.default}
            specs.append((f.name, kind, field(metadata=dict(f.metadata), **default)))
    return specs


def gan_arguments_class() -> type:
    """The dataclass of ``hubtune gan``'s flags, for ``transformers.HfArgumentParser``: every field of the run and of
    its parts, one optional flag per option of every registered architecture (built from the registry when called,
    so an architecture registered at run time gets its flags), and the older names as hidden flags
    (:data:`DEPRECATED_FLAGS`). ``to_config()`` gives the run's config and the deprecation lines to print."""
    specs = _flag_specs()
    own = {name for name, _, _ in specs}
    configs = ((name, cls.config_class) for name, cls in ARCHITECTURES.items())
    options = {name: spec for name, spec in registry_fields(configs).items() if name not in own}
    for name, (kind, first, owners) in options.items():
        specs.append((name, *optional_flag(kind, f"{first.metadata.get('help', '')} [option of {', '.join(owners)}]"
                                           .strip())))
    hints = {name: kind for name, kind, _ in specs}
    for old in DEPRECATED_FLAGS:
        annotation, flag = optional_flag(hints[RENAMED_OPTIONS[old]], argparse.SUPPRESS)  # --new's hidden alias
        specs.append((old, annotation, flag))

    def to_config(self) -> tuple[GANTrainingConfig, list[str]]:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        notes = []
        for old in DEPRECATED_FLAGS:
            value = values.pop(old)
            if value is not None:
                notes.append(f"hubtune gan: --{old} is deprecated; use --{RENAMED_OPTIONS[old]} (same meaning).")
                values[RENAMED_OPTIONS[old]] = value
        for name in options:
            if values[name] is None:
                del values[name]
        return _build(values, strict=True), notes

    return dataclasses.make_dataclass("GANArguments", specs, namespace={"to_config": to_config})
