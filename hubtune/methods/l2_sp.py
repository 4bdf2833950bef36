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
    TLLIB_FINE_TUNING_RECIPE,
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
            0.01: tllib's ``--trade-off-backbone`` default (examples/task_adaptation/image_classification/delta.py:326,
            run with ``--regularization-type l2_sp``) and the DELTA authors' ``--alpha`` default (lixingjian/DELTA,
            train.py:34, ``--reg_type l2_sp``).
        beta: weight of ``||w||^2 / 2`` over the new classifier's parameters. 0.01: tllib delta.py:328
            (``--trade-off-head``) and DELTA train.py:35 (``--beta``).
    """

    PRESETS: ClassVar[tuple[str, ...]] = ("paper",)
    alpha: float = 0.01
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
    # tllib's fine-tuning recipe (methods.base.TLLIB_FINE_TUNING_RECIPE: SGD Nesterov 0.9, lr 0.01, backbone at 0.1x)
    # with NO weight decay: the penalty replaces it (tllib delta.py:340, ``--wd`` default 0; DELTA train.py:268-270
    # builds SGD without weight decay for every regulariser but plain L2).
    recipe = {**TLLIB_FINE_TUNING_RECIPE, "weight_decay": 0.0}
    recipe_source = ("tllib's L2-SP (thuml/Transfer-Learning-Library examples/task_adaptation/image_classification/"
                     "delta.py --regularization-type l2_sp, --finetune): SGD Nesterov 0.9, lr 0.01, backbone 0.1x, "
                     "no weight decay, alpha 0.01, beta 0.01")

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
