"""What the demo app does, without Gradio: load a generator or a classifier, read its card's key facts, check
what a visitor typed or uploaded, and compute the answer (a grid of samples, the top-5 labels).

Everything a visitor can get wrong raises :class:`~hubtune.errors.ConfigError` with a one-line message; the app
shows it in the page. Nothing here writes: a local model folder is only read (a Hub model goes to the HF cache).
"""

from __future__ import annotations

import inspect
import math
import numbers
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from PIL import Image, UnidentifiedImageError

from hubtune.data import build_transforms
from hubtune.errors import ConfigError
from hubtune.gan import Generator
from hubtune.hub import RUN_INFO_FILENAME, method_card_of
from hubtune.hub.examples import EXAMPLE_FILE, EXAMPLES_INDEX, MAX_EXAMPLES, describe_expected_input
from hubtune.layouts import read_config
from hubtune.layouts.files import fetch, read_json_file
from hubtune.modeling import HubtuneForImageClassification

__all__ = [
    "DemoModel",
    "MAX_IMAGES",
    "MAX_UPLOAD_BYTES",
    "MAX_UPLOAD_PIXELS",
    "PSI_RANGE",
    "SEED_MAX",
    "TOP_K",
    "check_num_images",
    "check_psi",
    "check_seed",
    "classify",
    "default_device",
    "facts_markdown",
    "generate_grid",
    "load_demo_model",
    "open_upload",
    "read_demo_examples",
]

MAX_IMAGES = 64
SEED_MAX = 2 ** 32 - 1
PSI_RANGE = (0.0, 1.0)  # 1: no truncation; 0: every image is the average w's
TOP_K = 5
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_UPLOAD_PIXELS = 40_000_000  # about 6300 x 6300


@dataclass
class DemoModel:
    """A loaded model and what the page shows about it.

    ``kind`` is ``"generator"`` or ``"classifier"``; ``facts`` the card's key facts (name -> value, in order);
    ``truncation`` whether the generator takes a truncation psi (StyleGAN2); ``transform`` the classifier's eval
    preprocessing (PIL image -> tensor) and ``labels`` its class names by index; ``examples`` the (file, label) pairs
    stored with a classifier (:mod:`hubtune.hub.examples`) and ``expects`` one line on the input it expects.
    """

    source: str
    kind: str
    model: torch.nn.Module
    device: torch.device
    facts: dict[str, str] = field(default_factory=dict)
    truncation: bool = False
    transform: Callable[[Image.Image], torch.Tensor] | None = None
    labels: list[str] = field(default_factory=list)
    examples: list[tuple[str, str]] = field(default_factory=list)
    expects: str = ""

    @property
    def title(self) -> str:
        return Path(self.source).name if os.path.isdir(self.source) else self.source


