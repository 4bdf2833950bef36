"""The output folder of a run: refused when it cannot be written or already holds another run's results, and
locked for the run.

:func:`guarded_output_dir` is what ``hubtune finetune`` and ``hubtune gan`` enter before anything is built: it takes
the folder's lock (:mod:`hubtune.locking`: ``.hubtune.lock``, created atomically, naming the run; the main process
only), having named a folder that is a file, a dangling link or read-only (:func:`hubtune.arguments.check_output_dir`),
and then refuses a folder that holds another run's results unless the run resumes or overwrites. Nothing already in
the folder is changed by a refusal.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from hubtune.arguments import check_output_dir
from hubtune.errors import OutputDirError
from hubtune.locking import output_dir_lock
from hubtune.runs.checkpoints import last_complete

__all__ = ["guarded_output_dir", "refuse_to_overwrite"]


def refuse_to_overwrite(output_dir: str | os.PathLike, *, resume: str | None, overwrite: bool,
                        run_files: Sequence[str]) -> None:
    """OutputDirError when ``output_dir`` cannot be written, or holds another run's results (one of ``run_files``
    or a complete checkpoint) and the run neither resumes (``resume`` set) nor ``overwrite``\\ s."""
    out = check_output_dir(output_dir)  # a file, a dangling link, a read-only place: named before anything runs
    if resume is not None or overwrite or not out.is_dir():
        return
    if any((out / name).exists() for name in run_files) or last_complete(out) is not None:
        raise OutputDirError(
            f"output_dir {str(out)!r} already holds another run's model or checkpoints; pass --overwrite_output_dir to "
            "replace them, --resume_from_checkpoint to continue that run, or choose another --output_dir."
        )


@contextlib.contextmanager
def guarded_output_dir(output_dir: str | os.PathLike, command: str, *, resume: str | None, overwrite: bool,
                       run_files: Sequence[str], main_process: bool = True) -> Iterator[Path]:
    """Hold ``output_dir``'s lock for ``hubtune <command>`` (on the main process; the others only check) and refuse
    to write over another run's results (:func:`refuse_to_overwrite`); yields the folder."""
    with output_dir_lock(output_dir, command, enabled=main_process):
        refuse_to_overwrite(output_dir, resume=resume, overwrite=overwrite, run_files=run_files)
        yield Path(output_dir)
