"""Batch Spectral Shrinkage (BSS) as a registered method: the penalty and the card section.

The maths is :mod:`hubtune.losses.bss` (see docs/methods.md, section 6).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from hubtune.errors import ConfigError
from hubtune.losses.bss import BSSLoss
from hubtune.methods.base import SGD_FINE_TUNING_RECIPE, MethodConfig, MethodOutput, TrainingMethod, detach_components
from hubtune.methods.registry import register_method

__all__ = ["BSSConfig", "BSSMethod"]

CITATION = (
    "@inproceedings{chen2019catastrophic,\n"
    "  title     = {Catastrophic Forgetting Meets Negative Transfer: Batch Spectral Shrinkage for Safe Transfer Learning},\n"
    "  author    = {Chen, Xinyang and Wang, Sinan and Fu, Bo and Long, Mingsheng and Wang, Jianmin},\n"
    "  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},\n"
    "  year      = {2019}\n"
    "}"
)


@dataclass
class BSSConfig(MethodConfig):
    """BSS's knobs.

    Args:
        eta: weight of the penalty.
        k: how many of the smallest singular values of the batch's feature matrix are shrunk.
    """

    PRESETS: ClassVar[tuple[str, ...]] = ("paper",)
    eta: float = 0.001
    k: int = 1

    def validate(self) -> None:
        if not self.eta >= 0:
            raise ConfigError(f"eta (the spectral shrinkage weight) must be >= 0, got {self.eta}.")
        if isinstance(self.k, bool) or int(self.k) != self.k or int(self.k) < 1:
            raise ConfigError(f"k (how many singular values to shrink) must be a positive integer, got {self.k}.")


@register_method
class BSSMethod(TrainingMethod):
    """Cross-entropy plus a penalty on the smallest singular values of the batch's features."""

    name = "bss"
    config_class = BSSConfig
    title = "Batch Spectral Shrinkage (BSS)"
    description = (
        "Batch Spectral Shrinkage fine-tunes with cross-entropy plus a penalty on the k smallest squared singular "
        "values of each batch's feature matrix: the spectral components that carry little transferable knowledge "
        "and most of the negative transfer are shrunk. It needs no extra parameters and no copy of the model."
    )
    citation = CITATION
    tags = ("bss",)
    weight_attribute = "eta"
    # Chen et al. 2019, section 5 (as recalled): eta = 0.001, k = 1, added to ordinary fine-tuning (SGD with momentum
    # and weight decay); the rest is the shared fine-tuning recipe of hubtune's CE baseline.
    recipe = dict(SGD_FINE_TUNING_RECIPE)
    recipe_source = "BSS (Chen et al., NeurIPS 2019) on ordinary fine-tuning: hubtune's CE recipe"

    def build_loss(self) -> BSSLoss:
        return BSSLoss(eta=self.config.eta, k=self.config.k)

    def forward_train(self, model: nn.Module, pixel_values: Tensor, labels: Tensor) -> MethodOutput:
        features = model.forward_features(pixel_values)
        logits = model.classifier(features)
        loss, ce, bss = model.loss_fn(features, logits, labels)
        return MethodOutput(loss=loss, logits=logits, features=features,
                            components=detach_components(ce_loss=ce, bss_loss=bss))
