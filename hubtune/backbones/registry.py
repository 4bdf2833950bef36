"""The registry of backbone libraries: which names a library owns, how it creates and rebuilds a backbone, and how
its models give pooled features and feature maps.

A library is one :class:`BackboneLibrary` subclass in its own module, registered with ``@register_backbone_library``
(see :mod:`hubtune.backbones.timm` and :mod:`hubtune.backbones.transformers`), and paired with the export layout
that writes its classifiers in the library's own format (``export_layout``, a name of
:data:`hubtune.layouts.LIBRARY_LAYOUTS`). :func:`hubtune.backbones.create_backbone` asks the registered libraries,
in registration order, which one claims a name; :func:`hubtune.backbones.backbone_from_spec` looks one up by the
spec's ``"library"``; methods that read feature maps (DELTA) go through ``backbone.library_entry``. No module
compares library names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from hubtune.backbones.base import RANDOM_WEIGHTS_OPTION, Backbone, PreprocessingConfig
from hubtune.errors import BackboneError
from hubtune.offline import hub_offline, not_in_cache
from hubtune.registry import Registry

__all__ = ["BACKBONE_LIBRARIES", "BackboneLibrary", "get_backbone_library", "library_claiming",
           "register_backbone_library", "unknown_backbone", "unregister_backbone_library"]


class BackboneLibrary:
    """One library of backbones (timm, transformers, a plug-in's).

    Subclasses set ``name`` (the spec's ``"library"``), ``export_layout`` and ``usage`` and implement
    :meth:`claims`, :meth:`create`, :meth:`from_spec` and :meth:`pooled`; a library whose models give intermediate
    feature maps also implements :meth:`feature_levels` and :meth:`intermediates`. They hold no state: the class
    is registered and an instance is made on lookup.
    """

    name: ClassVar[str] = ""
    # the registered export layout that writes this library's classifiers for people without hubtune (what
    # export_format="auto" means for them); None: hubtune's own layout
    export_layout: ClassVar[str | None] = None
    # how this library's backbone names look, for the message about an unknown name
    usage: ClassVar[str] = ""

    def claims(self, name: str) -> bool:
        """Whether the backbone name ``name`` is this library's (asked in registration order: the first one wins)."""
        return False

    def close_names(self, name: str) -> list[str]:
        """This library's names close to an unknown ``name``, for the message about it."""
        return []

    def create(self, name: str, pretrained: bool, model_kwargs: dict[str, Any], keep_source_classifier: bool = False,
               random_weights: str = RANDOM_WEIGHTS_OPTION) -> Backbone:
        """A backbone from ``name``, with the pretrained weights when ``pretrained`` (an error, never random weights,
        when they cannot be loaded, naming ``random_weights``: how the caller's user asks for random weights instead);
        ``model_kwargs`` go to the library's model factory. ``keep_source_classifier``: keep the weights' own linear
        head aside as ``Backbone.source_classifier`` where the library has one."""
        raise NotImplementedError

    def from_spec(self, spec: dict[str, Any], preprocessing: PreprocessingConfig | None) -> Backbone:
        """The architecture that ``spec`` (a :attr:`Backbone.spec` of this library) describes, randomly initialised,
        without any download; ``preprocessing`` None: the library's default for it."""
        raise NotImplementedError

    def pooled(self, model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
        """The pooled features (B, D) of ``model``: a backbone's library model or a copy of it (DELTA's frozen
        start)."""
        raise NotImplementedError

    def feature_levels(self, backbone: Backbone) -> list[tuple[str, Any]]:
        """The modules (names inside ``backbone.model``) whose outputs :meth:`intermediates` returns as feature maps,
        in depth order, each with its resolution (a reduction factor, or an index for a list of stages)."""
        raise BackboneError(f"{self.name} backbone {backbone.spec.get('name')!r} gives no intermediate feature maps; "
                            "use another backbone or method.")

    def intermediates(self, model: nn.Module, pixel_values: torch.Tensor,
                      indices: list[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """In one pass of ``model``: the pooled features and the outputs of the :meth:`feature_levels` at
        ``indices`` (in depth order), through the library's own API, so that ``torch.compile`` sees no hooks."""
        raise NotImplementedError

    # ------------------------------------------------------------------ the same for every library

    def feature_map_modules(self, backbone: Backbone, count: int = 4) -> list[str]:
        """``count`` of :meth:`feature_levels` at increasing depth: the last module of each of the last ``count``
        resolutions (a ResNet's four stages), or ``count`` blocks evenly spaced up to the last one when every block
        keeps one resolution (a ViT)."""
        levels = self.feature_levels(backbone)
        return _pick_levels([name for name, _ in levels], [reduction for _, reduction in levels], count)

    def level_indices(self, backbone: Backbone, names: list[str]) -> list[int]:
        """The positions of ``names`` among :meth:`feature_levels`; BackboneError naming the valid levels otherwise."""
        levels = [name for name, _ in self.feature_levels(backbone)]
        unknown = [name for name in names if name not in levels]
        if unknown:
            raise BackboneError(f"{', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not a feature level of "
                                f"{backbone.spec.get('name')!r}; its levels are: {', '.join(levels)}.")
        return [levels.index(name) for name in names]

    def pooled_and_maps(self, backbone: Backbone, model: nn.Module, pixel_values: torch.Tensor,
                        names: list[str]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """In one pass of ``model`` (``backbone.model`` or a copy of it): the pooled features and the outputs of the
        feature levels ``names`` (in depth order)."""
        return self.intermediates(model, pixel_values, self.level_indices(backbone, names))


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


def _check_library(cls: type[BackboneLibrary]) -> None:
    if not (isinstance(cls, type) and issubclass(cls, BackboneLibrary)):
        raise BackboneError(f"{cls!r} must be a BackboneLibrary subclass to be registered as a backbone library.")


BACKBONE_LIBRARIES: Registry[type[BackboneLibrary]] = Registry("backbone library", BackboneError, _check_library)


def register_backbone_library(cls: type[BackboneLibrary]) -> type[BackboneLibrary]:
    """Class decorator: make the library ``cls`` available under ``cls.name``."""
    return BACKBONE_LIBRARIES.register(cls)


def unregister_backbone_library(name: str) -> None:
    """Remove a registered library (for tests and plug-ins)."""
    BACKBONE_LIBRARIES.unregister(name)


def get_backbone_library(name: str) -> BackboneLibrary:
    """The registered library ``name``; BackboneError listing the valid names otherwise."""
    return BACKBONE_LIBRARIES.get(name)()


def library_claiming(name: str) -> str:
    """The name of the first registered library that claims the backbone name ``name``; BackboneError otherwise."""
    for library, cls in BACKBONE_LIBRARIES.items():
        if cls().claims(name):
            return library
    if Path(name).is_dir():
        raise BackboneError(f"Backbone folder {name!r} has no config.json; it is not a saved "
                            f"{' or '.join(BACKBONE_LIBRARIES)} model.")
    raise unknown_backbone(name)


def unknown_backbone(name: str) -> BackboneError:
    """The error for a backbone name no registered library knows: how names look, and close ones."""
    if "/" in name and hub_offline():
        return BackboneError(f"Cannot use backbone {name!r}: {not_in_cache(f'Hub repo {name!r}')}.")
    libraries = [cls() for cls in BACKBONE_LIBRARIES.values()]
    usages = [library.usage for library in libraries if library.usage]
    usage = ", or ".join(usages)
    hints = "".join(f" Close {library.name} names: {', '.join(close)}." for library in libraries
                    if (close := library.close_names(name)))
    return BackboneError(f"Unknown backbone {name!r}. Use {usage}.{hints}")
