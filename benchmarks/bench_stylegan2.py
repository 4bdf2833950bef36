"""Cost of AdaptiveMix on a StyleGAN2 discriminator step (minibatch-stddev: the case that needs a third pass).

One discriminator step = fakes from G (no graph) + discriminator losses on a real and a fake batch + backward +
Adam step. The variants, timed in one run with interleaved repetitions (median reported):

    plain          D(real), D(fake): no AdaptiveMix
    ada-3pass      hubtune's "paper" preset, passes chosen automatically: the discriminator declares
                   ``batch_coupled`` (minibatch-stddev), so f(x[p]) is computed (no graph): f(x), f(x~), f(x[p])
    ada-group      the same maths with 2 passes: the partner permutation moves whole minibatch-stddev groups
                   (``hubtune.gan.group_preserving_permutation``), under which f(x[p]) == f(x)[p] bit for bit, so the
                   third pass is skipped exactly

Whether the mixed batch can reuse the clean batch's minibatch-stddev statistics: no, not exactly. The statistic
is the std over a group of the 4x4 activations, and the activations of ``lam x + (1 - lam) x[p]`` are not a
function of the clean activations (the layers before the statistic are non-linear), so the mixed pass must
compute its own. What CAN be made exact is the third pass, the partner features f(x[p]): with a group-preserving
permutation the permuted batch has the same groups, and every other layer is per-sample. ``ada-group`` measures
that; each sample's partner is still a random image of the (shuffled) batch, from its own slot.

Usage::

    python benchmarks/bench_stylegan2.py --output benchmarks/results/cpu.jsonl     # CPU, 32 px, preset small
    python benchmarks/bench_stylegan2.py --device cuda --bf16 --preset paper256 --image-size 256 --batch-size 32
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import time_interleaved  # noqa: E402

from hubtune.gan.augment import DiffAugment
from hubtune.gan.stylegan2 import build_stylegan2, group_preserving_permutation
from hubtune.losses.adaptive_mix import AdaptiveMix, MixDraws, sample_mix_coefficients

VARIANTS = ("plain", "ada-3pass", "ada-group")


def make_step(variant, generator, discriminator, optimizer, real, device, autocast, r1_gamma=0.0, augment=None):
    ada = None if variant == "plain" else AdaptiveMix(feature_passes=2 if variant == "ada-group" else "auto")
    group = discriminator.mbstd.group_size
    passes = []

    def regularise(images):
        draws = None
        if variant == "ada-group":
            lam, _ = sample_mix_coefficients(images.shape[0], device=device)
            draws = MixDraws(lam, group_preserving_permutation(images.shape[0], group, device=device))
        out = ada(discriminator, images, draws)
        passes.append(out.feature_passes)
        return out

    def step():
        with torch.no_grad(), autocast():
            fake = generator(torch.randn(real.shape[0], generator.latent_dim, device=device)).float()
        real.requires_grad_(r1_gamma > 0)
        real_in, fake_in = (augment(real), augment(fake)) if augment is not None else (real, fake)
        with autocast():
            if ada is None:
                real_logits, fake_logits, extra = discriminator(real_in), discriminator(fake_in), 0.0
            else:
                out_r, out_f = regularise(real_in), regularise(fake_in)
                real_logits, fake_logits, extra = out_r.logits, out_f.logits, out_r.loss + out_f.loss
        loss = F.softplus(-real_logits.float()).mean() + F.softplus(fake_logits.float()).mean() + extra
        if r1_gamma > 0:
            (grad,) = torch.autograd.grad(real_logits.float().sum(), real, create_graph=True)
            loss = loss + r1_gamma / 2 * grad.pow(2).flatten(1).sum(1).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step.passes = passes
    return step


def check_exactness(discriminator, real) -> bool:
    """f(x[p]) == f(x)[p] bit for bit under a group-preserving permutation (what ada-group relies on)."""
    with torch.no_grad():
        p = group_preserving_permutation(real.shape[0], discriminator.mbstd.group_size, device=real.device)
        return bool(torch.equal(discriminator(real[p], output="features"), discriminator(real, output="features")[p]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="autocast to bfloat16")
    parser.add_argument("--preset", default="small", choices=["small", "paper256", "cifar"])
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32, help="per step (the small preset's batch)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on CPU")
    parser.add_argument("--r1-gamma", type=float, default=0.0, help="add R1 on every step")
    parser.add_argument("--diffaugment", default="", help="e.g. color,translation,cutout (before AdaptiveMix)")
    parser.add_argument("--output", default=None, help="append a JSON line with the results to this file")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    g, d = build_stylegan2(args.image_size, 3, args.preset)
    g, d = g.to(device), d.to(device)
    optimizer = torch.optim.Adam(d.parameters(), lr=0.0025, betas=(0.0, 0.99))
    real = torch.rand(args.batch_size, 3, args.image_size, args.image_size, device=device) * 2 - 1
    augment = DiffAugment(args.diffaugment) if args.diffaugment else None
    exact = check_exactness(d, real)

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    steps = {name: make_step(name, g, d, optimizer, real, device, autocast, args.r1_gamma, augment) for name in VARIANTS}
    times = time_interleaved(steps, warmup=args.warmup, repeats=args.repeats, sync=sync)

    median = {name: statistics.median(t) for name, t in times.items()}
    passes = {name: sorted(set(step.passes)) for name, step in steps.items() if step.passes}
    print(f"device={device} bf16={args.bf16} preset={args.preset} image_size={args.image_size} batch={args.batch_size} "
          f"mbstd_group={d.mbstd.group_size} r1_gamma={args.r1_gamma} diffaugment={args.diffaugment!r} "
          f"threads={torch.get_num_threads()} repeats={args.repeats}")
    for name, value in median.items():
        print(f"  {name:10s} median {value * 1000:8.1f} ms   (min {min(times[name]) * 1000:7.1f} ms)  passes {passes.get(name, '-')}")
    print(f"ratio ada-3pass / plain      = {median['ada-3pass'] / median['plain']:.2f}")
    print(f"ratio ada-group / plain      = {median['ada-group'] / median['plain']:.2f}")
    print(f"ratio ada-group / ada-3pass  = {median['ada-group'] / median['ada-3pass']:.2f}")
    print(f"f(x[p]) == f(x)[p] bit for bit under the group-preserving permutation: {exact}")
    if args.output:
        result = {
            "benchmark": "stylegan2_adaptivemix_discriminator_step", "device": str(device), "bf16": args.bf16,
            "preset": args.preset, "image_size": args.image_size, "batch_size": args.batch_size,
            "mbstd_group": d.mbstd.group_size, "r1_gamma": args.r1_gamma, "diffaugment": args.diffaugment,
            "threads": torch.get_num_threads(), "repeats": args.repeats,
            **{f"{name}_ms": round(value * 1000, 2) for name, value in median.items()},
            "ratio_3pass_vs_plain": round(median["ada-3pass"] / median["plain"], 3),
            "ratio_group2pass_vs_plain": round(median["ada-group"] / median["plain"], 3),
            "ratio_group2pass_vs_3pass": round(median["ada-group"] / median["ada-3pass"], 3),
            "group_partners_exact": exact,
        }
        with open(args.output, "a", encoding="utf-8") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
