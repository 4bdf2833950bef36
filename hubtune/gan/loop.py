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
* EMA copy of G (timm's ModelEmaV3, :class:`GeneratorEma`), PNG sample grids, tracker logging, checkpoints, exact
  resume, a stop on a non-finite loss.

The run reads its config once, in :func:`prepare_run`, and each step gets the part it needs (:class:`GANRun` holds
``optim``, ``adaptive_mix`` and ``schedule``). What every hubtune run does around its loop is the run layer's
(:mod:`hubtune.runs`): the output folder's guard and lock, which checkpoint to resume from, the "past --max_steps"
refusal, Ctrl-C / SIGTERM, atomic checkpoints with ``SHA256SUMS`` and publishing.

The output folder is laid out like the Hugging Face Trainer's::

    output_dir/
      config.json, model.safetensors, README.md, samples.png   the final (EMA) generator: Generator.from_pretrained(output_dir)
      training_config.json                                    this run's GANTrainingConfig.to_dict() (no token)
      metrics.json                                            FID/KID (when computed)
      logs.jsonl                                              one line per logged step
      samples/step-0000250.png ...                            sample grids during training
      checkpoint-<step>/                                      resumable checkpoints

Every discriminator computation goes through ``D``'s forward (``output=...``), never through a wrapped
module's attributes, so DistributedDataParallel synchronises everything it should.
"""

from __future__ import annotations

import itertools
import json
import math
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator, PartialState
from accelerate.tracking import GeneralTracker
from accelerate.utils import set_seed
from timm.utils import ModelEmaV3
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchvision.utils import save_image
from tqdm.auto import tqdm

from hubtune.data import StreamProgress, collate_image_batch
from hubtune.devices import configure_backends, default_dataloader_workers
from hubtune.errors import CheckpointError, ConfigError, NonFiniteLossError
from hubtune.gan import checkpoint as ckpt
from hubtune.gan.archs import GeneratorRegulariser
from hubtune.gan.augment import AdaptiveAugmentProbability, DiffAugment
from hubtune.gan.config import (
    TRAINING_CONFIG_NAME,
    GANAdaptiveMixArguments,
    GANAugmentArguments,
    GANEvalArguments,
    GANHubArguments,
    GANModelArguments,
    GANOptimArguments,
    GANScheduleArguments,
    GANTrainingConfig,
)
from hubtune.gan.data import ImageSet, StepBatchSampler, StreamedImages, load_image_set, load_image_stream
from hubtune.gan.metrics import check_feature_extractor_name, evaluate_generator
from hubtune.gan.models import Discriminator, Generator, as_discriminator
from hubtune.hub.space import space_id_for
from hubtune.losses.adaptive_mix import AdaptiveMix
from hubtune.runs.checkpoints import last_complete, publish_checkpoint, refuse_past_the_end, resolve_resume
from hubtune.runs.checkpoints import staging_folder
from hubtune.runs.folder import guarded_output_dir
from hubtune.runs.interrupt import resumable_on_interrupt
from hubtune.runs.publish import publish

__all__ = ["GANTrainingConfig", "GANTrainingResult", "GANRun", "GeneratorEma", "train_gan", "prepare_run",
           "JSONLinesTracker", "discriminator_loss", "generator_loss", "r1_penalty", "discriminator_step",
           "generator_step", "DiscriminatorStepOutput", "GeneratorStepOutput", "lazy_regularisation_factor",
           "save_checkpoint", "load_checkpoint", "format_summary"]

# Files at an output root that show it holds another run's results (with any complete checkpoint-<step>).
_RUN_FILES = ("model.safetensors",)


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
    unreadable_images: int = 0  # skipped while training, over all processes (counted when images are read as they go)


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


class GeneratorEma(ModelEmaV3):
    """The EMA copy of the generator (``module``), as timm's :class:`~timm.utils.ModelEmaV3` keeps it: parameters
    averaged with ``torch._foreach_lerp_``, buffers (e.g. StyleGAN2's ``w_avg``) copied (``exclude_buffers=True``).

    One difference, kept on purpose: the decay warms up as TensorFlow's ``ExponentialMovingAverage`` with
    ``num_updates`` does, ``min(decay, (1 + step) / (10 + step))`` (a fresh G is no better than its average), where
    timm's warm-up is ``1 - (1 + step / gamma) ** -power``; hubtune's runs always used the former, and the latter
    would change every same-seed result (tests/gan/test_gan_loop.py::test_the_ema_is_timms_with_tensorflows_warm_up).
    """

    def __init__(self, generator: Generator, decay: float) -> None:
        super().__init__(generator, decay=decay, exclude_buffers=True)
        self.module.requires_grad_(False)

    def get_decay(self, step: int | None = None) -> float:
        return self.decay if step is None else min(self.decay, (1 + step) / (10 + step))


def _ema_update(ema: GeneratorEma, model: nn.Module, step: int) -> None:
    ema.update(model, step=step)


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


@dataclass
class GANRun:
    """Everything one GAN training run holds while it trains, made once by :func:`prepare_run` from the run's config.

    The steps read the typed parts of the config they need (``optim``: loss, R1, batch, EMA; ``adaptive_mix``: which
    batches are mixed; ``schedule``: when to log, sample and checkpoint), never the whole config; ``settings`` are
    the config's JSON values (written into checkpoints) and ``card`` the plain values the model card shows. The
    rest is state: the prepared modules and optimisers, the data and its sampler, the augmentation, the generator
    regularisers of the architecture (with their per-process state), what was logged and written so far.
    """

    optim: GANOptimArguments
    adaptive_mix: GANAdaptiveMixArguments
    schedule: GANScheduleArguments
    output_dir: Path
    seed: int
    settings: dict[str, Any]
    card: dict[str, Any]
    accelerator: Accelerator
    G: nn.Module
    D: nn.Module
    ema: GeneratorEma
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    ada: AdaptiveMix | None
    dataset: ImageSet | StreamedImages
    sampler: StepBatchSampler | None  # in-memory images; a stream has stream_loader
    start_step: int
    last_checkpoint: str | None
    augment: DiffAugment | None = None
    augment_p: AdaptiveAugmentProbability | None = None
    regularisers: list[GeneratorRegulariser] = field(default_factory=list)  # the architecture's, on G
    losses: list[dict[str, float]] = field(default_factory=list)
    grids: list[str] = field(default_factory=list)
    stream_loader: DataLoader | None = None  # this process's DataLoader over its part of a stream
    stream_progress: StreamProgress = field(default_factory=StreamProgress)  # where it stands, unreadable images


# ----------------------------------------------------------------------------------------------- setting up


def _resume_state(resume_from: Path | None, settings: dict[str, Any], keys: list[str],
                  max_steps: int) -> dict[str, Any] | None:
    """The checkpoint's trainer state, after checking that it was written by a run with these ``settings`` (on
    ``keys``) and does not lie past ``max_steps``."""
    if resume_from is None:
        return None
    state = ckpt.read_trainer_state(resume_from)
    saved = GANTrainingConfig.from_dict(state["config"]).to_dict()  # the checkpoint's, in today's names
    mismatched = {k: (saved.get(k), settings.get(k)) for k in keys if saved.get(k) != settings.get(k)}
    if mismatched:
        raise CheckpointError(
            f"{resume_from} was written by a run with other settings: "
            + ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in mismatched.items())
        )
    refuse_past_the_end(resume_from, max_steps)
    return state


def _make_accelerator(mixed_precision: str, log_with: list[str], output_dir: Path, start_step: int,
                      resuming: bool) -> Accelerator:
    tracker = JSONLinesTracker(output_dir, resume_step=start_step if resuming else None)
    # "no" leaves the choice to `accelerate launch --mixed_precision ...` / accelerate config, if any
    precision = None if mixed_precision == "no" else mixed_precision
    return Accelerator(mixed_precision=precision, log_with=[tracker, *log_with], project_dir=str(output_dir))


def _build_modules(model: GANModelArguments, image_size: int, channels: int, seed: int, generator: Generator | None,
                   discriminator: nn.Module | None) -> tuple[Generator, Discriminator]:
    """The given modules, or the architecture's (same initial weights on every process: seeded here)."""
    set_seed(seed)
    if generator is None or discriminator is None:
        built_g, built_d = model.architecture.build(image_size, channels, model.latent_dim)
        generator = generator if generator is not None else built_g
        if discriminator is None and model.discriminator_architecture is not None:
            discriminator = model.discriminator_architecture.build_discriminator(model.discriminator, image_size,
                                                                                 channels)
        discriminator = discriminator if discriminator is not None else built_d
    return generator, as_discriminator(discriminator)


def lazy_regularisation_factor(interval: int, active: bool) -> float:
    """StyleGAN2's correction for a regulariser applied every ``interval`` steps: ``c = interval / (interval + 1)``
    (Adam then runs with ``lr * c`` and ``betas ** c``); 1 when the regulariser is off or not lazy."""
    return interval / (interval + 1) if active and interval > 1 else 1.0


def _adam(module: nn.Module, lr: float, betas: tuple[float, float], c: float) -> torch.optim.Adam:
    params = [p for p in module.parameters() if p.requires_grad]  # a frozen timm backbone stays out
    return torch.optim.Adam(params, lr=lr * c, betas=(betas[0] ** c, betas[1] ** c))


def _augmentation(augment: GANAugmentArguments) -> tuple[DiffAugment | None, AdaptiveAugmentProbability | None]:
    """DiffAugment of D's inputs (None when off), and ADA's adaptive probability (None for a fixed p = 1)."""
    if not augment.diffaugment:
        return None, None
    diffaugment, probability = DiffAugment(augment.diffaugment), None
    if augment.augment_target is not None:
        probability = AdaptiveAugmentProbability(augment.augment_target, augment.augment_interval,
                                                 augment.augment_kimg, p=0.0)
        diffaugment.p = probability.p
    return diffaugment, probability


def _card_values(config: GANTrainingConfig, settings: dict[str, Any]) -> dict[str, Any]:
    """How the generator was trained, for its card (fields of hubtune.hub.generator_card.GeneratorCardValues)."""
    return {"training": settings, "arch_title": config.model.architecture.title,
            "adaptivemix": config.adaptive_mix.card_settings(), "augmentation": config.augment.card_settings(),
            "sample_seed": config.seed}


def _load_data(config: GANTrainingConfig, dataset: ImageSet | None) -> ImageSet | StreamedImages:
    data = config.data
    if dataset is None and data.streaming:
        return load_image_stream(data.dataset, data.image_size, data.channels, data.strict_data, data.max_images)
    if dataset is None:
        dataset = load_image_set(data.dataset, data.image_size, data.channels, data.strict_data, data.max_images)
    if dataset.image_size != data.image_size:
        raise ConfigError(f"the dataset's images are {dataset.image_size} px, the config asks for {data.image_size} px")
    return dataset


def _batch_source(config: GANTrainingConfig, dataset: ImageSet | StreamedImages, accelerator: Accelerator,
                  start_step: int) -> tuple[StepBatchSampler | None, DataLoader | None]:
    """Where each step's real batch comes from: the in-memory set's :class:`StepBatchSampler` (from ``start_step``),
    or this process's DataLoader over its own part of the stream."""
    if isinstance(dataset, StreamedImages):
        return None, _stream_loader(config, dataset, accelerator)
    return StepBatchSampler(len(dataset), config.optim.per_device_train_batch_size, config.schedule.max_steps,
                            seed=config.seed, start_step=start_step, rank=accelerator.process_index,
                            world_size=accelerator.num_processes), None


def _stream_loader(config: GANTrainingConfig, images: StreamedImages, accelerator: Accelerator) -> DataLoader:
    """This process's DataLoader over its own part of the stream (each process reads its own; none runs out)."""
    data = config.data
    workers = default_dataloader_workers() if data.dataloader_num_workers == -1 else data.dataloader_num_workers
    stream = images.process_stream(accelerator.process_index, accelerator.num_processes, config.seed,
                                   buffer_size=data.shuffle_buffer)
    return DataLoader(stream, batch_size=config.optim.per_device_train_batch_size, collate_fn=collate_image_batch,
                      num_workers=workers, persistent_workers=workers > 0, pin_memory=accelerator.device.type == "cuda")


def _real_batches(run: GANRun) -> Iterator[Tensor]:
    """The real images of each remaining step: batches of the in-memory set (:class:`StepBatchSampler`), or of the
    stream, whose bookkeeping (position, unreadable images) ``run.stream_progress`` takes."""
    if run.stream_loader is None:
        for indices in run.sampler:
            yield run.dataset.batch(indices)
        return
    for batch in itertools.islice(run.stream_loader, run.schedule.max_steps - run.start_step):
        yield run.stream_progress.take(batch)["pixel_values"]


def prepare_run(config: GANTrainingConfig, generator: Generator | None = None, discriminator: nn.Module | None = None,
                dataset: ImageSet | None = None, accelerator: Accelerator | None = None) -> GANRun:
    """Set a run up from its config (read here, once): the checkpoint to resume from and its state, the
    accelerator, the data, G, D, their EMA and optimisers, AdaptiveMix, augmentation and the architecture's generator
    regularisers; restore the checkpoint's state (or seed each process), start the trackers, write
    ``training_config.json``."""
    configure_backends()
    if config.hub.hub_space:
        space_id_for(config.hub.hub_space, config.hub.hub_model_id)  # a bad Space name fails before training
    output_dir = Path(config.output_dir)
    resume_from = resolve_resume(output_dir, config.resume_from_checkpoint, check_files=ckpt.read_trainer_state)
    settings = config.to_dict()
    state = _resume_state(resume_from, settings, config.resume_keys(), config.schedule.max_steps)
    start_step = int(state["step"]) if state else 0
    if accelerator is None:
        accelerator = _make_accelerator(config.optim.mixed_precision, config.log_with, output_dir, start_step,
                                        state is not None)
    # what actually runs, for checkpoints and the card
    settings.update(bf16=accelerator.mixed_precision == "bf16", fp16=accelerator.mixed_precision == "fp16")
    if state is not None and state.get("num_processes") != accelerator.num_processes:
        raise CheckpointError(
            f"{resume_from} was written by {state.get('num_processes')} process(es); resume with the same number "
            f"(now {accelerator.num_processes}) so that every process gets its own random state back"
        )
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
    dataset = _load_data(config, dataset)
    optim = config.optim
    sampler, stream_loader = _batch_source(config, dataset, accelerator, start_step)
    generator, discriminator = _build_modules(config.model, config.data.image_size, dataset.channels, config.seed,
                                              generator, discriminator)
    ema = GeneratorEma(generator, optim.ema_decay).to(accelerator.device)  # buffers too (w_avg)
    regularisers = [r.to(accelerator.device)
                    for r in config.model.architecture.generator_regularisers(optim.per_device_train_batch_size)]
    opt_g = _adam(generator, optim.lr_g, optim.betas,
                  math.prod(lazy_regularisation_factor(r.interval, True) for r in regularisers))
    opt_d = _adam(discriminator, optim.lr_d, optim.betas, lazy_regularisation_factor(optim.r1_every, optim.r1_gamma > 0))
    # separate prepare calls: two models, two optimizers (DeepSpeed refuses two models in one prepare)
    G, opt_g = accelerator.prepare(generator, opt_g)
    D, opt_d = accelerator.prepare(discriminator, opt_d)
    mix = config.adaptive_mix
    augment, augment_p = _augmentation(config.augment)
    latest = resume_from or last_complete(output_dir)
    run = GANRun(optim=optim, adaptive_mix=mix, schedule=config.schedule, output_dir=output_dir, seed=config.seed,
                 settings=settings, card=_card_values(config, settings), accelerator=accelerator, G=G, D=D, ema=ema,
                 opt_g=opt_g, opt_d=opt_d, ada=AdaptiveMix.from_settings(mix.settings()) if mix.adaptivemix else None,
                 dataset=dataset, sampler=sampler, start_step=start_step,
                 last_checkpoint=str(latest) if latest else None, augment=augment, augment_p=augment_p,
                 regularisers=regularisers, stream_loader=stream_loader)
    _restore_or_seed(run, resume_from, state)
    accelerator.init_trackers("hubtune-gan", config={k: (json.dumps(v) if isinstance(v, (list, dict)) else v)
                                                     for k, v in settings.items()})
    if accelerator.is_main_process:
        (output_dir / TRAINING_CONFIG_NAME).write_text(json.dumps(settings, indent=2))
    return run


def _restore_or_seed(run: GANRun, resume_from: Path | None, state: dict[str, Any] | None) -> None:
    """The checkpoint's weights, optimisers, random states, augmentation probability and regulariser states; or,
    starting afresh, a random stream per process."""
    if state is None:
        set_seed(run.seed, device_specific=True)
        return
    load_checkpoint(run, resume_from, state)
    if run.augment_p is not None:
        if not state.get("augment_p"):
            raise CheckpointError(f"{resume_from} has no adaptive augmentation state (augment_target)")
        run.augment_p.load_state_dict(state["augment_p"])
        run.augment.p = run.augment_p.p
    if run.regularisers or run.stream_loader is not None:
        process_state = ckpt.read_process_state(resume_from, run.accelerator.process_index)
        for regulariser in run.regularisers:
            regulariser.load_state_dict(process_state)
        if run.stream_loader is not None:  # the stream goes on from where this process's stood
            run.stream_progress = StreamProgress(process_state.get("stream"))
            run.stream_loader.dataset.load_state_dict(run.stream_progress.state_dict())


# ----------------------------------------------------------------------------------------------- the steps



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

def discriminator_step(run: GANRun, real: Tensor, fake: Tensor, step: int) -> DiscriminatorStepOutput:
    """One discriminator update on a real batch and (detached) fakes; stops the run on a non-finite loss."""
    config, accelerator, D, ada = run.optim, run.accelerator, run.D, run.ada
    r1_due = config.r1_gamma > 0 and step % config.r1_every == 0
    fake_detached = fake.detach().float()
    real.requires_grad_(r1_due)
    shrinkage_real = shrinkage_fake = None
    # augmentation first, then AdaptiveMix mixes augmented images (see GANTrainingConfig); R1 differentiates
    # through the augmentation w.r.t. the un-augmented reals
    real_in, fake_in = (run.augment(real), run.augment(fake_detached)) if run.augment is not None else (real, fake_detached)
    with accelerator.autocast():
        if ada is not None and run.adaptive_mix.adaptivemix_mix_fakes:
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
        global_batch = config.per_device_train_batch_size * accelerator.num_processes
        run.augment.p = run.augment_p.step(global_batch, reduce=lambda t: accelerator.reduce(t, reduction="sum"))
    return DiscriminatorStepOutput(loss, adversarial, r1, real_logits, fake_logits, shrinkage_real, shrinkage_fake)


def generator_step(run: GANRun, fake: Tensor, step: int) -> GeneratorStepOutput:
    """One generator update scoring ``fake`` (augmented like D's inputs) with the (frozen, unsynchronised)
    discriminator, plus the architecture's generator regularisers when due; then the EMA update."""
    config, accelerator, D, ada = run.optim, run.accelerator, run.D, run.ada
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
            penalty = regulariser.penalty(run.G, max(1, config.per_device_train_batch_size // 2), fake.device,
                                          accelerator)
            loss = loss + regulariser.weight * regulariser.interval * penalty
            logged.update(regulariser.logged_values(penalty))
    if not _all_finite(accelerator, loss):
        _stop_on_non_finite(run, "generator", step + 1, loss)
    accelerator.backward(loss)
    run.opt_g.step()
    run.opt_g.zero_grad(set_to_none=True)
    if not run.opt_g.step_was_skipped:
        _ema_update(run.ema, accelerator.unwrap_model(run.G), step)
    return GeneratorStepOutput(loss, logged)


def _log_step(run: GANRun, step: int, d_out: DiscriminatorStepOutput, g_out: GeneratorStepOutput) -> dict[str, float]:
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


def _after_step(run: GANRun, step: int, d_out: DiscriminatorStepOutput, g_out: GeneratorStepOutput, progress) -> None:
    """Logging, sample grids and checkpoints due after ``step``."""
    schedule = run.schedule
    last = step == schedule.max_steps
    if step % schedule.log_every == 0 or last:
        record = _log_step(run, step, d_out, g_out)
        if progress is not None:
            progress.set_postfix(loss_d=f"{record['loss_d']:.3f}", loss_g=f"{record['loss_g']:.3f}")
    if progress is not None:
        progress.update(1)
    if run.accelerator.is_main_process and (step % schedule.sample_every == 0 or last):
        path = run.output_dir / "samples" / f"step-{step:07d}.png"
        _save_grid(run.ema.module, path, schedule.num_sample_images, seed=run.seed)
        run.grids.append(str(path))
    if step % schedule.checkpoint_every == 0 or last:
        run.last_checkpoint = str(save_checkpoint(run, step))


def _train_steps(run: GANRun, progress_bar: bool) -> int:
    """The step loop; returns the last step."""
    accelerator = run.accelerator
    latent_dim = accelerator.unwrap_model(run.G).latent_dim
    device = accelerator.device
    progress = None
    if progress_bar and accelerator.is_main_process:
        progress = tqdm(total=run.schedule.max_steps, initial=run.start_step, desc="hubtune gan", dynamic_ncols=True)
    run.G.train()
    run.D.train()
    step = run.start_step
    try:
        for real in _real_batches(run):
            real = real.to(device)
            # one generator pass per step (as in the PyTorch DCGAN example): the discriminator step sees the fakes
            # detached, the generator step then scores the same fakes with the updated discriminator
            with accelerator.autocast():
                fake = run.G(torch.randn(run.optim.per_device_train_batch_size, latent_dim, device=device))
            d_out = discriminator_step(run, real, fake, step)
            g_out = generator_step(run, fake, step)
            step += 1
            _after_step(run, step, d_out, g_out, progress)
    finally:
        if progress is not None:
            progress.close()
    return step


# ----------------------------------------------------------------------------------------------- the end


def _export_generator(run: GANRun, metrics: dict[str, Any] | None) -> str:
    """Save the EMA generator at the output root (config.json, model.safetensors, samples.png, README.md)."""
    card = dict(run.card)
    if card["augmentation"] is not None and run.augment_p is not None:
        card["augmentation"] = {**card["augmentation"], "final_p": run.augment_p.p}
    generator = run.ema.module
    generator.training_info = {  # plain values for the card (hubtune.hub.generator_card.GeneratorCardValues)
        **card, "discriminator": run.accelerator.unwrap_model(run.D).card_details(), "metrics": metrics,
        "data_source": run.dataset.source, "num_images": None if run.stream_loader is not None else len(run.dataset),
        "num_processes": run.accelerator.num_processes,
    }
    generator.save_pretrained(run.output_dir)
    return str(run.output_dir)


def _evaluate_and_export(run: GANRun, step: int, evaluation: GANEvalArguments,
                         export: bool) -> tuple[dict[str, Any] | None, str | None]:
    """Metrics and the exported generator (main process)."""
    metrics, generator_dir = None, None
    if run.accelerator.is_main_process:
        if evaluation.eval_num_samples:
            real = run.dataset if isinstance(run.dataset, ImageSet) else run.dataset.first_images(evaluation.eval_num_samples)
            metrics = evaluate_generator(run.ema.module, real, num_samples=evaluation.eval_num_samples,
                                         feature_extractor=evaluation.eval_feature_extractor,
                                         batch_size=evaluation.eval_batch_size, seed=run.seed)
            (run.output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
            run.accelerator.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=step)
        if export:
            generator_dir = _export_generator(run, metrics)
    return metrics, generator_dir


def _publish_generator(generator: Generator, hub: GANHubArguments) -> tuple[str, str | None]:
    """Push the exported generator (and its Space) through the run layer: saved again into a temporary folder with a
    card naming the repository, so that nothing local changes (:func:`hubtune.runs.publish.publish`)."""
    with tempfile.TemporaryDirectory(prefix="hubtune-generator-") as folder:
        generator.save_pretrained(folder, model_card_kwargs={"repo_id": hub.hub_model_id})
        return publish(folder, hub.hub_model_id, hub.hub_space, token=hub.hub_token, private=hub.hub_private_repo)


def _finish(run: GANRun, step: int, config: GANTrainingConfig, started: float) -> GANTrainingResult:
    """After the last step: metrics, the exported generator and its push (main process), the trackers closed."""
    accelerator = run.accelerator
    accelerator.wait_for_everyone()
    count = torch.tensor(run.stream_progress.unreadable, device=accelerator.device)
    unreadable = int(accelerator.reduce(count, reduction="sum"))
    if unreadable:
        accelerator.log({"unreadable_images": unreadable}, step=step)
    metrics, generator_dir = _evaluate_and_export(run, step, config.evaluation, config.hub.export_generator)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    hub_url = space_url = None
    if config.hub.push_to_hub and accelerator.is_main_process:
        hub_url, space_url = _publish_generator(run.ema.module, config.hub)
    return GANTrainingResult(
        output_dir=str(run.output_dir), steps=step, losses=run.losses, metrics=metrics, generator_dir=generator_dir,
        last_checkpoint=run.last_checkpoint, sample_grids=run.grids, wall_time_s=time.perf_counter() - started,
        hub_url=hub_url, is_main_process=accelerator.is_main_process, space_url=space_url,
        unreadable_images=unreadable,
    )


def train_gan(
    config: GANTrainingConfig | None = None,
    *,
    generator: Generator | None = None,
    discriminator: nn.Module | None = None,
    dataset: ImageSet | None = None,
    accelerator: Accelerator | None = None,
    **options: Any,
) -> GANTrainingResult:
    """Train a GAN; write samples, checkpoints, metrics and the final generator at ``output_dir``'s root.

    Args:
        config: the run's config; or, without one, its ``options`` by name (``GANTrainingConfig.from_options``).
        generator / discriminator: bring your own modules (the discriminator: see :func:`as_discriminator`);
            default: the architecture's (``config.model.architecture.build(...)``).
        dataset: bring your own :class:`ImageSet`; default: ``load_image_set(config.data.dataset, ...)``.
        accelerator: an existing Accelerator (else one is created with ``bf16`` / ``fp16``).

    The output folder is guarded and locked, Ctrl-C / SIGTERM say where the last checkpoint is, and with
    ``push_to_hub`` (and ``hub_model_id``) the main process publishes the exported generator at the end: the run
    layer's duties (:mod:`hubtune.runs`).

    Raises:
        NonFiniteLossError: a loss became NaN/inf; the checkpoints already written are kept untouched.
        CheckpointError: ``resume_from_checkpoint`` points at a missing, incomplete or mismatching checkpoint.
        DatasetTooSmallError: fewer images than one step's batch.
        HubPushError: the push failed (the local output folder is complete).
        OutputDirError: another run is writing into ``output_dir`` (its lock file names it), or it holds another
            run's results.
    """
    if config is None:
        config = GANTrainingConfig.from_options(**options)
    elif options:
        raise ConfigError(f"train_gan takes a config or options by name, not both (got {', '.join(sorted(options))}); "
                          "build the config with GANTrainingConfig.from_options(...)")
    if config.evaluation.eval_num_samples:  # before anything is written, not after the whole run
        check_feature_extractor_name(config.evaluation.eval_feature_extractor)
    is_main = accelerator.is_main_process if accelerator is not None else PartialState().is_main_process
    with guarded_output_dir(config.output_dir, "gan", resume=config.resume_from_checkpoint,
                            overwrite=config.overwrite_output_dir, run_files=_RUN_FILES, main_process=is_main):
        started = time.perf_counter()
        run = prepare_run(config, generator, discriminator, dataset, accelerator)
        with resumable_on_interrupt(config.output_dir):  # Ctrl-C / SIGTERM name the last complete checkpoint
            step = _train_steps(run, config.progress_bar)
        return _finish(run, step, config, started)


def format_summary(result: GANTrainingResult) -> str:
    """The run summary ``hubtune gan`` prints (main process only)."""
    lines = [f"trained {result.steps} steps in {result.wall_time_s:.1f} s; output folder: {result.output_dir}"]
    if result.unreadable_images:
        lines.append(f"skipped {result.unreadable_images} unreadable image(s) (logs.jsonl records it; --strict_data "
                     "stops at the first instead)")
    if result.metrics is not None:
        lines.append(json.dumps(result.metrics, indent=2))
    if result.generator_dir:
        lines.append(f"generator: Generator.from_pretrained({result.generator_dir!r})")
    if result.hub_url:
        lines.append(f"pushed the generator: {result.hub_url}")
    if result.space_url:
        lines.append(f"its demo Space: {result.space_url}")
    return "\n".join(lines)


def _stop_on_non_finite(run: GANRun, which: str, step: int, value: Tensor) -> None:
    run.accelerator.end_training()
    last = run.last_checkpoint
    kept = f"the last good checkpoint is {last}" if last else "no checkpoint had been written yet"
    raise NonFiniteLossError(
        f"step {step}: the {which} loss is {float(value.detach().float()):.4g}; training stopped before the update, "
        f"and nothing already in {run.output_dir} was overwritten ({kept}). Lower the learning rates, add R1 "
        "(--r1_gamma), or use bf16 rather than fp16; resume with --resume_from_checkpoint from that checkpoint."
    )


# ----------------------------------------------------------------------------------------------- checkpoints


def save_checkpoint(run: GANRun, step: int) -> Path:
    """Write ``checkpoint-<step>/``: every process its random state (and its generator regularisers' state, e.g. the
    path-length running mean, into ``process_state_<rank>.json``), the main process the weights, optimisers and
    ``trainer_state.json`` (with the adaptive augmentation probability's state, the same on every process), into a
    staging folder that the run layer makes the checkpoint, with its SHA256SUMS, once complete
    (:func:`hubtune.runs.checkpoints.publish_checkpoint`; old ones pruned to ``keep_checkpoints``)."""
    accelerator = run.accelerator
    final = ckpt.checkpoint_dir(run.output_dir, step)
    partial = final.with_name(f".{final.name}.partial")
    if accelerator.is_main_process:
        staging_folder(final)
    accelerator.wait_for_everyone()
    ckpt.save_rng_state(partial / f"rng_state_{accelerator.process_index}")
    process_state = {k: v for r in run.regularisers for k, v in r.state_dict().items()}
    if run.stream_loader is not None:
        process_state["stream"] = run.stream_progress.state_dict()
    if process_state:
        ckpt.write_process_state(partial, accelerator.process_index, process_state)
    if accelerator.is_main_process:
        ckpt.save_module(accelerator.unwrap_model(run.G), partial / "generator.safetensors")
        ckpt.save_module(accelerator.unwrap_model(run.D), partial / "discriminator.safetensors")
        ckpt.save_module(run.ema.module, partial / "ema.safetensors")
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
        publish_checkpoint(partial, final, keep=run.schedule.keep_checkpoints)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(run: GANRun, folder: str | Path, state: dict[str, Any]) -> None:
    """Restore weights, optimisers, this process's random state and the loss scaler from a checkpoint folder."""
    folder, accelerator = Path(folder), run.accelerator
    ckpt.load_module(accelerator.unwrap_model(run.G), folder / "generator.safetensors")
    ckpt.load_module(accelerator.unwrap_model(run.D), folder / "discriminator.safetensors")
    ckpt.load_module(run.ema.module, folder / "ema.safetensors")
    ckpt.load_optimizer(run.opt_g, folder / "optimizer_g")
    ckpt.load_optimizer(run.opt_d, folder / "optimizer_d")
    ckpt.load_rng_state(folder / f"rng_state_{accelerator.process_index}")
    if accelerator.scaler is not None and state.get("scaler"):
        accelerator.scaler.load_state_dict(state["scaler"])
