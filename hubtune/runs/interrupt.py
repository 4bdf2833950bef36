"""Ctrl-C and SIGTERM: a run stops, says where its last complete checkpoint is, and the command exits with the
shell's code for the signal (130 for Ctrl-C, 143 for SIGTERM).

* :func:`sigterm_as_interrupt` (entered by :func:`hubtune.commands.main` around every command): SIGTERM, what a
  cluster scheduler sends, raises :class:`~hubtune.errors.Terminated`, a ``KeyboardInterrupt``, in the main thread;
* :func:`resumable_on_interrupt` (entered by both training halves around their steps): the interrupt is raised
  again, of the same kind, with where to resume from as its message;
* :func:`exit_line` (used by the command line's error handler): the one line printed and the exit code.

Light to import (no torch, no transformers, as :mod:`hubtune.runs.checkpoints`): the command line takes it before
any command runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

from hubtune.errors import Terminated
from hubtune.runs.checkpoints import last_complete

__all__ = ["exit_line", "resumable_on_interrupt", "sigterm_as_interrupt", "where_to_resume"]


def where_to_resume(checkpoint: str | os.PathLike | None) -> str:
    """``"the last complete checkpoint is X; resume with --resume_from_checkpoint X"`` (or that there is none)."""
    if not checkpoint:
        return "no checkpoint had been written yet"
    return f"the last complete checkpoint is {checkpoint}; resume with --resume_from_checkpoint {checkpoint}"


@contextlib.contextmanager
def resumable_on_interrupt(output_dir: str | os.PathLike) -> Iterator[None]:
    """Re-raise Ctrl-C / SIGTERM (the same kind) saying where the last complete checkpoint of ``output_dir`` is."""
    try:
        yield
    except KeyboardInterrupt as e:
        raise type(e)(where_to_resume(last_complete(output_dir))) from None


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM raises :class:`~hubtune.errors.Terminated` in the main thread (elsewhere,
    signals are left alone)."""
    def handler(signum, frame):
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def exit_line(command: str, error: KeyboardInterrupt) -> tuple[str, int]:
    """(the line ``hubtune <command>`` prints, its exit code) for an interrupted run: 143 = 128 + SIGTERM for
    :class:`~hubtune.errors.Terminated`, 130 = 128 + SIGINT for Ctrl-C."""
    detail = " ".join(str(error).split()) or "completed checkpoints are kept; resume with --resume_from_checkpoint"
    if isinstance(error, Terminated):
        return f"hubtune {command}: terminated (SIGTERM); {detail}", 128 + signal.SIGTERM
    return f"hubtune {command}: interrupted; {detail}", 128 + signal.SIGINT
