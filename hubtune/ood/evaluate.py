"""Running a model over an in-distribution set and OOD sets, and the OOD metrics of each score: :func:`evaluate_ood`.

Every set passes through the model's own eval preprocessing, so OOD images of any size or channel count
work. The OOD sets are loaded and every image is decoded before the model runs, so a bad OOD source fails
in seconds, not after the in-distribution set has been scored.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Mapping, Sequence

import datasets
import torch
from torch import Tensor

from hubtune.backbones import PreprocessingConfig
from hubtune.data import ImageClassificationData, build_transforms, load_image_classification_data
from hubtune.errors import OODError
from hubtune.messages import say
from hubtune.ood.metrics import CONVENTION, METRIC_NAMES, ood_metrics
from hubtune.ood.registry import OOD_SOURCES
from hubtune.ood.scores import DEFAULT_SCORES, OOD_SCORES, OODScore, resolve_scores
from hubtune.ood.sources import check_ood_images, image_column, load_ood_data

__all__ = ["OODSettings", "evaluate_ood", "load_ood_sets"]


# --------------------------------------------------------------------------------------------- the model


class _ModelOutputs:
    """Logits and / or pooled features of a model, however it exposes them."""

    def __init__(self, model: Any):
        self.module = model if isinstance(model, torch.nn.Module) else None
        if isinstance(model, (tuple, list)):
            if len(model) != 2 or not all(f is None or callable(f) for f in model):
                raise OODError("A model given as a pair must be (features_fn, head_fn): pixel_values -> (B, D) "
                               "features and features -> (B, C) logits; either may be None.")
            self.features_fn, self.head_fn, self.logits_fn = model[0], model[1], None
            if self.features_fn is None and self.head_fn is not None:
                raise OODError("A (features_fn, head_fn) pair needs features_fn to compute logits.")
            return
        if not callable(model) and not callable(getattr(model, "forward_features", None)):
            raise OODError(f"The model must be callable or expose forward_features, got {type(model).__name__}.")
        features_fn = getattr(model, "forward_features", None)
        self.features_fn = features_fn if callable(features_fn) else None
        head = getattr(model, "classifier", None)
        self.head_fn = head if callable(head) and self.features_fn is not None else None
        self.logits_fn = model if self.head_fn is None and callable(model) else None

    @property
    def has_features(self) -> bool:
        return self.features_fn is not None

    @property
    def has_logits(self) -> bool:
        return self.head_fn is not None or self.logits_fn is not None

    def check_supports(self, specs: Sequence[OODScore]) -> None:
        """An OODError when a score needs features or logits that this model does not give."""
        for spec in specs:
            if spec.reads == "features" and not self.has_features:
                raise OODError(
                    f"Score {spec.name!r} needs pooled features, but the model has no forward_features(pixel_values). "
                    f"Pass a model with forward_features or a (features_fn, head_fn) pair, or use logit scores "
                    f"({', '.join(s.name for s in OOD_SCORES.values() if s.reads == 'logits')})."
                )
            if spec.reads == "logits" and not self.has_logits:
                raise OODError(
                    f"Score {spec.name!r} needs logits, but the model gives none (a (features_fn, None) pair). Pass a "
                    f"head_fn or use feature scores ({', '.join(s.name for s in OOD_SCORES.values() if s.fitted)})."
                )

    def _features(self, pixel_values: Tensor) -> Tensor:
        features = self.features_fn(pixel_values)
        if not isinstance(features, Tensor) or features.ndim != 2:
            shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
            raise OODError(
                f"forward_features returned {shape}, not pooled (batch, features); hubtune's feature scores need "
                "pooled features as the classifier reads them."
            )
        return features

    def _logits(self, pixel_values: Tensor) -> Tensor:
        out = self.logits_fn(pixel_values)
        logits = out if isinstance(out, Tensor) else getattr(out, "logits", None)
        if logits is None and isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
            logits = out[0]
        if not isinstance(logits, Tensor):
            raise OODError(f"The model returned {type(out).__name__}; expected logits or an output with .logits.")
        return logits

    def __call__(self, pixel_values: Tensor, need_features: bool) -> tuple[Tensor | None, Tensor | None]:
        features = logits = None
        if self.features_fn is not None and (need_features or self.head_fn is not None):
            features = self._features(pixel_values)
        if self.head_fn is not None:
            logits = self.head_fn(features)
        elif self.logits_fn is not None:
            logits = self._logits(pixel_values)
        return features, logits


def _find_preprocessing(model: Any, preprocessing: Any) -> PreprocessingConfig:
    candidates = [preprocessing, getattr(model, "preprocessing", None)]
    config = getattr(model, "config", None)
    candidates.append(getattr(config, "preprocessing", None) if config is not None else None)
    backbone = getattr(model, "backbone", None)
    candidates.append(getattr(backbone, "preprocessing", None) if backbone is not None else None)
    for candidate in candidates:
        if isinstance(candidate, PreprocessingConfig):
            return candidate
        if isinstance(candidate, Mapping):
            return PreprocessingConfig.from_dict(dict(candidate))
    raise OODError(
        "Cannot tell how to preprocess images for this model: it has no preprocessing config (model.preprocessing, "
        "model.config.preprocessing or model.backbone.preprocessing). Pass preprocessing=PreprocessingConfig(...)."
    )


@contextlib.contextmanager
def _inference(module: torch.nn.Module | None, device: str | torch.device) -> Iterator[None]:
    """The module on ``device`` in eval mode without gradients; its training mode is restored afterwards."""
    was_training = module.training if module is not None else None
    if module is not None:
        module.to(device)
        module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        if module is not None:
            module.train(was_training)


# --------------------------------------------------------------------------------------------- collecting outputs


class _PixelTransform:
    """``Dataset.with_transform`` function: images to pixel_values (labels kept when there are any)."""

    def __init__(self, transform: Callable, image_column: str, label_column: str | None):
        self.transform, self.image_column, self.label_column = transform, image_column, label_column

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        out = {"pixel_values": [self.transform(image) for image in batch[self.image_column]]}
        if self.label_column is not None:
            out["labels"] = [int(label) for label in batch[self.label_column]]
        return out


@dataclass
class _Collected:
    logits: Tensor | None
    features: Tensor | None
    labels: Tensor | None

    @property
    def num_images(self) -> int:
        return int(len(self.logits if self.logits is not None else self.features))


@dataclass
class _Runner:
    """Runs the model over a dataset in batches and keeps what the scores read."""

    outputs: _ModelOutputs
    transform: Callable
    batch_size: int
    device: str | torch.device
    need_features: bool

    def _view(self, dataset: datasets.Dataset, name: str, need_labels: bool) -> tuple[datasets.Dataset, bool]:
        if len(dataset) == 0:
            raise OODError(f"Dataset {name!r} is empty; an OOD evaluation needs at least one image in every set.")
        column = image_column(dataset, name)
        label_column = "label" if "label" in dataset.column_names else None
        if need_labels and label_column is None:
            raise OODError(
                f"Dataset {name!r} has no 'label' column, but fitting the feature scores needs class labels; load "
                "it with hubtune.data.load_image_classification_data."
            )
        columns = [column] + ([label_column] if label_column else [])
        transform = _PixelTransform(self.transform, column, label_column)
        return dataset.with_transform(transform, columns=columns), label_column is not None

    def collect(self, dataset: datasets.Dataset, name: str, need_labels: bool = False) -> _Collected:
        view, has_labels = self._view(dataset, name, need_labels)
        logits, features, labels = [], [], []
        for start in range(0, len(view), self.batch_size):
            batch = view[start:start + self.batch_size]
            pixel_values = torch.stack([torch.as_tensor(p) for p in batch["pixel_values"]]).float().to(self.device)
            batch_features, batch_logits = self.outputs(pixel_values, self.need_features)
            if batch_logits is not None:
                logits.append(batch_logits.detach().float().cpu())
            if self.need_features and batch_features is not None:
                features.append(batch_features.detach().float().cpu())
            if has_labels:
                labels.append(torch.tensor(batch["labels"], dtype=torch.long))
        return _Collected(
            logits=torch.cat(logits) if logits else None,
            features=torch.cat(features) if features else None,
            labels=torch.cat(labels) if labels else None,
        )


# --------------------------------------------------------------------------------------------- inputs


def _named_sources(out_data: Mapping[str, Any] | Sequence[Any] | str | os.PathLike) -> dict[str, Any]:
    if isinstance(out_data, (str, os.PathLike)):
        out_data = [out_data]
    if not isinstance(out_data, Mapping):
        out_data = {str(source): source for source in out_data}
    if not out_data:
        raise OODError(
            f"Give at least one OOD dataset (out_data), e.g. {{'noise': 'noise'}}; named sources: "
            f"{', '.join(OOD_SOURCES)}."
        )
    return {str(name): source for name, source in out_data.items()}


def _check_batch_size(batch_size: Any) -> None:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise OODError(f"batch_size must be a positive integer, got {batch_size!r}.")


def _in_distribution_splits(in_data: Any, train_data: Any, seed: int,
                            strict_data: bool = False) -> tuple[datasets.Dataset, str, Any]:
    """(eval dataset, its name, train dataset or None) from whatever the caller passed."""
    name = "in-distribution"
    if isinstance(in_data, (str, os.PathLike, datasets.DatasetDict)):
        name = str(in_data) if isinstance(in_data, (str, os.PathLike)) else name
        in_data = load_image_classification_data(in_data, seed=seed, strict_data=strict_data)
    if isinstance(in_data, ImageClassificationData):
        name = in_data.name if name == "in-distribution" else name
        train = in_data.train if train_data is None else train_data
        in_data = in_data.eval
    else:
        train = train_data
    if isinstance(train, (str, os.PathLike, datasets.DatasetDict)):
        train = load_image_classification_data(train, seed=seed, strict_data=strict_data).train
    elif isinstance(train, ImageClassificationData):
        train = train.train
    if not isinstance(in_data, datasets.Dataset):
        raise OODError(
            f"in_data must be a datasets.Dataset, an ImageClassificationData or a dataset source, not "
            f"{type(in_data).__name__}."
        )
    return in_data, name, train


def _check_in_distribution(in_eval: datasets.Dataset, in_name: str, train: Any, specs: Sequence[OODScore]) -> None:
    fitted = [spec for spec in specs if spec.fitted]
    if fitted and train is None:
        raise OODError(
            f"Score(s) {', '.join(s.name for s in fitted)} are fitted on training features: pass train_data (the "
            "labelled training split), or in_data as an ImageClassificationData / source string."
        )
    if len(in_eval) == 0:
        raise OODError(f"The in-distribution dataset {in_name!r} is empty; it needs at least one image.")


_GENERIC_LABEL = re.compile(r"^LABEL_\d+$")  # transformers' default names: the classes are not named


def _model_labels(model: Any) -> list[str] | None:
    """The model's class names in id order (config.id2label), or None when it has none."""
    id2label = getattr(getattr(model, "config", None), "id2label", None)
    if not isinstance(id2label, Mapping) or not id2label:
        return None
    by_id = {int(k): str(v) for k, v in id2label.items() if str(k).lstrip("-").isdigit()}
    if sorted(by_id) != list(range(len(id2label))):
        return None
    return [by_id[i] for i in range(len(by_id))]


