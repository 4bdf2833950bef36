"""The registry of export layouts: a library's own folder format for a classifier, as plain parts.

A layout is one :class:`LibraryLayout` subclass in its own module, registered with ``@register_layout``
(see :mod:`hubtune.layouts.timm` and :mod:`hubtune.layouts.transformers`). :func:`hubtune.layouts.files.layout_of_config`
asks every registered layout whether a config.json is its own; :func:`hubtune.layouts.write_library_layout` and
:func:`hubtune.layouts.read_library_layout` look the layout up by name. No module compares layout names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch

from hubtune.errors import ExportError
from hubtune.layouts.parts import ClassifierParts
from hubtune.registry import Registry

__all__ = ["LIBRARY_LAYOUTS", "LibraryLayout", "get_layout", "register_layout", "unregister_layout"]


class LibraryLayout:
    """How one library saves a classifier: recognise its config.json, write parts, re-load, read parts back.

    Subclasses set ``name`` (also the ``export_format`` value) and implement the four methods; they hold no
    state, so the class itself is registered and its methods are called on an instance made on lookup.
    """

    name: ClassVar[str] = ""
    # the backbone libraries whose models this layout can write (None: any, from the plain parts)
    backbone_libraries: ClassVar[tuple[str, ...] | None] = None

    @classmethod
    def writes(cls, backbone_library: str) -> bool:
        return cls.backbone_libraries is None or backbone_library in cls.backbone_libraries

    def load_hint(self, repo: str, folder: Path) -> str | None:
        """How a user loads the Hub repo ``repo`` (or the local ``folder``) in this layout, for the end-of-run line;
        None: with ``HubtuneForImageClassification.from_pretrained``."""
        return None

    def matches(self, config: dict[str, Any]) -> bool:
        """Whether a parsed config.json is in this layout."""
        raise NotImplementedError

    def write(self, parts: ClassifierParts, folder: Path) -> None:
        """Write ``parts`` into the (empty) ``folder``."""
        raise NotImplementedError

    def reload_logits(self, folder: Path, pixel_values: torch.Tensor) -> torch.Tensor:
        """The logits of ``folder`` re-loaded with the plain library (the export check), float32."""
        raise NotImplementedError

    def read(self, source: str, config: dict[str, Any], *, revision: str | None, token: Any,
             allow_pickle: bool) -> ClassifierParts:
        """The parts of the folder or Hub repo ``source`` whose config.json is ``config``."""
        raise NotImplementedError


def _check_layout(cls: type[LibraryLayout]) -> None:
    if not (isinstance(cls, type) and issubclass(cls, LibraryLayout)):
        raise ExportError(f"{cls!r} must be a LibraryLayout subclass to be registered as an export layout.")
    if cls.name == "hubtune":
        raise ExportError("'hubtune' is hubtune's own layout and cannot be registered as a library layout.")


LIBRARY_LAYOUTS: Registry[type[LibraryLayout]] = Registry("export layout", ExportError, _check_layout)


def register_layout(cls: type[LibraryLayout]) -> type[LibraryLayout]:
    """Class decorator: make the layout ``cls`` available under ``cls.name``."""
    return LIBRARY_LAYOUTS.register(cls)


def unregister_layout(name: str) -> None:
    """Remove a registered layout (for tests and plug-ins)."""
    LIBRARY_LAYOUTS.unregister(name)


def get_layout(name: str) -> LibraryLayout:
    """The registered layout ``name``; ExportError listing the valid names otherwise."""
    return LIBRARY_LAYOUTS.get(name)()
