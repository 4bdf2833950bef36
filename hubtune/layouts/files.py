"""Files of saved models: names, fetching from a folder or the Hub, config.json, and weights.

One place that reads a model folder or Hub repo. Weights are safetensors; a pickle checkpoint is read only
when the caller passes ``allow_pickle=True`` (and then with ``torch.load(weights_only=True)``). Every
problem with a file raises an error that names the file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from hubtune.errors import ExportError, ModelFileError, PickleCheckpointError, WeightsFileError
from hubtune.files import DIVERGED_ADVICE, check_finite, check_finite_file, nonfinite_tensors, read_json_file
from hubtune.layouts.registry import LIBRARY_LAYOUTS
from hubtune.offline import not_in_cache
from hubtune.permissions import give_default_permissions

__all__ = [
    "CONFIG_NAME",
    "SAFE_WEIGHTS_NAME",
    "SAFE_INDEX_NAME",
    "PICKLE_WEIGHT_NAMES",
    "PICKLE_SUFFIXES",
    "is_local",
    "fetch",
    "list_files",
    "read_config",
    "read_json_file",
    "layout_of_config",
    "detect_layout",
    "load_weights",
    "weights_kind",
    "DIVERGED_ADVICE",
    "nonfinite_tensors",
    "check_finite",
    "check_finite_file",
    "save_weights",
]

CONFIG_NAME = "config.json"
SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_INDEX_NAME = "model.safetensors.index.json"
PICKLE_WEIGHT_NAMES = ("pytorch_model.bin", "pytorch_model.pth", "model.pth", "model.pt", "model.ckpt")
PICKLE_SUFFIXES = (".bin", ".pth", ".pt", ".ckpt", ".pth.tar")


def is_local(path_or_repo: str | Path) -> bool:
    return Path(path_or_repo).is_dir()


def fetch(path_or_repo: str, filename: str, revision: str | None = None, token: Any = None,
          required: bool = True) -> Path | None:
    """A file of a local folder or Hub repo; ModelFileError naming it when required and missing."""
    if is_local(path_or_repo):
        path = Path(path_or_repo) / filename
        if path.is_file():
            return path
        if required:
            raise ModelFileError(f"{path_or_repo!r} has no {filename}; it is not a complete model folder.")
        return None
    if Path(path_or_repo).is_absolute() or path_or_repo.startswith((".", "~")) or Path(path_or_repo).exists():
        raise ModelFileError(f"{path_or_repo!r} is not a folder (and not a Hub repo id 'org/name').")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(path_or_repo, filename, revision=revision, token=token))
    except LocalEntryNotFoundError:  # offline, or the Hub unreachable: not "the repo has no such file"
        if not required:
            return None
        what = f"{filename} of Hub repo {path_or_repo!r} (revision {revision or 'main'})"
        raise ModelFileError(f"Cannot load {path_or_repo!r}: {not_in_cache(what)}.") from None
    except EntryNotFoundError:
        if required:
            raise ModelFileError(
                f"Hub repo {path_or_repo!r} (revision {revision or 'main'}) has no {filename}; it is not a complete "
                "model repo."
            ) from None
        return None


def list_files(path_or_repo: str, revision: str | None = None, token: Any = None) -> list[str]:
    if is_local(path_or_repo):
        root = Path(path_or_repo)
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    from huggingface_hub import HfApi

    return HfApi().list_repo_files(path_or_repo, revision=revision, token=token)


def read_config(path_or_repo: str, revision: str | None = None, token: Any = None) -> dict[str, Any]:
    return read_json_file(fetch(str(path_or_repo), CONFIG_NAME, revision, token), f"config.json of {path_or_repo!r}")


def layout_of_config(config: dict[str, Any]) -> str:
    """``"hubtune"`` or the name of the registered library layout (``"timm"``, ``"transformers"`` ...) whose
    config.json ``config`` is; the first registered layout that recognises it wins."""
    if config.get("model_type") == "hubtune":
        return "hubtune"
    for name, layout in LIBRARY_LAYOUTS.items():
        if layout().matches(config):
            return name
    raise ExportError(
        "config.json has neither a model_type (transformers / hubtune) nor timm's architecture and "
        f"pretrained_cfg; it is not a model hubtune can load (layouts: hubtune, {', '.join(LIBRARY_LAYOUTS)})."
    )


def detect_layout(path_or_repo: str | Path, *, revision: str | None = None, token: Any = None) -> str:
    """Which layout a local folder or Hub repo has: ``"hubtune"`` or a registered library layout's name."""
    return layout_of_config(read_config(str(path_or_repo), revision, token))


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise WeightsFileError(
            f"{path} is truncated or corrupt and cannot be read ({type(e).__name__}); restore it, re-download it, or "
            "use an earlier checkpoint."
        ) from e


