"""Time one training step of Core-tuning against plain cross-entropy fine-tuning, in one run.

Both steps use the same backbone, batch and optimizer; repetitions are interleaved (CE, Core-tuning,
CE, ...) and the ratio reported is the median over repetitions of (Core-tuning time / CE time), so machine
noise hits both alike. Prints it and writes a JSON line to ``--output`` if given.

    python benchmarks/bench_core_tuning.py                              # CPU, resnet18, 32 px, batch 64
    python benchmarks/bench_core_tuning.py --num-classes 100
    python benchmarks/bench_core_tuning.py --device cuda --bf16 --image-size 224

On CUDA it also reports each method's peak memory above the weights (``torch.cuda.max_memory_allocated`` during
one step, optimizer state included) and their ratio. ``main(argv)`` returns the result dict (benchmarks/gpu_check.py
calls it in-process).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import time_interleaved  # noqa: E402

from hubtune.modeling import HubtuneForImageClassification
from hubtune.devices import configure_backends


def make_step(model: HubtuneForImageClassification, device: torch.device, bf16: bool):
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(x, labels=y).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_memory(step, x, y) -> int:
    """Bytes allocated above what was held before one step (CUDA only)."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    baseline = torch.cuda.memory_allocated()
    step(x, y)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - baseline


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--output", default=None, help="append a JSON line with the results to this file")
    args = p.parse_args(argv)

    torch.manual_seed(0)
    device = torch.device(args.device)
    backends = configure_backends() if device.type == "cuda" else None
    steps = {}
    for method in ("ce", "core-tuning"):
        model = HubtuneForImageClassification.from_backbone(
            args.model, num_labels=args.num_classes, method=method, image_size=args.image_size
        ).to(device)
        model.train()
        steps[method] = make_step(model, device, args.bf16)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    y = torch.randint(0, args.num_classes, (args.batch_size,), device=device)

    times = time_interleaved({m: functools.partial(step, x, y) for m, step in steps.items()}, warmup=args.warmup,
                             repeats=args.repeats, sync=functools.partial(sync, device))

    memory = {}
    if device.type == "cuda":
        for method, step in steps.items():
            memory[method] = peak_memory(step, x, y)

    ce, ct = statistics.median(times["ce"]), statistics.median(times["core-tuning"])
    # each repetition times both steps back to back: the median of these paired ratios resists load drifts
    paired = statistics.median(b / a for a, b in zip(times["ce"], times["core-tuning"]))
    result = {
        "benchmark": "core_tuning_step",
        "model": args.model,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "num_classes": args.num_classes,
        "device": str(device),
        "bf16": args.bf16,
        "threads": torch.get_num_threads(),
        "ce_step_ms": round(ce * 1e3, 2),
        "core_tuning_step_ms": round(ct * 1e3, 2),
        "ratio": round(paired, 3),
        "ratio_of_medians": round(ct / ce, 3),
        "repeats": args.repeats,
    }
    if memory:
        result.update(ce_peak_mib=round(memory["ce"] / 2**20, 1),
                      core_tuning_peak_mib=round(memory["core-tuning"] / 2**20, 1),
                      memory_ratio=round(memory["core-tuning"] / memory["ce"], 3), backends=backends)
    print(
        f"{args.model} {args.image_size}px batch {args.batch_size}, {args.num_classes} classes on {device}"
        f"{' bf16' if args.bf16 else ''}: CE step {result['ce_step_ms']} ms, Core-tuning step "
        f"{result['core_tuning_step_ms']} ms, ratio {result['ratio']}"
        + (f"; peak memory CE {result['ce_peak_mib']} MiB, Core-tuning {result['core_tuning_peak_mib']} MiB, ratio "
           f"{result['memory_ratio']}" if memory else "")
    )
    if args.output:
        with open(args.output, "a", encoding="utf-8") as f:
            f.write(json.dumps(result) + "\n")
    return result


if __name__ == "__main__":
    main()
