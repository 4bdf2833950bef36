"""AdaptiveMix as a registered classifier method: its loss, its preset's classifier and the card section.

The maths is :class:`hubtune.losses.adaptive_mix.AdaptiveMixClassifierLoss` (see docs/methods.md, section 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

from hubtune.losses.adaptive_mix import AdaptiveMixClassifierLoss, AdaptiveMixSettings
from hubtune.methods.base import SGD_FINE_TUNING_RECIPE, MethodConfig, MethodOutput, TrainingMethod
from hubtune.methods.registry import register_method

__all__ = ["AdaptiveMixConfig", "AdaptiveMixMethod"]

CITATION = (
    "@inproceedings{liu2023adaptivemix,\n"
    "  title     = {AdaptiveMix: Improving GAN Training via Feature Space Shrinkage},\n"
    "  author    = {Liu, Haozhe and Zhang, Wentian and Li, Bing and Wu, Haoqian and He, Nanjun and Huang, Yawen and Li, Yuexiang and Ghanem, Bernard and Zheng, Yefeng},\n"
    "  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},\n"
    "  year      = {2023},\n"
    "  eprint    = {2303.01559},\n"
    "  archivePrefix = {arXiv}\n"
    "}"
)


@dataclass
class AdaptiveMixConfig(MethodConfig):
    """AdaptiveMix's classifier knobs (checked by :class:`hubtune.losses.adaptive_mix.AdaptiveMixSettings`, shared with
    the GAN config and the losses).

    Every default is the authors' (WentianZhang-ML/AdaptiveMix 163e5d5), cited value by value in
    :class:`~hubtune.losses.adaptive_mix_settings.AdaptiveMixSettings`, except where said.

    Args:
        preset: ``"paper"`` (cosine shrinkage, clean cross-entropy on) or ``"reference"`` (the public classifier
            script: MSE shrinkage (classification/models.py:144), mixup cross-entropy on ``|W t| + |W f(x~)|``
            (models.py:146), L2-normalised features (models.py:121) and a frozen (models.py:81), orthogonally
            initialised (models.py:92), bias-free (models.py:79) ``|W u|`` classifier (models.py:124)).
        alpha: Beta(alpha, alpha) of the mixing weight; 1.0: classification/train.py:34.
        sigma: std of the noise added to the detached shrinkage target; 0.05: classification/train.py:35.
        shrinkage_weight: weight of the shrinkage term (the losses' older ``weight``, GAN configs' older
            ``ada_weight``); 1.0: the script adds the term unweighted (classification/train.py:129).
        distance: ``"cosine"`` or ``"mse"`` (None: the preset's: MSE for the reference, as the script; cosine for
            the paper preset, the distance of the authors' GAN code, generation/training/loss.py:117; cosine
            against MSE for classifiers not measured).
        clean_ce: add cross-entropy on the clean images (None: the preset's: off for the reference, as the script,
            classification/train.py:127-129; on for the paper preset, hubtune's choice, not measured separately).
        per_sample: one mixing weight per sample instead of one per batch; False: the script draws one per batch
            (classification/models.py:128).
    """

    PRESETS: ClassVar[tuple[str, ...]] = ("paper", "reference")
    alpha: float = 1.0
    sigma: float = 0.05
    shrinkage_weight: float = 1.0
    distance: str | None = None
    clean_ce: bool | None = None
    per_sample: bool = False

    def validate(self) -> None:
        self.settings()

    def settings(self) -> AdaptiveMixSettings:
        """The shared, validated settings (ConfigError naming a bad knob)."""
        return AdaptiveMixSettings(self.alpha, self.sigma, self.shrinkage_weight, self.distance, self.per_sample,
                                   self.preset)


@register_method
class AdaptiveMixMethod(TrainingMethod):
    """Mixup cross-entropy on mixed images plus feature-space shrinkage."""

    name = "adaptivemix"
    config_class = AdaptiveMixConfig
    title = "AdaptiveMix"
    description = (
        "AdaptiveMix shrinks the regions that the training data occupy in feature space: it mixes pairs of "
        "images and pulls the features of each mixed image towards the same mix of the two images' features, "
        "next to the cross-entropy loss. The smaller feature regions give a classifier that is more robust and "
        "better at telling out-of-distribution inputs apart."
    )
    citation = CITATION
    tags = ("adaptivemix",)
    # The authors' classifier script trains from scratch (WentianZhang-ML/AdaptiveMix, classification/train.py:108:
    # SGD momentum 0.9, weight decay 5e-4, lr 0.1 (train.py:29) x0.2 after epochs 60, 120 and 160
    # (classification/config.py:25-34) of 200 (config.py:6), batch 128 (config.py:7), a WRN-28-10 on CIFAR
    # (run_cifa10_clssification.sh); there is no fine-tuning recipe to follow. For fine-tuning hubtune uses
    # Core-tuning's SGD recipe (methods.base.SGD_FINE_TUNING_RECIPE) but keeps gradient clipping at 1.0: AdaptiveMix's
    # loss on mixed images gives gradient norms of 20-120 in few-label fine-tuning, and without clipping it diverged
    # (digits, 10 labels per class, MobileNetV2: 68.43% against CE's 91.12%, seeds 0-4; README, Evidence;
    # benchmarks/results/compare/digits-k10/sweep.md).
    recipe = {**SGD_FINE_TUNING_RECIPE, "max_grad_norm": 1.0}
    recipe_source = ("Core-tuning's fine-tuning recipe with clipping at 1.0 kept (measured by hubtune; the authors' "
                     "script, WentianZhang-ML/AdaptiveMix classification/train.py:108, trains from scratch)")

    def model_defaults(self) -> dict[str, Any]:
        # The classifier script's model: L2-normalised features and |W u| with W frozen, orthogonal, bias-free
        # (classification/models.py:79-81, :92, :121, :124).
        if self.config.preset == "reference":
            return {"classifier_type": "orthogonal-abs", "normalize_features": True}
        return {}

    def build_loss(self) -> AdaptiveMixClassifierLoss:
        return AdaptiveMixClassifierLoss.from_settings(self.config.settings(), clean_ce=self.config.clean_ce)

    def forward_train(self, model: nn.Module, pixel_values: Tensor, labels: Tensor) -> MethodOutput:
        out = model.loss_fn(pixel_values, labels, model.forward_features, model.classifier)
        components = {"ce_loss": out.ce_loss.detach(), "shrinkage_loss": out.shrinkage_loss.detach()}
        return MethodOutput(loss=out.loss, logits=out.logits, features=None, components=components)
