"""DELTA as a registered method: a frozen copy of the starting backbone, the feature-map penalty and the card section.

The maths is :mod:`hubtune.losses.delta` (see docs/methods.md, section 7).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from hubtune.errors import ConfigError, MethodError
from hubtune.losses.delta import DeltaLoss, channels_first
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

__all__ = ["DeltaConfig", "DeltaMethod", "feature_map_and_pooled"]

CITATION = (
    "@inproceedings{li2019delta,\n"
    "  title     = {{DELTA}: {DE}ep Learning Transfer using Feature Map with Attention for Convolutional Networks},\n"
    "  author    = {Li, Xingjian and Xiong, Haoyi and Wang, Hanchao and Rao, Yuxuan and Liu, Liping and Chen, Zeyu and Huan, Jun},\n"
    "  booktitle = {International Conference on Learning Representations (ICLR)},\n"
    "  year      = {2019},\n"
    "  eprint    = {1901.09229},\n"
    "  archivePrefix = {arXiv}\n"
    "}"
)


@dataclass
class DeltaConfig(MethodConfig):
    """DELTA's knobs.

    Args:
        alpha: weight of the attention-weighted distance between the fine-tuned and the starting feature maps.
        beta: weight of ``||w||^2 / 2`` over the new classifier's parameters.
    """

    PRESETS: ClassVar[tuple[str, ...]] = ("paper",)
    alpha: float = 0.01
    beta: float = 0.01

    def validate(self) -> None:
        if not self.alpha >= 0:
            raise ConfigError(f"alpha (the feature-map distance weight) must be >= 0, got {self.alpha}.")
        if not self.beta >= 0:
            raise ConfigError(f"beta (the weight of the new head's L2 penalty) must be >= 0, got {self.beta}.")


def feature_map_and_pooled(model: nn.Module, library: str, pixel_values: Tensor) -> tuple[Tensor, Tensor]:
    """The last feature map (B, C, H, W) or token features (B, N, D), and the pooled features, in one pass of a
    timm model built with ``num_classes=0`` or a transformers ``*ForImageClassification`` built with
    ``num_labels=0`` (hubtune's backbones)."""
    if library == "timm":
        feature_map = model.forward_features(pixel_values)
        return feature_map, model.forward_head(feature_map)
    out = model(pixel_values=pixel_values, output_hidden_states=True)
    return out.hidden_states[-1], out.logits


@register_method
class DeltaMethod(TrainingMethod):
    """Cross-entropy plus an attention-weighted pull of the feature maps towards the starting model's."""

    name = "delta"
    config_class = DeltaConfig
    title = "DELTA"
    description = (
        "DELTA fine-tunes with cross-entropy plus a penalty that keeps the backbone's last feature map close to "
        "the one the starting (pre-trained) backbone computes on the same images. Each channel's distance is "
        "weighted by a supervised attention: how much the classification loss grows when the channel is removed, "
        "so discriminative channels are held and the others may change. The new classifier gets a plain L2 "
        "penalty. The frozen copy of the starting backbone is used for training only and is not part of the "
        "exported classifier."
    )
    citation = CITATION
    tags = ("delta",)
    # Li et al. 2019, section 4 (as recalled; the paper's text was not at hand offline): alpha = beta = 0.01, SGD with
    # momentum 0.9 and no weight decay besides beta's L2 on the new head. Learning rate (0.01), cosine schedule and
    # no clipping are the shared fine-tuning recipe of hubtune's CE baseline, so the regulariser is what differs.
    recipe = {**SGD_FINE_TUNING_RECIPE, "weight_decay": 0.0}
    recipe_source = "DELTA (Li et al., ICLR 2019): SGD momentum 0.9, no weight decay; lr and schedule of hubtune's CE recipe"

    def setup(self, model: nn.Module) -> dict[str, nn.Module]:
        if not isinstance(model.classifier, nn.Linear):
            raise MethodError("DELTA's channel attention needs a linear classifier; drop classifier_type="
                              f"{model.config.classifier_type!r}.")
        warn_if_not_pretrained(model, "DELTA", "the starting backbone's feature maps")
        return {"start_backbone": FrozenCopy(model.backbone.model)}

    def no_weight_decay(self, model: nn.Module) -> set[str]:
        return parameter_names_under(model, ("classifier.",))

    def build_loss(self) -> DeltaLoss:
        return DeltaLoss(alpha=self.config.alpha, beta=self.config.beta)

    def forward_train(self, model: nn.Module, pixel_values: Tensor, labels: Tensor) -> MethodOutput:
        library = model.backbone.library
        feature_map, pooled = feature_map_and_pooled(model.backbone.model, library, pixel_values)
        with torch.no_grad():
            start_map, start_pooled = feature_map_and_pooled(model.start_backbone.module, library, pixel_values)
        feature_map, start_map = channels_first(feature_map), channels_first(start_map)
        if feature_map.shape[1] != pooled.shape[1]:
            raise MethodError(
                f"DELTA weighs feature-map channel c by removing pooled feature c, but backbone "
                f"{model.config.backbone_name!r} pools {pooled.shape[1]} features from {feature_map.shape[1]} "
                "channels (a head layer after its last feature map); use a backbone that pools its last map directly."
            )
        features = model.classifier_input(pooled)
        logits = model.classifier(features)
        loss, ce, feature_term, head_term = model.loss_fn(
            logits, labels, feature_map, start_map, model.classifier_input(start_pooled), model.classifier,
            [p for p in model.classifier.parameters() if p.requires_grad],
        )
        components = detach_components(ce_loss=ce, feature_map_loss=feature_term, head_l2_loss=head_term)
        return MethodOutput(loss=loss, logits=logits, features=features, components=components)
