"""Image-classification data for hubtune: one loader over many sources, and backbone-aware transforms.

:func:`load_image_classification_data` turns any of these into a train / eval pair of
``datasets.Dataset`` objects with exactly two columns, ``"image"`` (``datasets.Image``) and ``"label"``
(``datasets.ClassLabel``):

* ``"digits"``: scikit-learn's 1,797 real 8x8 grayscale digits, embedded so everything runs offline;
* a folder of images, one sub-folder per class (``datasets``' ``imagefolder`` builder);
* a folder written by ``save_to_disk`` (a ``Dataset`` or a ``DatasetDict``);
* a ``datasets.Dataset`` or ``DatasetDict`` object;
* a Hugging Face Hub dataset name;
* with ``streaming=True``: any of these as a ``datasets.IterableDataset`` read as it goes (a Hub data set, a folder
  or list of WebDataset ``.tar`` shards or Parquet files), never held in memory or on disk as a whole.

Images are checked as they are read: a map-style data set under :data:`CHECK_IMAGES_LIMIT` images is decoded once
before training (a bad file is named now, not mid-run); past it, and always for a stream, an unreadable image is
skipped during training and counted (``unreadable_images`` in each batch that follows one), and ``strict_data``
stops at the first instead.

:func:`build_transforms` maps a PIL image to the tensor a backbone expects (its
:class:`~hubtune.backbones.PreprocessingConfig`), :func:`with_transforms` applies it on the fly and
:func:`collate_image_batch` stacks examples for the ``Trainer`` (which needs
``remove_unused_columns=False`` with such on-the-fly pipelines).
"""

from __future__ import annotations

import dataclasses
import glob
import io
import os
import tarfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import datasets
import numpy as np
import torch
from datasets.distributed import split_dataset_by_node
from PIL import Image as PILImage
from torch.utils.data import default_collate

from hubtune.backbones import PreprocessingConfig
from hubtune.errors import ConfigError, DatasetError
from hubtune.messages import warn

DIGITS = "digits"
# "cls" is the WebDataset convention for a class index (webdataset's README; datasets' webdataset builder decodes it).
LABEL_COLUMN_NAMES = ("label", "labels", "fine_label", "coarse_label", "target", "cls")
EVAL_SPLIT_NAMES = ("validation", "valid", "val", "test")
# Decoding every image before training costs about one epoch of decoding; past this many images (and for any stream)
# a bad image is skipped and counted while training instead (about a minute of JPEG decoding on one core).
CHECK_IMAGES_LIMIT = 20_000
DEFAULT_EVAL_FRACTION = 0.2
# A stream's evaluation split is read into memory (first_examples), up to this many examples unless max_eval_samples
# says otherwise: about 0.5 GB of ImageNet-sized JPEGs.
STREAM_EVAL_LIMIT = 5_000
UNREADABLE_KEY = "unreadable_images"  # the batch key that counts images skipped since the previous batch
POSITION_KEY = "stream_position"  # the batch key of a stream worker's position after the batch (ImageStream)


@dataclass
class ImageClassificationData:
    """A train / eval pair with columns ``"image"`` (``datasets.Image``) and ``"label"`` (``ClassLabel``).

    For a stream (``streaming=True``) ``train`` is a ``datasets.IterableDataset`` (images not decoded:
    ``Image(decode=False)``), ``eval`` the first examples of its evaluation split held in memory
    (:func:`first_examples`), or None when the stream has none, and ``num_train_examples`` the training split's
    length when its metadata states it (else None: train by steps). ``unreadable_images`` counts the images left
    out by the check before training.
    """

    train: datasets.Dataset | datasets.IterableDataset
    eval: datasets.Dataset | datasets.IterableDataset | None
    label_names: list[str]
    name: str
    unreadable_images: int = 0
    num_train_examples: int | None = None

    @property
    def streaming(self) -> bool:
        return isinstance(self.train, datasets.IterableDataset)

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


# Shards and files a stream reads: datasets' packaged builder for each (datasets/packaged_modules/webdataset and
# parquet), so no tar or Parquet reading of hubtune's own.
_STREAM_BUILDERS = {".tar": "webdataset", ".parquet": "parquet"}
_STREAM_NEEDS = ("With streaming, pass a Hub dataset name, a folder of WebDataset .tar shards, Parquet files or images, "
                 "a list or glob of .tar / .parquet files, a folder written by save_to_disk, or a datasets object.")
# Rows per shard when a map-style dataset is streamed (to_iterable_dataset), so that processes and workers can share it.
_MAP_STYLE_STREAM_SHARDS = 64


