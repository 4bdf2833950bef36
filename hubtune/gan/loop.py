"""The GAN training loop on Accelerate, with AdaptiveMix as an optional discriminator regulariser.

One process or several (``accelerate launch``), CPU or GPU, bf16 / fp16 / fp32. What it does per step:

* one generator pass ``fake = G(z)`` per step;
* discriminator step: ``fake`` detached; real and fake batches each through ``AdaptiveMix`` (or a plain
  ``D(x)``); non-saturating or hinge loss; optional R1 on the real logits (lazy every ``r1_every`` steps);
* generator step: non-saturating (or hinge) loss on the updated ``D(fake)`` (plus the AdaptiveMix term on the fakes
  with the ``reference`` preset); D's parameters frozen and out of DDP's gradient sync;
* EMA copy of G, PNG sample grids, tracker logging, checkpoints, exact resume, a stop on a non-finite loss.

Every discriminator computation goes through ``D``'s forward (``output=...``), never through a wrapped
module's attributes, so DistributedDataParallel synchronises everything it should.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.tracking import GeneralTracker
from accelerate.utils import set_seed
from torch import Tensor, nn

from hubtune.gan import checkpoint as ckpt
from hubtune.gan.data import ImageSet, StepBatchSampler, load_image_set
from hubtune.gan.models import Generator, as_discriminator, build_gan
from hubtune.losses.adaptive_mix import AdaptiveMix

logger = logging.getLogger(__name__)

__all__ = ["GANTrainingConfig", "GANTrainingResult", "NonFiniteLossError", "train_gan", "JSONLinesTracker",
           "discriminator_loss", "generator_loss", "r1_penalty"]


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; training stopped and the last good checkpoint is kept."""


# ----------------------------------------------------------------------------------------------- config


