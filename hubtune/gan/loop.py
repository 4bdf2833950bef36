"""The GAN training loop on Accelerate, with AdaptiveMix as an optional discriminator regulariser.

One process or several (``accelerate launch``), CPU or GPU, bf16 / fp16 / fp32. What it does per step:

* one generator pass ``fake = G(z)`` per step;
* discriminator step (:func:`discriminator_step`): ``fake`` detached; with ``diffaugment`` the real and fake
  batches are augmented first (DiffAugment, probability p fixed at 1 or adapted by ADA from the real logits), then
  each goes through ``AdaptiveMix`` (or a plain ``D(x)``); non-saturating or hinge loss; optional R1 on the real
  logits w.r.t. the un-augmented reals (lazy every ``r1_every`` steps, weighted ``r1_gamma / 2 * r1_every``);
* generator step (:func:`generator_step`): non-saturating (or hinge) loss on the updated ``D(augment(fake))`` (plus
  the AdaptiveMix term on the fakes with the ``reference`` preset); D's parameters frozen and out of DDP's
  gradient sync; the architecture's generator regularisers (stylegan2 with ``pl_weight > 0``: path length) every
  ``interval`` steps on a fresh half batch (``weight * interval * penalty``, their state kept per process and
  checkpointed);
* lazy regularisation as StyleGAN2: D's Adam runs with ``lr * c``, ``betas ** c``, ``c = r1_every / (r1_every +
  1)`` when R1 is lazy (G's likewise with a generator regulariser's interval);
* EMA copy of G, PNG sample grids, tracker logging, checkpoints, exact resume, a stop on a non-finite loss.

The output folder is laid out like the Hugging Face Trainer's::

    output_dir/
      config.json, model.safetensors, README.md, samples.png   the final (EMA) generator: Generator.from_pretrained(output_dir)
      training_config.json                                    this run's GANTrainingConfig (no token)
      metrics.json                                            FID/KID (when computed)
      logs.jsonl                                              one line per logged step
      samples/step-0000250.png ...                            sample grids during training
      checkpoint-<step>/                                      resumable checkpoints

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator, PartialState
from accelerate.tracking import GeneralTracker
from accelerate.utils import set_seed
from torch import Tensor, nn
from torchvision.utils import save_image
from tqdm.auto import tqdm

from hubtune.arguments import check_output_dir
from hubtune.devices import configure_backends
from hubtune.errors import CheckpointError, ConfigError, NonFiniteLossError, OutputDirError
from hubtune.gan import checkpoint as ckpt
from hubtune.gan.archs import GeneratorRegulariser
from hubtune.gan.config import TRAINING_CONFIG_NAME, GANTrainingConfig
from hubtune.gan.data import ImageSet, StepBatchSampler, load_image_set
from hubtune.gan.augment import AdaptiveAugmentProbability, DiffAugment
from hubtune.gan.metrics import evaluate_generator
from hubtune.gan.models import Discriminator, Generator, as_discriminator
from hubtune.hub.space import push_model_and_space, space_id_for
from hubtune.locking import output_dir_lock
from hubtune.manifest import MANIFEST_NAME, manifest_mismatch
from hubtune.losses.adaptive_mix import AdaptiveMix

logger = logging.getLogger(__name__)

__all__ = ["GANTrainingConfig", "GANTrainingResult", "train_gan", "JSONLinesTracker", "discriminator_loss",
           "generator_loss", "r1_penalty", "discriminator_step", "generator_step", "DiscriminatorStepOutput",
           "GeneratorStepOutput", "StepSettings", "Schedule", "lazy_regularisation_factor", "save_checkpoint",
           "load_checkpoint", "format_summary"]


@dataclass
class GANTrainingResult:
    """What :func:`train_gan` returns (on every process; metrics, samples and the push only on the main one)."""

    output_dir: str
    steps: int
    losses: list[dict[str, float]]
    metrics: dict[str, Any] | None
    generator_dir: str | None
    last_checkpoint: str | None
    sample_grids: list[str]
    wall_time_s: float
    hub_url: str | None = None
    is_main_process: bool = True
    space_url: str | None = None


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
        """No-op: the loop writes the run's configuration itself, as ``training_config.json``."""

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
    images = generator.generate(num_images, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images, str(path), nrow=int(math.ceil(math.sqrt(num_images))), padding=2)


