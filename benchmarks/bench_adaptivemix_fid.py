"""Plain GAN vs AdaptiveMix: FID / KID on pretrained ImageNet MobileNetV2 features, over seeds, offline.

Both variants train the same architecture for the same number of steps from the same seed (same initial
weights, data order and latents); only ``adaptivemix`` (and the AdaptiveMix knobs given) differ. Training sets:
the full digits set (1,797 images) and its first ``--limited`` images (default 200, the limited-data regime
AdaptiveMix targets). Each final (EMA) generator draws ``--num-fake`` images that are compared with ALL 1,797
digits (the real features are computed once), through ``hubtune.gan.compute_fid_kid`` and the ``local-dir:``
extractor (timm ``mobilenetv2_100`` with torchvision's ImageNet weights, built offline by
``benchmarks/fetch_offline_weights.py``, here at 64 px input by default, ``--extractor-size``).

The discriminator's mean real / fake logits are read from each run's ``logs.jsonl``: their gap at the end shows
whether the plain discriminator had started to overfit (separate the two) -- the regime where AdaptiveMix is
meant to help.

    python benchmarks/bench_adaptivemix_fid.py                        # dcgan 32 px, 1000 steps, full + 200 images, 3 seeds
    python benchmarks/bench_adaptivemix_fid.py --image-size 16 --sets 200 --steps 1000 2000 4000 8000 \
        --variants plain ada ada-w0.1                                  # one run per seed, FID at four lengths
    python benchmarks/bench_adaptivemix_fid.py --image-size 16 --sets 200 --d-norm none --seeds 6 --steps 4000 8000 \
        --variants plain ada ada-real ada-ref plain-r1-1 ada-r1-1

Variants: ``plain`` (no AdaptiveMix), ``ada`` (paper preset, weight 1: hubtune's default before the benchmark),
``ada-w<W>`` (weight W; ``ada-w0.1`` is hubtune's default now), ``ada-real`` (only the real batch is mixed),
``ada-ref`` (the reference preset), ``r1-<G>`` suffix on any variant (R1 gamma G), e.g. ``plain-r1-1``.
``--d-norm none`` removes the DCGAN discriminator's spectral normalisation, so that it overfits 200 images.
Appends one JSON line per run to ``--output`` (default ``benchmarks/results/adaptivemix_fid.jsonl``) and prints
a Markdown table (mean ± std, wins against plain of the same seed, time ratio).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import paired_sign_flip_p  # noqa: E402
from fetch_offline_weights import ensure_offline_weights  # noqa: E402

from hubtune.gan import GANTrainingConfig, Generator, build_feature_extractor, compute_fid_kid, load_image_set, train_gan  # noqa: E402
from hubtune.gan.checkpoint import load_module  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


class _Features(nn.Module):
    """Identity 'extractor' over precomputed features, so real features are extracted once."""

    def __init__(self, name: str, num_features: int, comparable: bool):
        super().__init__()
        self.name, self.num_features, self.comparable = name, num_features, comparable

    def forward(self, x):
        return x


@torch.no_grad()
def features(extractor, images: torch.Tensor, batch: int = 100) -> torch.Tensor:
    return torch.cat([extractor(images[i:i + batch]) for i in range(0, len(images), batch)])


def variant_config(name: str) -> dict:
    cfg: dict = {}
    parts = name.split("-")
    if "r1" in parts:
        i = parts.index("r1")
        cfg["r1_gamma"] = float(parts[i + 1])
        parts = parts[:i] + parts[i + 2:]
    base, rest = parts[0], parts[1:]
    if base == "plain":
        cfg["adaptivemix"] = False
    elif base == "ada":
        cfg.update(adaptivemix=True, adaptivemix_shrinkage_weight=1.0)  # weight 1 unless -w<W> says otherwise (hubtune's default is 0.1)
        for r in rest:
            if r.startswith("w"):
                cfg["adaptivemix_shrinkage_weight"] = float(r[1:])
            elif r == "ref":
                cfg["adaptivemix_preset"] = "reference"
            elif r == "ps":
                cfg["adaptivemix_per_sample"] = True
            elif r == "real":
                cfg["adaptivemix_mix_fakes"] = False
            else:
                raise SystemExit(f"unknown variant part {r!r} in {name!r}")
    else:
        raise SystemExit(f"unknown variant {name!r}")
    return cfg


def run(args, variant: str, images: int | None, seed: int, real_feats: torch.Tensor, extractor) -> list[dict]:
    """Train one run for max(--steps) steps; FID/KID of the EMA generator at each of --steps (from checkpoints)."""
    eval_steps = sorted(set(args.steps))
    every = math.gcd(*eval_steps)
    with tempfile.TemporaryDirectory() as out:
        config = GANTrainingConfig.from_options(
            dataset="digits", output_dir=out, arch=args.arch, image_size=args.image_size, max_images=images,
            max_steps=eval_steps[-1], per_device_train_batch_size=args.batch_size, seed=seed, eval_num_samples=0,
            log_every=args.log_every, sample_every=10**9, checkpoint_every=every,
            keep_checkpoints=eval_steps[-1] // every, progress_bar=False, d_norm=args.d_norm,
            **({"lr_g": args.lr, "lr_d": args.lr} if args.lr else {}), **variant_config(variant),
        )
        t0 = time.perf_counter()
        result = train_gan(config)
        seconds = time.perf_counter() - t0
        logs = [json.loads(line) for line in (Path(out) / "logs.jsonl").read_text().splitlines() if line.strip()]
        generator = Generator.from_pretrained(out)
        fakes = {}
        for steps in eval_steps:
            load_module(generator, Path(out) / f"checkpoint-{steps}" / "ema.safetensors")
            fakes[steps] = generator.generate(args.num_fake, seed=seed + 1, batch_size=250)
    ident = _Features(extractor.name, extractor.num_features, getattr(extractor, "comparable", True))
    rows = []
    for steps, fake in fakes.items():
        metrics = compute_fid_kid(real_feats, features(extractor, fake), ident, batch_size=250)
        # the discriminator's logits over the last 10 % of the steps before this evaluation
        tail = [e for e in logs if "logits_real" in e and steps - max(1, steps // 10) < e["step"] <= steps]

        def mean(key, tail=tail):
            vals = [e[key] for e in tail if key in e]
            return round(statistics.fmean(vals), 4) if vals else None

        rows.append({
            "benchmark": "adaptivemix_fid", "variant": variant, "config": variant_config(variant), "arch": args.arch,
            "image_size": args.image_size, "d_norm": args.d_norm, "lr": args.lr, "train_images": images or 1797,
            "steps": steps, "seed": seed, "batch_size": args.batch_size, "fid": round(metrics["fid"], 3),
            "kid_mean": round(metrics["kid_mean"], 5), "kid_std": round(metrics["kid_std"], 5),
            "feature_extractor": metrics["feature_extractor"], "comparable": metrics["comparable"],
            "num_fake": args.num_fake, "num_real": int(real_feats.shape[0]),
            # training time up to this evaluation, pro rata of the whole run's (steps cost the same)
            "train_seconds": round(seconds * steps / result.steps, 1), "threads": torch.get_num_threads(),
            "end_logits_real": mean("logits_real"), "end_logits_fake": mean("logits_fake"),
            "end_loss_d_adversarial": mean("loss_d_adversarial"),
            "end_shrinkage_loss_real": mean("shrinkage_loss_real"),
        })
    return rows


def _ms(values, fmt="{:.1f}"):
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{fmt.format(statistics.fmean(values))} ± {fmt.format(sd)}"


def table(rows: list[dict]) -> str:
    out = ["| px | D norm | train images | steps | variant | seeds | FID ↓ | KID×1000 ↓ | Δ FID vs plain | paired p | "
           "FID wins vs plain | time / plain | D logits real / fake (last 10 % of steps) |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple, dict[int, dict]] = {}
    for r in rows:
        key = (r["image_size"], r.get("d_norm", "spectral"), r["train_images"], r["steps"])
        groups.setdefault(key + (r["variant"],), {})[r["seed"]] = r
    for key, by_seed in sorted(groups.items(), key=lambda kv: (kv[0][:4], kv[0][4] != "plain", kv[0][4])):
        variant = key[4]
        base = groups.get(key[:4] + ("plain",), {})
        seeds = sorted(by_seed)
        paired = [s for s in seeds if s in base]
        if variant == "plain" or not paired:
            delta, p, wins, ratio = "-", "-", "-", "1.00" if variant == "plain" else "-"
        else:
            diffs = [by_seed[s]["fid"] - base[s]["fid"] for s in paired]
            delta = f"{statistics.fmean(diffs):+.1f}"
            p_value = paired_sign_flip_p(diffs)
            p = "-" if p_value is None else f"{p_value:.2f}"
            wins = f"{sum(by_seed[s]['fid'] < base[s]['fid'] for s in paired)}/{len(paired)}"
            ratio = f"{statistics.median(by_seed[s]['train_seconds'] / base[s]['train_seconds'] for s in paired):.2f}"
        lr = [by_seed[s]["end_logits_real"] for s in seeds if by_seed[s]["end_logits_real"] is not None]
        lf = [by_seed[s]["end_logits_fake"] for s in seeds if by_seed[s]["end_logits_fake"] is not None]
        logits = f"{statistics.fmean(lr):+.2f} / {statistics.fmean(lf):+.2f}" if lr and lf else "-"
        out.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {variant} | {len(seeds)} | "
                   f"{_ms([by_seed[s]['fid'] for s in seeds])} | "
                   f"{_ms([1000 * by_seed[s]['kid_mean'] for s in seeds], '{:.2f}')} | {delta} | {p} | {wins} | {ratio} | "
                   f"{logits} |")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", nargs="+", default=["full", "200"], help="'full' and/or a number of training images")
    p.add_argument("--variants", nargs="+", default=["plain", "ada"])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--seed-offset", type=int, default=0)
    p.add_argument("--steps", type=int, nargs="+", default=[1000],
                   help="evaluate at these steps of one run per seed and variant (e.g. 1000 4000 8000)")
    p.add_argument("--d-norm", default="spectral", choices=["spectral", "batch", "none"])
    p.add_argument("--lr", type=float, default=None, help="Adam lr of G and D (default hubtune's 2e-4)")
    p.add_argument("--arch", default="dcgan")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-fake", type=int, default=1000)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--feature-extractor", default=None, help="default: local-dir: the offline ImageNet MobileNetV2")
    p.add_argument("--extractor-size", type=int, default=64,
                   help="input size of the extractor (default 64 px: 12x cheaper than MobileNetV2's 224 on CPU; the "
                        "size is part of the recorded extractor name, 0 = the network's own)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--output", default=str(RESULTS / "adaptivemix_fid.jsonl"))
    p.add_argument("--report", nargs="+", default=None, metavar="JSONL", help="only print the table of these files")
    args = p.parse_args(argv)
    if args.report:
        rows = [json.loads(line) for f in args.report for line in open(f, encoding="utf-8") if line.strip()]
        print(table(rows))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    name = args.feature_extractor or f"local-dir:{ensure_offline_weights()}"
    extractor = build_feature_extractor(name).eval()
    if args.extractor_size:
        extractor.input_size = args.extractor_size
        extractor.name = f"{extractor.name}@{args.extractor_size}px"
    data = load_image_set("digits", image_size=args.image_size)
    t_all = time.perf_counter()
    real_feats = features(extractor, (data.batch(list(range(len(data)))) + 1) / 2)
    print(f"real features: {tuple(real_feats.shape)} with {extractor.name} in {time.perf_counter() - t_all:.0f}s", flush=True)
    rows = []
    for s in args.sets:
        images = None if s == "full" else int(s)
        for seed in range(args.seed_offset, args.seed_offset + args.seeds):
            for variant in args.variants:
                new = run(args, variant, images, seed, real_feats, extractor)
                rows.extend(new)
                Path(args.output).parent.mkdir(parents=True, exist_ok=True)
                with open(args.output, "a", encoding="utf-8") as f:
                    f.writelines(json.dumps(r) + "\n" for r in new)
                for r in new:
                    print(f"[{time.perf_counter() - t_all:7.0f}s] {r['train_images']} images, {r['steps']} steps, seed "
                          f"{seed}, {variant}: FID {r['fid']:.1f} KID {r['kid_mean']:.4f} train {r['train_seconds']:.0f}s "
                          f"logits real/fake {r['end_logits_real']}/{r['end_logits_fake']}", flush=True)
    print(f"\nDigits {args.arch} {args.image_size} px batch {args.batch_size}; FID/KID of {args.num_fake} samples vs all "
          f"1,797 digits on {extractor.name}; wall {time.perf_counter() - t_all:.0f}s\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
