"""``HubtuneForImageClassification``: a timm or transformers backbone, a classifier and training-only heads.

In training mode with labels, ``forward`` returns the loss of the configured method (Core-tuning,
AdaptiveMix or plain cross-entropy); in eval mode it returns the plain cross-entropy, so Trainer's
``eval_loss`` and accuracy mean what they usually mean.

Saving: ``save_pretrained(dir)`` writes, by default, the layout of the backbone's own library
(timm's Hub layout or the matching transformers ``*ForImageClassification``), so people who never
install hubtune can load the result; ``export_format="hubtune"`` keeps the training-only heads so
training can resume. ``from_pretrained`` reads all three layouts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModelForImageClassification, PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from .backbones import Backbone, PreprocessingConfig, backbone_from_spec, create_backbone

METHODS = ("core-tuning", "ce", "adaptivemix")
PRESETS = ("paper", "reference")
CLASSIFIER_TYPES = ("linear", "orthogonal-abs")
EXPORT_FORMATS = ("auto", "hubtune", "timm", "transformers")


class HubtuneConfig(PretrainedConfig):
    """Configuration of :class:`HubtuneForImageClassification`.

    Args:
        backbone_spec: the backbone's ``spec`` (see :mod:`hubtune.backbones`); rebuilds it offline.
        preprocessing: the preprocessing dict (input_size, mean, std, interpolation, crop_pct).
        method: ``"core-tuning"``, ``"ce"`` or ``"adaptivemix"``: the training loss.
        method_preset: ``"paper"`` (hubtune's default, the method as published) or ``"reference"``
            (the public script's semantics, see the loss classes).
        loss_kwargs: keyword arguments of the loss (eta, temperature, alpha, lam_min, sigma, weight, ...).
        projector_dim: output size of Core-tuning's projector.
        classifier_bias: whether the linear classifier has a bias.
        classifier_type: ``"linear"`` or ``"orthogonal-abs"`` (a frozen orthogonally initialised head scoring
            ``|W u|``, used by AdaptiveMix's reference classifier).
        normalize_features: L2-normalise pooled features before the classifier.
        backbone_name: the name the backbone was created from (for model cards).
    """

    model_type = "hubtune"
    keys_to_ignore_at_inference = ["pooled_features", "loss_components"]

    def __init__(
        self,
        backbone_spec: dict[str, Any] | None = None,
        preprocessing: dict[str, Any] | None = None,
        method: str = "core-tuning",
        method_preset: str = "paper",
        loss_kwargs: dict[str, Any] | None = None,
        projector_dim: int = 256,
        classifier_bias: bool = True,
        classifier_type: str = "linear",
        normalize_features: bool = False,
        backbone_name: str | None = None,
        **kwargs: Any,
    ):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, not {method!r}.")
        if method_preset not in PRESETS:
            raise ValueError(f"method_preset must be one of {PRESETS}, not {method_preset!r}.")
        if classifier_type not in CLASSIFIER_TYPES:
            raise ValueError(f"classifier_type must be one of {CLASSIFIER_TYPES}, not {classifier_type!r}.")
        if loss_kwargs and "preset" in loss_kwargs:
            raise ValueError("Give the preset as method_preset=..., not inside loss_kwargs.")
        self.backbone_spec = backbone_spec or {}
        self.preprocessing = preprocessing or PreprocessingConfig().to_dict()
        self.method = method
        self.method_preset = method_preset
        self.loss_kwargs = dict(loss_kwargs or {})
        self.projector_dim = int(projector_dim)
        self.classifier_bias = bool(classifier_bias)
        self.classifier_type = classifier_type
        self.normalize_features = bool(normalize_features)
        self.backbone_name = backbone_name or self.backbone_spec.get("name")
        super().__init__(**kwargs)

    @property
    def default_export_format(self) -> str:
        """``"hubtune"`` when the head cannot be expressed as a plain linear classifier of the backbone's library."""
        if self.classifier_type != "linear" or self.normalize_features:
            return "hubtune"
        return self.backbone_spec.get("library", "hubtune")


@dataclass
class HubtuneImageClassifierOutput(ModelOutput):
    """Like transformers' ``ImageClassifierOutput``, plus what hubtune's losses report."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    pooled_features: torch.Tensor | None = None
    loss_components: dict[str, torch.Tensor] | None = None


class OrthogonalAbsClassifier(nn.Module):
    """Frozen, orthogonally initialised head scoring ``|W u|`` (the "union of 1-D subspaces" classifier)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features), requires_grad=False)
        nn.init.orthogonal_(self.weight)
        self.out_features = out_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.linear(features, self.weight).abs()


def _check_labels(labels: torch.Tensor, num_labels: int) -> None:
    if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}.")
    if labels.device.type == "cpu":
        bad = (labels < 0) | (labels >= num_labels)
        if bool(bad.any()):
            raise ValueError(
                f"labels must lie in [0, {num_labels}) (num_labels={num_labels}); got "
                f"{sorted(set(labels[bad].tolist()))[:10]}. Check the dataset's label column and num_labels."
            )
    else:  # asynchronous device-side check: no host synchronisation on the hot path
        torch._assert_async(((labels >= 0) & (labels < num_labels)).all(), f"labels must lie in [0, {num_labels})")