def default_device() -> torch.device:
    """The first CUDA GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# --------------------------------------------------------------------------------------------- loading


def load_demo_model(source: str | os.PathLike, *, device: str | torch.device | None = None,
                    token: str | None = None, revision: str | None = None) -> DemoModel:
    """The generator or classifier in ``source`` (an output folder or a Hub repo id), in eval mode on ``device``
    (default: :func:`default_device`). A folder or repo that holds neither raises a HubtuneError naming it."""
    source = str(source)
    try:
        device = torch.device(device) if device is not None else default_device()
    except RuntimeError as e:
        raise ConfigError(f"--device {device!r} is not a torch device (e.g. 'cpu', 'cuda', 'cuda:1').") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device} asks for a GPU, but torch sees none; use --device cpu.")
    config = read_config(source, revision, token)
    if "arch" in config and "model_type" not in config:  # hubtune.gan's config.json (Generator.from_pretrained)
        generator = Generator.from_pretrained(source, revision=revision, token=token).to(device).eval()
        return DemoModel(source, "generator", generator, device,
                         facts=_generator_facts(source, config, revision, token),
                         truncation="truncation_psi" in _generate_parameters(generator))
    classifier = HubtuneForImageClassification.from_pretrained(source, revision=revision, token=token)
    classifier = classifier.to(device).eval()
    labels = [str(classifier.config.id2label.get(i, i)) for i in range(classifier.config.num_labels)]
    examples, expects = read_demo_examples(source, revision, token)
    return DemoModel(source, "classifier", classifier, device,
                     facts=_classifier_facts(source, revision, token),
                     transform=build_transforms(classifier.preprocessing, train=False), labels=labels,
                     examples=examples, expects=expects or describe_expected_input(classifier.preprocessing))


def read_demo_examples(source: str, revision: str | None = None,
                       token: str | None = None) -> tuple[list[tuple[str, str]], str | None]:
    """([(local path, label)], the "expects" line) of the examples stored with ``source`` (an output folder or a Hub
    repo id); ([], None) when it has none or they cannot be read."""
    try:
        index_path = fetch(source, EXAMPLES_INDEX, revision, token, required=False)
        if not index_path:
            return [], None
        index = read_json_file(index_path, EXAMPLES_INDEX)
        examples = []
        for entry in index.get("examples", [])[:MAX_EXAMPLES]:
            if not EXAMPLE_FILE.fullmatch(str(entry.get("file", ""))):
                continue  # only the folder's own PNG files, whatever the index says
            path = fetch(source, str(entry["file"]), revision, token, required=False)
            if path:
                examples.append((str(path), str(entry.get("label", ""))))
        return examples, index.get("expects")
    except Exception:  # noqa: BLE001 - examples are an extra: a model without readable ones still gets its page
        return [], None


def _generate_parameters(generator: Generator) -> set[str]:
    return set(inspect.signature(generator.generate).parameters)


# --------------------------------------------------------------------------------------------- facts


def _optional_json(source: str, filename: str, revision: str | None, token: str | None) -> dict[str, Any]:
    try:
        path = fetch(source, filename, revision, token, required=False)
        return read_json_file(path, filename) if path else {}
    except Exception:  # noqa: BLE001 - a missing or unreadable extra file only leaves its facts out
        return {}


def _card_summary(source: str, revision: str | None, token: str | None) -> str:
    """The card's first paragraph after its title (both hubtune cards say there what was trained on what)."""
    try:
        path = fetch(source, "README.md", revision, token, required=False)
        text = path.read_text(encoding="utf-8") if path else ""
    except Exception:  # noqa: BLE001
        return ""
    lines = re.sub(r"\A---\n.*?\n---\n", "", text, flags=re.S).splitlines()
    start = next((i + 1 for i, line in enumerate(lines) if line.startswith("# ")), 0)
    for paragraph in re.split(r"\n\s*\n", "\n".join(lines[start:])):
        paragraph = paragraph.strip()
        if paragraph and not paragraph.startswith(("#", "!", "|", "```", "<")):
            return " ".join(paragraph.split())
    return ""


def _format_number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _classifier_facts(source: str, revision: str | None, token: str | None) -> dict[str, str]:
    run = _optional_json(source, RUN_INFO_FILENAME, revision, token)
    facts: dict[str, str] = {}
    if run:
        card = method_card_of(run)
        preset = run.get("method_preset")
        facts["Method"] = card["title"] + (f" (preset {preset})" if preset else "")
        if run.get("dataset"):
            facts["Data"] = str(run["dataset"])
        if run.get("base_model"):
            facts["Backbone"] = str(run["base_model"])
        metrics = {k: v for k, v in (run.get("metrics") or {}).items()
                   if isinstance(v, numbers.Real) and not k.endswith(("runtime", "per_second", "epoch"))}
        if metrics:
            facts["Metrics"] = ", ".join(f"{k} {_format_number(v)}" for k, v in sorted(metrics.items()))
    summary = _card_summary(source, revision, token)
    if summary:
        facts["Card"] = summary
    return facts


def _generator_facts(source: str, config: dict[str, Any], revision: str | None, token: str | None) -> dict[str, str]:
    preset = f" (preset {config['preset']})" if config.get("preset") else ""
    facts = {"Architecture": f"{config.get('arch')}{preset}",
             "Images": f"{config.get('image_size')}x{config.get('image_size')} px, {config.get('channels')} channel(s)"}
    training = _optional_json(source, "training_config.json", revision, token)
    if training:
        facts["Method"] = "AdaptiveMix" if training.get("adaptivemix") else "no AdaptiveMix"
        if training.get("dataset"):
            facts["Data"] = str(training["dataset"])
    metrics = _optional_json(source, "metrics.json", revision, token)
    numbers_ = {k: v for k, v in metrics.items() if k in ("fid", "kid_mean") and isinstance(v, numbers.Real)}
    if numbers_:
        note = "" if metrics.get("comparable", True) else " (random feature extractor: not comparable)"
        facts["Metrics"] = ", ".join(f"{k.upper()} {_format_number(v)}" for k, v in numbers_.items()) + note
    summary = _card_summary(source, revision, token)
    if summary:
        facts["Card"] = summary
    return facts


