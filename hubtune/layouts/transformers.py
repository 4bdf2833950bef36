"""The transformers layout: the backbone's own ``*ForImageClassification`` plus ``preprocessor_config.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from hubtune.backbones import PreprocessingConfig, image_classification_class, public_name
from hubtune.errors import ExportError
from hubtune.layouts.files import fetch, read_json_file, weights_kind
from hubtune.layouts.parts import ClassifierParts, head_keys, head_state, split_head
from hubtune.layouts.registry import LibraryLayout, register_layout

__all__ = ["TransformersLayout", "write_transformers", "read_transformers", "reload_transformers_logits"]

_NOT_ARCHITECTURE = ("id2label", "label2id", "architectures", "transformers_version", "_name_or_path")


def _library_config(config_dict: dict[str, Any], num_labels: int):
    from transformers import AutoConfig

    config_dict = dict(config_dict)
    model_type = config_dict.pop("model_type")
    config = AutoConfig.for_model(model_type, **config_dict)
    config.num_labels = num_labels
    return config


def write_transformers(parts: ClassifierParts, folder: Path) -> None:
    """Write ``parts`` as the backbone's own ``*ForImageClassification`` (+ an image processor) into ``folder``."""
    config = _library_config(parts.spec["config"], parts.num_labels)
    id2label = dict(enumerate(parts.label_names()))
    config.id2label = id2label
    config.label2id = {name: i for i, name in id2label.items()}
    model = image_classification_class(config)(config)
    weight_key, bias_key = head_keys(model.state_dict(), parts.backbone_state, parts.num_labels,
                                     int(parts.head_weight.shape[1]), config.model_type)
    model.load_state_dict({**parts.backbone_state, **head_state(parts, weight_key, bias_key)}, strict=True)
    model.eval().save_pretrained(str(folder))
    _image_processor(parts.preprocessing).save_pretrained(str(folder))


def _image_processor(preprocessing: dict[str, Any]):
    """An image processor doing what hubtune's eval transform does (:func:`hubtune.data.build_transforms`):
    resize by 1 / crop_pct (the shorter edge for a square input size), centre-crop the input size, rescale,
    normalise. A BiT processor, as ViT's cannot centre-crop. Its PIL backend gives hubtune's tensors exactly;
    the torchvision backend (transformers' default) resizes with its own kernel (a grey level apart at most)."""
    from transformers import BitImageProcessor
    from transformers.image_utils import PILImageResampling

    pre = PreprocessingConfig.from_dict(preprocessing)
    resample = {"bilinear": PILImageResampling.BILINEAR, "nearest": PILImageResampling.NEAREST}.get(
        pre.interpolation, PILImageResampling.BICUBIC
    )
    channels, height, width = (int(x) for x in pre.input_size)
    if height == width:
        size = {"shortest_edge": int(height / pre.crop_pct)}
    else:
        size = {"height": int(height / pre.crop_pct), "width": int(width / pre.crop_pct)}
    processor = BitImageProcessor(
        do_resize=True, size=size, resample=resample, do_center_crop=True,
        crop_size={"height": height, "width": width}, do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
        image_mean=list(pre.mean), image_std=list(pre.std), do_convert_rgb=channels == 3,
    )
    processor.crop_pct = float(pre.crop_pct)  # written to preprocessor_config.json, read back by _preprocessing
    return processor


def reload_transformers_logits(folder: Path, pixel_values: torch.Tensor) -> torch.Tensor:
    """Logits of the folder re-loaded with plain transformers (the export check)."""
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        return model(pixel_values=pixel_values).logits.float()


def _preprocessing(processor: dict[str, Any] | None, config: dict[str, Any]) -> dict[str, Any]:
    default = PreprocessingConfig()
    size = config.get("image_size", 224)
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    mean, std, interpolation = default.mean, default.std, default.interpolation
    if processor:
        mean = tuple(processor.get("image_mean") or mean)
        std = tuple(processor.get("image_std") or std)
        shape = processor.get("crop_size") if processor.get("do_center_crop") else processor.get("size")
        if isinstance(shape, dict) and "height" in shape:
            height, width = int(shape["height"]), int(shape["width"])
        elif isinstance(shape, dict) and "shortest_edge" in shape:
            height = width = int(shape["shortest_edge"])
        interpolation = {0: "nearest", 2: "bilinear", 3: "bicubic"}.get(processor.get("resample"), interpolation)
        crop_pct = _crop_pct(processor, height) if processor.get("do_center_crop") else default.crop_pct
    else:
        crop_pct = default.crop_pct
    in_chans = int(config.get("num_channels", 3))
    return PreprocessingConfig(input_size=(in_chans, height, width), mean=mean, std=std, interpolation=interpolation,
                               crop_pct=crop_pct).to_dict()


