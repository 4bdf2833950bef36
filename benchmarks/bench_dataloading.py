"""Does hubtune's input pipeline feed a GPU as fast as timm's loader? And does loading keep up with the step?

Two modes, one file:

``--mode loaders`` (default): images per second at 224 px with the training transforms, on the same JPEG images,
for hubtune's map-style pipeline (an image folder through ``load_image_classification_data`` + ``with_transforms``
+ ``collate_image_batch``), hubtune's streaming pipeline (the same images as WebDataset shards through
``load_image_classification_data(streaming=True)`` + ``ImageStream``) and timm's ``timm.data.create_loader`` on the
same folder, both with its prefetcher (uint8 batches, normalised per batch after the loader; on a GPU that happens
on the GPU) and without it (float tensors, as hubtune's). Each at 0, 2 and the machine's core count of workers.
All do the same augmentation: RandomResizedCrop(224, scale=(0.7, 1), bilinear), no flip, no colour jitter.
Rounds are interleaved over the loaders (a shared machine's load drifts hit all alike) and each figure is the
median; the ratios against timm are taken within each round first. Then: where the time of one image goes
(read, decode, crop + resize, to tensor + normalise, collate; and datasets' own access overhead), measured in
one process; and the loader settings: ``persistent_workers`` (workers kept between epochs), ``prefetch_factor``
(batches in flight per worker); ``pin_memory`` is measured only where CUDA is present.

``--mode step``: hubtune finetune's embedded CPU default (digits, resnet18 at 32 px, batch 64, Core-tuning): the
transform pipeline alone, the training step alone, and both together, per worker count.

    python benchmarks/bench_dataloading.py --images 256 --output benchmarks/results/cpu.jsonl --note "load ..."
    python benchmarks/bench_dataloading.py --mode step --output benchmarks/results/cpu.jsonl
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from hubtune.backbones import PreprocessingConfig
from hubtune.data import (
    ImageExampleTransform,
    ImageStream,
    build_transforms,
    collate_image_batch,
    load_image_classification_data,
    normalize_batch,
    open_image,
    with_transforms,
)

SCALE = (0.7, 1.0)  # hubtune's RandomResizedCrop scale (hubtune.data.build_transforms)
CLASSES = 4


# --------------------------------------------------------------------------------------------- the images


def make_images(root: Path, count: int, seed: int = 0) -> None:
    """``count`` ImageNet-like JPEGs (random crops of scikit-image's photos, 300-500 px a side, quality 90) as an image
    folder (root/train/cK/, root/validation/cK/) and as WebDataset shards of the same files (root/shards/)."""
    import skimage.data

    photos = [Image.fromarray(np.asarray(getattr(skimage.data, name)())).convert("RGB")
              for name in ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")]
    rng = np.random.default_rng(seed)
    shards, per_shard = root / "shards", max(1, count // 8)
    shards.mkdir(parents=True)
    tar = None
    for i in range(count + CLASSES):
        photo = photos[i % len(photos)]
        side = int(rng.integers(min(photo.size) // 2, min(photo.size) + 1))
        left, top = int(rng.integers(0, photo.size[0] - side + 1)), int(rng.integers(0, photo.size[1] - side + 1))
        size = (int(rng.integers(375, 501)), int(rng.integers(300, 401)))
        buffer = io.BytesIO()
        photo.crop((left, top, left + side, top + side)).resize(size, Image.BILINEAR).save(buffer, "JPEG", quality=90)
        label, split = i % CLASSES, "train" if i < count else "validation"
        (root / split / f"c{label}").mkdir(parents=True, exist_ok=True)
        (root / split / f"c{label}" / f"{i:06d}.jpg").write_bytes(buffer.getvalue())
        if split == "train":
            if i % per_shard == 0:
                tar = tar.close() if tar else None
                tar = tarfile.open(shards / f"train-{i // per_shard:05d}.tar", "w")
            for name, payload in ((f"{i:06d}.jpg", buffer.getvalue()), (f"{i:06d}.cls", str(label).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    tar.close()
    names = "".join(f"          '{k}': c{k}\n" for k in range(CLASSES))
    (shards / "README.md").write_text("---\ndataset_info:\n  features:\n  - name: jpg\n    dtype: image\n  - name: cls\n"
                                      f"    dtype:\n      class_label:\n        names:\n{names}---\n")


# --------------------------------------------------------------------------------------------- the loaders


def _options(workers: int, settings: dict) -> dict:
    if workers == 0:
        return {"num_workers": 0, "pin_memory": settings.get("pin_memory", False)}
    return {"num_workers": workers, "pin_memory": settings.get("pin_memory", False),
            "persistent_workers": settings.get("persistent_workers", False),
            "prefetch_factor": settings.get("prefetch_factor", 2)}


class NormalizedAfter:
    """A loader of uint8 batches, each normalised as it leaves (``hubtune.data.normalize_batch``), as HubtuneTrainer
    does after moving a batch to the device; here on the CPU, in this process, as timm's PrefetchLoader does without
    a GPU."""

    def __init__(self, loader, preprocessing: PreprocessingConfig):
        self.loader, self.preprocessing = loader, preprocessing

    def __iter__(self):
        for batch in self.loader:
            batch["pixel_values"] = normalize_batch(batch["pixel_values"], self.preprocessing)
            yield batch


def _hubtune_map(root: Path, preprocessing: PreprocessingConfig, batch: int, workers: int, settings: dict, uint8: bool):
    data = load_image_classification_data(str(root), check_images=False)
    dataset = with_transforms(data.train, build_transforms(preprocessing, train=True, uint8=uint8))
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True, collate_fn=collate_image_batch,
                        **_options(workers, settings))
    return NormalizedAfter(loader, preprocessing) if uint8 else loader


def hubtune_map(root, preprocessing, batch, workers, settings):
    return _hubtune_map(root, preprocessing, batch, workers, settings, uint8=True)


def hubtune_map_float(root, preprocessing, batch, workers, settings):
    return _hubtune_map(root, preprocessing, batch, workers, settings, uint8=False)


def hubtune_stream(root: Path, preprocessing: PreprocessingConfig, batch: int, workers: int, settings: dict):
    data = load_image_classification_data(str(root / "shards"), streaming=True)
    transform = ImageExampleTransform(build_transforms(preprocessing, train=True, uint8=True))
    loader = DataLoader(ImageStream(data.train, transform, buffer_size=256), batch_size=batch,
                        collate_fn=collate_image_batch, **_options(workers, settings))
    return NormalizedAfter(loader, preprocessing)


def _timm(root: Path, preprocessing: PreprocessingConfig, batch: int, workers: int, settings: dict, prefetcher: bool):
    from timm.data import create_dataset, create_loader

    dataset = create_dataset("", root=str(root / "train"), is_training=True)
    options = _options(workers, settings)
    return create_loader(
        dataset, input_size=preprocessing.input_size, batch_size=batch, is_training=True, scale=SCALE, hflip=0.0,
        color_jitter=None, interpolation=preprocessing.interpolation, mean=preprocessing.mean, std=preprocessing.std,
        num_workers=workers, pin_memory=options["pin_memory"], persistent_workers=options.get("persistent_workers", False),
        use_prefetcher=prefetcher, device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))


def timm_uint8(root, preprocessing, batch, workers, settings):
    return _timm(root, preprocessing, batch, workers, settings, prefetcher=True)


def timm_float(root, preprocessing, batch, workers, settings):
    return _timm(root, preprocessing, batch, workers, settings, prefetcher=False)


LOADERS = {"hubtune-map": hubtune_map, "hubtune-stream": hubtune_stream, "timm-uint8": timm_uint8,
           "hubtune-map-float": hubtune_map_float, "timm-float": timm_float}


def measure(loader, batches: int, batch: int, epochs: int = 1) -> tuple[float, float]:
    """(seconds to the first batch, images/s after it) over ``epochs`` passes of ``batches`` batches each (a new
    iterator per epoch, as a training loop makes; workers restart unless persistent)."""
    start, first, seen = time.perf_counter(), None, 0
    for _ in range(epochs):
        for i, _ in enumerate(loader):
            first = first or time.perf_counter()
            seen += 1
            if i + 1 == batches:
                break
    end = time.perf_counter()
    return first - start, (seen - 1) * batch / (end - first)


# --------------------------------------------------------------------------------------------- where time goes


def _ms(seconds: float, count: int) -> float:
    return round(1000 * seconds / max(count, 1), 3)


def breakdown(root: Path, preprocessing: PreprocessingConfig, count: int, batch: int) -> dict[str, float]:
    """Milliseconds per image of each stage, in this process (no workers)."""
    import datasets
    from torchvision import transforms as T

    files = sorted((root / "train").rglob("*.jpg"))[:count]
    transform = build_transforms(preprocessing, train=True)
    convert, crop = transform.transforms[0], transform.transforms[1]
    tails = {"to tensor + normalise: torchvision ToTensor, Normalize": T.Compose([T.ToTensor(), T.Normalize(preprocessing.mean, preprocessing.std)]),
             "to tensor + normalise: hubtune, one copy": transform.transforms[-1],
             "to uint8 tensor (normalised per batch later)": build_transforms(preprocessing, True, uint8=True).transforms[-1]}
    times = dict.fromkeys(["read file", "decode (PIL)", "convert mode", "crop + resize", *tails], 0.0)
    floats, pixels = [], []
    for path in files:
        t0 = time.perf_counter()
        data = path.read_bytes()
        t1 = time.perf_counter()
        image = open_image({"bytes": data, "path": None})
        t2 = time.perf_counter()
        image = convert(image)
        t3 = time.perf_counter()
        image = crop(image)
        t4 = time.perf_counter()
        for key, a, b in zip(times, (t0, t1, t2, t3), (t1, t2, t3, t4)):
            times[key] += b - a
        for name, tail in tails.items():
            start = time.perf_counter()
            out = tail(image)
            times[name] += time.perf_counter() - start
        floats.append({"pixel_values": tails["to tensor + normalise: hubtune, one copy"](image), "labels": 0})
        pixels.append({"pixel_values": out, "labels": 0})
    result = {k: _ms(v, len(files)) for k, v in times.items()}
    whole = (len(files) // batch) * batch
    for name, examples in (("collate float batch", floats), ("collate uint8 batch", pixels)):
        start = time.perf_counter()
        collated = [collate_image_batch(examples[i:i + batch]) for i in range(0, whole, batch)]
        result[name] = _ms(time.perf_counter() - start, whole)
    start = time.perf_counter()
    for b in collated:
        normalize_batch(b["pixel_values"], preprocessing)
    result["normalise uint8 batch (CPU; on a GPU there)"] = _ms(time.perf_counter() - start, whole)
    # datasets' own cost per image: the map-style rows and the stream's examples, without decoding
    raw = load_image_classification_data(str(root), check_images=False).train.cast_column("image", datasets.Image(decode=False))
    start = time.perf_counter()
    for i in range(0, whole, batch):
        raw.__getitems__(list(range(i, i + batch)))
    result["datasets: map-style rows"] = _ms(time.perf_counter() - start, whole)
    start, n = time.perf_counter(), 0
    for n, _ in enumerate(load_image_classification_data(str(root / "shards"), streaming=True).train, 1):
        if n == count:
            break
    result["datasets: stream examples from tar shards"] = _ms(time.perf_counter() - start, n)
    return result


# --------------------------------------------------------------------------------------------- the modes


def run_loaders(args) -> dict:
    preprocessing = PreprocessingConfig(input_size=(3, args.image_size, args.image_size), interpolation="bilinear")
    workers = sorted({0, 2, os.cpu_count() or 1} if args.workers is None else set(args.workers))
    batches = args.images // args.batch_size
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_images(root, args.images + args.batch_size)  # one batch more: the first (warm-up) batch is not timed
        rates = {(name, k): [] for name in LOADERS for k in workers}
        startup = {(name, k): [] for name in LOADERS for k in workers}
        for _ in range(args.rounds):
            for k in workers:
                for name, make in LOADERS.items():
                    first, rate = measure(make(root, preprocessing, args.batch_size, k, {}), batches, args.batch_size)
                    rates[name, k].append(rate)
                    startup[name, k].append(first)
        pairs = [("hubtune-map", "timm-uint8"), ("hubtune-stream", "timm-uint8"), ("hubtune-map-float", "timm-float"),
                 ("hubtune-map", "hubtune-map-float")]
        ratios = {f"{name} / {base}": {str(k): round(statistics.median(a / b for a, b in zip(rates[name, k], rates[base, k])), 3)
                                       for k in workers} for name, base in pairs}
        settings = sweep_settings(root, preprocessing, args, max(workers), batches)
        stages = breakdown(root, preprocessing, min(args.images, 128), args.batch_size)
    return {
        "benchmark": "dataloading-loaders", "image_size": args.image_size, "batch_size": args.batch_size,
        "images": args.images, "rounds": args.rounds, "cpu_count": os.cpu_count(), "cuda": torch.cuda.is_available(),
        "images_per_s": {f"{name} {k}w": round(statistics.median(r), 1) for (name, k), r in rates.items()},
        "first_batch_s": {f"{name} {k}w": round(statistics.median(r), 2) for (name, k), r in startup.items()},
        "ratios_same_workers": ratios, "settings": settings, "ms_per_image": stages, "note": args.note,
    }


def sweep_settings(root: Path, preprocessing: PreprocessingConfig, args, workers: int, batches: int) -> dict:
    """Two epochs per loader with each setting changed alone from the default (non-persistent workers, prefetch 2,
    no pinned memory), interleaved over rounds; images/s relative to the default, median."""
    if workers == 0:
        return {}
    variants = {"default": {}, "persistent_workers": {"persistent_workers": True}, "prefetch_factor=4": {"prefetch_factor": 4}}
    if torch.cuda.is_available():
        variants["pin_memory"] = {"pin_memory": True}
    out = {}
    for name in ("hubtune-map", "hubtune-stream"):
        rates: dict[str, list[float]] = {v: [] for v in variants}
        for _ in range(args.rounds):
            for variant, settings in variants.items():
                loader = LOADERS[name](root, preprocessing, args.batch_size, workers, settings)
                start = time.perf_counter()
                measure(loader, batches, args.batch_size, epochs=2)
                rates[variant].append(2 * batches * args.batch_size / (time.perf_counter() - start))
        out[f"{name} {workers}w"] = {v: round(statistics.median(a / b for a, b in zip(r, rates["default"])), 3)
                                     for v, r in rates.items()}
    return out


def run_step(args) -> dict:
    """The transform pipeline, the training step, and both together (hubtune finetune's CPU default)."""
    from hubtune.modeling import HubtuneForImageClassification

    def loader(dataset, workers):
        return DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=workers,
                          collate_fn=collate_image_batch, drop_last=True)

    torch.manual_seed(0)
    data = load_image_classification_data(args.dataset)
    model = HubtuneForImageClassification.from_backbone(args.model, id2label=data.id2label, method=args.method,
                                                        image_size=args.image_size).train()
    train = with_transforms(data.train, build_transforms(model.preprocessing, train=True))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True)

    def step(batch):
        model(batch["pixel_values"], labels=batch["labels"]).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    workers = args.workers or [0, 1, 2]
    fixed = next(iter(loader(train, 0)))
    for _ in range(2):
        step(fixed)
    start = time.perf_counter()
    for _ in range(args.batches):
        step(fixed)
    step_rate = args.batches * args.batch_size / (time.perf_counter() - start)
    pipeline = {k: measure(loader(train, k), args.batches, args.batch_size)[1] for k in workers}
    rates: dict[int, list[float]] = {k: [] for k in workers}
    for _ in range(args.rounds):  # interleaved over the worker counts, median per count
        for k in workers:
            start = time.perf_counter()
            for i, batch in enumerate(loader(train, k)):
                step(batch)
                if i + 1 == args.batches:
                    break
            rates[k].append(args.batches * args.batch_size / (time.perf_counter() - start))
    end_to_end = {k: statistics.median(r) for k, r in rates.items()}
    return {
        "benchmark": "dataloading", "dataset": data.name, "model": args.model, "method": args.method,
        "image_size": args.image_size, "batch_size": args.batch_size, "batches": args.batches,
        "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
        "step_images_per_s": round(step_rate, 1),
        "pipeline_steady_images_per_s": {str(k): round(v, 1) for k, v in pipeline.items()},
        "end_to_end_images_per_s": {str(k): round(v, 1) for k, v in end_to_end.items()},
        "ratio_pipeline_vs_step": {str(k): round(v / step_rate, 2) for k, v in pipeline.items()},
        f"ratio_end_to_end_vs_{workers[0]}_workers": {str(k): round(v / end_to_end[workers[0]], 3) for k, v in end_to_end.items()},
        "fastest_workers": max(end_to_end, key=end_to_end.get), "rounds": args.rounds, "note": args.note,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=("loaders", "step"), default="loaders")
    p.add_argument("--images", type=int, default=512, help="loaders: timed images per measurement")
    p.add_argument("--image-size", type=int, default=None, help="default 224 (loaders), 32 (step)")
    p.add_argument("--batch-size", type=int, default=None, help="default 32 (loaders: more batches), 64 (step)")
    p.add_argument("--workers", type=int, nargs="+", default=None, help="default: 0, 2 and the core count (loaders)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median reported)")
    p.add_argument("--dataset", default="digits", help="step mode")
    p.add_argument("--model", default="resnet18", help="step mode")
    p.add_argument("--method", default="core-tuning", help="step mode")
    p.add_argument("--batches", type=int, default=12, help="step mode: batches per measurement")
    p.add_argument("--note", default="", help="free text stored with the result (e.g. machine load)")
    p.add_argument("--output", default=None, help="append a JSON line with the results to this file")
    args = p.parse_args(argv)
    args.image_size = args.image_size or (224 if args.mode == "loaders" else 32)
    args.batch_size = args.batch_size or (32 if args.mode == "loaders" else 64)
    result = run_loaders(args) if args.mode == "loaders" else run_step(args)
    print(json.dumps(result, indent=1))
    if args.output:
        with open(args.output, "a", encoding="utf-8") as f:
            f.write(json.dumps(result) + "\n")
    return result


if __name__ == "__main__":
    main()