@dataclass
class GANTrainingConfig:
    """Every knob of :func:`train_gan` (JSON-serialisable; stored in checkpoints and model cards).

    Data: ``data`` is ``"digits"``, an image folder, a saved/Hub dataset name (see ``load_image_set``);
    ``strict_data`` raises on unreadable files instead of skipping them. A dataset with fewer images than one
    step's batch (``batch_size`` x processes) is refused with a clear error.
    """

    data: str = "digits"
    output_dir: str = "gan-output"
    arch: Literal["dcgan", "resnet"] = "dcgan"
    image_size: int = 32
    channels: int | None = None
    latent_dim: int | None = None
    g_channels: int | None = None
    d_channels: int | None = None
    d_norm: Literal["spectral", "batch", "none"] = "spectral"
    minibatch_std_group: int = 0
    max_images: int | None = None
    strict_data: bool = False

    steps: int = 500
    batch_size: int = 64
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    loss: Literal["non-saturating", "hinge"] = "non-saturating"
    r1_gamma: float = 0.0
    r1_every: int = 1
    ema_decay: float = 0.999
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    seed: int = 0

    adaptivemix: bool = True
    ada_weight: float = 1.0
    ada_alpha: float = 1.0
    ada_sigma: float = 0.05
    ada_distance: Literal["cosine", "mse"] = "cosine"
    ada_per_sample: bool = False
    ada_preset: Literal["default", "reference"] = "default"

    log_every: int = 10
    sample_every: int = 250
    num_sample_images: int = 64
    checkpoint_every: int = 250
    keep_checkpoints: int = 2
    resume: bool | str = False
    log_with: list[str] = field(default_factory=list)
    progress_bar: bool = True

    eval_num_samples: int = 1000
    eval_feature_extractor: str = "auto"
    eval_batch_size: int = 250
    export_generator: bool = True

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        if self.arch not in ("dcgan", "resnet"):
            raise ValueError(f"arch must be 'dcgan' or 'resnet', got {self.arch!r}")
        if self.loss not in ("non-saturating", "hinge"):
            raise ValueError(f"loss must be 'non-saturating' or 'hinge', got {self.loss!r}")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision must be 'no', 'bf16' or 'fp16', got {self.mixed_precision!r}")
        for name in ("steps", "batch_size", "log_every", "sample_every", "checkpoint_every", "r1_every", "keep_checkpoints"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.r1_gamma < 0:
            raise ValueError(f"r1_gamma must be >= 0, got {self.r1_gamma}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.eval_num_samples and self.eval_num_samples < 2 * self.eval_batch_size:
            raise ValueError(
                f"eval_num_samples={self.eval_num_samples} is less than two evaluation batches of {self.eval_batch_size}: "
                "FID/KID are never computed on a single batch; raise eval_num_samples or lower eval_batch_size "
                "(or set eval_num_samples=0 to skip the metrics)"
            )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GANTrainingConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def adaptive_mix_settings(self) -> dict[str, Any] | None:
        if not self.adaptivemix:
            return None
        return {"weight": self.ada_weight, "alpha": self.ada_alpha, "sigma": self.ada_sigma,
                "distance": self.ada_distance, "per_sample": self.ada_per_sample, "preset": self.ada_preset}


# what must agree between a checkpoint and the run resuming from it (the rest, e.g. steps, may change)
_RESUME_KEYS = ("arch", "image_size", "channels", "latent_dim", "g_channels", "d_channels", "d_norm",
                "minibatch_std_group", "batch_size", "seed", "data", "adaptivemix", "ada_preset", "loss")


@dataclass
class GANTrainingResult:
    """What :func:`train_gan` returns (on every process; metrics only on the main one)."""

    output_dir: str
    steps: int
    losses: list[dict[str, float]]
    metrics: dict[str, Any] | None
    generator_dir: str | None
    last_checkpoint: str | None
    sample_grids: list[str]
    wall_time_s: float


# ----------------------------------------------------------------------------------------------- losses


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor, kind: str = "non-saturating") -> Tensor:
    """Float32 discriminator loss: ``softplus(-r) + softplus(f)`` or hinge ``relu(1 - r) + relu(1 + f)``."""
    real, fake = real_logits.float(), fake_logits.float()
    if kind == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def generator_loss(fake_logits: Tensor, kind: str = "non-saturating") -> Tensor:
    """Float32 generator loss: non-saturating ``softplus(-f)``, or ``-f`` for hinge."""
    fake = fake_logits.float()
    return -fake.mean() if kind == "hinge" else F.softplus(-fake).mean()


def r1_penalty(real_logits: Tensor, real_images: Tensor, scaler: Any | None = None) -> Tensor:
    """``mean_i ||d logit_i / d x_i||^2`` (times gamma / 2 by the caller), with a graph for the backward.

    Under fp16 the gradient is taken of the scaled logits and unscaled afterwards (PyTorch's AMP recipe for
    gradient penalties), so it does not underflow.
    """
    out = real_logits.float().sum()
    if scaler is not None:
        out = scaler.scale(out)
    (grad,) = torch.autograd.grad(out, real_images, create_graph=True)
    if scaler is not None:
        grad = grad / scaler.get_scale()
    return grad.float().pow(2).flatten(1).sum(1).mean()


# ----------------------------------------------------------------------------------------------- tracker


class JSONLinesTracker(GeneralTracker):
    """An Accelerate tracker writing one JSON line per ``accelerator.log`` call to ``<dir>/logs.jsonl``."""

    name = "jsonl"
    requires_logging_directory = True
    main_process_only = True

    def __init__(self, logging_dir: str | Path, resume_step: int | None = None) -> None:
        super().__init__()
        self.path = Path(logging_dir) / "logs.jsonl"
        self.resume_step = resume_step

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.resume_step is None:
            self.path.write_text("")
        elif self.path.exists():  # drop what a run after the checkpoint logged
            kept = [line for line in self.path.read_text().splitlines()
                    if line and json.loads(line).get("step", 0) <= self.resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))

    @property
    def tracker(self):
        return self.path

    def store_init_configuration(self, values: dict) -> None:
        (self.path.parent / "config.json").write_text(json.dumps(values, indent=2, default=str))

    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")


# ----------------------------------------------------------------------------------------------- helpers


