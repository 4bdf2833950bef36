"""A method's training recipe applied to the Trainer's arguments, and where each effective value came from.

Precedence, highest first: a value the user gave (a flag or a config-file key, whatever its value), the training
recipe of the method (``TrainingMethod.recipe``), hubtune's general default (``FinetuneTrainingArguments``). The
result records each recipe-controlled setting with its source, for the printed summary, ``hubtune_run.json`` and
the model card. Nothing here names a method: everything comes from the registry.

In Python, with plain ``transformers.TrainingArguments``, nothing is applied; :func:`recipe_conflicts` lets
``HubtuneTrainer`` warn when an argument left at its transformers default contradicts the recipe (the Trainer's
``max_grad_norm=1.0`` under Core-tuning's unclipped SGD, for example).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from transformers import TrainingArguments

from hubtune.errors import MethodError
from hubtune.methods import TrainingMethod
from hubtune.training.param_groups import OPTIMIZER_OPTIONS

__all__ = [
    "SOURCE_GIVEN",
    "SOURCE_RECIPE",
    "SOURCE_DEFAULT",
    "Setting",
    "TRACKED_SETTINGS",
    "split_recipe",
    "resolve_training_settings",
    "resolve_knobs",
    "apply_settings",
    "recipe_conflicts",
    "settings_to_json",
    "describe_settings",
]

SOURCE_GIVEN = "given"
SOURCE_RECIPE = "recipe"
SOURCE_DEFAULT = "default"

# What a recipe may set besides knobs: TrainingArguments and hubtune's optimizer options (lr_multipliers per model
# part, filter_bias_and_bn; FinetuneTrainingArguments has them, plain TrainingArguments do not).
_TRAINING_FIELDS = {f.name for f in dataclasses.fields(TrainingArguments) if f.init} | set(OPTIMIZER_OPTIONS)


def _value(args: Any, name: str) -> Any:
    """``args.name``, or hubtune's default of an optimizer option that plain TrainingArguments lack."""
    return getattr(args, name, OPTIMIZER_OPTIONS.get(name))


@dataclass(frozen=True)
class Setting:
    """An effective value and where it came from: ``"given"``, ``"recipe"`` (with the method whose recipe it is)
    or ``"default"`` (hubtune's general default)."""

    value: Any
    source: str
    recipe_of: str | None = None

    def describe(self) -> str:
        return f"recipe of {self.recipe_of}" if self.source == SOURCE_RECIPE else self.source


def plain(value: Any) -> Any:
    """An enum (OptimizerNames, SchedulerType) as its string value; anything else as it is."""
    return getattr(value, "value", value)


def split_recipe(method: type[TrainingMethod] | TrainingMethod) -> tuple[dict[str, Any], dict[str, Any]]:
    """(training-argument entries, knob entries) of a method's recipe; MethodError for an entry that is neither."""
    knobs = set(method.config_class.knob_names())
    training, knob_values = {}, {}
    for key, value in dict(method.recipe).items():
        if key in knobs:
            knob_values[key] = value
        elif key in _TRAINING_FIELDS:
            training[key] = value
        else:
            raise MethodError(
                f"The recipe of method {method.name!r} sets {key!r}, which is neither a TrainingArguments option nor "
                f"one of its knobs ({', '.join(sorted(knobs)) or 'none'})."
            )
    return training, knob_values


def _default_of(args: Any, name: str) -> Any:
    for f in dataclasses.fields(type(args)):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                return f.default_factory()  # type: ignore[misc]
    return OPTIMIZER_OPTIONS.get(name)


