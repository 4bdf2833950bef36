"""``compare.jsonl``: the journal of ``hubtune compare``'s finished runs, one JSON record per line.

A comparison runs for hours, so its journal must survive a crash at any moment:

* a line is written whole: one ``write`` of the whole line to a file opened for appending, then ``fsync``; a short
  write (a full disk) is cut back off before the error is raised;
* a last line without its newline is what a kill or a power cut during that write leaves: on start it is reported
  in one line and cut off (its run is trained again), so that the next line does not glue onto it;
* any other line that is not a record of a finished run (not JSON, a wrongly typed field) stops the command,
  naming the file and the line: a report must never silently count fewer runs than the folder holds.

The records are those compare has always written (older files load unchanged); only the fields the report reads are
checked (:data:`_FIELDS`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hubtune.errors import CheckpointError
from hubtune.messages import warn

__all__ = ["RUNS_FILE", "RunJournal", "read_runs"]

RUNS_FILE = "compare.jsonl"
_FIX = ("fix or delete that line (its run is then trained again), or pass --overwrite_output_dir to set the file aside "
        "and start over")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# field -> (check, what it must be); the fields the report and the resume read
_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "label": (lambda v: isinstance(v, str) and bool(v), "a method label (a string)"),
    "seed": (lambda v: _is_int(v) and v >= 0, "a seed (an integer >= 0)"),
    "accuracy": (lambda v: _is_number(v) and 0 <= v <= 1, "an accuracy (a number from 0 to 1)"),
    "seconds_per_step": (lambda v: _is_number(v) and v > 0, "a time (a number > 0)"),
    "train_samples": (lambda v: _is_int(v) and v >= 0, "a count (an integer >= 0)"),
    "eval_samples": (lambda v: _is_int(v) and v >= 0, "a count (an integer >= 0)"),
    "settings": (lambda v: isinstance(v, dict), "a mapping of training settings"),
}


def _check_record(row: Any, where: str) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise CheckpointError(f"{where} is a JSON {type(row).__name__}, not a record of a finished run; {_FIX}.")
    for name, (ok, wanted) in _FIELDS.items():
        if name not in row:
            raise CheckpointError(f"{where} has no {name!r}; {_FIX}.")
        if not ok(row[name]):
            raise CheckpointError(f"{where}: {name!r} must be {wanted}, not {json.dumps(row[name])}; {_FIX}.")
    if "fingerprint" in row and not isinstance(row["fingerprint"], str):
        raise CheckpointError(f"{where}: 'fingerprint' must be a string, not {json.dumps(row['fingerprint'])}; {_FIX}.")
    return row


def _cut_short(tail: bytes) -> bool:
    """Whether what follows the last newline is a line cut short: a line is written whole, ending in a newline, so
    text after the last newline is either nothing, a complete record whose newline was removed (JSON that parses),
    or a write cut off by a kill (JSON that does not)."""
    if not tail.strip():
        return bool(tail)
    try:
        json.loads(tail.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return True
    return False


def _parse(line: bytes, where: str) -> dict[str, Any]:
    try:
        row = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{where} is not a JSON record ({e}); {_FIX}.") from None
    return _check_record(row, where)


class RunJournal:
    """The journal ``folder/compare.jsonl``: :meth:`repair` (once, holding the folder's lock), :meth:`rows`,
    :meth:`append`."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.path = Path(folder) / RUNS_FILE

    def _split(self) -> tuple[list[bytes], bytes]:
        """(the complete lines, what follows the last newline: b"" unless the last write was cut short)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return [], b""
        complete, _, tail = data.rpartition(b"\n")
        return (complete.split(b"\n") if complete or data.startswith(b"\n") else []), tail

    def rows(self) -> list[tuple[int, dict[str, Any]]]:
        """(line number, record) of every finished run; a cut last line is left out (see :meth:`repair`).

        Raises:
            CheckpointError: a line that is not a record of a finished run (naming the file and the line).
        """
        lines, tail = self._split()
        if not _cut_short(tail):  # a complete last line that only lacks its newline
            lines.append(tail)
        return [(n, _parse(line, f"{self.path} line {n}")) for n, line in enumerate(lines, 1) if line.strip()]

    def repair(self) -> None:
        """End the file with a newline: a last line cut short (a kill during its write) is reported and cut off;
        a complete record that only lacks its newline (an edited file) gets one."""
        lines, tail = self._split()
        if not tail:
            return
        if not _cut_short(tail):
            self._write(b"\n")
            return
        os.truncate(self.path, self.path.stat().st_size - len(tail))
        warn(f"Note: line {len(lines) + 1} of {self.path} was cut short (a run stopped while writing it) and is dropped; "
             "that run is trained again.")

    def append(self, row: dict[str, Any]) -> None:
        """Add one finished run, written whole (one write, then fsync) or not at all."""
        self._write((json.dumps(row, default=str) + "\n").encode("utf-8"))

    def _write(self, data: bytes) -> None:
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            try:
                written = os.write(fd, data)
                if written != len(data):
                    raise OSError(28, "No space left on device (a short write)", str(self.path))
                os.fsync(fd)
            except OSError:
                os.ftruncate(fd, size)  # no half line left behind
                raise
        finally:
            os.close(fd)
        if created:  # the new file's name survives a power cut too
            _fsync_folder(self.path.parent)

    def set_aside(self, suffix: str) -> Path:
        """Move the journal to ``compare.jsonl.<suffix>`` (nothing is deleted); returns where it went."""
        aside, n = self.path.with_name(f"{RUNS_FILE}.{suffix}"), 1
        while aside.exists():  # an earlier one set aside in the same second stays
            aside, n = self.path.with_name(f"{RUNS_FILE}.{suffix}-{n}"), n + 1
        os.replace(self.path, aside)
        return aside


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_runs(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """The finished runs recorded in ``folder/compare.jsonl`` (a last line cut short by a kill is left out).

    Raises:
        CheckpointError: another line is not a record of a finished run (the message names the file and the line).
    """
    return [row for _, row in RunJournal(folder).rows()]
