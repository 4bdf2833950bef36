"""Convert self-supervised and torchvision checkpoints into a timm ``local-dir:`` folder (safetensors).

Core-tuning's published rows start from MoCo-v2 ResNet-50 checkpoints: ``.pth.tar`` files holding
``{"state_dict": {"module.encoder_q.conv1.weight": ...}, "epoch": ..., "arch": "resnet50", ...}``.
:func:`convert_checkpoint` turns such a file into a folder in timm's ``save_for_hf`` layout (``config.json`` +
``model.safetensors``) that every hubtune entry point accepts as the backbone ``local-dir:FOLDER`` with
``pretrained=True``. Layouts read:

``moco`` (MoCo v1 / v2)
    keys ``module.encoder_q.*`` (or ``encoder_q.*``); the projection head ``encoder_q.fc.*`` is dropped and the
    key encoder (``encoder_k.*``) and the ``queue`` are ignored.
``mocov3``
    keys ``module.base_encoder.*`` (or ``base_encoder.*``); the projection MLP (``fc.*`` for ResNets, ``head.*``
    for ViTs) is dropped and ``momentum_encoder.*`` / ``predictor.*`` are ignored.
``torchvision``
    a plain state dict (``conv1.weight``, ...; an optional ``module.`` prefix is stripped); the classifier
    (``fc.*`` for ResNets, the architecture's classifier otherwise) is dropped.

torchvision's ResNet keys are timm's ``resnet*`` keys, so the backbone is built with
``timm.create_model(architecture, num_classes=0)`` and the converted keys must match its keys exactly: any
missing or unexpected key, or a shape that differs, is an error naming them. Checkpoints are read with
``torch.load(weights_only=True)`` only: a file that needs full unpickling is refused, never executed.
"""

from __future__ import annotations

import difflib
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from hubtune.errors import ConfigError, ModelFileError, OutputDirError, WeightsFileError
from hubtune.layouts.files import check_finite
from hubtune.layouts.timm import drop_num_classes_from_model_args
from hubtune.permissions import give_default_permissions

__all__ = [
    "SOURCE_FORMATS",
    "convert_checkpoint",
    "detect_source_format",
    "extract_backbone_state",
    "load_checkpoint_state_dict",
    "save_timm_folder",
]

SOURCE_FORMATS = ("auto", "moco", "mocov3", "torchvision")

# Key prefixes of the encoder to keep, per layout (tried in order; "module." is DataParallel's wrapper).
_ENCODER_PREFIXES = {
    "moco": ("module.encoder_q.", "encoder_q."),
    "mocov3": ("module.base_encoder.", "base_encoder."),
    "torchvision": ("module.", ""),
}
# Projection heads / classifiers that are not part of the feature extractor (dropped when the target lacks them).
_HEAD_PREFIXES = {"moco": ("fc.",), "mocov3": ("fc.", "head."), "torchvision": ("fc.",)}
# ImageNet normalisation and the torchvision evaluation transform (resize 256, centre crop 224, bilinear),
# which MoCo and torchvision checkpoints were trained and evaluated with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_MAX_NAMED = 5
# Entries of a timm pretrained_cfg that describe the architecture, not where some weights came from.
_STRUCTURAL_CFG_KEYS = ("architecture", "input_size", "fixed_input_size", "interpolation", "crop_pct", "crop_mode",
                        "mean", "std", "num_classes", "pool_size", "first_conv", "classifier")


def _few(keys, limit: int = _MAX_NAMED) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


# ------------------------------------------------------------------------------------------- reading


def _check_checkpoint_format(path: Path) -> None:
    """WeightsFileError unless the file starts as torch.save writes: a zip archive, or (legacy) a pickle."""
    with open(path, "rb") as f:
        head = f.read(4)
    is_zip = head[:4] in (b"PK\x03\x04", b"PK\x05\x06")
    is_pickle = len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5
    if is_zip or is_pickle:
        return
    what = "is empty" if not head else f"starts with bytes {head!r}"
    raise WeightsFileError(
        f"{str(path)!r} is not a checkpoint: it is neither a PyTorch zip file (torch.save) nor a legacy pickle "
        f"checkpoint (it {what}). Give the .pth / .pth.tar file that torch.save wrote; a download may have failed."
    )


