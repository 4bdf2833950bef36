"""OOD detection after CE, Core-tuning and AdaptiveMix, each trained as ``hubtune finetune`` trains it; offline.

In-distribution: scikit-learn's digits of the classes ``--in-classes`` (default 0-4). For each seed the digits are
split as ``run_finetune`` splits them (``--eval-fraction`` held out, stratified by label, with the seed); the
training images of the kept classes train the model and their evaluation images are the in-distribution test set.
Three OOD sets:

* far-OOD ``skimage-photos``: random crops of scikit-image's bundled photos, and ``noise``: uniform noise, both made
  8x8 grayscale like the digits and as many as the in-distribution test images, so that only the content differs;
* near-OOD ``held-out-digits``: the evaluation images of the other classes (5-9): the same data set, unseen classes.

Training is ``run_finetune`` (the ``hubtune finetune`` job) given only the model, data, method, epochs, image size,
pretrained and seed: every other setting is the one ``hubtune finetune`` chooses, the method's training recipe for a
pretrained backbone and hubtune's general defaults (AdamW lr 1e-3, cosine, clipping 1.0, batch 64) for a randomly
initialised one. Each line of ``--results`` records the settings the run used (from its ``hubtune_run.json``). The
saved model is loaded back and scored with :func:`hubtune.ood.evaluate_ood`, the function ``hubtune ood`` runs.

    python examples/ood_demo.py                                      # resnet18 from scratch, 32 px, seed 0
    python examples/ood_demo.py --seeds 0 1 2 3 4 --results benchmarks/results/ood_r3.jsonl
    python examples/ood_demo.py --offline-pretrained --image-size 48 --seeds 0 1 2 3 4 \
        --results benchmarks/results/ood_r3.jsonl     # ImageNet MobileNetV2 built by benchmarks/fetch_offline_weights.py
    python examples/ood_demo.py --report benchmarks/results/ood_r3.jsonl --seeds 0 1 2 3 4   # tables only

A rerun with ``--results`` skips the (method, seed) runs that the file already holds with the same settings. The
same evaluation of one trained model from the command line (the demo saves its in-distribution data)::

    hubtune ood --model ood-demo/seed0/adaptivemix --dataset ood-demo/seed0/digits-0-4 --ood_dataset skimage-photos noise
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import datasets

from hubtune.data import load_image_classification_data
from hubtune.hub import read_run_info
from hubtune.modeling import HubtuneForImageClassification
from hubtune.ood import DEFAULT_SCORES, evaluate_ood, format_ood_table
from hubtune.ood.report import ood_result_entries, write_ood_results
from hubtune.training import parse_finetune_args, run_finetune

FAR_OOD = ("skimage-photos", "noise")
NEAR_OOD = "held-out-digits"


# --------------------------------------------------------------------------------------------- data


def split_classes(train: datasets.Dataset, evaluation: datasets.Dataset, label_names: list[str],
                  keep: list[int]) -> tuple[datasets.DatasetDict, datasets.Dataset]:
    """(train / test of the classes ``keep``, relabelled 0..len(keep)-1 in that order; the evaluation images of the
    other classes, without labels: the near-OOD set)."""
    relabel = {old: new for new, old in enumerate(keep)}
    features = train.features.copy()
    features["label"] = datasets.ClassLabel(names=[label_names[i] for i in keep])

    def kept(part: datasets.Dataset) -> datasets.Dataset:
        part = part.filter(lambda y: y in relabel, input_columns="label")
        return part.map(lambda y: {"label": relabel[y]}, input_columns="label", features=features)

    held_out = evaluation.filter(lambda y: y not in relabel, input_columns="label").remove_columns("label")
    return datasets.DatasetDict(train=kept(train), test=kept(evaluation)), held_out


def seed_data(args, seed: int) -> tuple[Path, datasets.Dataset]:
    """The seed's in-distribution data saved as train / test (what ``--dataset`` reads) and its near-OOD set."""
    data = load_image_classification_data("digits", eval_fraction=args.eval_fraction, seed=seed)
    in_data, held_out = split_classes(data.train, data.eval, data.label_names, args.in_classes)
    folder = Path(args.output_dir) / f"seed{seed}" / ("digits-" + "-".join(map(str, args.in_classes)))
    if not folder.is_dir():
        in_data.save_to_disk(str(folder))
    return folder, held_out


# --------------------------------------------------------------------------------------------- one run