def check_shards(files: Sequence[str | os.PathLike]) -> None:
    """DatasetError naming the first local ``.tar`` shard that is missing or truncated.

    A tar archive ends with two zero blocks of 512 bytes (POSIX ustar; Python's tarfile and GNU tar write them, then pad
    to a whole record); a copy cut short lacks them. Without this check datasets' reader ends a truncated shard early
    without a word, or fails with tarfile's "unexpected end of data", which names no file. One seek per shard.
    """
    for file in files:
        path = Path(file)
        if "://" in str(file) or path.suffix.lower() != ".tar":
            continue
        if not path.is_file():
            raise DatasetError(f"Shard {str(file)!r} does not exist; restore it or leave it out of the list.")
        size = path.stat().st_size
        with open(path, "rb") as f:
            f.seek(max(size - 1024, 0))
            tail = f.read(1024)
        if size == 0 or size % 512 or tail != bytes(1024):
            raise DatasetError(f"Shard {str(file)!r} is truncated ({size} bytes, no tar end-of-archive marker); write it "
                               "again or leave it out.")


def _is_glob(source: Any) -> bool:
    return any(c in str(source) for c in "*?[")


def _stream_files(source: Any) -> list[str] | None:
    """The files a list (or a comma-separated string), a glob or a single .tar / .parquet path names (None for other
    sources)."""
    if isinstance(source, str) and "," in source:
        source = [part.strip() for part in source.split(",") if part.strip()]
    if isinstance(source, (list, tuple)):
        files = [str(f) for f in source]
    elif isinstance(source, (str, os.PathLike)) and not Path(source).is_dir() and (
            _is_glob(source) or Path(source).suffix.lower() in _STREAM_BUILDERS):
        files = sorted(glob.glob(str(source))) if _is_glob(source) else [str(source)]
        if not files:
            raise DatasetError(f"No file matches {str(source)!r}. {_STREAM_NEEDS}")
    else:
        return None
    kinds = {Path(f).suffix.lower() for f in files}
    if not files or len(kinds) != 1 or not kinds <= set(_STREAM_BUILDERS):
        raise DatasetError(f"Stream files must all be .tar shards or all .parquet files, not {sorted(kinds) or 'none'}. "
                           f"{_STREAM_NEEDS}")
    return files


def load_streams(source: Any) -> tuple[dict[str, datasets.IterableDataset], str, dict[str, int | None]]:
    """The splits of ``source`` as streams, a display name, and each split's length where its metadata states it.

    Missing or truncated local shards end in DatasetError naming the shard (:func:`check_shards`)."""
    if isinstance(source, datasets.IterableDatasetDict):
        splits, name = dict(source), "dataset"
    elif isinstance(source, datasets.IterableDataset):
        splits, name = {"train": source}, source.info.dataset_name or "dataset"
    elif isinstance(source, (datasets.Dataset, datasets.DatasetDict)) or (
            isinstance(source, (str, os.PathLike)) and (str(source) == DIGITS or is_saved_dataset(source))):
        maps, name = _load_source(source)
        lengths = {split: len(data) for split, data in maps.items()}
        return {split: data.to_iterable_dataset(num_shards=max(1, min(_MAP_STYLE_STREAM_SHARDS, len(data))))
                for split, data in maps.items()}, name, lengths
    elif (files := _stream_files(source)) is not None:
        check_shards(files)
        builder = _STREAM_BUILDERS[Path(files[0]).suffix.lower()]
        splits, name = _open_stream(builder, {"data_files": {"train": files}}), str(source if isinstance(source, str) else files[0])
    elif isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        check_shards(sorted(str(p) for p in Path(source).rglob("*.tar")))
        splits, name = _open_stream(str(source), {}), str(source)
    elif isinstance(source, str) and source:
        splits, name = _open_stream(source, {}), source
    else:
        raise DatasetError(f"Unsupported dataset source {source!r}. {_STREAM_NEEDS}")
    lengths = {split: _stated_length(stream, split) for split, stream in splits.items()}
    return splits, name, lengths


def _open_stream(path: str, kwargs: dict) -> dict[str, datasets.IterableDataset]:
    try:
        loaded = datasets.load_dataset(path, streaming=True, **kwargs)
    except FileNotFoundError as e:
        raise DatasetError(f"Cannot stream {path!r}: {str(e).splitlines()[0]}. {_STREAM_NEEDS}") from e
    except Exception as e:  # noqa: BLE001 - offline, unknown name, unreadable files...: all end the same way
        raise DatasetError(f"Cannot stream {path!r} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). "
                           f"{_STREAM_NEEDS}") from e
    return dict(loaded) if isinstance(loaded, datasets.IterableDatasetDict) else {"train": loaded}


def _stated_length(stream: datasets.IterableDataset, split: str) -> int | None:
    """The number of examples the stream's metadata states for ``split`` (a Hub card's dataset_info), else None."""
    info = stream.info.splits.get(split) if stream.info and stream.info.splits else None
    return int(info.num_examples) if info is not None and info.num_examples else None


def _choose_splits(splits: dict[str, Any], eval_split: str | None) -> tuple[str, Any, str | None, Any]:
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


