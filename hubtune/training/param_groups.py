"""Learning rates per part of the model, and which parameters weight decay reaches: the two optimizer settings a
training recipe may set besides ``transformers.TrainingArguments``.

* ``lr_multipliers`` (``"backbone=0.1"``, ``"backbone=0.1,projector=0.5"``): the learning rate of each named part is the
  multiplier times ``learning_rate``. A part is a top-level module of the model: ``backbone`` (the pre-trained
  weights), ``classifier`` (the new head) and a method's heads (Core-tuning's ``projector``, Co-Tuning's
  ``source_classifier``). Parts not named train at 1x. This is tllib's ``--finetune`` (the pre-trained backbone at
  0.1x the new head's rate: thuml/Transfer-Learning-Library, tllib/modules/classifier.py:88-98, ``get_parameters``;
  Co-Tuning's source head at 0.1x too, tllib/regularization/co_tuning.py:139-149).
  A method's pre-trained parts (``TrainingMethod.pretrained_parts``, e.g. Co-Tuning's kept ImageNet head) take the
  backbone's multiplier unless they are named themselves.
* ``filter_bias_and_bn`` (timm's name and meaning: ``timm.optim.create_optimizer_v2(filter_bias_and_bn=True)``,
  timm 1.0.31 timm/optim/_optim_factory.py:1249 and :1339, which excludes ``param.ndim <= 1`` in
  timm/optim/_param_groups.py:53): True leaves biases and normalisation parameters (every parameter with fewer than
  two dimensions) out of weight decay; False decays every parameter, as ``torch.optim.SGD(params,
  weight_decay=...)`` does in the Core-tuning script (Vanint/Core-tuning Core-tuning.py:339) and in tllib's
  (examples/task_adaptation/image_classification/erm.py:66-67, bss.py:68, co_tuning.py:96, delta.py:76).

``HubtuneTrainer`` applies both through Trainer's own optimizer hooks (``get_decay_parameter_names`` and
``create_optimizer``); a hand-written loop builds its groups with :func:`parameter_groups`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from hubtune.errors import ConfigError

__all__ = ["OPTIMIZER_OPTIONS", "parse_lr_multipliers", "part_of", "check_parts", "decay_parameter_names",
           "parameter_groups", "split_by_part", "describe_parameter_groups", "summarize_parameter_groups"]

# hubtune's training options beside TrainingArguments that a recipe may set (with their defaults).
OPTIMIZER_OPTIONS: dict[str, Any] = {"lr_multipliers": None, "filter_bias_and_bn": True}


def parse_lr_multipliers(value: str | Mapping[str, float] | None) -> dict[str, float]:
    """``"backbone=0.1,source_classifier=0.1"`` (or a mapping) as ``{"backbone": 0.1, ...}``; ConfigError for a
    malformed entry or a multiplier that is not a finite number > 0."""
    if value is None or value == "":
        return {}
    if isinstance(value, Mapping):
        items = [(str(k), v) for k, v in value.items()]
    else:
        items = []
        for entry in filter(None, (part.strip() for part in str(value).split(","))):
            name, eq, number = entry.partition("=")
            if not eq or not name.strip():
                raise ConfigError(f"lr_multipliers entry {entry!r} is not PART=NUMBER; write e.g. "
                                  "--lr_multipliers backbone=0.1 (parts: backbone, classifier and the method's heads).")
            items.append((name.strip(), number.strip()))
    multipliers = {}
    for name, number in items:
        try:
            factor = float(number)
        except (TypeError, ValueError):
            factor = math.nan
        if not (math.isfinite(factor) and factor > 0):
            raise ConfigError(f"lr_multipliers: the multiplier of {name!r} must be a number > 0, not {number!r}.")
        multipliers[name] = factor
    return multipliers


def part_of(parameter_name: str) -> str:
    """The top-level module a parameter belongs to (a DDP wrapper's ``module.`` prefix ignored)."""
    return parameter_name.removeprefix("module.").split(".", 1)[0]


def _trainable(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


def _multiplier(part: str, multipliers: Mapping[str, float], pretrained_parts: Iterable[str]) -> float:
    if part in multipliers:
        return multipliers[part]
    if part in set(pretrained_parts) and "backbone" in multipliers:
        return multipliers["backbone"]
    return 1.0


def check_parts(model: nn.Module, multipliers: Mapping[str, float]) -> None:
    """ConfigError when ``multipliers`` names a part the model has no trainable parameter in."""
    parts = sorted({part_of(name) for name, _ in _trainable(model)})
    unknown = [name for name in multipliers if name not in parts]
    if unknown:
        raise ConfigError(f"lr_multipliers names {', '.join(unknown)}, but this model has no trainable part of that "
                          f"name; its parts are: {', '.join(parts)}.")


def decay_parameter_names(model: nn.Module, filter_bias_and_bn: bool = True,
                          excluded: Iterable[str] = ()) -> list[str]:
    """Names of the parameters weight decay applies to: those with two or more dimensions (every parameter when
    ``filter_bias_and_bn`` is False), less ``excluded`` (where a method's own penalty replaces weight decay)."""
    excluded = set(excluded)
    return [name for name, p in model.named_parameters()
            if (p.ndim > 1 or not filter_bias_and_bn) and name not in excluded]


def parameter_groups(model: nn.Module, learning_rate: float, weight_decay: float, decay_names: Iterable[str],
                     multipliers: Mapping[str, float] | None = None,
                     pretrained_parts: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Optimizer parameter groups: one per (part, decay or not) with its own ``lr``; for a hand-written loop."""
    decay_names = set(decay_names)
    multipliers = dict(multipliers or {})
    groups: dict[tuple[str, bool], dict[str, Any]] = {}
    for name, p in _trainable(model):
        part, decays = part_of(name), name in decay_names
        group = groups.setdefault((part, decays), {
            "params": [], "lr": learning_rate * _multiplier(part, multipliers, pretrained_parts),
            "weight_decay": weight_decay if decays else 0.0, "part": part})
        group["params"].append(p)
    return list(groups.values())


def split_by_part(optimizer: torch.optim.Optimizer, model: nn.Module, multipliers: Mapping[str, float],
                  pretrained_parts: Iterable[str] = ()) -> None:
    """Split each of ``optimizer``'s (still stateless) parameter groups by model part, each part's ``lr`` scaled by its
    multiplier; everything else about a group (weight decay, betas, momentum) is kept."""
    if any(optimizer.state.values()):
        raise RuntimeError("split_by_part needs an optimizer that has not stepped yet.")
    part_by_id = {id(p): part_of(name) for name, p in model.named_parameters()}
    new_groups = []
    for group in optimizer.param_groups:
        by_part: dict[str, list[nn.Parameter]] = {}
        for p in group["params"]:
            by_part.setdefault(part_by_id.get(id(p), ""), []).append(p)
        for part, params in by_part.items():
            factor = _multiplier(part, multipliers, pretrained_parts)
            new_groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": params,
                               "lr": group["lr"] * factor, "part": part})
    optimizer.param_groups.clear()
    for group in new_groups:
        optimizer.add_param_group(group)


def describe_parameter_groups(model: nn.Module, learning_rate: float, weight_decay: float,
                              decay_names: Iterable[str], multipliers: Mapping[str, float] | None = None,
                              pretrained_parts: Iterable[str] = ()) -> list[dict[str, Any]]:
    """One entry per trainable part: ``{"part", "learning_rate", "lr_multiplier", "parameters", "weight_decay",
    "decayed_parameters"}`` (plain values, for the printed recipe, ``hubtune_run.json`` and the card)."""
    decay_names = set(decay_names)
    multipliers = dict(multipliers or {})
    described: dict[str, dict[str, Any]] = {}
    for name, p in _trainable(model):
        part = part_of(name)
        factor = _multiplier(part, multipliers, pretrained_parts)
        entry = described.setdefault(part, {"part": part, "learning_rate": learning_rate * factor,
                                            "lr_multiplier": factor, "parameters": 0, "weight_decay": weight_decay,
                                            "decayed_parameters": 0})
        entry["parameters"] += p.numel()
        entry["decayed_parameters"] += p.numel() if name in decay_names else 0
    return list(described.values())


def summarize_parameter_groups(groups: Iterable[Mapping[str, Any]]) -> str:
    """``backbone lr 0.001 (0.1x), classifier lr 0.01`` for the printed recipe."""
    return ", ".join(f"{g['part']} lr {g['learning_rate']:g}" + (f" ({g['lr_multiplier']:g}x)" if g["lr_multiplier"] != 1
                                                                  else "") for g in groups)
