"""OOD detection after cross-entropy, Core-tuning and AdaptiveMix fine-tuning, fully offline.

In-distribution: scikit-learn's digits (8x8 grayscale). OOD: random crops of scikit-image's bundled photos
and uniform noise, both made as 8x8 grayscale images like the digits, so only the content differs. Each
method fine-tunes the same randomly initialised backbone with ``run_finetune`` (the ``hubtune finetune``
job), the saved model is loaded back and scored with every OOD score of ``hubtune.ood``.

    python examples/ood_demo.py                                   # resnet10t, 16 px, 4 epochs: minutes on 2 CPUs
    python examples/ood_demo.py --epochs 10 --methods ce adaptivemix adaptivemix:reference
    python examples/ood_demo.py --model hf-hub:timm/resnet18.a1_in1k --pretrained --image-size 64
    python examples/ood_demo.py --seeds 0 1 2 3 4 --results benchmarks/results/ood.jsonl   # mean ± std over seeds
    python examples/ood_demo.py --offline-pretrained --image-size 48 --seeds 0 1 2 3 4 \
        --results benchmarks/results/ood.jsonl      # ImageNet MobileNetV2 built by benchmarks/fetch_offline_weights.py

The same evaluation from the command line, for one trained model:

    hubtune ood --model ood-demo/adaptivemix --in-data digits --out-data skimage-photos noise
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from hubtune.data import load_image_classification_data
from hubtune.methods import create_method
from hubtune.modeling import HubtuneForImageClassification
from hubtune.ood import DEFAULT_SCORES, evaluate_ood, format_ood_table
from hubtune.training import parse_finetune_args, run_finetune

OOD_SETS = {"skimage-photos": "skimage-photos", "noise": "noise"}


def summary_table(all_results: dict[str, dict]) -> str:
    """One row per method and score: accuracy, then AUROC and FPR@95TPR (in %) per OOD set."""
    sets = list(OOD_SETS)
    header = "| method | accuracy | score | " + " | ".join(f"AUROC {s} ↑ | FPR95 {s} ↓" for s in sets) + " |"
    lines = [header, "|" + "---|" * (3 + 2 * len(sets))]
    for method, results in all_results.items():
        accuracy = f"{100 * results['in_distribution']['accuracy']:.1f}"
        for score in results["scores"]:
            cells = []
            for s in sets:
                m = results["results"][s]["metrics"][score]
                cells += [f"{100 * m['auroc']:.1f}", f"{100 * m['fpr_at_95_tpr']:.1f}"]
            lines.append(f"| {method} | {accuracy} | {score} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seeds_table(per_seed: dict[str, list[dict]], scores: list[str]) -> str:
    """Mean ± std over seeds (in %) of accuracy, AUROC and FPR@95TPR per method, score and OOD set."""
    def ms(values):
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{100 * statistics.fmean(values):.1f} ± {100 * sd:.1f}"

    sets = list(OOD_SETS)
    header = "| method | seeds | accuracy | score | " + " | ".join(f"AUROC {s} ↑ | FPR95 {s} ↓" for s in sets) + " |"
    lines = [header, "|" + "---|" * (4 + 2 * len(sets))]
    for method, runs in per_seed.items():
        accuracy = ms([r["in_distribution"]["accuracy"] for r in runs])
        for score in scores:
            cells = []
            for s in sets:
                cells += [ms([r["results"][s]["metrics"][score]["auroc"] for r in runs]),
                          ms([r["results"][s]["metrics"][score]["fpr_at_95_tpr"] for r in runs])]
            lines.append(f"| {method} | {len(runs)} | {accuracy} | {score} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet10t", help="any timm / transformers backbone name")
    p.add_argument("--pretrained", action="store_true")
    p.add_argument("--methods", nargs="+", default=["ce", "core-tuning", "adaptivemix"],
                   help="METHOD or METHOD:PRESET, e.g. adaptivemix:reference")
    p.add_argument("--epochs", type=float, default=4)
    p.add_argument("--image-size", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=None,
                   help="default: each method's training recipe with a pretrained backbone, 0.05 from scratch")
    p.add_argument("--optim", default=None, help="e.g. sgd (Nesterov momentum 0.9); default: as for --lr, the "
                   "method's recipe (pretrained) or the finetune job's")
    p.add_argument("--scores", nargs="+", default=list(DEFAULT_SCORES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="several seeds: mean ± std table")
    p.add_argument("--offline-pretrained", action="store_true",
                   help="the ImageNet MobileNetV2 built offline by benchmarks/fetch_offline_weights.py (implies --pretrained)")
    p.add_argument("--results", default=None, help="append one JSON line per method and seed to this file")
    p.add_argument("--output-dir", default="ood-demo")
    p.add_argument("--report", nargs="+", default=None, metavar="JSONL",
                   help="only print the mean ± std table of the --results lines in these files (filtered by --seeds, "
                        "--pretrained / --offline-pretrained, --image-size, --epochs)")
    args = p.parse_args()
    if args.report:
        runs = report_runs(args)
        print(seeds_table(runs, args.scores))
        print("\nAUROC wins against CE of the same seed:\n")
        print(wins_table(runs, args.scores))
        return
    if args.offline_pretrained:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
        from fetch_offline_weights import ensure_offline_weights

        args.model, args.pretrained = f"local-dir:{ensure_offline_weights()}", True

    per_seed: dict[str, list[dict]] = {}
    for seed in args.seeds if args.seeds is not None else [args.seed]:
        all_results = run_seed(args, seed)
        for spec, results in all_results.items():
            per_seed.setdefault(spec, []).append(results)
    if len(per_seed[args.methods[0]]) > 1:
        name = args.model.split("/")[-1]
        print(f"\n## Over seeds {args.seeds} ({name}, pretrained={args.pretrained}, {args.image_size} px, "
              f"{args.epochs:g} epochs)\n")
        print(seeds_table(per_seed, args.scores))


def wins_table(per_label: dict[str, list[dict]], scores: list[str], baseline: str = "ce") -> str:
    """Per method, score and OOD set: in how many seeds the AUROC beat the baseline's of the same seed."""
    base = {r["seed"]: r for r in per_label.get(baseline, [])}
    sets = list(OOD_SETS)
    lines = ["| method | score | " + " | ".join(f"AUROC wins {s}" for s in sets) + " |", "|" + "---|" * (2 + len(sets))]
    for label, runs in per_label.items():
        paired = [r for r in runs if r["seed"] in base]
        if label == baseline or not paired:
            continue
        for score in scores:
            cells = [f"{sum(r['results'][s]['metrics'][score]['auroc'] > base[r['seed']]['results'][s]['metrics'][score]['auroc'] for r in paired)}/{len(paired)}"
                     for s in sets]
            lines.append(f"| {label} | {score} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_label(method: str, method_config: dict) -> str:
    """A run's row name: Core-tuning's names its eta (hubtune's default changed from 0.1 to 0.01)."""
    return f"{method} eta={method_config['eta']:g}" if "eta" in method_config else method


def report_runs(args) -> dict[str, list[dict]]:
    """The --results lines of --report's files that match the options, grouped by run label."""
    pretrained = args.pretrained or args.offline_pretrained
    seeds = set(args.seeds) if args.seeds is not None else None
    per_label: dict[str, list[dict]] = {}
    for path in args.report:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            r = json.loads(line) if line.strip() else None
            if (r is None or r.get("benchmark") != "ood_demo" or r["pretrained"] != pretrained
                    or r["image_size"] != args.image_size or r["epochs"] != args.epochs
                    or bool(r.get("recipe")) != bool(pretrained and not (args.lr or args.optim))
                    or (seeds is not None and r["seed"] not in seeds)):
                continue
            results = {"seed": r["seed"], "in_distribution": {"accuracy": r["accuracy"]},
                       "results": {s: {"metrics": m} for s, m in r["metrics"].items()}}
            per_label.setdefault(run_label(r["method"], r.get("method_config", {})), []).append(results)
    return per_label


def run_seed(args, seed: int) -> dict[str, dict]:
    # The seeded split that run_finetune holds out: its eval part is the in-distribution test set.
    data = load_image_classification_data("digits", seed=seed)
    all_results = {}
    for spec in args.methods:
        method, _, preset = spec.partition(":")
        out = Path(args.output_dir) / f"seed{seed}" / spec.replace(":", "-")
        t0 = time.perf_counter()
        job = {"optim": args.optim} if args.optim else {}
        if args.lr is not None or not args.pretrained:
            job["learning_rate"] = args.lr if args.lr is not None else 0.05
        run_finetune(*parse_finetune_args({
            **job,
            "model": args.model,
            "dataset": "digits",
            "method": method,
            "preset": preset or "paper",
            "num_train_epochs": args.epochs,
            "per_device_train_batch_size": args.batch_size,
            "image_size": args.image_size,
            "pretrained": args.pretrained,
            "seed": seed,
            "output_dir": str(out),
            "overwrite_output_dir": True,
            "disable_tqdm": True,
        }))
        model = HubtuneForImageClassification.from_pretrained(out)
        results = evaluate_ood(model, data, OOD_SETS, scores=args.scores, seed=seed)
        (out / "ood_results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        all_results[spec] = results
        print(f"\n## {spec} (seed {seed})\n\n{format_ood_table(results)}\n", flush=True)
        if args.results:
            line = {"benchmark": "ood_demo", "method": spec, "seed": seed, "model": args.model, "optim": args.optim,
                    "pretrained": args.pretrained, "image_size": args.image_size, "epochs": args.epochs,
                    "lr": args.lr, "recipe": not (args.lr or args.optim) and args.pretrained,
                    "batch_size": args.batch_size, "seconds": round(time.perf_counter() - t0, 1),
                    "method_config": create_method(method, {"preset": preset or "paper"}).config.to_dict(),
                    "accuracy": results["in_distribution"]["accuracy"],
                    "metrics": {s: results["results"][s]["metrics"] for s in OOD_SETS}}
            Path(args.results).parent.mkdir(parents=True, exist_ok=True)
            with open(args.results, "a", encoding="utf-8") as f:
                f.write(json.dumps(line) + "\n")

    print(f"\n## Summary ({args.model}, {args.image_size} px, {args.epochs:g} epochs, seed {seed})\n")
    print(summary_table(all_results))
    return all_results


if __name__ == "__main__":
    main()
