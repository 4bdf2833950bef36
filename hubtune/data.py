"""Image-classification data for hubtune: one loader over many sources, and backbone-aware transforms.

:func:`load_image_classification_data` turns any of these into a train / eval pair of
``datasets.Dataset`` objects with exactly two columns, ``"image"`` (``datasets.Image``) and ``"label"``
(``datasets.ClassLabel``):

* ``"digits"``: scikit-learn's 1,797 real 8x8 grayscale digits, embedded so everything runs offline;
* a folder of images, one sub-folder per class (``datasets``' ``imagefolder`` builder);
* a folder written by ``save_to_disk`` (a ``Dataset`` or a ``DatasetDict``);
* a ``datasets.Dataset`` or ``DatasetDict`` object;
* a Hugging Face Hub dataset name.

:func:`build_transforms` maps a PIL image to the tensor a backbone expects (its
:class:`~hubtune.backbones.PreprocessingConfig`), :func:`with_transforms` applies it on the fly and
:func:`collate_image_batch` stacks examples for the ``Trainer`` (which needs
``remove_unused_columns=False`` with such on-the-fly pipelines).
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import datasets
import numpy as np
import torch
from PIL import Image as PILImage

from hubtune.backbones import PreprocessingConfig
from hubtune.errors import ConfigError, DatasetError

DIGITS = "digits"
LABEL_COLUMN_NAMES = ("label", "labels", "fine_label", "coarse_label", "target")
EVAL_SPLIT_NAMES = ("validation", "valid", "val", "test")


@dataclass
class ImageClassificationData:
    """A train / eval pair with columns ``"image"`` (``datasets.Image``) and ``"label"`` (``ClassLabel``)."""

    train: datasets.Dataset
    eval: datasets.Dataset
    label_names: list[str]
    name: str

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.label_names))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.label_names)}


# --------------------------------------------------------------------------------------------- sources


def load_digits_dataset() -> datasets.Dataset:
    """scikit-learn's digits as a ``Dataset``: 1,797 8x8 ``"L"`` images (0..16 scaled to 0..255), labels "0".."9"."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.round(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(i) for i in range(10)])}
    )
    return datasets.Dataset.from_dict(
        {"image": [PILImage.fromarray(p, mode="L") for p in pixels], "label": [int(y) for y in digits.target]},
        features=features,
    )


