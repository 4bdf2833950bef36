"""The typed configuration of a GAN run (:class:`GANTrainingConfig`), shared by the loop, the card and ``hubtune gan``.

Field names follow the Hugging Face ``TrainingArguments`` vocabulary used by every hubtune command
(``dataset``, ``output_dir``, ``max_steps``, ``per_device_train_batch_size``, ``resume_from_checkpoint``,
``bf16`` / ``fp16``, ``seed``, ``push_to_hub`` + ``hub_model_id`` + ``hub_token`` + ``hub_private_repo``), so the
dataclass is also the command line (``transformers.HfArgumentParser``, through :func:`gan_arguments_class`, which
adds the options of every registered architecture) and a YAML / JSON config file.

The common fields live here; an architecture's own options live in its :class:`~hubtune.gan.archs.ArchConfig`
(``arch_config``; a timm discriminator's in ``discriminator_config``) and are given by name like the common ones
(``GANTrainingConfig(arch="stylegan2", w_dim=16)``, ``--w_dim 16``, ``w_dim: 16``). Nothing here imports torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import typing
import warnings
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from hubtune.arguments import check_number
from hubtune.errors import ConfigError
from hubtune.gan.archs import ARCHITECTURES, ArchConfig, GANArchitecture, architectures, discriminator_for, get_architecture
from hubtune.losses.adaptive_mix_settings import AdaptiveMixSettings
from hubtune.trackers import check_trackers_installed

__all__ = ["GANTrainingConfig", "RESUME_KEYS", "RENAMED_OPTIONS", "TRAINING_CONFIG_NAME", "gan_arguments_class"]

TRAINING_CONFIG_NAME = "training_config.json"

# what must agree between a checkpoint and the run resuming from it (the rest, e.g. max_steps, may change), besides
# the options of the architecture and of the discriminator (:meth:`GANTrainingConfig.resume_keys`)
RESUME_KEYS = ("arch", "image_size", "channels", "latent_dim", "per_device_train_batch_size", "seed", "dataset",
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
# never written to a file (checkpoints, training_config.json, model cards)
_SECRET = ("hub_token",)
_POSITIVE_INTS = ("max_steps", "per_device_train_batch_size", "log_every", "sample_every", "checkpoint_every",
                  "keep_checkpoints", "num_sample_images", "augment_interval", "eval_batch_size", "image_size")
_OPTIONAL_POSITIVE_INTS = ("r1_every", "latent_dim", "max_images")
_OPTIONS = ("arch_config", "discriminator_config")  # not flags: the architecture's options objects
_AUGMENTATIONS = ("color", "translation", "cutout")
_MIX = AdaptiveMixSettings()  # AdaptiveMix's defaults, stated once


def _help(text: str, **extra: Any) -> dict[str, Any]:
    return {"help": text, **extra}


@dataclass
class GANTrainingConfig:
    """Every knob of :func:`hubtune.gan.train_gan` (JSON-serialisable; stored in checkpoints and model cards).

    Data: ``dataset`` is ``"digits"``, an image folder, a folder written by ``datasets``' ``save_to_disk`` or a Hub
    dataset name; ``strict_data`` raises on unreadable files instead of skipping them. A dataset with fewer
    images than one step's batch (``per_device_train_batch_size`` x processes) is refused with a clear error.

    Architectures (:data:`hubtune.gan.archs.ARCHITECTURES`): ``dcgan``, ``resnet`` (SNGAN) and ``stylegan2``
    (:mod:`hubtune.gan.stylegan2`), each with its own options (``arch_config``; e.g. stylegan2's ``arch_preset``,
    ``w_dim``, ``pl_weight``), given by name like the common fields. The training fields left ``None`` (``lr_g``,
    ``lr_d``, ``adam_beta1/2``, ``r1_gamma``, ``r1_every`` alias ``r1_interval``, ``ema_decay``, ``latent_dim``) take
    the architecture's defaults (:meth:`~hubtune.gan.archs.GANArchitecture.training_defaults`; stylegan2: its
    preset's, Adam lr 0.0025, betas (0, 0.99), lazy R1 every 16 steps; dcgan / resnet: lr 2e-4, betas (0.5, 0.999),
    no R1, EMA 0.999) when the config is built; values you give are kept, and the resolved values are what is
    stored in checkpoints and the card. Lazy regularisation follows StyleGAN2: R1 every ``r1_every`` steps weighs
    ``r1_gamma / 2 * r1_every``, and D's Adam then runs with ``lr * c`` and ``betas ** c``,
    ``c = r1_every / (r1_every + 1)`` (G's likewise with a lazy generator regulariser, e.g. path length).

    AdaptiveMix: ``adaptivemix`` (on by default) and the ``adaptivemix_*`` fields, checked by
    :class:`~hubtune.losses.adaptive_mix.AdaptiveMixSettings` (older names ``ada_weight``, ``ada_alpha``, ...).

    Augmentation: ``diffaugment`` (``"color,translation,cutout"``, any subset; empty = off) applies DiffAugment to
    every image D sees (reals, fakes of the D step, fakes of the G step); R1 is taken w.r.t. the un-augmented reals
    through it. ``augment_target`` (e.g. 0.6; older name ``ada_target``) makes its probability adaptive (ADA's r_t =
    E[sign D(real)] heuristic, updated every ``augment_interval`` D steps, p moves by 1 in ``augment_kimg`` thousand
    images); without it p = 1. The probability is logged (``augment_p``, ``augment_rt``) and checkpointed.
    **Augmentation runs before AdaptiveMix**: the real and fake batches are augmented, then AdaptiveMix mixes
    augmented images with augmented images, so the mixed images stay inside the (augmented) distribution D is
    trained on and the shrinkage target ``lam f(x) + (1 - lam) f(x)[p]`` is built from the features of the very
    images that were mixed; augmenting after mixing would give the mix a transform that neither source had and a
    target computed from differently augmented images.

    Discriminator: ``discriminator`` = ``""`` (the arch's own) or a registered discriminator's ``PREFIX:...``
    (``"timm:NAME"``, ``"timm-random:NAME[:seed]"``, ``"local-dir:PATH"``: a timm backbone, see
    :mod:`hubtune.gan.archs.timm`), with its options in ``discriminator_config``.

    ``resume_from_checkpoint``: ``None`` / ``False`` starts afresh; ``True`` (or ``"latest"``, or the bare flag
    ``--resume_from_checkpoint``) continues from the latest complete ``checkpoint-*`` in ``output_dir``; a path
    continues from that checkpoint folder.

    Raises:
        ConfigError: a value out of range, an option of another architecture, or ``bf16`` and ``fp16`` both set.
    """

    dataset: str = field(default="digits", metadata=_help(
        "'digits', an image folder, a folder written by datasets' save_to_disk, or a Hub dataset name"))
    output_dir: str = field(default="gan-output", metadata=_help(
        "run folder: the final (EMA) generator at its root, checkpoint-<step>/, samples/, logs.jsonl, metrics.json"))
    arch: str = field(default="dcgan", metadata=_help("generator / discriminator architecture"))
    image_size: int = field(default=32, metadata=_help("power of two; dcgan 16-64, resnet 16-128, stylegan2 32-256"))
    channels: int | None = field(default=None, metadata=_help("1 or 3; default: 1 for digits, 3 otherwise"))
    latent_dim: int | None = field(default=None, metadata=_help(
        "latent size (default: the architecture's: 64 dcgan, 128 resnet, the preset's for stylegan2)"))
    discriminator: str = field(default="", metadata=_help(
        "'' (the arch's own), 'timm:NAME' (pretrained), 'timm-random:NAME[:seed]' or 'local-dir:PATH': a timm "
        "backbone's features + a small trainable head as D"))
    max_images: int | None = field(default=None, metadata=_help("use at most this many training images"))
    strict_data: bool = field(default=False, metadata=_help("fail on an unreadable image instead of skipping it"))

    max_steps: int = field(default=500, metadata=_help("training steps (one D and one G update each)"))
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
    seed: int = field(default=0, metadata=_help("random seed (initialisation, data order, latents, samples)"))

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

    log_every: int = field(default=10, metadata=_help("log losses every N steps"))
    sample_every: int = field(default=250, metadata=_help("write a sample grid every N steps"))
    num_sample_images: int = field(default=64, metadata=_help("images per sample grid"))
    checkpoint_every: int = field(default=250, metadata=_help("write checkpoint-<step>/ every N steps"))
    keep_checkpoints: int = field(default=2, metadata=_help("how many checkpoints to keep"))
    resume_from_checkpoint: str | None = field(default=None, metadata=_help(
        "continue from the latest checkpoint in --output_dir (flag alone) or from the given checkpoint folder",
        nargs="?", const="latest"))
    overwrite_output_dir: bool = field(default=False, metadata=_help(
        "start afresh in an --output_dir that already holds another run's generator or checkpoints"))
    log_with: list[str] = field(default_factory=list, metadata=_help(
        "extra Accelerate trackers (tensorboard, wandb, ...)"))
    progress_bar: bool = field(default=True, metadata=_help("show a progress bar (--no_progress_bar hides it)"))

    eval_num_samples: int = field(default=1000, metadata=_help("images for FID/KID (0 skips the metrics)"))
    eval_feature_extractor: str = field(default="auto", metadata=_help(
        "FID/KID features: auto, inception, inception:<pt_inception-2015-12-05-6726825d.pth>, timm:<model>, "
        "local-dir:<timm folder>, timm-random:<model>[:seed] (not comparable), hubtune:<folder>"))
    eval_batch_size: int = field(default=250, metadata=_help("batch size of the FID/KID evaluation"))
    export_generator: bool = field(default=True, metadata=_help(
        "save the final EMA generator (config.json, model.safetensors, README.md, samples.png) at the output root"))

    push_to_hub: bool = field(default=False, metadata=_help("push the final generator to --hub_model_id"))
    hub_model_id: str | None = field(default=None, metadata=_help("Hub repo id ORG/NAME to push to"))
    hub_token: str | None = field(default=None, metadata=_help(
        "Hub token (default: HF_TOKEN or the stored login); never written to any file"))
    hub_private_repo: bool = field(default=False, metadata=_help("create the Hub repo private"))
    hub_space: str | None = field(default=None, metadata=_help(
        "with --push_to_hub: also publish a Gradio Space NAME (in the model's namespace) or ORG/NAME running "
        "`hubtune demo` on the generator; the card links to it"))

    # the options of the architecture and of the discriminator (a dict of options, an ArchConfig or None)
    arch_config: Any = field(default=None, repr=False, metadata={"flag": False})
    discriminator_config: Any = field(default=None, repr=False, metadata={"flag": False})

    def __post_init__(self) -> None:
        self.resume_from_checkpoint = self._normalise_resume(self.resume_from_checkpoint)
        self.log_with = list(self.log_with or [])
        check_trackers_installed(self.log_with, "--log_with")
        self.diffaugment = ",".join(name.strip() for name in (self.diffaugment or "").split(",") if name.strip())
        self._check_choice("loss", ("non-saturating", "hinge"))
        self._check_choice("adaptivemix_distance", ("cosine", "mse"))
        self._check_choice("adaptivemix_preset", AdaptiveMixSettings.PRESETS)
        if self.bf16 and self.fp16:
            raise ConfigError("bf16 and fp16 are both set; choose one mixed precision (bf16 is preferred for GANs).")
        self._bind_architectures(self.__dict__.pop("_given_options", {}))
        for name in _POSITIVE_INTS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in _OPTIONAL_POSITIVE_INTS:
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        self._resolve_training_defaults()
        for name in ("seed", "eval_num_samples"):
            check_number(name, getattr(self, name), minimum=0, integer=True)
        if self.channels is not None and self.channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {self.channels!r}")
        if not (math.isfinite(self.r1_gamma) and self.r1_gamma >= 0):
            raise ConfigError(f"r1_gamma must be a finite number >= 0, got {self.r1_gamma}")
        for name in ("lr_g", "lr_d"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ConfigError(f"{name} must be a positive number, got {getattr(self, name)}")
        mix = self.adaptive_mix_settings()  # validates the adaptivemix_* fields (also when AdaptiveMix is off)
        self.adaptivemix_shrinkage_weight = mix.shrinkage_weight
        if self.adaptivemix and not self.adaptivemix_mix_fakes and self.adaptivemix_preset == "reference":
            raise ConfigError("adaptivemix_mix_fakes=false needs adaptivemix_preset='paper': the reference preset "
                              "scores every image through a mix (h(t) + h(f(x~))), so reals and fakes must be mixed "
                              "alike")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        self.architecture.check(self.image_size, self.per_device_train_batch_size)
        self._check_augmentation()
        if self.eval_num_samples and self.eval_num_samples < 2 * self.eval_batch_size:
            raise ConfigError(
                f"eval_num_samples={self.eval_num_samples} is less than two evaluation batches of {self.eval_batch_size}: "
                "FID/KID are never computed on a single batch; raise eval_num_samples or lower eval_batch_size "
                "(or set eval_num_samples=0 to skip the metrics)"
            )
        if self.push_to_hub and not self.hub_model_id:
            raise ConfigError("push_to_hub needs hub_model_id ORG/NAME (--hub_model_id ORG/NAME).")
        if self.hub_space is not None and not (self.push_to_hub and self.hub_model_id):
            raise ConfigError("hub_space needs push_to_hub and hub_model_id ORG/NAME (--push_to_hub --hub_model_id "
                              "ORG/NAME --hub_space NAME): the Space shows that model.")

    # ------------------------------------------------------------------------------ architecture options

    def _bind_architectures(self, given: dict[str, Any]) -> None:
        """Split the options given by name between the architecture and the discriminator; build both."""
        arch_cls = get_architecture(self.arch)
        disc_cls = discriminator_for(self.discriminator) if self.discriminator else None
        arch_values = _option_values(self.arch_config, arch_cls)
        disc_values = _option_values(self.discriminator_config, disc_cls) if disc_cls else {}
        if self.discriminator_config is not None and disc_cls is None:
            given = {**_option_values(self.discriminator_config, None), **given}
        for name, value in given.items():
            if name in arch_cls.config_class.option_names():
                arch_values[name] = value
            elif disc_cls is not None and name in disc_cls.config_class.option_names():
                disc_values[name] = value
            else:
                raise ConfigError(_foreign_option(name, arch_cls, disc_cls))
        self._architecture = arch_cls(arch_values)
        self._architecture.resolve(self.per_device_train_batch_size)
        self._discriminator = disc_cls(disc_values) if disc_cls is not None else None
        self.arch_config = self._architecture.config
        self.discriminator_config = self._discriminator.config if self._discriminator is not None else None

    @property
    def architecture(self) -> GANArchitecture:
        """The registered architecture, bound to this run's options."""
        return self._architecture

    @property
    def discriminator_architecture(self) -> GANArchitecture | None:
        """The registered discriminator named by ``discriminator`` (bound to its options), or None."""
        return self._discriminator

    def __getattr__(self, name: str) -> Any:
        # an architecture's option read by name (config.w_dim), as before the options had their own dataclass
        for holder in ("arch_config", "discriminator_config"):
            options = self.__dict__.get(holder)
            if isinstance(options, ArchConfig) and name in options.option_names():
                return getattr(options, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def resume_keys(self) -> list[str]:
        """What a checkpoint and the run resuming from it must agree on."""
        keys = list(RESUME_KEYS) + self.architecture.resume_keys
        return keys + (self._discriminator.resume_keys if self._discriminator is not None else [])

    def _resolve_training_defaults(self) -> None:
        """Fill the training fields left ``None`` from the architecture; given values are kept."""
        defaults = self.architecture.training_defaults(self.per_device_train_batch_size)
        if self.latent_dim is None:
            self.latent_dim = self.architecture.latent_dim()
        for name, value in (("lr_g", defaults.lr), ("lr_d", defaults.lr), ("adam_beta1", defaults.betas[0]),
                            ("adam_beta2", defaults.betas[1]), ("r1_gamma", defaults.r1_gamma),
                            ("r1_every", defaults.r1_every), ("ema_decay", defaults.ema_decay)):
            if getattr(self, name) is None:
                setattr(self, name, value)

    # ------------------------------------------------------------------------------ checks

    def _check_augmentation(self) -> None:
        names = [name for name in self.diffaugment.split(",") if name]
        unknown = [name for name in names if name not in _AUGMENTATIONS]
        if unknown:
            raise ConfigError(f"diffaugment: unknown augmentation(s) {unknown}; choose from {', '.join(_AUGMENTATIONS)}")
        if self.augment_target is not None:
            if not 0 <= self.augment_target <= 1:
                raise ConfigError(f"augment_target must be in [0, 1], got {self.augment_target}")
            if not self.diffaugment:
                self.diffaugment = ",".join(_AUGMENTATIONS)
        if not (math.isfinite(self.augment_kimg) and self.augment_kimg > 0):
            raise ConfigError(f"augment_kimg must be > 0, got {self.augment_kimg}")

    def _check_choice(self, name: str, choices: tuple[str, ...]) -> None:
        if getattr(self, name) not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(map(repr, choices))}, got {getattr(self, name)!r}")

    @staticmethod
    def _normalise_resume(value: Any) -> str | None:
        if value is None or value is False or (isinstance(value, str) and value.strip().lower() in ("", "false", "no")):
            return None
        if value is True or (isinstance(value, str) and value.strip().lower() in ("latest", "true", "yes")):
            return "latest"
        return str(value)

    # ------------------------------------------------------------------------------ views

    @property
    def mixed_precision(self) -> str:
        """Accelerate's spelling: ``"bf16"``, ``"fp16"`` or ``"no"``."""
        return "bf16" if self.bf16 else "fp16" if self.fp16 else "no"

    @property
    def betas(self) -> tuple[float, float]:
        return (self.adam_beta1, self.adam_beta2)

    def to_dict(self) -> dict[str, Any]:
        """JSON values of every field and option (flat, by name) except the Hub token (never written anywhere)."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _OPTIONS and f.name not in _SECRET}
        d = asdict_values(d)
        for options in (self.arch_config, self.discriminator_config):
            if options is not None:
                d.update(options.to_dict())
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GANTrainingConfig":
        """Build from a mapping, also one written by an older hubtune (the names of :data:`RENAMED_OPTIONS`,
        ``mixed_precision``, ``betas``, preset ``"default"``, the options of every architecture side by side);
        unknown keys and options of other architectures are ignored."""
        d = rename_options(d)
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
        names = {f.name for f in fields(cls)}
        owned = set()
        if d.get("arch", "dcgan") in architectures("gan"):
            owned |= set(get_architecture(d.get("arch", "dcgan")).config_class.option_names())
        if d.get("discriminator"):
            try:
                owned |= set(discriminator_for(d["discriminator"]).config_class.option_names())
            except ConfigError:
                pass  # the constructor says what is wrong with it
        return cls(**{k: v for k, v in d.items() if k in names or k in owned})

    def adaptive_mix_settings(self) -> AdaptiveMixSettings:
        """AdaptiveMix's validated settings (the shrinkage weight resolved from the preset when unset)."""
        settings = AdaptiveMixSettings(self.adaptivemix_alpha, self.adaptivemix_sigma,
                                       self.adaptivemix_shrinkage_weight, self.adaptivemix_distance,
                                       self.adaptivemix_per_sample, self.adaptivemix_preset)
        return settings.resolved(AdaptiveMixSettings.GAN_WEIGHT, "cosine")

    def adaptive_mix_card_settings(self) -> dict[str, Any] | None:
        """AdaptiveMix's settings plus which batches are mixed (for the model card), or None when off."""
        if not self.adaptivemix:
            return None
        return {**self.adaptive_mix_settings().to_dict(), "mix_fakes": self.adaptivemix_mix_fakes}

    def augmentation_settings(self) -> dict[str, Any] | None:
        """The augmentation of D's inputs (policy, adaptive or fixed p), or None when off."""
        if not self.diffaugment:
            return None
        return {"policy": self.diffaugment, "adaptive": self.augment_target is not None,
                "target": self.augment_target, "interval": self.augment_interval, "kimg": self.augment_kimg}


def asdict_values(d: dict[str, Any]) -> dict[str, Any]:
    """Plain JSON-able copies (lists copied)."""
    return {k: list(v) if isinstance(v, list) else v for k, v in d.items()}


def rename_options(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with the names of older hubtune versions replaced by today's (a value under today's name wins)."""
    d = dict(values)
    for old, new in RENAMED_OPTIONS.items():
        if old in d:
            value = d.pop(old)
            d.setdefault(new, value)
    return d


def _option_values(options: Any, arch_cls: type[GANArchitecture] | None) -> dict[str, Any]:
    if options is None:
        return {}
    if isinstance(options, ArchConfig):
        if arch_cls is not None and not isinstance(options, arch_cls.config_class):
            raise ConfigError(f"{arch_cls.describe()} takes a {arch_cls.config_class.__name__}, not a "
                              f"{type(options).__name__}")
        return options.to_dict()
    if isinstance(options, dict):
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


def _accept_options(init):
    """Let ``GANTrainingConfig(...)`` take the architectures' options and the older names by keyword."""
    names = {f.name for f in fields(GANTrainingConfig)}

    @functools.wraps(init)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        old = sorted(k for k in kwargs if k in RENAMED_OPTIONS and k not in names)
        if old:
            warnings.warn(f"GANTrainingConfig: {', '.join(old)} "
                          f"{'is' if len(old) == 1 else 'are'} now {', '.join(RENAMED_OPTIONS[k] for k in old)}",
                          DeprecationWarning, stacklevel=2)
            kwargs = rename_options(kwargs)
        self._given_options = {k: kwargs.pop(k) for k in list(kwargs) if k not in names}
        init(self, *args, **kwargs)

    return __init__


GANTrainingConfig.__init__ = _accept_options(GANTrainingConfig.__init__)


# ------------------------------------------------------------------------------------------ the command line


def _option_fields() -> dict[str, tuple[Any, dataclasses.Field, list[str]]]:
    """Every option of every registered architecture: name -> (type, first field, the architectures that have it)."""
    options: dict[str, tuple[Any, dataclasses.Field, list[str]]] = {}
    for name, cls in ARCHITECTURES.items():
        hints = typing.get_type_hints(cls.config_class)
        for f in fields(cls.config_class):
            kind, first, owners = options.get(f.name, (hints[f.name], f, []))
            options[f.name] = (kind, first, [*owners, name])
    return options


def gan_arguments_class() -> type:
    """The dataclass of ``hubtune gan``'s flags: every field of :class:`GANTrainingConfig`, one optional flag per
    option of every registered architecture (built from the registry when called, so an architecture registered at
    run time gets its flags), and the older names as hidden flags (:data:`DEPRECATED_FLAGS`). ``to_config()`` gives the run's config and the
    deprecation lines to print."""
    hints = typing.get_type_hints(GANTrainingConfig)
    specs: list[tuple] = []
    for f in fields(GANTrainingConfig):
        if f.name in _OPTIONS:
            continue
        metadata = dict(f.metadata)
        kind = hints[f.name]
        if f.name == "arch":  # the registered architectures, as argparse choices
            kind = Literal[architectures("gan")]
        default = {"default_factory": f.default_factory} if f.default is dataclasses.MISSING else {"default": f.default}
        specs.append((f.name, kind, field(metadata=metadata, **default)))
    own = {f.name for f in fields(GANTrainingConfig)}
    options = {name: spec for name, spec in _option_fields().items() if name not in own}
    for name, (kind, first, owners) in options.items():
        annotation = kind if type(None) in typing.get_args(kind) else kind | None
        help_text = f"{first.metadata.get('help', '')} [option of {', '.join(owners)}]".strip()
        flag = {"nargs": "?", "const": True} if bool in typing.get_args(annotation) else {}  # a bare --flag is true
        specs.append((name, annotation, field(default=None, metadata={"help": help_text, **flag})))
    for old in DEPRECATED_FLAGS:
        new = RENAMED_OPTIONS[old]
        kind = hints[new]
        annotation = kind if type(None) in typing.get_args(kind) else kind | None
        specs.append((old, annotation, field(default=None, metadata={"help": argparse.SUPPRESS})))  # --new's alias

    def to_config(self) -> tuple[GANTrainingConfig, list[str]]:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        notes = []
        for old in DEPRECATED_FLAGS:
            value = values.pop(old)
            if value is not None:
                new = RENAMED_OPTIONS[old]
                notes.append(f"hubtune gan: --{old} is deprecated; use --{new} (same meaning).")
                values[new] = value
        for name in options:
            if values[name] is None:
                del values[name]
        return GANTrainingConfig(**values), notes

    return dataclasses.make_dataclass("GANArguments", specs, namespace={"to_config": to_config})
