"""The main job: fine-tune a timm / transformers backbone on an image-classification dataset.

Arguments come as dataclasses, as in Hugging Face's example scripts: :class:`ModelArguments`,
:class:`DataArguments`, the method's arguments (:func:`method_arguments_class`, one flag per knob of every
registered method) and :class:`FinetuneTrainingArguments` (``transformers.TrainingArguments`` with hubtune's
defaults), so every ``TrainingArguments`` option is reachable. :func:`parse_finetune_args` builds them from
command-line strings, a YAML / JSON file or a dict; :func:`run_finetune` runs the job::

    from hubtune.training import parse_finetune_args, run_finetune

    metrics = run_finetune(*parse_finetune_args({"model": "resnet18", "method": "ce", "num_train_epochs": 2}))

The output folder holds the model in its backbone library's layout, ``README.md`` (model card),
``all_results.json`` (as the HF examples write it), ``hubtune_run.json`` and ``checkpoint-*`` folders for
``resume_from_checkpoint``.
"""

from __future__ import annotations

import dataclasses
import os
import time
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import HfArgumentParser, TrainingArguments, set_seed
from transformers.trainer_utils import IntervalStrategy, SaveStrategy, SchedulerType

from hubtune.arguments import parse_command_line
from hubtune.data import build_transforms, collate_image_batch, load_image_classification_data, with_transforms
from hubtune.errors import ConfigError, MethodError, OutputDirError
from hubtune.hub import push_folder, validate_repo_id, write_model_card, write_run_info
from hubtune.layouts import detect_layout
from hubtune.methods import MethodConfig, available_methods, get_method
from hubtune.modeling import EXPORT_FORMATS, HubtuneForImageClassification
from hubtune.devices import configure_backends
from hubtune.trackers import check_trackers_installed
from hubtune.training.callbacks import LossWeightWarmupCallback
from hubtune.training.trainer import HubtuneTrainer, compute_accuracy, last_checkpoint_in

__all__ = [
    "ModelArguments",
    "DataArguments",
    "FinetuneTrainingArguments",
    "method_arguments_class",
    "finetune_parser",
    "parse_finetune_args",
    "run_finetune",
    "next_steps",
]

# Files that show a folder holds another run's results (an empty or unrelated folder is fine to write into).
_RUN_FILES = ("config.json", "model.safetensors", "hubtune_run.json", "all_results.json", "trainer_state.json")


@dataclass
class ModelArguments:
    """Which backbone to fine-tune, and how to save it."""

    model: str = field(default="resnet18", metadata={
        "help": "timm name, hf-hub:ORG/NAME or local-dir:PATH (timm weights), or a transformers id / folder"})
    pretrained: bool = field(default=False, metadata={
        "help": "load pretrained backbone weights through timm / transformers (default: random init)"})
    image_size: int | None = field(default=32, metadata={"help": "input size (default 32); none = the backbone's own"})
    export_format: Literal["auto", "hubtune", "timm", "transformers"] = field(default="auto", metadata={
        "help": "layout of the final model: auto = the backbone library's own (loads in plain timm / transformers)"})

    def __post_init__(self) -> None:
        if self.export_format not in EXPORT_FORMATS:
            raise ConfigError(f"export_format must be one of {EXPORT_FORMATS}, not {self.export_format!r}.")
        if self.image_size is not None and self.image_size < 8:
            raise ConfigError(f"image_size={self.image_size} is too small for any backbone; use 8 px or more.")


@dataclass
class DataArguments:
    """Which images to train and evaluate on."""

    dataset: str = field(default="digits", metadata={
        "help": "'digits' (embedded), an image folder (one sub-folder per class), a save_to_disk folder or a Hub name"})
    image_column: str | None = field(default=None, metadata={"help": "image column (default: the datasets.Image one)"})
    label_column: str | None = field(default=None, metadata={"help": "label column (default: the ClassLabel one)"})
    eval_split: str | None = field(default=None, metadata={"help": "evaluation split (default: validation/test)"})
    eval_fraction: float = field(default=0.2, metadata={
        "help": "share of the training split held out for evaluation when there is no evaluation split"})
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    strict_data: bool = field(default=False, metadata={
        "help": "stop at the first unreadable image (naming it) instead of leaving unreadable images out"})


