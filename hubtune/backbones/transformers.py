"""transformers backbones: the architecture's own ``*ForImageClassification`` class built with ``num_labels=0``.

Those classes then use ``nn.Identity`` as classifier, so their ``logits`` are exactly the features their classifier
would read (CLS token for ViT, CLS + mean patch for DINOv2, pooler output for ConvNeXt / Swin / ResNet ...).
Exporting to the same class later (:mod:`hubtune.layouts.transformers`) is then exact. Names: a model id on the Hub
(``"google/vit-base-patch16-224"``) or a local folder with a transformers config.json. Feature maps come from
``output_hidden_states``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from hubtune.backbones.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RANDOM_WEIGHTS_OPTION,
    Backbone,
    PreprocessingConfig,
    pooled_size,
)
from hubtune.backbones.registry import BackboneLibrary, register_backbone_library, unknown_backbone
from hubtune.errors import BackboneError, PretrainedWeightsError
from hubtune.offline import hub_offline, not_in_cache

__all__ = ["TransformersLibrary", "image_classification_class"]


def image_classification_class(config) -> type:
    """The ``*ForImageClassification`` class of a transformers config."""
    from transformers import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING

    try:
        cls = MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING[type(config)]
    except KeyError as e:
        raise BackboneError(
            f"transformers model type {config.model_type!r} has no image-classification class, so hubtune cannot "
            "pool its features. Use a vision model such as ViT, DeiT, ConvNeXt, Swin, DINOv2 or ResNet."
        ) from e
    return cls[0] if isinstance(cls, (tuple, list)) else cls


def _transformers_preprocessing(name: str, config) -> PreprocessingConfig:
    size = getattr(config, "image_size", 224)
    size = tuple(size) if isinstance(size, (tuple, list)) else (int(size), int(size))
    in_chans = int(getattr(config, "num_channels", 3))
    mean, std, crop_pct = IMAGENET_MEAN, IMAGENET_STD, 0.875
    try:
        from transformers import AutoImageProcessor

        proc = AutoImageProcessor.from_pretrained(name)
        mean = tuple(float(x) for x in getattr(proc, "image_mean", mean))
        std = tuple(float(x) for x in getattr(proc, "image_std", std))
        crop = getattr(proc, "crop_size", None) or getattr(proc, "size", None) or {}
        if isinstance(crop, dict):
            if "height" in crop:
                size = (int(crop["height"]), int(crop["width"]))
            elif "shortest_edge" in crop:
                size = (int(crop["shortest_edge"]),) * 2
        crop_pct = float(getattr(proc, "crop_pct", None) or crop_pct)
    except Exception:  # noqa: BLE001 - no preprocessor_config.json: fall back to the config and ImageNet stats
        pass
    return PreprocessingConfig(input_size=(in_chans, *size), mean=mean, std=std, interpolation="bicubic",
                               crop_pct=crop_pct)


def _library_config(name: str, pretrained: bool, model_kwargs: dict[str, Any]):
    """The transformers config of ``name`` (a Hub id or folder), for a headless model (``num_labels=0``)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name, **model_kwargs)
    except Exception as e:  # noqa: BLE001
        if not Path(name).exists() and hub_offline():
            raise PretrainedWeightsError(f"Could not load {name!r}: {not_in_cache('its config.json')}.") from e
        if Path(name).exists() or pretrained:
            raise PretrainedWeightsError(f"Could not load the transformers config of {name!r}: {e}") from e
        raise unknown_backbone(name) from e
    config.num_labels = 0
    return config


def _pretrained_model(cls: type, name: str, config, random_weights: str):
    try:
        return cls.from_pretrained(name, config=config)
    except Exception as e:  # noqa: BLE001
        if isinstance(e, OSError) and not Path(name).exists() and hub_offline():
            raise PretrainedWeightsError(
                f"Could not load pretrained weights for {name!r}: {not_in_cache('its weights file')}, or pass "
                f"{random_weights} to start from random weights.") from e
        raise PretrainedWeightsError(
            f"Could not load pretrained weights for transformers model {name!r}: {type(e).__name__}: {e}. "
            "Check the id and your connection (HF_ENDPOINT, HF_TOKEN), pass a local folder, or pass "
            f"{random_weights} to start from random weights."
        ) from e


@register_backbone_library
class TransformersLibrary(BackboneLibrary):
    """transformers vision models with an image-classification class: Hub ids and saved folders."""

    name = "transformers"
    export_layout = "transformers"
    usage = ("a transformers vision model id or local folder with a config.json (e.g. "
             "'google/vit-base-patch16-224')")

    def claims(self, name: str) -> bool:
        # asked after timm, which claims the folders and Hub repos whose config.json is its own
        return (Path(name) / "config.json").is_file() if Path(name).is_dir() else "/" in name

    def create(self, name: str, pretrained: bool, model_kwargs: dict[str, Any], keep_source_classifier: bool = False,
               random_weights: str = RANDOM_WEIGHTS_OPTION) -> Backbone:
        config = _library_config(name, pretrained, model_kwargs)
        cls = image_classification_class(config)
        model = _pretrained_model(cls, name, config, random_weights) if pretrained else cls(config)
        return self._wrap(model, name, _transformers_preprocessing(name, config))

    def from_spec(self, spec: dict[str, Any], preprocessing: PreprocessingConfig | None) -> Backbone:
        from transformers import AutoConfig

        cfg = dict(spec["config"])
        config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
        config.num_labels = 0
        model = image_classification_class(config)(config)
        pre = preprocessing or _transformers_preprocessing(spec.get("name", ""), config)
        return self._wrap(model, spec.get("name", ""), pre)

    def _wrap(self, model: nn.Module, name: str, preprocessing: PreprocessingConfig) -> Backbone:
        config_dict = model.config.to_dict()
        for key in ("id2label", "label2id", "architectures", "transformers_version", "_name_or_path"):
            config_dict.pop(key, None)
        spec = {"library": "transformers", "name": name, "config": config_dict}
        num_features = pooled_size(
            model, lambda x: self.pooled(model, x), preprocessing.input_size[0], preprocessing.image_size, name
        )
        return Backbone(self, model, spec, preprocessing, num_features)

    def pooled(self, model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
        return model(pixel_values=pixel_values).logits

    def feature_levels(self, backbone: Backbone) -> list[tuple[str, Any]]:
        # The outermost list of blocks, whose outputs are hidden_states[1:]: ``vit.layers`` (transformers 5's ViT),
        # ``*.encoder.layer`` (DeiT, DINOv2, BEiT), ``*.encoder.layers`` (Swin) or ``*.encoder.stages`` (ConvNeXt,
        # ResNet; stages change resolution).
        for name, module in backbone.model.named_modules():
            if isinstance(module, nn.ModuleList) and name.rsplit(".", 1)[-1] in ("layer", "layers", "stages", "blocks"):
                staged = name.endswith("stages")
                return [(f"{name}.{i}", i if staged else 0) for i in range(len(module))]
        raise BackboneError(f"transformers model {backbone.spec.get('name')!r} has no list of blocks (layers, "
                            "encoder.layer or encoder.stages) whose hidden states could be read; use another backbone "
                            "or method.")

    def intermediates(self, model: nn.Module, pixel_values: torch.Tensor,
                      indices: list[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        out = model(pixel_values=pixel_values, output_hidden_states=True)
        return out.logits, [out.hidden_states[i + 1] for i in indices]
