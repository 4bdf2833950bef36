"""Batch Spectral Shrinkage (BSS) as a registered method: the penalty and the card section.

The maths is :mod:`hubtune.losses.bss` (see docs/methods.md, section 6).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from hubtune.errors import ConfigError
from hubtune.losses.bss import BSSLoss
from hubtune.methods.base import TLLIB_FINE_TUNING_RECIPE, MethodConfig, MethodOutput, TrainingMethod, detach_components
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
        eta: weight of the penalty; 0.001 is tllib's ``--trade-off`` default (thuml/Transfer-Learning-Library,
            examples/task_adaptation/image_classification/bss.py:178).
        k: how many of the smallest singular values of the batch's feature matrix are shrunk; 1 is tllib's ``-k``
            default (bss.py:175; tllib/regularization/bss.py:40).
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
    # tllib's BSS script: its fine-tuning recipe unchanged (methods.base.TLLIB_FINE_TUNING_RECIPE; bss.py:68 builds
    # SGD(classifier.get_parameters(lr), momentum, weight_decay=5e-4, nesterov=True), bss.sh passes --finetune).
    recipe = dict(TLLIB_FINE_TUNING_RECIPE)
    recipe_source = ("tllib's BSS (thuml/Transfer-Learning-Library examples/task_adaptation/image_classification/bss.py, "
                     "--finetune): SGD Nesterov 0.9, lr 0.01, backbone 0.1x, weight decay 5e-4 on every parameter")

    def build_loss(self) -> BSSLoss:
        return BSSLoss(eta=self.config.eta, k=self.config.k)

    def forward_train(self, model: nn.Module, pixel_values: Tensor, labels: Tensor) -> MethodOutput:
        features = model.forward_features(pixel_values)
        logits = model.classifier(features)
        loss, ce, bss = model.loss_fn(features, logits, labels)
        return MethodOutput(loss=loss, logits=logits, features=features,
                            components=detach_components(ce_loss=ce, bss_loss=bss))