@torch.no_grad()
def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    ema_params = list(ema.parameters())
    torch._foreach_lerp_(ema_params, [p.detach().to(e.dtype) for p, e in zip(model.parameters(), ema_params)], 1 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def _ema_decay(decay: float, step: int) -> float:
    """Warm-up: the average starts short (a fresh G is no better than its EMA) and lengthens to ``decay``."""
    return min(decay, (1 + step) / (10 + step))


def _save_grid(generator: Generator, path: Path, num_images: int, seed: int) -> None:
    from torchvision.utils import save_image

    images = generator.generate(num_images, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images, str(path), nrow=int(math.ceil(math.sqrt(num_images))), padding=2)


def _all_finite(accelerator: Accelerator, *values: Tensor) -> bool:
    flag = torch.stack([torch.isfinite(v.detach().float()).all() for v in values]).all().float().reshape(1)
    if accelerator.num_processes > 1:
        flag = accelerator.reduce(flag, reduction="sum") / accelerator.num_processes
    return bool(flag.item() == 1.0)


# ----------------------------------------------------------------------------------------------- loop


def _resolve_resume(config: GANTrainingConfig) -> Path | None:
    if config.resume in (False, None, ""):
        return None
    if config.resume is True or config.resume == "latest":
        found = ckpt.latest_checkpoint(config.output_dir)
        if found is None:
            raise ckpt.CheckpointError(
                f"--resume: no complete checkpoint in {config.output_dir} (looked for checkpoint-<step>/"
                f"{ckpt.STATE_FILE}); start without --resume or point it at a checkpoint folder"
            )
        return found
    return Path(config.resume)


def train_gan(
    config: GANTrainingConfig | None = None,
    *,
    generator: Generator | None = None,
    discriminator: nn.Module | None = None,
    dataset: ImageSet | None = None,
    accelerator: Accelerator | None = None,
    **overrides: Any,
) -> GANTrainingResult:
    """Train a GAN and write samples, checkpoints, metrics and a Hub-ready generator folder.

    Args:
        config: the run's knobs; keyword ``overrides`` replace fields of it (or of the defaults).
        generator / discriminator: bring your own modules (the discriminator needs ``features`` / ``head``);
            default: ``build_gan(config.arch, ...)``.
        dataset: bring your own :class:`ImageSet`; default: ``load_image_set(config.data, ...)``.
        accelerator: an existing Accelerator (else one is created with ``config.mixed_precision``).

    Raises:
        NonFiniteLossError: a loss became NaN/inf; the checkpoints already written are kept untouched.
        CheckpointError: ``resume`` points at a missing, incomplete or mismatching checkpoint.
        DatasetTooSmallError: fewer images than one step's batch.
    """
    config = GANTrainingConfig.from_dict({**(config.to_dict() if config else {}), **overrides})
    start_time = time.perf_counter()
    output_dir = Path(config.output_dir)
    resume_from = _resolve_resume(config)
    resume_state = ckpt.read_trainer_state(resume_from) if resume_from is not None else None
    if resume_state is not None:
        saved = resume_state["config"]
        mismatched = {k: (saved.get(k), getattr(config, k)) for k in _RESUME_KEYS if saved.get(k) != getattr(config, k)}
        if mismatched:
            raise ckpt.CheckpointError(
                f"{resume_from} was written by a run with other settings: "
                + ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in mismatched.items())
            )
    start_step = int(resume_state["step"]) if resume_state else 0

    tracker = JSONLinesTracker(output_dir, resume_step=start_step if resume_state else None)
    if accelerator is None:
        # "no" leaves the choice to `accelerate launch --mixed_precision ...` / accelerate config, if any
        accelerator = Accelerator(mixed_precision=None if config.mixed_precision == "no" else config.mixed_precision,
                                  log_with=[tracker, *config.log_with], project_dir=str(output_dir))
    config.mixed_precision = accelerator.mixed_precision  # what actually runs, for checkpoints and the card
    if resume_state is not None and resume_state.get("num_processes") != accelerator.num_processes:
        raise ckpt.CheckpointError(
            f"{resume_from} was written by {resume_state.get('num_processes')} process(es); resume with the same number "
            f"(now {accelerator.num_processes}) so that every process gets its own random state back"
        )
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)

    # data
    if dataset is None:
        dataset = load_image_set(config.data, config.image_size, config.channels, config.strict_data, config.max_images)
    if dataset.image_size != config.image_size:
        raise ValueError(f"the dataset's images are {dataset.image_size} px, the config asks for {config.image_size} px")
    sampler = StepBatchSampler(len(dataset), config.batch_size, config.steps, seed=config.seed, start_step=start_step,
                               rank=accelerator.process_index, world_size=accelerator.num_processes)

    # models (same initial weights on every process), then a per-process random stream
    set_seed(config.seed)
    if generator is None or discriminator is None:
        built_g, built_d = build_gan(config.arch, config.image_size, dataset.channels, config.latent_dim,
                                     config.g_channels, config.d_channels, config.d_norm, config.minibatch_std_group)
        generator = generator if generator is not None else built_g
        discriminator = discriminator if discriminator is not None else built_d
    discriminator = as_discriminator(discriminator)
    ema = copy.deepcopy(generator).eval().requires_grad_(False).to(accelerator.device)
    opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr_g, betas=config.betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=config.lr_d, betas=config.betas)
    # separate prepare calls: two models, two optimizers (DeepSpeed refuses two models in one prepare)
    G, opt_g = accelerator.prepare(generator, opt_g)
    D, opt_d = accelerator.prepare(discriminator, opt_d)
    ada = AdaptiveMix(**config.adaptive_mix_settings()) if config.adaptivemix else None

    if resume_state is not None:
        _load_checkpoint(resume_from, accelerator, G, D, ema, opt_g, opt_d, resume_state)
    else:
        set_seed(config.seed, device_specific=True)

    accelerator.init_trackers("hubtune-gan", config={k: (json.dumps(v) if isinstance(v, (list, dict)) else v)
                                                     for k, v in config.to_dict().items()})

    latent_dim = accelerator.unwrap_model(G).latent_dim
    device = accelerator.device
    scaler = accelerator.scaler
    losses: list[dict[str, float]] = []
    grids: list[str] = []
    latest = resume_from or ckpt.latest_checkpoint(output_dir)
    last_checkpoint = str(latest) if latest else None

    progress = None
    if config.progress_bar and accelerator.is_main_process:
        from tqdm.auto import tqdm

        progress = tqdm(total=config.steps, initial=start_step, desc="hubtune gan", dynamic_ncols=True)

    G.train()
    D.train()
    step = start_step
    try:
        for indices in sampler:
            real = dataset.batch(indices).to(device)
            r1_due = config.r1_gamma > 0 and step % config.r1_every == 0

            # one generator pass per step (as in the PyTorch DCGAN example): the discriminator step sees the fakes
            # detached, the generator step then scores the same fakes with the updated discriminator
            with accelerator.autocast():
                fake = G(torch.randn(config.batch_size, latent_dim, device=device))

            # ---- discriminator step
            fake_detached = fake.detach().float()
            real.requires_grad_(r1_due)
            with accelerator.autocast():
                if ada is not None:
                    out_real, out_fake = ada(D, real), ada(D, fake_detached)
                    real_logits, fake_logits = out_real.logits, out_fake.logits
                    ada_loss = out_real.loss + out_fake.loss
                else:
                    real_logits, fake_logits = D(real), D(fake_detached)
                    ada_loss = real_logits.new_zeros((), dtype=torch.float32)
            d_adv = discriminator_loss(real_logits, fake_logits, config.loss)
            r1 = r1_penalty(real_logits, real, scaler) if r1_due else d_adv.new_zeros(())
            d_loss = d_adv + ada_loss + (config.r1_gamma / 2) * config.r1_every * r1
            if not _all_finite(accelerator, d_loss):
                _stop_on_non_finite(accelerator, "discriminator", step + 1, d_loss, last_checkpoint, output_dir)
            accelerator.backward(d_loss)
            opt_d.step()
            opt_d.zero_grad(set_to_none=True)

            # ---- generator step: D frozen and outside DDP's gradient sync
            D.requires_grad_(False)
            with accelerator.no_sync(D), accelerator.autocast():
                if ada is not None:
                    g_terms = ada.generator_terms(D, fake)
                    g_logits, g_ada = g_terms.logits, g_terms.loss
                else:
                    g_logits, g_ada = D(fake), fake.new_zeros((), dtype=torch.float32)
                g_loss = generator_loss(g_logits, config.loss) + g_ada
            D.requires_grad_(True)
            if not _all_finite(accelerator, g_loss):
                _stop_on_non_finite(accelerator, "generator", step + 1, g_loss, last_checkpoint, output_dir)
            accelerator.backward(g_loss)
            opt_g.step()
            opt_g.zero_grad(set_to_none=True)
            if not opt_g.step_was_skipped:
                _ema_update(ema, accelerator.unwrap_model(G), _ema_decay(config.ema_decay, step))
            step += 1

            # ---- logging, samples, checkpoints
            if step % config.log_every == 0 or step == config.steps:
                values = {"loss_d": d_loss.detach().float(), "loss_g": g_loss.detach().float(),
                          "loss_d_adversarial": d_adv.detach().float(), "logits_real": real_logits.detach().float().mean(),
                          "logits_fake": fake_logits.detach().float().mean()}
                if ada is not None:
                    values["shrinkage_real"] = out_real.shrinkage.float()
                    values["shrinkage_fake"] = out_fake.shrinkage.float()
                if r1_due:
                    values["r1"] = r1.detach().float()
                stacked = torch.stack([v.reshape(()) for v in values.values()])
                if accelerator.num_processes > 1:
                    stacked = accelerator.reduce(stacked, reduction="mean")
                record = dict(zip(values, (float(v) for v in stacked.tolist())))
                losses.append({"step": step, **record})
                accelerator.log(record, step=step)
                if progress is not None:
                    progress.set_postfix(loss_d=f"{record['loss_d']:.3f}", loss_g=f"{record['loss_g']:.3f}")
            if progress is not None:
                progress.update(1)
            if accelerator.is_main_process and (step % config.sample_every == 0 or step == config.steps):
                path = output_dir / "samples" / f"step-{step:07d}.png"
                _save_grid(ema, path, config.num_sample_images, seed=config.seed)
                grids.append(str(path))
            if step % config.checkpoint_every == 0 or step == config.steps:
                last_checkpoint = str(_save_checkpoint(accelerator, config, step, G, D, ema, opt_g, opt_d))
    finally:
        if progress is not None:
            progress.close()

    accelerator.wait_for_everyone()
    metrics, generator_dir = None, None
    if accelerator.is_main_process:
        ema_generator = ema
        if config.eval_num_samples:
            from hubtune.gan.metrics import evaluate_generator

            metrics = evaluate_generator(ema_generator, dataset, num_samples=config.eval_num_samples,
                                         feature_extractor=config.eval_feature_extractor,
                                         batch_size=config.eval_batch_size, seed=config.seed)
            (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
            accelerator.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=step)
        if config.export_generator:
            from hubtune.gan.publish import save_generator_folder

            generator_dir = str(save_generator_folder(
                ema_generator, output_dir / "generator", training=config.to_dict(), metrics=metrics,
                data_source=dataset.source, num_images=len(dataset), num_processes=accelerator.num_processes,
                seed=config.seed,
            ))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return GANTrainingResult(
        output_dir=str(output_dir), steps=step, losses=losses, metrics=metrics, generator_dir=generator_dir,
        last_checkpoint=last_checkpoint, sample_grids=grids, wall_time_s=time.perf_counter() - start_time,
    )


