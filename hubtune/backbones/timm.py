"""timm backbones: the model is created with ``num_classes=0``, so its forward returns the pre-logits features.

Names: a timm model name (``"resnet18"``, ``"vit_tiny_patch16_224.augreg_in21k"``, optionally ``"timm:"``-prefixed),
``"hf-hub:ORG/NAME"`` or ``"local-dir:PATH"`` for timm weights, and a Hub repo or local folder whose config.json is
timm's (``save_for_hf``). Feature maps come from ``forward_intermediates`` at the ``feature_info`` modules.
Classifiers export in timm's Hub layout (:mod:`hubtune.layouts.timm`).
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hubtune.backbones.base import RANDOM_WEIGHTS_OPTION, Backbone, PreprocessingConfig, jsonable, pooled_size
from hubtune.backbones.registry import BackboneLibrary, register_backbone_library, unknown_backbone
from hubtune.errors import BackboneError, PretrainedWeightsError, WeightsFileError
from hubtune.files import read_json_file
from hubtune.offline import hub_offline, not_in_cache

__all__ = ["TimmLibrary", "check_timm_config", "timm_config_error"]

_PREFIXES = ("hf-hub:", "local-dir:", "timm:")
# pretrained_cfg fields that describe a set of weights (where they came from, their tag and licence).
_WEIGHTS_FIELDS = ("url", "file", "hf_hub_id", "hf_hub_filename", "tag", "license", "description", "origin_url",
                   "paper_ids", "paper_name", "notes", "state_dict", "source")


# --------------------------------------------------------------------------------------------- config.json checks


def timm_config_error(source: str, problem: str) -> WeightsFileError:
    """The error for a timm config.json (of the folder or Hub repo ``source``) with a wrong entry."""
    return WeightsFileError(
        f"config.json of {source!r}: {problem}; it is not a timm config as timm's save_for_hf writes it. Fix or "
        "restore the file (or re-save the model)."
    )


def _describe(value: Any) -> str:
    text = json.dumps(value, default=str)
    return f"{text[:60]}{'...' if len(text) > 60 else ''} ({type(value).__name__})"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_PREPROCESSING_CHECKS = {
    "input_size": (lambda v: isinstance(v, list) and len(v) == 3 and all(
        isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v),
        "[channels, height, width] (positive integers)"),
    "mean": (lambda v: isinstance(v, list) and len(v) >= 1 and all(_is_number(x) for x in v), "a list of numbers"),
    "std": (lambda v: isinstance(v, list) and len(v) >= 1 and all(_is_number(x) and x > 0 for x in v),
            "a list of positive numbers"),
    "crop_pct": (lambda v: _is_number(v) and v > 0, "a positive number"),
    "interpolation": (lambda v: isinstance(v, str), "a name such as 'bicubic'"),
}


def _check_label_names(source: str, key: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, dict):
        if not all(isinstance(k, str) and k.strip().isdigit() for k in value):
            raise timm_config_error(source, f"{key} as a mapping must have class indices as keys, not "
                                            f"{_describe(value)}")
    elif not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
        raise timm_config_error(source, f"{key} must be a list of class names, not {_describe(value)}")


def check_timm_config(source: str, config: dict[str, Any]) -> None:
    """WeightsFileError naming config.json and the value when a timm config.json has a wrongly typed entry."""
    architecture = config.get("architecture")
    if not isinstance(architecture, str) or not architecture:
        raise timm_config_error(source, f"architecture must be a timm model name, not {_describe(architecture)}")
    for key in ("model_args", "pretrained_cfg"):
        if config.get(key) is not None and not isinstance(config[key], dict):
            raise timm_config_error(source, f"{key} must be a mapping, not {_describe(config[key])}")
    num_classes = config.get("num_classes")
    if num_classes is not None and not (isinstance(num_classes, int) and not isinstance(num_classes, bool)
                                        and num_classes >= 0):
        raise timm_config_error(source, f"num_classes must be an integer >= 0, not {_describe(num_classes)}")
    pretrained_cfg = config.get("pretrained_cfg") or {}
    _check_label_names(source, "label_names", config.get("label_names"))
    _check_label_names(source, "pretrained_cfg.label_names", pretrained_cfg.get("label_names"))
    for key, (ok, wanted) in _PREPROCESSING_CHECKS.items():
        value = pretrained_cfg.get(key)
        if value is not None and not ok(value):
            raise timm_config_error(source, f"pretrained_cfg.{key} must be {wanted}, not {_describe(value)}")


def _looks_like_timm_config(cfg: dict[str, Any]) -> bool:
    return "model_type" not in cfg and "architecture" in cfg


def _hub_config(repo_id: str) -> dict[str, Any] | None:
    """config.json of a Hub repo, or None if it cannot be fetched."""
    from huggingface_hub import hf_hub_download

    try:
        return read_json_file(Path(hf_hub_download(repo_id, "config.json")))
    except Exception:  # noqa: BLE001 - any failure means "not resolvable as a Hub repo"
        return None


# --------------------------------------------------------------------------------------------- creating


def _timm_preprocessing(model: nn.Module) -> PreprocessingConfig:
    from timm.data import resolve_data_config

    dc = resolve_data_config({}, model=model)
    return PreprocessingConfig(
        input_size=tuple(dc["input_size"]),
        mean=tuple(dc["mean"]),
        std=tuple(dc["std"]),
        interpolation=dc.get("interpolation", "bicubic"),
        crop_pct=float(dc.get("crop_pct", 0.875)),
    )


def _architecture(name: str) -> tuple[str, dict[str, Any]]:
    """The timm architecture and model arguments that ``name`` (without ``timm:``) stands for: its own for a bare
    model name, those of the config.json of an ``hf-hub:`` repo or ``local-dir:`` folder."""
    import timm
    from timm.models._hub import load_model_config_from_hf, load_model_config_from_path

    if name.startswith("hf-hub:"):
        try:
            _, architecture, model_args = load_model_config_from_hf(name[len("hf-hub:"):])
        except Exception as e:  # noqa: BLE001
            if isinstance(e, OSError) and hub_offline():
                raise PretrainedWeightsError(
                    f"Could not read the timm config of {name!r}: {not_in_cache('its config.json')}.") from e
            raise PretrainedWeightsError(f"Could not read the timm config of {name!r} from the Hub: {e}") from e
    elif name.startswith("local-dir:"):
        folder = name[len("local-dir:"):]
        if not (Path(folder) / "config.json").is_file():
            raise BackboneError(f"{name!r}: the folder has no config.json (timm's save_for_hf layout expected).")
        check_timm_config(folder, read_json_file(Path(folder) / "config.json"))
        _, architecture, model_args = load_model_config_from_path(folder)
    else:
        if not timm.is_model(name):
            raise unknown_backbone(name)
        architecture, model_args = name, {}
    return architecture, {k: v for k, v in dict(model_args or {}).items() if k != "num_classes"}


def _pretrained_model(name: str, model_kwargs: dict[str, Any], keep_source_classifier: bool, random_weights: str):
    """(model, source classifier or None) with the pretrained weights of ``name``; never random weights (the error
    names ``random_weights``, how to ask for them)."""
    import timm

    try:
        if keep_source_classifier:
            # With the weights' own head, kept aside (see Backbone.source_classifier), then removed: the same
            # pooled features as creating the model with num_classes=0 (only the random draws differ).
            model = timm.create_model(name, pretrained=True, **model_kwargs)
            return model, _take_source_classifier(model)
        return timm.create_model(name, pretrained=True, num_classes=0, **model_kwargs), None
    except Exception as e:  # noqa: BLE001 - say what failed, never fall back to random weights
        if isinstance(e, OSError) and hub_offline():
            raise PretrainedWeightsError(
                f"Could not load pretrained weights for timm model {name!r}: {not_in_cache('its weights file')}, or "
                f"pass {random_weights} to start from random weights.") from e
        raise PretrainedWeightsError(
            f"Could not load pretrained weights for timm model {name!r}: {type(e).__name__}: {e}. "
            "Check the name and your connection (HF_ENDPOINT, HF_TOKEN), pass a local folder as "
            f"'local-dir:PATH', or pass {random_weights} to start from random weights."
        ) from e


def _take_source_classifier(model: nn.Module) -> dict[str, torch.Tensor | None] | None:
    """A copy of a timm model's linear classifier (None when it has none), after which the model's head is reset
    to pooled features (``reset_classifier(0)``)."""
    head = model.get_classifier() if getattr(model, "num_classes", 0) else None
    kept = None
    if isinstance(head, nn.Linear):
        kept = {"weight": head.weight.detach().clone(),
                "bias": head.bias.detach().clone() if head.bias is not None else None}
    if getattr(model, "num_classes", 0):
        model.reset_classifier(0)
    return kept


def _describe_weights(pretrained_cfg: dict[str, Any], pretrained: bool) -> dict[str, Any]:
    """timm's pretrained_cfg, telling the truth about the weights: a random initialisation keeps no tag, licence
    or source of pretrained weights it never had; a local file's path is reduced to its name."""
    cfg = dict(pretrained_cfg)
    if not pretrained:
        for key in _WEIGHTS_FIELDS:
            cfg.pop(key, None)
        cfg["description"] = "randomly initialised (no pretrained weights)"
    elif cfg.get("file"):
        cfg["file"] = Path(str(cfg["file"])).name
    return cfg


