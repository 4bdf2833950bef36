"""``hubtune finetune``: fine-tune a backbone with a registered method (see :mod:`hubtune.training.finetune`)."""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from hubtune.training.finetune_help import HELP_ALL, short_help

HELP = "fine-tune a timm / transformers backbone with a registered method (default: Core-tuning; see below)"


def build_parser():
    # the arguments (torch, transformers.TrainingArguments) are imported here, not for the short --help
    return importlib.import_module("hubtune.training.finetune_args").finetune_parser()


_BOOLS = ("true", "false", "yes", "no", "1", "0", "t", "f", "y", "n")


def expand_push_to_hub(argv: Sequence[str]) -> list[str]:
    """``--push-to-hub ORG/NAME`` (hubtune 0.1's form) -> ``--push_to_hub true --hub_model_id ORG/NAME``."""
    argv, out, i = list(argv), [], 0
    while i < len(argv):
        arg = argv[i]
        value = argv[i + 1] if i + 1 < len(argv) else ""
        if arg in ("--push-to-hub", "--push_to_hub") and value and not value.startswith("-") and value.lower() not in _BOOLS:
            out += ["--push_to_hub", "true", "--hub_model_id", argv[i + 1]]
            i += 2
            continue
        out.append(arg)
        i += 1
    return out


def run(argv: Sequence[str]) -> int:
    """``--help``: the common options at once (no torch import); ``--help-all``: every option, in groups."""
    if HELP_ALL in argv:
        build_parser().print_help()
        return 0
    if "-h" in argv or "--help" in argv:
        print(short_help(), end="")
        return 0
    parse_finetune_args = importlib.import_module("hubtune.training.finetune_args").parse_finetune_args
    args = parse_finetune_args(expand_push_to_hub(argv))
    # the job (model, data, Trainer) is imported once the arguments are valid: --help and errors stay fast
    importlib.import_module("hubtune.training.finetune").run_finetune(*args)
    return 0