def _dataset_labels(dataset: Any) -> list[str] | None:
    if not isinstance(dataset, datasets.Dataset) or "label" not in dataset.column_names:
        return None
    feature = dataset.features["label"]
    return [str(name) for name in feature.names] if isinstance(feature, datasets.ClassLabel) else None


def _few_names(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return f"[{shown}, ... ({len(names)} in all)]" if len(names) > limit else f"[{shown}]"


def match_labels(model: Any, dataset: Any, name: str) -> Any:
    """``dataset`` with its labels as the model's class ids: unchanged when the class names agree, mapped by name
    when they are the model's in another order (said in a note); OODError naming both label sets when they differ.

    A model without class names (``LABEL_0`` ...) only needs as many classes; a set without class labels (an OOD
    set) is returned as it is.
    """
    model_labels, data_labels = _model_labels(model), _dataset_labels(dataset)
    if model_labels is None or data_labels is None or model_labels == data_labels:
        return dataset
    if all(_GENERIC_LABEL.match(label) for label in model_labels):
        if len(model_labels) == len(data_labels):
            return dataset
        raise OODError(
            f"The model has {len(model_labels)} classes and {name!r} has {len(data_labels)} "
            f"({_few_names(data_labels)}): it is not the dataset the model was fine-tuned on. Pass that dataset as "
            "--dataset (in_data); the OOD sets go to --ood_dataset."
        )
    if sorted(model_labels) != sorted(data_labels):
        raise OODError(
            f"The model's classes are not those of {name!r}: the model has {_few_names(model_labels)}, {name!r} has "
            f"{_few_names(data_labels)}; its accuracy and the fitted scores would compare mismatched labels. Pass the "
            "dataset the model was fine-tuned on as --dataset (in_data); the OOD sets go to --ood_dataset."
        )
    say(f"Note: {name!r} has the model's classes in another order; its labels are mapped to the model's by name.")
    return dataset.align_labels_with_mapping({label: i for i, label in enumerate(model_labels)}, "label")


def load_ood_sets(
    sources: Mapping[str, Any],
    reference: datasets.Dataset,
    *,
    max_ood_images: int | None = None,
    seed: int = 0,
    strict_data: bool = False,
) -> dict[str, datasets.Dataset]:
    """Load every OOD set and check that each image decodes, before any model runs.

    Named sources (``OOD_SOURCES``) copy the first ``reference`` image's size and mode and hold ``len(reference)``
    images; dataset-backed ones keep at most ``max_ood_images`` (a seeded subset).

    Raises:
        OODError: a missing folder, an empty set, an image that cannot be read (named in the message).
    """
    first = reference[0][image_column(reference, "in-distribution")]
    sets = {}
    for name, source in sources.items():
        if isinstance(source, str) and source in OOD_SOURCES:
            sets[name] = load_ood_data(source, image_size=first.size, mode=first.mode, num_images=len(reference),
                                       seed=seed)
            continue
        dataset = load_ood_data(source, num_images=max_ood_images, seed=seed, strict_data=strict_data)
        check_ood_images(dataset, name)
        sets[name] = dataset
    return sets


# --------------------------------------------------------------------------------------------- scoring


ScoreFns = dict[str, Callable[[Tensor], Tensor]]


def _score_functions(specs: Sequence[OODScore], runner: _Runner, train: Any) -> ScoreFns:
    """Each score's function; the fitted ones are fitted on the training split's features and labels."""
    score_fns: ScoreFns = {spec.name: spec.build() for spec in specs if not spec.fitted}
    fitted = [spec for spec in specs if spec.fitted]
    if fitted:
        train_outputs = runner.collect(train, "train", need_labels=True)
        for spec in fitted:
            score_fns[spec.name] = spec.build(train_outputs.features, train_outputs.labels)
    return score_fns


def _apply(specs: Sequence[OODScore], score_fns: ScoreFns, collected: _Collected) -> dict[str, Tensor]:
    inputs = {"features": collected.features, "logits": collected.logits}
    return {spec.name: score_fns[spec.name](inputs[spec.reads]) for spec in specs}


def _ood_result(in_scores: dict[str, Tensor], ood_scores: dict[str, Tensor], num_images: int) -> dict[str, Any]:
    return {
        "num_images": num_images,
        "metrics": {name: ood_metrics(in_scores[name], ood_scores[name]) for name in in_scores},
    }


def _in_summary(in_name: str, in_outputs: _Collected) -> dict[str, Any]:
    summary: dict[str, Any] = {"name": in_name, "num_images": in_outputs.num_images}
    if in_outputs.logits is not None and in_outputs.labels is not None:
        summary["accuracy"] = float((in_outputs.logits.argmax(dim=1) == in_outputs.labels).float().mean())
    return summary


def _mean_metrics(results: dict[str, Any], score_names: Sequence[str]) -> dict[str, dict[str, float]]:
    return {
        name: {m: sum(r["metrics"][name][m] for r in results.values()) / len(results) for m in METRIC_NAMES}
        for name in score_names
    }


@dataclass(frozen=True)
class OODSettings:
    """How :func:`evaluate_ood` runs, besides the model, the data and the scores (each also a keyword of
    :func:`evaluate_ood`).

    Attributes:
        batch_size: images per forward pass.
        device: where the model runs.
        preprocessing: a ``PreprocessingConfig`` (or dict) overriding the one found on the model.
        max_ood_images: keep at most this many images of each dataset-backed OOD source.
        seed: seed of the named OOD sources and of subsampling (and of the split of a source string).
        strict_data: for sources read with ``load_image_classification_data`` (``in_data``, ``train_data``,
            dataset-backed OOD sets), stop at the first unreadable image instead of leaving unreadable images out.
    """

    batch_size: int = 64
    device: str | torch.device = "cpu"
    preprocessing: Any = None
    max_ood_images: int | None = None
    seed: int = 0
    strict_data: bool = False

    def __post_init__(self) -> None:
        _check_batch_size(self.batch_size)

    @classmethod
    def of(cls, settings: "OODSettings | None", options: Mapping[str, Any]) -> "OODSettings":
        """``settings`` (default: the defaults) with the keyword ``options`` (its field names) replaced."""
        unknown = sorted(set(options) - set(cls.__dataclass_fields__))
        if unknown:
            raise TypeError(f"evaluate_ood() got unexpected keyword argument(s) {', '.join(unknown)}; its settings "
                            f"are {', '.join(cls.__dataclass_fields__)}.")
        return replace(settings or cls(), **options)


def _score_sets(specs: Sequence[OODScore], runner: _Runner, train: Any, in_eval: datasets.Dataset, in_name: str,
                ood_sets: Mapping[str, datasets.Dataset]) -> tuple[_Collected, dict[str, Any], list[str]]:
    """The in-distribution outputs, each OOD set's result and the score names (the model already in inference)."""
    in_outputs = runner.collect(in_eval, in_name)
    score_fns = _score_functions(specs, runner, train)
    in_scores = _apply(specs, score_fns, in_outputs)
    results = {}
    for name, dataset in ood_sets.items():
        collected = runner.collect(dataset, name)
        results[name] = _ood_result(in_scores, _apply(specs, score_fns, collected), collected.num_images)
    return in_outputs, results, list(in_scores)


def evaluate_ood(model: Any, in_data: Any, out_data: Mapping[str, Any] | Sequence[str],
                 scores: Sequence[str] = DEFAULT_SCORES, train_data: Any = None, settings: OODSettings | None = None,
                 **options: Any) -> dict[str, Any]:
    """Score in-distribution and OOD images with a model and report OOD metrics per OOD set and score.

    Args:
        model: a hubtune classifier (or any module with ``forward_features(pixel_values)`` -> pooled (B, D)
            features and ``classifier`` features -> logits); a callable returning logits (or an output with
            ``.logits``) if only logit scores are asked for; or a pair ``(features_fn, head_fn)``. It is moved
            to the device and run in eval mode without gradients.
        in_data: the in-distribution test images: a ``datasets.Dataset`` (``"image"`` column, ``"label"``
            optional), an :class:`~hubtune.data.ImageClassificationData` (its eval split; its train split is
            the default ``train_data``) or a source string for ``load_image_classification_data``.
        out_data: ``{name: dataset or source}``, or a list of sources (a name of ``OOD_SOURCES``, such as
            ``"noise"`` or ``"skimage-photos"``, or anything :func:`load_ood_data` reads). The named sources copy
            the in-distribution images' size and mode and hold as many images as ``in_data``.
        scores: names from ``OOD_SCORES``.
        train_data: labelled training images that the fitted scores (``subspace``, ``mahalanobis``) are fitted
            on; a dataset, ``ImageClassificationData`` (its train split) or a source string.
        settings, **options: an :class:`OODSettings` and / or its fields as keywords (``batch_size=32``,
            ``device="cuda"``, ``preprocessing=...``, ``max_ood_images``, ``seed``, ``strict_data``).

    Returns:
        ``{"in_distribution": {...}, "train_images": n or None, "scores": [...], "results": {ood_name:
        {"num_images": n, "metrics": {score: {auroc, fpr_at_95_tpr, aupr_in, aupr_out, detection_error}}}},
        "mean": {score: {...}}, "convention": ...}``; all metrics are fractions in [0, 1].

    Raises:
        OODError (a ValueError): an unknown score, no or an empty OOD set, an OOD image that cannot be read
            (checked before the model runs), a model without the logits / features a score needs, fitted
            scores without labelled training data, an in-distribution set whose class names are not the model's
            (``config.id2label``; the same names in another order are mapped by name).
    """
    settings = OODSettings.of(settings, options)
    specs, sources, outputs = resolve_scores(scores), _named_sources(out_data), _ModelOutputs(model)
    outputs.check_supports(specs)
    in_eval, in_name, train = _in_distribution_splits(in_data, train_data, settings.seed, settings.strict_data)
    _check_in_distribution(in_eval, in_name, train, specs)
    in_eval = match_labels(model, in_eval, in_name)
    fitted = any(spec.fitted for spec in specs)
    if fitted:
        train = match_labels(model, train, f"{in_name} (training split)")
    ood_sets = load_ood_sets(sources, in_eval, max_ood_images=settings.max_ood_images, seed=settings.seed,
                             strict_data=settings.strict_data)
    transform = build_transforms(_find_preprocessing(model, settings.preprocessing), train=False)
    runner = _Runner(outputs, transform, settings.batch_size, settings.device,
                     any(spec.reads == "features" for spec in specs))
    with _inference(outputs.module, settings.device):
        in_outputs, results, score_names = _score_sets(specs, runner, train, in_eval, in_name, ood_sets)
    return {
        "in_distribution": _in_summary(in_name, in_outputs),
        "train_images": int(len(train)) if fitted else None,
        "scores": [spec.name for spec in specs],
        "results": results,
        "mean": _mean_metrics(results, score_names),
        "convention": CONVENTION,
    }
