"""``hubtune compare``: several methods over seeds on your data (see :mod:`hubtune.training.compare`)."""

from __future__ import annotations

import contextlib
import importlib
import logging
import sys
from collections.abc import Iterator, Sequence

from hubtune.training.compare_args import compare_parser, parse_compare_args

HELP = "does a method help on my data? train several methods over seeds, paired, and report the differences"
# the job's loggers: progress lines and the report (INFO), the journal's notes (WARNING)
_LOGGERS = ("hubtune.training.compare", "hubtune.training.compare_journal")


def build_parser():
    return compare_parser()


@contextlib.contextmanager
def shown_on_stdout(names: Sequence[str] = _LOGGERS) -> Iterator[None]:
    """While the block runs, the records (INFO and above) of the loggers ``names`` are printed on stdout, bare."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    loggers = [logging.getLogger(name) for name in names]
    saved = [(lg.level, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
        lg.propagate = False
    try:
        yield
    finally:
        for lg, (level, propagate) in zip(loggers, saved):
            lg.removeHandler(handler)
            lg.setLevel(level)
            lg.propagate = propagate
        handler.flush()


def run(argv: Sequence[str]) -> int:
    try:
        args = parse_compare_args(list(argv))
        # the job's heavy imports (models, data, Trainer) only once the arguments are good
        job = importlib.import_module("hubtune.training.compare")
    except KeyboardInterrupt as e:  # before the job started: nothing written
        raise type(e)("nothing was trained or written; rerun the same command to start") from None
    with shown_on_stdout():
        job.run_compare(*args)
    return 0