def _stop_on_non_finite(accelerator, which, step, value, last_checkpoint, output_dir) -> None:
    accelerator.end_training()
    kept = f"the last good checkpoint is {last_checkpoint}" if last_checkpoint else "no checkpoint had been written yet"
    raise NonFiniteLossError(
        f"step {step}: the {which} loss is {float(value.detach().float()):.4g}; training stopped before the update, "
        f"and nothing already in {output_dir} was overwritten ({kept}). Lower the learning rates, add R1 "
        "(--r1-gamma), or use bf16 rather than fp16; resume with --resume from that checkpoint."
    )


def _save_checkpoint(accelerator, config, step, G, D, ema, opt_g, opt_d) -> Path:
    final = ckpt.checkpoint_dir(config.output_dir, step)
    partial = final.with_name(f".{final.name}.partial")
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    accelerator.wait_for_everyone()
    ckpt.save_rng_state(partial / f"rng_state_{accelerator.process_index}")
    if accelerator.is_main_process:
        ckpt.save_module(accelerator.unwrap_model(G), partial / "generator.safetensors")
        ckpt.save_module(accelerator.unwrap_model(D), partial / "discriminator.safetensors")
        ckpt.save_module(ema, partial / "ema.safetensors")
        ckpt.save_optimizer(opt_g, partial / "optimizer_g")
        ckpt.save_optimizer(opt_d, partial / "optimizer_d")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        scaler = accelerator.scaler
        ckpt.write_trainer_state(partial, {
            "step": step, "num_processes": accelerator.num_processes, "config": config.to_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
        })
        ckpt.replace_folder(partial, final)
        for old in ckpt.list_checkpoints(config.output_dir)[:-config.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _load_checkpoint(folder, accelerator, G, D, ema, opt_g, opt_d, state) -> None:
    folder = Path(folder)
    ckpt.load_module(accelerator.unwrap_model(G), folder / "generator.safetensors")
    ckpt.load_module(accelerator.unwrap_model(D), folder / "discriminator.safetensors")
    ckpt.load_module(ema, folder / "ema.safetensors")
    ckpt.load_optimizer(opt_g, folder / "optimizer_g")
    ckpt.load_optimizer(opt_d, folder / "optimizer_d")
    ckpt.load_rng_state(folder / f"rng_state_{accelerator.process_index}")
    if accelerator.scaler is not None and state.get("scaler"):
        accelerator.scaler.load_state_dict(state["scaler"])
