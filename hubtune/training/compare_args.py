"""``hubtune compare``'s arguments (light: parsing them imports no model, data or Trainer code).

See :mod:`hubtune.training.compare` for the job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import HfArgumentParser

from hubtune.arguments import HelpFormatter, check_file_values, given_options, parse_command_line
from hubtune.errors import ConfigError, MethodError
from hubtune.methods import get_method
from hubtune.training.finetune_args import (
    DataArguments,
    FinetuneTrainingArguments,
    ModelArguments,
    method_arguments_class,
)

__all__ = ["CompareArguments", "DEFAULT_OUTPUT_DIR", "compare_parser", "parse_compare_args", "parse_method_label"]

DEFAULT_OUTPUT_DIR = "hubtune-compare"


@dataclass
class CompareArguments:
    """Which methods to compare, over how many seeds, on how many labelled images per class."""

    methods: list[str] = field(default_factory=lambda: ["ce", "core-tuning", "adaptivemix"], metadata={
        "help": "methods to compare, the first one is the baseline; NAME or NAME:knob=value,knob=value (e.g. "
        "core-tuning:eta=0.03) to compare settings of one method"})
    seeds: int = field(default=5, metadata={"help": "number of seeds: --seed, --seed + 1, ..."})
    train_samples_per_class: int | None = field(default=None, metadata={
        "help": "labelled training images per class, drawn with each seed (default: the whole training split)"})
    method_recipes: bool = field(default=False, metadata={
        "help": "train each method with its own training recipe instead of the first method's for all"})

    def __post_init__(self) -> None:
        if not self.methods:
            raise ConfigError("--methods needs at least one method, e.g. --methods ce core-tuning.")
        if not isinstance(self.seeds, int) or self.seeds < 1:
            raise ConfigError(f"--seeds must be a positive integer, not {self.seeds!r}.")
        samples = self.train_samples_per_class
        if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int) or samples < 1):
            raise ConfigError(f"--train_samples_per_class must be a positive integer (labelled images per class), not "
                              f"{samples!r}; leave it out to train on the whole training split.")
        labels = [m.strip() for m in self.methods]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"--methods names a method twice ({' '.join(labels)}); give each method once.")
        for label in labels:
            parse_method_label(label)


def parse_method_label(label: str) -> tuple[str, dict[str, Any]]:
    """``"core-tuning:eta=0.1,temperature=0.1"`` -> ``("core-tuning", {"eta": 0.1, "temperature": 0.1})``;
    ``recipe=NAME`` trains the entry with that registered method's recipe (``"ce:recipe=bss"``: cross-entropy as
    tllib trains its baselines)."""
    import yaml

    name, _, spec = label.partition(":")
    method = get_method(name.strip())
    knobs: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if eq and key == "recipe":
            knobs["recipe"] = get_method(value.strip()).name
            continue
        if not eq or key not in method.config_class.knob_names():
            raise MethodError(
                f"In --methods {label}: {item!r} is not knob=value for a knob of {method.name} (its knobs: "
                f"{', '.join(method.config_class.knob_names()) or 'none'}; or recipe=METHOD)."
            )
        try:
            knobs[key] = yaml.safe_load(value.strip())
        except yaml.YAMLError:
            knobs[key] = value.strip()  # not YAML: refused below as the wrong type, naming the knob
    # typed as `hubtune finetune` types a config file's knobs: numbers from strings, nan / inf refused, naming the knob
    values = check_file_values([method.config_class], {k: v for k, v in knobs.items() if k != "recipe"},
                               f"--methods {label}", finite=True)
    return method.name, {**knobs, **values}


# ------------------------------------------------------------------------------------------ parsing


def compare_parser() -> HfArgumentParser:
    return HfArgumentParser(
        [ModelArguments, DataArguments, method_arguments_class(with_method=False), CompareArguments,
         FinetuneTrainingArguments],
        prog="hubtune compare",
        formatter_class=HelpFormatter,
        description="Compare training methods on your data over several seeds, paired by seed (every finetune "
        "option applies; a knob applies to the methods that have it). Writes compare.md, compare.json, "
        "compare_differences.png and compare.jsonl (one line per finished run) to --output_dir.",
    )


def parse_compare_args(source: Sequence[str] | str | Path | None = None) -> tuple:
    """(model, data, knobs, compare, training) arguments from command-line strings or a YAML / JSON file."""
    parser = compare_parser()
    argv = [] if source is None else [str(source)] if isinstance(source, (str, Path)) else list(source)
    given = given_options(parser, argv)
    parsed = parse_command_line(parser, argv)
    training = parsed[-1]
    if "output_dir" not in given:
        training.output_dir = DEFAULT_OUTPUT_DIR
    training.given_options = frozenset(given)
    return parsed
