"""torch.compile against eager for one training step of HubtuneForImageClassification, in one run.

A step = the method's training forward (labels given, model.train()), backward and an SGD step. The forward is
compiled with ``fullgraph=True`` (hubtune's training forward has no graph break, see tests/test_compile.py); the
backward runs AOTAutograd's compiled backward graph. Eager and compiled repetitions are interleaved on the same
batch and the paired median ratio (compiled / eager) is reported, with the one-off compile time apart.

    python benchmarks/bench_compile.py                                   # CPU, resnet18, 32 px, batch 64, inductor
    python benchmarks/bench_compile.py --method ce --backend aot_eager
    python benchmarks/bench_compile.py --device cuda --bf16 --model resnet50 --image-size 224 --batch-size 128
"""

from __future__ import annotations

import argparse
import functools
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import time_interleaved  # noqa: E402

from hubtune.modeling import HubtuneForImageClassification
from hubtune.devices import configure_backends


def make_step(model, forward, device: torch.device, bf16: bool):
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True)

    def step(x, y):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = forward(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--method", default="core-tuning")
    p.add_argument("--preset", default="paper")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--backend", default="inductor")
    p.add_argument("--mode", default=None, help="torch.compile mode (e.g. max-autotune-no-cudagraphs)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--note", default="", help="free text stored with the result (e.g. machine load)")
    p.add_argument("--output", default=None, help="append a JSON line with the results to this file")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    backends = configure_backends()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    eager_model = HubtuneForImageClassification.from_backbone(
        args.model, num_labels=args.num_classes, method=args.method, method_config={"preset": args.preset},
        image_size=args.image_size).to(device).train()
    compiled_model = copy.deepcopy(eager_model)

    def eager_forward(x, y):
        return eager_model(x, labels=y).loss

    def compiled_forward(x, y):
        return compiled_model(x, labels=y).loss

    compiled_forward = torch.compile(compiled_forward, fullgraph=True, backend=args.backend, mode=args.mode)
    steps = {"eager": make_step(eager_model, eager_forward, device, args.bf16),
             "compiled": make_step(compiled_model, compiled_forward, device, args.bf16)}
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    y = torch.randint(0, args.num_classes, (args.batch_size,), device=device)

    sync()
    start = time.perf_counter()
    steps["compiled"](x, y)  # the first call compiles the forward and backward graphs
    sync()
    compile_s = time.perf_counter() - start

    times = time_interleaved({name: functools.partial(step, x, y) for name, step in steps.items()},
                             warmup=args.warmup, repeats=args.repeats, sync=sync)
    eager, compiled = statistics.median(times["eager"]), statistics.median(times["compiled"])
    paired = statistics.median(c / e for e, c in zip(times["eager"], times["compiled"]))
    result = {
        "benchmark": "compile_step", "model": args.model, "method": args.method, "preset": args.preset,
        "image_size": args.image_size, "batch_size": args.batch_size, "device": str(device), "bf16": args.bf16,
        "backend": args.backend, "mode": args.mode, "threads": torch.get_num_threads(), "repeats": args.repeats,
        "torch": torch.__version__, "compile_s": round(compile_s, 1), "eager_step_ms": round(eager * 1e3, 2),
        "compiled_step_ms": round(compiled * 1e3, 2), "ratio_compiled_vs_eager": round(paired, 3),
        "tf32_matmul": backends["tf32_matmul"], "cudnn_benchmark": backends["cudnn_benchmark"], "note": args.note,
    }
    print(f"{args.method} ({args.preset}) {args.model} {args.image_size}px batch {args.batch_size} on {device}"
          f"{' bf16' if args.bf16 else ''}, backend {args.backend}, {torch.get_num_threads()} thread(s): compile "
          f"{result['compile_s']} s; eager step {result['eager_step_ms']} ms, compiled step "
          f"{result['compiled_step_ms']} ms, ratio compiled/eager {result['ratio_compiled_vs_eager']}")
    if args.output:
        with open(args.output, "a", encoding="utf-8") as f:
            f.write(json.dumps(result) + "\n")
    return result


if __name__ == "__main__":
    main()
