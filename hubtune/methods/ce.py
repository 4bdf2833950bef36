"""Plain cross-entropy fine-tuning: hubtune's baseline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from hubtune.methods.base import SGD_FINE_TUNING_RECIPE, MethodConfig, TrainingMethod
from hubtune.methods.registry import register_method

__all__ = ["CrossEntropyConfig", "CrossEntropyMethod"]


@dataclass
class CrossEntropyConfig(MethodConfig):
    """No knobs: cross-entropy of the classifier's logits on the clean images."""

    PRESETS: ClassVar[tuple[str, ...]] = ("paper",)


@register_method
class CrossEntropyMethod(TrainingMethod):
    name = "ce"
    config_class = CrossEntropyConfig
    title = "cross-entropy fine-tuning"
    description = "Plain cross-entropy fine-tuning of the backbone and a linear classifier (hubtune's baseline)."
    recipe = dict(SGD_FINE_TUNING_RECIPE)
    recipe_source = "the CE-tuning baseline of the Core-tuning paper (Zhang et al., NeurIPS 2021)"