def _all_finite(accelerator: Accelerator, *values: Tensor) -> bool:
    flag = torch.stack([torch.isfinite(v.detach().float()).all() for v in values]).all().float().reshape(1)
    if accelerator.num_processes > 1:
        flag = accelerator.reduce(flag, reduction="sum") / accelerator.num_processes
    return bool(flag.item() == 1.0)


# ----------------------------------------------------------------------------------------------- one run


@dataclass(frozen=True)
class StepSettings:
    """What one training step reads of the run's config (the loss, R1, AdaptiveMix's batches, the EMA)."""

    loss: str
    r1_gamma: float
    r1_every: int
    mix_fakes: bool
    batch_size: int
    ema_decay: float


@dataclass(frozen=True)
class Schedule:
    """When the loop logs, writes sample grids and checkpoints (and where: ``output_dir``)."""

    output_dir: Path
    max_steps: int
    log_every: int
    sample_every: int
    num_sample_images: int
    checkpoint_every: int
    keep_checkpoints: int
    seed: int


@dataclass
class _Run:
    """Everything one training run holds (built by :func:`_prepare_run`, the one place that reads the run's config:
    the steps get :class:`StepSettings`, the loop a :class:`Schedule`, checkpoints and the card plain values)."""

    steps: StepSettings
    schedule: Schedule
    settings: dict[str, Any]  # the run's config as JSON values (checkpoints' trainer_state.json)
    card: dict[str, Any]  # how the generator was trained, for its card (GeneratorCardValues fields)
    accelerator: Accelerator
    G: nn.Module
    D: nn.Module
    ema: Generator
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    ada: AdaptiveMix | None
    dataset: ImageSet
    sampler: StepBatchSampler
    start_step: int
    last_checkpoint: str | None
    losses: list[dict[str, float]] = field(default_factory=list)
    grids: list[str] = field(default_factory=list)
    augment: DiffAugment | None = None
    augment_p: AdaptiveAugmentProbability | None = None
    regularisers: list[GeneratorRegulariser] = field(default_factory=list)  # the architecture's, on G


@dataclass
class DiscriminatorStepOutput:
    """The terms of one discriminator step (loss before the update, logits, AdaptiveMix and R1 parts)."""

    loss: Tensor
    adversarial: Tensor
    r1: Tensor | None
    real_logits: Tensor
    fake_logits: Tensor
    shrinkage_loss_real: Tensor | None
    shrinkage_loss_fake: Tensor | None


@dataclass
class GeneratorStepOutput:
    """The terms of one generator step (loss before the update; what the generator regularisers that ran on this
    step log, e.g. ``pl_penalty`` and ``pl_mean``)."""

    loss: Tensor
    regularisers: dict[str, Tensor] = field(default_factory=dict)


def _resolve_resume(resume_from_checkpoint: str | None, output_dir: Path) -> Path | None:
    if resume_from_checkpoint is None:
        return None
    if resume_from_checkpoint == "latest":
        found = ckpt.latest_checkpoint(output_dir)
        if found is None:
            raise CheckpointError(
                f"--resume_from_checkpoint: no complete checkpoint in {output_dir} (looked for checkpoint-<step>/"
                f"{ckpt.STATE_FILE}); start without it or point it at a checkpoint folder"
            )
        return _last_unchanged(str(output_dir))
    return Path(resume_from_checkpoint)


def _last_unchanged(output_dir: str) -> Path:
    """The newest complete checkpoint whose files match their SHA256SUMS, saying which newer ones were skipped."""
    good = ckpt.last_good_checkpoint(output_dir)
    for folder in reversed(ckpt.list_checkpoints(output_dir)):
        if good is not None and folder.name == good.name:
            break
        message = (f"Skipping {folder}: {manifest_mismatch(folder)}; resuming from {good or 'nothing'} instead (the "
                   "steps trained since it are trained again).")
        logger.warning(message)
        if PartialState().is_main_process:
            print(message)
    if good is None:
        raise CheckpointError(f"--resume_from_checkpoint: no checkpoint in {output_dir} passes its content check "
                              f"({MANIFEST_NAME}); start without --resume_from_checkpoint.")
    return good