def is_saved_dataset(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` was written by ``datasets``' ``save_to_disk`` (a Dataset or a DatasetDict)."""
    folder = Path(folder)
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


_COMMON_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def image_folder_extensions() -> tuple[str, ...]:
    """The file extensions that ``datasets``' imagefolder reads as images (lower case; matched case-insensitively)."""
    from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder

    return tuple(ext.lower() for ext in ImageFolder.EXTENSIONS)


def no_images_in(folder: str | os.PathLike) -> str | None:
    """None when ``folder`` (with its sub-folders) holds an image file; else a sentence saying it holds none and
    which extensions are read."""
    extensions = set(image_folder_extensions())
    for _, _, files in os.walk(folder):
        if any(os.path.splitext(name)[1].lower() in extensions for name in files):
            return None
    others = len(extensions - set(_COMMON_IMAGE_EXTENSIONS))
    return (f"{str(folder)!r} holds no images: no file in it or its sub-folders ends in {', '.join(_COMMON_IMAGE_EXTENSIONS)} "
            f"or the {others} other image extensions that datasets' imagefolder reads (any case)")


def _load_source(source: Any) -> tuple[dict[str, datasets.Dataset], str]:
    """The splits of ``source`` and a display name for it."""
    if isinstance(source, datasets.DatasetDict):
        return dict(source), "dataset"
    if isinstance(source, datasets.Dataset):
        return {"train": source}, source.info.dataset_name or "dataset"
    if not isinstance(source, (str, os.PathLike)) or not str(source):
        raise DatasetError(
            f"Unsupported dataset source {source!r}. Pass 'digits', an image folder, a folder written by "
            "save_to_disk, a datasets.Dataset / DatasetDict, or a Hugging Face Hub dataset name."
        )
    name = str(source)
    # The bare word means the embedded set; a folder called "digits" is reachable as "./digits".
    if name == DIGITS:
        return {"train": load_digits_dataset()}, DIGITS
    path = Path(name)
    if path.is_dir():
        if is_saved_dataset(path):
            loaded = datasets.load_from_disk(str(path))
            splits = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
            return splits, name
        empty = no_images_in(path)
        if empty:
            raise DatasetError(f"{empty}. An image folder holds one sub-folder per class with the images inside "
                               "(optionally under train/ and validation/ folders).")
        try:
            return dict(datasets.load_dataset("imagefolder", data_dir=str(path))), name
        except Exception as e:  # noqa: BLE001 - any builder failure means "not a usable image folder"
            raise DatasetError(
                f"Could not read {name!r} as an image folder ({type(e).__name__}: {e}). An image folder holds one "
                "sub-folder per class with the images inside (optionally under train/ and validation/ folders)."
            ) from e
    if path.exists():
        raise DatasetError(
            f"{name!r} is a file, not a dataset. Pass an image folder (one sub-folder per class), a folder "
            "written by save_to_disk, a Hub dataset name or 'digits'."
        )
    try:
        loaded = datasets.load_dataset(name)
    except Exception as e:  # noqa: BLE001 - offline, unknown name, gated repo...: all end the same way
        raise DatasetError(
            f"Could not load dataset {name!r} from the Hugging Face Hub ({type(e).__name__}: {e}). If you are "
            "offline or the name is wrong, pass a local image folder (one sub-folder per class), a folder "
            "written by save_to_disk, or 'digits' for the embedded scikit-learn digits."
        ) from e
    splits = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
    return splits, name


def _choose_splits(
    splits: dict[str, datasets.Dataset], eval_split: str | None
) -> tuple[str, datasets.Dataset, str | None, datasets.Dataset | None]:
    available = ", ".join(splits) or "none"
    if "train" in splits:
        train_name = "train"
    elif len(splits) == 1:
        train_name = next(iter(splits))
    else:
        raise DatasetError(f"The dataset has no 'train' split (splits: {available}); rename one split to 'train'.")
    if eval_split is not None:
        if eval_split not in splits:
            raise DatasetError(f"eval_split {eval_split!r} does not exist; the dataset's splits are: {available}.")
        if eval_split == train_name:
            raise DatasetError(f"eval_split {eval_split!r} is the training split; choose another one or leave it unset.")
        return train_name, splits[train_name], eval_split, splits[eval_split]
    for candidate in EVAL_SPLIT_NAMES:
        if candidate in splits and candidate != train_name:
            return train_name, splits[train_name], candidate, splits[candidate]
    return train_name, splits[train_name], None, None


# --------------------------------------------------------------------------------------------- columns


def _columns_listing(features: datasets.Features) -> str:
    return ", ".join(f"{name} ({type(feat).__name__})" for name, feat in features.items()) or "none"


def _find_image_column(features: datasets.Features, image_column: str | None) -> str:
    if image_column is not None:
        if image_column not in features:
            raise DatasetError(
                f"image_column {image_column!r} does not exist. Available columns: {_columns_listing(features)}."
            )
        feature = features[image_column]
        is_path = isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")
        if not isinstance(feature, datasets.Image) and not is_path:
            raise DatasetError(
                f"image_column {image_column!r} holds {feature!r}, not images or image paths. "
                f"Available columns: {_columns_listing(features)}."
            )
        return image_column
    image_columns = [name for name, feat in features.items() if isinstance(feat, datasets.Image)]
    if not image_columns:
        raise DatasetError(
            f"The dataset has no image column (a datasets.Image feature). Available columns: "
            f"{_columns_listing(features)}. Name the column with image_column (--image-column), or cast it "
            "with dataset.cast_column(name, datasets.Image())."
        )
    if len(image_columns) > 1:
        raise DatasetError(
            f"The dataset has several image columns ({', '.join(image_columns)}); choose one with image_column "
            "(--image-column)."
        )
    return image_columns[0]


def _find_label_column(features: datasets.Features, label_column: str | None, image_column: str) -> str:
    if label_column is not None:
        if label_column not in features:
            raise DatasetError(
                f"label_column {label_column!r} does not exist. Available columns: {_columns_listing(features)}."
            )
        if label_column == image_column:
            raise DatasetError(f"label_column and image_column are both {label_column!r}; they must differ.")
        return label_column
    class_labels = [name for name, feat in features.items() if isinstance(feat, datasets.ClassLabel)]
    if len(class_labels) == 1:
        return class_labels[0]
    # Several ClassLabels (e.g. CIFAR-100's fine_label and coarse_label): the conventional names decide.
    candidates = class_labels or [name for name in features if name != image_column]
    for name in LABEL_COLUMN_NAMES:
        if name in candidates:
            return name
    if class_labels:
        raise DatasetError(
            f"The dataset has several label columns ({', '.join(class_labels)}); choose one with label_column "
            "(--label-column)."
        )
    raise DatasetError(
        f"The dataset has no label column (a ClassLabel feature or a column named "
        f"{'/'.join(LABEL_COLUMN_NAMES)}). Available columns: {_columns_listing(features)}. Name the column "
        "with label_column (--label-column)."
    )


def _standardise_columns(dataset: datasets.Dataset, image_column: str, label_column: str, split: str) -> datasets.Dataset:
    missing = [c for c in (image_column, label_column) if c not in dataset.column_names]
    if missing:
        raise DatasetError(
            f"Split {split!r} lacks column(s) {', '.join(missing)} that the training split has. Available columns: "
            f"{_columns_listing(dataset.features)}."
        )
    # Selecting first avoids clashes when an unrelated column is already called "image" or "label".
    dataset = dataset.select_columns([image_column, label_column])
    dataset = dataset.rename_columns({image_column: "image", label_column: "label"})
    if not isinstance(dataset.features["image"], datasets.Image):
        dataset = dataset.cast_column("image", datasets.Image())
    return dataset


def _is_single_class_folder(folder: Path) -> bool:
    """An image folder whose images all sit in one folder (per split folder): datasets then makes no label column."""
    if not folder.is_dir() or is_saved_dataset(folder):
        return False
    split_names = {"train", "training", *EVAL_SPLIT_NAMES}
    files = [p for p in folder.rglob("*") if p.is_file()]
    classes = {p.parent.name for p in files if p.parent != folder} - split_names
    return bool(files) and len(classes) <= 1


def _drop_unreadable_images(dataset: datasets.Dataset, split: str, strict: bool) -> datasets.Dataset:
    """``dataset`` without the rows whose image cannot be decoded (or DatasetError naming the first, if strict)."""
    raw = dataset.select_columns(["image"]).cast_column("image", datasets.Image(decode=False))
    bad: list[tuple[int, str, str]] = []
    for index, item in enumerate(raw["image"]):
        where = (item or {}).get("path") or f"row {index}"
        try:
            data = item.get("bytes")
            with PILImage.open(io.BytesIO(data) if data is not None else item["path"]) as image:
                image.load()
        except Exception as e:  # noqa: BLE001 - PIL raises many types for a damaged file
            bad.append((index, str(where), f"{type(e).__name__}: {e}".splitlines()[0]))
            if strict:
                break
    if not bad:
        return dataset
    if strict:
        raise DatasetError(f"Cannot read image {bad[0][1]} ({bad[0][2]}); fix or remove it, or drop --strict_data to "
                           "leave unreadable images out.")
    print(f"Leaving out {len(bad)} unreadable image(s) of split {split!r} (first: {bad[0][1]}: {bad[0][2]}); pass "
          "--strict_data to stop at them instead.")
    if len(bad) == len(dataset):
        raise DatasetError(f"No image of split {split!r} could be read (first: {bad[0][1]}: {bad[0][2]}).")
    dropped = {index for index, _, _ in bad}
    return dataset.select([i for i in range(len(dataset)) if i not in dropped])


def _unique_labels(dataset: datasets.Dataset) -> list[Any]:
    # unique() copies the whole table when an index mapping exists; keep only the label column first.
    return dataset.select_columns(["label"]).unique("label")


def _class_label_names(train: datasets.Dataset, evaluation: datasets.Dataset | None, label_column: str) -> list[str]:
    names = list(train.features["label"].names)
    if evaluation is not None:
        eval_feature = evaluation.features["label"]
        if not isinstance(eval_feature, datasets.ClassLabel) or list(eval_feature.names) != names:
            raise DatasetError(
                f"The label column {label_column!r} has different classes in the training and evaluation splits "
                f"({names} vs {getattr(eval_feature, 'names', eval_feature)}); pass an eval_split with the same "
                "classes, or none to split the training data."
            )
    return names


def _encode_raw_labels(
    train: datasets.Dataset, evaluation: datasets.Dataset | None, label_column: str
) -> tuple[datasets.Dataset, datasets.Dataset | None, list[str]]:
    """Map an integer (or string) label column to ClassLabel ids 0..C-1 in sorted order of its values."""
    feature = train.features["label"]
    dtype = getattr(feature, "dtype", None)
    if not isinstance(feature, datasets.Value) or not (
        dtype.startswith(("int", "uint")) or dtype in ("string", "large_string")
    ):
        raise DatasetError(
            f"Label column {label_column!r} holds {feature!r}; hubtune needs a ClassLabel, integer or string labels. "
            "Pick another column with label_column (--label-column) or cast it to datasets.ClassLabel."
        )
    parts = [train] if evaluation is None else [train, evaluation]
    values = {v for part in parts for v in _unique_labels(part)}
    if None in values:
        raise DatasetError(f"Label column {label_column!r} has missing values; drop those rows first.")
    try:
        ordered = sorted(values)
    except TypeError as e:
        raise DatasetError(f"Label column {label_column!r} mixes value types: {sorted(map(repr, values))}.") from e
    index = {v: i for i, v in enumerate(ordered)}
    names = [str(v) for v in ordered]
    class_label = datasets.ClassLabel(names=names)

    def encode(part: datasets.Dataset) -> datasets.Dataset:
        part = part.map(lambda batch: {"label": [index[v] for v in batch]}, input_columns="label", batched=True)
        return part.cast_column("label", class_label)

    return encode(train), None if evaluation is None else encode(evaluation), names


def _check_label_range(dataset: datasets.Dataset, num_labels: int, split: str, label_column: str) -> None:
    bad = sorted(v for v in _unique_labels(dataset) if v is None or not 0 <= v < num_labels)
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (" ..." if len(bad) > 10 else "")
        raise DatasetError(
            f"Split {split!r} has labels outside [0, {num_labels}) in column {label_column!r}: {shown}. "
            "Unlabelled rows (-1) must be removed (dataset.filter(lambda x: x['label'] >= 0)), or choose a split "
            "with labels via eval_split."
        )


# --------------------------------------------------------------------------------------------- public loader


def _positive_or_none(value: int | None, name: str) -> int | None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise DatasetError(f"{name} must be a positive integer or None, not {value!r}.")
    return value


def _subsample(dataset: datasets.Dataset, limit: int | None, seed: int) -> datasets.Dataset:
    if limit is None or len(dataset) <= limit:
        return dataset
    return dataset.shuffle(seed=seed).select(range(limit))


def few_shot_subset(dataset: datasets.Dataset, per_class: int, seed: int) -> datasets.Dataset:
    """``per_class`` examples of every class, drawn with ``seed`` (the same seed gives the same subset), in a
    seeded random order; DatasetError naming a class that has fewer."""
    per_class = _positive_or_none(per_class, "train_samples_per_class")
    labels = np.asarray(dataset["label"])
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        if len(idx) < per_class:
            names = dataset.features["label"].names if isinstance(dataset.features["label"], datasets.ClassLabel) else None
            name = names[int(label)] if names else int(label)
            raise DatasetError(
                f"Class {name!r} has {len(idx)} training image(s), fewer than train_samples_per_class={per_class}; "
                "lower --train_samples_per_class or add images."
            )
        chosen.extend(rng.choice(idx, size=per_class, replace=False).tolist())
    return dataset.select(rng.permutation(np.asarray(chosen)).tolist())


def _split_by_fraction(dataset: datasets.Dataset, eval_fraction: float, seed: int) -> tuple[datasets.Dataset, datasets.Dataset]:
    if not isinstance(eval_fraction, (int, float)) or not 0.0 < eval_fraction < 1.0:
        raise DatasetError(f"eval_fraction must be in (0, 1), not {eval_fraction!r}.")
    if len(dataset) < 2:
        raise DatasetError(
            f"The training split has {len(dataset)} example(s), too few to hold some out for evaluation; add "
            "images or pass an eval_split."
        )
    try:
        parts = dataset.train_test_split(test_size=eval_fraction, stratify_by_column="label", seed=seed)
    except ValueError as e:
        # Stratification needs >= 2 examples per class and at least one eval slot per class.
        warnings.warn(f"Could not stratify the eval split by label ({e}); splitting at random instead.", stacklevel=3)
        parts = dataset.train_test_split(test_size=eval_fraction, seed=seed)
    return parts["train"], parts["test"]


def load_image_classification_data(
    source: str | os.PathLike | datasets.Dataset | datasets.DatasetDict,
    *,
    image_column: str | None = None,
    label_column: str | None = None,
    eval_split: str | None = None,
    eval_fraction: float = 0.2,
    seed: int = 0,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    check_images: bool = True,
    strict_data: bool = False,
) -> ImageClassificationData:
    """Load an image-classification dataset as a train / eval pair with ``"image"`` and ``"label"`` columns.

    Args:
        source: ``"digits"`` (the embedded scikit-learn digits), an image folder (one sub-folder per class),
            a folder written by ``save_to_disk``, a ``datasets.Dataset`` / ``DatasetDict``, or a Hub dataset
            name.
        image_column: the image column; by default the one ``datasets.Image`` feature. A column of image
            paths (strings) is accepted when named here.
        label_column: the label column; by default the ``ClassLabel`` feature, else a column named
            label / labels / fine_label / coarse_label / target. Integer or string labels become
            ``ClassLabel`` ids 0..C-1 in the sorted order of their values.
        eval_split: the evaluation split; by default the first of validation / valid / val / test present,
            else ``eval_fraction`` of the training split held out (stratified by label) with ``seed``.
        max_train_samples, max_eval_samples: keep at most this many examples (a seeded random subset).
        check_images: decode every image once before training, so that a corrupt file is found now, with its
            name, and not at whichever batch reaches it; unreadable images are left out with a count printed.
        strict_data: stop at the first unreadable image (naming the file) instead of leaving it out.

    Raises:
        DatasetError: the source cannot be read, has no image or label column, a named column or split does
            not exist, a split is empty, or labels fall outside [0, num_labels).
    """
    max_train_samples = _positive_or_none(max_train_samples, "max_train_samples")
    max_eval_samples = _positive_or_none(max_eval_samples, "max_eval_samples")
    splits, name = _load_source(source)
    for split_name, split in splits.items():
        if not isinstance(split, datasets.Dataset):
            raise DatasetError(
                f"Split {split_name!r} is a {type(split).__name__}; hubtune needs map-style datasets.Dataset splits "
                "(load without streaming=True)."
            )
    train_name, train, eval_name, evaluation = _choose_splits(splits, eval_split)
    if len(train) == 0:
        raise DatasetError(f"The training split {train_name!r} of {name!r} is empty; it needs labelled images.")
    if evaluation is not None and len(evaluation) == 0:
        raise DatasetError(
            f"The evaluation split {eval_name!r} of {name!r} is empty; pass another eval_split or remove that split "
            "so that eval_fraction of the training data is held out."
        )

    image_col = _find_image_column(train.features, image_column)
    try:
        label_col = _find_label_column(train.features, label_column, image_col)
    except DatasetError:
        if label_column is None and isinstance(source, (str, os.PathLike)) and _is_single_class_folder(Path(source)):
            raise DatasetError(
                f"Image folder {str(source)!r} has only one class: its images sit in a single folder. A classifier "
                "needs two or more classes, one sub-folder per class (e.g. cats/ and dogs/)."
            ) from None
        raise
    train = _standardise_columns(train, image_col, label_col, train_name)
    if evaluation is not None:
        evaluation = _standardise_columns(evaluation, image_col, label_col, eval_name)
    if check_images:
        train = _drop_unreadable_images(train, train_name, strict_data)
        if evaluation is not None:
            evaluation = _drop_unreadable_images(evaluation, eval_name, strict_data)

    if isinstance(train.features["label"], datasets.ClassLabel):
        label_names = _class_label_names(train, evaluation, label_col)
    else:
        train, evaluation, label_names = _encode_raw_labels(train, evaluation, label_col)
    if len(label_names) < 2:
        raise DatasetError(
            f"{name!r} has only one class ({', '.join(map(str, label_names)) or 'none'}); a classifier needs two or more. "
            "An image folder needs one sub-folder per class."
        )
    _check_label_range(train, len(label_names), train_name, label_col)
    if evaluation is not None:
        _check_label_range(evaluation, len(label_names), eval_name, label_col)
    else:
        train, evaluation = _split_by_fraction(train, eval_fraction, seed)

    return ImageClassificationData(
        train=_subsample(train, max_train_samples, seed),
        eval=_subsample(evaluation, max_eval_samples, seed),
        label_names=[str(n) for n in label_names],
        name=name,
    )


# --------------------------------------------------------------------------------------------- transforms

_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")


def _interpolation_mode(name: str):
    from torchvision.transforms import InterpolationMode

    # timm's "random" picks bilinear or bicubic per call; one fixed choice keeps evaluation deterministic.
    name = "bilinear" if name == "random" else name
    if name not in _INTERPOLATIONS:
        raise ConfigError(f"Unknown interpolation {name!r}; use one of {', '.join(_INTERPOLATIONS)}.")
    return InterpolationMode(name)


def _per_channel(values: Sequence[float], channels: int, what: str) -> tuple[float, ...]:
    values = tuple(float(v) for v in values)
    if len(values) == 1:
        return values * channels
    if len(values) != channels:
        raise ConfigError(
            f"Preprocessing {what} has {len(values)} values but the backbone expects {channels} channel(s); give "
            f"one value or {channels}."
        )
    return values


def _to_8bit_grayscale(image: PILImage.Image) -> PILImage.Image:
    """16/32-bit integer grayscale to "L" by scaling 0..65535 to 0..255 (PIL's own convert clips instead)."""
    pixels = np.asarray(image, dtype=np.float64)
    return PILImage.fromarray(np.round(pixels / 257.0).clip(0, 255).astype(np.uint8), mode="L")


class ConvertChannels:
    """Convert a PIL image to the mode a backbone with ``channels`` input channels expects (RGB or L).

    Alpha is dropped (as timm and transformers pipelines do); palette images go through RGBA first so their
    transparency is read correctly.
    """

    def __init__(self, channels: int):
        if channels not in (1, 3):
            raise ConfigError(f"Backbones with {channels} input channels are not supported; hubtune feeds 1 (L) or 3 (RGB).")
        self.channels = channels

    def __call__(self, image: PILImage.Image) -> PILImage.Image:
        target = "RGB" if self.channels == 3 else "L"
        if image.mode == target:
            return image
        if image.mode.startswith("I"):  # I, I;16, I;16B ...: deep grayscale
            image = _to_8bit_grayscale(image)
        elif image.mode in ("P", "PA"):
            image = image.convert("RGBA")
        return image.convert(target)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(channels={self.channels})"


def build_transforms(preprocessing: PreprocessingConfig, train: bool, hflip: bool = False) -> Callable[[PILImage.Image], torch.Tensor]:
    """The PIL image -> tensor (C, H, W) pipeline for a backbone's ``preprocessing``.

    Train: ``RandomResizedCrop(size, scale=(0.7, 1.0))``, a horizontal flip if ``hflip``. Eval: resize to
    ``size / crop_pct`` then centre-crop ``size``. Both convert the image to the backbone's channel count
    first and end with ``ToTensor`` and ``Normalize(mean, std)``.
    """
    # Not timm.data.create_transform, though its eval transform gives the same tensors for RGB images and square
    # sizes: it does not convert grayscale / RGBA / 16-bit images to the backbone's channels, for a non-square size
    # it keeps the aspect ratio, which transformers' image processors cannot express (hubtune's eval is what both
    # export layouts reproduce), and its train crop draws from Python's `random`, not torch's seed
    # (tests/test_data.py::test_eval_transform_is_timms_where_timms_fits_and_why_hubtune_keeps_its_own).
    from torchvision import transforms as T

    channels = int(preprocessing.input_size[0])
    height, width = preprocessing.image_size
    mean = _per_channel(preprocessing.mean, channels, "mean")
    std = _per_channel(preprocessing.std, channels, "std")
    if any(s <= 0 for s in std):
        raise ConfigError(f"Preprocessing std must be positive, got {std}.")
    interpolation = _interpolation_mode(preprocessing.interpolation)
    steps: list[Callable] = [ConvertChannels(channels)]
    if train:
        steps.append(T.RandomResizedCrop((height, width), scale=(0.7, 1.0), interpolation=interpolation))
        if hflip:
            steps.append(T.RandomHorizontalFlip())
    else:
        crop_pct = float(preprocessing.crop_pct)
        if crop_pct <= 0:
            raise ConfigError(f"Preprocessing crop_pct must be positive, got {crop_pct}.")
        # A single int resizes the shorter edge, keeping the aspect ratio (timm's eval transform does the same).
        resize = int(height / crop_pct) if height == width else (int(height / crop_pct), int(width / crop_pct))
        steps += [T.Resize(resize, interpolation=interpolation), T.CenterCrop((height, width))]
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(steps)


class _ExampleTransform:
    """Batch transform for ``Dataset.with_transform`` (a class, so DataLoader workers can pickle it)."""

    def __init__(self, transform: Callable[[PILImage.Image], torch.Tensor]):
        self.transform = transform

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        return {
            "pixel_values": [self.transform(image) for image in batch["image"]],
            "labels": [int(label) for label in batch["label"]],
        }


def with_transforms(dataset: datasets.Dataset, transform: Callable[[PILImage.Image], torch.Tensor]) -> datasets.Dataset:
    """``dataset`` yielding ``{"pixel_values": Tensor, "labels": int}``, transformed on the fly."""
    missing = [c for c in ("image", "label") if c not in dataset.column_names]
    if missing:
        raise DatasetError(
            f"with_transforms needs columns 'image' and 'label' (missing: {', '.join(missing)}); load the data with "
            "load_image_classification_data first."
        )
    return dataset.with_transform(_ExampleTransform(transform), columns=["image", "label"])


def collate_image_batch(examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack examples into ``pixel_values`` (B, C, H, W) float and ``labels`` (B,) long."""
    if len(examples) == 0:
        raise DatasetError("collate_image_batch got an empty list of examples.")
    pixel_values = torch.stack([torch.as_tensor(e["pixel_values"]) for e in examples]).float()
    labels = torch.tensor([int(e["labels"]) for e in examples], dtype=torch.long)
    return {"pixel_values": pixel_values, "labels": labels}
