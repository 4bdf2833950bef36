"""One interface over timm models and transformers vision models.

A :class:`Backbone` maps ``pixel_values`` (B, C, H, W) to pooled features (B, D) and knows its
feature size and the preprocessing (mean, std, input size) its weights expect.

* timm: the model is created with ``num_classes=0``, so its forward returns the pre-logits features.
* transformers: the model is the architecture's own ``*ForImageClassification`` class built with
  ``num_labels=0``; those classes then use ``nn.Identity`` as classifier, so their ``logits`` are
  exactly the features their classifier would read (CLS token for ViT, CLS + mean patch for DINOv2,
  pooler output for ConvNeXt / Swin / ResNet ...). Exporting to the same class later is then exact.

Every backbone can describe itself as a JSON-serialisable ``spec`` from which the same architecture
is rebuilt without any download (used by ``HubtuneConfig``).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hubtune.errors import BackboneError, PretrainedWeightsError, WeightsFileError
from hubtune.files import read_json_file
from hubtune.offline import hub_offline, not_in_cache

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# How a user of `hubtune finetune` / `compare` asks for random weights, named when pretrained ones cannot be loaded.
RANDOM_WEIGHTS_OPTION = "--pretrained false"


@dataclass(frozen=True)
class PreprocessingConfig:
    """What an image must look like before it enters the backbone (timm's ``data_config`` terms)."""

    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bicubic"
    crop_pct: float = 0.875

    @property
    def image_size(self) -> tuple[int, int]:
        return (self.input_size[1], self.input_size[2])

    def with_image_size(self, size: int | tuple[int, int] | None) -> "PreprocessingConfig":
        if size is None:
            return self
        h, w = (size, size) if isinstance(size, int) else size
        return replace(self, input_size=(self.input_size[0], int(h), int(w)))

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PreprocessingConfig":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        for key in ("input_size", "mean", "std"):
            if key in known:
                known[key] = tuple(known[key])
        return cls(**known)


class Backbone(nn.Module):
    """Pooled image features from a timm or transformers model.

    Attributes:
        library: ``"timm"`` or ``"transformers"``.
        model: the wrapped library model.
        num_features: size D of the pooled features.
        preprocessing: the :class:`PreprocessingConfig` its weights expect.
        spec: JSON-serialisable description to rebuild the architecture offline.
        source_classifier: the pretrained weights' own linear classifier (``{"weight": (S, D), "bias": (S,) or
            None}``, plain tensors, not part of the module or its state dict) when the backbone was created
            with pretrained timm weights that ship one (an ImageNet head, say) and ``keep_source_classifier``;
            None otherwise. Methods that
            use the source label space (Co-Tuning) take it from here.
    """

    library: str

    def __init__(self, model: nn.Module, spec: dict[str, Any], preprocessing: PreprocessingConfig, num_features: int,
                 source_classifier: dict[str, torch.Tensor | None] | None = None):
        super().__init__()
        self.model = model
        self.spec = spec
        self.preprocessing = preprocessing
        self.num_features = int(num_features)
        self.source_classifier = source_classifier

    def pooled_with(self, model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
        """The pooled features of ``model``: this backbone's library model or a copy of it (DELTA's frozen start)."""
        raise NotImplementedError

    def feature_levels(self) -> list[tuple[str, Any]]:
        """The modules (names inside :attr:`model`) whose outputs the library returns as intermediate feature maps,
        in depth order, each with its resolution (a reduction factor, or an index for a list of stages)."""
        raise NotImplementedError

    def feature_map_modules(self, count: int = 4) -> list[str]:
        """``count`` of :meth:`feature_levels` at increasing depth: the last module of each of the last ``count``
        resolutions (a ResNet's four stages), or ``count`` blocks evenly spaced up to the last one when every block
        keeps one resolution (a ViT)."""
        levels = self.feature_levels()
        return _pick_levels([name for name, _ in levels], [reduction for _, reduction in levels], count)

    def pooled_and_maps(self, model: nn.Module, pixel_values: torch.Tensor,
                        names: list[str]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """In one pass of ``model`` (this backbone's library model or a copy of it): the pooled features and the
        outputs of the :meth:`feature_levels` ``names`` (in depth order), through the library's own API (timm's
        ``forward_intermediates``, transformers' ``output_hidden_states``), so that ``torch.compile`` sees no hooks."""
        raise NotImplementedError

    def _level_indices(self, names: list[str]) -> list[int]:
        levels = [name for name, _ in self.feature_levels()]
        unknown = [name for name in names if name not in levels]
        if unknown:
            raise BackboneError(f"{', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not a feature level of "
                                f"{self.spec.get('name')!r}; its levels are: {', '.join(levels)}.")
        return [levels.index(name) for name in names]

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        feats = self.pooled_with(self.model, pixel_values)
        if feats.ndim != 2:
            raise BackboneError(
                f"Backbone {self.spec.get('name')!r} yields features of shape {tuple(feats.shape)}, not pooled "
                "(batch, features). Create it with a global pooling (timm: global_pool='avg'; transformers: a "
                "model whose image-classification class pools its output)."
            )
        return feats


def _pick_levels(names: list[str], reductions: list[Any], count: int) -> list[str]:
    """The last name of each of the last ``count`` distinct reductions; with a single reduction, ``count`` names evenly
    spaced up to the last (``[2, 5, 8, 11]`` of 12)."""
    if len(set(reductions)) > 1:
        last_of = {}
        for name, reduction in zip(names, reductions):
            last_of[reduction] = name  # insertion order follows depth; a later block of one resolution wins
        return list(last_of.values())[-count:]
    count = min(count, len(names))
    return [names[round((i + 1) * len(names) / count) - 1] for i in range(count)]


class TimmBackbone(Backbone):
    library = "timm"

    def pooled_with(self, model, pixel_values):
        return model(pixel_values)

    def feature_levels(self) -> list[tuple[str, Any]]:
        info = getattr(self.model, "feature_info", None)
        if not info or not hasattr(self.model, "forward_intermediates"):
            raise BackboneError(f"timm model {self.spec.get('name')!r} has no feature_info / forward_intermediates, "
                                "so its intermediate feature maps cannot be read; use another backbone or method.")
        return [(dict(e)["module"], dict(e).get("reduction")) for e in info]

    def pooled_and_maps(self, model, pixel_values, names):
        final, maps = model.forward_intermediates(pixel_values, indices=self._level_indices(names))
        return model.forward_head(final), list(maps)


class TransformersBackbone(Backbone):
    library = "transformers"

    def pooled_with(self, model, pixel_values):
        return model(pixel_values=pixel_values).logits

    def feature_levels(self) -> list[tuple[str, Any]]:
        # The outermost list of blocks, whose outputs are hidden_states[1:]: ``vit.layers`` (transformers 5's ViT),
        # ``*.encoder.layer`` (DeiT, DINOv2, BEiT), ``*.encoder.layers`` (Swin) or ``*.encoder.stages`` (ConvNeXt,
        # ResNet; stages change resolution).
        for name, module in self.model.named_modules():
            if isinstance(module, nn.ModuleList) and name.rsplit(".", 1)[-1] in ("layer", "layers", "stages", "blocks"):
                staged = name.endswith("stages")
                return [(f"{name}.{i}", i if staged else 0) for i in range(len(module))]
        raise BackboneError(f"transformers model {self.spec.get('name')!r} has no list of blocks (layers, encoder.layer "
                            "or encoder.stages) whose hidden states could be read; use another backbone or method.")

    def pooled_and_maps(self, model, pixel_values, names):
        out = model(pixel_values=pixel_values, output_hidden_states=True)
        return out.logits, [out.hidden_states[i + 1] for i in self._level_indices(names)]


# --------------------------------------------------------------------------------------------- helpers


def _pooled_size(model: nn.Module, forward, in_chans: int, image_size: tuple[int, int], name: str) -> int:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = forward(torch.zeros(1, in_chans, *image_size))
    finally:
        model.train(was_training)
    if out.ndim != 2:
        raise BackboneError(
            f"Backbone {name!r} yields features of shape {tuple(out.shape)}, not pooled (batch, features). "
            "Create it with a global pooling (timm: global_pool='avg'), or choose another model."
        )
    return int(out.shape[-1])


def _looks_like_timm_config(cfg: dict[str, Any]) -> bool:
    return "model_type" not in cfg and "architecture" in cfg


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
    for key, value in (("label_names", config.get("label_names")), ("pretrained_cfg.label_names",
                                                                    pretrained_cfg.get("label_names"))):
        if value is None:
            continue
        if isinstance(value, dict):
            if not all(isinstance(k, str) and k.strip().isdigit() for k in value):
                raise timm_config_error(source, f"{key} as a mapping must have class indices as keys, not {_describe(value)}")
        elif not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
            raise timm_config_error(source, f"{key} must be a list of class names, not {_describe(value)}")
    checks = {
        "input_size": lambda v: isinstance(v, list) and len(v) == 3 and all(
            isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v),
        "mean": lambda v: isinstance(v, list) and len(v) >= 1 and all(_is_number(x) for x in v),
        "std": lambda v: isinstance(v, list) and len(v) >= 1 and all(_is_number(x) and x > 0 for x in v),
        "crop_pct": lambda v: _is_number(v) and v > 0,
        "interpolation": lambda v: isinstance(v, str),
    }
    wanted = {"input_size": "[channels, height, width] (positive integers)", "mean": "a list of numbers",
              "std": "a list of positive numbers", "crop_pct": "a positive number",
              "interpolation": "a name such as 'bicubic'"}
    for key, ok in checks.items():
        value = pretrained_cfg.get(key)
        if value is not None and not ok(value):
            raise timm_config_error(source, f"pretrained_cfg.{key} must be {wanted[key]}, not {_describe(value)}")




def _hub_config(repo_id: str) -> dict[str, Any] | None:
    """config.json of a Hub repo, or None if it cannot be fetched."""
    from huggingface_hub import hf_hub_download

    try:
        return read_json_file(Path(hf_hub_download(repo_id, "config.json")))
    except Exception:  # noqa: BLE001 - any failure means "not resolvable as a Hub repo"
        return None


def _unknown_backbone(name: str) -> BackboneError:
    import timm

    close = difflib.get_close_matches(name, timm.list_models(pretrained=False), n=5, cutoff=0.6)
    hint = f" Close timm names: {', '.join(close)}." if close else ""
    if "/" in name and hub_offline():
        return BackboneError(f"Cannot use backbone {name!r}: {not_in_cache(f'Hub repo {name!r}')}.")
    return BackboneError(
        f"Unknown backbone {name!r}. Use a timm model name (list them with timm.list_models('*resnet*')), "
        "'hf-hub:ORG/NAME' or 'local-dir:PATH' for timm weights, or a transformers vision model id or local "
        f"folder with a config.json (e.g. 'google/vit-base-patch16-224').{hint}"
    )


def names_weights(name: str) -> bool:
    """Whether a backbone name points at one set of weights (``hf-hub:ORG/NAME``, ``local-dir:PATH``, a local
    folder, a transformers ``ORG/NAME`` id) rather than an architecture (a bare timm name such as ``resnet18``)."""
    return name.startswith(("hf-hub:", "local-dir:")) or "/" in name or Path(name).is_dir()


def resolve_library(name: str) -> str:
    """Which library a backbone name belongs to: ``"timm"`` or ``"transformers"``."""
    import timm

    if name.startswith(("hf-hub:", "local-dir:", "timm:")):
        return "timm"
    path = Path(name)
    if path.is_dir():
        cfg_path = path / "config.json"
        if not cfg_path.is_file():
            raise BackboneError(f"Backbone folder {name!r} has no config.json; it is not a saved timm or transformers model.")
        return "timm" if _looks_like_timm_config(read_json_file(cfg_path)) else "transformers"
    if timm.is_model(name):
        return "timm"
    if "/" in name:
        cfg = _hub_config(name)
        if cfg is not None and _looks_like_timm_config(cfg):
            return "timm"
        return "transformers"
    raise _unknown_backbone(name)


# --------------------------------------------------------------------------------------------- timm


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


def _create_timm(name: str, pretrained: bool, model_kwargs: dict[str, Any],
                 keep_source_classifier: bool = False, random_weights: str = RANDOM_WEIGHTS_OPTION) -> TimmBackbone:
    import timm
    from timm.models._hub import load_model_config_from_hf, load_model_config_from_path

    if name.startswith("timm:"):
        name = name[len("timm:"):]
    model_args: dict[str, Any] = {}
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
            raise _unknown_backbone(name)
        architecture = name
    model_args = {k: v for k, v in dict(model_args or {}).items() if k != "num_classes"}
    model_args.update(model_kwargs)

    source_classifier = None
    if pretrained:
        try:
            if keep_source_classifier:
                # With the weights' own head, kept aside (see Backbone.source_classifier), then removed: the same
                # pooled features as creating the model with num_classes=0 (only the random draws differ).
                model = timm.create_model(name, pretrained=True, **model_kwargs)
                source_classifier = _take_source_classifier(model)
            else:
                model = timm.create_model(name, pretrained=True, num_classes=0, **model_kwargs)
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
    else:
        model = timm.create_model(architecture, pretrained=False, num_classes=0, **model_args)
    preprocessing = _timm_preprocessing(model)
    if "img_size" in model_args:  # the model was built for another size than its pretrained_cfg says
        preprocessing = preprocessing.with_image_size(model_args["img_size"])
    spec = {
        "library": "timm",
        "name": name,
        "architecture": architecture,
        "model_args": _jsonable(model_args),
        "pretrained_cfg": _describe_weights(_jsonable(dict(getattr(model, "pretrained_cfg", {}) or {})), pretrained),
    }
    num_features = _pooled_size(model, model, preprocessing.input_size[0], preprocessing.image_size, name)
    return TimmBackbone(model, spec, preprocessing, num_features, source_classifier)


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


def _timm_from_spec(spec: dict[str, Any], preprocessing: PreprocessingConfig | None) -> TimmBackbone:
    import timm

    model = timm.create_model(spec["architecture"], pretrained=False, num_classes=0, **spec.get("model_args", {}))
    pre = preprocessing or _timm_preprocessing(model)
    if preprocessing is None and "img_size" in spec.get("model_args", {}):
        pre = pre.with_image_size(spec["model_args"]["img_size"])
    num_features = getattr(model, "num_features", None) or _pooled_size(
        model, model, pre.input_size[0], pre.image_size, spec["architecture"]
    )
    return TimmBackbone(model, dict(spec), pre, num_features)


# --------------------------------------------------------------------------------------------- transformers


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
    return PreprocessingConfig(input_size=(in_chans, *size), mean=mean, std=std, interpolation="bicubic", crop_pct=crop_pct)


def _create_transformers(name: str, pretrained: bool, model_kwargs: dict[str, Any]) -> TransformersBackbone:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name, **model_kwargs)
    except Exception as e:  # noqa: BLE001
        if not Path(name).exists() and hub_offline():
            raise PretrainedWeightsError(f"Could not load {name!r}: {not_in_cache('its config.json')}.") from e
        if Path(name).exists() or pretrained:
            raise PretrainedWeightsError(f"Could not load the transformers config of {name!r}: {e}") from e
        raise _unknown_backbone(name) from e
    config.num_labels = 0
    cls = image_classification_class(config)
    if pretrained:
        try:
            model = cls.from_pretrained(name, config=config)
        except Exception as e:  # noqa: BLE001
            if isinstance(e, OSError) and not Path(name).exists() and hub_offline():
                raise PretrainedWeightsError(
                    f"Could not load pretrained weights for {name!r}: {not_in_cache('its weights file')}, or pass "
                    f"{RANDOM_WEIGHTS_OPTION} to start from random weights.") from e
            raise PretrainedWeightsError(
                f"Could not load pretrained weights for transformers model {name!r}: {type(e).__name__}: {e}. "
                "Check the id and your connection (HF_ENDPOINT, HF_TOKEN), pass a local folder, or pass "
                f"{RANDOM_WEIGHTS_OPTION} to start from random weights."
            ) from e
    else:
        model = cls(config)
    return _wrap_transformers(model, name, _transformers_preprocessing(name, config))


def _wrap_transformers(model, name: str, preprocessing: PreprocessingConfig) -> TransformersBackbone:
    config_dict = model.config.to_dict()
    for key in ("id2label", "label2id", "architectures", "transformers_version", "_name_or_path"):
        config_dict.pop(key, None)
    spec = {"library": "transformers", "name": name, "config": config_dict}
    num_features = _pooled_size(
        model, lambda x: model(pixel_values=x).logits, preprocessing.input_size[0], preprocessing.image_size, name
    )
    return TransformersBackbone(model, spec, preprocessing, num_features)


def _transformers_from_spec(spec: dict[str, Any], preprocessing: PreprocessingConfig | None) -> TransformersBackbone:
    from transformers import AutoConfig

    cfg = dict(spec["config"])
    config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    config.num_labels = 0
    model = image_classification_class(config)(config)
    pre = preprocessing or _transformers_preprocessing(spec.get("name", ""), config)
    return _wrap_transformers(model, spec.get("name", ""), pre)


# --------------------------------------------------------------------------------------------- public API


def create_backbone(
    name: str,
    pretrained: bool = False,
    library: str | None = None,
    image_size: int | None = None,
    keep_source_classifier: bool = False,
    random_weights: str = RANDOM_WEIGHTS_OPTION,
    **model_kwargs: Any,
) -> Backbone:
    """Create a :class:`Backbone` from a timm or transformers name.

    Args:
        name: a timm model name (``"resnet18"``, ``"vit_tiny_patch16_224.augreg_in21k"``), ``"hf-hub:ORG/NAME"``
            or ``"local-dir:PATH"`` for timm weights, or a transformers model id / local folder
            (``"google/vit-base-patch16-224"``, ``"facebook/dinov2-small"``).
        pretrained: load pretrained weights (through timm / transformers). A failure raises
            :class:`PretrainedWeightsError`; it never falls back to random weights.
        library: ``"timm"`` or ``"transformers"`` to skip auto-detection.
        image_size: override the input size of the preprocessing config.
        keep_source_classifier: keep the pretrained timm weights' own linear head aside, as
            ``Backbone.source_classifier`` (for methods that use the source label space, Co-Tuning).
        random_weights: how the caller's user asks for random weights instead, named when pretrained weights
            cannot be loaded (``hubtune finetune``'s ``--pretrained false`` unless said otherwise).
        **model_kwargs: passed to ``timm.create_model`` or ``AutoConfig.from_pretrained``.
    """
    if not isinstance(name, str) or not name:
        raise BackboneError("The backbone name must be a non-empty string such as 'resnet18'.")
    library = library or resolve_library(name)
    if library == "timm":
        if "/" in name and not name.startswith(("hf-hub:", "local-dir:", "timm:")):
            name = ("local-dir:" if Path(name).is_dir() else "hf-hub:") + name
        backbone = _create_timm(name, pretrained, model_kwargs, keep_source_classifier, random_weights)
    elif library == "transformers":
        backbone = _create_transformers(name, pretrained, model_kwargs)
    else:
        raise BackboneError(f"library must be 'timm' or 'transformers', not {library!r}.")
    backbone.preprocessing = backbone.preprocessing.with_image_size(image_size)
    backbone.spec["pretrained"] = bool(pretrained)
    backbone.spec["name"] = public_name(backbone.spec.get("name"))
    return backbone


def backbone_from_spec(spec: dict[str, Any], preprocessing: dict[str, Any] | PreprocessingConfig | None = None) -> Backbone:
    """Rebuild a backbone's architecture (random weights, no download) from its ``spec``."""
    if isinstance(preprocessing, dict):
        preprocessing = PreprocessingConfig.from_dict(preprocessing)
    library = spec.get("library")
    if library == "timm":
        return _timm_from_spec(spec, preprocessing)
    if library == "transformers":
        return _transformers_from_spec(spec, preprocessing)
    raise BackboneError(f"Backbone spec has unknown library {library!r}; expected 'timm' or 'transformers'.")


# pretrained_cfg fields that describe a set of weights (where they came from, their tag and licence).
_WEIGHTS_FIELDS = ("url", "file", "hf_hub_id", "hf_hub_filename", "tag", "license", "description", "origin_url",
                   "paper_ids", "paper_name", "notes", "state_dict", "source")


def public_name(name: str | None) -> str | None:
    """A backbone name safe to publish: a local folder is named by its last component, never its full path."""
    if not name:
        return name
    prefix = "local-dir:" if str(name).startswith("local-dir:") else ""
    rest = str(name)[len(prefix):]
    path = Path(rest).expanduser()
    if prefix or path.is_absolute() or rest.startswith((".", "~")) or path.exists():
        return prefix + path.name
    return str(name)


def card_name(name: str | None, spec: dict[str, Any]) -> str | None:
    """The backbone as a model card names it: ``name`` (:func:`public_name`), except that random weights built from
    a ``local-dir:`` folder are named by their architecture (``resnet10t``, not the folder): the folder gave only
    the architecture, none of its weights."""
    if spec.get("pretrained") or not str(name or "").startswith("local-dir:"):
        return name
    return spec.get("architecture") or name


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


def _jsonable(obj: Any) -> Any:
    """Drop what JSON cannot carry (callables, tensors) from a nested dict of model arguments."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items() if _is_json_leaf_or_container(v)}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def _is_json_leaf_or_container(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool, dict, list, tuple))
