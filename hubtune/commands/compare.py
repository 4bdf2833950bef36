"""``hubtune compare``: several methods over seeds on your data (see :mod:`hubtune.training.compare`)."""

from __future__ import annotations

from collections.abc import Sequence

from hubtune.training.compare_args import compare_parser, parse_compare_args

HELP = "does a method help on my data? train several methods over seeds, paired, and report the differences"


def build_parser():
    return compare_parser()


def run(argv: Sequence[str]) -> int:
    from hubtune.training.compare import run_compare  # the job's heavy imports only when it runs

    run_compare(*parse_compare_args(list(argv)))
    return 0