def find_image_column(features: datasets.Features | None, image_column: str | None = None, *,
                      what: str = "The dataset", error: type[Exception] = DatasetError) -> str:
    """The image column: ``image_column`` when given (a ``datasets.Image`` or a column of image paths), else the one
    ``datasets.Image`` feature (the one named ``"image"`` among several); ``error`` (DatasetError by default) naming
    the columns otherwise. ``what`` starts the message ("The dataset", "OOD set 'x'" ...)."""
    features = features or datasets.Features()
    if image_column is not None:
        if image_column not in features:
            raise error(f"image_column {image_column!r} does not exist. Available columns: {_columns_listing(features)}.")
        feature = features[image_column]
        is_path = isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")
        if not isinstance(feature, datasets.Image) and not is_path:
            raise error(f"image_column {image_column!r} holds {feature!r}, not images or image paths. "
                        f"Available columns: {_columns_listing(features)}.")
        return image_column
    image_columns = [name for name, feat in features.items() if isinstance(feat, datasets.Image)]
    if len(image_columns) == 1 or "image" in image_columns:
        return image_columns[0] if len(image_columns) == 1 else "image"
    if not image_columns:
        raise error(f"{what} has no image column (a datasets.Image feature). Available columns: "
                    f"{_columns_listing(features)}. Name the column with image_column (--image_column), or cast it "
                    "with dataset.cast_column(name, datasets.Image()).")
    raise error(f"{what} has several image columns ({', '.join(image_columns)}); choose one with image_column "
                "(--image_column).")


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
    if isinstance(dataset, datasets.IterableDataset):
        # Undecoded before anything else: a stream's rename maps its examples, which decodes (and re-encodes) images
        # upstream of any later cast; ImageExampleTransform decodes them, skipping and counting bad ones.
        dataset = dataset.cast_column(image_column, datasets.Image(decode=False))
    # Selecting first avoids clashes when an unrelated column is already called "image" or "label".
    dataset = dataset.select_columns([image_column, label_column])
    renames = {old: new for old, new in ((image_column, "image"), (label_column, "label")) if old != new}
    dataset = dataset.rename_columns(renames) if renames else dataset
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


def open_image(item: Any) -> PILImage.Image:
    """A fully decoded PIL image from a stored one: ``{"bytes", "path"}`` (``datasets.Image(decode=False)``), a path,
    or a PIL image. PIL's errors (of many types) propagate: the caller decides between skipping and stopping."""
    if isinstance(item, PILImage.Image):
        item.load()
        return item
    if isinstance(item, dict):
        data = item.get("bytes")
        image = PILImage.open(io.BytesIO(data) if data is not None else item["path"])
    else:
        image = PILImage.open(item)
    image.load()
    return image


def describe_image(item: Any, index: int | None = None) -> str:
    """How a message names a stored image: its file or shard member, else its row."""
    path = item.get("path") if isinstance(item, dict) else item if isinstance(item, (str, os.PathLike)) else None
    return repr(str(path)) if path else (f"row {index}" if index is not None else "an image without a file name")


def unreadable_image_error(where: str, error: BaseException) -> DatasetError:
    """The one-line error of ``strict_data`` for an image that cannot be decoded."""
    reason = f"{type(error).__name__}: {error}".splitlines()[0]
    return DatasetError(f"Cannot read image {where} ({reason}); fix or remove it, or drop --strict_data to leave "
                        "unreadable images out.")


def _drop_unreadable_images(dataset: datasets.Dataset, split: str, strict: bool) -> tuple[datasets.Dataset, int]:
    """``dataset`` without the rows whose image cannot be decoded, and how many those were (or DatasetError naming
    the first, if strict)."""
    raw = dataset.select_columns(["image"]).cast_column("image", datasets.Image(decode=False))
    bad: list[int] = []
    for index, item in enumerate(raw["image"]):
        try:
            open_image(item)
        except Exception as e:  # noqa: BLE001 - PIL raises many types for a damaged file
            if strict:
                raise unreadable_image_error(describe_image(item, index), e) from e
            if not bad:
                first = f"{describe_image(item, index)}: {type(e).__name__}"
            bad.append(index)
    if not bad:
        return dataset, 0
    warn(f"Leaving out {len(bad)} unreadable image(s) of split {split!r} (first: {first}); pass --strict_data to stop "
         "at them instead.")
    if len(bad) == len(dataset):
        raise DatasetError(f"No image of split {split!r} could be read (first: {first}).")
    dropped = set(bad)
    return dataset.select([i for i in range(len(dataset)) if i not in dropped]), len(bad)


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


