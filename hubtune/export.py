"""Export a :class:`~hubtune.modeling.HubtuneForImageClassification` in the layout of its backbone's library.

* timm layout (``timm.models.save_for_hf``): ``config.json`` with ``architecture``, ``num_classes``,
  ``label_names``, ``model_args``, ``pretrained_cfg`` and ``model.safetensors``. Loads with
  ``timm.create_model("hf-hub:ORG/NAME", pretrained=True)`` and with transformers'
  ``AutoModelForImageClassification`` (its ``TimmWrapper`` classes).
* transformers layout: the backbone's own ``*ForImageClassification`` (``save_pretrained``) plus a
  ``preprocessor_config.json`` so ``AutoImageProcessor`` works.

Only the backbone and the classifier are exported; training-only heads (the Core-tuning projector) are
not. Every export is re-loaded with the plain library and its logits compared to the hubtune model before
it is written to the destination, so a layout that would not reproduce the model is never published.

``load_export`` reads both layouts back into a ``HubtuneForImageClassification``; ``detect_layout`` says
which layout a folder or Hub repo has.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from .modeling import HubtuneForImageClassification

EXPORT_LAYOUTS = ("timm", "transformers")
LOGITS_TOLERANCE = 1e-5
SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_INDEX_NAME = "model.safetensors.index.json"
PICKLE_WEIGHT_NAMES = ("pytorch_model.bin", "pytorch_model.pth", "model.pth", "model.pt", "model.ckpt")
PICKLE_SUFFIXES = (".bin", ".pth", ".pt", ".ckpt", ".pth.tar")


class ExportError(RuntimeError):
    """A model cannot be written in (or read from) a library layout without changing what it computes."""


class PickleCheckpointError(ExportError):
    """Only a pickle checkpoint was found and the caller did not opt in to loading it."""


# --------------------------------------------------------------------------------------------- save


def save_export(
    model: "HubtuneForImageClassification",
    save_directory: str | Path,
    export_format: str = "auto",
    safe_serialization: bool = True,
) -> Path:
    """Write ``model`` in the layout of a library so that plain timm / transformers load it.

    Args:
        model: the hubtune classifier.
        save_directory: destination folder (created if needed; files of the same name are replaced).
        export_format: ``"auto"`` (the backbone's library), ``"timm"``, ``"transformers"`` or ``"hubtune"``
            (hubtune's own layout, which keeps the training-only heads).
        safe_serialization: must be True: hubtune writes safetensors only.

    Returns:
        The destination folder.

    Raises:
        ExportError: the model cannot be expressed in that layout (another library's backbone, a
            non-linear or normalised head), or the re-loaded export does not reproduce the model's logits
            to 1e-5; use ``export_format="hubtune"`` then.
    """
    if not safe_serialization:
        raise ValueError("hubtune writes weights as safetensors only; pass safe_serialization=True.")
    save_directory = Path(save_directory)
    if export_format == "auto":
        export_format = model.config.default_export_format
    if export_format == "hubtune":
        from .modeling import HubtuneForImageClassification

        HubtuneForImageClassification.save_pretrained(model, save_directory, export_format="hubtune")
        return save_directory
    if export_format not in EXPORT_LAYOUTS:
        raise ValueError(f"export_format must be 'auto', 'hubtune', 'timm' or 'transformers', not {export_format!r}.")
    _check_exportable(model, export_format)

    was_training = model.training
    model.eval()
    try:
        with tempfile.TemporaryDirectory(prefix="hubtune-export-") as tmp:
            staging = Path(tmp)
            if export_format == "timm":
                _write_timm(model, staging)
            else:
                _write_transformers(model, staging)
            _verify_export(model, staging, export_format)
            save_directory.mkdir(parents=True, exist_ok=True)
            for item in staging.iterdir():
                shutil.copy2(item, save_directory / item.name)
    finally:
        model.train(was_training)
    return save_directory


def _check_exportable(model: "HubtuneForImageClassification", export_format: str) -> None:
    library = model.backbone.library
    if library != export_format:
        raise ExportError(
            f"A {library} backbone cannot be exported in the {export_format} layout; use export_format='auto' "
            f"(= {library!r}) or 'hubtune'."
        )
    if not isinstance(model.classifier, nn.Linear) or model.config.normalize_features:
        raise ExportError(
            f"This model's head ({type(model.classifier).__name__}, normalize_features="
            f"{model.config.normalize_features}) is not a plain linear classifier on the pooled features, so the "
            f"{export_format} layout cannot reproduce it. Use export_format='hubtune'."
        )


def _label_names(model: "HubtuneForImageClassification") -> list[str]:
    id2label = {int(k): str(v) for k, v in (model.config.id2label or {}).items()}
    return [id2label.get(i, f"LABEL_{i}") for i in range(model.config.num_labels)]


def _head_keys(full: dict[str, torch.Tensor], headless: dict[str, torch.Tensor], num_labels: int, dim: int,
               where: str) -> tuple[str, str | None]:
    """(weight key, bias key) of the classifier: the keys the C-class model has and the headless one lacks."""
    extra = {k: v for k, v in full.items() if k not in headless}
    weight = [k for k, v in extra.items() if tuple(v.shape) == (num_labels, dim)]
    bias = [k for k, v in extra.items() if tuple(v.shape) == (num_labels,)]
    if len(weight) != 1 or len(bias) > 1 or len(extra) != len(weight) + len(bias):
        raise ExportError(
            f"{where}: cannot find a single linear classifier ({num_labels}x{dim}) among the head parameters "
            f"{sorted(extra)}; this architecture's head is not a plain linear layer. Use export_format='hubtune'."
        )
    return weight[0], (bias[0] if bias else None)


def _classifier_state(model: "HubtuneForImageClassification", weight_key: str, bias_key: str | None) -> dict:
    classifier = model.classifier
    state = {weight_key: classifier.weight.detach().clone()}
    if bias_key is not None:
        bias = classifier.bias.detach().clone() if classifier.bias is not None else torch.zeros(classifier.out_features)
        state[bias_key] = bias
    elif classifier.bias is not None and bool(classifier.bias.detach().abs().max() > 0):
        raise ExportError("The library's classifier has no bias but the hubtune classifier has a non-zero one.")
    return state


def _write_timm(model: "HubtuneForImageClassification", folder: Path) -> None:
    import timm
    from timm.models import save_for_hf

    spec = model.config.backbone_spec
    num_labels = model.config.num_labels
    model_args = {k: v for k, v in dict(spec.get("model_args") or {}).items() if k != "num_classes"}
    library_model = timm.create_model(spec["architecture"], pretrained=False, num_classes=num_labels, **model_args)
    if getattr(model.backbone.model, "pretrained_cfg", None):
        library_model.pretrained_cfg = dict(model.backbone.model.pretrained_cfg)

    backbone_state = model.backbone.model.state_dict()
    weight_key, bias_key = _head_keys(
        library_model.state_dict(), backbone_state, num_labels, model.backbone.num_features, spec["architecture"]
    )
    library_model.load_state_dict({**backbone_state, **_classifier_state(model, weight_key, bias_key)}, strict=True)
    library_model.eval()

    pre = model.preprocessing
    data_config = {
        "input_size": tuple(pre.input_size),
        "mean": tuple(pre.mean),
        "std": tuple(pre.std),
        "interpolation": pre.interpolation,
        "crop_pct": pre.crop_pct,
    }
    save_for_hf(
        library_model,
        str(folder),
        model_config={"label_names": _label_names(model)},
        safe_serialization=True,
        data_config=data_config,
    )
    _drop_num_classes_from_model_args(folder / "config.json")


def _drop_num_classes_from_model_args(config_path: Path) -> None:
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


def _write_transformers(model: "HubtuneForImageClassification", folder: Path) -> None:
    from transformers import AutoConfig

    from .backbones import image_classification_class

    spec = model.config.backbone_spec
    config_dict = dict(spec["config"])
    model_type = config_dict.pop("model_type")
    config = AutoConfig.for_model(model_type, **config_dict)
    id2label = dict(enumerate(_label_names(model)))
    config.num_labels = model.config.num_labels
    config.id2label = id2label
    config.label2id = {name: i for i, name in id2label.items()}
    library_model = image_classification_class(config)(config)

    backbone_state = model.backbone.model.state_dict()
    weight_key, bias_key = _head_keys(
        library_model.state_dict(), backbone_state, config.num_labels, model.backbone.num_features, model_type
    )
    library_model.load_state_dict({**backbone_state, **_classifier_state(model, weight_key, bias_key)}, strict=True)
    library_model.eval()
    library_model.save_pretrained(str(folder))
    _image_processor(model).save_pretrained(str(folder))


def _image_processor(model: "HubtuneForImageClassification"):
    """A ViT-style image processor (resize, rescale, normalise) with hubtune's preprocessing."""
    from transformers import ViTImageProcessor
    from transformers.image_utils import PILImageResampling

    pre = model.preprocessing
    resample = {"bilinear": PILImageResampling.BILINEAR, "nearest": PILImageResampling.NEAREST}.get(
        pre.interpolation, PILImageResampling.BICUBIC
    )
    return ViTImageProcessor(
        do_resize=True,
        size={"height": int(pre.input_size[1]), "width": int(pre.input_size[2])},
        resample=resample,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(pre.mean),
        image_std=list(pre.std),
    )


def _verify_export(model: "HubtuneForImageClassification", folder: Path, layout: str) -> None:
    """Re-load the written folder with the plain library and compare its logits with the hubtune model's."""
    pre = model.preprocessing
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(2, *pre.input_size, generator=generator)
    with torch.no_grad():
        expected = model(pixel_values=pixel_values).logits.float()
        if layout == "timm":
            import timm

            reloaded = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
            actual = reloaded(pixel_values).float()
        else:
            from transformers import AutoModelForImageClassification

            reloaded = AutoModelForImageClassification.from_pretrained(str(folder)).eval()
            actual = reloaded(pixel_values=pixel_values).logits.float()
    if actual.shape != expected.shape:
        raise ExportError(
            f"The {layout} export gives logits of shape {tuple(actual.shape)}, the model {tuple(expected.shape)}. "
            "Use export_format='hubtune'."
        )
    diff = (actual - expected).abs().max().item()
    if not diff <= LOGITS_TOLERANCE:
        raise ExportError(
            f"The {layout} export does not reproduce the model: max |logit difference| = {diff:.3g} > "
            f"{LOGITS_TOLERANCE:g} after re-loading it with {layout}. Use export_format='hubtune'."
        )


# --------------------------------------------------------------------------------------------- read


def _is_local(path_or_repo: str | Path) -> bool:
    return Path(path_or_repo).is_dir()


def _fetch(path_or_repo: str, filename: str, revision: str | None, token: Any, required: bool = True) -> Path | None:
    """A file of a local folder or Hub repo; FileNotFoundError naming it when required and missing."""
    if _is_local(path_or_repo):
        path = Path(path_or_repo) / filename
        if path.is_file():
            return path
        if required:
            raise FileNotFoundError(f"{path_or_repo!r} has no {filename}; it is not a complete model folder.")
        return None
    if Path(path_or_repo).is_absolute() or path_or_repo.startswith((".", "~")) or Path(path_or_repo).exists():
        raise FileNotFoundError(f"{path_or_repo!r} is not a folder (and not a Hub repo id 'org/name').")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return Path(hf_hub_download(path_or_repo, filename, revision=revision, token=token))
    except EntryNotFoundError:
        if required:
            raise FileNotFoundError(
                f"Hub repo {path_or_repo!r} (revision {revision or 'main'}) has no {filename}; it is not a complete "
                "model repo."
            ) from None
        return None


def _list_files(path_or_repo: str, revision: str | None, token: Any) -> list[str]:
    if _is_local(path_or_repo):
        root = Path(path_or_repo)
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    from huggingface_hub import HfApi

    return HfApi().list_repo_files(path_or_repo, revision=revision, token=token)


def read_config(path_or_repo: str, revision: str | None, token: Any) -> dict[str, Any]:
    path = _fetch(path_or_repo, "config.json", revision, token)
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ExportError(f"config.json of {path_or_repo!r} is not valid JSON: {e}") from e


def layout_of_config(config: dict[str, Any]) -> str:
    """``"hubtune"``, ``"timm"`` or ``"transformers"`` for a parsed config.json."""
    model_type = config.get("model_type")
    if model_type == "hubtune":
        return "hubtune"
    if model_type is None and "architecture" in config and "pretrained_cfg" in config:
        return "timm"
    if model_type:
        return "transformers"
    raise ExportError(
        "config.json has neither a model_type (transformers / hubtune) nor timm's architecture and "
        "pretrained_cfg; it is not a model hubtune can load."
    )


def detect_layout(path_or_repo: str | Path, *, revision: str | None = None, token: Any = None) -> str:
    """Which layout a local folder or Hub repo has: ``"hubtune"``, ``"timm"`` or ``"transformers"``.

    Raises FileNotFoundError naming config.json when it is missing.
    """
    return layout_of_config(read_config(str(path_or_repo), revision, token))


def load_weights(
    path_or_repo: str | Path, *, revision: str | None = None, token: Any = None, allow_pickle: bool = False
) -> dict[str, torch.Tensor]:
    """The state dict of a folder or Hub repo: ``model.safetensors`` (or its shards).

    A pickle checkpoint (``.bin``, ``.pth``, ``.pt``, ``.ckpt``) is loaded only with ``allow_pickle=True``, and
    then with ``torch.load(weights_only=True)``. A folder with no weights raises FileNotFoundError naming
    ``model.safetensors``.
    """
    from safetensors.torch import load_file

    source = str(path_or_repo)
    single = _fetch(source, SAFE_WEIGHTS_NAME, revision, token, required=False)
    if single is not None:
        return load_file(str(single))
    index = _fetch(source, SAFE_INDEX_NAME, revision, token, required=False)
    if index is not None:
        shards = sorted(set(json.loads(Path(index).read_text(encoding="utf-8"))["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(load_file(str(_fetch(source, shard, revision, token))))
        return state
    preferred = _allowed_pickle(source, revision, token, allow_pickle)
    path = _fetch(source, preferred, revision, token)
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ExportError(f"{preferred[0]} of {source!r} does not hold a state dict.")
    return state


def _allowed_pickle(source: str, revision: str | None, token: Any, allow_pickle: bool) -> str:
    """The pickle checkpoint to read when there is no safetensors file, if the caller allowed pickles."""
    pickles = [f for f in _list_files(source, revision, token) if f.endswith(PICKLE_SUFFIXES) and "/" not in f]
    if not pickles:
        raise FileNotFoundError(
            f"{source!r} has no weights: neither {SAFE_WEIGHTS_NAME} nor {SAFE_INDEX_NAME} was found."
        )
    if not allow_pickle:
        raise PickleCheckpointError(
            f"{source!r} has no {SAFE_WEIGHTS_NAME}, only pickle checkpoint(s) {pickles}. Loading a pickle can run "
            "arbitrary code, so hubtune refuses it. If you trust the source, pass allow_pickle=True (it is then "
            "read with torch.load(weights_only=True)), or convert it to safetensors."
        )
    return ([name for name in PICKLE_WEIGHT_NAMES if name in pickles] or pickles)[0]


def _weights_kind(source: str, revision: str | None, token: Any, allow_pickle: bool) -> str:
    """``"safetensors"`` or ``"pickle"`` (only when allowed); errors as :func:`load_weights`."""
    for name in (SAFE_WEIGHTS_NAME, SAFE_INDEX_NAME):
        if _fetch(source, name, revision, token, required=False) is not None:
            return "safetensors"
    _allowed_pickle(source, revision, token, allow_pickle)
    return "pickle"


def _preprocessing_from_timm(pretrained_cfg: dict[str, Any]) -> dict[str, Any]:
    from .backbones import PreprocessingConfig

    default = PreprocessingConfig()
    return PreprocessingConfig(
        input_size=tuple(pretrained_cfg.get("input_size", default.input_size)),
        mean=tuple(pretrained_cfg.get("mean", default.mean)),
        std=tuple(pretrained_cfg.get("std", default.std)),
        interpolation=pretrained_cfg.get("interpolation", default.interpolation) or default.interpolation,
        crop_pct=float(pretrained_cfg.get("crop_pct", default.crop_pct) or default.crop_pct),
    ).to_dict()


def _preprocessing_from_processor(processor: dict[str, Any] | None, config: dict[str, Any]) -> dict[str, Any]:
    from .backbones import PreprocessingConfig

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
    in_chans = int(config.get("num_channels", 3))
    return PreprocessingConfig(
        input_size=(in_chans, height, width), mean=mean, std=std, interpolation=interpolation,
        crop_pct=default.crop_pct,
    ).to_dict()


def _hubtune_from_parts(spec, preprocessing, id2label, head_weight, head_bias, backbone_state, source, **config_kwargs):
    from .backbones import backbone_from_spec
    from .modeling import HubtuneConfig, HubtuneForImageClassification

    backbone = backbone_from_spec(spec, preprocessing)
    missing, unexpected = backbone.model.load_state_dict(backbone_state, strict=False)
    if missing or unexpected:
        raise ExportError(
            f"The weights of {source!r} do not match its config: missing {sorted(missing)[:5]}, unexpected "
            f"{sorted(unexpected)[:5]}."
        )
    num_labels = head_weight.shape[0]
    if head_weight.shape[1] != backbone.num_features:
        raise ExportError(
            f"The classifier of {source!r} reads {head_weight.shape[1]} features but the backbone gives "
            f"{backbone.num_features}."
        )
    config_kwargs.setdefault("classifier_bias", True)
    config = HubtuneConfig(
        backbone_spec=backbone.spec,
        preprocessing=preprocessing,
        backbone_name=source,
        num_labels=num_labels,
        id2label=id2label,
        label2id={name: i for i, name in id2label.items()},
        **config_kwargs,
    )
    model = HubtuneForImageClassification(config, backbone=backbone)
    with torch.no_grad():
        model.classifier.weight.copy_(head_weight)
        if model.classifier.bias is not None:
            model.classifier.bias.copy_(head_bias if head_bias is not None else torch.zeros(num_labels))
    return model.eval()


def _split_head(state: dict[str, torch.Tensor], headless_keys: set[str], source: str):
    extra = {k: v for k, v in state.items() if k not in headless_keys}
    weights = [k for k, v in extra.items() if v.ndim == 2]
    biases = [k for k, v in extra.items() if v.ndim == 1]
    if len(weights) != 1 or len(biases) > 1 or len(extra) != len(weights) + len(biases):
        raise ExportError(
            f"Cannot find a single linear classifier in the weights of {source!r} (head parameters: "
            f"{sorted(extra)}); hubtune only loads plain linear classification heads."
        )
    backbone_state = {k: v for k, v in state.items() if k in headless_keys}
    return backbone_state, extra[weights[0]], (extra[biases[0]] if biases else None)


def load_export(
    path_or_repo: str | Path,
    *,
    revision: str | None = None,
    token: Any = None,
    allow_pickle: bool = False,
    **config_kwargs: Any,
) -> "HubtuneForImageClassification":
    """Load a timm- or transformers-layout classifier (folder or Hub repo) as a ``HubtuneForImageClassification``.

    Args:
        path_or_repo: a local folder or a Hub repo id ``"org/name"``.
        revision: Hub branch, tag or commit.
        token: Hub token (default: ``HF_TOKEN`` / the stored login).
        allow_pickle: allow a pickle checkpoint when no safetensors file exists.
        **config_kwargs: :class:`~hubtune.modeling.HubtuneConfig` fields for further training (``method``,
            ``method_preset``, ``loss_kwargs``, ...). The training-only heads are freshly initialised.

    The model comes back in eval mode, with the library's label names as ``id2label``.
    """
    source = str(path_or_repo)
    config = read_config(source, revision, token)
    layout = layout_of_config(config)
    if layout == "hubtune":
        from .modeling import HubtuneForImageClassification

        return HubtuneForImageClassification.from_pretrained(
            source, revision=revision, token=token, allow_pickle=allow_pickle
        )
    if layout == "timm":
        state = load_weights(source, revision=revision, token=token, allow_pickle=allow_pickle)
        return _load_timm(source, config, state, **config_kwargs)
    weights_kind = _weights_kind(source, revision, token, allow_pickle)
    processor_path = _fetch(source, "preprocessor_config.json", revision, token, required=False)
    processor = json.loads(processor_path.read_text(encoding="utf-8")) if processor_path else None
    return _load_transformers(
        source, config, processor, revision=revision, token=token, use_safetensors=weights_kind == "safetensors",
        **config_kwargs,
    )


def _load_timm(source: str, config: dict[str, Any], state: dict[str, torch.Tensor], **config_kwargs):
    import timm

    model_args = {k: v for k, v in dict(config.get("model_args") or {}).items() if k != "num_classes"}
    pretrained_cfg = dict(config.get("pretrained_cfg") or {})
    architecture = config["architecture"]
    headless = timm.create_model(architecture, pretrained=False, num_classes=0, **model_args)
    backbone_state, weight, bias = _split_head(state, set(headless.state_dict()), source)
    label_names = config.get("label_names") or pretrained_cfg.get("label_names")
    if isinstance(label_names, dict):
        id2label = {int(k): str(v) for k, v in label_names.items()}
    elif label_names:
        id2label = {i: str(name) for i, name in enumerate(label_names)}
    else:
        id2label = {i: f"LABEL_{i}" for i in range(weight.shape[0])}
    name = source if _is_local(source) else f"hf-hub:{source}"
    spec = {
        "library": "timm",
        "name": name,
        "architecture": architecture,
        "model_args": model_args,
        "pretrained_cfg": pretrained_cfg,
    }
    return _hubtune_from_parts(
        spec, _preprocessing_from_timm(pretrained_cfg), id2label, weight, bias, backbone_state, source, **config_kwargs
    )


def _load_transformers(source, config, processor, *, revision, token, use_safetensors, **config_kwargs):
    from transformers import AutoConfig

    from .backbones import image_classification_class

    config_dict = {
        k: v for k, v in config.items()
        if k not in ("id2label", "label2id", "architectures", "transformers_version", "_name_or_path")
    }
    model_type = config_dict.pop("model_type")
    library_config = AutoConfig.from_pretrained(source, revision=revision, token=token)
    # The library's own loader, so that checkpoint key renames between transformers versions are applied.
    full, info = image_classification_class(library_config).from_pretrained(
        source, config=library_config, revision=revision, token=token, use_safetensors=use_safetensors,
        output_loading_info=True,
    )
    if info.get("missing_keys") or info.get("mismatched_keys"):
        raise ExportError(
            f"The weights of {source!r} do not match its config: missing {sorted(info['missing_keys'])[:5]}, "
            f"mismatched {list(info.get('mismatched_keys', []))[:5]}."
        )
    headless_config = AutoConfig.for_model(model_type, **config_dict)
    headless_config.num_labels = 0
    headless = image_classification_class(headless_config)(headless_config)
    backbone_state, weight, bias = _split_head(full.state_dict(), set(headless.state_dict()), source)
    id2label = {int(k): str(v) for k, v in (config.get("id2label") or {}).items()}
    if len(id2label) != weight.shape[0]:
        id2label = {i: f"LABEL_{i}" for i in range(weight.shape[0])}
    spec = {"library": "transformers", "name": source, "config": {"model_type": model_type, **config_dict}}
    preprocessing = _preprocessing_from_processor(processor, config)
    return _hubtune_from_parts(spec, preprocessing, id2label, weight, bias, backbone_state, source, **config_kwargs)