def _crop_pct(processor: dict[str, Any], crop_height: int) -> float:
    """The crop_pct of a resize-then-centre-crop processor: hubtune's own (written by :func:`_image_processor`), or
    one that resizes to the processor's size (int(crop / crop_pct) == resized size, as the eval transform computes)."""
    if isinstance(processor.get("crop_pct"), (int, float)) and processor["crop_pct"] > 0:
        return float(processor["crop_pct"])
    size = processor.get("size") or {}
    resized = (size.get("shortest_edge") or size.get("height")) if isinstance(size, dict) else None
    if not isinstance(resized, int) or resized <= 0:
        return PreprocessingConfig().crop_pct
    return crop_height / (resized + 0.5)


def read_transformers(source: str, config: dict[str, Any], processor: dict[str, Any] | None, *, revision: str | None,
                      token: Any, use_safetensors: bool) -> ClassifierParts:
    """The parts of a transformers-layout classifier, loaded with the library's own loader (so that checkpoint
    key renames between transformers versions apply)."""
    from transformers import AutoConfig

    config_dict = {k: v for k, v in config.items() if k not in _NOT_ARCHITECTURE}
    library_config = AutoConfig.from_pretrained(source, revision=revision, token=token)
    full, info = image_classification_class(library_config).from_pretrained(
        source, config=library_config, revision=revision, token=token, use_safetensors=use_safetensors,
        output_loading_info=True,
    )
    if info.get("missing_keys") or info.get("mismatched_keys"):
        raise ExportError(
            f"The weights of {source!r} do not match its config: missing {sorted(info['missing_keys'])[:5]}, "
            f"mismatched {list(info.get('mismatched_keys', []))[:5]}."
        )
    headless = image_classification_class(library_config)(_library_config(config_dict, 0))
    backbone_state, weight, bias = split_head(full.state_dict(), set(headless.state_dict()), source)
    id2label = {int(k): str(v) for k, v in (config.get("id2label") or {}).items()}
    if len(id2label) != weight.shape[0]:
        id2label = {i: f"LABEL_{i}" for i in range(weight.shape[0])}
    spec = {"library": "transformers", "name": public_name(source), "config": config_dict}
    return ClassifierParts(spec, _preprocessing(processor, config), id2label, backbone_state, weight, bias,
                           public_name(source))


@register_layout
class TransformersLayout(LibraryLayout):
    """The transformers layout: any config.json with a ``model_type`` (but hubtune's own)."""

    name = "transformers"
    backbone_libraries = ("transformers",)

    def load_hint(self, repo: str, folder: Path) -> str:
        return f'AutoModelForImageClassification.from_pretrained("{repo}"); locally from_pretrained("{folder}")'

    def matches(self, config: dict[str, Any]) -> bool:
        model_type = config.get("model_type")
        return bool(model_type) and isinstance(model_type, str) and model_type != "hubtune"

    def write(self, parts: ClassifierParts, folder: Path) -> None:
        write_transformers(parts, folder)

    def reload_logits(self, folder: Path, pixel_values: torch.Tensor) -> torch.Tensor:
        return reload_transformers_logits(folder, pixel_values)

    def read(self, source: str, config: dict[str, Any], *, revision: str | None, token: Any,
             allow_pickle: bool) -> ClassifierParts:
        kind = weights_kind(source, revision, token, allow_pickle)
        processor_path = fetch(source, "preprocessor_config.json", revision, token, required=False)
        processor = read_json_file(processor_path, "preprocessor_config.json") if processor_path else None
        return read_transformers(source, config, processor, revision=revision, token=token,
                                 use_safetensors=kind == "safetensors")