@dataclass(frozen=True)
class DataOptions:
    """How :func:`load_image_classification_data` reads a source: every option with its default, as one value that
    the loader hands on (each field is documented there). Pass one, its fields as keywords, or both (the keywords
    replace the object's fields)."""

    image_column: str | None = None
    label_column: str | None = None
    eval_split: str | None = None
    eval_fraction: float | None = None
    seed: int = 0
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    check_images: bool | None = None
    strict_data: bool = False
    streaming: bool = False


def load_image_classification_data(source: Any, options: DataOptions | None = None,
                                   **values: Any) -> ImageClassificationData:
    """Load an image-classification dataset as a train / eval pair with ``"image"`` and ``"label"`` columns.

    ``load_image_classification_data(source, eval_fraction=0.3, seed=1)`` or, the same,
    ``load_image_classification_data(source, DataOptions(eval_fraction=0.3, seed=1))``.

    Args:
        source: ``"digits"`` (embedded scikit-learn digits), an image folder (one sub-folder per class), a folder
            written by ``save_to_disk``, a ``datasets`` object, or a Hub dataset name; with ``streaming`` also a
            folder, list or glob of WebDataset ``.tar`` shards (or ``.parquet`` files).
        options, **values: a :class:`DataOptions`, its fields as keywords, or both (the keywords win); the fields:
        image_column: by default the one ``datasets.Image`` feature; a column of image paths when named here.
        label_column: by default the ``ClassLabel`` feature, else one named label / labels / fine_label /
            coarse_label / target / cls. Integer or string labels become ids 0..C-1 in sorted order (map-style only).
        eval_split: by default the first of validation / valid / val / test present, else ``eval_fraction``
            (default 0.2) of the training split held out, stratified by label with ``seed``. A stream has no length
            to take a fraction of: without an evaluation split its ``eval`` is None.
        max_train_samples, max_eval_samples: keep at most this many examples (a seeded random subset; for a
            stream, its first ones).
        check_images: decode every image once before training, leaving unreadable ones out (counted in
            ``unreadable_images``); by default only for map-style data of at most :data:`CHECK_IMAGES_LIMIT` images.
            Otherwise a bad image is skipped and counted while training (:func:`with_transforms`).
        strict_data: stop at the first unreadable image (naming the file) instead of leaving it out.
        streaming: read the data as ``datasets.IterableDataset`` streams (see :class:`ImageStream`).

    Raises:
        DatasetError: the source cannot be read, has no image or label column, a named column or split does
            not exist, a split is empty, labels fall outside [0, num_labels), or a shard is missing or truncated.
        TypeError: a keyword that is not a field of :class:`DataOptions` (named, with the fields).
    """
    known = [f.name for f in dataclasses.fields(DataOptions)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise TypeError(f"load_image_classification_data() got an unexpected keyword argument {unknown[0]!r}; "
                        f"its options are {', '.join(known)}")
    request = dataclasses.replace(options or DataOptions(), **values)
    request = dataclasses.replace(
        request, max_train_samples=_positive_or_none(request.max_train_samples, "max_train_samples"),
        max_eval_samples=_positive_or_none(request.max_eval_samples, "max_eval_samples"))
    return _load_stream(source, request) if request.streaming else _load_map_style(source, request)


def _columns_and_splits(splits: dict[str, Any], name: str, source: Any, request: DataOptions) -> tuple[Any, Any, str, str]:
    """The training and evaluation splits with standard columns, the label column's original name and the
    training split's name."""
    train_name, train, eval_name, evaluation = _choose_splits(splits, request.eval_split)
    if isinstance(train, datasets.Dataset) and len(train) == 0:
        raise DatasetError(f"The training split {train_name!r} of {name!r} is empty; it needs labelled images.")
    if isinstance(evaluation, datasets.Dataset) and len(evaluation) == 0:
        raise DatasetError(
            f"The evaluation split {eval_name!r} of {name!r} is empty; pass another eval_split or remove that split "
            "so that eval_fraction of the training data is held out."
        )
    image_col = find_image_column(train.features, request.image_column)
    try:
        label_col = _find_label_column(train.features, request.label_column, image_col)
    except DatasetError:
        if request.label_column is None and isinstance(source, (str, os.PathLike)) and _is_single_class_folder(Path(source)):
            raise DatasetError(
                f"Image folder {str(source)!r} has only one class: its images sit in a single folder. A classifier "
                "needs two or more classes, one sub-folder per class (e.g. cats/ and dogs/)."
            ) from None
        raise
    train = _standardise_columns(train, image_col, label_col, train_name)
    if evaluation is not None:
        evaluation = _standardise_columns(evaluation, image_col, label_col, eval_name)
    return train, (evaluation, eval_name), label_col, train_name


def _load_map_style(source: Any, request: DataOptions) -> ImageClassificationData:
    splits, name = _load_source(source)
    for split_name, split in splits.items():
        if not isinstance(split, datasets.Dataset):
            raise DatasetError(f"Split {split_name!r} is a {type(split).__name__}; pass streaming=True (--streaming) "
                               "to read streams, or load the data without streaming=True.")
    train, (evaluation, eval_name), label_col, train_name = _columns_and_splits(splits, name, source, request)
    unreadable = 0
    total = len(train) + (len(evaluation) if evaluation is not None else 0)
    if request.check_images or (request.check_images is None and total <= CHECK_IMAGES_LIMIT):
        train, unreadable = _drop_unreadable_images(train, train_name, request.strict_data)
        if evaluation is not None:
            evaluation, left_out = _drop_unreadable_images(evaluation, eval_name, request.strict_data)
            unreadable += left_out
    if isinstance(train.features["label"], datasets.ClassLabel):
        label_names = _class_label_names(train, evaluation, label_col)
    else:
        train, evaluation, label_names = _encode_raw_labels(train, evaluation, label_col)
    _check_two_classes(label_names, name)
    _check_label_range(train, len(label_names), train_name, label_col)
    if evaluation is not None:
        _check_label_range(evaluation, len(label_names), eval_name, label_col)
    else:
        fraction = DEFAULT_EVAL_FRACTION if request.eval_fraction is None else request.eval_fraction
        train, evaluation = _split_by_fraction(train, fraction, request.seed)
    train = _subsample(train, request.max_train_samples, request.seed)
    return ImageClassificationData(train=train, eval=_subsample(evaluation, request.max_eval_samples, request.seed),
                                   label_names=[str(n) for n in label_names], name=name,
                                   unreadable_images=unreadable, num_train_examples=len(train))


def _check_two_classes(label_names: Sequence[Any], name: str) -> None:
    if len(label_names) < 2:
        raise DatasetError(
            f"{name!r} has only one class ({', '.join(map(str, label_names)) or 'none'}); a classifier needs two or more. "
            "An image folder needs one sub-folder per class."
        )


def _load_stream(source: Any, request: DataOptions) -> ImageClassificationData:
    if request.eval_fraction is not None:
        raise DatasetError("eval_fraction needs the data set's length, which a stream does not have: pass an "
                           "evaluation split (eval_split / --eval_split) or leave eval_fraction unset.")
    if request.check_images:
        raise DatasetError("check_images decodes a map-style data set before training; a stream's images are checked "
                           "as they are read (bad ones skipped and counted, or --strict_data): leave it unset.")
    splits, name, lengths = load_streams(source)
    train, (evaluation, eval_name), label_col, train_name = _columns_and_splits(splits, name, source, request)
    if not isinstance(train.features["label"], datasets.ClassLabel):
        raise DatasetError(
            f"The label column {label_col!r} of stream {name!r} holds {train.features['label']!r}, not class names, and "
            "a stream cannot be read ahead to collect them: state them as a class_label feature in the data set "
            "card's dataset_info (README.md beside the shards), or cast_column(label, datasets.ClassLabel(names=...)).")
    label_names = _class_label_names(train, evaluation, label_col)
    _check_two_classes(label_names, name)
    known = lengths.get(train_name)
    if request.max_train_samples is not None:
        train = train.take(request.max_train_samples)
        known = None if known is None else min(known, request.max_train_samples)
    if evaluation is not None:
        evaluation = first_examples(evaluation, request.max_eval_samples or STREAM_EVAL_LIMIT, eval_name)
        _check_label_range(evaluation, len(label_names), eval_name, label_col)
    return ImageClassificationData(train=train, eval=evaluation, label_names=[str(n) for n in label_names],
                                   name=name, num_train_examples=known)


def first_examples(stream: datasets.IterableDataset, count: int, split: str = "train") -> datasets.Dataset:
    """The first ``count`` examples of a stream as a map-style ``Dataset``, held in memory (images as stored:
    compressed bytes, decoded when read). A stream's evaluation split becomes one, so that every process evaluates
    the same examples in the same batches (which processes reading parts of unknown length could not do), and the
    demo examples and OOD checks can index it."""
    rows = [example for _, example in zip(range(count + 1), _read(stream))]
    if len(rows) > count:
        warn(f"Evaluating on the first {count} examples of the {split!r} split (--max_eval_samples sets how many).")
    if not rows:
        raise DatasetError(f"The {split!r} split of the stream is empty; it needs labelled images.")
    dataset = datasets.Dataset.from_list(rows[:count], features=stream.features)
    return dataset.cast_column("image", datasets.Image())


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


def _pixel_tensor(image: PILImage.Image) -> torch.Tensor:
    """An 8-bit L or RGB image as uint8 (C, H, W), a view of one copy of its pixels (torchvision's ``pil_to_tensor``
    without its final contiguous copy: the float conversion that follows makes the tensor contiguous anyway)."""
    pixels = torch.from_numpy(np.array(image, np.uint8, copy=True)).view(image.size[1], image.size[0], -1)
    return pixels.permute(2, 0, 1)


def normalize_pixels(pixels: torch.Tensor, mean: Sequence[float] | torch.Tensor,
                     std: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """uint8 pixels (..., C, H, W) -> float32 ``(pixels / 255 - mean) / std``: torchvision's ``ToTensor`` then
    ``Normalize``, the same operations in the same order (torchvision/transforms/functional.py ``to_tensor``,
    _functional_tensor.py ``normalize``), so bit for bit the same, but with one float copy instead of four; on one
    image or on a whole batch (after the DataLoader, on the device, as timm's PrefetchLoader does)."""
    mean = torch.as_tensor(mean, dtype=torch.float32, device=pixels.device).view(-1, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32, device=pixels.device).view(-1, 1, 1)
    tensor = pixels.to(dtype=torch.float32, memory_format=torch.contiguous_format)
    return tensor.div_(255).sub_(mean).div_(std)


def normalize_batch(pixel_values: torch.Tensor, preprocessing: PreprocessingConfig) -> torch.Tensor:
    """A batch from ``build_transforms(..., uint8=True)`` normalised for the backbone (float batches pass as they are)."""
    if pixel_values.dtype != torch.uint8:
        return pixel_values
    channels = int(preprocessing.input_size[0])
    return normalize_pixels(pixel_values, _per_channel(preprocessing.mean, channels, "mean"),
                            _per_channel(preprocessing.std, channels, "std"))


class ToPixelTensor:
    """A PIL image (already in the backbone's mode, L or RGB) -> uint8 (C, H, W), for :func:`normalize_batch`."""

    def __call__(self, image: PILImage.Image) -> torch.Tensor:
        return _pixel_tensor(image)  # a (C, H, W) view of (H, W, C) pixels: collating copies it once, in order

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ToNormalizedTensor:
    """``ToTensor`` then ``Normalize(mean, std)``, bit for bit, with one copy (:func:`normalize_pixels`).

    torchvision's pair copies the pixels five times (array, contiguous permute, float, divide, Normalize's clone);
    at 224 px this step then costs about twice as much (``benchmarks/bench_dataloading.py``).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, image: PILImage.Image) -> torch.Tensor:
        if image.mode not in ("L", "RGB"):
            from torchvision.transforms import functional as F

            return F.normalize(F.to_tensor(image), self.mean, self.std)
        return normalize_pixels(_pixel_tensor(image), self.mean, self.std)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mean={list(self.mean)}, std={list(self.std)})"


def build_transforms(preprocessing: PreprocessingConfig, train: bool, hflip: bool = False,
                     uint8: bool = False) -> Callable[[PILImage.Image], torch.Tensor]:
    """The PIL image -> tensor (C, H, W) pipeline for a backbone's ``preprocessing``.

    Train: ``RandomResizedCrop(size, scale=(0.7, 1.0))``, a horizontal flip if ``hflip``. Eval: resize to
    ``size / crop_pct`` then centre-crop ``size``. Both convert the image to the backbone's channel count
    first and end with ``ToTensor`` and ``Normalize(mean, std)`` (as one step, :class:`ToNormalizedTensor`); with
    ``uint8`` they end with the uint8 pixels instead, which :func:`normalize_batch` turns into the same floats
    batch by batch after the DataLoader (a quarter of the bytes through worker queues and to the GPU, and no float
    maths in the workers: timm's ``create_loader`` with its prefetcher does the same).
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
    steps.append(ToPixelTensor() if uint8 else ToNormalizedTensor(mean, std))
    return T.Compose(steps)


class ImageExampleTransform:
    """Decode a stored image, transform it and attach its label (a class, so DataLoader workers can pickle it).

    An image that cannot be decoded gives None: :func:`collate_image_batch` (map-style data) and
    :class:`ImageStream` (streams) skip it and count it; with ``strict`` it raises DatasetError naming the image.
    """

    def __init__(self, transform: Callable[[PILImage.Image], Any], strict: bool = False):
        self.transform, self.strict = transform, strict
        self._warned = False

    def example(self, image: Any, label: Any = None) -> dict[str, Any] | None:
        try:
            decoded = open_image(image)
        except Exception as e:  # noqa: BLE001 - PIL raises many types for a damaged file
            if self.strict:
                raise unreadable_image_error(describe_image(image), e) from e
            if not self._warned:  # once per process (or worker): the count is reported at the end
                warn(f"Skipping unreadable image {describe_image(image)} ({type(e).__name__}); further ones are skipped "
                     "and counted without a message (--strict_data stops at them).")
                self._warned = True
            return None
        out = {"pixel_values": self.transform(decoded)}
        if label is not None:
            out["labels"] = int(label)
        return out

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        """The batch form, for ``Dataset.with_transform``."""
        outputs = [self.example(image) for image in batch["image"]]
        return {"pixel_values": [None if out is None else out["pixel_values"] for out in outputs],
                "labels": [int(label) for label in batch["label"]]}


def _undecoded(dataset: Any) -> Any:
    """``dataset`` with its ``"image"`` column left undecoded, for :class:`ImageExampleTransform` to decode."""
    feature = (dataset.features or {}).get("image")
    if isinstance(feature, datasets.Image) and feature.decode:
        return dataset.cast_column("image", datasets.Image(decode=False))
    return dataset


def with_transforms(dataset: datasets.Dataset, transform: Callable[[PILImage.Image], torch.Tensor],
                    strict: bool = False) -> datasets.Dataset:
    """``dataset`` yielding ``{"pixel_values": Tensor, "labels": int}``, transformed on the fly.

    An unreadable image yields ``pixel_values=None``, which :func:`collate_image_batch` leaves out and counts; with
    ``strict`` it raises DatasetError naming the image.
    """
    missing = [c for c in ("image", "label") if c not in dataset.column_names]
    if missing:
        raise DatasetError(
            f"with_transforms needs columns 'image' and 'label' (missing: {', '.join(missing)}); load the data with "
            "load_image_classification_data first."
        )
    return _undecoded(dataset).with_transform(ImageExampleTransform(transform, strict), columns=["image", "label"])


def collate_image_batch(examples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack examples into ``pixel_values`` (B, C, H, W; float, or uint8 from ``build_transforms(..., uint8=True)``)
    and ``labels`` (B,) long (when the examples have labels).

    Examples whose image could not be read (``pixel_values`` None) are left out; the batch then says how many
    images were skipped since the previous batch under ``"unreadable_images"`` (an int, present only when
    positive), and a stream's batch where its worker stands (``"stream_position"``): a training loop pops both
    (:class:`StreamProgress`).
    """
    if len(examples) == 0:
        raise DatasetError("collate_image_batch got an empty list of examples.")
    kept = [e for e in examples if e["pixel_values"] is not None]
    unreadable = len(examples) - len(kept) + sum(int(e.get(UNREADABLE_KEY, 0)) for e in kept)
    if not kept:
        raise DatasetError(f"None of the {len(examples)} images of a batch could be read; check the data set "
                           "(--strict_data names the first bad file).")
    # default_collate stacks straight into shared memory inside a DataLoader worker (one copy fewer than torch.stack)
    pixels = default_collate([torch.as_tensor(e["pixel_values"]) for e in kept])
    # uint8 stays uint8 (normalize_batch's input); other integer pixels become floats as they always did
    batch: dict[str, Any] = {"pixel_values": pixels if pixels.is_floating_point() or pixels.dtype == torch.uint8
                             else pixels.float()}
    if "labels" in kept[0]:
        batch["labels"] = torch.tensor([int(e["labels"]) for e in kept], dtype=torch.long)
    if unreadable:
        batch[UNREADABLE_KEY] = unreadable
    if POSITION_KEY in examples[-1]:
        batch[POSITION_KEY] = examples[-1][POSITION_KEY]
    return batch


# --------------------------------------------------------------------------------------------- streams


class ImageStream(torch.utils.data.IterableDataset):
    """This process's part of a stream, decoded and transformed example by example, pass after pass.

    The part is ``datasets.distributed.split_dataset_by_node(stream, rank, world_size)``: whole shards when their
    number divides by ``world_size``, else every ``world_size``-th example. So each process reads only its own part,
    and together the parts hold every example exactly once per pass. With ``passes=None`` the passes go on until the
    training loop stops at ``max_steps``, so no process runs out before another and every process takes the same
    number of steps (what webdataset's README advises for multi-node training: an endless stream, training counted
    in steps). Each pass reshuffles (``set_epoch``) with ``seed``: shard order and a ``buffer_size`` buffer.
    DataLoader workers share the part by shards (datasets' ``IterableDataset._iter_pytorch``).

    Each example carries two pieces of bookkeeping that :func:`collate_image_batch` passes on and
    :class:`StreamProgress` collects: how many unreadable images were skipped just before it, and where its worker
    stands (the pass, and how many examples of it the worker has read). Because the position travels with the
    batch, the training loop knows exactly what it consumed, also with workers (as torchdata's StatefulDataLoader
    knows from per-worker snapshots), and :meth:`load_state_dict` makes every worker continue from there: it reads
    its part of that pass again, without decoding, up to its position (the order is a function of seed, pass and
    worker, shuffle buffer included), so every worker goes on with exactly the batches it would have made (the
    DataLoader asks worker 0 first again, so workers' batches may take turns in another order).
    Not ``datasets.IterableDataset.state_dict``: restored inside a DataLoader worker it is first loaded into the
    whole stream's iterable, whose shard list is longer than the worker's, and fails (IndexError) once shards are
    shuffled (datasets 5.2, iterable_dataset.py ``_iter_pytorch`` then ``_prepare_ex_iterable_for_iteration``);
    and it drops what waits in the shuffle buffer.
    """

    def __init__(self, stream: datasets.IterableDataset, transform: ImageExampleTransform, *, rank: int = 0,
                 world_size: int = 1, seed: int = 0, shuffle: bool = True, passes: int | None = None,
                 buffer_size: int = 1000):
        super().__init__()
        self.stream, self.transform, self.rank, self.world_size = _undecoded(stream), transform, rank, world_size
        self.seed, self.shuffle, self.passes, self.buffer_size = seed, shuffle, passes, buffer_size
        self._start: dict[str, Any] = {}
        self._progress = StreamProgress()  # what this process consumed without workers (see state_dict)

    def part(self, epoch: int) -> datasets.IterableDataset:
        """This process's part of the stream for pass ``epoch`` (shuffled with seed + epoch when ``shuffle``)."""
        stream = self.stream.shuffle(seed=self.seed, buffer_size=self.buffer_size) if self.shuffle else self.stream
        part = split_dataset_by_node(stream, rank=self.rank, world_size=self.world_size) if self.world_size > 1 else stream
        part.set_epoch(epoch)
        return part

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        start = StreamProgress.position(self._start, worker, workers)
        epoch, done, skipped = int(start.get("pass", 0)), int(start.get("read", 0)), 0
        while self.passes is None or epoch < self.passes:
            read = kept = 0
            for example in _read(self.part(epoch)):
                read += 1
                if read <= done:
                    continue  # consumed before the resume
                out = self.transform.example(example["image"], example.get("label"))
                if out is None:
                    skipped += 1
                    continue
                if skipped:
                    out[UNREADABLE_KEY], skipped = skipped, 0
                out[POSITION_KEY] = {"worker": worker, "num_workers": workers, "pass": epoch, "read": read}
                kept += 1
                if info is None:
                    self._progress.take(out, pop=False)
                yield out
            if read == 0:
                return  # an empty part (a DataLoader worker without shards): nothing to repeat
            if kept == 0 and read > done:
                raise DatasetError(f"No image of a whole pass over the stream could be read ({skipped} unreadable).")
            epoch, done = epoch + 1, 0

    def state_dict(self) -> dict[str, Any]:
        """Where iterating in this process (no workers) got to; with workers, ask the :class:`StreamProgress` that
        took the batches."""
        return self._progress.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`StreamProgress.state_dict` (the next iteration; the same number of workers)."""
        self._start = dict(state or {})


class StreamProgress:
    """What the batches of a stream report besides images: the unreadable images skipped, and each DataLoader
    worker's position. A training loop passes every batch through :meth:`take` and saves :meth:`state_dict` with
    its checkpoints; :meth:`ImageStream.load_state_dict` resumes from it."""

    def __init__(self, state: dict[str, Any] | None = None):
        state = state or {}
        self.unreadable = int(state.get("unreadable_images", 0))
        self.num_workers = state.get("num_workers")
        self.positions: dict[str, Any] = dict(state.get("positions", {}))

    def take(self, batch: dict[str, Any], pop: bool = True) -> dict[str, Any]:
        """``batch`` without its bookkeeping (with ``pop``), after counting it."""
        get = batch.pop if pop else batch.get
        self.unreadable += int(get(UNREADABLE_KEY, 0) or 0)
        position = get(POSITION_KEY, None)
        if position is not None:
            self.num_workers = position["num_workers"]
            self.positions[str(position["worker"])] = {"pass": position["pass"], "read": position["read"]}
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"unreadable_images": self.unreadable, "num_workers": self.num_workers, "positions": dict(self.positions)}

    @staticmethod
    def position(state: dict[str, Any], worker: int, workers: int) -> dict[str, Any]:
        """Worker ``worker``'s start in a saved state (empty: from the beginning). A state saved with another number
        of workers cannot be divided among these: they start the stream again, and say so."""
        if not state.get("positions"):
            return {}
        if state.get("num_workers") != workers:
            if worker == 0:
                warn(f"The stream was saved with {state.get('num_workers')} DataLoader worker(s) and resumes with "
                     f"{workers}: it starts again from its beginning (resume with --dataloader_num_workers "
                     f"{state.get('num_workers')} to continue where it stopped).")
            return {}
        return dict(state["positions"].get(str(worker), {}))


def _read(stream: datasets.IterableDataset) -> Iterator[dict[str, Any]]:
    """The stream's examples; a shard that fails mid-read (cut short, deleted, unreadable) ends in DatasetError."""
    iterator, last = iter(stream), None
    while True:
        try:
            example = next(iterator)
        except StopIteration:
            return
        except (tarfile.TarError, OSError, EOFError) as e:
            where = f"after {describe_image(last['image'])}" if last else "at its start"
            raise DatasetError(f"Reading the stream failed {where} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                               "a shard is probably truncated, missing or unreadable: check the files.") from e
        last = example
        yield example