# --------------------------------------------------------------------------------------------- the library


@register_backbone_library
class TimmLibrary(BackboneLibrary):
    """timm models, their Hub repos and ``save_for_hf`` folders."""

    name = "timm"
    export_layout = "timm"
    usage = ("a timm model name (list them with timm.list_models('*resnet*')), 'hf-hub:ORG/NAME' or "
             "'local-dir:PATH' for timm weights")

    def claims(self, name: str) -> bool:
        import timm

        if name.startswith(_PREFIXES):
            return True
        path = Path(name)
        if path.is_dir():
            config = path / "config.json"
            return config.is_file() and _looks_like_timm_config(read_json_file(config))
        if timm.is_model(name):
            return True
        if "/" in name:
            config = _hub_config(name)
            return config is not None and _looks_like_timm_config(config)
        return False

    def close_names(self, name: str) -> list[str]:
        import timm

        return difflib.get_close_matches(name, timm.list_models(pretrained=False), n=5, cutoff=0.6)

    def create(self, name: str, pretrained: bool, model_kwargs: dict[str, Any], keep_source_classifier: bool = False,
               random_weights: str = RANDOM_WEIGHTS_OPTION) -> Backbone:
        import timm

        if "/" in name and not name.startswith(_PREFIXES):  # a Hub repo or folder claimed from its config.json
            name = ("local-dir:" if Path(name).is_dir() else "hf-hub:") + name
        if name.startswith("timm:"):
            name = name[len("timm:"):]
        architecture, model_args = _architecture(name)
        model_args.update(model_kwargs)
        source_classifier = None
        if pretrained:
            model, source_classifier = _pretrained_model(name, model_kwargs, keep_source_classifier, random_weights)
        else:
            model = timm.create_model(architecture, pretrained=False, num_classes=0, **model_args)
        preprocessing = _timm_preprocessing(model)
        if "img_size" in model_args:  # the model was built for another size than its pretrained_cfg says
            preprocessing = preprocessing.with_image_size(model_args["img_size"])
        spec = {
            "library": "timm",
            "name": name,
            "architecture": architecture,
            "model_args": jsonable(model_args),
            "pretrained_cfg": _describe_weights(jsonable(dict(getattr(model, "pretrained_cfg", {}) or {})), pretrained),
        }
        num_features = pooled_size(model, model, preprocessing.input_size[0], preprocessing.image_size, name)
        return Backbone(self, model, spec, preprocessing, num_features, source_classifier)

    def from_spec(self, spec: dict[str, Any], preprocessing: PreprocessingConfig | None) -> Backbone:
        import timm

        model = timm.create_model(spec["architecture"], pretrained=False, num_classes=0, **spec.get("model_args", {}))
        pre = preprocessing or _timm_preprocessing(model)
        if preprocessing is None and "img_size" in spec.get("model_args", {}):
            pre = pre.with_image_size(spec["model_args"]["img_size"])
        num_features = getattr(model, "num_features", None) or pooled_size(
            model, model, pre.input_size[0], pre.image_size, spec["architecture"]
        )
        return Backbone(self, model, dict(spec), pre, num_features)

    def pooled(self, model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
        return model(pixel_values)

    def feature_levels(self, backbone: Backbone) -> list[tuple[str, Any]]:
        info = getattr(backbone.model, "feature_info", None)
        if not info or not hasattr(backbone.model, "forward_intermediates"):
            raise BackboneError(f"timm model {backbone.spec.get('name')!r} has no feature_info / "
                                "forward_intermediates, so its intermediate feature maps cannot be read; use another "
                                "backbone or method.")
        return [(dict(e)["module"], dict(e).get("reduction")) for e in info]

    def intermediates(self, model: nn.Module, pixel_values: torch.Tensor,
                      indices: list[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        final, maps = model.forward_intermediates(pixel_values, indices=indices)
        return model.forward_head(final), list(maps)
