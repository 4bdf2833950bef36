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

from hubtune.errors import ConfigError

__all__ = ["GANTrainingConfig", "ADA_PRESETS", "RESUME_KEYS", "TRAINING_CONFIG_NAME"]

ADA_PRESETS = ("paper", "reference")
TRAINING_CONFIG_NAME = "training_config.json"

# what must agree between a checkpoint and the run resuming from it (the rest, e.g. max_steps, may change)
RESUME_KEYS = ("arch", "image_size", "channels", "latent_dim", "g_channels", "d_channels", "d_norm",
               "minibatch_std_group", "per_device_train_batch_size", "seed", "dataset", "adaptivemix", "ada_preset",
               "loss")

# names of older hubtune versions (read from old checkpoints' configs)
_RENAMED = {"data": "dataset", "steps": "max_steps", "batch_size": "per_device_train_batch_size",
            "resume": "resume_from_checkpoint"}
# never written to a file (checkpoints, training_config.json, model cards)
_SECRET = ("hub_token",)
_POSITIVE_INTS = ("max_steps", "per_device_train_batch_size", "log_every", "sample_every", "checkpoint_every",
                  "r1_every", "keep_checkpoints", "num_sample_images")


def _help(text: str, **extra: Any) -> dict[str, Any]:
    return {"help": text, **extra}


@dataclass
class GANTrainingConfig:
    """Every knob of :func:`hubtune.gan.train_gan` (JSON-serialisable; stored in checkpoints and model cards).

    Data: ``dataset`` is ``"digits"``, an image folder, a folder written by ``datasets``' ``save_to_disk`` or a Hub
    dataset name; ``strict_data`` raises on unreadable files instead of skipping them. A dataset with fewer
    images than one step's batch (``per_device_train_batch_size`` x processes) is refused with a clear error.

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
    arch: Literal["dcgan", "resnet"] = field(default="dcgan", metadata=_help("generator / discriminator architecture"))
    image_size: int = field(default=32, metadata=_help("power of two; dcgan 16-64, resnet 16-128"))
    channels: int | None = field(default=None, metadata=_help("1 or 3; default: 1 for digits, 3 otherwise"))
    latent_dim: int | None = field(default=None, metadata=_help("latent size (default: 64 dcgan, 128 resnet)"))
    g_channels: int | None = field(default=None, metadata=_help("generator width"))
    d_channels: int | None = field(default=None, metadata=_help("discriminator width"))
    d_norm: Literal["spectral", "batch", "none"] = field(default="spectral", metadata=_help(
        "normalisation of the DCGAN discriminator"))
    minibatch_std_group: int = field(default=0, metadata=_help("minibatch-stddev group size (resnet; 0 = off)"))
    max_images: int | None = field(default=None, metadata=_help("use at most this many training images"))
    strict_data: bool = field(default=False, metadata=_help("fail on an unreadable image instead of skipping it"))

    max_steps: int = field(default=500, metadata=_help("training steps (one D and one G update each)"))
    per_device_train_batch_size: int = field(default=64, metadata=_help(
        "images per process per step", aliases=["--batch-size"]))
    lr_g: float = field(default=2e-4, metadata=_help("generator learning rate (Adam)"))
    lr_d: float = field(default=2e-4, metadata=_help("discriminator learning rate (Adam)"))
    adam_beta1: float = field(default=0.5, metadata=_help("Adam beta1 of both optimisers"))
    adam_beta2: float = field(default=0.999, metadata=_help("Adam beta2 of both optimisers"))
    loss: Literal["non-saturating", "hinge"] = field(default="non-saturating", metadata=_help("adversarial loss"))
    r1_gamma: float = field(default=0.0, metadata=_help("R1 penalty weight (0 = off)"))
    r1_every: int = field(default=1, metadata=_help("lazy R1: apply it every N steps"))
    ema_decay: float = field(default=0.999, metadata=_help("EMA decay of the exported generator"))
    bf16: bool = field(default=False, metadata=_help("bfloat16 mixed precision"))
    fp16: bool = field(default=False, metadata=_help("float16 mixed precision (with a loss scaler)"))
    seed: int = field(default=0, metadata=_help("random seed (initialisation, data order, latents, samples)"))

    adaptivemix: bool = field(default=True, metadata=_help("AdaptiveMix on the discriminator (--no_adaptivemix: off)"))
    ada_weight: float = field(default=1.0, metadata=_help("weight of the shrinkage term"))
    ada_alpha: float = field(default=1.0, metadata=_help("Beta(alpha, alpha) of the mixing weight"))
    ada_sigma: float = field(default=0.05, metadata=_help("std of the noise added to the shrinkage target"))
    ada_distance: Literal["cosine", "mse"] = field(default="cosine", metadata=_help("shrinkage distance"))
    ada_per_sample: bool = field(default=False, metadata=_help("one mixing weight per sample"))
    ada_preset: Literal["paper", "reference"] = field(default="paper", metadata=_help(
        "'paper': plain regulariser; 'reference': the public script (mixed logits, term on the G step too)"))

    log_every: int = field(default=10, metadata=_help("log losses every N steps"))
    sample_every: int = field(default=250, metadata=_help("write a sample grid every N steps"))
    num_sample_images: int = field(default=64, metadata=_help("images per sample grid"))
    checkpoint_every: int = field(default=250, metadata=_help("write checkpoint-<step>/ every N steps"))
    keep_checkpoints: int = field(default=2, metadata=_help("how many checkpoints to keep"))
    resume_from_checkpoint: str | None = field(default=None, metadata=_help(
        "continue from the latest checkpoint in --output_dir (flag alone) or from the given checkpoint folder",
        nargs="?", const="latest"))
    log_with: list[str] = field(default_factory=list, metadata=_help(
        "extra Accelerate trackers (tensorboard, wandb, ...)"))
    progress_bar: bool = field(default=True, metadata=_help("show a progress bar (--no_progress_bar hides it)"))

    eval_num_samples: int = field(default=1000, metadata=_help("images for FID/KID (0 skips the metrics)"))
    eval_feature_extractor: str = field(default="auto", metadata=_help(
        "FID/KID features: auto, inception, timm:<model>, timm-random:<model>[:seed], hubtune:<folder>"))
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
        self._check_choice("arch", ("dcgan", "resnet"))
        self._check_choice("loss", ("non-saturating", "hinge"))
        self._check_choice("d_norm", ("spectral", "batch", "none"))
        self._check_choice("ada_distance", ("cosine", "mse"))
        self._check_choice("ada_preset", ADA_PRESETS)
        if self.bf16 and self.fp16:
            raise ConfigError("bf16 and fp16 are both set; choose one mixed precision (bf16 is preferred for GANs).")
        for name in _POSITIVE_INTS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.channels is not None and self.channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {self.channels!r}")
        for name in ("r1_gamma", "ada_weight", "ada_sigma"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a finite number >= 0, got {value}")
        if not self.ada_alpha > 0:
            raise ConfigError(f"ada_alpha must be > 0, got {self.ada_alpha}")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.eval_num_samples and self.eval_num_samples < 2 * self.eval_batch_size:
            raise ConfigError(
                f"eval_num_samples={self.eval_num_samples} is less than two evaluation batches of {self.eval_batch_size}: "
                "FID/KID are never computed on a single batch; raise eval_num_samples or lower eval_batch_size "
                "(or set eval_num_samples=0 to skip the metrics)"
            )
        if self.push_to_hub and not self.hub_model_id:
            raise ConfigError("push_to_hub needs hub_model_id ORG/NAME (--hub_model_id ORG/NAME).")

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
