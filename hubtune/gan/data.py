"""Image sets for GAN training: scikit-learn's digits, an image folder, or a Hugging Face dataset.

Images are decoded once, resized (shorter side, then centre crop) to the training size and held in memory as
uint8 (N, C, H, W); batches are scaled to [-1, 1] on the fly. This suits the small and medium sets hubtune's
GANs train on. A set too large for memory streams instead (:func:`load_image_stream`: a Hub data set, WebDataset
shards, Parquet files), each process reading its own part (:class:`hubtune.data.ImageStream`).

Batches come from :class:`StepBatchSampler`: the batch of step ``s`` on process ``r`` depends only on
``(seed, s, r)``, so training resumes exactly without saving a data-loader state, and every batch is full
(epochs are concatenated permutations).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from hubtune.data import (
    ConvertChannels,
    ImageExampleTransform,
    ImageStream,
    find_image_column,
    is_saved_dataset,
    load_streams,
)
from hubtune.errors import DatasetTooSmallError, GANDataError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}

__all__ = ["GANDataError", "DatasetTooSmallError", "ImageSet", "load_image_set", "StepBatchSampler", "StreamedImages",
           "load_image_stream"]


@dataclass
class ImageSet(Dataset):
    """Images as uint8 (N, C, H, W) in memory; items are float tensors in [-1, 1].

    Attributes:
        images: uint8 tensor (N, C, H, W).
        source: what the images were loaded from (recorded in results and model cards).
        skipped: number of unreadable files left out.
    """

    images: Tensor
    source: str
    skipped: int = 0

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> Tensor:
        return self.images[index].float().div(127.5).sub(1.0)

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]

    def batch(self, indices: Tensor | list[int]) -> Tensor:
        """A float batch in [-1, 1] (faster than collating items)."""
        return self.images[torch.as_tensor(indices)].float().div(127.5).sub(1.0)


def _fit(image: Image.Image, size: int, mode: str) -> np.ndarray:
    """Convert mode (palette, alpha, 16-bit, CMYK ...), resize the shorter side to ``size``, centre-crop."""
    image = ConvertChannels(1 if mode == "L" else 3)(image)
    w, h = image.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    image = image.crop((left, top, left + size, top + size))
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _stack(arrays: list[np.ndarray], source: str, skipped: int) -> ImageSet:
    if not arrays:
        raise GANDataError(f"{source}: no readable images found ({skipped} unreadable)")
    return ImageSet(torch.from_numpy(np.stack(arrays)), source=source, skipped=skipped)


def load_digits_images(image_size: int = 32) -> ImageSet:
    """scikit-learn's 1,797 8x8 grayscale digits (values 0..16), upsampled bilinearly to ``image_size``."""
    from sklearn.datasets import load_digits

    digits = torch.from_numpy(load_digits().images).float().unsqueeze(1) / 16.0
    up = torch.nn.functional.interpolate(digits, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return ImageSet((up.clamp(0, 1) * 255).round().to(torch.uint8), source="digits (scikit-learn load_digits)")


def load_image_folder(folder: str | os.PathLike, image_size: int, channels: int = 3, strict: bool = False) -> ImageSet:
    """Every image file under ``folder`` (recursively), converted to RGB (or L if ``channels == 1``).

    Unreadable files are skipped and counted (logged); with ``strict=True`` the first one raises
    :class:`GANDataError`.
    """
    # not datasets' imagefolder: this skips and counts unreadable files (or stops at the first with strict), where
    # imagefolder fails at decode time mid-run; tests/gan/test_gan_data_metrics.py::test_image_folder_mixed_sizes...
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise GANDataError(f"{folder} holds no image files (looked for {sorted(IMAGE_EXTENSIONS)})")
    mode = "L" if channels == 1 else "RGB"
    arrays, skipped = [], 0
    for path in files:
        try:
            with Image.open(path) as image:
                image.load()
                arrays.append(_fit(image, image_size, mode))
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
            if strict:
                raise GANDataError(f"cannot read image {path}: {err} (drop strict to skip unreadable files)") from err
            skipped += 1
    if skipped:
        logger.warning("%s: skipped %d unreadable image file(s) of %d", folder, skipped, len(files))
    return _stack(arrays, str(folder), skipped)


def load_hf_images(source: Any, image_size: int, channels: int = 3, split: str = "train", max_images: int | None = None) -> ImageSet:
    """Images of a ``datasets.Dataset``, a folder written by ``save_to_disk``, or a Hub dataset name."""
    import datasets

    name = source if isinstance(source, str) else type(source).__name__
    if isinstance(source, (datasets.DatasetDict, dict)):
        if split not in source:
            raise GANDataError(f"split {split!r} not found; available: {list(source)}")
        source = source[split]
    if isinstance(source, str):
        if os.path.isdir(source):
            loaded = datasets.load_from_disk(source)
        else:
            try:
                loaded = datasets.load_dataset(source, split=split)
            except Exception as err:  # the library raises many types for "not found / offline"
                raise GANDataError(f"cannot load the Hugging Face dataset {source!r} (split {split!r}): {err}") from err
        source = loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
    column = find_image_column(source.features, error=GANDataError)
    if max_images is not None:
        source = source.select(range(min(max_images, len(source))))
    mode = "L" if channels == 1 else "RGB"
    arrays = [_fit(image, image_size, mode) for image in source[column]]
    return _stack(arrays, name, 0)


def load_image_set(
    data: Any,
    image_size: int = 32,
    channels: int | None = None,
    strict: bool = False,
    max_images: int | None = None,
) -> ImageSet:
    """Load training images by description.

    Args:
        data: ``"digits"``; a folder of images; a folder written by ``datasets.save_to_disk``; a Hub dataset name;
            or a ``datasets.Dataset``.
        channels: 1 or 3 (default: 1 for digits, 3 otherwise).
        strict: raise on the first unreadable file of an image folder instead of skipping it.
        max_images: keep at most that many images (the first ones).
    """
    if channels not in (None, 1, 3):
        raise GANDataError(f"channels must be 1 or 3, got {channels!r}")
    if isinstance(data, str) and data == "digits":
        images = load_digits_images(image_size)
        if channels == 3:
            images = ImageSet(images.images.expand(-1, 3, -1, -1).contiguous(), images.source)
    elif isinstance(data, (str, os.PathLike)) and os.path.isdir(data) and not is_saved_dataset(data):
        images = load_image_folder(data, image_size, channels or 3, strict)
    else:
        images = load_hf_images(str(data) if isinstance(data, os.PathLike) else data, image_size, channels or 3, max_images=max_images)
    if max_images is not None:
        images = ImageSet(images.images[:max_images], images.source, images.skipped)
    return images


class FitToTensor:
    """A PIL image -> float (C, size, size) in [-1, 1]: the in-memory sets' resize (:func:`_fit`), for streams."""

    def __init__(self, size: int, channels: int):
        self.size, self.mode = size, "L" if channels == 1 else "RGB"

    def __call__(self, image: Image.Image) -> Tensor:
        return torch.tensor(_fit(image, self.size, self.mode), dtype=torch.float32).div(127.5).sub(1.0)


@dataclass
class StreamedImages:
    """GAN training images read as a stream (column ``"image"``, undecoded): never all in memory.

    :meth:`process_stream` is one process's endless part of it (items: float (C, H, W) in [-1, 1]; collate with
    :func:`hubtune.data.collate_image_batch`, which also counts unreadable images); :meth:`first_images` decodes the
    first ones into an :class:`ImageSet` (the real images FID compares with).
    """

    stream: Any
    source: str
    image_size: int
    channels: int
    strict: bool = False

    def transform(self) -> ImageExampleTransform:
        return ImageExampleTransform(FitToTensor(self.image_size, self.channels), strict=self.strict)

    def process_stream(self, rank: int = 0, world_size: int = 1, seed: int = 0, buffer_size: int = 1000) -> ImageStream:
        return ImageStream(self.stream, self.transform(), rank=rank, world_size=world_size, seed=seed,
                           buffer_size=buffer_size)

    def first_images(self, count: int) -> ImageSet:
        stream = ImageStream(self.stream.take(count), self.transform(), shuffle=False, passes=1)
        arrays = [((item["pixel_values"] + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy() for item in stream]
        return _stack(arrays, self.source, 0)


def load_image_stream(data: Any, image_size: int = 32, channels: int | None = None, strict: bool = False,
                      max_images: int | None = None, split: str = "train") -> StreamedImages:
    """Training images as a stream: a Hub dataset name, a folder (or list, or glob) of WebDataset ``.tar`` shards or
    Parquet files, a folder written by ``save_to_disk``, ``"digits"`` or a ``datasets`` object (see
    :func:`hubtune.data.load_image_classification_data` with ``streaming=True``; labels are not needed). ``channels``:
    1 or 3 (default: 1 for digits, 3 otherwise)."""
    import datasets

    if channels not in (None, 1, 3):
        raise GANDataError(f"channels must be 1 or 3, got {channels!r}")
    channels = channels or (1 if isinstance(data, str) and data == "digits" else 3)
    splits, name, _ = load_streams(data)
    if split not in splits and len(splits) != 1:
        raise GANDataError(f"split {split!r} not found; available: {list(splits)}")
    stream = splits[split] if split in splits else next(iter(splits.values()))
    column = find_image_column(stream.features, error=GANDataError)
    stream = stream.cast_column(column, datasets.Image(decode=False)).select_columns([column])  # (see _standardise_columns)
    if column != "image":
        stream = stream.rename_column(column, "image")
    if max_images is not None:
        stream = stream.take(max_images)
    return StreamedImages(stream, name, image_size, channels, strict)


class StepBatchSampler(Sampler[list[int]]):
    """Yields, from ``start_step`` on, the indices of this process's batch of each step.

    The global index stream is a concatenation of permutations of the dataset (epoch ``e`` shuffled with
    ``seed + e``); step ``s`` takes global positions ``[s * B * P, (s + 1) * B * P)`` and process ``r`` the
    ``r``-th slice of ``B``. So there is no last partial batch; a batch that straddles two epochs may hold an
    image twice (once from the end of one epoch, once from the start of the next).

    Raises:
        DatasetTooSmallError: when the dataset has fewer images than one step's ``B * P`` (a sample would appear
            twice in one step's batch).
    """

    def __init__(self, dataset_size: int, batch_size: int, num_steps: int, seed: int = 0,
                 start_step: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        global_batch = batch_size * world_size
        if dataset_size < global_batch:
            raise DatasetTooSmallError(
                f"the dataset has {dataset_size} images, fewer than one step's batch ({batch_size} per process x "
                f"{world_size} process(es) = {global_batch}); lower --per_device_train_batch_size or add images"
            )
        self.dataset_size, self.batch_size, self.num_steps = dataset_size, batch_size, num_steps
        self.seed, self.start_step, self.rank, self.world_size = seed, start_step, rank, world_size

    def _epoch(self, epoch: int) -> Tensor:
        if getattr(self, "_cached_epoch", None) != epoch:
            self._cached_perm = torch.randperm(self.dataset_size, generator=torch.Generator().manual_seed(self.seed + epoch))
            self._cached_epoch = epoch
        return self._cached_perm

    def indices_for_step(self, step: int) -> list[int]:
        global_batch = self.batch_size * self.world_size
        start = step * global_batch + self.rank * self.batch_size
        out: list[int] = []
        epoch, offset = divmod(start, self.dataset_size)
        while len(out) < self.batch_size:
            perm = self._epoch(epoch)
            take = perm[offset: offset + self.batch_size - len(out)].tolist()
            out.extend(take)
            epoch, offset = epoch + 1, 0
        return out

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.num_steps):
            yield self.indices_for_step(step)

    def __len__(self) -> int:
        return max(0, self.num_steps - self.start_step)
