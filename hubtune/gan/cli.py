"""``hubtune gan``: train a GAN (AdaptiveMix on by default) and write samples, metrics and a generator folder.

Several processes: ``accelerate launch --num_processes 2 -m hubtune.cli gan ...``.
"""

from __future__ import annotations

import argparse
import json
import sys

from hubtune.gan.loop import GANTrainingConfig

__all__ = ["add_parser", "run"]

_DEFAULTS = GANTrainingConfig()


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``gan`` sub-command on an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "gan",
        help="train a GAN with the AdaptiveMix discriminator regulariser and publish its generator",
        description="Train a DCGAN or SNGAN-style ResNet GAN on Accelerate. With no arguments: a small DCGAN on "
        "scikit-learn's digits (offline, a few minutes on 2 CPU cores), writing sample grids, FID/KID "
        "(metrics.json) and a Hub-ready generator folder (<output-dir>/generator).",
    )
    p.add_argument("--data", default=_DEFAULTS.data,
                   help="'digits', an image folder, a folder written by datasets' save_to_disk, or a Hub dataset name")
    p.add_argument("--arch", default=_DEFAULTS.arch, choices=["dcgan", "resnet"])
    p.add_argument("--image-size", type=int, default=_DEFAULTS.image_size, help="power of two; dcgan 32/64, resnet 32/64/128")
    p.add_argument("--channels", type=int, default=None, choices=[1, 3], help="default: 1 for digits, 3 otherwise")
    p.add_argument("--adaptivemix", action=argparse.BooleanOptionalAction, default=True,
                   help="AdaptiveMix on the discriminator (default on)")
    p.add_argument("--ada-preset", default=_DEFAULTS.ada_preset, choices=["default", "reference"])
    p.add_argument("--ada-weight", type=float, default=_DEFAULTS.ada_weight)
    p.add_argument("--ada-sigma", type=float, default=_DEFAULTS.ada_sigma)
    p.add_argument("--ada-per-sample", action="store_true", help="one mixing weight per sample")
    p.add_argument("--loss", default=_DEFAULTS.loss, choices=["non-saturating", "hinge"])
    p.add_argument("--r1-gamma", type=float, default=_DEFAULTS.r1_gamma)
    p.add_argument("--steps", type=int, default=_DEFAULTS.steps)
    p.add_argument("--batch-size", type=int, default=_DEFAULTS.batch_size, help="per process")
    p.add_argument("--lr-g", type=float, default=_DEFAULTS.lr_g)
    p.add_argument("--lr-d", type=float, default=_DEFAULTS.lr_d)
    p.add_argument("--output-dir", default=_DEFAULTS.output_dir)
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                   help="continue from the last checkpoint in --output-dir, or from the given checkpoint folder")
    p.add_argument("--checkpoint-every", type=int, default=_DEFAULTS.checkpoint_every)
    p.add_argument("--sample-every", type=int, default=_DEFAULTS.sample_every)
    p.add_argument("--seed", type=int, default=_DEFAULTS.seed)
    p.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"])
    p.add_argument("--eval-samples", type=int, default=_DEFAULTS.eval_num_samples, help="0 skips FID/KID")
    p.add_argument("--feature-extractor", default=_DEFAULTS.eval_feature_extractor,
                   help="FID/KID features: auto, inception, timm:<model>, timm-random:<model>[:seed], hubtune:<folder>")
    p.add_argument("--strict-data", action="store_true", help="fail on an unreadable image instead of skipping it")
    p.add_argument("--log-with", nargs="*", default=[], help="extra Accelerate trackers (tensorboard, wandb, ...)")
    p.add_argument("--push-to-hub", metavar="ORG/NAME", default=None)
    p.add_argument("--private", action="store_true")
    p.add_argument("--hub-token", default=None, help="defaults to HF_TOKEN / the stored login")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``hubtune gan``; returns the exit code (1 with a message for known failures)."""
    from hubtune.gan.checkpoint import CheckpointError
    from hubtune.gan.loop import NonFiniteLossError, train_gan
    from hubtune.gan.publish import push_generator_folder
    from hubtune.hub import HubPushError

    try:
        config = GANTrainingConfig(
            data=args.data, arch=args.arch, image_size=args.image_size, channels=args.channels,
            adaptivemix=args.adaptivemix, ada_preset=args.ada_preset, ada_weight=args.ada_weight,
            ada_sigma=args.ada_sigma, ada_per_sample=args.ada_per_sample, loss=args.loss, r1_gamma=args.r1_gamma,
            steps=args.steps, batch_size=args.batch_size, lr_g=args.lr_g, lr_d=args.lr_d, output_dir=args.output_dir,
            resume=args.resume, checkpoint_every=args.checkpoint_every, sample_every=args.sample_every,
            seed=args.seed, mixed_precision=args.mixed_precision, eval_num_samples=args.eval_samples,
            eval_feature_extractor=args.feature_extractor, strict_data=args.strict_data, log_with=list(args.log_with),
            progress_bar=not args.no_progress,
        )
        result = train_gan(config)
        if args.push_to_hub and result.generator_dir:
            url = push_generator_folder(result.generator_dir, args.push_to_hub, token=args.hub_token, private=args.private)
            print(f"pushed {result.generator_dir} to {args.push_to_hub}: {url}")
    except (CheckpointError, NonFiniteLossError, HubPushError, ValueError, FileNotFoundError) as err:
        print(f"hubtune gan: error: {err}", file=sys.stderr)
        return 1
    if result.metrics is not None:
        print(json.dumps(result.metrics, indent=2))
    if result.generator_dir:
        print(f"generator folder: {result.generator_dir}")
    return 0