def _read_resume_state(config: GANTrainingConfig, resume_from: Path | None) -> dict[str, Any] | None:
    """The checkpoint's trainer state, after checking that it was written by a compatible run."""
    if resume_from is None:
        return None
    state = ckpt.read_trainer_state(resume_from)
    saved = GANTrainingConfig.from_dict(state["config"]).to_dict()  # also maps an older hubtune's names
    now = config.to_dict()
    mismatched = {k: (saved.get(k), now.get(k)) for k in config.resume_keys() if saved.get(k) != now.get(k)}
    if mismatched:
        raise CheckpointError(
            f"{resume_from} was written by a run with other settings: "
            + ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in mismatched.items())
        )
    step = int(state.get("step", 0))
    if config.max_steps < step:
        raise CheckpointError(
            f"{resume_from} is at step {step}, past --max_steps {config.max_steps}: pass --max_steps {step} or more "
            "(the total number of steps, counting the ones already trained) to continue that run, or resume from an "
            "earlier checkpoint."
        )
    return state


def _make_accelerator(mixed_precision: str, log_with: list[str], output_dir: Path, start_step: int,
                      resuming: bool) -> Accelerator:
    tracker = JSONLinesTracker(output_dir, resume_step=start_step if resuming else None)
    # "no" leaves the choice to `accelerate launch --mixed_precision ...` / accelerate config, if any
    precision = None if mixed_precision == "no" else mixed_precision
    return Accelerator(mixed_precision=precision, log_with=[tracker, *log_with], project_dir=str(output_dir))


def _build_modules(config: GANTrainingConfig, channels: int, generator: Generator | None,
                   discriminator: nn.Module | None) -> tuple[Generator, Discriminator]:
    """The given modules, or ``build_gan``'s (same initial weights on every process: seeded here)."""
    set_seed(config.seed)
    if generator is None or discriminator is None:
        built_g, built_d = config.architecture.build(config.image_size, channels, config.latent_dim)
        generator = generator if generator is not None else built_g
        if discriminator is None and config.discriminator_architecture is not None:
            discriminator = config.discriminator_architecture.build_discriminator(
                config.discriminator, config.image_size, channels)
        discriminator = discriminator if discriminator is not None else built_d
    return generator, as_discriminator(discriminator)


def lazy_regularisation_factor(interval: int, active: bool) -> float:
    """StyleGAN2's correction for a regulariser applied every ``interval`` steps: ``c = interval / (interval + 1)``
    (Adam then runs with ``lr * c`` and ``betas ** c``); 1 when the regulariser is off or not lazy."""
    return interval / (interval + 1) if active and interval > 1 else 1.0


def _adam(module: nn.Module, lr: float, betas: tuple[float, float], c: float) -> torch.optim.Adam:
    params = [p for p in module.parameters() if p.requires_grad]  # a frozen timm backbone stays out
    return torch.optim.Adam(params, lr=lr * c, betas=(betas[0] ** c, betas[1] ** c))


def _refuse_to_overwrite(output_dir: Path, resume_from: Path | None, overwrite: bool) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise OutputDirError(f"output_dir {str(output_dir)!r} is a file, not a folder; choose another --output_dir.")
    if resume_from is not None or overwrite or not output_dir.is_dir():
        return
    if (output_dir / "model.safetensors").exists() or ckpt.list_checkpoints(output_dir):
        raise OutputDirError(
            f"output_dir {str(output_dir)!r} already holds another run's generator or checkpoints; pass "
            "--overwrite_output_dir to start afresh there, --resume_from_checkpoint to continue that run, or choose "
            "another --output_dir."
        )


