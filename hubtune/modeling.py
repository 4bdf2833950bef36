"""``HubtuneForImageClassification``: a timm or transformers backbone, a classifier and a training method.

The training method (Core-tuning, AdaptiveMix, cross-entropy or any registered one, see
:mod:`hubtune.methods`) supplies the training-only heads, the loss and the logged loss parts. In training
mode with labels, ``forward`` returns the method's loss; in eval mode it returns plain cross-entropy, so
Trainer's ``eval_loss`` and accuracy mean what they usually mean.

Saving: ``save_pretrained(dir)`` writes, by default, the layout of the backbone's own library (timm's Hub
layout or the matching transformers ``*ForImageClassification``), so people who never install hubtune can
load the result; ``export_format="hubtune"`` keeps the training-only heads so training can resume.
``from_pretrained`` reads all three layouts. Once hubtune is imported, a hubtune-layout folder (a
``checkpoint-*`` folder, say) also loads through ``AutoConfig`` / ``AutoModelForImageClassification``.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModelForImageClassification, PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from hubtune.backbones import (
    Backbone,
    PreprocessingConfig,
    backbone_from_spec,
    card_name,
    create_backbone,
    get_backbone_library,
    public_name,
)
from hubtune.errors import ConfigError, ExportError, MethodError, WeightsFileError
from hubtune.hub import push_folder, write_model_card
from hubtune.layouts import (
    CONFIG_NAME,
    LIBRARY_LAYOUTS,
    SAFE_WEIGHTS_NAME,
    ClassifierParts,
    layout_of_config,
    load_weights,
    probe_input,
    read_config,
    read_library_layout,
    save_weights,
    write_library_layout,
)
from hubtune.methods import MethodConfig, create_method

__all__ = ["HubtuneConfig", "HubtuneForImageClassification", "HubtuneImageClassifierOutput", "export_formats",
           "check_export_format"]

CLASSIFIER_TYPES = ("linear", "orthogonal-abs")


def export_formats() -> tuple[str, ...]:
    """What ``export_format`` accepts: auto, hubtune and every registered library layout (plug-ins included)."""
    return ("auto", "hubtune", *LIBRARY_LAYOUTS.names())


def check_export_format(export_format: str) -> None:
    if export_format not in export_formats():
        raise ConfigError(f"export_format must be one of {', '.join(export_formats())}, not {export_format!r}.")
# Arguments of transformers' loaders that AutoModelForImageClassification forwards; they do not apply here.
_LOADER_KWARGS = ("cache_dir", "force_download", "local_files_only", "proxies", "subfolder", "trust_remote_code",
                  "_commit_hash", "_from_auto", "_from_pipeline", "code_revision", "use_safetensors", "resume_download")
# hubtune 0.1 named AdaptiveMix's shrinkage weight "weight" inside loss_kwargs.
_LEGACY_KNOB_NAMES = {"adaptivemix": {"weight": "shrinkage_weight"}}


class HubtuneConfig(PretrainedConfig):
    """Configuration of :class:`HubtuneForImageClassification`.

    The constructor's parameters are the keys of the config.json it is saved as (``to_dict()``; transformers' own
    keys come through ``**kwargs``), hence their number: transformers rebuilds a saved configuration by calling it
    with them. :meth:`from_dict` takes such a config (a loaded config.json) instead of the keywords, and
    :meth:`from_pretrained` a folder or Hub repo holding one.

    Args:
        backbone_spec: the backbone's ``spec`` (see :mod:`hubtune.backbones`); rebuilds it offline.
        preprocessing: the preprocessing dict (input_size, mean, std, interpolation, crop_pct).
        method: a registered training method (``"core-tuning"``, ``"ce"``, ``"adaptivemix"``, ...).
        method_config: the method's knobs (``preset`` included); validated by the method's config class and
            stored complete (every knob with its value).
        classifier_bias: whether the linear classifier has a bias.
        classifier_type: ``"linear"`` or ``"orthogonal-abs"`` (a frozen orthogonally initialised head scoring
            ``|W u|``, used by AdaptiveMix's reference classifier).
        normalize_features: L2-normalise pooled features before the classifier.
        backbone_name: the name the backbone was created from (for model cards).
        method_preset, loss_kwargs: hubtune 0.1's names for ``method_config["preset"]`` and the other knobs;
            accepted so that older config.json files load.
    """

    model_type = "hubtune"
    keys_to_ignore_at_inference = ["pooled_features", "loss_components"]

    def __init__(
        self,
        backbone_spec: dict[str, Any] | None = None,
        preprocessing: dict[str, Any] | None = None,
        method: str = "core-tuning",
        method_config: dict[str, Any] | MethodConfig | None = None,
        classifier_bias: bool = True,
        classifier_type: str = "linear",
        normalize_features: bool = False,
        backbone_name: str | None = None,
        method_preset: str | None = None,
        loss_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        if classifier_type not in CLASSIFIER_TYPES:
            raise ConfigError(f"classifier_type must be one of {CLASSIFIER_TYPES}, not {classifier_type!r}.")
        legacy_projector_dim = kwargs.pop("projector_dim", None)
        if isinstance(method_config, MethodConfig):
            method_config = method_config.to_dict()
        knobs = dict(method_config or {})
        renames = _LEGACY_KNOB_NAMES.get(method, {})
        for key, value in (loss_kwargs or {}).items():
            knobs.setdefault(renames.get(key, key), value)
        if method_preset is not None:
            if knobs.get("preset", method_preset) != method_preset:
                raise ConfigError(f"method_preset={method_preset!r} disagrees with method_config preset {knobs['preset']!r}.")
            knobs["preset"] = method_preset
        if legacy_projector_dim is not None and method == "core-tuning":
            knobs.setdefault("projector_dim", int(legacy_projector_dim))
        self.backbone_spec = backbone_spec or {}
        self.preprocessing = preprocessing or PreprocessingConfig().to_dict()
        self.method = method
        self.method_config = create_method(method, knobs).config.to_dict()
        self.classifier_bias = bool(classifier_bias)
        self.classifier_type = classifier_type
        self.normalize_features = bool(normalize_features)
        self.backbone_name = backbone_name or self.backbone_spec.get("name")
        super().__init__(**kwargs)

    @property
    def method_preset(self) -> str:
        return self.method_config.get("preset", "paper")

    @property
    def default_export_format(self) -> str:
        """The export layout paired with the backbone's library (``BackboneLibrary.export_layout``); ``"hubtune"``
        when the library has none or the head cannot be expressed as a plain linear classifier of the library."""
        library = self.backbone_spec.get("library")
        if self.classifier_type != "linear" or self.normalize_features or not library:
            return "hubtune"
        return get_backbone_library(library).export_layout or "hubtune"


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
        raise ConfigError(f"labels must be integer class indices, got dtype {labels.dtype}.")
    if labels.device.type == "cpu" and not torch.compiler.is_compiling():
        bad = (labels < 0) | (labels >= num_labels)
        if bool(bad.any()):
            raise ConfigError(
                f"labels must lie in [0, {num_labels}) (num_labels={num_labels}); got "
                f"{sorted(set(labels[bad].tolist()))[:10]}. Check the dataset's label column and num_labels."
            )
    else:  # device-side check (also under torch.compile): no host synchronisation, no graph break
        torch._assert_async(((labels >= 0) & (labels < num_labels)).all(), f"labels must lie in [0, {num_labels})")


def _class_names(num_labels: int | None, id2label: dict[int, str] | None) -> tuple[int, dict[int, str]]:
    """(num_labels, id2label) from either or both (``LABEL_i`` names when only the number is given)."""
    if id2label is not None:
        id2label = {int(k): str(v) for k, v in id2label.items()}
        if num_labels is None:
            num_labels = len(id2label)
        elif num_labels != len(id2label):
            raise ConfigError(f"num_labels={num_labels} but id2label has {len(id2label)} names.")
    if num_labels is None:
        raise ConfigError("Give num_labels or id2label.")
    return num_labels, id2label if id2label is not None else {i: f"LABEL_{i}" for i in range(num_labels)}


class HubtuneForImageClassification(PreTrainedModel):
    """A backbone + classifier (+ the method's training-only heads) trained with a registered method."""

    config_class = HubtuneConfig
    base_model_prefix = "backbone"
    main_input_name = "pixel_values"
    _no_split_modules: list[str] = []

    def __init__(self, config: HubtuneConfig, backbone: Backbone | None = None):
        super().__init__(config)
        if backbone is None:
            if not config.backbone_spec:
                raise ConfigError("HubtuneConfig.backbone_spec is empty: create the model with "
                                  "HubtuneForImageClassification.from_backbone(name, num_labels=...).")
            backbone = backbone_from_spec(config.backbone_spec, config.preprocessing)
        self.backbone = backbone
        dim = backbone.num_features
        if config.num_labels < 1:
            raise ConfigError("num_labels must be at least 1.")
        if config.classifier_type == "orthogonal-abs":
            self.classifier = OrthogonalAbsClassifier(dim, config.num_labels)
        else:
            self.classifier = nn.Linear(dim, config.num_labels, bias=config.classifier_bias)
            nn.init.normal_(self.classifier.weight, std=0.01)
            if self.classifier.bias is not None:
                nn.init.zeros_(self.classifier.bias)
        self.method = create_method(config.method, config.method_config)
        for name, head in self.method.build_training_heads(dim).items():
            self._add_training_part(name, head)
        # Parts built from the created model (a frozen starting backbone, a source classifier); the method may
        # resolve knobs from it, which the config then records.
        for name, part in self.method.setup(self).items():
            self._add_training_part(name, part)
        config.method_config = self.method.config.to_dict()
        self.loss_fn = self.method.build_loss()
        self.post_init()

    def _add_training_part(self, name: str, module: nn.Module) -> None:
        if hasattr(self, name):
            raise MethodError(f"Method {self.config.method!r} names a training part {name!r} that the model already has.")
        self.add_module(name, module)

    # Weights come from the backbone's library (or a checkpoint); never let transformers re-initialise them.
    def _init_weights(self, module: nn.Module) -> None:
        return

    # ------------------------------------------------------------------------------------------ construction

    @classmethod
    def from_backbone(
        cls,
        backbone: str | Backbone,
        num_labels: int | None = None,
        id2label: dict[int, str] | None = None,
        pretrained: bool = False,
        method: str = "core-tuning",
        method_config: dict[str, Any] | MethodConfig | None = None,
        image_size: int | None = None,
        library: str | None = None,
        **config_kwargs: Any,
    ) -> "HubtuneForImageClassification":
        """Build a classifier over a timm / transformers backbone.

        Args:
            backbone: a name accepted by :func:`hubtune.backbones.create_backbone`, or a :class:`Backbone`.
            num_labels: number of classes (taken from ``id2label`` when omitted).
            id2label: class names, e.g. from a ``datasets.ClassLabel``'s ``names``.
            pretrained: load the backbone's pretrained weights (an error if they cannot be loaded).
            method / method_config: the training method and its knobs, e.g. ``method_config={"eta": 0.1}``
                (see :mod:`hubtune.methods`).
            image_size: override the backbone's input size.
            **config_kwargs: other :class:`HubtuneConfig` fields. The method's preset may imply classifier
                settings (AdaptiveMix ``reference``: L2-normalised features and a frozen orthogonal ``|W u|``
                head; Core-tuning ``reference``: no classifier bias); explicit fields override them.
        """
        num_labels, id2label = _class_names(num_labels, id2label)
        # Validate the method before building (and perhaps downloading) a backbone.
        probe = HubtuneConfig(method=method, method_config=method_config,
                              method_preset=config_kwargs.pop("method_preset", None),
                              loss_kwargs=config_kwargs.pop("loss_kwargs", None))
        probe_method = create_method(method, probe.method_config)
        for key, value in probe_method.model_defaults().items():
            config_kwargs.setdefault(key, value)
        if isinstance(backbone, str):
            name = public_name(backbone)
            backbone = create_backbone(backbone, pretrained=pretrained, library=library, image_size=image_size,
                                       keep_source_classifier=probe_method.uses_source_classifier)
        else:
            name = backbone.spec.get("name")
            backbone.preprocessing = backbone.preprocessing.with_image_size(image_size)
        config = HubtuneConfig(
            backbone_spec=backbone.spec,
            preprocessing=backbone.preprocessing.to_dict(),
            method=method,
            method_config=probe.method_config,
            backbone_name=name,
            num_labels=num_labels,
            id2label=id2label,
            label2id={v: k for k, v in id2label.items()},
            **config_kwargs,
        )
        return cls(config, backbone=backbone)

    @classmethod
    def _from_parts(cls, parts: ClassifierParts, **config_kwargs: Any) -> "HubtuneForImageClassification":
        backbone = backbone_from_spec(parts.spec, parts.preprocessing)
        missing, unexpected = backbone.model.load_state_dict(parts.backbone_state, strict=False)
        if missing or unexpected:
            raise ExportError(
                f"The weights of {parts.source!r} do not match its config: missing {sorted(missing)[:5]}, unexpected "
                f"{sorted(unexpected)[:5]}."
            )
        if parts.head_weight.shape[1] != backbone.num_features:
            raise ExportError(
                f"The classifier of {parts.source!r} reads {parts.head_weight.shape[1]} features but the backbone "
                f"gives {backbone.num_features}."
            )
        config_kwargs.setdefault("classifier_bias", True)
        config = HubtuneConfig(
            backbone_spec=backbone.spec, preprocessing=parts.preprocessing, backbone_name=parts.source,
            num_labels=parts.num_labels, id2label=parts.id2label,
            label2id={name: i for i, name in parts.id2label.items()}, **config_kwargs,
        )
        model = cls(config, backbone=backbone)
        with torch.no_grad():
            model.classifier.weight.copy_(parts.head_weight)
            if model.classifier.bias is not None:
                model.classifier.bias.copy_(parts.head_bias if parts.head_bias is not None
                                            else torch.zeros(parts.num_labels))
        return model.eval()

    # ------------------------------------------------------------------------------------------ forward

    @property
    def preprocessing(self) -> PreprocessingConfig:
        return PreprocessingConfig.from_dict(self.config.preprocessing)

    def forward_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pooled features (B, D) as the classifier sees them."""
        return self.classifier_input(self.backbone(pixel_values))

    def classifier_input(self, pooled: torch.Tensor) -> torch.Tensor:
        """The backbone's pooled features as the classifier reads them (L2-normalised under ``normalize_features``);
        for methods that pool the backbone's feature map themselves (DELTA)."""
        if self.config.normalize_features:
            pooled = F.normalize(pooled.float(), dim=-1).to(pooled.dtype)
        return pooled

    def _check_inputs(self, pixel_values: torch.Tensor) -> None:
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4:
            shape = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values).__name__
            raise ConfigError(f"pixel_values must be a (batch, channels, height, width) tensor, got {shape}.")
        channels = int(self.config.preprocessing["input_size"][0])
        if pixel_values.shape[1] != channels:
            raise ConfigError(
                f"pixel_values has {pixel_values.shape[1]} channel(s) but this model takes {channels}; convert the "
                f"images (e.g. PIL's .convert('{'RGB' if channels == 3 else 'L'}')) or use hubtune.data.build_transforms."
            )

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_features: bool = False,
        return_dict: bool | None = None,
    ) -> HubtuneImageClassifierOutput:
        self._check_inputs(pixel_values)
        if labels is not None:
            _check_labels(labels, self.config.num_labels)
        components = None
        if self.training and labels is not None:
            try:
                out = self.method.forward_train(self, pixel_values, labels)
            except ValueError as e:
                if "Expected more than 1 value per channel" not in str(e):
                    raise
                raise ConfigError(
                    f"A training batch of {pixel_values.shape[0]} image(s) at this size leaves the backbone's "
                    "BatchNorm one value per channel; use a larger batch or image size, or drop the last incomplete "
                    "batch (dataloader_drop_last=True)."
                ) from None
            loss, logits, features, components = out.loss, out.logits, out.features, out.components
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

    def _library_parts(self) -> ClassifierParts:
        library = self.backbone.library
        if not isinstance(self.classifier, nn.Linear) or self.config.normalize_features:
            raise ExportError(
                f"This model's head ({type(self.classifier).__name__}, normalize_features="
                f"{self.config.normalize_features}) is not a plain linear classifier on the pooled features, so the "
                f"{library} layout cannot reproduce it. Use export_format='hubtune'."
            )
        return ClassifierParts(
            spec=dict(self.config.backbone_spec),
            preprocessing=dict(self.config.preprocessing),
            id2label={int(k): str(v) for k, v in (self.config.id2label or {}).items()},
            backbone_state=self.backbone.model.state_dict(),
            head_weight=self.classifier.weight.detach(),
            head_bias=self.classifier.bias.detach() if self.classifier.bias is not None else None,
            source=str(self.config.backbone_name),
        )

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, export_format: str = "auto", **kwargs: Any):
        """Save the model (safetensors); a model with non-finite weights is never written.

        Args:
            export_format: ``"auto"`` (default) writes the backbone library's own layout (timm's Hub layout, or
                the matching transformers ``*ForImageClassification``) so that plain timm / transformers load it;
                ``"hubtune"`` keeps the training-only heads so training can resume; ``"timm"`` /
                ``"transformers"`` force a layout (it must be the backbone's library).
        """
        check_export_format(export_format)
        if kwargs.get("safe_serialization", True) is False:
            raise ConfigError("hubtune writes weights as safetensors only; drop safe_serialization=False.")
        if export_format == "auto":
            export_format = self.config.default_export_format
        if not kwargs.get("is_main_process", True):
            return None
        if export_format == "hubtune":
            return self._save_hubtune_layout(save_directory, kwargs.get("state_dict"))
        if not LIBRARY_LAYOUTS.get(export_format).writes(self.backbone.library):
            raise ExportError(
                f"A {self.backbone.library} backbone cannot be exported in the {export_format} layout; use "
                f"export_format='auto' (= {self.backbone.library!r}) or 'hubtune'."
            )
        parts = self._library_parts()
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                expected = self(pixel_values=probe_input(parts.preprocessing)).logits.float()
            return write_library_layout(parts, export_format, save_directory, expected)
        finally:
            self.train(was_training)

    def _save_hubtune_layout(self, save_directory: str | os.PathLike, state_dict: dict | None = None) -> Path:
        # Not PreTrainedModel.save_pretrained: transformers 5 rewrites the keys of nested transformers backbones
        # to their legacy names on save, and Trainer's resume loads checkpoints with strict=False, so the keys
        # must be exactly this module's own.
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        save_weights(state_dict if state_dict is not None else self.state_dict(), out / SAFE_WEIGHTS_NAME)
        self.config.architectures = [type(self).__name__]
        self.config.save_pretrained(out)
        return out

    def run_info(
        self,
        dataset: str | None = None,
        hyperparameters: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
        log_history: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """What the model card needs to know about this model and its run, as plain values (``hubtune_run.json``)."""
        config = self.config
        return {
            "base_model": card_name(config.backbone_name, config.backbone_spec),
            "backbone_library": config.backbone_spec.get("library"),
            "export_format": config.default_export_format,
            "pretrained": bool(config.backbone_spec.get("pretrained", False)),
            "dataset": dataset,
            "method": config.method,
            "method_preset": config.method_preset,
            "method_card": self.method.card(),
            "hyperparameters": {
                **(hyperparameters or {}),
                **self.method.hyperparameters(),
                "image_size": config.preprocessing["input_size"][-1],
            },
            "metrics": metrics or {},
            "num_labels": config.num_labels,
            "id2label": {int(k): v for k, v in config.id2label.items()},
            "preprocessing": dict(config.preprocessing),
            "log_history": log_history or [],
        }

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
        if kwargs:
            raise ConfigError(f"Unsupported push_to_hub arguments: {sorted(kwargs)}.")
        with tempfile.TemporaryDirectory(prefix="hubtune-push-") as tmp:
            self.save_pretrained(tmp, export_format=export_format)
            write_model_card(tmp, run_info or self.run_info(), repo_id=repo_id)
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
        **config_kwargs: Any,
    ) -> "HubtuneForImageClassification":
        """Load a hubtune, timm or transformers classification folder or Hub repo.

        Weights are read from ``model.safetensors``; pickle checkpoints (``.bin``, ``.pth``) are refused unless
        ``allow_pickle=True``. Missing or unexpected weights are an error, never a silent random init. For a timm
        or transformers folder, ``config_kwargs`` (``method``, ``method_config``, ...) set up further training; its
        training-only heads are freshly initialised.
        """
        source = str(pretrained_model_name_or_path)
        given_config = config_kwargs.pop("config", None)  # AutoModelForImageClassification passes the parsed config
        for key in _LOADER_KWARGS:
            config_kwargs.pop(key, None)
        config_dict = given_config.to_dict() if isinstance(given_config, HubtuneConfig) else read_config(source, revision, token)
        if layout_of_config(config_dict) != "hubtune":
            parts = read_library_layout(source, config_dict, revision=revision, token=token, allow_pickle=allow_pickle)
            return cls._from_parts(parts, **config_kwargs)
        try:
            config = HubtuneConfig.from_dict({**config_dict, **config_kwargs})
        except (TypeError, AttributeError, KeyError) as e:
            raise WeightsFileError(f"{CONFIG_NAME} of {source!r} has wrongly typed or missing values ({e}).") from e
        model = cls(config)
        state_dict = load_weights(source, revision=revision, token=token, allow_pickle=allow_pickle)
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
        if missing or unexpected:
            raise WeightsFileError(
                f"Weights in {source!r} do not match the hubtune config: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}."
            )
        model.eval()
        return model


AutoConfig.register("hubtune", HubtuneConfig, exist_ok=True)
AutoModelForImageClassification.register(HubtuneConfig, HubtuneForImageClassification, exist_ok=True)
