"""What every backbone is, whatever library made it: :class:`PreprocessingConfig` and :class:`Backbone`.

A :class:`Backbone` maps ``pixel_values`` (B, C, H, W) to pooled features (B, D) and knows its feature size and the
preprocessing (mean, std, input size) its weights expect. The library entry that made it
(:class:`hubtune.backbones.registry.BackboneLibrary`) reads its model's pooled features and feature maps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn

from hubtune.errors import BackboneError

if TYPE_CHECKING:
    from hubtune.backbones.registry import BackboneLibrary

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "RANDOM_WEIGHTS_OPTION", "Backbone", "PreprocessingConfig", "card_name",
           "jsonable", "pooled_size", "public_name"]

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
    """Pooled image features from a model of a registered backbone library.

    Attributes:
        library: the library's registered name (``"timm"``, ``"transformers"`` or a plug-in's), also
            ``spec["library"]``.
        library_entry: the registered library (:class:`~hubtune.backbones.registry.BackboneLibrary`) that made it:
            it reads the model's pooled features and, for methods that need them (DELTA), its feature maps.
        model: the wrapped library model.
        num_features: size D of the pooled features.
        preprocessing: the :class:`PreprocessingConfig` its weights expect.
        spec: JSON-serialisable description to rebuild the architecture offline.
        source_classifier: the pretrained weights' own linear classifier (``{"weight": (S, D), "bias": (S,) or
            None}``, plain tensors, not part of the module or its state dict) when the backbone was created
            with pretrained timm weights that ship one (an ImageNet head, say) and ``keep_source_classifier``;
            None otherwise. Methods that use the source label space (Co-Tuning) take it from here.
    """

    def __init__(self, library: "BackboneLibrary", model: nn.Module, spec: dict[str, Any],
                 preprocessing: PreprocessingConfig, num_features: int,
                 source_classifier: dict[str, torch.Tensor | None] | None = None):
        super().__init__()
        self.library_entry = library
        self.library = library.name
        self.model = model
        self.spec = spec
        self.preprocessing = preprocessing
        self.num_features = int(num_features)
        self.source_classifier = source_classifier

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        feats = self.library_entry.pooled(self.model, pixel_values)
        if feats.ndim != 2:
            raise BackboneError(
                f"Backbone {self.spec.get('name')!r} yields features of shape {tuple(feats.shape)}, not pooled "
                "(batch, features). Create it with a global pooling (timm: global_pool='avg'; transformers: a "
                "model whose image-classification class pools its output)."
            )
        return feats


def pooled_size(model: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor], in_chans: int,
                image_size: tuple[int, int], name: str) -> int:
    """The size D of ``forward``'s pooled features on a zero image (``model`` in eval mode, its mode restored);
    BackboneError when they are not pooled (batch, D)."""
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


def jsonable(obj: Any) -> Any:
    """Drop what JSON cannot carry (callables, tensors) from a nested dict of model arguments."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items() if _is_json_leaf_or_container(v)}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


def _is_json_leaf_or_container(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool, dict, list, tuple))
