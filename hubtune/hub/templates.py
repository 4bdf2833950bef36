"""Model-card templates: the Jinja Markdown files of ``model_cards/`` (shipped as ``hubtune.model_cards``)."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

__all__ = ["load_template"]

# hubtune/hub/templates.py -> the repository root holds model_cards/ (source-tree fallback).
_SOURCE_TREE_DIR = Path(__file__).resolve().parent.parent.parent / "model_cards"


def load_template(name: str) -> str:
    """The text of the model-card template ``model_cards/<name>.md`` (``name`` with or without ``.md``).

    Templates ship inside the package as ``hubtune.model_cards`` (setup.cfg maps the top-level
    ``model_cards/`` folder there), so this works from a non-editable install; from a source checkout on
    ``PYTHONPATH`` it falls back to the repository's ``model_cards/`` folder.

    Raises:
        FileNotFoundError: no template of that name.
    """
    filename = name if name.endswith(".md") else f"{name}.md"
    try:
        resource = importlib.resources.files("hubtune.model_cards").joinpath(filename)
        if resource.is_file():
            return resource.read_text(encoding="utf-8")
    except ModuleNotFoundError:
        pass
    source_tree = _SOURCE_TREE_DIR / filename
    if source_tree.is_file():
        return source_tree.read_text(encoding="utf-8")
    raise FileNotFoundError(
        f"Model-card template {filename!r} not found in the package data 'hubtune.model_cards' nor in "
        f"{source_tree.parent}."
    )
