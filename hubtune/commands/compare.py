"""``hubtune compare``: several methods over several seeds on your data (see :mod:`hubtune.training.compare`)."""

from __future__ import annotations

from collections.abc import Sequence

from hubtune.training.compare import compare_parser, parse_compare_args, run_compare

HELP = "does a method help on my data? train several methods over seeds, paired, and report the differences"


def build_parser():
    return compare_parser()


def run(argv: Sequence[str]) -> int:
    run_compare(*parse_compare_args(list(argv)))
    return 0
