"""What a run tells the person running it: the ``hubtune.run`` logger, shown on standard output.

Library code never prints: a note ("Skipping checkpoint-4: ...", "Training recipe of ...", "Pushed to ...") is a
record of this logger (INFO for notes and results, WARNING for something skipped or taken over), emitted on the
main process only. As transformers does for its own logger (``transformers/utils/logging.py``,
``_configure_library_root_logger``), the logger comes with a default handler, so that what ``hubtune finetune`` and
``hubtune gan`` printed before still appears, on stdout, as the bare message; to route the messages elsewhere,
replace it: ``logging.getLogger("hubtune.run").handlers[:] = [my_handler]`` (or ``.setLevel(logging.WARNING)`` to
keep only the warnings).

A utility of the lowest layer: it imports nothing of hubtune's (and no torch).
"""

from __future__ import annotations

import logging
import sys

__all__ = ["RUN_LOGGER", "say", "warn"]

RUN_LOGGER = "hubtune.run"


class _Stdout(logging.StreamHandler):
    """A handler writing to the ``sys.stdout`` of the moment (a test's capture, a redirected stream)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self):  # noqa: D401 - the attribute StreamHandler writes to
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:
        pass


def _on_main_process(record: logging.LogRecord) -> bool:
    """False on the processes other than the first of a distributed run (torch.distributed, when it is set up)."""
    dist = sys.modules.get("torch.distributed")
    return not (dist is not None and dist.is_available() and dist.is_initialized() and dist.get_rank() != 0)


_logger = logging.getLogger(RUN_LOGGER)
_logger.setLevel(logging.INFO)
_logger.addFilter(_on_main_process)
_logger.propagate = False  # as transformers' own logger: shown once, by the handler below (or the one you set)
if not _logger.handlers:
    _logger.addHandler(_Stdout())


def say(message: str) -> None:
    """A note or a result for the person running the job (INFO; main process only)."""
    _logger.info(message)


def warn(message: str) -> None:
    """Something skipped, replaced or taken over that the person running the job must know (WARNING)."""
    _logger.warning(message)