def facts_markdown(demo: DemoModel) -> str:
    """The page's header: the model's name, what input it expects (classifiers) and its key facts as a list."""
    lines = [f"## {demo.title}", f"*{demo.kind}, running on {demo.device.type}*", ""]
    lines += [f"**{demo.expects}**", ""] if demo.expects else []
    lines += [f"- **{name}:** {value}" for name, value in demo.facts.items()]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- input checks


def _whole_number(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, str):
        text = value.strip()
        if not re.fullmatch(r"[+-]?\d+(\.0*)?", text):
            raise ConfigError(f"{what} must be a whole number from {low} to {high}, got {value!r}.")
        value = int(text.split(".")[0])
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or int(value) != value:
        raise ConfigError(f"{what} must be a whole number from {low} to {high}, got {value!r}.")
    if not low <= int(value) <= high:
        raise ConfigError(f"{what} must be from {low} to {high}, got {int(value)}.")
    return int(value)


def check_seed(value: Any) -> int:
    """The seed as an int in [0, SEED_MAX]; a ConfigError for anything else (3.5, "abc", -1, None)."""
    return _whole_number(value, "The seed", 0, SEED_MAX)


def check_num_images(value: Any) -> int:
    return _whole_number(value, "The number of images", 1, MAX_IMAGES)


def check_psi(value: Any) -> float:
    """Truncation psi as a float in :data:`PSI_RANGE`; a ConfigError otherwise."""
    low, high = PSI_RANGE
    try:
        psi = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"Truncation psi must be a number from {low} to {high}, got {value!r}.") from None
    if isinstance(value, bool) or not math.isfinite(psi) or not low <= psi <= high:
        raise ConfigError(f"Truncation psi must be from {low} to {high} (1 = no truncation), got {value!r}.")
    return psi


def open_upload(path: str | os.PathLike | None) -> Image.Image:
    """The uploaded file as a decoded PIL image; a ConfigError for no file, a file that is not an image, or one
    larger than :data:`MAX_UPLOAD_BYTES` / :data:`MAX_UPLOAD_PIXELS`."""
    if not path:
        raise ConfigError("Upload an image first (PNG, JPEG, WebP, ...).")
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError:
        raise ConfigError("The upload could not be read; upload the image again.") from None
    if size > MAX_UPLOAD_BYTES:
        raise ConfigError(f"The file is {size / 2 ** 20:.1f} MB; upload an image of at most "
                          f"{MAX_UPLOAD_BYTES // 2 ** 20} MB.")
    try:
        with Image.open(path) as probe:
            width, height = probe.size
            if width * height > MAX_UPLOAD_PIXELS:
                raise ConfigError(f"The image is {width}x{height} pixels; upload one of at most "
                                  f"{MAX_UPLOAD_PIXELS / 1e6:.0f} megapixels.")
            probe.load()
            image = probe.copy()
    except ConfigError:
        raise
    except Image.DecompressionBombError:
        raise ConfigError(f"The image is too large to decode; upload one of at most "
                          f"{MAX_UPLOAD_PIXELS / 1e6:.0f} megapixels.") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise ConfigError(f"{path.name!r} is not an image that can be read (PNG, JPEG, WebP, ...).") from None
    return image


# --------------------------------------------------------------------------------------------- answers


@torch.no_grad()
def generate_grid(demo: DemoModel, seed: Any, num_images: Any, psi: Any = 1.0) -> Image.Image:
    """``num_images`` samples of ``seed`` (psi for StyleGAN2) as one PIL grid, about square."""
    from torchvision.utils import make_grid

    if demo.kind != "generator":
        raise ConfigError(f"{demo.source} is a {demo.kind}, not a generator.")
    seed, num_images = check_seed(seed), check_num_images(num_images)
    options = {"truncation_psi": check_psi(psi)} if demo.truncation else {}
    images = demo.model.generate(num_images, seed=seed, **options)
    grid = make_grid(images, nrow=math.ceil(math.sqrt(num_images)), padding=2, pad_value=1.0)
    array = (grid.mul(255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0)).numpy()
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


@torch.no_grad()
def classify(demo: DemoModel, image: Image.Image) -> dict[str, float]:
    """The top-:data:`TOP_K` labels of ``image`` with their softmax probabilities, most likely first."""
    if demo.kind != "classifier" or demo.transform is None:
        raise ConfigError(f"{demo.source} is a {demo.kind}, not a classifier.")
    pixels = demo.transform(image).unsqueeze(0).to(demo.device)
    logits = demo.model(pixel_values=pixels).logits[0].float()
    probs = logits.softmax(-1).cpu()
    top = probs.topk(min(TOP_K, probs.numel()))
    return {demo.labels[i]: float(p) for p, i in zip(top.values.tolist(), top.indices.tolist())}