def _prepare_run(config: GANTrainingConfig, generator: Generator | None, discriminator: nn.Module | None,
                 dataset: ImageSet | None, accelerator: Accelerator | None) -> _Run:
    configure_backends()
    output_dir = Path(config.output_dir)
    resume_from = _resolve_resume(config.resume_from_checkpoint, output_dir)
    _refuse_to_overwrite(output_dir, resume_from, config.overwrite_output_dir)
    check_output_dir(output_dir)  # a read-only or dangling-link folder fails before anything is built
    if config.hub_space:
        space_id_for(config.hub_space, config.hub_model_id)  # a bad Space name fails before training, not after
    resume_state = _read_resume_state(config, resume_from)
    start_step = int(resume_state["step"]) if resume_state else 0
    if accelerator is None:
        accelerator = _make_accelerator(config.mixed_precision, config.log_with, output_dir, start_step,
                                        resume_state is not None)
    # what actually runs, for checkpoints and the card
    config.bf16, config.fp16 = accelerator.mixed_precision == "bf16", accelerator.mixed_precision == "fp16"
    if resume_state is not None and resume_state.get("num_processes") != accelerator.num_processes:
        raise CheckpointError(
            f"{resume_from} was written by {resume_state.get('num_processes')} process(es); resume with the same number "
            f"(now {accelerator.num_processes}) so that every process gets its own random state back"
        )
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)

    if dataset is None:
        dataset = load_image_set(config.dataset, config.image_size, config.channels, config.strict_data,
                                 config.max_images)
    if dataset.image_size != config.image_size:
        raise ConfigError(f"the dataset's images are {dataset.image_size} px, the config asks for {config.image_size} px")
    sampler = StepBatchSampler(len(dataset), config.per_device_train_batch_size, config.max_steps, seed=config.seed,
                               start_step=start_step, rank=accelerator.process_index,
                               world_size=accelerator.num_processes)

    generator, discriminator = _build_modules(config, dataset.channels, generator, discriminator)
    ema = copy.deepcopy(generator).eval().requires_grad_(False).to(accelerator.device)  # buffers too (w_avg)
    regularisers = [r.to(accelerator.device)
                    for r in config.architecture.generator_regularisers(config.per_device_train_batch_size)]
    opt_g = _adam(generator, config.lr_g, config.betas,
                  math.prod(lazy_regularisation_factor(r.interval, True) for r in regularisers))
    opt_d = _adam(discriminator, config.lr_d, config.betas,
                  lazy_regularisation_factor(config.r1_every, config.r1_gamma > 0))
    # separate prepare calls: two models, two optimizers (DeepSpeed refuses two models in one prepare)
    G, opt_g = accelerator.prepare(generator, opt_g)
    D, opt_d = accelerator.prepare(discriminator, opt_d)
    ada = AdaptiveMix.from_settings(config.adaptive_mix_settings()) if config.adaptivemix else None
    augment = DiffAugment(config.diffaugment) if config.diffaugment else None
    augment_p = None
    if augment is not None and config.augment_target is not None:
        augment_p = AdaptiveAugmentProbability(config.augment_target, config.augment_interval, config.augment_kimg,
                                               p=0.0)
        augment.p = augment_p.p

    settings = config.to_dict()
    schedule = Schedule(output_dir, config.max_steps, config.log_every, config.sample_every, config.num_sample_images,
                        config.checkpoint_every, config.keep_checkpoints, config.seed)
    steps = StepSettings(config.loss, config.r1_gamma, config.r1_every, config.adaptivemix_mix_fakes,
                         config.per_device_train_batch_size, config.ema_decay)
    card = {"training": settings, "arch_title": config.architecture.title,
            "adaptivemix": config.adaptive_mix_card_settings(), "augmentation": config.augmentation_settings(),
            "sample_seed": config.seed}
    latest = resume_from or ckpt.latest_checkpoint(output_dir)
    run = _Run(steps=steps, schedule=schedule, settings=settings, card=card, accelerator=accelerator, G=G, D=D,
               ema=ema, opt_g=opt_g, opt_d=opt_d, ada=ada, dataset=dataset, sampler=sampler, start_step=start_step,
               last_checkpoint=str(latest) if latest else None, augment=augment, augment_p=augment_p,
               regularisers=regularisers)
    if resume_state is not None:
        load_checkpoint(run, resume_from, resume_state)
        if augment_p is not None:
            if not resume_state.get("augment_p"):
                raise CheckpointError(f"{resume_from} has no adaptive augmentation state (augment_target)")
            augment_p.load_state_dict(resume_state["augment_p"])
            augment.p = augment_p.p
        if regularisers:
            process_state = ckpt.read_process_state(resume_from, accelerator.process_index)
            for regulariser in regularisers:
                regulariser.load_state_dict(process_state)
    else:
        set_seed(config.seed, device_specific=True)  # a per-process random stream

    accelerator.init_trackers("hubtune-gan", config={k: (json.dumps(v) if isinstance(v, (list, dict)) else v)
                                                     for k, v in settings.items()})
    if accelerator.is_main_process:
        (output_dir / TRAINING_CONFIG_NAME).write_text(json.dumps(settings, indent=2))
    return run


