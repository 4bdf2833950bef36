"""Cost of AdaptiveMix on a GAN discriminator step: plain vs hubtune's 2 passes vs the reference's 3 passes.

One discriminator step = fakes from G (no graph) + discriminator losses on a real and a fake batch + backward +
Adam step. The variants, timed in one run with interleaved repetitions (median reported):

    plain            D(real), D(fake): no AdaptiveMix
    ada-2pass        hubtune's "paper" preset: f(x), f(x~); target lam f(x) + (1 - lam) f(x)[p] (detached)
    ada-3pass-ref    the public script's computation: f(x), f(x[p]), f(x~), mixed logits head(t) + head(f(x~)),
                     so the third pass carries gradient (reference preset, 3 passes forced)
    ref-2pass        the reference preset's semantics with hubtune's 2 passes (same values and gradients)

Usage::

    python benchmarks/bench_adaptivemix_gan.py                     # CPU, 32 px, batch 64
    python benchmarks/bench_adaptivemix_gan.py --device cuda --bf16 --batch-size 256
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

from hubtune.gan.models import build_gan
from hubtune.losses.adaptive_mix import AdaptiveMix

VARIANTS = {
    "plain": None,
    "ada-2pass": dict(preset="paper", feature_passes=2),
    "ada-3pass-ref": dict(preset="reference", feature_passes=3),
    "ref-2pass": dict(preset="reference", feature_passes=2),
}


def make_step(variant, generator, discriminator, optimizer, real, latent_dim, device, autocast, r1_gamma=0.0):
    ada = AdaptiveMix(**VARIANTS[variant]) if VARIANTS[variant] is not None else None

    def step():
        with torch.no_grad(), autocast():
            fake = generator(torch.randn(real.shape[0], latent_dim, device=device)).float()
        real.requires_grad_(r1_gamma > 0)
        with autocast():
            if ada is None:
                real_logits, fake_logits, extra = discriminator(real), discriminator(fake), 0.0
            else:
                out_r, out_f = ada(discriminator, real), ada(discriminator, fake)
                real_logits, fake_logits, extra = out_r.logits, out_f.logits, out_r.loss + out_f.loss
        loss = F.softplus(-real_logits.float()).mean() + F.softplus(fake_logits.float()).mean() + extra
        if r1_gamma > 0:  # the reference recipe's R1 (gamma 1), on the logits each variant scores reals with
            (grad,) = torch.autograd.grad(real_logits.float().sum(), real, create_graph=True)
            loss = loss + r1_gamma / 2 * grad.pow(2).flatten(1).sum(1).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; returns the result dict (benchmarks/gpu_check.py calls it in-process)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="autocast to bfloat16")
    parser.add_argument("--arch", default="dcgan", choices=["dcgan", "resnet"])
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--d-channels", type=int, default=64, help="discriminator width (DCGAN's ndf)")
    parser.add_argument("--g-channels", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on CPU")
    parser.add_argument("--r1-gamma", type=float, default=0.0, help="add R1 on every step (the reference recipe: 1)")
    parser.add_argument("--output", default=None, help="append a JSON line with the results to this file")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    g, d = build_gan(args.arch, args.image_size, 3, g_channels=args.g_channels, d_channels=args.d_channels)
    g, d = g.to(device), d.to(device)
    optimizer = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    real = torch.rand(args.batch_size, 3, args.image_size, args.image_size, device=device) * 2 - 1

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    steps = {name: make_step(name, g, d, optimizer, real, g.latent_dim, device, autocast, args.r1_gamma) for name in VARIANTS}
    times = time_interleaved(steps, warmup=args.warmup, repeats=args.repeats, sync=sync)

    median = {name: statistics.median(t) for name, t in times.items()}
    print(f"device={device} bf16={args.bf16} arch={args.arch} image_size={args.image_size} batch={args.batch_size} "
          f"d_channels={args.d_channels} r1_gamma={args.r1_gamma} threads={torch.get_num_threads()} repeats={args.repeats}")
    for name, value in median.items():
        print(f"  {name:14s} median {value * 1000:8.1f} ms   (min {min(times[name]) * 1000:7.1f} ms)")
    print(f"ratio ada-2pass / plain          = {median['ada-2pass'] / median['plain']:.2f}   (target <= 1.7)")
    print(f"ratio ada-2pass / ada-3pass-ref  = {median['ada-2pass'] / median['ada-3pass-ref']:.2f}   (target <= 0.8)")
    print(f"ratio ref-2pass / ada-3pass-ref  = {median['ref-2pass'] / median['ada-3pass-ref']:.2f}   (same semantics, 2 vs 3 passes)")
    result = {
        "benchmark": "adaptivemix_discriminator_step", "device": str(device), "bf16": args.bf16, "arch": args.arch,
        "image_size": args.image_size, "batch_size": args.batch_size, "r1_gamma": args.r1_gamma,
        "threads": torch.get_num_threads(), "repeats": args.repeats,
        **{f"{name}_ms": round(value * 1000, 2) for name, value in median.items()},
        "ratio_2pass_vs_plain": round(median["ada-2pass"] / median["plain"], 3),
        "ratio_2pass_vs_3pass": round(median["ada-2pass"] / median["ada-3pass-ref"], 3),
    }
    if args.output:
        with open(args.output, "a", encoding="utf-8") as f:
            f.write(json.dumps(result) + "\n")
    return result


if __name__ == "__main__":
    main()
