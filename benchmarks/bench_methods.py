"""CE vs Core-tuning vs AdaptiveMix with few labels, on real pretrained weights, offline, over seeds.

Setup (issue 10): scikit-learn's digits; k labelled images per class for training (k = 10 and 50), every
other image held out for testing; timm's ``mobilenetv2_100`` with torchvision's ImageNet weights (built
offline by ``benchmarks/fetch_offline_weights.py``) at 48 px; SGD with Nesterov momentum 0.9 and a cosine
schedule; batch 32. Everything goes through hubtune's public API:
``HubtuneForImageClassification.from_backbone`` + ``HubtuneTrainer`` (``transformers.TrainingArguments``).

For each seed the same labelled subset, the same initial classifier and the same data order are used by
every method (the seed fixes them), so per-seed differences compare like with like; with
``--deterministic`` (the default) ``torch.use_deterministic_algorithms(True)`` also makes the row indexing
in Core-tuning's backward reproducible on CPU.

    python benchmarks/bench_methods.py                        # k = 10 and 50, 10 seeds, 30 epochs
    python benchmarks/bench_methods.py --k 10 --seeds 2 --lr 0.01 0.03   # learning-rate check
    python benchmarks/bench_methods.py --sweep-eta            # eta x warm-up sweep of Core-tuning, k = 10
    python benchmarks/bench_methods.py --task digits-even --methods ce core-tuning --eta 0.1

Each run appends a JSON line to ``--output`` (default ``benchmarks/results/methods.jsonl``); a Markdown
table of mean ± std accuracy, wins against CE (same seed) and time relative to CE is printed at the end.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import TrainingArguments
from transformers.trainer_callback import PrinterCallback

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import paired_sign_flip_p, time_interleaved  # noqa: E402
from fetch_offline_weights import ensure_offline_weights  # noqa: E402

from hubtune.data import build_transforms, load_digits_dataset  # noqa: E402
from hubtune.methods.core_tuning import CoreTuningConfig  # noqa: E402
from hubtune.modeling import HubtuneForImageClassification  # noqa: E402
from hubtune.training import HubtuneTrainer  # noqa: E402
from hubtune.training.callbacks import LossWeightWarmupCallback  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("ce", "core-tuning", "adaptivemix")
TASKS = {
    # name: (classes kept, description)
    "digits": (tuple(range(10)), "digits, 10 classes"),
    "digits-2": ((3, 8), "digits 3 vs 8, 2 classes"),
    "digits-5": ((0, 2, 4, 6, 8), "digits 0/2/4/6/8, 5 classes"),
}


class _Images(torch.utils.data.Dataset):
    """PIL images + labels, transformed on the fly (the training transform is random)."""

    def __init__(self, images, labels, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return {"pixel_values": self.transform(self.images[i]), "labels": int(self.labels[i])}


def split_task(task: str, k: int, seed: int):
    """k images per class for training (drawn with ``seed``), the rest for testing."""
    classes, _ = TASKS[task]
    ds = load_digits_dataset()
    images, labels = list(ds["image"]), np.asarray(ds["label"])
    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for new, c in enumerate(classes):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        train_idx += [(i, new) for i in idx[:k]]
        test_idx += [(i, new) for i in idx[k:]]
    pick = lambda pairs: ([images[i] for i, _ in pairs], [n for _, n in pairs])  # noqa: E731
    return pick(train_idx), pick(test_idx), {i: str(c) for i, c in enumerate(classes)}


@torch.no_grad()
def accuracy(model, images: torch.Tensor, labels: torch.Tensor, batch: int = 256) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(labels), batch):
        logits = model(pixel_values=images[i:i + batch]).logits
        correct += int((logits.argmax(-1) == labels[i:i + batch]).sum())
    return correct / len(labels)


def run_one(args, method: str, k: int, seed: int, method_config: dict, tag: str) -> dict:
    torch.manual_seed(seed)
    (tr_img, tr_lab), (te_img, te_lab), id2label = split_task(args.task, k, seed)
    model = HubtuneForImageClassification.from_backbone(
        args.backbone, id2label=id2label, pretrained=True, method=method, method_config=method_config,
        image_size=args.image_size,
    )
    pre = model.preprocessing
    train_set = _Images(tr_img, tr_lab, build_transforms(pre, train=True))
    eval_t = build_transforms(pre, train=False)
    test_x = torch.stack([eval_t(im) for im in te_img])
    test_y = torch.tensor(te_lab)
    callbacks = []
    if model.method.warmup_ratio() > 0:
        callbacks.append(LossWeightWarmupCallback(model.method.weight_attribute, warmup_ratio=model.method.warmup_ratio()))
    with tempfile.TemporaryDirectory() as out:
        targs = TrainingArguments(
            output_dir=out, num_train_epochs=args.epochs, per_device_train_batch_size=args.batch_size,
            learning_rate=args.lr_value, optim="sgd", optim_args="momentum=0.9,nesterov=True",
            weight_decay=args.weight_decay, lr_scheduler_type="cosine", seed=seed, data_seed=seed,
            logging_steps=max(1, args.logging_steps), save_strategy="no", eval_strategy="no", report_to=[],
            use_cpu=True, dataloader_num_workers=0, disable_tqdm=True, remove_unused_columns=False,
            dataloader_drop_last=False,
        )
        trainer = HubtuneTrainer(model=model, args=targs, train_dataset=train_set, callbacks=callbacks)
        trainer.remove_callback(PrinterCallback)  # keep stdout to one line per run
        t0 = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - t0
        logs = [h for h in trainer.state.log_history if "loss" in h]
    acc = accuracy(model, test_x, test_y)
    # balance of the terms over the run: eta x contrastive / CE, from the Trainer's component logs
    balance = None
    if logs and "contrastive_loss" in logs[0]:
        ratios = [h.get("eta", method_config.get("eta", 0.1)) * h["contrastive_loss"] / max(h["ce_loss"], 1e-8) for h in logs]
        balance = {"first": round(ratios[0], 4), "mean": round(statistics.fmean(ratios), 4), "last": round(ratios[-1], 4)}
    return {
        "benchmark": "methods_few_labels", "tag": tag, "task": args.task, "backbone": args.backbone,
        "image_size": args.image_size, "method": method, "method_config": method_config, "k": k, "seed": seed,
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr_value, "weight_decay": args.weight_decay,
        "optimizer": "sgd nesterov 0.9 cosine", "deterministic": args.deterministic, "threads": torch.get_num_threads(),
        "train_images": len(tr_lab), "test_images": len(te_lab), "accuracy": round(acc, 5),
        "train_seconds": round(train_s, 2), "steps": trainer.state.global_step, "balance": balance,
        "final_logs": logs[-1] if logs else None,
    }


def _ms(values):
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.fmean(values):.2f} ± {100 * sd:.2f}"


def table(rows: list[dict], baseline_key) -> str:
    """Rows grouped by (k, label); wins and time ratio against the baseline group with the same k and seed."""
    groups: dict[tuple, dict[int, dict]] = {}
    for r in rows:
        groups.setdefault((r["k"], r["label"]), {})[r["seed"]] = r
    out = ["| k | run | seeds | accuracy % (mean ± std) | Δ vs CE (points) | paired p | wins vs CE | time / CE | "
           "eta·con/CE |", "|---|---|---|---|---|---|---|---|---|"]
    for (k, label), by_seed in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] != baseline_key, kv[0][1])):
        base = groups.get((k, baseline_key), {})
        seeds = sorted(by_seed)
        accs = [by_seed[s]["accuracy"] for s in seeds]
        paired = [s for s in seeds if s in base]
        if label == baseline_key or not paired:
            delta, p, wins, ratio = "-", "-", "-", "1.00" if label == baseline_key else "-"
        else:
            diffs = [by_seed[s]["accuracy"] - base[s]["accuracy"] for s in paired]
            delta = f"{100 * statistics.fmean(diffs):+.2f}"
            p_value = paired_sign_flip_p(diffs)
            p = "-" if p_value is None else f"{p_value:.2f}"
            wins = f"{sum(d > 0 for d in diffs)}/{len(paired)}" + (f" (≥+3: {sum(d >= 0.03 for d in diffs)})")
            ratio = f"{statistics.median(by_seed[s]['train_seconds'] / base[s]['train_seconds'] for s in paired):.2f}"
        bal = [by_seed[s]["balance"]["mean"] for s in seeds if by_seed[s].get("balance")]
        out.append(f"| {k} | {label} | {len(seeds)} | {_ms(accs)} | {delta} | {p} | {wins} | {ratio} | "
                   + (f"{statistics.fmean(bal):.2f} |" if bal else "- |"))
    return "\n".join(out)


def time_steps(args, repeats: int = 20, warmup: int = 3) -> dict:
    """Interleaved optimizer-step timing (CE, Core-tuning, AdaptiveMix, CE, ...) on one fixed batch: the ratio to
    CE is the median of per-repetition ratios, so a shared machine's load hits every method alike."""
    torch.manual_seed(0)
    steps = {}
    for method in args.methods:
        cfg = {"preset": args.preset, **({"eta": args.eta} if args.eta is not None and method == "core-tuning" else {})}
        model = HubtuneForImageClassification.from_backbone(
            args.backbone, num_labels=10, pretrained=True, method=method, method_config=cfg if method != "ce" else {},
            image_size=args.image_size).train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True)

        def step(x, y, model=model, opt=opt):
            model(pixel_values=x, labels=y).loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        steps[method] = step
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
    y = torch.arange(args.batch_size) % 10
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
    p.add_argument("--k", type=int, nargs="+", default=[10, 50], help="labelled images per class")
    p.add_argument("--seeds", type=int, default=10, help="number of seeds (0..N-1)")
    p.add_argument("--seed-offset", type=int, default=0, help="first seed")
    p.add_argument("--seeds-k50", type=int, default=None, help="fewer seeds for k >= 50 (time)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--task", default="digits", choices=sorted(TASKS))
    p.add_argument("--epochs", type=float, default=30)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, nargs="+", default=[0.01], help="SGD learning rate(s)")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--image-size", type=int, default=48)
    p.add_argument("--eta", type=float, default=None, help="Core-tuning eta (default: hubtune's default)")
    p.add_argument("--eta-warmup-ratio", type=float, default=None)
    p.add_argument("--preset", default="paper")
    p.add_argument("--sweep-eta", action="store_true",
                   help="Core-tuning at k = 10 over eta in --etas, eta_warmup_ratio 0 and 0.1, plus CE")
    p.add_argument("--etas", type=float, nargs="+", default=[0.01, 0.03, 0.1, 0.3, 1.0])
    p.add_argument("--warmups", type=float, nargs="+", default=[0.0, 0.1])
    p.add_argument("--backbone", default=None, help="default: local-dir: the offline ImageNet MobileNetV2 folder")
    p.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--logging-steps", type=int, default=5)
    p.add_argument("--output", default=str(RESULTS / "methods.jsonl"))
    p.add_argument("--tag", default=None, help="label stored with each JSON line")
    p.add_argument("--exclude", nargs="+", default=[], help="run labels to skip (e.g. rows already measured)")
    p.add_argument("--relabel", nargs="+", default=[], metavar="OLD=NEW",
                   help="with --report: rename runs, e.g. to merge the default Core-tuning rows into a sweep")
    p.add_argument("--time-steps", action="store_true",
                   help="only time interleaved training steps of each method (median ratio to CE) and exit")
    p.add_argument("--report", nargs="+", default=None, metavar="JSONL",
                   help="only print the table of the rows in these files (filtered by --k, --task, --tag, seeds)")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.deterministic:
        torch.use_deterministic_algorithms(True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if args.backbone is None:
        args.backbone = f"local-dir:{ensure_offline_weights()}"
    tag = args.tag or ("sweep-eta" if args.sweep_eta else "methods")
    if args.time_steps:
        result = time_steps(args)
        print(json.dumps(result))
        with open(args.output, "a", encoding="utf-8") as f:
            f.write(json.dumps(result) + "\n")
        return 0

    # (label, method, config) runs
    base_cfg = {"preset": args.preset}
    if args.eta is not None:
        base_cfg["eta"] = args.eta
    if args.eta_warmup_ratio is not None:
        base_cfg["eta_warmup_ratio"] = args.eta_warmup_ratio
    if args.sweep_eta:
        args.k = args.k if args.k != [10, 50] else [10]
        runs = [("ce", "ce", {})]
        runs += [(f"core-tuning eta={e:g} warmup={w:g}", "core-tuning", {"preset": args.preset, "eta": e, "eta_warmup_ratio": w})
                 for w in args.warmups for e in args.etas]
    else:
        # Core-tuning's label names its eta (the default changed from 0.1 to 0.01 with the sweep)
        eta = args.eta if args.eta is not None else CoreTuningConfig().eta
        runs = [(f"{m} eta={eta:g}" if m == "core-tuning" else m, m,
                 dict(base_cfg) if m == "core-tuning" else {"preset": args.preset} if m == "adaptivemix" else {})
                for m in args.methods]
        if "ce" not in args.methods:
            runs.insert(0, ("ce", "ce", {}))

    if args.report:
        rows = [json.loads(line) for f in args.report for line in open(f, encoding="utf-8") if line.strip()]
        seeds = range(args.seed_offset, args.seed_offset + args.seeds)
        rows = [r for r in rows if r.get("benchmark") == "methods_few_labels" and r["k"] in args.k and r["task"] == args.task and r["seed"] in seeds
                and (args.tag is None or r["tag"] in args.tag.split(","))]
        relabel = dict(item.split("=", 1) for item in args.relabel)
        for r in rows:
            r.setdefault("label", r["method"])
            r["label"] = relabel.get(r["label"], r["label"])
        print(table(rows, "ce"))
        return 0
    runs = [r for r in runs if r[0] not in args.exclude]
    rows = []
    t_all = time.perf_counter()
    for lr in args.lr:
        args.lr_value = lr
        for k in args.k:
            n = args.seeds if (k < 50 or args.seeds_k50 is None) else args.seeds_k50
            for seed in range(args.seed_offset, args.seed_offset + n):
                for label, method, cfg in runs:
                    r = run_one(args, method, k, seed, cfg, tag)
                    r["label"] = label + (f" lr={lr:g}" if len(args.lr) > 1 else "")
                    rows.append(r)
                    RESULTS.mkdir(exist_ok=True)
                    with open(args.output, "a", encoding="utf-8") as f:
                        f.write(json.dumps(r) + "\n")
                    bal = f" eta*con/ce={r['balance']['mean']}" if r["balance"] else ""
                    print(f"[{time.perf_counter() - t_all:7.1f}s] k={k} seed={seed} {r['label']}: acc {r['accuracy']:.4f} "
                          f"train {r['train_seconds']:.1f}s{bal}", flush=True)
    print()
    print(f"{TASKS[args.task][1]}, {args.backbone.split('/')[-1]} pretrained, {args.image_size} px, {args.epochs:g} epochs, "
          f"batch {args.batch_size}, SGD nesterov lr {args.lr}, wd {args.weight_decay}, cosine; "
          f"deterministic={args.deterministic}; wall {time.perf_counter() - t_all:.0f}s")
    for lr in args.lr:
        sub = [r for r in rows if r["lr"] == lr]
        print(table(sub, "ce" + (f" lr={lr:g}" if len(args.lr) > 1 else "")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