def discriminator_step(run: _Run, real: Tensor, fake: Tensor, step: int) -> DiscriminatorStepOutput:
    """One discriminator update on a real batch and (detached) fakes; stops the run on a non-finite loss."""
    config, accelerator, D, ada = run.steps, run.accelerator, run.D, run.ada
    r1_due = config.r1_gamma > 0 and step % config.r1_every == 0
    fake_detached = fake.detach().float()
    real.requires_grad_(r1_due)
    shrinkage_real = shrinkage_fake = None
    # augmentation first, then AdaptiveMix mixes augmented images (see GANTrainingConfig); R1 differentiates
    # through the augmentation w.r.t. the un-augmented reals
    real_in, fake_in = (run.augment(real), run.augment(fake_detached)) if run.augment is not None else (real, fake_detached)
    with accelerator.autocast():
        if ada is not None and config.mix_fakes:
            out_real, out_fake = ada(D, real_in), ada(D, fake_in)
            real_logits, fake_logits = out_real.logits, out_fake.logits
            ada_loss = out_real.loss + out_fake.loss
            shrinkage_real, shrinkage_fake = out_real.shrinkage_loss, out_fake.shrinkage_loss
        elif ada is not None:  # only the reals are mixed
            out_real, fake_logits = ada(D, real_in), D(fake_in)
            real_logits, ada_loss, shrinkage_real = out_real.logits, out_real.loss, out_real.shrinkage_loss
        else:
            real_logits, fake_logits = D(real_in), D(fake_in)
            ada_loss = real_logits.new_zeros((), dtype=torch.float32)
    adversarial = discriminator_loss(real_logits, fake_logits, config.loss)
    r1 = r1_penalty(real_logits, real, accelerator.scaler) if r1_due else None
    loss = adversarial + ada_loss
    if r1 is not None:
        loss = loss + (config.r1_gamma / 2) * config.r1_every * r1
    # Under fp16 the R1 term comes from a scaled gradient that may overflow: the GradScaler then skips the step and
    # lowers the scale (PyTorch's AMP recipe), so only the terms without it decide whether training diverged.
    checked = loss if accelerator.scaler is None or r1 is None else adversarial + ada_loss
    if not _all_finite(accelerator, checked):
        _stop_on_non_finite(run, "discriminator", step + 1, loss)
    accelerator.backward(loss)
    run.opt_d.step()
    run.opt_d.zero_grad(set_to_none=True)
    if run.augment_p is not None:  # ADA: r_t from the (augmented) reals' logits, summed over processes
        run.augment_p.observe(real_logits)
        global_batch = config.batch_size * accelerator.num_processes
        run.augment.p = run.augment_p.step(global_batch, reduce=lambda t: accelerator.reduce(t, reduction="sum"))
    return DiscriminatorStepOutput(loss, adversarial, r1, real_logits, fake_logits, shrinkage_real, shrinkage_fake)