@dataclass
class FinetuneTrainingArguments(TrainingArguments):
    """``transformers.TrainingArguments`` with hubtune's defaults (every other option as in transformers).

    Differences from transformers' defaults: output_dir ``hubtune-output``, 5 epochs, batch 64, learning rate
    1e-3 with a cosine schedule, weight decay 1e-4, AdamW (``adamw_torch``), evaluation and a checkpoint every
    epoch (the last one kept), logging every 10 steps, seed 0, ``remove_unused_columns=False`` (the image
    pipeline reads the ``image`` column on the fly), no trackers. ``--optim sgd`` defaults to Nesterov momentum
    0.9 (Core-tuning's recipe) unless ``--optim_args`` says otherwise. ``overwrite_output_dir`` allows writing
    into a folder that holds another run's results.
    """

    output_dir: str | None = field(default="hubtune-output", metadata={"help": "where the model, card and checkpoints go"})
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "write into an output folder that already holds another run's model or checkpoints"})
    num_train_epochs: float = field(default=5.0, metadata={"help": "training epochs", "aliases": ["--epochs"]})
    per_device_train_batch_size: int = field(default=64, metadata={
        "help": "batch size per device", "aliases": ["--batch-size", "--batch_size"]})
    per_device_eval_batch_size: int = 64
    learning_rate: float = field(default=1e-3, metadata={"help": "peak learning rate", "aliases": ["--lr"]})
    weight_decay: float = 1e-4
    lr_scheduler_type: SchedulerType | str = "cosine"
    optim: str = field(default="adamw_torch", metadata={"help": "optimizer (transformers' OptimizerNames)"})
    eval_strategy: IntervalStrategy | str = "epoch"
    save_strategy: SaveStrategy | str = "epoch"
    save_total_limit: int | None = 1
    logging_steps: float = 10
    remove_unused_columns: bool = False
    report_to: None | str | list[str] = "none"
    seed: int = 0
    dataloader_num_workers: int = field(default=-1, metadata={
        "help": "data-loading processes; -1 (default) = min(8, CPU cores) when CUDA is present, else 0"})

    def __post_init__(self) -> None:
        if self.dataloader_num_workers == -1:
            self.dataloader_num_workers = min(8, os.cpu_count() or 1) if torch.cuda.is_available() else 0
        if not torch.cuda.is_available():
            self.dataloader_pin_memory = False  # pinned memory only helps copies to a GPU
        if str(getattr(self.optim, "value", self.optim)) == "sgd" and not self.optim_args:
            self.optim_args = "momentum=0.9,nesterov=True"
        if self.max_steps is None or self.max_steps <= 0:
            if not self.num_train_epochs > 0:
                raise ConfigError(f"num_train_epochs must be > 0 (got {self.num_train_epochs}), or set max_steps.")
        if self.per_device_train_batch_size < 1:
            raise ConfigError(f"per_device_train_batch_size must be at least 1, got {self.per_device_train_batch_size}.")
        if self.push_to_hub and self.hub_model_id is not None:
            validate_repo_id(self.hub_model_id)
        super().__post_init__()
        check_trackers_installed(self.report_to, "--report_to")  # before data or model load, not at Trainer start


# ------------------------------------------------------------------------------------------ method arguments


def _knob_fields() -> dict[str, tuple[Any, list[str]]]:
    """Every knob of every registered method: name -> (type, methods that have it)."""
    knobs: dict[str, tuple[Any, list[str]]] = {}
    for name in available_methods():
        config_class = get_method(name).config_class
        hints = typing.get_type_hints(config_class)
        for f in dataclasses.fields(config_class):
            if f.name == "preset":
                continue
            kind, owners = knobs.get(f.name, (hints[f.name], []))
            knobs[f.name] = (kind, [*owners, name])
    return knobs


def method_arguments_class() -> type:
    """A dataclass with ``method``, ``preset`` and one optional field per knob of every registered method.

    Built from the registry when called, so a method registered at run time gets its flags. A knob left unset
    takes the method's default; a knob of another method is an error (see :meth:`to_method_config`).
    """
    fields_: list[tuple] = [
        ("method", str, field(default="core-tuning", metadata={
            "help": f"training method: {', '.join(available_methods())}"})),
        ("preset", str, field(default="paper", metadata={
            "help": "the method's preset: paper (as published) or reference (the public script's semantics)"})),
    ]
    for knob, (kind, owners) in _knob_fields().items():
        annotation = kind if type(None) in typing.get_args(kind) else kind | None
        fields_.append((knob, annotation, field(default=None, metadata={"help": f"knob of {', '.join(owners)}"})))

    def to_method_config(self) -> MethodConfig:
        """The chosen method's validated config; MethodError for a knob that belongs to another method."""
        method = get_method(self.method)
        own = set(method.config_class.knob_names())
        given = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                 if f.name not in ("method", "preset") and getattr(self, f.name) is not None}
        foreign = sorted(set(given) - own)
        if foreign:
            raise MethodError(
                f"--{foreign[0]} does not apply to --method {self.method} (its knobs: "
                f"{', '.join(sorted(own)) or 'none'}); remove it or choose the method it belongs to."
            )
        return method.config_class.from_dict({"preset": self.preset, **given}, self.method)

    def post_init(self) -> None:
        get_method(self.method)  # an unknown method fails here, naming the valid ones

    return dataclasses.make_dataclass(
        "MethodArguments", fields_, namespace={"to_method_config": to_method_config, "__post_init__": post_init}
    )