def load_weights(path_or_repo: str | Path, *, revision: str | None = None, token: Any = None,
                 allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The state dict of a folder or Hub repo: ``model.safetensors`` (or its shards).

    A pickle checkpoint (``.bin``, ``.pth``, ``.pt``, ``.ckpt``) is loaded only with ``allow_pickle=True``, and
    then with ``torch.load(weights_only=True)``. A folder with no weights raises ModelFileError naming
    ``model.safetensors``; a truncated file raises WeightsFileError naming it.
    """
    source = str(path_or_repo)
    single = fetch(source, SAFE_WEIGHTS_NAME, revision, token, required=False)
    if single is not None:
        return _load_safetensors(single)
    index = fetch(source, SAFE_INDEX_NAME, revision, token, required=False)
    if index is not None:
        weight_map = read_json_file(index, SAFE_INDEX_NAME).get("weight_map")
        if not isinstance(weight_map, dict):
            raise WeightsFileError(f"{index} has no weight_map; the sharded checkpoint index is corrupt.")
        state: dict[str, torch.Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            state.update(_load_safetensors(fetch(source, shard, revision, token)))
        return state
    name = _allowed_pickle(source, revision, token, allow_pickle)
    path = fetch(source, name, revision, token)
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpickling errors come in many types
        raise WeightsFileError(f"{path} cannot be read as a weights-only checkpoint ({type(e).__name__}).") from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsFileError(f"{name} of {source!r} does not hold a state dict.")
    return state


def _allowed_pickle(source: str, revision: str | None, token: Any, allow_pickle: bool) -> str:
    """The pickle checkpoint to read when there is no safetensors file, if the caller allowed pickles."""
    pickles = [f for f in list_files(source, revision, token) if f.endswith(PICKLE_SUFFIXES) and "/" not in f]
    if not pickles:
        raise ModelFileError(f"{source!r} has no weights: neither {SAFE_WEIGHTS_NAME} nor {SAFE_INDEX_NAME} was found.")
    if not allow_pickle:
        raise PickleCheckpointError(
            f"{source!r} has no {SAFE_WEIGHTS_NAME}, only pickle checkpoint(s) {pickles}. Loading a pickle can run "
            "arbitrary code, so hubtune refuses it. If you trust the source, pass allow_pickle=True (it is then "
            "read with torch.load(weights_only=True)), or convert it to safetensors."
        )
    return ([name for name in PICKLE_WEIGHT_NAMES if name in pickles] or pickles)[0]


def weights_kind(source: str, revision: str | None, token: Any, allow_pickle: bool) -> str:
    """``"safetensors"`` or ``"pickle"`` (only when allowed); errors as :func:`load_weights`."""
    for name in (SAFE_WEIGHTS_NAME, SAFE_INDEX_NAME):
        if fetch(source, name, revision, token, required=False) is not None:
            return "safetensors"
    _allowed_pickle(source, revision, token, allow_pickle)
    return "pickle"


def save_weights(state: dict[str, torch.Tensor], path: str | Path) -> Path:
    """Write ``state`` as safetensors through a temporary file and a rename (never a half-written file)."""
    path = Path(path)
    check_finite(state, str(path))
    tensors = {k: v.detach().contiguous().cpu().clone() for k, v in state.items()}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"format": "pt"})
        give_default_permissions(tmp)  # mkstemp and safetensors create 0600 files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
