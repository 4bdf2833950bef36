"""Example inputs stored with a classifier: a few held-out images that its demo page (``hubtune demo``, and the
Space, which reads them from the model repo) offers to click, and the one line that says what the model expects.

``hubtune finetune`` calls :func:`write_demo_examples` at the end of a run: ``OUTPUT_DIR/examples/`` then holds up
to 8 PNG images of the evaluation split (never seen in training), one class after another, and ``examples.json``
lists them with their labels and the "expects" line (size and channels from the model's preprocessing, polarity
from the images where they have one: scikit-learn's digits are light strokes on a dark background, and a dark digit
on white paper is not what such a model learnt). :func:`hubtune.demo.model.read_demo_examples` reads them back from a
folder or a Hub repo.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

__all__ = ["EXAMPLE_FILE", "EXAMPLES_DIR", "EXAMPLES_INDEX", "MAX_EXAMPLES", "describe_expected_input",
           "write_demo_examples"]

EXAMPLES_DIR = "examples"
EXAMPLES_INDEX = f"{EXAMPLES_DIR}/examples.json"
MAX_EXAMPLES = 8
_MAX_SIDE = 512  # a larger example is stored shrunk to this (the folder stays small)
_POLARITY_SAMPLE = 64
_DARK, _LIGHT = 64, 192
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
EXAMPLE_FILE = re.compile(r"examples/[A-Za-z0-9_.-]+\.png")  # border brightness (0-255) under / over which a background counts as dark / light


def _pick(labels: Sequence[int], count: int) -> list[int]:
    """Row indices: the first row of each class in label order, then the second of each, ... (``count`` in all)."""
    by_class: dict[int, list[int]] = {}
    for row, label in enumerate(labels):
        by_class.setdefault(int(label), []).append(row)
    order, depth = [], 0
    while len(order) < count and any(depth < len(rows) for rows in by_class.values()):
        order += [rows[depth] for _, rows in sorted(by_class.items()) if depth < len(rows)]
        depth += 1
    return order[:count]


def _border_brightness(image: Image.Image) -> float:
    pixels = np.asarray(image.convert("L"), dtype=np.float64)
    return float(np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]]).mean())


def _polarity(images: Sequence[Image.Image]) -> str | None:
    """"light on a dark background" / "dark on a light background" when 90% of the images agree; else None."""
    borders = [_border_brightness(image) for image in images]
    if not borders:
        return None
    if sum(b < _DARK for b in borders) >= 0.9 * len(borders):
        return "light on a dark background"
    if sum(b > _LIGHT for b in borders) >= 0.9 * len(borders):
        return "dark on a light background"
    return None


def describe_expected_input(preprocessing: Any, images: Sequence[Image.Image] = ()) -> str:
    """One line: the size and channels the model sees (from its ``preprocessing``) and, from sample ``images`` of its
    data, whether they were grayscale, their size and their polarity, e.g. "The model expects grayscale images,
    seen at 32x32 px; it was trained on 8x8 px images, light on a dark background, like the examples." """
    channels = int(preprocessing.input_size[0])
    height, width = preprocessing.image_size
    grayscale = channels == 1 or (bool(images) and all(image.mode in _GRAY_MODES for image in images))
    line = f"The model expects {'grayscale' if grayscale else 'colour'} images, seen at {width}x{height} px"
    if not images:
        return line + "."
    sizes = {image.size for image in images}
    native = f"{images[0].size[0]}x{images[0].size[1]} px images" if len(sizes) == 1 else "images of several sizes"
    polarity = _polarity(images)
    return f"{line}; it was trained on {native}{', ' + polarity if polarity else ''}, like the examples."


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("._")[:40] or "class"


def write_demo_examples(folder: str | Path, dataset: Any, id2label: dict[int, str], preprocessing: Any,
                        count: int = MAX_EXAMPLES) -> list[str]:
    """Save up to ``count`` images of ``dataset`` (a held-out split with ``image`` and ``label`` columns) as
    ``folder/examples/NN-LABEL.png`` and ``examples.json`` (files, labels, the "expects" line); the paths written.

    Images keep their size and mode (one wider than 512 px is shrunk); nothing is written for an empty split."""
    rows = _pick(dataset["label"], min(count, len(dataset)))
    if not rows:
        return []
    target = Path(folder) / EXAMPLES_DIR
    target.mkdir(parents=True, exist_ok=True)
    entries, written = [], []
    for number, row in enumerate(rows):
        image, label = dataset[row]["image"], str(id2label.get(int(dataset[row]["label"]), dataset[row]["label"]))
        if max(image.size) > _MAX_SIDE:
            image = image.copy()
            image.thumbnail((_MAX_SIDE, _MAX_SIDE))
        name = f"{EXAMPLES_DIR}/{number:02d}-{_safe(label)}.png"
        image.save(Path(folder) / name, format="PNG")
        entries.append({"file": name, "label": label})
        written.append(name)
    sample = [dataset[row]["image"] for row in range(min(len(dataset), _POLARITY_SAMPLE))]
    index = {"examples": entries, "expects": describe_expected_input(preprocessing, sample)}
    (Path(folder) / EXAMPLES_INDEX).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return [*written, EXAMPLES_INDEX]
