"""Memory of the methods that keep a frozen copy of the starting backbone (DELTA, L2-SP) against CE, in one run.

Each method is measured in a fresh process (peak RSS is per process): the model's parameter + buffer bytes (its
training-only parts separately) and the peak resident memory after a few SGD steps on one batch (whole, and above
what the imports already took: torch and transformers alone hold about 1 GB), with the offline
ImageNet MobileNetV2 (``benchmarks/fetch_offline_weights.py``) by default. CPU only; on a GPU the same bytes are
what the copy adds to device memory (activations of the frozen pass are not kept: it runs without gradient).

    python benchmarks/bench_method_memory.py                       # 48 px, batch 32 (the Evidence setting)
    python benchmarks/bench_method_memory.py --image-size 224 --batch-size 32
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fetch_offline_weights import ensure_offline_weights  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TRAINING_ONLY = ("start_backbone", "source_classifier", "projector")


def measure(method: str, backbone: str, image_size: int, batch_size: int, steps: int) -> dict:
    import torch

    from hubtune.modeling import HubtuneForImageClassification

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux: the peak after the imports
    torch.manual_seed(0)
    model = HubtuneForImageClassification.from_backbone(backbone, num_labels=10, method=method, pretrained=True,
                                                        image_size=image_size).train()
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    extra = sum(t.numel() * t.element_size() for n, t in tensors.items() if n.startswith(TRAINING_ONLY))
    x = torch.randn(batch_size, 3, image_size, image_size)
    y = torch.randint(0, 10, (batch_size,))
    if model.method.needs_preparation():  # Co-Tuning's relationship, DELTA's attention: once, before training
        model.method.prepare(model, [{"pixel_values": x, "labels": y}])
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    for _ in range(steps):
        model(x, labels=y).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"method": method, "param_buffer_bytes": total, "training_only_bytes": extra, "peak_rss_bytes": peak_kib * 1024,
            "peak_rss_above_imports_bytes": (peak_kib - before) * 1024}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=["ce", "delta", "l2-sp"])
    p.add_argument("--backbone", default=None)
    p.add_argument("--image-size", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # the child process: measure one method
    args = p.parse_args(argv)
    backbone = args.backbone or f"local-dir:{ensure_offline_weights(verbose=False)}"
    if args.one:
        import torch

        torch.set_num_threads(1)
        print(json.dumps(measure(args.one, backbone, args.image_size, args.batch_size, args.steps)))
        return 0
    rows = []
    for method in args.methods:
        out = subprocess.run([sys.executable, __file__, "--one", method, "--backbone", backbone, "--image-size",
                              str(args.image_size), "--batch-size", str(args.batch_size), "--steps", str(args.steps)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = next((r for r in rows if r["method"] == "ce"), rows[0])
    for r in rows:
        r["param_buffer_ratio_vs_ce"] = round(r["param_buffer_bytes"] / base["param_buffer_bytes"], 3)
        r["peak_rss_ratio_vs_ce"] = round(r["peak_rss_bytes"] / base["peak_rss_bytes"], 3)
        r["peak_rss_above_imports_ratio_vs_ce"] = round(
            r["peak_rss_above_imports_bytes"] / max(base["peak_rss_above_imports_bytes"], 1), 3)
    result = {"backbone": Path(backbone).name, "image_size": args.image_size, "batch_size": args.batch_size,
              "steps": args.steps, "rows": rows}
    print(json.dumps(result, indent=1))
    with open(RESULTS / "method_memory.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
