"""The arguments of ``hubtune finetune`` and their parser, apart from the job (:mod:`hubtune.training.finetune`),
so that ``hubtune finetune --help`` and argument errors need only torch and ``transformers.TrainingArguments``
(not timm, datasets, the Trainer or the model classes).
"""

from __future__ import annotations

import dataclasses
import os
import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import HfArgumentParser, TrainingArguments
from transformers.trainer_utils import IntervalStrategy, SaveStrategy, SchedulerType

from hubtune.arguments import (
    RawDescriptionHelpFormatter,
    check_file_values,
    check_number,
    given_options,
    option_names,
    optional_flag,
    parse_command_line,
    registry_fields,
)
from hubtune.backbones import names_weights
from hubtune.errors import ConfigError, MethodError
from hubtune.hub.push import validate_repo_id
from hubtune.hub.space import space_id_for
from hubtune.methods import MethodConfig, available_methods, get_method
from hubtune.trackers import check_trackers_installed
from hubtune.training.finetune_help import DESCRIPTION, USAGE
from hubtune.training.param_groups import parse_lr_multipliers

__all__ = [
    "ModelArguments",
    "DataArguments",
    "FinetuneTrainingArguments",
    "method_arguments_class",
    "finetune_parser",
    "parse_finetune_args",
]

@dataclass
class ModelArguments:
    """Which backbone to fine-tune, and how to save it."""

    _argument_group_name = "model"

    model: str = field(default="resnet18", metadata={
        "help": "timm name, hf-hub:ORG/NAME or local-dir:PATH (timm weights), or a transformers id / folder"})
    pretrained: bool | None = field(default=None, metadata={
        "help": "load the backbone's pretrained weights; default: yes when --model names weights (hf-hub:, "
        "local-dir:, a transformers id or folder), no for a bare timm architecture name such as resnet18",
        "nargs": "?", "const": True})
    image_size: int | None = field(default=32, metadata={"help": "input size (default 32); none = the backbone's own"})
    export_format: str = field(default="auto", metadata={
        "help": "layout of the final model: auto = the backbone library's own (loads in plain timm / transformers), "
                "hubtune (resumable, keeps training-only heads), timm, transformers or a registered layout"})

    def __post_init__(self) -> None:
        if self.pretrained is None:
            self.pretrained = names_weights(str(self.model))
        # the registered layouts (plug-ins too); imported here so that `hubtune finetune --help` stays light
        importlib.import_module("hubtune.modeling").check_export_format(self.export_format)
        if self.image_size is not None and self.image_size < 8:
            raise ConfigError(f"image_size={self.image_size} is too small for any backbone; use 8 px or more.")


@dataclass
class DataArguments:
    """Which images to train and evaluate on."""

    _argument_group_name = "data"

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


HUB_SPACE_NEEDS = "--hub_space needs --push_to_hub --hub_model_id ORG/NAME (the Space shows that model)."


@dataclass
class FinetuneTrainingArguments(TrainingArguments):
    """``transformers.TrainingArguments`` with hubtune's defaults (every other option as in transformers).

    Differences from transformers' defaults: output_dir ``hubtune-output``, 5 epochs, batch 64, learning rate
    1e-3 with a cosine schedule, weight decay 1e-4, AdamW (``adamw_torch``), evaluation and a checkpoint every
    epoch (the last one kept), logging every 10 steps, seed 0, ``remove_unused_columns=False`` (the image
    pipeline reads the ``image`` column on the fly), no trackers. ``--optim sgd`` defaults to Nesterov momentum
    0.9 (Core-tuning's recipe) unless ``--optim_args`` says otherwise. ``overwrite_output_dir`` allows writing
    into a folder that holds another run's results.

    These are hubtune's *general* defaults: :func:`run_finetune` replaces those you did not set with the training
    recipe of the chosen method (``TrainingMethod.recipe``; every built-in method has one: SGD with Nesterov
    momentum, learning rate 0.01, cosine, no gradient clipping), and records each value's source.
    """

    _argument_group_name = "training: transformers.TrainingArguments (hubtune's defaults)"

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
    hub_space: str | None = field(default=None, metadata={
        "help": "with --push_to_hub: also publish a Gradio Space NAME (in the model's namespace) or ORG/NAME "
                "running `hubtune demo` on the model; the card links to it"})
    lr_multipliers: str | None = field(default=None, metadata={
        "help": "learning-rate multipliers per model part, PART=X,...: e.g. backbone=0.1 trains the pre-trained "
                "backbone at 0.1x --learning_rate (tllib's --finetune); parts: backbone, classifier and the method's "
                "heads (projector, source_classifier); the method's recipe sets it where its reference does"})
    filter_bias_and_bn: bool = field(default=True, metadata={
        "help": "leave biases and normalisation parameters out of weight decay (timm's filter_bias_and_bn); false "
                "decays every parameter, as the tllib and Core-tuning scripts do"})
    dataloader_num_workers: int = field(default=-1, metadata={
        "help": "data-loading processes; -1 (default) = min(8, CPU cores) when CUDA is present, else 0"})
    # The option names the user set (flags, config-file or dict keys), recorded by parse_finetune_args so that the
    # method's training recipe fills only the others; None when the arguments were built in Python.
    given_options: frozenset[str] | None = field(default=None, init=False, repr=False, compare=False)

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
        self._check_numbers()
        parse_lr_multipliers(self.lr_multipliers)  # a malformed entry fails now, naming it
        if self.push_to_hub and self.hub_model_id is not None:
            validate_repo_id(self.hub_model_id)
        if self.hub_space is not None:  # (whether push_to_hub is on is checked when training starts)
            if not self.hub_model_id:
                raise ConfigError(HUB_SPACE_NEEDS)
            space_id_for(self.hub_space, self.hub_model_id)
        super().__post_init__()
        check_trackers_installed(self.report_to, "--report_to")  # before data or model load, not at Trainer start

    def _check_numbers(self) -> None:
        """The numeric options, each named, before the optimizer or the Trainer meets them."""
        check_number("max_steps", self.max_steps, minimum=1, integer=True, allow=(-1,))
        check_number("num_train_epochs", self.num_train_epochs, minimum=0)
        for name in ("learning_rate", "weight_decay", "adam_epsilon", "max_grad_norm", "warmup_steps"):
            check_number(name, getattr(self, name), minimum=0)
        for name in ("adam_beta1", "adam_beta2"):
            check_number(name, getattr(self, name), minimum=0, below=1)
        check_number("label_smoothing_factor", self.label_smoothing_factor, minimum=0, below=1)
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
            check_number(name, getattr(self, name), minimum=1, integer=True)
        check_number("seed", self.seed, minimum=0, maximum=2**32 - 1, integer=True)