def _same(a: Any, b: Any) -> bool:
    a, b = plain(a), plain(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


# Settings recorded for every run (with their source) besides those a recipe sets.
TRACKED_SETTINGS = (
    "optim", "optim_args", "learning_rate", "lr_multipliers", "lr_scheduler_type", "weight_decay", "filter_bias_and_bn",
    "warmup_steps", "max_grad_norm", "num_train_epochs", "max_steps", "per_device_train_batch_size",
    "gradient_accumulation_steps", "seed", "bf16",
)
# A recipe's value of the key belongs to the recipe's value of the other: the learning rate and optimiser arguments
# of SGD mean nothing for AdamW, so they apply only when the optimiser is the recipe's too.
_BELONGS_TO = {"optim_args": "optim", "learning_rate": "optim"}


def resolve_training_settings(
    method: type[TrainingMethod] | TrainingMethod, args: Any, given: Collection[str] | None, use_recipe: bool = True
) -> dict[str, Setting]:
    """The effective value and source of every training argument the recipe of ``method`` sets, and of the other
    :data:`TRACKED_SETTINGS`.

    ``given`` holds the option names the user set; None means unknown (the arguments were built in Python), and
    then a value that differs from the class's default counts as given. A recipe's learning rate and optimiser
    arguments apply only with the recipe's optimiser. ``use_recipe=False`` records the sources without the recipe.
    """
    training, _ = split_recipe(method)
    if not use_recipe:
        training = {}

    def was_given(name: str) -> bool:
        if given is not None:
            return name in given
        return not _same(_value(args, name), _default_of(args, name))

    settings: dict[str, Setting] = {}
    for name in [*training, *(n for n in TRACKED_SETTINGS if n not in training)]:
        current = plain(_value(args, name))
        owner = _BELONGS_TO.get(name)
        owner_differs = owner in training and was_given(owner) and not _same(_value(args, owner), training[owner])
        if was_given(name):
            settings[name] = Setting(current, SOURCE_GIVEN)
        elif name in training and not owner_differs:
            settings[name] = Setting(training[name], SOURCE_RECIPE, method.name)
        else:
            settings[name] = Setting(current, SOURCE_DEFAULT)
    return settings


def resolve_knobs(method: type[TrainingMethod], given: Mapping[str, Any],
                  use_recipe: bool = True) -> tuple[dict[str, Any], dict[str, Setting]]:
    """(knob values to build the method's config from: the recipe's under the given ones, the source of every knob
    of the method: given, the recipe, or the method's default)."""
    _, recipe_knobs = split_recipe(method)
    if not use_recipe:
        recipe_knobs = {}
    values = {**recipe_knobs, **dict(given)}
    defaults = method.config_class()
    sources = {}
    for name in method.config_class.knob_names():
        if name in given:
            sources[name] = Setting(given[name], SOURCE_GIVEN)
        elif name in recipe_knobs:
            sources[name] = Setting(recipe_knobs[name], SOURCE_RECIPE, method.name)
        else:
            sources[name] = Setting(getattr(defaults, name), SOURCE_DEFAULT)
    return values, sources


def apply_settings(args: Any, settings: Mapping[str, Setting]) -> Any:
    """``args`` with the recipe's values put in (a new dataclass, its ``__post_init__`` run again)."""
    changes = {name: s.value for name, s in settings.items() if s.source == SOURCE_RECIPE
               and not _same(_value(args, name), s.value)}
    return dataclasses.replace(args, **changes) if changes else args


def recipe_conflicts(method: TrainingMethod, args: TrainingArguments) -> dict[str, tuple[Any, Any]]:
    """Arguments still at transformers' default whose value contradicts the method's recipe: name -> (value now,
    recipe value)."""
    training, _ = split_recipe(method)
    reference = {f.name: f.default for f in dataclasses.fields(TrainingArguments) if f.init} | OPTIMIZER_OPTIONS
    conflicts = {}
    for name, recipe_value in training.items():
        current = plain(_value(args, name))
        if _same(current, reference.get(name)) and not _same(current, recipe_value):
            conflicts[name] = (current, recipe_value)
    return conflicts


def settings_to_json(settings: Mapping[str, Setting]) -> dict[str, dict[str, Any]]:
    """``{name: {"value": ..., "source": "given" | "recipe of X" | "default"}}`` for hubtune_run.json."""
    return {name: {"value": s.value, "source": s.describe()} for name, s in settings.items()}


def describe_settings(settings: Mapping[str, Setting], source: str = SOURCE_RECIPE) -> str:
    """``name=value, ...`` of the settings that came from ``source``."""
    return ", ".join(f"{name}={s.value}" for name, s in settings.items() if s.source == source)