def load_checkpoint_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors of a ``.pth`` / ``.pth.tar`` checkpoint and its other top-level entries (``epoch``, ``arch`` ...).

    Reads with ``torch.load(map_location="cpu", weights_only=True)``. Accepts ``{"state_dict": {...}}``,
    ``{"model": {...}}`` and a bare state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"Checkpoint {str(path)!r} does not exist; give the path of a .pth or .pth.tar file.")
    _check_checkpoint_format(path)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise WeightsFileError(
            f"Checkpoint {path.name!r} needs full unpickling (it stores Python objects, not only tensors: "
            f"{str(e).strip().splitlines()[-1][:200]}); hubtune reads checkpoints with torch.load(weights_only=True) "
            "only. If you trust the file, re-save its weights in a trusted session with "
            "torch.save({'state_dict': checkpoint['state_dict']}, 'weights.pth') and convert that."
        ) from e
    except Exception as e:  # noqa: BLE001 - torch raises RuntimeError / EOFError / zip errors for broken files
        raise WeightsFileError(
            f"Checkpoint {path.name!r} cannot be read by torch.load: {type(e).__name__}: "
            f"{str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}. Is it a complete PyTorch checkpoint?"
        ) from e
    if not isinstance(loaded, Mapping):
        raise WeightsFileError(
            f"Checkpoint {path.name!r} holds a {type(loaded).__name__}, not a state dict or a dict with 'state_dict'."
        )
    metadata: dict[str, Any] = {}
    state = loaded
    for key in ("state_dict", "model"):
        if isinstance(loaded.get(key), Mapping):
            state = loaded[key]
            metadata = {k: v for k, v in loaded.items() if k != key and not isinstance(v, torch.Tensor)}
            break
    tensors = {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise WeightsFileError(
            f"Checkpoint {path.name!r} holds no tensors (top-level keys: {_few(map(str, loaded))}); expected a state "
            "dict, or a dict with 'state_dict'."
        )
    return tensors, metadata


def detect_source_format(keys) -> str:
    """``"moco"``, ``"mocov3"`` or ``"torchvision"`` from a state dict's keys."""
    keys = list(keys)
    for name in ("moco", "mocov3"):
        if any(k.startswith(_ENCODER_PREFIXES[name]) for k in keys):
            return name
    return "torchvision"


def extract_backbone_state(
    state: Mapping[str, torch.Tensor], source_format: str, expected_keys=None
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The encoder's tensors with the layout's prefix stripped, and the dropped head keys (after stripping).

    A key under a head prefix is dropped unless ``expected_keys`` (the target model's keys) holds it.
    """
    if source_format not in _ENCODER_PREFIXES:
        raise ConfigError(f"source_format must be one of {', '.join(SOURCE_FORMATS)}, not {source_format!r}.")
    expected = set(expected_keys or ())
    prefixes = _ENCODER_PREFIXES[source_format]
    if source_format == "torchvision":
        # strip "module." only when every key has it (a DataParallel-wrapped model)
        prefixes = ("module.",) if all(k.startswith("module.") for k in state) else ("",)
    kept: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for key, value in state.items():
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        if prefix is None:
            continue  # the key encoder, the queue, the predictor ...: not the encoder
        name = key[len(prefix):]
        if name.startswith(_HEAD_PREFIXES[source_format]) and name not in expected:
            dropped.append(name)
            continue
        kept[name] = value
    if not kept:
        raise ConfigError(
            f"No encoder weights found for source_format {source_format!r} (looked for keys starting with "
            f"{' or '.join(repr(p) for p in prefixes if p)}); the checkpoint's keys start like {_few(state, 3)}. "
            "Pass the right --source_format (moco, mocov3 or torchvision)."
        )
    return kept, dropped


# ------------------------------------------------------------------------------------------- writing


def save_timm_folder(
    model: torch.nn.Module,
    folder: str | Path,
    pretrained_cfg: Mapping[str, Any] | None = None,
    model_config: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` with ``timm.models.save_for_hf`` (safetensors) into ``folder``; loadable as ``local-dir:``.

    Only the structural entries of the model's own ``pretrained_cfg`` are kept (architecture, input size, first
    conv, classifier, pool size, preprocessing defaults): its provenance (tag, license, url, paper) describes
    other weights. ``pretrained_cfg`` adds or replaces entries (timm's ``PretrainedCfg`` field names only:
    ``tag``, ``license``, ``mean``, ``std``, ``input_size``, ``description`` ...); ``model_config`` adds
    top-level ``config.json`` entries. ``num_classes`` is kept only at the top level (timm 1.0.31 also writes it into
    ``model_args``, which transformers' ``TimmWrapper`` then passes twice to ``timm.create_model``).
    """
    from timm.models import save_for_hf

    folder = Path(folder)
    own = dict(getattr(model, "pretrained_cfg", {}) or {})
    model.pretrained_cfg = {**{k: v for k, v in own.items() if k in _STRUCTURAL_CFG_KEYS}, **dict(pretrained_cfg or {})}
    save_for_hf(model, str(folder), model_config=dict(model_config or {}), safe_serialization=True)
    drop_num_classes_from_model_args(folder / "config.json")
    give_default_permissions(folder)  # safetensors writes 0600 files
    return folder


def _create_target(architecture: str):
    import timm

    if not isinstance(architecture, str) or not timm.is_model(architecture):
        close = difflib.get_close_matches(str(architecture), timm.list_models(), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"Unknown timm architecture {architecture!r}.{hint} Pass a timm model name such as 'resnet50'.")
    return timm.create_model(architecture, pretrained=False, num_classes=0)


def _check_keys(
    converted: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    architecture: str,
    checkpoint_name: str,
    source_format: str,
    metadata: Mapping[str, Any],
) -> None:
    missing = [k for k in target if k not in converted]
    unexpected = [k for k in converted if k not in target]
    mismatched = [
        f"{k} {tuple(converted[k].shape)} vs {tuple(target[k].shape)}"
        for k in target
        if k in converted and tuple(converted[k].shape) != tuple(target[k].shape)
    ]
    if not (missing or unexpected or mismatched):
        return
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_few(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_few(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es) (checkpoint vs model): {_few(mismatched, 3)}")
    arch_note = ""
    if isinstance(metadata.get("arch"), str) and metadata["arch"] != architecture:
        arch_note = f" The checkpoint says arch={metadata['arch']!r}."
    raise ConfigError(
        f"Checkpoint {checkpoint_name!r} (read as {source_format!r}) does not match timm architecture "
        f"{architecture!r}: {'; '.join(problems)}.{arch_note} Pass the architecture it was trained with "
        "(--architecture, e.g. resnet18 / resnet50) or the right --source_format (moco, mocov3, torchvision)."
    )


def convert_checkpoint(
    path: str | Path,
    output_dir: str | Path,
    architecture: str = "resnet50",
    source_format: str = "auto",
    overwrite: bool = False,
) -> Path:
    """Convert a MoCo v1/v2/v3 or torchvision-style checkpoint into a timm ``local-dir:`` folder; returns the folder.

    Args:
        path: a ``.pth`` / ``.pth.tar`` file (read with ``torch.load(weights_only=True)``).
        output_dir: the folder to write (``config.json`` + ``model.safetensors``); use it as the backbone
            ``"local-dir:" + str(output_dir)`` with ``pretrained=True``.
        architecture: the timm architecture the weights belong to (torchvision's ``resnet50`` is timm's ``resnet50``).
        source_format: ``"auto"`` (from the keys), ``"moco"``, ``"mocov3"`` or ``"torchvision"``.
        overwrite: replace a folder that already holds a converted model.

    Raises:
        ModelFileError: the checkpoint does not exist.
        WeightsFileError: it cannot be read with ``weights_only=True`` (needs full unpickling, or is broken).
        ConfigError: unknown format or architecture, or keys / shapes that do not match the architecture.
        ExportError: tensors of the checkpoint hold NaN or inf (the message says how many and names some);
            nothing is written.
        OutputDirError: ``output_dir`` already holds a model and ``overwrite`` is false.
    """
    if source_format not in SOURCE_FORMATS:
        raise ConfigError(f"source_format must be one of {', '.join(SOURCE_FORMATS)}, not {source_format!r}.")
    path, output_dir = Path(path), Path(output_dir)
    _check_output_dir(output_dir, overwrite)
    state, metadata = load_checkpoint_state_dict(path)
    fmt = detect_source_format(state) if source_format == "auto" else source_format
    model = _create_target(architecture)
    target = model.state_dict()
    converted, dropped = extract_backbone_state(state, fmt, expected_keys=target)
    # checkpoints from before PyTorch 0.4.1 lack BatchNorm's counter; it does not change what the model computes
    for key in target:
        if key.endswith(".num_batches_tracked") and key not in converted and key.rsplit(".", 1)[0] + ".weight" in converted:
            converted[key] = torch.zeros_like(target[key])
    _check_keys(converted, target, architecture, path.name, fmt, metadata)
    check_finite(converted, path.name, refusing="convert", advice=(
        f"the checkpoint is broken (its training diverged, or the file was damaged); nothing was written to "
        f"{str(output_dir)!r}. Convert an earlier checkpoint of that run."))
    model.load_state_dict(converted, strict=True)
    model.eval()
    conversion = {
        "source_file": path.name,
        "source_format": fmt,
        "dropped_keys": sorted(dropped),
        "checkpoint_arch": metadata.get("arch") if isinstance(metadata.get("arch"), str) else None,
        "checkpoint_epoch": metadata.get("epoch") if isinstance(metadata.get("epoch"), int) else None,
    }
    save_timm_folder(model, output_dir, pretrained_cfg=_converted_pretrained_cfg(architecture, fmt, path.name),
                     model_config={"hubtune_conversion": conversion})
    return output_dir.resolve()


def _check_output_dir(output_dir: Path, overwrite: bool) -> None:
    """OutputDirError when ``output_dir`` already holds a model (and not ``overwrite``) or is not a folder."""
    existing = [n for n in ("config.json", "model.safetensors") if (output_dir / n).exists()]
    if existing and not overwrite:
        raise OutputDirError(
            f"{str(output_dir)!r} already holds {', '.join(existing)}; choose another output folder or pass --overwrite."
        )
    if output_dir.exists() and not output_dir.is_dir():
        raise OutputDirError(f"{str(output_dir)!r} exists and is not a folder; choose another output folder.")


def _converted_pretrained_cfg(architecture: str, fmt: str, source_file: str) -> dict[str, Any]:
    """The timm pretrained_cfg of a converted checkpoint: ImageNet normalisation and torchvision's evaluation
    transform (resize 256, centre crop 224, bilinear), which MoCo and torchvision checkpoints were trained with."""
    return {
        "architecture": architecture,
        "tag": {"moco": "moco", "mocov3": "mocov3", "torchvision": "converted"}[fmt],
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "input_size": (3, 224, 224),
        "interpolation": "bilinear",
        "crop_pct": 0.875,
        "crop_mode": "center",
        "license": None,  # unknown: the license of the source checkpoint applies
        "description": f"Converted by hubtune from {source_file} ({fmt} layout); projection head / classifier dropped.",
    }