def train(args, spec: str, seed: int, data_dir: Path) -> Path:
    """``run_finetune`` with only what the demo fixes given; the method's recipe or hubtune's defaults do the rest."""
    name, _, given = spec.partition("@")
    method, _, preset = name.partition(":")
    out = Path(args.output_dir) / f"seed{seed}" / spec.replace(":", "-").replace("@", "-").replace(",", "-")
    options = {"model": args.model, "pretrained": args.pretrained, "dataset": str(data_dir), "method": method,
               "num_train_epochs": args.epochs, "image_size": args.image_size, "seed": seed, "output_dir": str(out),
               "overwrite_output_dir": True, "disable_tqdm": True, "logging_steps": 50}
    if preset:
        options["preset"] = preset
    for item in filter(None, given.split(",")):  # options given over the recipe, e.g. ce@max_grad_norm=1.0
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--methods {spec}: write the options after @ as OPTION=VALUE[,OPTION=VALUE]")
        options[key] = value
    if args.max_steps:
        options["max_steps"] = args.max_steps
    run_finetune(*parse_finetune_args(options))
    return out


def score(args, out: Path, data_dir: Path, held_out: datasets.Dataset, seed: int) -> dict:
    model = HubtuneForImageClassification.from_pretrained(out)
    sets = {**{name: name for name in FAR_OOD}, NEAR_OOD: held_out}
    results = evaluate_ood(model, str(data_dir), sets, scores=args.scores, seed=seed)
    write_ood_results(out, ood_result_entries(results, model=str(out), seed=seed))
    return results


def result_line(args, spec: str, seed: int, out: Path, results: dict, seconds: float) -> dict:
    """One ``--results`` line: what identifies the setting, the settings and knobs the run used (its
    ``hubtune_run.json``), the evaluation accuracy after each epoch, and the OOD metrics."""
    info = read_run_info(out) or {}
    curve = [[round(e["epoch"], 2), round(e["eval_accuracy"], 4)] for e in info.get("log_history", [])
             if "eval_accuracy" in e]
    return {"benchmark": "ood_demo", "version": 2, "method": spec, "seed": seed, "model": args.model,
            "pretrained": args.pretrained, "image_size": args.image_size, "epochs": args.epochs,
            "max_steps": args.max_steps, "in_classes": args.in_classes, "eval_fraction": args.eval_fraction,
            "settings": info.get("hyperparameters", {}), "eval_accuracy_by_epoch": curve,
            "seconds": round(seconds, 1), "accuracy": results["in_distribution"]["accuracy"],
            "num_images": {"in": results["in_distribution"]["num_images"],
                           **{s: r["num_images"] for s, r in results["results"].items()}},
            "metrics": {s: r["metrics"] for s, r in results["results"].items()}}


# --------------------------------------------------------------------------------------------- results file


def _matches(args, line: dict) -> bool:
    return (line.get("benchmark") == "ood_demo" and line.get("version") == 2 and line["model"] == args.model
            and line["pretrained"] == args.pretrained and line["image_size"] == args.image_size
            and line["epochs"] == args.epochs and line.get("max_steps") == args.max_steps
            and line["in_classes"] == args.in_classes and line["eval_fraction"] == args.eval_fraction)


def read_lines(args, paths) -> list[dict]:
    """The lines of ``paths`` run with the options' setting (model, pretrained, size, epochs, classes, split)."""
    lines = []
    for path in paths:
        if Path(path).is_file():
            for text in Path(path).read_text(encoding="utf-8").splitlines():
                line = json.loads(text) if text.strip() else None
                if line is not None and _matches(args, line):
                    lines.append(line)
    return lines


def label(line: dict) -> str:
    """A run's row name: Core-tuning's names its eta, whose default has changed before."""
    eta = line.get("settings", {}).get("eta")
    return f"{line['method']} eta={eta:g}" if eta is not None else line["method"]


# --------------------------------------------------------------------------------------------- tables


def _ms(values) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.fmean(values):.1f} ± {100 * sd:.1f}"


