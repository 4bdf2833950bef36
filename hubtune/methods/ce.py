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
    # hubtune's CE trains with Core-tuning's recipe (methods.base.SGD_FINE_TUNING_RECIPE), so that the two differ in
    # the loss only. The authors' script has no CE-only mode (Vanint/Core-tuning Core-tuning.py:421-429 always mixes
    # and adds the contrastive term); its README reports CE-tuning beside Core-tuning (README.md:51-54) without a
    # separate recipe. tllib's plain fine-tuning (erm.py --finetune) is `--recipe bss`: BSS's
    # recipe is tllib's fine-tuning recipe unchanged (methods.base.TLLIB_FINE_TUNING_RECIPE).
    recipe = dict(SGD_FINE_TUNING_RECIPE)
    recipe_source = ("Core-tuning's recipe, shared by hubtune's CE baseline (Vanint/Core-tuning Core-tuning.py:339-340: "
                     "SGD Nesterov 0.9, lr 0.01, weight decay 1e-4, cosine)")
