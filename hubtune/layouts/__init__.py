"""Saving and loading classifiers in the hubtune, timm and transformers layouts, from plain parts.

Each library layout is one module registering a :class:`~hubtune.layouts.registry.LibraryLayout` in
:data:`LIBRARY_LAYOUTS` (the one registry style, :class:`hubtune.registry.Registry`); importing this package
registers the built-in ``timm`` and ``transformers`` layouts. Nothing here imports a model class: the model hands over :class:`ClassifierParts` (and the logits it
computes itself on :func:`probe_input`), and gets parts back. An export in a library layout is written to a
staging folder, re-loaded with the plain library and its logits compared with the model's before anything
reaches the destination, so a layout that would not reproduce the model is never written or published.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from hubtune.backbones import PreprocessingConfig
from hubtune.errors import ExportError
from hubtune.layouts import timm as _timm  # noqa: F401  (registers the "timm" layout)
from hubtune.layouts import transformers as _transformers  # noqa: F401  (registers the "transformers" layout)
from hubtune.layouts.files import (
    CONFIG_NAME,
    SAFE_WEIGHTS_NAME,
    check_finite,
    detect_layout,
    layout_of_config,
    load_weights,
    read_config,
    read_json_file,
    save_weights,
)
from hubtune.layouts.parts import ClassifierParts
from hubtune.layouts.registry import LIBRARY_LAYOUTS, LibraryLayout, get_layout, register_layout, unregister_layout
from hubtune.permissions import give_default_permissions

__all__ = [
    "LIBRARY_LAYOUTS",
    "LOGITS_TOLERANCE",
    "ClassifierParts",
    "LibraryLayout",
    "CONFIG_NAME",
    "SAFE_WEIGHTS_NAME",
    "check_finite",
    "detect_layout",
    "get_layout",
    "layout_of_config",
    "load_weights",
    "probe_input",
    "read_config",
    "read_json_file",
    "read_library_layout",
    "register_layout",
    "save_weights",
    "unregister_layout",
    "write_library_layout",
]

LOGITS_TOLERANCE = 1e-5


def probe_input(preprocessing: dict[str, Any]) -> torch.Tensor:
    """The fixed input (2 images) on which an export's logits are compared with the model's."""
    pre = PreprocessingConfig.from_dict(preprocessing)
    return torch.randn(2, *pre.input_size, generator=torch.Generator().manual_seed(0))


def write_library_layout(parts: ClassifierParts, layout: str, save_directory: str | Path,
                         expected_logits: torch.Tensor) -> Path:
    """Write ``parts`` in a library's layout, after checking that the re-loaded export reproduces
    ``expected_logits`` (the model's logits on :func:`probe_input`) to :data:`LOGITS_TOLERANCE`."""
    writer = get_layout(layout)  # ExportError naming the registered layouts when unknown
    check_finite({**parts.backbone_state, "classifier.weight": parts.head_weight}, f"the {layout} export")
    save_directory = Path(save_directory)
    with tempfile.TemporaryDirectory(prefix="hubtune-export-") as tmp:
        staging = Path(tmp)
        writer.write(parts, staging)
        give_default_permissions(staging)  # safetensors writes 0600 files
        actual = writer.reload_logits(staging, probe_input(parts.preprocessing))
        expected = expected_logits.detach().float()
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
        save_directory.mkdir(parents=True, exist_ok=True)
        for item in staging.iterdir():
            shutil.copy2(item, save_directory / item.name)
    return save_directory


def read_library_layout(source: str, config: dict[str, Any], *, revision: str | None = None, token: Any = None,
                        allow_pickle: bool = False) -> ClassifierParts:
    """The parts of a library-layout classifier (folder or Hub repo) whose config.json is ``config``."""
    layout = layout_of_config(config)
    if layout not in LIBRARY_LAYOUTS:
        raise ExportError(f"{source!r} is in the {layout} layout, not a library layout.")
    return get_layout(layout).read(source, config, revision=revision, token=token, allow_pickle=allow_pickle)