# ------------------------------------------------------------------------------------------ method arguments


def _knob_fields() -> dict[str, tuple[Any, dataclasses.Field, list[str]]]:
    """Every knob of every registered method: name -> (type, first field, methods that have it)."""
    return registry_fields(((name, get_method(name).config_class) for name in available_methods()), skip=("preset",))


def method_arguments_class(with_method: bool = True) -> type:
    """A dataclass with ``method``, ``preset`` and one optional field per knob of every registered method.

    Built from the registry when called, so a method registered at run time gets its flags. A knob left unset
    takes the method's default; a knob of another method is an error (see :meth:`to_method_config`).
    """
    fields_: list[tuple] = [
        ("method", str, field(default="core-tuning", metadata={
            "help": f"training method: {', '.join(available_methods())}"})),
    ] if with_method else []
    fields_ += [
        ("preset", str, field(default="paper", metadata={
            "help": "the method's preset: paper (as published) or reference (the public script's semantics)"})),
        ("recipe", str | None, field(default=None, metadata={
            "help": "train with the training recipe of this registered method instead of the method's own, e.g. "
                    "--method ce --recipe bss: cross-entropy the way tllib trains its baselines (backbone 0.1x)"})),
    ]
    for knob, (kind, _, owners) in _knob_fields().items():
        fields_.append((knob, *optional_flag(kind, f"knob of {', '.join(owners)}")))

    def given_knobs(self) -> dict[str, Any]:
        """The knobs set (not None); MethodError for a knob that belongs to another method."""
        own = set(get_method(self.method).config_class.knob_names())
        given = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                 if f.name not in ("method", "preset", "recipe") and getattr(self, f.name) is not None}
        foreign = sorted(set(given) - own)
        if foreign:
            raise MethodError(
                f"--{foreign[0]} does not apply to --method {self.method} (its knobs: "
                f"{', '.join(sorted(own)) or 'none'}); remove it or choose the method it belongs to."
            )
        return given

    def to_method_config(self, defaults: dict[str, Any] | None = None) -> MethodConfig:
        """The chosen method's validated config: the knobs set over ``defaults`` (e.g. the recipe's knobs) over the
        method's own defaults; MethodError for a knob that belongs to another method."""
        values = {**(defaults or {}), **given_knobs(self)}
        return get_method(self.method).config_class.from_dict({"preset": self.preset, **values}, self.method)

    def post_init(self) -> None:
        if with_method:
            get_method(self.method)  # an unknown method fails here, naming the valid ones
        if self.recipe is not None:
            get_method(self.recipe)
        for f in dataclasses.fields(self):  # --alpha nan / inf parse as floats: refused here, naming the flag
            if isinstance(getattr(self, f.name), float):
                check_number(f.name, getattr(self, f.name))

    return dataclasses.make_dataclass(
        "MethodArguments" if with_method else "MethodKnobArguments", fields_,
        namespace={"given_knobs": given_knobs, "to_method_config": to_method_config, "__post_init__": post_init,
                   "_argument_group_name": "method (each knob belongs to the methods named)"},
    )


# ------------------------------------------------------------------------------------------ parsing


def finetune_parser() -> HfArgumentParser:
    """The ``hubtune finetune`` parser over the four argument dataclasses, in groups: model, data, method, then
    transformers' TrainingArguments; a short usage, the common options and examples first."""
    return HfArgumentParser(
        [ModelArguments, DataArguments, method_arguments_class(), FinetuneTrainingArguments],
        prog="hubtune finetune",
        usage=USAGE,
        description=DESCRIPTION,  # the short --help (hubtune.training.finetune_help), then every option in groups
        formatter_class=RawDescriptionHelpFormatter,
    )


def parse_finetune_args(source: Mapping[str, Any] | Sequence[str] | str | Path | None = None) -> tuple:
    """(model, data, method, training) arguments from a dict, command-line strings or a YAML / JSON file path."""
    parser = finetune_parser()
    if source is None:
        argv, given = [], set()
    elif isinstance(source, (str, Path)):
        argv = [str(source)]
        given = given_options(parser, argv)
    elif isinstance(source, Mapping):
        unknown = sorted(set(source) - option_names(parser))
        if unknown:
            raise ConfigError(f"Unknown finetune option(s) {', '.join(unknown)}; see `hubtune finetune --help`.")
        parser.set_defaults(**check_file_values(parser.dataclass_types, source, "finetune options"))
        argv, given = [], set(source)
    else:
        argv = list(source)
        given = given_options(parser, argv)
    parsed = parse_command_line(parser, argv)
    parsed[-1].given_options = frozenset(given)
    return parsed
