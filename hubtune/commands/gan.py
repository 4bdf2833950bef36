"""``hubtune gan [CONFIG.yaml] [--option value ...]``: train a GAN (AdaptiveMix on by default), write the final
generator at ``--output_dir``'s root (plus checkpoints, samples, logs, metrics), and optionally push it.

Every field of :class:`hubtune.gan.GANTrainingConfig` (the run's and those of its parts) and every option of the
registered architectures is a flag (:func:`hubtune.gan.config.gan_arguments_class`); a first positional ``.yaml`` /
``.json`` file holds the same names and flags override it. The older names (``--ada_weight``, ``--ada_target``, ...) still parse, with a deprecation
line. Several processes: ``accelerate launch --num_processes 2 -m hubtune gan ...``. The training loop (torch, the
models) is imported when the command runs, not for ``--help``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from transformers import HfArgumentParser

from hubtune.commands._parsing import HelpFormatter, parse_command_line
from hubtune.gan.config import gan_arguments_class

if TYPE_CHECKING:
    from hubtune.gan.loop import GANTrainingResult

__all__ = ["HELP", "build_parser", "print_summary", "run"]

HELP = "train a GAN with the AdaptiveMix discriminator regulariser and publish its generator"
# the training loop (torch, the models), imported when the command runs, not for --help
_LOOP = "hubtune.gan.loop"


def build_parser() -> HfArgumentParser:
    return HfArgumentParser(
        [gan_arguments_class()],
        prog="hubtune gan",
        formatter_class=HelpFormatter,
        description="Train a DCGAN, SNGAN-style ResNet or StyleGAN2 (--arch stylegan2 --arch_preset small|paper256|"
        "cifar) GAN on Accelerate, optionally with DiffAugment / ADA (--diffaugment, --augment_target) and a timm "
        "backbone as the discriminator (--discriminator timm:NAME | local-dir:PATH). With no arguments: a small DCGAN on "
        "scikit-learn's digits (offline), writing the final EMA generator at --output_dir's root "
        "(Generator.from_pretrained(output_dir)), checkpoint-<step>/ folders, samples/, logs.jsonl, "
        "training_config.json and metrics.json (FID/KID). --push_to_hub --hub_model_id ORG/NAME publishes the "
        "generator with its model card. Usage: hubtune gan [CONFIG.yaml] [--options].",
    )


def print_summary(result: GANTrainingResult) -> None:
    """Print the run summary, on the main process only (under several processes the others stay silent)."""
    if result.is_main_process:
        print(importlib.import_module(_LOOP).format_summary(result))


def run(argv: Sequence[str]) -> int:
    """Run ``hubtune gan ARGV``; returns the exit code (errors are :class:`~hubtune.errors.HubtuneError`)."""
    (arguments,) = parse_command_line(build_parser(), argv)
    config, deprecations = arguments.to_config()
    for line in deprecations:
        print(line, file=sys.stderr)
    result = importlib.import_module(_LOOP).train_gan(config)
    print_summary(result)
    return 0