def seeds_table(by_label: dict[str, list[dict]], scores: list[str], sets: list[str]) -> str:
    """Mean ± std over seeds (in %) of accuracy, AUROC and FPR@95TPR per method, score and OOD set."""
    header = "| method | seeds | accuracy | score | " + " | ".join(f"AUROC {s} ↑ | FPR95 {s} ↓" for s in sets) + " |"
    lines = [header, "|" + "---|" * (4 + 2 * len(sets))]
    for name, runs in by_label.items():
        accuracy = _ms([r["accuracy"] for r in runs])
        for score_name in scores:
            cells = []
            for s in sets:
                cells += [_ms([r["metrics"][s][score_name]["auroc"] for r in runs]),
                          _ms([r["metrics"][s][score_name]["fpr_at_95_tpr"] for r in runs])]
            lines.append(f"| {name} | {len(runs)} | {accuracy} | {score_name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def wins_table(by_label: dict[str, list[dict]], scores: list[str], sets: list[str], baseline: str = "ce") -> str:
    """Per method, score and OOD set: in how many seeds the AUROC beat the baseline's of the same seed."""
    base = {r["seed"]: r for r in by_label.get(baseline, [])}
    lines = ["| method | score | " + " | ".join(f"AUROC wins {s}" for s in sets) + " |", "|" + "---|" * (2 + len(sets))]
    for name, runs in by_label.items():
        paired = [r for r in runs if r["seed"] in base]
        if name == baseline or not paired:
            continue
        for score_name in scores:
            cells = [f"{sum(r['metrics'][s][score_name]['auroc'] > base[r['seed']]['metrics'][s][score_name]['auroc'] for r in paired)}/{len(paired)}"
                     for s in sets]
            lines.append(f"| {name} | {score_name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(args, lines: list[dict]) -> str:
    seeds = set(args.seeds)
    by_label: dict[str, list[dict]] = {}
    for line in lines:
        if line["seed"] in seeds:
            by_label.setdefault(label(line), []).append(line)
    if not by_label:
        return "No results with these settings."
    sets = [*FAR_OOD, NEAR_OOD]
    return (seeds_table(by_label, args.scores, sets) + "\n\nAUROC wins against CE of the same seed:\n\n"
            + wins_table(by_label, args.scores, sets))


# --------------------------------------------------------------------------------------------- main


def run(args) -> None:
    done = {(line["method"], line["seed"]) for line in read_lines(args, [args.results] if args.results else [])}
    for seed in args.seeds:
        data_dir, held_out = seed_data(args, seed)
        for spec in args.methods:
            if (spec, seed) in done:
                print(f"{spec}, seed {seed}: already in {args.results}; skipped", flush=True)
                continue
            started = time.perf_counter()
            out = train(args, spec, seed, data_dir)
            results = score(args, out, data_dir, held_out, seed)
            print(f"\n## {spec} (seed {seed})\n\n{format_ood_table(results)}\n", flush=True)
            if args.results:
                line = result_line(args, spec, seed, out, results, time.perf_counter() - started)
                Path(args.results).parent.mkdir(parents=True, exist_ok=True)
                with open(args.results, "a", encoding="utf-8") as f:
                    f.write(json.dumps(line) + "\n")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet18", help="any timm / transformers backbone name")
    p.add_argument("--pretrained", action="store_true")
    p.add_argument("--offline-pretrained", action="store_true",
                   help="the ImageNet MobileNetV2 built offline by benchmarks/fetch_offline_weights.py (implies --pretrained)")
    p.add_argument("--methods", nargs="+", default=["ce", "core-tuning", "adaptivemix"],
                   help="METHOD, METHOD:PRESET or either with @OPTION=VALUE[,...] (finetune options given over the "
                        "recipe), e.g. adaptivemix:reference or ce@max_grad_norm=1.0")
    p.add_argument("--epochs", type=float, default=30)
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (quick checks)")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--in-classes", type=int, nargs="+", default=[0, 1, 2, 3, 4],
                   help="the digits trained on; the others' evaluation images are the near-OOD set")
    p.add_argument("--eval-fraction", type=float, default=0.5, help="of the digits, held out for evaluation")
    p.add_argument("--scores", nargs="+", default=list(DEFAULT_SCORES))
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--results", default=None, help="append one JSON line per method and seed to this file")
    p.add_argument("--output-dir", default="ood-demo")
    p.add_argument("--report", nargs="+", default=None, metavar="JSONL",
                   help="only print the mean ± std and wins tables of the lines in these files that match the "
                        "options (model, --pretrained, --image-size, --epochs, --in-classes, --eval-fraction, --seeds)")
    args = p.parse_args(argv)
    if args.offline_pretrained:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
        from fetch_offline_weights import ensure_offline_weights

        args.model, args.pretrained = f"local-dir:{ensure_offline_weights(verbose=False)}", True
    if args.report:
        print(report(args, read_lines(args, args.report)))
        return
    run(args)
    if args.results:
        print(report(args, read_lines(args, [args.results])))


if __name__ == "__main__":
    main()
