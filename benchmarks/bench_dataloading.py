"""Does data loading keep up with the training step? Images per second of hubtune's transform pipeline
(``hubtune.data.build_transforms`` + ``with_transforms`` + ``collate_image_batch`` in a DataLoader with 0, 1, 2, ...
workers) against the training step, and both together, in one run.

The default is ``hubtune finetune``'s embedded CPU default: digits, resnet18 at 32 px, batch 64, Core-tuning.
Three measurements, all in images per second:

* ``pipeline``: the DataLoader alone, per worker count (the first batch, which pays for starting the workers
  as every epoch does when workers are not persistent, is counted; ``pipeline_steady`` leaves it out);
* ``step``: the training step alone (forward, backward, SGD) on a batch already in memory;
* ``end_to_end``: the DataLoader feeding the step, per worker count: what training gets (``--rounds`` rounds
  interleaved over the worker counts, median).

Ratios (same run): pipeline / step (above 1: loading keeps up), and end_to_end(k workers) / end_to_end(0 workers)
(above 1: workers help). ``hubtune finetune`` uses 0 workers without CUDA; this checks that choice.

    python benchmarks/bench_dataloading.py --output benchmarks/results/cpu.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from torch.utils.data import DataLoader

from hubtune.data import build_transforms, collate_image_batch, load_image_classification_data, with_transforms
from hubtune.modeling import HubtuneForImageClassification


def loader(dataset, batch_size: int, workers: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                      collate_fn=collate_image_batch, drop_last=True)


def pipeline_rate(dataset, batch_size: int, workers: int, batches: int) -> tuple[float, float]:
    """(images/s including worker start-up, images/s after the first batch)."""
    start = time.perf_counter()
    first = None
    for i, _ in enumerate(loader(dataset, batch_size, workers)):
        if i == 0:
            first = time.perf_counter()
        if i + 1 == batches:
            break
    end = time.perf_counter()
    return batches * batch_size / (end - start), (batches - 1) * batch_size / (end - first)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--model", default="resnet18")
    p.add_argument("--method", default="core-tuning")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--batches", type=int, default=12, help="batches per measurement")
    p.add_argument("--rounds", type=int, default=3, help="interleaved end-to-end rounds (median reported)")
    p.add_argument("--note", default="", help="free text stored with the result (e.g. machine load)")
    p.add_argument("--output", default=None, help="append a JSON line with the results to this file")
    args = p.parse_args(argv)

    torch.manual_seed(0)
    data = load_image_classification_data(args.dataset)
    model = HubtuneForImageClassification.from_backbone(args.model, id2label=data.id2label, method=args.method,
                                                        image_size=args.image_size).train()
    train = with_transforms(data.train, build_transforms(model.preprocessing, train=True))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True)

    def step(batch):
        loss = model(batch["pixel_values"], labels=batch["labels"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    fixed = next(iter(loader(train, args.batch_size, 0)))
    for _ in range(2):
        step(fixed)
    start = time.perf_counter()
    for _ in range(args.batches):
        step(fixed)
    step_rate = args.batches * args.batch_size / (time.perf_counter() - start)

    pipeline, steady = {}, {}
    for workers in args.workers:
        pipeline[workers], steady[workers] = pipeline_rate(train, args.batch_size, workers, args.batches)
    # end to end: rounds interleaved over the worker counts, median per count (load drifts hit all alike)
    rates: dict[int, list[float]] = {workers: [] for workers in args.workers}
    for _ in range(args.rounds):
        for workers in args.workers:
            start = time.perf_counter()
            for i, batch in enumerate(loader(train, args.batch_size, workers)):
                step(batch)
                if i + 1 == args.batches:
                    break
            rates[workers].append(args.batches * args.batch_size / (time.perf_counter() - start))
    end_to_end = {workers: statistics.median(r) for workers, r in rates.items()}

    base = end_to_end[args.workers[0]]
    best = max(end_to_end, key=end_to_end.get)
    result = {
        "benchmark": "dataloading", "dataset": data.name, "model": args.model, "method": args.method,
        "image_size": args.image_size, "batch_size": args.batch_size, "batches": args.batches,
        "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
        "step_images_per_s": round(step_rate, 1),
        "pipeline_images_per_s": {str(k): round(v, 1) for k, v in pipeline.items()},
        "pipeline_steady_images_per_s": {str(k): round(v, 1) for k, v in steady.items()},
        "end_to_end_images_per_s": {str(k): round(v, 1) for k, v in end_to_end.items()},
        "ratio_pipeline_vs_step": {str(k): round(v / step_rate, 2) for k, v in pipeline.items()},
        f"ratio_end_to_end_vs_{args.workers[0]}_workers": {str(k): round(v / base, 3) for k, v in end_to_end.items()},
        "loading_share_of_a_step_with_0_workers": round(step_rate / steady[0], 4) if 0 in steady else None,
        "fastest_workers": best, "rounds": args.rounds, "note": args.note,
    }
    print(f"{args.method} {args.model} {args.image_size}px batch {args.batch_size} on {data.name}, "
          f"{torch.get_num_threads()} thread(s), {os.cpu_count()} CPU(s): step {result['step_images_per_s']} img/s")
    for k in args.workers:
        print(f"  {k} worker(s): pipeline {pipeline[k]:8.1f} img/s (steady {steady[k]:8.1f}, x{pipeline[k] / step_rate:.2f}"
              f" of the step), end to end {end_to_end[k]:7.1f} img/s (x{end_to_end[k] / base:.3f} of {args.workers[0]})")
    print(f"fastest end to end: {best} worker(s)")
    if args.output:
        with open(args.output, "a", encoding="utf-8") as f:
            f.write(json.dumps(result) + "\n")
    return result


if __name__ == "__main__":
    main()
