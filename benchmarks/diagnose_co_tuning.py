"""How informative Co-Tuning's category relationship p(y_s | y_t) is on a benchmark task (no training).

Co-Tuning trains the kept ImageNet head towards the row p(y_s | y_t) of each image's target class, built once before
training from the pretrained model's predictions on the training images (``CoTuningMethod.prepare``, the exact code a
run uses). The term can only help if those rows tell the target classes apart. For each task and seed this script
draws the same k images per class as ``benchmarks/bench_methods.py``, builds the relationship as a run does, and
reports per row: its entropy (nats; a uniform row over S source classes has log S), its largest probability, and the
mean cosine similarity between the rows of different target classes (1: every class has the same row).

    python benchmarks/diagnose_co_tuning.py --task digits animals --seeds 0 1 2

Appends one JSON line per task and seed to ``benchmarks/results/co_tuning_relationship.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_methods import RESULTS, TASKS, task_options  # noqa: E402
from fetch_offline_weights import ensure_offline_weights  # noqa: E402

from hubtune.data import collate_image_batch, few_shot_subset, load_image_classification_data  # noqa: E402
from hubtune.modeling import HubtuneForImageClassification  # noqa: E402
from hubtune.training.finetune import preparation_dataset  # noqa: E402


def _options(task: str) -> dict:
    argv = task_options(task)
    pairs = dict(zip(argv[::2], argv[1::2]))
    return {"source": pairs["--dataset"], "eval_split": pairs.get("--eval_split"),
            "eval_fraction": float(pairs["--eval_fraction"]) if "--eval_fraction" in pairs else None}


def relationship_statistics(relationship: torch.Tensor) -> dict:
    """Entropy and largest probability of each row (mean over rows), and the mean cosine of distinct rows."""
    rows = relationship.double()
    entropy = -(rows * rows.clamp_min(1e-300).log()).sum(1)
    unit = rows / rows.norm(dim=1, keepdim=True)
    cosine = unit @ unit.T
    k = rows.shape[0]
    off_diagonal = (cosine.sum() - cosine.diagonal().sum()) / (k * (k - 1))
    return {"source_classes": rows.shape[1], "uniform_entropy": math.log(rows.shape[1]),
            "mean_row_entropy": float(entropy.mean()), "mean_row_max": float(rows.max(1).values.mean()),
            "mean_cosine_between_rows": float(off_diagonal)}


def measure(task: str, seed: int, k: int, image_size: int) -> dict:
    options = _options(task)
    data = load_image_classification_data(options["source"], eval_split=options["eval_split"],
                                          eval_fraction=options["eval_fraction"], seed=seed)
    train = few_shot_subset(data.train, k, seed)
    torch.manual_seed(seed)
    model = HubtuneForImageClassification.from_backbone(
        f"local-dir:{ensure_offline_weights()}", id2label=data.id2label, pretrained=True, method="co-tuning",
        image_size=image_size)
    images = preparation_dataset(train, model)
    batches = (collate_image_batch([images[j] for j in range(i, min(i + 32, len(images)))])
               for i in range(0, len(images), 32))
    model.method.prepare(model, batches)
    return {"benchmark": "co_tuning_relationship", "task": task, "seed": seed, "k": k, "image_size": image_size,
            **relationship_statistics(model.source_classifier.relationship)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", nargs="+", default=["digits", "animals"], choices=TASKS)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--k", type=int, default=10, help="labelled images per class, as bench_methods.py --k")
    p.add_argument("--image-size", type=int, default=48)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    with open(RESULTS / "co_tuning_relationship.jsonl", "a", encoding="utf-8") as out:
        for task in args.task:
            for seed in args.seeds:
                line = measure(task, seed, args.k, args.image_size)
                print(json.dumps(line), flush=True)
                out.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