# ------------------------------------------------------------------------------------------ parsing


def finetune_parser() -> HfArgumentParser:
    """The ``hubtune finetune`` parser over the four argument dataclasses."""
    return HfArgumentParser(
        [ModelArguments, DataArguments, method_arguments_class(), FinetuneTrainingArguments],
        prog="hubtune finetune",
        description="Fine-tune a timm / transformers backbone with a registered method (default: Core-tuning). "
        "With no arguments: Core-tuning of a randomly initialised resnet18 on scikit-learn's digits, offline.",
    )


def parse_finetune_args(source: Mapping[str, Any] | Sequence[str] | str | Path | None = None) -> tuple:
    """(model, data, method, training) arguments from a dict, command-line strings or a YAML / JSON file path."""
    parser = finetune_parser()
    if source is None:
        return parse_command_line(parser, [])
    if isinstance(source, (str, Path)):
        return parse_command_line(parser, [str(source)])
    if isinstance(source, Mapping):
        known = {a.dest for a in parser._actions}
        unknown = sorted(set(source) - known)
        if unknown:
            raise ConfigError(f"Unknown finetune option(s) {', '.join(unknown)}; see `hubtune finetune --help`.")
        parser.set_defaults(**source)
        return parse_command_line(parser, [])
    return parse_command_line(parser, list(source))


# ------------------------------------------------------------------------------------------ the job


def _check_output_dir(args: FinetuneTrainingArguments) -> str | bool | None:
    """What to resume from, after refusing to overwrite another run's results unless asked to."""
    resume = args.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() in ("true", "last", "latest"):
        resume = True
    elif isinstance(resume, str) and resume.lower() in ("false", "none", ""):
        resume = None
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"output_dir {str(out)!r} is a file, not a folder; choose another --output_dir.")
    holds_run = out.is_dir() and (any((out / name).exists() for name in _RUN_FILES) or last_checkpoint_in(out))
    if holds_run and resume is None and not args.overwrite_output_dir:
        raise OutputDirError(
            f"output_dir {str(out)!r} already holds another run's model or checkpoints; pass --overwrite_output_dir to "
            "replace them, --resume_from_checkpoint to continue that run, or choose another --output_dir."
        )
    return resume


def _avoid_a_last_batch_of_one(args: FinetuneTrainingArguments, num_train: int) -> None:
    """A last batch of one image breaks BatchNorm in training mode: drop it (and say so) when it would occur."""
    global_batch = args.per_device_train_batch_size * max(args.world_size, 1)
    if num_train % global_batch == 1 and not args.dataloader_drop_last:
        args.dataloader_drop_last = True
        print(f"Note: {num_train} training images leave a last batch of one ({num_train} = k x {global_batch} + 1); it "
              "is dropped each epoch (dataloader_drop_last=True), as BatchNorm cannot train on one image.")


def _trainer_callbacks(model: HubtuneForImageClassification) -> list:
    ratio = model.method.warmup_ratio()
    if ratio > 0:
        return [LossWeightWarmupCallback(model.method.weight_attribute, warmup_ratio=ratio)]
    return []


