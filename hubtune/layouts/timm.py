"""timm's Hub layout (``timm.models.save_for_hf``): write and read classifier parts.

``config.json`` holds ``architecture``, ``num_classes``, ``label_names``, ``model_args``, ``pretrained_cfg``;
weights are ``model.safetensors``. Loads with ``timm.create_model("hf-hub:ORG/NAME", pretrained=True)`` and with
transformers' ``AutoModelForImageClassification`` (its ``TimmWrapper`` classes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from hubtune.backbones import PreprocessingConfig, check_timm_config, public_name, timm_config_error
from hubtune.errors import WeightsFileError
from hubtune.layouts.files import is_local, load_weights
from hubtune.layouts.parts import ClassifierParts, head_keys, head_state, split_head
from hubtune.layouts.registry import LibraryLayout, register_layout

__all__ = ["TimmLayout", "write_timm", "read_timm", "reload_timm_logits", "drop_num_classes_from_model_args"]


def _library_model(parts: ClassifierParts):
    import timm

    spec = parts.spec
    model_args = {k: v for k, v in dict(spec.get("model_args") or {}).items() if k != "num_classes"}
    model = timm.create_model(spec["architecture"], pretrained=False, num_classes=parts.num_labels, **model_args)
    if spec.get("pretrained_cfg"):
        # A pretrained_cfg read back from a timm-layout config.json lacks "architecture" (save_for_hf moves it to
        # the top level, and needs it there)
        model.pretrained_cfg = {**dict(spec["pretrained_cfg"]), "architecture": spec["architecture"]}
    weight_key, bias_key = head_keys(model.state_dict(), parts.backbone_state, parts.num_labels,
                                     int(parts.head_weight.shape[1]), spec["architecture"])
    model.load_state_dict({**parts.backbone_state, **head_state(parts, weight_key, bias_key)}, strict=True)
    return model.eval()


def write_timm(parts: ClassifierParts, folder: Path) -> None:
    """Write ``parts`` in timm's Hub layout into ``folder``."""
    from timm.models import save_for_hf

    pre = PreprocessingConfig.from_dict(parts.preprocessing)
    data_config = {"input_size": tuple(pre.input_size), "mean": tuple(pre.mean), "std": tuple(pre.std),
                   "interpolation": pre.interpolation, "crop_pct": pre.crop_pct, "crop_mode": "center"}
    save_for_hf(_library_model(parts), str(folder), model_config={"label_names": parts.label_names()},
                safe_serialization=True, data_config=data_config)
    drop_num_classes_from_model_args(folder / "config.json")


def drop_num_classes_from_model_args(config_path: Path) -> None:
    """timm 1.0.31 writes num_classes twice (top level and model_args); transformers' TimmWrapper then passes it
    twice to ``timm.create_model`` ("got multiple values for keyword argument 'num_classes'"). The top-level
    value is enough for both loaders."""
    config = json.loads(config_path.read_text(encoding="utf-8"))
    model_args = config.get("model_args")
    if isinstance(model_args, dict) and "num_classes" in model_args:
        model_args.pop("num_classes")
        if not model_args:
            config.pop("model_args")
    config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")


def reload_timm_logits(folder: Path, pixel_values: torch.Tensor) -> torch.Tensor:
    """Logits of the folder re-loaded with plain timm (the export check)."""
    import timm

    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    with torch.no_grad():
        return model(pixel_values).float()


def _preprocessing(pretrained_cfg: dict[str, Any]) -> dict[str, Any]:
    default = PreprocessingConfig()
    return PreprocessingConfig(
        input_size=tuple(pretrained_cfg.get("input_size", default.input_size)),
        mean=tuple(pretrained_cfg.get("mean", default.mean)),
        std=tuple(pretrained_cfg.get("std", default.std)),
        interpolation=pretrained_cfg.get("interpolation", default.interpolation) or default.interpolation,
        crop_pct=float(pretrained_cfg.get("crop_pct", default.crop_pct) or default.crop_pct),
    ).to_dict()


def _create(architecture: str, model_args: dict[str, Any], source: str):
    import timm

    try:
        return timm.create_model(architecture, pretrained=False, num_classes=0, **model_args)
    except (RuntimeError, TypeError, ValueError, KeyError, AttributeError) as e:
        detail = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise timm_config_error(source, f"timm cannot build architecture {architecture!r} with model_args "
                            f"{json.dumps(model_args, default=str)[:120]} ({type(e).__name__}: {detail})") from e