def generator_step(run: _Run, fake: Tensor, step: int) -> GeneratorStepOutput:
    """One generator update scoring ``fake`` (augmented like D's inputs) with the (frozen, unsynchronised)
    discriminator, plus the architecture's generator regularisers when due; then the EMA update."""
    config, accelerator, D, ada = run.steps, run.accelerator, run.D, run.ada
    fake_in = run.augment(fake) if run.augment is not None else fake
    frozen = [p for p in D.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    with accelerator.no_sync(D), accelerator.autocast():
        if ada is not None:
            terms = ada.generator_terms(D, fake_in)
            logits, ada_loss = terms.logits, terms.loss
        else:
            logits, ada_loss = D(fake_in), fake.new_zeros((), dtype=torch.float32)
        loss = generator_loss(logits, config.loss) + ada_loss
    for p in frozen:
        p.requires_grad_(True)
    logged: dict[str, Tensor] = {}
    for regulariser in run.regularisers:  # lazy: every `interval` steps, on a fresh half batch
        if step % regulariser.interval == 0:
            penalty = regulariser.penalty(run.G, max(1, config.batch_size // 2), fake.device,
                                          accelerator)
            loss = loss + regulariser.weight * regulariser.interval * penalty
            logged.update(regulariser.logged_values(penalty))
    if not _all_finite(accelerator, loss):
        _stop_on_non_finite(run, "generator", step + 1, loss)
    accelerator.backward(loss)
    run.opt_g.step()
    run.opt_g.zero_grad(set_to_none=True)
    if not run.opt_g.step_was_skipped:
        _ema_update(run.ema, accelerator.unwrap_model(run.G), _ema_decay(config.ema_decay, step))
    return GeneratorStepOutput(loss, logged)


def _log_step(run: _Run, step: int, d_out: DiscriminatorStepOutput, g_out: GeneratorStepOutput) -> dict[str, float]:
    """Reduce the step's values over processes, record and log them."""
    accelerator = run.accelerator
    device = d_out.loss.device
    values = {"loss_d": d_out.loss.detach().float(), "loss_g": g_out.loss.detach().float(),
              "loss_d_adversarial": d_out.adversarial.detach().float(),
              "logits_real": d_out.real_logits.detach().float().mean(),
              "logits_fake": d_out.fake_logits.detach().float().mean()}
    if d_out.shrinkage_loss_real is not None:
        values["shrinkage_loss_real"] = d_out.shrinkage_loss_real.float()
    if d_out.shrinkage_loss_fake is not None:
        values["shrinkage_loss_fake"] = d_out.shrinkage_loss_fake.float()
    if d_out.r1 is not None:
        values["r1"] = d_out.r1.detach().float()
    values.update(g_out.regularisers)
    if run.augment_p is not None:  # the same on every process
        values["augment_p"] = torch.tensor(run.augment_p.p, device=device)
        if run.augment_p.last_rt is not None:
            values["augment_rt"] = torch.tensor(run.augment_p.last_rt, device=device)
    stacked = torch.stack([v.reshape(()) for v in values.values()])
    if accelerator.num_processes > 1:
        stacked = accelerator.reduce(stacked, reduction="mean")
    record = dict(zip(values, (float(v) for v in stacked.tolist())))
    run.losses.append({"step": step, **record})
    accelerator.log(record, step=step)
    return record


def _after_step(run: _Run, step: int, d_out: DiscriminatorStepOutput, g_out: GeneratorStepOutput, progress) -> None:
    """Logging, sample grids and checkpoints due after ``step``."""
    config = run.schedule
    last = step == config.max_steps
    if step % config.log_every == 0 or last:
        record = _log_step(run, step, d_out, g_out)
        if progress is not None:
            progress.set_postfix(loss_d=f"{record['loss_d']:.3f}", loss_g=f"{record['loss_g']:.3f}")
    if progress is not None:
        progress.update(1)
    if run.accelerator.is_main_process and (step % config.sample_every == 0 or last):
        path = config.output_dir / "samples" / f"step-{step:07d}.png"
        _save_grid(run.ema, path, config.num_sample_images, seed=config.seed)
        run.grids.append(str(path))
    if step % config.checkpoint_every == 0 or last:
        run.last_checkpoint = str(save_checkpoint(run, step))


def _train_steps(run: _Run, progress_bar: bool) -> int:
    """The step loop; returns the last step."""
    config, accelerator = run.schedule, run.accelerator
    latent_dim = accelerator.unwrap_model(run.G).latent_dim
    device = accelerator.device
    progress = None
    if progress_bar and accelerator.is_main_process:
        progress = tqdm(total=config.max_steps, initial=run.start_step, desc="hubtune gan", dynamic_ncols=True)
    run.G.train()
    run.D.train()
    step = run.start_step
    try:
        for indices in run.sampler:
            real = run.dataset.batch(indices).to(device)
            # one generator pass per step (as in the PyTorch DCGAN example): the discriminator step sees the fakes
            # detached, the generator step then scores the same fakes with the updated discriminator
            with accelerator.autocast():
                fake = run.G(torch.randn(run.steps.batch_size, latent_dim, device=device))
            d_out = discriminator_step(run, real, fake, step)
            g_out = generator_step(run, fake, step)
            step += 1
            _after_step(run, step, d_out, g_out, progress)
    finally:
        if progress is not None:
            progress.close()
    return step


def _export_generator(run: _Run, metrics: dict[str, Any] | None) -> str:
    """Save the EMA generator at the output root (config.json, model.safetensors, samples.png, README.md)."""
    card = dict(run.card)
    if card["augmentation"] is not None and run.augment_p is not None:
        card["augmentation"] = {**card["augmentation"], "final_p": run.augment_p.p}
    run.ema.training_info = {  # plain values for the card (hubtune.hub.generator_card.GeneratorCardValues)
        **card, "discriminator": run.accelerator.unwrap_model(run.D).card_details(), "metrics": metrics,
        "data_source": run.dataset.source, "num_images": len(run.dataset),
        "num_processes": run.accelerator.num_processes,
    }
    run.ema.save_pretrained(run.schedule.output_dir)
    return str(run.schedule.output_dir)


def _finish(run: _Run, step: int, eval_num_samples: int, feature_extractor: str, eval_batch_size: int,
            export: bool) -> tuple[dict[str, Any] | None, str | None]:
    """Metrics and the exported generator (main process)."""
    accelerator = run.accelerator
    metrics, generator_dir = None, None
    if accelerator.is_main_process:
        if eval_num_samples:
            metrics = evaluate_generator(run.ema, run.dataset, num_samples=eval_num_samples,
                                         feature_extractor=feature_extractor, batch_size=eval_batch_size,
                                         seed=run.schedule.seed)
            (run.schedule.output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
            accelerator.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=step)
        if export:
            generator_dir = _export_generator(run, metrics)
    return metrics, generator_dir


def train_gan(
    config: GANTrainingConfig | None = None,
    *,
    generator: Generator | None = None,
    discriminator: nn.Module | None = None,
    dataset: ImageSet | None = None,
    accelerator: Accelerator | None = None,
    **overrides: Any,
) -> GANTrainingResult:
    """Train a GAN; write samples, checkpoints, metrics and the final generator at ``output_dir``'s root.

    Args:
        config: the run's knobs; keyword ``overrides`` replace fields of it (or of the defaults).
        generator / discriminator: bring your own modules (the discriminator: see :func:`as_discriminator`);
            default: the architecture's (``config.architecture.build(...)``).
        dataset: bring your own :class:`ImageSet`; default: ``load_image_set(config.dataset, ...)``.
        accelerator: an existing Accelerator (else one is created with ``config.bf16`` / ``config.fp16``).

    With ``push_to_hub`` (and ``hub_model_id``) the main process pushes the exported generator at the end with
    ``Generator.push_to_hub`` (nothing local is modified by the push).

    Raises:
        NonFiniteLossError: a loss became NaN/inf; the checkpoints already written are kept untouched.
        CheckpointError: ``resume_from_checkpoint`` points at a missing, incomplete or mismatching checkpoint.
        DatasetTooSmallError: fewer images than one step's batch.
        HubPushError: the push failed (the local output folder is complete).
        OutputDirError: another run is writing into ``output_dir`` (its lock file names it).
    """
    config = GANTrainingConfig.from_dict({**(config.to_dict() if config else {}),
                                          "hub_token": config.hub_token if config else None, **overrides})
    is_main = accelerator.is_main_process if accelerator is not None else PartialState().is_main_process
    with output_dir_lock(config.output_dir, "gan", enabled=is_main):  # a second run into the folder is refused
        return _train_gan(config, generator, discriminator, dataset, accelerator)


def _train_gan(config: GANTrainingConfig, generator: Generator | None, discriminator: nn.Module | None,
               dataset: ImageSet | None, accelerator: Accelerator | None) -> GANTrainingResult:
    start_time = time.perf_counter()
    run = _prepare_run(config, generator, discriminator, dataset, accelerator)
    try:
        step = _train_steps(run, config.progress_bar)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM from the command line (hubtune.errors.Terminated)
        where = (f"the last complete checkpoint is {run.last_checkpoint}; resume with --resume_from_checkpoint "
                 f"{run.last_checkpoint}" if run.last_checkpoint else "no checkpoint had been written yet")
        raise type(e)(where) from None
    accelerator = run.accelerator
    accelerator.wait_for_everyone()
    metrics, generator_dir = _finish(run, step, config.eval_num_samples, config.eval_feature_extractor,
                                     config.eval_batch_size, config.export_generator)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    hub_url = space = None
    if config.push_to_hub and accelerator.is_main_process:
        if generator_dir is None:
            raise ConfigError("push_to_hub needs export_generator=True (the pushed generator is the exported one)")
        if config.hub_space:  # the exported folder, its card linking the Space, then the Space (as `hubtune push --space`)
            hub_url, space = push_model_and_space(generator_dir, config.hub_model_id, config.hub_space,
                                                  token=config.hub_token, private=bool(config.hub_private_repo))
        else:
            hub_url = str(run.ema.push_to_hub(config.hub_model_id, token=config.hub_token,
                                              private=config.hub_private_repo or None))
    return GANTrainingResult(
        output_dir=str(run.schedule.output_dir), steps=step, losses=run.losses, metrics=metrics, generator_dir=generator_dir,
        last_checkpoint=run.last_checkpoint, sample_grids=run.grids, wall_time_s=time.perf_counter() - start_time,
        hub_url=hub_url, is_main_process=accelerator.is_main_process, space_url=space,
    )


def format_summary(result: GANTrainingResult) -> str:
    """The run summary ``hubtune gan`` prints (main process only)."""
    lines = [f"trained {result.steps} steps in {result.wall_time_s:.1f} s; output folder: {result.output_dir}"]
    if result.metrics is not None:
        lines.append(json.dumps(result.metrics, indent=2))
    if result.generator_dir:
        lines.append(f"generator: Generator.from_pretrained({result.generator_dir!r})")
    if result.hub_url:
        lines.append(f"pushed the generator: {result.hub_url}")
    if result.space_url:
        lines.append(f"its demo Space: {result.space_url}")
    return "\n".join(lines)


def _stop_on_non_finite(run: _Run, which: str, step: int, value: Tensor) -> None:
    run.accelerator.end_training()
    last = run.last_checkpoint
    kept = f"the last good checkpoint is {last}" if last else "no checkpoint had been written yet"
    raise NonFiniteLossError(
        f"step {step}: the {which} loss is {float(value.detach().float()):.4g}; training stopped before the update, "
        f"and nothing already in {run.schedule.output_dir} was overwritten ({kept}). Lower the learning rates, add R1 "
        "(--r1_gamma), or use bf16 rather than fp16; resume with --resume_from_checkpoint from that checkpoint."
    )


# ----------------------------------------------------------------------------------------------- checkpoints


def save_checkpoint(run: _Run, step: int) -> Path:
    """Write ``checkpoint-<step>/`` atomically (a hidden partial folder renamed at the end); prune old ones.

    The adaptive augmentation probability's state (the same on every process) goes into trainer_state.json, the
    generator regularisers' per-process states (e.g. the path-length running mean) into ``process_state_<rank>.json``.
    """
    accelerator, output_dir = run.accelerator, run.schedule.output_dir
    final = ckpt.checkpoint_dir(output_dir, step)
    partial = final.with_name(f".{final.name}.partial")
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    accelerator.wait_for_everyone()
    ckpt.save_rng_state(partial / f"rng_state_{accelerator.process_index}")
    process_state = {k: v for r in run.regularisers for k, v in r.state_dict().items()}
    if process_state:
        ckpt.write_process_state(partial, accelerator.process_index, process_state)
    if accelerator.is_main_process:
        ckpt.save_module(accelerator.unwrap_model(run.G), partial / "generator.safetensors")
        ckpt.save_module(accelerator.unwrap_model(run.D), partial / "discriminator.safetensors")
        ckpt.save_module(run.ema, partial / "ema.safetensors")
        ckpt.save_optimizer(run.opt_g, partial / "optimizer_g")
        ckpt.save_optimizer(run.opt_d, partial / "optimizer_d")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        scaler = accelerator.scaler
        ckpt.write_trainer_state(partial, {
            "step": step, "num_processes": accelerator.num_processes, "config": run.settings,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "augment_p": run.augment_p.state_dict() if run.augment_p is not None else None,
        })
        ckpt.replace_folder(partial, final)
        for old in ckpt.list_checkpoints(output_dir)[:-run.schedule.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(run: _Run, folder: str | Path, state: dict[str, Any]) -> None:
    """Restore weights, optimisers, this process's random state and the loss scaler from a checkpoint folder."""
    folder, accelerator = Path(folder), run.accelerator
    ckpt.load_module(accelerator.unwrap_model(run.G), folder / "generator.safetensors")
    ckpt.load_module(accelerator.unwrap_model(run.D), folder / "discriminator.safetensors")
    ckpt.load_module(run.ema, folder / "ema.safetensors")
    ckpt.load_optimizer(run.opt_g, folder / "optimizer_g")
    ckpt.load_optimizer(run.opt_d, folder / "optimizer_d")
    ckpt.load_rng_state(folder / f"rng_state_{accelerator.process_index}")
    if accelerator.scaler is not None and state.get("scaler"):
        accelerator.scaler.load_state_dict(state["scaler"])
