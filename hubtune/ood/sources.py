"""OOD image sources: named ones that make their images, any dataset hubtune reads, and a check that every image
decodes.

Besides anything :func:`hubtune.data.load_image_classification_data` reads, the named sources of
:data:`~hubtune.ood.registry.OOD_SOURCES` need no data. Two are registered here: ``"noise"`` (uniform noise
images) and ``"skimage-photos"`` (random crops of scikit-image's bundled photos); they, and any registered by a
plug-in, are made with the in-distribution images' size and mode so that only content differs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from PIL import Image

from hubtune.data import describe_image, find_image_column, load_image_classification_data, no_images_in, open_image
from hubtune.errors import DatasetError, OODError
from hubtune.ood.registry import OOD_SOURCES, OODSource, register_ood_source

__all__ = [
    "DEFAULT_BUILTIN_SIZE",
    "SKIMAGE_PHOTOS",
    "check_ood_images",
    "image_column",
    "load_ood_data",
]

# scikit-image's bundled photos (no download): natural images, textures, text and microscopy.
SKIMAGE_PHOTOS = (
    "astronaut", "camera", "coffee", "chelsea", "rocket", "coins", "moon", "page", "text", "clock",
    "brick", "grass", "gravel", "immunohistochemistry", "hubble_deep_field", "colorwheel",
)
DEFAULT_BUILTIN_SIZE = 500
_CHECK_BATCH = 256


# --------------------------------------------------------------------------------------------- named sources


def _noise_images(num_images: int, size: tuple[int, int], mode: str, generator: torch.Generator) -> list:
    width, height = size
    channels = len(Image.new(mode, (1, 1)).getbands())
    pixels = torch.randint(0, 256, (num_images, height, width, channels), generator=generator, dtype=torch.uint8)
    images = []
    for p in pixels.numpy():
        image = Image.fromarray(p[..., 0], mode="L") if channels == 1 else Image.fromarray(p, mode="RGB")
        images.append(image.convert(mode))
    return images


def _skimage_photos() -> list:
    try:
        import skimage.data  # heavy optional third-party import
    except ImportError as e:
        raise OODError("The 'skimage-photos' OOD source needs scikit-image: pip install scikit-image.") from e
    photos = []
    for name in SKIMAGE_PHOTOS:
        try:
            array = np.asarray(getattr(skimage.data, name)())
        except Exception:  # noqa: BLE001 - a photo that this scikit-image version would download: skip it
            continue
        if array.dtype != np.uint8:
            continue
        photos.append(Image.fromarray(array).convert("RGB"))
    if not photos:
        raise OODError("None of scikit-image's bundled photos could be read; use another OOD source.")
    return photos


def _photo_crops(num_images: int, size: tuple[int, int], mode: str, generator: torch.Generator) -> list:
    photos = _skimage_photos()
    images = []
    for _ in range(num_images):
        photo = photos[int(torch.randint(len(photos), (1,), generator=generator))]
        short = min(photo.size)
        # A square crop of a quarter to all of the shorter side: from textures to whole scenes.
        side = int(torch.randint(max(short // 4, 1), short + 1, (1,), generator=generator))
        left = int(torch.randint(photo.size[0] - side + 1, (1,), generator=generator))
        top = int(torch.randint(photo.size[1] - side + 1, (1,), generator=generator))
        crop = photo.crop((left, top, left + side, top + side))
        images.append(crop.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0).convert(mode))
    return images


register_ood_source(OODSource("noise", "uniform noise images with the in-distribution images' size and mode",
                               _noise_images))
register_ood_source(OODSource(
    "skimage-photos", "random crops of scikit-image's bundled photos, resized to the in-distribution size and mode",
    _photo_crops))


def _image_dataset(images: list) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"image": images}, features=datasets.Features({"image": datasets.Image()}))


def _made(source: OODSource, image_size, mode: str | None, num_images: int | None, seed: int) -> datasets.Dataset:
    size = (32, 32) if image_size is None else image_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    generator = torch.Generator().manual_seed(seed)
    count = DEFAULT_BUILTIN_SIZE if num_images is None else num_images
    return _image_dataset(source.images(count, size, mode or "RGB", generator))


# --------------------------------------------------------------------------------------------- dataset sources


def _looks_like_path(source: str | os.PathLike) -> bool:
    """Whether a source names a local path rather than a Hub dataset (``"org/name"`` or a bare name)."""
    if isinstance(source, os.PathLike):
        return True
    text = str(source)
    return text.startswith(("/", "./", "../", "~", ".\\")) or "\\" in text or text.count("/") > 1


def _load_dataset_source(source: str | os.PathLike | datasets.DatasetDict, seed: int,
                         strict_data: bool = False) -> datasets.Dataset:
    if isinstance(source, (str, os.PathLike)) and _looks_like_path(source) and not Path(source).expanduser().exists():
        raise OODError(
            f"OOD source {str(source)!r} does not exist. Give an existing image folder, a folder written by "
            f"save_to_disk, a Hub dataset name, or a named source ({', '.join(OOD_SOURCES)})."
        )
    if isinstance(source, (str, os.PathLike)):
        source = str(Path(source).expanduser()) if _looks_like_path(source) else str(source)
    try:
        return load_image_classification_data(source, seed=seed, strict_data=strict_data).eval
    except DatasetError:
        if not (isinstance(source, str) and Path(source).is_dir()):
            raise
    # A folder of images without class sub-folders: OOD images need no labels.
    empty = no_images_in(source)
    if empty:
        raise OODError(f"OOD folder {empty}; give a folder of images (sub-folders are searched too).")
    try:
        loaded = datasets.load_dataset("imagefolder", data_dir=str(source))
    except Exception as e:  # noqa: BLE001 - any builder failure means "not a usable image folder"
        raise OODError(f"Could not read the OOD folder {str(source)!r} as images ({type(e).__name__}: {e}).") from e
    return datasets.concatenate_datasets(list(loaded.values()))


def load_ood_data(
    source: Any,
    *,
    image_size: tuple[int, int] | int | None = None,
    mode: str | None = None,
    num_images: int | None = None,
    seed: int = 0,
    strict_data: bool = False,
) -> datasets.Dataset:
    """An OOD dataset (a ``datasets.Dataset`` with an ``"image"`` column) from a source.

    Args:
        source: a name of :data:`~hubtune.ood.registry.OOD_SOURCES` (``"noise"``, ``"skimage-photos"``, a plug-in's:
            made here), a ``datasets.Dataset``, or anything
            :func:`hubtune.data.load_image_classification_data` reads (then its evaluation split: the test
            / validation split when it has one); a folder of unlabelled images also works.
        image_size: (width, height) or one int, for the named sources (default 32 x 32).
        mode: PIL mode of the named sources' images (default ``"RGB"``).
        num_images: images in a named source (default 500), or the most to keep from a dataset (a seeded
            random subset).
        seed: random seed of the named sources and of subsampling.
        strict_data: a dataset source stops at its first unreadable image instead of leaving it out.

    Raises:
        OODError: an unsupported source, a local path that does not exist, a bad ``num_images``.
        DatasetError: a dataset source that cannot be read.
    """
    if num_images is not None and (not isinstance(num_images, int) or isinstance(num_images, bool) or num_images < 0):
        raise OODError(f"num_images must be a non-negative integer or None, not {num_images!r}.")
    if isinstance(source, str) and source in OOD_SOURCES:
        return _made(OOD_SOURCES.get(source), image_size, mode, num_images, seed)
    if isinstance(source, datasets.Dataset):
        dataset = source
    elif isinstance(source, (str, os.PathLike, datasets.DatasetDict)):
        dataset = _load_dataset_source(source, seed, strict_data)
    else:
        raise OODError(
            f"Unsupported OOD source {source!r}: pass {' or '.join(map(repr, OOD_SOURCES))}, a "
            "datasets.Dataset with an image column, or a dataset source (image folder, saved dataset, Hub name)."
        )
    if num_images is not None and len(dataset) > num_images:
        dataset = dataset.shuffle(seed=seed).select(range(num_images))
    return dataset


# --------------------------------------------------------------------------------------------- checks


def image_column(dataset: datasets.Dataset, name: str) -> str:
    """The dataset's image column (:func:`hubtune.data.find_image_column`), OODError naming the set otherwise."""
    return find_image_column(dataset.features, what=f"OOD set {name!r}", error=OODError)


def check_ood_images(dataset: datasets.Dataset, name: str) -> None:
    """Check that an OOD set is usable before any model runs: not empty, one image column, every image decodes.

    Raises:
        OODError: an empty set, no image column, or an image that cannot be read (the message names its file).
    """
    if len(dataset) == 0:
        raise OODError(f"Dataset {name!r} is empty; an OOD evaluation needs at least one image in every set.")
    column = image_column(dataset, name)
    view = dataset.select_columns([column])
    if isinstance(view.features[column], datasets.Image):
        view = view.cast_column(column, datasets.Image(decode=False))
    index = 0
    for batch in view.iter(batch_size=_CHECK_BATCH):
        for item in batch[column]:
            try:
                open_image(item)
            except Exception as e:  # noqa: BLE001 - PIL raises many types for a bad file
                raise OODError(
                    f"OOD set {name!r}: {describe_image(item, index)} cannot be read as an image ({type(e).__name__}: "
                    f"{e}). Remove or replace it; nothing was scored."
                ) from e
            index += 1