def run_finetune(
    model_args: ModelArguments,
    data_args: DataArguments,
    method_args: Any,
    training_args: FinetuneTrainingArguments,
) -> dict[str, float]:
    """Fine-tune, evaluate, save a Hub-ready folder (and push it when asked); returns the final metrics."""
    method_config = method_args.to_method_config()
    resume = _check_output_dir(training_args)
    set_seed(training_args.seed)
    configure_backends(training_args.tf32)
    started = time.perf_counter()
    data = load_image_classification_data(
        data_args.dataset, image_column=data_args.image_column, label_column=data_args.label_column,
        eval_split=data_args.eval_split, eval_fraction=data_args.eval_fraction, seed=training_args.seed,
        max_train_samples=data_args.max_train_samples, max_eval_samples=data_args.max_eval_samples,
        strict_data=data_args.strict_data,
    )
    model = HubtuneForImageClassification.from_backbone(
        model_args.model, id2label=data.id2label, pretrained=model_args.pretrained, method=method_args.method,
        method_config=method_config, image_size=model_args.image_size,
    )
    _avoid_a_last_batch_of_one(training_args, len(data.train))
    train_ds = with_transforms(data.train, build_transforms(model.preprocessing, train=True))
    eval_ds = with_transforms(data.eval, build_transforms(model.preprocessing, train=False))
    trainer = HubtuneTrainer(
        model=model, args=_trainer_args(training_args), train_dataset=train_ds, eval_dataset=eval_ds,
        data_collator=collate_image_batch, compute_metrics=compute_accuracy, callbacks=_trainer_callbacks(model),
        dataset_name=data.name, export_format=model_args.export_format,
    )
    if not model_args.pretrained and trainer.is_world_process_zero():
        print(f"Note: backbone {model_args.model!r} starts from random weights (pass --pretrained to load pretrained "
              "weights).")
    try:
        train_result = trainer.train(resume_from_checkpoint=resume)
    except KeyboardInterrupt:
        last = last_checkpoint_in(training_args.output_dir)
        where = (f"the last complete checkpoint is {last}; resume with --resume_from_checkpoint {last}" if last
                 else "no checkpoint had been written yet")
        raise KeyboardInterrupt(where) from None
    repo_id = training_args.hub_model_id if training_args.push_to_hub else None
    metrics = _save_results(trainer, train_result, len(train_ds), len(eval_ds), repo_id)
    out = Path(training_args.output_dir)
    if trainer.is_world_process_zero():
        print(f"{method_args.method} on {data.name} with {model_args.model}: "
              f"eval_accuracy={metrics.get('eval_accuracy', float('nan')):.4f} in {time.perf_counter() - started:.1f} s; "
              f"model, card and metrics in {out.resolve()}")
        if training_args.push_to_hub:
            url = push_folder(out, training_args.hub_model_id, token=training_args.hub_token,
                              private=bool(training_args.hub_private_repo), revision=training_args.hub_revision)
            print(f"Pushed to {url}")
        print(next_steps(out, repo_id))
    return metrics


def next_steps(folder: str | Path, repo_id: str | None = None) -> str:
    """One line: how to publish the output folder (unless it was pushed to ``repo_id``) and how to load it."""
    folder = Path(folder).resolve()
    layout = detect_layout(folder)
    repo = repo_id or "ORG/NAME"
    if layout == "timm":
        load = (f'timm.create_model("hf-hub:{repo}", pretrained=True) or AutoModelForImageClassification'
                f'.from_pretrained("{repo}"); locally timm.create_model("local-dir:{folder}", pretrained=True)')
    elif layout == "transformers":
        load = f'AutoModelForImageClassification.from_pretrained("{repo}"); locally from_pretrained("{folder}")'
    else:
        load = f'HubtuneForImageClassification.from_pretrained("{repo}"); locally from_pretrained("{folder}")'
    push = "" if repo_id else f"publish with `hubtune push {folder} ORG/NAME`, then "
    return f"Next: {push}load with {load}."


def _trainer_args(args: FinetuneTrainingArguments) -> FinetuneTrainingArguments:
    """The arguments the Trainer sees: the final folder is pushed once, with its card, after training (one
    commit, errors in words), unless a hub_strategy that pushes checkpoints asks the Trainer to push too."""
    if args.push_to_hub and args.hub_model_id is None:
        raise ConfigError("--push_to_hub needs --hub_model_id ORG/NAME (the Hub repository to publish to).")
    strategy = str(getattr(args.hub_strategy, "value", args.hub_strategy))
    if not args.push_to_hub or strategy in ("checkpoint", "all_checkpoints"):
        return args
    return dataclasses.replace(args, push_to_hub=False)


def _save_results(trainer: HubtuneTrainer, train_result, num_train: int, num_eval: int,
                  repo_id: str | None) -> dict[str, float]:
    metrics = dict(train_result.metrics)
    eval_metrics = trainer.evaluate()
    metrics.update(eval_metrics)
    metrics["eval_samples"] = num_eval
    metrics["train_samples"] = num_train
    trainer.save_model()
    trainer.log_metrics("train", train_result.metrics)
    trainer.log_metrics("eval", eval_metrics)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_metrics("eval", eval_metrics)
    trainer.save_metrics("all", metrics)
    trainer.save_state()
    if trainer.is_world_process_zero():
        out = trainer.args.output_dir
        run_info = trainer.run_info(metrics={k: v for k, v in metrics.items() if k.startswith("eval_")})
        write_run_info(out, run_info)
        write_model_card(out, run_info, repo_id=repo_id)
    return metrics
