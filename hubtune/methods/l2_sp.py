"""L2-SP as a registered method: a frozen copy of the starting backbone, the penalty and the card section.

The maths is :mod:`hubtune.losses.l2_sp` (see docs/methods.md, section 5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from hubtune.errors import ConfigError
from hubtune.losses.l2_sp import L2SPLoss
from hubtune.methods.base import (
    SGD_FINE_TUNING_RECIPE,
    FrozenCopy,
    MethodConfig,
    MethodOutput,
    TrainingMethod,
    detach_components,
    parameter_names_under,
    warn_if_not_pretrained,
)
from hubtune.methods.registry import register_method

__all__ = ["L2SPConfig", "L2SPMethod"]

CITATION = (
    "@inproceedings{li2018explicit,\n"
    "  title     = {Explicit Inductive Bias for Transfer Learning with Convolutional Networks},\n"
    "  author    = {Li, Xuhong and Grandvalet, Yves and Davoine, Franck},\n"
    "  booktitle = {Proceedings of the 35th International Conference on Machine Learning (ICML)},\n"
    "  year      = {2018},\n"
    "  eprint    = {1802.01483},\n"
    "  archivePrefix = {arXiv}\n"
    "}"
)
# Parameters whose Trainer weight decay the penalty replaces: the whole backbone (alpha) and the new head (beta).
REGULARISED_PREFIXES = ("backbone.", "classifier.")


@dataclass
class L2SPConfig(MethodConfig):
    """L2-SP's knobs.

    Args:
        alpha: weight of ``||w - w0||^2 / 2`` over the pre-trained backbone's parameters (w0: their starting values).
        beta: weight of ``||w||^2 / 2`` over the new classifier's parameters.
    """

    PRESETS: ClassVar[tuple[str, ...]] = ("paper",)
    alpha: float = 0.1
    beta: float = 0.01

    def validate(self) -> None:
        if not self.alpha >= 0:
            raise ConfigError(f"alpha (the weight of the pull towards the starting weights) must be >= 0, got {self.alpha}.")
        if not self.beta >= 0:
            raise ConfigError(f"beta (the weight of the new head's L2 penalty) must be >= 0, got {self.beta}.")


@register_method
class L2SPMethod(TrainingMethod):
    """Cross-entropy plus an L2 pull towards the pre-trained weights (and plain L2 on the new head)."""

    name = "l2-sp"
    config_class = L2SPConfig
    title = "L2-SP"
    description = (
        "L2-SP fine-tunes the backbone and a new linear classifier with cross-entropy plus an L2 penalty that "
        "pulls the backbone's weights towards their pre-trained values (alpha/2 ||w - w0||^2) instead of towards "
        "zero, and a plain L2 penalty on the new classifier (beta/2 ||w||^2). It replaces weight decay: the "
        "trainer applied none to these weights. The copy of the starting weights is used for training only and "
        "is not part of the exported classifier."
    )
    citation = CITATION
    tags = ("l2-sp",)
    # Li et al. 2018, section 4.1 (as recalled; the paper's text was not at hand offline): SGD with momentum 0.9,
    # alpha = 0.1, beta = 0.01, and NO weight decay (the penalty replaces it). The learning rate (0.01), the cosine
    # schedule (the paper divides the rate by 10 once) and no clipping are the shared fine-tuning recipe of
    # hubtune's CE baseline, so that the comparison varies the regulariser only.
    recipe = {**SGD_FINE_TUNING_RECIPE, "weight_decay": 0.0}
    recipe_source = "L2-SP (Li et al., ICML 2018): SGD momentum 0.9, no weight decay; lr and schedule of hubtune's CE recipe"

    def setup(self, model: nn.Module) -> dict[str, nn.Module]:
        warn_if_not_pretrained(model, "L2-SP", "its starting weights")
        return {"start_backbone": FrozenCopy(model.backbone.model)}

    def no_weight_decay(self, model: nn.Module) -> set[str]:
        return parameter_names_under(model, REGULARISED_PREFIXES)

    def build_loss(self) -> L2SPLoss:
        return L2SPLoss(alpha=self.config.alpha, beta=self.config.beta)

    def forward_train(self, model: nn.Module, pixel_values: Tensor, labels: Tensor) -> MethodOutput:
        features = model.forward_features(pixel_values)
        logits = model.classifier(features)
        out = model.loss_fn(
            logits, labels,
            list(model.backbone.model.parameters()),
            list(model.start_backbone.module.parameters()),
            [p for p in model.classifier.parameters() if p.requires_grad],
        )
        components = detach_components(ce_loss=out.ce_loss, sp_loss=out.sp_loss, head_l2_loss=out.head_loss)
        return MethodOutput(loss=out.loss, logits=logits, features=features, components=components)
