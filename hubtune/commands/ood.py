"""``hubtune ood``: OOD detection of a fine-tuned classifier, printed as a table and kept in ``ood_results.json``.

In-distribution test images are ``--dataset``'s evaluation split (the same seeded split finetune held out, with
the same ``--seed``); the feature scores are fitted on its training split. The OOD sources are checked (folders
exist, every image decodes) before the model runs. ``ood_results.json`` keeps one entry per
(in-distribution set, OOD set), so runs with other sets add to it; when the folder holds a ``hubtune finetune``
run (``hubtune_run.json``), its model card is rewritten with every entry, so a later push carries them.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import HfArgumentParser

from hubtune.arguments import check_output_dir
from hubtune.commands._parsing import HelpFormatter, parse_command_line
from hubtune.errors import ConfigError, OutputDirError
from hubtune.hub import read_run_info, write_model_card, write_run_info
from hubtune.ood import (
    DEFAULT_SCORES,
    OOD_SCORES,
    OOD_SOURCES,
    evaluate_ood,
    format_ood_entries,
    format_ood_table,
    merge_ood_entries,
    ood_result_entries,
    read_ood_results,
    resolve_scores,
    write_ood_results,
)

__all__ = ["HELP", "OODArguments", "build_parser", "run", "update_model_card"]

HELP = "out-of-distribution detection: score in-distribution and OOD images, print AUROC / FPR95 / AUPR"


@dataclass
class OODArguments:
    """The model, the in-distribution and OOD sets, and the scores."""

    model: str | None = field(default=None, metadata={
        "help": "a folder or Hub repo written by hubtune finetune (or a timm / transformers classifier); required"})
    dataset: str | None = field(default=None, metadata={
        "help": "the in-distribution dataset ('digits', an image folder, a saved dataset, a Hub name); required",
        "aliases": ["--in-data", "--in_data"]})
    # action "extend": `--score msp --score energy` adds up, as in hubtune 0.1
    ood_dataset: list[str] = field(default_factory=list, metadata={
        "help": "OOD sources: named sources (listed below), image folders, saved datasets, Hub names; required",
        "aliases": ["--out-data", "--out_data"], "action": "extend"})
    score: list[str] = field(default_factory=list, metadata={
        "help": f"scores to compute (default: {', '.join(DEFAULT_SCORES)}); every registered score is listed below",
        "action": "extend"})
    output_dir: str | None = field(default=None, metadata={
        "help": "where to write ood_results.json (default: the model folder if local, else the current folder)"})
    batch_size: int = field(default=64, metadata={"help": "images per forward pass"})
    device: str | None = field(default=None, metadata={"help": "default: cuda if available, else cpu"})
    max_ood_images: int | None = field(default=None, metadata={
        "help": "at most this many images per dataset-backed OOD set"})
    seed: int = field(default=0, metadata={"help": "split seed of --dataset (use finetune's) and OOD sampling seed"})
    strict_data: bool = field(default=False, metadata={
        "help": "stop at the first unreadable image of --dataset or a dataset-backed OOD set (naming it) instead of "
        "leaving unreadable images out"})
    allow_pickle: bool = field(default=False, metadata={
        "help": "allow loading a pickle checkpoint (trusted sources only)"})
    hub_token: str | None = field(default=None, metadata={"help": "Hub token for a private model repo"})

    def __post_init__(self) -> None:
        if isinstance(self.ood_dataset, str):
            self.ood_dataset = [self.ood_dataset]
        if isinstance(self.score, str):
            self.score = [self.score]
        missing = [f"--{name}" for name in ("model", "dataset", "ood_dataset") if not getattr(self, name)]
        if missing:
            raise ConfigError(f"hubtune ood needs {', '.join(missing)}; see `hubtune ood --help`.")
        if self.batch_size < 1:
            raise ConfigError(f"--batch_size must be a positive integer, not {self.batch_size}.")
        resolve_scores(self.score or None)  # a typo fails before anything is loaded


def build_parser() -> HfArgumentParser:
    parser = HfArgumentParser(
        OODArguments,
        prog="hubtune ood",
        formatter_class=HelpFormatter,
        description="Evaluate OOD detection of a fine-tuned classifier. In-distribution test images are --dataset's "
        "evaluation split (the same seeded split finetune held out, with the same --seed); the feature scores are "
        "fitted on its training split.",
        # listed when the parser is built, so that a score or source registered by a plug-in is named too
        epilog=f"OOD scores (--score): {_listed(OOD_SCORES)}. Named OOD sources (--ood_dataset): "
        f"{_listed(OOD_SOURCES)}.",
    )
    return parser


def _listed(registry) -> str:
    return "; ".join(f"{entry.name} ({entry.description})" for entry in registry.values())


def _output_dir(args: OODArguments) -> Path:
    if args.output_dir:
        return Path(args.output_dir)
    # next to a local model, so that a later push can put the results in its model card
    return Path(args.model) if Path(args.model).is_dir() else Path(".")


def _writable(output_dir: Path) -> Path:
    check_output_dir(output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputDirError(f"Cannot create the output folder {str(output_dir)!r} ({type(e).__name__}: {e}).") from e
    return output_dir


def update_model_card(folder: str | Path, entries: list[dict[str, Any]]) -> bool:
    """Put the OOD entries into the model card of a ``hubtune finetune`` output folder; False when it has none."""
    run_info = read_run_info(folder)
    if run_info is None:
        return False
    run_info["ood_results"] = entries
    run_info["ood_table"] = format_ood_entries(entries)
    write_run_info(folder, run_info)
    write_model_card(folder, run_info)
    return True


def _load_model(args: OODArguments):
    # the model code (timm, transformers' model classes) is imported once the arguments are valid, as `hubtune
    # finetune` imports its job: --help and argument errors stay fast (3 s instead of 6 s)
    model_class = importlib.import_module("hubtune.modeling").HubtuneForImageClassification
    return model_class.from_pretrained(args.model, allow_pickle=args.allow_pickle, token=args.hub_token)


def run(argv: Sequence[str]) -> int:
    (args,) = parse_command_line(build_parser(), argv)
    output_dir = _writable(_output_dir(args))
    existing = read_ood_results(output_dir)  # an unreadable results file fails now, not after the scoring
    model = _load_model(args)
    results = evaluate_ood(
        model,
        args.dataset,
        {source: source for source in args.ood_dataset},
        scores=args.score or None,
        batch_size=args.batch_size,
        device=args.device or ("cuda" if torch.cuda.is_available() else "cpu"),
        max_ood_images=args.max_ood_images,
        seed=args.seed,
        strict_data=args.strict_data,
    )
    print(format_ood_table(results))
    entries = merge_ood_entries(existing, ood_result_entries(results, model=str(args.model), seed=args.seed))
    try:
        path = write_ood_results(output_dir, entries)
    except OSError as e:
        raise OutputDirError(f"Cannot write the OOD results to {str(output_dir)!r} ({type(e).__name__}: {e}).") from e
    print(f"OOD results written to {path.resolve()} ({len(entries)} set pair(s)).")
    if update_model_card(output_dir, entries):
        print(f"Model card {output_dir / 'README.md'} updated with the OOD results.")
    return 0
