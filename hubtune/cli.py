"""``hubtune`` command line: ``finetune`` (the main job), ``push``, ``ood`` and ``gan``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .backbones import PretrainedWeightsError
from .export import ExportError
from .hub import HubPushError
from .finetune import DEFAULTS

# Feature modules that add a sub-command through ``add_parser(subparsers)``.
_SUBCOMMAND_MODULES = ("hubtune.hub", "hubtune.ood", "hubtune.gan.cli")


def _add_finetune_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "finetune",
        help="fine-tune a timm / transformers backbone with Core-tuning (default), AdaptiveMix or cross-entropy",
        description="Fine-tune an image classifier. With no arguments: Core-tuning of a randomly initialised "
        "resnet18 on scikit-learn's digits (offline, about a minute on 2 CPU cores).",
    )
    p.add_argument("--model", default=DEFAULTS["model"], help="timm name, hf-hub:/local-dir: id, or transformers id/folder")
    p.add_argument("--dataset", default=DEFAULTS["dataset"], help="'digits', an image folder, a saved dataset or a Hub dataset name")
    p.add_argument("--image-column", default=None)
    p.add_argument("--label-column", default=None)
    p.add_argument("--method", default=DEFAULTS["method"], choices=["core-tuning", "ce", "adaptivemix"])
    p.add_argument("--preset", default="paper", choices=["paper", "reference"], help="the method's semantics")
    p.add_argument("--epochs", type=float, default=DEFAULTS["epochs"])
    p.add_argument("--max-steps", type=int, default=-1, help="stop after this many optimizer steps (overrides --epochs)")
    p.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    p.add_argument("--gradient-accumulation-steps", type=int, default=1)
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    p.add_argument("--optimizer", default="adamw", choices=["sgd", "adamw"],
                   help="adamw (default) or sgd with Nesterov momentum 0.9 (Core-tuning's recipe)")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--eta", type=float, default=DEFAULTS["eta"], help="weight of Core-tuning's contrastive term")
    p.add_argument("--eta-warmup-ratio", type=float, default=0.0)
    p.add_argument("--temperature", type=float, default=None, help="Core-tuning: contrastive temperature (0.07)")
    p.add_argument("--lam-min", type=float, default=None, help="Core-tuning: lower bound of the negatives' mix (0.8)")
    p.add_argument("--alpha", type=float, default=None, help="Beta(alpha, alpha) of the mixing (1.0)")
    p.add_argument("--sigma", type=float, default=None, help="AdaptiveMix: std of the target noise (0.05)")
    p.add_argument("--shrinkage-weight", type=float, default=None, help="AdaptiveMix: weight of the shrinkage term (1.0)")
    p.add_argument("--distance", choices=["cosine", "mse"], default=None, help="AdaptiveMix: shrinkage distance")
    p.add_argument("--no-clean-ce", action="store_true", help="AdaptiveMix: no plain cross-entropy on the clean images")
    p.add_argument("--image-size", type=int, default=DEFAULTS["image_size"])
    p.add_argument("--output-dir", default=DEFAULTS["output_dir"])
    p.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=False,
                   help="load pretrained backbone weights through timm / transformers (default: random init)")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--max-train-samples", type=int, default=None)
    p.add_argument("--max-eval-samples", type=int, default=None)
    p.add_argument("--resume-from-checkpoint", nargs="?", const=True, default=None,
                   help="resume from the last checkpoint in --output-dir, or from the given checkpoint folder")
    p.add_argument("--export-format", default="auto", choices=["auto", "hubtune", "timm", "transformers"])
    p.add_argument("--push-to-hub", metavar="ORG/NAME", default=None)
    p.add_argument("--private", action="store_true")
    p.add_argument("--revision", default=None)
    p.add_argument("--hub-token", default=None, help="defaults to HF_TOKEN / the stored login")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_run_finetune)


_METHOD_KNOBS = {
    "core-tuning": {"temperature": "temperature", "lam_min": "lam_min", "alpha": "alpha"},
    "adaptivemix": {"alpha": "alpha", "sigma": "sigma", "shrinkage_weight": "weight", "distance": "distance"},
    "ce": {},
}


def _loss_kwargs(args: argparse.Namespace) -> dict:
    """The method's knobs given on the command line; a knob of another method is an error, not ignored."""
    knobs = _METHOD_KNOBS[args.method]
    kwargs = {}
    for flag in ("temperature", "lam_min", "alpha", "sigma", "shrinkage_weight", "distance"):
        value = getattr(args, flag)
        if value is None:
            continue
        if flag not in knobs:
            raise ValueError(f"--{flag.replace('_', '-')} does not apply to --method {args.method}.")
        kwargs[knobs[flag]] = value
    if args.no_clean_ce:
        if args.method != "adaptivemix":
            raise ValueError(f"--no-clean-ce does not apply to --method {args.method}.")
        kwargs["clean_ce"] = False
    return kwargs


def _run_finetune(args: argparse.Namespace) -> int:
    from .finetune import run_finetune

    run_finetune(
        model=args.model,
        dataset=args.dataset,
        method=args.method,
        method_preset=args.preset,
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        lr=args.lr,
        optimizer=args.optimizer,
        weight_decay=args.weight_decay,
        eta=args.eta,
        eta_warmup_ratio=args.eta_warmup_ratio,
        loss_kwargs=_loss_kwargs(args),
        image_size=args.image_size,
        output_dir=args.output_dir,
        pretrained=args.pretrained,
        seed=args.seed,
        bf16=args.bf16,
        image_column=args.image_column,
        label_column=args.label_column,
        max_train_samples=args.max_train_samples,
        max_eval_samples=args.max_eval_samples,
        resume_from_checkpoint=args.resume_from_checkpoint,
        export_format=args.export_format,
        push_to_hub=args.push_to_hub,
        private=args.private,
        revision=args.revision,
        hub_token=args.hub_token,
        disable_tqdm=args.no_progress,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hubtune", description=__doc__)
    from . import __version__

    parser.add_argument("--version", action="version", version=f"hubtune {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_finetune_parser(subparsers)
    for module_name in _SUBCOMMAND_MODULES:
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, PretrainedWeightsError, ExportError, HubPushError) as e:
        # Known failure modes carry a message that says what to do; no traceback wall for them.
        print(f"hubtune {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