def _check_weights_fit(source: str, architecture: str, headless: dict[str, torch.Tensor],
                       state: dict[str, torch.Tensor]) -> None:
    """WeightsFileError naming both when the weights are not those of config.json's architecture (beyond a head)."""
    missing = sorted(set(headless) - set(state))
    extra = sorted(set(state) - set(headless))
    reshaped = sorted(k for k in set(headless) & set(state) if tuple(headless[k].shape) != tuple(state[k].shape))
    if not missing and not reshaped and len(extra) <= 2:
        return
    problems = []
    if missing:
        problems.append(f"{len(missing)} of its {len(headless)} backbone tensors are missing from the weights "
                        f"(e.g. {', '.join(missing[:3])})")
    if reshaped:
        k = reshaped[0]
        problems.append(f"{len(reshaped)} have other shapes (e.g. {k}: {tuple(state[k].shape)} in the weights, "
                        f"{tuple(headless[k].shape)} in {architecture})")
    if len(extra) > 2:
        problems.append(f"the weights hold {len(extra)} tensors {architecture} does not have (e.g. "
                        f"{', '.join(extra[:3])})")
    raise WeightsFileError(
        f"The weights of {source!r} are not those of the architecture its config.json names ({architecture!r}): "
        f"{'; '.join(problems)}. The weights come from another model: set 'architecture' (and 'model_args') in "
        "config.json to the weights' own, or restore the matching model.safetensors."
    )


def read_timm(source: str, config: dict[str, Any], state: dict[str, torch.Tensor]) -> ClassifierParts:
    """The parts of a timm-layout classifier from its config.json and state dict."""
    check_timm_config(source, config)
    model_args = {k: v for k, v in dict(config.get("model_args") or {}).items() if k != "num_classes"}
    pretrained_cfg = dict(config.get("pretrained_cfg") or {})
    architecture = config["architecture"]
    pretrained_cfg.setdefault("architecture", architecture)  # as timm's own pretrained_cfg (save_for_hf needs it)
    headless = _create(architecture, model_args, source)
    _check_weights_fit(source, architecture, headless.state_dict(), state)
    backbone_state, weight, bias = split_head(state, set(headless.state_dict()), source)
    num_classes = config.get("num_classes")
    if num_classes not in (None, 0) and num_classes != weight.shape[0]:
        raise timm_config_error(source, f"num_classes is {num_classes} but the classifier in the weights has "
                            f"{weight.shape[0]} outputs")
    label_names = config.get("label_names") or pretrained_cfg.get("label_names")
    if label_names and len(label_names) != weight.shape[0]:
        raise timm_config_error(source, f"label_names has {len(label_names)} names but the classifier in the weights has "
                            f"{weight.shape[0]} outputs")
    if isinstance(label_names, dict):
        id2label = {int(k): str(v) for k, v in label_names.items()}
    elif label_names:
        id2label = {i: str(name) for i, name in enumerate(label_names)}
    else:
        id2label = {i: f"LABEL_{i}" for i in range(weight.shape[0])}
    name = f"local-dir:{public_name(source)}" if is_local(source) else f"hf-hub:{source}"
    spec = {"library": "timm", "name": name, "architecture": architecture, "model_args": model_args,
            "pretrained_cfg": pretrained_cfg}
    return ClassifierParts(spec, _preprocessing(pretrained_cfg), id2label, backbone_state, weight, bias, name)


@register_layout
class TimmLayout(LibraryLayout):
    """timm's Hub layout: a config.json with ``architecture`` and ``pretrained_cfg`` and no ``model_type``."""

    name = "timm"
    backbone_libraries = ("timm",)

    def load_hint(self, repo: str, folder: Path) -> str:
        return (f'timm.create_model("hf-hub:{repo}", pretrained=True) or AutoModelForImageClassification'
                f'.from_pretrained("{repo}"); locally timm.create_model("local-dir:{folder}", pretrained=True)')

    def matches(self, config: dict[str, Any]) -> bool:
        return config.get("model_type") is None and "architecture" in config and "pretrained_cfg" in config

    def write(self, parts: ClassifierParts, folder: Path) -> None:
        write_timm(parts, folder)

    def reload_logits(self, folder: Path, pixel_values: torch.Tensor) -> torch.Tensor:
        return reload_timm_logits(folder, pixel_values)

    def read(self, source: str, config: dict[str, Any], *, revision: str | None, token: Any,
             allow_pickle: bool) -> ClassifierParts:
        state = load_weights(source, revision=revision, token=token, allow_pickle=allow_pickle)
        return read_timm(source, config, state)
