"""Co-Tuning as a registered method: the source classifier kept as a training-only part, the category relationship
computed on the training data before the first step, the loss and the card section.

The maths is :mod:`hubtune.losses.co_tuning` (see docs/methods.md, section 8).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from hubtune.distributed import is_distributed
from hubtune.errors import ConfigError, MethodError
from hubtune.losses.co_tuning import CoTuningLoss, accumulate_relationship, category_relationship
from hubtune.methods.base import TLLIB_FINE_TUNING_RECIPE, MethodConfig, MethodOutput, TrainingMethod, detach_components
from hubtune.methods.registry import register_method

__all__ = ["CoTuningConfig", "CoTuningMethod", "SourceClassifier"]

CITATION = (
    "@inproceedings{you2020cotuning,\n"
    "  title     = {Co-Tuning for Transfer Learning},\n"
    "  author    = {You, Kaichao and Kou, Zhi and Long, Mingsheng and Wang, Jianmin},\n"
    "  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},\n"
    "  year      = {2020}\n"
    "}"
)


@dataclass
class CoTuningConfig(MethodConfig):
    """Co-Tuning's knobs.

    Args:
        trade_off: lambda, the weight of the source-head cross-entropy against the translated labels; 2.3 is tllib's
            ``--trade-off`` default (thuml/Transfer-Learning-Library, examples/task_adaptation/image_classification/
            co_tuning.py:206), used by every command of its co_tuning.sh.
        source_classes: the number of source classes; 0 (the default) takes it from the backbone's pretrained
            head, and the model's config then records it (so that a saved hubtune checkpoint rebuilds the head).
    """

    PRESETS: ClassVar[tuple[str, ...]] = ("paper",)
    trade_off: float = 2.3
    source_classes: int = 0

    def validate(self) -> None:
        if not self.trade_off >= 0:
            raise ConfigError(f"trade_off (the source-head loss weight lambda) must be >= 0, got {self.trade_off}.")
        if isinstance(self.source_classes, bool) or int(self.source_classes) != self.source_classes or self.source_classes < 0:
            raise ConfigError(f"source_classes must be an integer >= 0 (0: the backbone's), got {self.source_classes}.")


class SourceClassifier(nn.Module):
    """The pre-trained model's own classifier (fine-tuned) and the category relationship p(y_s | y_t) (a buffer).

    ``ready`` (a buffer, saved) says the relationship was computed; ``prepared`` (Python) that this process checked
    it, so that the training forward reads no tensor back to the host.
    """

    def __init__(self, num_features: int, num_source: int, num_target: int):
        super().__init__()
        self.linear = nn.Linear(num_features, num_source)
        self.register_buffer("relationship", torch.full((num_target, num_source), 1.0 / num_source))
        self.register_buffer("ready", torch.zeros((), dtype=torch.bool))
        self.prepared = False

    def forward(self, features: Tensor) -> Tensor:
        return self.linear(features)


@register_method
class CoTuningMethod(TrainingMethod):
    """Cross-entropy plus the pre-trained head's cross-entropy against target labels translated to source labels."""

    name = "co-tuning"
    config_class = CoTuningConfig
    title = "Co-Tuning"
    description = (
        "Co-Tuning keeps the pre-trained model's own classifier (over its source classes, e.g. ImageNet's 1000) "
        "and fine-tunes it next to the new one: each target label is translated into a distribution over the "
        "source classes, p(y_s | y_t), learned before fine-tuning from the pre-trained model's predictions on the "
        "training images, and the source head is trained towards it. The source head is used for training only "
        "and is not part of the exported classifier."
    )
    citation = CITATION
    tags = ("co-tuning",)
    weight_attribute = "trade_off"
    uses_source_classifier = True
    pretrained_parts = ("source_classifier",)
    # tllib's Co-Tuning script: its fine-tuning recipe (methods.base.TLLIB_FINE_TUNING_RECIPE) with the kept source
    # head at the backbone's 0.1x rate (tllib/regularization/co_tuning.py:139-149, ``get_parameters``: backbone and
    # head_source at 0.1 * base_lr under --finetune, which every command of co_tuning.sh passes; co_tuning.py:96).
    # The source head is one of this method's pretrained_parts, so the recipe's backbone=0.1 reaches it too.
    recipe = dict(TLLIB_FINE_TUNING_RECIPE)
    recipe_source = ("tllib's Co-Tuning (thuml/Transfer-Learning-Library examples/task_adaptation/image_classification/"
                     "co_tuning.py, --finetune): SGD Nesterov 0.9, lr 0.01, backbone and source head 0.1x, weight "
                     "decay 5e-4 on every parameter, lambda 2.3")

    def setup(self, model: nn.Module) -> dict[str, nn.Module]:
        backbone = model.backbone
        source = getattr(backbone, "source_classifier", None)
        wanted = int(self.config.source_classes)
        if source is None and wanted == 0 and self.backbone_problem(backbone.library):
            raise MethodError(self.backbone_problem(backbone.library))
        if source is None and wanted == 0:
            raise MethodError(
                f"Co-Tuning needs the pre-trained model's own classifier, and backbone {model.config.backbone_name!r} "
                "has none (hubtune keeps it for pretrained timm weights that ship a linear head, e.g. ImageNet's); "
                "use such a backbone, or another method."
            )
        if source is not None:
            if wanted not in (0, source["weight"].shape[0]):
                raise MethodError(f"source_classes={wanted} but the backbone's pretrained head has "
                                  f"{source['weight'].shape[0]} classes; leave source_classes at 0.")
            self.config.source_classes = int(source["weight"].shape[0])
        head = SourceClassifier(backbone.num_features, int(self.config.source_classes), model.config.num_labels)
        if source is not None:  # else: the shape a saved hubtune checkpoint's weights are loaded into
            with torch.no_grad():
                head.linear.weight.copy_(source["weight"])
                if source["bias"] is not None:
                    head.linear.bias.copy_(source["bias"])
                else:
                    head.linear.bias.zero_()
        return {"source_classifier": head}

    @torch.no_grad()
    def prepare(self, model: nn.Module, batches: Iterable[dict[str, Tensor]]) -> None:
        """Compute p(y_s | y_t) with the starting model in eval mode on the training images under the evaluation
        transform (tllib examples/task_adaptation/image_classification/co_tuning.py:36-37, :83-84 and :108-110: the
        relationship's loader uses ``val_transform``; ``collect_labels``
        puts the model in eval mode, tllib/regularization/co_tuning.py:80), summed over processes; nothing when
        the model already holds it (a resumed checkpoint). The source head reads the backbone's own pooled
        features, never the L2-normalised ones of ``normalize_features``: it was trained on the former."""
        head: SourceClassifier = model.source_classifier
        if head.prepared:
            return
        if not bool(head.ready):
            device = head.relationship.device
            sums = torch.zeros(head.relationship.shape, dtype=torch.float64, device=device)
            counts = torch.zeros(head.relationship.shape[0], dtype=torch.float64, device=device)
            was_training = model.training
            model.eval()
            try:
                for batch in batches:
                    pooled = model.backbone(batch["pixel_values"].to(device))
                    accumulate_relationship(sums, counts, head(pooled), batch["labels"].to(device))
            finally:
                model.train(was_training)
            if is_distributed():
                torch.distributed.all_reduce(sums)
                torch.distributed.all_reduce(counts)
            if not bool((counts > 0).any()):
                raise MethodError("Co-Tuning's category relationship needs training batches with 'labels'; got none.")
            head.relationship.copy_(category_relationship(sums, counts).to(head.relationship.dtype))
            head.ready.fill_(True)
        head.prepared = True

    def build_loss(self) -> CoTuningLoss:
        return CoTuningLoss(trade_off=self.config.trade_off)

    def forward_train(self, model: nn.Module, pixel_values: Tensor, labels: Tensor) -> MethodOutput:
        head: SourceClassifier = model.source_classifier
        if not head.prepared:
            raise MethodError(
                "Co-Tuning's category relationship p(y_s|y_t) is not computed yet: call "
                "model.method.prepare(model, train_dataloader) before training (HubtuneTrainer does it)."
            )
        pooled = model.backbone(pixel_values)
        features = model.classifier_input(pooled)
        logits = model.classifier(features)
        loss, ce, source_ce = model.loss_fn(logits, head(pooled), labels, head.relationship)
        return MethodOutput(loss=loss, logits=logits, features=features,
                            components=detach_components(ce_loss=ce, source_ce_loss=source_ce))
