"""``hubtune compare``: several methods over seeds on your data (see :mod:`hubtune.training.compare`)."""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from hubtune.training.compare_args import compare_parser, parse_compare_args

HELP = "does a method help on my data? train several methods over seeds, paired, and report the differences"


def build_parser():
    return compare_parser()


def run(argv: Sequence[str]) -> int:
    try:
        args = parse_compare_args(list(argv))
        # the job's heavy imports (models, data, Trainer) only once the arguments are good
        job = importlib.import_module("hubtune.training.compare")
    except KeyboardInterrupt as e:  # before the job started: nothing written
        raise type(e)("nothing was trained or written; rerun the same command to start") from None
    job.run_compare(*args)
    return 0
