"""One interface over the backbones of every registered library: timm models, transformers vision models, plug-ins.

A :class:`Backbone` maps ``pixel_values`` (B, C, H, W) to pooled features (B, D) and knows its feature size and the
preprocessing (mean, std, input size) its weights expect. Every backbone can describe itself as a
JSON-serialisable ``spec`` from which the same architecture is rebuilt without any download (used by
``HubtuneConfig``).

Each library is one module registering a :class:`~hubtune.backbones.registry.BackboneLibrary` in
:data:`BACKBONE_LIBRARIES` (the one registry style, :class:`hubtune.registry.Registry`): it claims names, creates a
backbone from one and rebuilds it from its spec, reads its model's pooled features and feature maps, and names the
export layout paired with it. Importing this package registers the built-in ``timm`` and ``transformers``
libraries (:mod:`hubtune.backbones.timm`, :mod:`hubtune.backbones.transformers`), in that order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hubtune.backbones import timm as _timm  # noqa: F401  (registers the "timm" library)
from hubtune.backbones import transformers as _transformers  # noqa: F401  (registers the "transformers" library)
from hubtune.backbones.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RANDOM_WEIGHTS_OPTION,
    Backbone,
    PreprocessingConfig,
    card_name,
    public_name,
)
from hubtune.backbones.registry import (
    BACKBONE_LIBRARIES,
    BackboneLibrary,
    get_backbone_library,
    library_claiming,
    register_backbone_library,
    unregister_backbone_library,
)
from hubtune.backbones.timm import check_timm_config, timm_config_error
from hubtune.backbones.transformers import image_classification_class
from hubtune.errors import BackboneError, PretrainedWeightsError, WeightsFileError

__all__ = [
    "BACKBONE_LIBRARIES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RANDOM_WEIGHTS_OPTION",
    "Backbone",
    "BackboneError",
    "BackboneLibrary",
    "PreprocessingConfig",
    "PretrainedWeightsError",
    "WeightsFileError",
    "backbone_from_spec",
    "card_name",
    "check_timm_config",
    "create_backbone",
    "get_backbone_library",
    "image_classification_class",
    "names_weights",
    "public_name",
    "register_backbone_library",
    "resolve_library",
    "timm_config_error",
    "unregister_backbone_library",
]


def names_weights(name: str) -> bool:
    """Whether a backbone name points at one set of weights (``hf-hub:ORG/NAME``, ``local-dir:PATH``, a local
    folder, a transformers ``ORG/NAME`` id) rather than an architecture (a bare timm name such as ``resnet18``)."""
    return name.startswith(("hf-hub:", "local-dir:")) or "/" in name or Path(name).is_dir()


def resolve_library(name: str) -> str:
    """Which registered library a backbone name belongs to (``"timm"``, ``"transformers"``, a plug-in's): the first,
    in registration order, that claims it."""
    return library_claiming(name)


def create_backbone(
    name: str,
    pretrained: bool = False,
    library: str | None = None,
    image_size: int | None = None,
    keep_source_classifier: bool = False,
    random_weights: str = RANDOM_WEIGHTS_OPTION,
    **model_kwargs: Any,
) -> Backbone:
    """Create a :class:`Backbone` from a name of a registered library.

    Args:
        name: a timm model name (``"resnet18"``, ``"vit_tiny_patch16_224.augreg_in21k"``), ``"hf-hub:ORG/NAME"``
            or ``"local-dir:PATH"`` for timm weights, a transformers model id / local folder
            (``"google/vit-base-patch16-224"``, ``"facebook/dinov2-small"``), or a name a plug-in library claims.
        pretrained: load pretrained weights (through the library). A failure raises
            :class:`PretrainedWeightsError`; it never falls back to random weights.
        library: a registered library's name (``"timm"``, ``"transformers"``) to skip auto-detection.
        image_size: override the input size of the preprocessing config.
        keep_source_classifier: keep the pretrained weights' own linear head aside, as
            ``Backbone.source_classifier`` (for methods that use the source label space, Co-Tuning; timm only).
        random_weights: how the caller's user asks for random weights instead, named when pretrained weights
            cannot be loaded (``hubtune finetune``'s ``--pretrained false`` unless said otherwise).
        **model_kwargs: passed to the library's factory (``timm.create_model``, ``AutoConfig.from_pretrained``).
    """
    if not isinstance(name, str) or not name:
        raise BackboneError("The backbone name must be a non-empty string such as 'resnet18'.")
    entry = get_backbone_library(library or resolve_library(name))
    backbone = entry.create(name, pretrained, model_kwargs, keep_source_classifier, random_weights)
    backbone.preprocessing = backbone.preprocessing.with_image_size(image_size)
    backbone.spec["pretrained"] = bool(pretrained)
    backbone.spec["name"] = public_name(backbone.spec.get("name"))
    return backbone


def backbone_from_spec(spec: dict[str, Any],
                       preprocessing: dict[str, Any] | PreprocessingConfig | None = None) -> Backbone:
    """Rebuild a backbone's architecture (random weights, no download) from its ``spec``, by its library."""
    if isinstance(preprocessing, dict):
        preprocessing = PreprocessingConfig.from_dict(preprocessing)
    library = spec.get("library")
    if library not in BACKBONE_LIBRARIES:
        raise BackboneError(
            f"The backbone spec names library {library!r}, which is not registered (registered: "
            f"{', '.join(BACKBONE_LIBRARIES)}); import the plug-in that registers it first."
        )
    return get_backbone_library(library).from_spec(spec, preprocessing)