class HubtuneForImageClassification(PreTrainedModel):
    """A backbone + classifier (+ training-only projector) trained with Core-tuning, AdaptiveMix or CE."""

    config_class = HubtuneConfig
    base_model_prefix = "backbone"
    main_input_name = "pixel_values"
    _no_split_modules: list[str] = []

    def __init__(self, config: HubtuneConfig, backbone: Backbone | None = None):
        super().__init__(config)
        if backbone is None:
            if not config.backbone_spec:
                raise ValueError("HubtuneConfig.backbone_spec is empty: create the model with "
                                 "HubtuneForImageClassification.from_backbone(name, num_labels=...).")
            backbone = backbone_from_spec(config.backbone_spec, config.preprocessing)
        self.backbone = backbone
        dim = backbone.num_features
        if config.num_labels < 1:
            raise ValueError("num_labels must be at least 1.")
        if config.classifier_type == "orthogonal-abs":
            self.classifier = OrthogonalAbsClassifier(dim, config.num_labels)
        else:
            self.classifier = nn.Linear(dim, config.num_labels, bias=config.classifier_bias)
            nn.init.normal_(self.classifier.weight, std=0.01)
            if self.classifier.bias is not None:
                nn.init.zeros_(self.classifier.bias)
        self.projector = (
            nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, config.projector_dim))
            if config.method == "core-tuning"
            else None
        )
        self.loss_fn = self._build_loss(config)
        self.post_init()

    # Weights come from the backbone's library (or a checkpoint); never let transformers re-initialise them.
    def _init_weights(self, module: nn.Module) -> None:
        return

    @staticmethod
    def _build_loss(config: HubtuneConfig) -> nn.Module | None:
        kwargs = dict(config.loss_kwargs)
        if config.method == "core-tuning":
            from .losses.core_tuning import CoreTuningLoss

            loss = CoreTuningLoss(preset=config.method_preset, **kwargs)
            loss.validate_labels = False  # forward() checks the labels already, without a host sync on GPUs
            return loss
        if config.method == "adaptivemix":
            from .losses.adaptive_mix import AdaptiveMixClassifierLoss

            return AdaptiveMixClassifierLoss(preset=config.method_preset, **kwargs)
        return None

    # ------------------------------------------------------------------------------------------ construction

    @classmethod
    def from_backbone(
        cls,
        backbone: str | Backbone,
        num_labels: int | None = None,
        id2label: dict[int, str] | None = None,
        pretrained: bool = False,
        method: str = "core-tuning",
        method_preset: str = "paper",
        image_size: int | None = None,
        loss_kwargs: dict[str, Any] | None = None,
        library: str | None = None,
        **config_kwargs: Any,
    ) -> "HubtuneForImageClassification":
        """Build a classifier over a timm / transformers backbone.

        Args:
            backbone: a name accepted by :func:`hubtune.backbones.create_backbone`, or a :class:`Backbone`.
            num_labels: number of classes (taken from ``id2label`` when omitted).
            id2label: class names, e.g. from a ``datasets.ClassLabel``'s ``names``.
            pretrained: load the backbone's pretrained weights (an error if they cannot be loaded).
            method / method_preset / loss_kwargs: the training loss (see :class:`HubtuneConfig`).
            image_size: override the backbone's input size.

        The AdaptiveMix ``reference`` preset also selects its classifier: L2-normalised features and a
        frozen orthogonal ``|W u|`` head (override with ``classifier_type`` / ``normalize_features``).
        """
        if id2label is not None:
            id2label = {int(k): str(v) for k, v in id2label.items()}
            if num_labels is None:
                num_labels = len(id2label)
            elif num_labels != len(id2label):
                raise ValueError(f"num_labels={num_labels} but id2label has {len(id2label)} names.")
        if num_labels is None:
            raise ValueError("Give num_labels or id2label.")
        if isinstance(backbone, str):
            name = backbone
            backbone = create_backbone(backbone, pretrained=pretrained, library=library, image_size=image_size)
        else:
            name = backbone.spec.get("name")
            backbone.preprocessing = backbone.preprocessing.with_image_size(image_size)
        if method == "adaptivemix" and method_preset == "reference":
            config_kwargs.setdefault("classifier_type", "orthogonal-abs")
            config_kwargs.setdefault("normalize_features", True)
        if method == "core-tuning" and method_preset == "reference":
            config_kwargs.setdefault("classifier_bias", False)
        if id2label is None:
            id2label = {i: f"LABEL_{i}" for i in range(num_labels)}
        config = HubtuneConfig(
            backbone_spec=backbone.spec,
            preprocessing=backbone.preprocessing.to_dict(),
            method=method,
            method_preset=method_preset,
            loss_kwargs=loss_kwargs,
            backbone_name=name,
            num_labels=num_labels,
            id2label=id2label,
            label2id={v: k for k, v in id2label.items()},
            **config_kwargs,
        )
        return cls(config, backbone=backbone)

    # ------------------------------------------------------------------------------------------ forward

    @property
    def preprocessing(self) -> PreprocessingConfig:
        return PreprocessingConfig.from_dict(self.config.preprocessing)

    def forward_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pooled features (B, D) as the classifier sees them."""
        features = self.backbone(pixel_values)
        if self.config.normalize_features:
            features = F.normalize(features.float(), dim=-1).to(features.dtype)
        return features

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_features: bool = False,
        return_dict: bool | None = None,
    ) -> HubtuneImageClassifierOutput:
        if pixel_values.ndim != 4:
            raise ValueError(f"pixel_values must be (batch, channels, height, width), got shape {tuple(pixel_values.shape)}.")
        if labels is not None:
            _check_labels(labels, self.config.num_labels)
        components = None
        if self.training and labels is not None and self.loss_fn is not None:
            if self.config.method == "adaptivemix":
                out = self.loss_fn(pixel_values, labels, self.forward_features, self.classifier)
                features = None
                components = {"ce_loss": out.ce_loss.detach(), "shrinkage_loss": out.shrinkage_loss.detach()}
            else:
                features = self.forward_features(pixel_values)
                out = self.loss_fn(features, labels, self.classifier, self.projector)
                components = {
                    "ce_loss": out.ce_loss.detach(),
                    "contrastive_loss": out.contrastive_loss.detach(),
                    "num_positive_pairs": out.num_positive_pairs.detach().float(),
                }
            loss, logits = out.loss, out.logits
        else:
            features = self.forward_features(pixel_values)
            logits = self.classifier(features)
            loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        return HubtuneImageClassifierOutput(
            loss=loss,
            logits=logits,
            pooled_features=features if output_features else None,
            loss_components=components,
        )

    # ------------------------------------------------------------------------------------------ save / load

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, export_format: str = "auto", **kwargs: Any):
        """Save the model.

        Args:
            export_format: ``"auto"`` (default) writes the backbone library's own layout (timm's Hub layout, or
                the matching transformers ``*ForImageClassification``) so that plain timm / transformers load it;
                ``"hubtune"`` keeps the training-only heads (projector) so training can resume; ``"timm"`` /
                ``"transformers"`` force a layout.
        """
        if export_format not in EXPORT_FORMATS:
            raise ValueError(f"export_format must be one of {EXPORT_FORMATS}, not {export_format!r}.")
        if export_format == "auto":
            export_format = self.config.default_export_format
        if not kwargs.get("is_main_process", True):
            return None
        if export_format == "hubtune":
            return self._save_hubtune_layout(save_directory, kwargs.get("state_dict"))
        from .export import save_export

        return save_export(self, save_directory, export_format=export_format)

    def _save_hubtune_layout(self, save_directory: str | os.PathLike, state_dict: dict | None = None) -> Path:
        # Not PreTrainedModel.save_pretrained: transformers 5 rewrites the keys of nested transformers backbones
        # to their legacy names on save, and Trainer's resume loads checkpoints with strict=False, so the keys
        # must be exactly this module's own.
        from safetensors.torch import save_file

        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        state_dict = state_dict if state_dict is not None else self.state_dict()
        save_file({k: v.detach().contiguous().clone() for k, v in state_dict.items()}, out / "model.safetensors",
                  metadata={"format": "pt"})
        self.config.architectures = [type(self).__name__]
        self.config.save_pretrained(out)
        return out

    def push_to_hub(
        self,
        repo_id: str,
        *,
        token: str | None = None,
        private: bool = False,
        revision: str | None = None,
        export_format: str = "auto",
        commit_message: str = "Upload model trained with hubtune",
        run_info: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> str:
        """Publish the model with hubtune's model card (see :func:`hubtune.hub.push_folder`); returns the repo URL."""
        import tempfile

        from .hub import build_run_info, push_folder, write_model_card

        if kwargs:
            raise TypeError(f"Unsupported push_to_hub arguments: {sorted(kwargs)}.")
        with tempfile.TemporaryDirectory(prefix="hubtune-push-") as tmp:
            self.save_pretrained(tmp, export_format=export_format)
            info = run_info or build_run_info(self, dataset=None, hyperparameters={}, metrics={})
            write_model_card(tmp, info, repo_id=repo_id)
            return push_folder(tmp, repo_id, token=token, private=private, revision=revision,
                               commit_message=commit_message)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        revision: str | None = None,
        token: str | bool | None = None,
        allow_pickle: bool = False,
        **kwargs: Any,
    ) -> "HubtuneForImageClassification":
        """Load a hubtune, timm or transformers classification folder or Hub repo.

        Weights are read from ``model.safetensors``; pickle checkpoints (``.bin``, ``.pth``) are refused unless
        ``allow_pickle=True``. Missing or unexpected weights are an error, never a silent random init.
        """
        from .export import layout_of_config, load_export, load_weights, read_config

        source = str(pretrained_model_name_or_path)
        config_dict = read_config(source, revision, token)
        if layout_of_config(config_dict) != "hubtune":
            return load_export(source, revision=revision, token=token, allow_pickle=allow_pickle)
        model = cls(HubtuneConfig.from_dict(config_dict))
        state_dict = load_weights(source, revision=revision, token=token, allow_pickle=allow_pickle)
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"Weights in {source!r} do not match the hubtune config: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}."
            )
        model.eval()
        return model


AutoConfig.register("hubtune", HubtuneConfig, exist_ok=True)
AutoModelForImageClassification.register(HubtuneConfig, HubtuneForImageClassification, exist_ok=True)
