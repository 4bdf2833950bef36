"""The typed configuration of a GAN run (:class:`GANTrainingConfig`), shared by the loop, the card and ``hubtune gan``.

Field names follow the Hugging Face ``TrainingArguments`` vocabulary used by every hubtune command
(``dataset``, ``output_dir``, ``max_steps``, ``per_device_train_batch_size``, ``resume_from_checkpoint``,
``bf16`` / ``fp16``, ``seed``, ``push_to_hub`` + ``hub_model_id`` + ``hub_token`` + ``hub_private_repo``), so the
dataclass is also the command line (``transformers.HfArgumentParser``) and a YAML / JSON config file.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from hubtune.arguments import check_number
from hubtune.errors import ConfigError
from hubtune.gan.presets import STYLEGAN2_PRESETS, STYLEGAN2_TRAINING
from hubtune.trackers import check_trackers_installed

__all__ = ["GANTrainingConfig", "ADA_PRESETS", "ARCHS", "ARCH_PRESETS", "RESUME_KEYS", "TRAINING_CONFIG_NAME"]

ADA_PRESETS = ("paper", "reference")
ARCHS = ("dcgan", "resnet", "stylegan2")
ARCH_PRESETS = tuple(STYLEGAN2_PRESETS)
# dcgan / resnet training defaults (the values fields left None take)
_CLASSIC_TRAINING = dict(lr=2e-4, betas=(0.5, 0.999), r1_gamma=0.0, r1_interval=1, ema_decay=0.999)
TRAINING_CONFIG_NAME = "training_config.json"

# what must agree between a checkpoint and the run resuming from it (the rest, e.g. max_steps, may change)
RESUME_KEYS = ("arch", "image_size", "channels", "latent_dim", "g_channels", "d_channels", "d_norm",
               "minibatch_std_group", "per_device_train_batch_size", "seed", "dataset", "adaptivemix", "ada_preset",
               "loss", "arch_preset", "w_dim", "mapping_layers", "channel_base", "channel_max", "style_mixing_prob",
               "pl_weight", "pl_interval", "r1_every", "diffaugment", "ada_target", "ada_interval", "ada_kimg",
               "discriminator", "discriminator_frozen", "discriminator_stages", "discriminator_input_size",
               "discriminator_hidden")

# names of older hubtune versions (read from old checkpoints' configs)
_RENAMED = {"data": "dataset", "steps": "max_steps", "batch_size": "per_device_train_batch_size",
            "resume": "resume_from_checkpoint"}
# never written to a file (checkpoints, training_config.json, model cards)
_SECRET = ("hub_token",)
_POSITIVE_INTS = ("max_steps", "per_device_train_batch_size", "log_every", "sample_every", "checkpoint_every",
                  "keep_checkpoints", "num_sample_images", "pl_interval", "ada_interval", "discriminator_hidden",
                  "eval_batch_size", "image_size")
_OPTIONAL_POSITIVE_INTS = ("r1_every", "latent_dim", "w_dim", "mapping_layers", "channel_base", "channel_max",
                           "discriminator_input_size", "g_channels", "d_channels", "max_images")


def _help(text: str, **extra: Any) -> dict[str, Any]:
    return {"help": text, **extra}


@dataclass
class GANTrainingConfig:
    """Every knob of :func:`hubtune.gan.train_gan` (JSON-serialisable; stored in checkpoints and model cards).

    Data: ``dataset`` is ``"digits"``, an image folder, a folder written by ``datasets``' ``save_to_disk`` or a Hub
    dataset name; ``strict_data`` raises on unreadable files instead of skipping them. A dataset with fewer
    images than one step's batch (``per_device_train_batch_size`` x processes) is refused with a clear error.

    Architectures: ``dcgan``, ``resnet`` (SNGAN) and ``stylegan2`` (:mod:`hubtune.gan.stylegan2`: mapping network,
    modulated convolutions, noise, skip generator; residual discriminator with minibatch-stddev). With
    ``stylegan2``, ``arch_preset`` (``small`` / ``paper256`` / ``cifar``; not AdaptiveMix's ``ada_preset``) gives the
    widths (``channel_base``, ``channel_max``, ``latent_dim``, ``w_dim``, ``mapping_layers``,
    ``minibatch_std_group``) and the training defaults: every field left ``None`` (``lr_g``, ``lr_d``,
    ``adam_beta1/2``, ``r1_gamma``, ``r1_every`` alias ``r1_interval``, ``ema_decay``, ``pl_weight``,
    ``style_mixing_prob``) is filled from :data:`hubtune.gan.presets.STYLEGAN2_TRAINING` when the config is built
    (Adam lr 0.0025, betas (0, 0.99), lazy R1 every 16 steps, path length on only for ``paper256``); values you give
    are kept. dcgan / resnet fill them with lr 2e-4, betas (0.5, 0.999), no R1, EMA 0.999. The resolved values are
    what is stored in checkpoints and the card. Lazy regularisation follows StyleGAN2: R1 every ``r1_every`` steps
    weighs ``r1_gamma / 2 * r1_every``, and D's Adam then runs with ``lr * c`` and ``betas ** c``,
    ``c = r1_every / (r1_every + 1)`` (G's likewise with ``pl_interval`` when ``pl_weight > 0``).

    Augmentation: ``diffaugment`` (``"color,translation,cutout"``, any subset; empty = off) applies DiffAugment to
    every image D sees (reals, fakes of the D step, fakes of the G step); R1 is taken w.r.t. the un-augmented reals
    through it. ``ada_target`` (e.g. 0.6) makes its probability adaptive (ADA's r_t = E[sign D(real)] heuristic,
    updated every ``ada_interval`` D steps, p moves by 1 in ``ada_kimg`` thousand images); without it p = 1. The
    probability is logged (``augment_p``, ``augment_rt``) and checkpointed. **Augmentation runs before AdaptiveMix**:
    the real and fake batches are augmented, then AdaptiveMix mixes augmented images with augmented images, so the
    mixed images stay inside the (augmented) distribution D is trained on and the shrinkage target ``lam f(x) + (1 -
    lam) f(x)[p]`` is built from the features of the very images that were mixed; augmenting after mixing would give
    the mix a transform that neither source had and a target computed from differently augmented images.

    Discriminator: ``discriminator`` = ``""`` (the arch's own), ``"timm:NAME"`` (pretrained timm weights),
    ``"timm-random:NAME[:seed]"`` (random initialisation) or ``"local-dir:PATH"`` (a timm ``save_for_hf`` folder):
    the backbone's pooled features (or, with ``discriminator_stages``, several stages' average-pooled maps,
    concatenated), a trainable projection (``discriminator_hidden`` units: AdaptiveMix's feature space, trainable
    even when the backbone is frozen with ``discriminator_frozen``), and a linear head. G's [-1, 1] output is mapped
    to [0, 1], optionally resized to ``discriminator_input_size``, and normalised with the backbone's mean / std.

    ``resume_from_checkpoint``: ``None`` / ``False`` starts afresh; ``True`` (or ``"latest"``, or the bare flag
    ``--resume_from_checkpoint``) continues from the latest complete ``checkpoint-*`` in ``output_dir``; a path
    continues from that checkpoint folder.

    Raises:
        ConfigError: a value out of range, or ``bf16`` and ``fp16`` both set.
    """

    dataset: str = field(default="digits", metadata=_help(
        "'digits', an image folder, a folder written by datasets' save_to_disk, or a Hub dataset name"))
    output_dir: str = field(default="gan-output", metadata=_help(
        "run folder: the final (EMA) generator at its root, checkpoint-<step>/, samples/, logs.jsonl, metrics.json"))
    arch: Literal["dcgan", "resnet", "stylegan2"] = field(default="dcgan", metadata=_help(
        "generator / discriminator architecture"))
    arch_preset: Literal["small", "paper256", "cifar"] = field(default="small", metadata=_help(
        "stylegan2 widths and training defaults: small (CPU-sized), paper256, cifar (StyleGAN2-ADA's configs)"))
    image_size: int = field(default=32, metadata=_help("power of two; dcgan 16-64, resnet 16-128, stylegan2 32-256"))
    channels: int | None = field(default=None, metadata=_help("1 or 3; default: 1 for digits, 3 otherwise"))
    latent_dim: int | None = field(default=None, metadata=_help(
        "latent size (default: 64 dcgan, 128 resnet, the preset's for stylegan2)"))
    g_channels: int | None = field(default=None, metadata=_help("generator width (dcgan / resnet)"))
    d_channels: int | None = field(default=None, metadata=_help("discriminator width (dcgan / resnet)"))
    d_norm: Literal["spectral", "batch", "none"] = field(default="spectral", metadata=_help(
        "normalisation of the DCGAN discriminator"))
    minibatch_std_group: int | None = field(default=None, metadata=_help(
        "minibatch-stddev group size (resnet: default 0 = off; stylegan2: default the preset's). Groups are formed "
        "within each process's batch"))
    w_dim: int | None = field(default=None, metadata=_help("stylegan2: w size (default: the preset's)"))
    mapping_layers: int | None = field(default=None, metadata=_help("stylegan2: mapping network depth (preset's)"))
    channel_base: int | None = field(default=None, metadata=_help(
        "stylegan2: widths min(channel_base // resolution, channel_max) (preset's)"))
    channel_max: int | None = field(default=None, metadata=_help("stylegan2: largest width (preset's)"))
    style_mixing_prob: float | None = field(default=None, metadata=_help("stylegan2: style mixing probability"))
    discriminator: str = field(default="", metadata=_help(
        "'' (the arch's own), 'timm:NAME' (pretrained), 'timm-random:NAME[:seed]' or 'local-dir:PATH': a timm "
        "backbone's features + a small trainable head as D"))
    discriminator_frozen: bool = field(default=False, metadata=_help("freeze the timm backbone (eval mode)"))
    discriminator_stages: list[int] = field(default_factory=list, metadata=_help(
        "timm feature stages (feature_info indices) whose average-pooled maps are concatenated (default: the "
        "backbone's pooled output)"))
    discriminator_input_size: int | None = field(default=None, metadata=_help(
        "resize images to this size before the timm backbone (default: keep image_size)"))
    discriminator_hidden: int = field(default=256, metadata=_help(
        "width of the trainable projection after the timm backbone (AdaptiveMix's feature space)"))
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
    pl_weight: float | None = field(default=None, metadata=_help(
        "stylegan2 path-length regularisation weight (0 = off; default: the preset's, off for small and cifar)"))
    pl_interval: int = field(default=4, metadata=_help("lazy path length: every N generator steps"))
    ema_decay: float | None = field(default=None, metadata=_help(
        "EMA decay of the exported generator (default 0.999; stylegan2: from the preset's ema_kimg)"))
    bf16: bool = field(default=False, metadata=_help("bfloat16 mixed precision"))
    fp16: bool = field(default=False, metadata=_help("float16 mixed precision (with a loss scaler)"))
    seed: int = field(default=0, metadata=_help("random seed (initialisation, data order, latents, samples)"))

    adaptivemix: bool = field(default=True, metadata=_help("AdaptiveMix on the discriminator (--no_adaptivemix: off)"))
    ada_weight: float | None = field(default=None, metadata=_help(
        "weight of the shrinkage term (default: 0.1 with ada_preset 'paper', the best of 0.1 and 1 in the FID "
        "benchmark of the README; 1.0 with 'reference', the public script's)"))
    ada_alpha: float = field(default=1.0, metadata=_help("Beta(alpha, alpha) of the mixing weight"))
    ada_sigma: float = field(default=0.05, metadata=_help("std of the noise added to the shrinkage target"))
    ada_distance: Literal["cosine", "mse"] = field(default="cosine", metadata=_help("shrinkage distance"))
    ada_per_sample: bool = field(default=False, metadata=_help("one mixing weight per sample"))
    ada_mix_fakes: bool = field(default=True, metadata=_help(
        "mix the fake batch too (the paper: real and fake batches are mixed separately); false mixes only reals"))
    ada_preset: Literal["paper", "reference"] = field(default="paper", metadata=_help(
        "'paper': plain regulariser; 'reference': the public script (mixed logits, term on the G step too)"))

    diffaugment: str = field(default="", metadata=_help(
        "DiffAugment policy for everything D sees, e.g. 'color,translation,cutout' (empty = off); runs before "
        "AdaptiveMix"))
    ada_target: float | None = field(default=None, metadata=_help(
        "adaptive augmentation probability (ADA r_t target, e.g. 0.6; unset = off, p = 1); needs --diffaugment "
        "(default policy color,translation,cutout)"))
    ada_interval: int = field(default=4, metadata=_help("ADA: update the probability every N D steps"))
    ada_kimg: float = field(default=500.0, metadata=_help("ADA: thousands of images for p to move by 1"))

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

    def __post_init__(self) -> None:
        self.resume_from_checkpoint = self._normalise_resume(self.resume_from_checkpoint)
        self.log_with = list(self.log_with or [])
        check_trackers_installed(self.log_with, "--log_with")
        self.discriminator_stages = [int(i) for i in (self.discriminator_stages or [])]
        self.diffaugment = ",".join(name.strip() for name in (self.diffaugment or "").split(",") if name.strip())
        self._check_choice("arch", ARCHS)
        self._check_choice("arch_preset", ARCH_PRESETS)
        self._check_choice("loss", ("non-saturating", "hinge"))
        self._check_choice("d_norm", ("spectral", "batch", "none"))
        self._check_choice("ada_distance", ("cosine", "mse"))
        self._check_choice("ada_preset", ADA_PRESETS)
        if self.bf16 and self.fp16:
            raise ConfigError("bf16 and fp16 are both set; choose one mixed precision (bf16 is preferred for GANs).")
        self._resolve_defaults()
        for name in _POSITIVE_INTS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in _OPTIONAL_POSITIVE_INTS:
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("seed", "eval_num_samples"):
            check_number(name, getattr(self, name), minimum=0, integer=True)
        if self.channels is not None and self.channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {self.channels!r}")
        for name in ("r1_gamma", "ada_weight", "ada_sigma", "pl_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a finite number >= 0, got {value}")
        for name in ("lr_g", "lr_d"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ConfigError(f"{name} must be a positive number, got {getattr(self, name)}")
        if not self.ada_alpha > 0:
            raise ConfigError(f"ada_alpha must be > 0, got {self.ada_alpha}")
        if self.adaptivemix and not self.ada_mix_fakes and self.ada_preset == "reference":
            raise ConfigError("ada_mix_fakes=false needs ada_preset='paper': the reference preset scores every image "
                              "through a mix (h(t) + h(f(x~))), so reals and fakes must be mixed alike")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        self._check_architecture()
        self._check_augmentation()
        if self.eval_num_samples and self.eval_num_samples < 2 * self.eval_batch_size:
            raise ConfigError(
                f"eval_num_samples={self.eval_num_samples} is less than two evaluation batches of {self.eval_batch_size}: "
                "FID/KID are never computed on a single batch; raise eval_num_samples or lower eval_batch_size "
                "(or set eval_num_samples=0 to skip the metrics)"
            )
        if self.push_to_hub and not self.hub_model_id:
            raise ConfigError("push_to_hub needs hub_model_id ORG/NAME (--hub_model_id ORG/NAME).")

    def _resolve_defaults(self) -> None:
        """Fill the fields left ``None`` from the architecture (stylegan2: its preset); given values are kept."""
        if self.arch == "stylegan2":
            widths, training = STYLEGAN2_PRESETS[self.arch_preset], STYLEGAN2_TRAINING[self.arch_preset]
            for name in ("latent_dim", "w_dim", "mapping_layers", "channel_base", "channel_max"):
                if getattr(self, name) is None:
                    setattr(self, name, widths[name])
            if self.minibatch_std_group is None:
                self.minibatch_std_group = widths["mbstd_group"]
            # StyleGAN2-ADA: ema_beta = 0.5 ** (batch / (ema_kimg * 1000)), with this process's batch
            ema = 0.5 ** (self.per_device_train_batch_size / (training["ema_kimg"] * 1000.0))
            defaults = dict(lr=training["learning_rate"], betas=training["betas"], r1_gamma=training["r1_gamma"],
                            r1_interval=training["r1_interval"], ema_decay=ema, pl_weight=training["pl_weight"],
                            style_mixing_prob=training["style_mixing_prob"])
        else:
            if self.minibatch_std_group is None:
                self.minibatch_std_group = 0
            defaults = dict(_CLASSIC_TRAINING, pl_weight=0.0, style_mixing_prob=None)
        if self.ada_weight is None:
            self.ada_weight = 1.0 if self.ada_preset == "reference" else 0.1
        if self.lr_g is None:
            self.lr_g = defaults["lr"]
        if self.lr_d is None:
            self.lr_d = defaults["lr"]
        if self.adam_beta1 is None:
            self.adam_beta1 = defaults["betas"][0]
        if self.adam_beta2 is None:
            self.adam_beta2 = defaults["betas"][1]
        if self.r1_gamma is None:
            self.r1_gamma = defaults["r1_gamma"]
        if self.r1_every is None:
            self.r1_every = defaults["r1_interval"]
        if self.ema_decay is None:
            self.ema_decay = defaults["ema_decay"]
        if self.pl_weight is None:
            self.pl_weight = defaults["pl_weight"]
        if self.style_mixing_prob is None:
            self.style_mixing_prob = defaults["style_mixing_prob"]

    def _check_architecture(self) -> None:
        if self.arch == "stylegan2":
            size = self.image_size
            if not isinstance(size, int) or size < 32 or size > 256 or size & (size - 1):
                raise ConfigError(f"arch='stylegan2' needs image_size a power of two between 32 and 256, got {size!r}")
            if self.g_channels is not None or self.d_channels is not None:
                raise ConfigError("g_channels / d_channels apply to dcgan / resnet; stylegan2's widths are "
                                  "--channel_base and --channel_max (or --arch_preset)")
            if self.minibatch_std_group < 1:
                raise ConfigError(f"stylegan2's minibatch_std_group must be >= 1, got {self.minibatch_std_group}")
            group = min(self.minibatch_std_group, self.per_device_train_batch_size)
            if self.per_device_train_batch_size % group:
                raise ConfigError(
                    f"per_device_train_batch_size={self.per_device_train_batch_size} is not a multiple of the "
                    f"minibatch-stddev group {group} (--minibatch_std_group); the groups are formed per process"
                )
            if not 0 <= self.style_mixing_prob <= 1:
                raise ConfigError(f"style_mixing_prob must be in [0, 1], got {self.style_mixing_prob}")
        else:
            if self.pl_weight:
                raise ConfigError("pl_weight (path-length regularisation) needs arch='stylegan2'")
            stylegan_only = {name: getattr(self, name) for name in
                             ("w_dim", "mapping_layers", "channel_base", "channel_max", "style_mixing_prob")
                             if getattr(self, name) is not None}
            if stylegan_only:
                raise ConfigError(f"{', '.join(stylegan_only)} apply to arch='stylegan2' only (arch={self.arch!r})")
        if self.minibatch_std_group < 0:
            raise ConfigError(f"minibatch_std_group must be >= 0, got {self.minibatch_std_group}")
        if self.discriminator:
            if not self.discriminator.startswith(("timm:", "timm-random:", "local-dir:")):
                raise ConfigError(f"discriminator must be '', 'timm:NAME', 'timm-random:NAME[:seed]' or "
                                  f"'local-dir:PATH', got {self.discriminator!r}")
        elif self.discriminator_frozen or self.discriminator_stages or self.discriminator_input_size:
            raise ConfigError("discriminator_frozen / discriminator_stages / discriminator_input_size need "
                              "--discriminator timm:NAME (or timm-random:NAME, local-dir:PATH)")

    def _check_augmentation(self) -> None:
        names = [name for name in self.diffaugment.split(",") if name]
        unknown = [name for name in names if name not in ("color", "translation", "cutout")]
        if unknown:
            raise ConfigError(f"diffaugment: unknown augmentation(s) {unknown}; choose from color, translation, cutout")
        if self.ada_target is not None:
            if not 0 <= self.ada_target <= 1:
                raise ConfigError(f"ada_target must be in [0, 1], got {self.ada_target}")
            if not self.diffaugment:
                self.diffaugment = "color,translation,cutout"
        if not (math.isfinite(self.ada_kimg) and self.ada_kimg > 0):
            raise ConfigError(f"ada_kimg must be > 0, got {self.ada_kimg}")

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

    @property
    def mixed_precision(self) -> str:
        """Accelerate's spelling: ``"bf16"``, ``"fp16"`` or ``"no"``."""
        return "bf16" if self.bf16 else "fp16" if self.fp16 else "no"

    @property
    def betas(self) -> tuple[float, float]:
        return (self.adam_beta1, self.adam_beta2)

    def to_dict(self) -> dict[str, Any]:
        """JSON values of every field except the Hub token (never written anywhere)."""
        d = asdict(self)
        for name in _SECRET:
            d.pop(name, None)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GANTrainingConfig":
        """Build from a mapping, also one written by an older hubtune (``data``, ``steps``, ``batch_size``,
        ``resume``, ``mixed_precision``, ``betas``, preset ``"default"``); unknown keys are ignored."""
        d = dict(d)
        for old, new in _RENAMED.items():
            if old in d:
                value = d.pop(old)
                d.setdefault(new, value)
        if "mixed_precision" in d:
            precision = d.pop("mixed_precision")
            d.setdefault("bf16", precision == "bf16")
            d.setdefault("fp16", precision == "fp16")
        if "betas" in d:
            beta1, beta2 = d.pop("betas")
            d.setdefault("adam_beta1", beta1)
            d.setdefault("adam_beta2", beta2)
        if d.get("ada_preset") == "default":
            d["ada_preset"] = "paper"
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def adaptive_mix_settings(self) -> dict[str, Any] | None:
        """The keyword arguments of :class:`hubtune.losses.adaptive_mix.AdaptiveMix`, or None when off."""
        if not self.adaptivemix:
            return None
        return {"weight": self.ada_weight, "alpha": self.ada_alpha, "sigma": self.ada_sigma,
                "distance": self.ada_distance, "per_sample": self.ada_per_sample, "preset": self.ada_preset}

    def adaptive_mix_card_settings(self) -> dict[str, Any] | None:
        """:meth:`adaptive_mix_settings` plus which batches are mixed (for the model card), or None when off."""
        settings = self.adaptive_mix_settings()
        return None if settings is None else {**settings, "mix_fakes": self.ada_mix_fakes}

    def augmentation_settings(self) -> dict[str, Any] | None:
        """The augmentation of D's inputs (policy, adaptive or fixed p), or None when off."""
        if not self.diffaugment:
            return None
        return {"policy": self.diffaugment, "adaptive": self.ada_target is not None, "target": self.ada_target,
                "interval": self.ada_interval, "ada_kimg": self.ada_kimg}

    def architecture_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`hubtune.gan.models.build_gan` beyond the common ones (stylegan2's widths)."""
        if self.arch != "stylegan2":
            return {}
        return {"preset": self.arch_preset, "w_dim": self.w_dim, "mapping_layers": self.mapping_layers,
                "channel_base": self.channel_base, "channel_max": self.channel_max,
                "style_mixing_prob": self.style_mixing_prob}
