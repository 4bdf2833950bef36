"""One run per output folder: a lock file, created atomically, that names the run holding the folder.

``hubtune finetune`` and ``hubtune gan`` hold ``<output_dir>/.hubtune.lock`` while they run (only the main process
when there are several). The file is created with ``O_CREAT | O_EXCL``, so of two runs started together exactly one
gets it; it holds the pid, host, start time and command of that run, and a second run is refused with a message
naming them. The lock is removed when the run ends (normally, on an error or on Ctrl-C). A lock left behind by a
run that was killed (its pid is no longer alive on this host) does not block a later run: the later run takes it
over and says so (a warning of the ``hubtune.run`` logger, :mod:`hubtune.messages`). The run layer takes the lock for
both training commands (:func:`hubtune.runs.folder.guarded_output_dir`).
"""

from __future__ import annotations

import json
import os
import socket
import time
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from hubtune.arguments import check_output_dir
from hubtune.errors import OutputDirError
from hubtune.messages import warn

__all__ = ["LOCK_NAME", "OutputDirLock", "output_dir_lock"]

LOCK_NAME = ".hubtune.lock"
_UNWRITTEN_GRACE_S = 30.0  # a lock file still empty after this long was left by a run killed while creating it


def _read(path: Path) -> dict[str, Any] | None:
    """The lock's record, or None when it is empty or not a record (being written, or damaged)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _pid_alive(pid: Any) -> bool:
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except OSError:
        return True
    return True


def _describe(record: dict[str, Any] | None) -> str:
    if record is None:
        return "a run that is starting (its lock is not written yet)"
    return (f"{record.get('command') or 'a hubtune run'} (pid {record.get('pid')} on {record.get('host')}, started "
            f"{record.get('started')})")


class OutputDirLock:
    """The lock of one output folder; use as a context manager (or :meth:`acquire` / :meth:`release`).

    Raises:
        OutputDirError: another run holds the folder (the message names it), or the folder cannot be created or
        written (a file, a dangling symbolic link, a read-only place: :func:`hubtune.arguments.check_output_dir`).
    """

    def __init__(self, output_dir: str | os.PathLike, command: str) -> None:
        self.folder = Path(output_dir)
        self.path = self.folder / LOCK_NAME
        self.command = command
        self._record: dict[str, Any] | None = None
        self._created: list[Path] = []

    # ------------------------------------------------------------------------------------------ acquire

    def _prepare_folder(self) -> None:
        check_output_dir(self.folder)  # a file, a dangling link, a read-only place: named before anything is made
        if self.folder.is_dir():
            return
        existing = self.folder
        while not existing.exists() and existing.parent != existing:
            existing = existing.parent
        try:
            self.folder.mkdir(parents=True)
        except FileExistsError:  # created by a run started at the same moment
            return
        except OSError as e:
            raise OutputDirError(f"Cannot create output_dir {str(self.folder)!r} ({e.strerror or e}); choose a folder "
                                 "you can write to (--output_dir).") from e
        self._created = [self.folder, *[p for p in self.folder.parents if p != existing and existing in p.parents]]

    def _is_stale(self, record: dict[str, Any] | None) -> bool:
        if record is None:
            try:
                return time.time() - self.path.stat().st_mtime > _UNWRITTEN_GRACE_S
            except OSError:
                return False
        return record.get("host") == socket.gethostname() and not _pid_alive(record.get("pid"))

    def _take_over(self, record: dict[str, Any] | None) -> bool:
        """Remove a stale lock unless another run replaced it meanwhile; True when this run removed it."""
        aside = self.path.with_name(f"{LOCK_NAME}.stale-{os.getpid()}")
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return False  # another run took it over first
        moved = _read(aside)
        if moved != record:  # a live lock written in between: put it back
            try:
                os.link(aside, self.path)
            except OSError:
                pass
            aside.unlink(missing_ok=True)
            return False
        aside.unlink(missing_ok=True)
        warn(f"Note: {self.path} was left by {_describe(record)}, which is no longer running; this run takes the "
             "output folder over.")
        return True

    def acquire(self) -> "OutputDirLock":
        self._prepare_folder()
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": datetime.now().astimezone().isoformat(timespec="seconds"),
                  "command": f"hubtune {self.command}"}
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read(self.path)
                if self._is_stale(holder):
                    self._take_over(holder)
                    continue
                raise OutputDirError(
                    f"output_dir {str(self.folder)!r} is in use by {_describe(holder)}; wait for it to finish or choose "
                    f"another --output_dir (if that run is gone, e.g. on another machine, delete {self.path})."
                ) from None
            except OSError as e:
                self._remove_created_folder()
                raise OutputDirError(f"output_dir {str(self.folder)!r} cannot be written ({e.strerror or e}); choose a "
                                     "folder you can write to (--output_dir).") from e
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(json.dumps(record))
            self._record = record
            return self
        raise OutputDirError(f"output_dir {str(self.folder)!r}: could not take its lock {self.path} (other runs keep "
                             "taking it); choose another --output_dir.")

    # ------------------------------------------------------------------------------------------ release

    def _remove_created_folder(self) -> None:
        """Remove the folders this lock created, if the run left nothing in them."""
        for folder in self._created:
            try:
                folder.rmdir()
            except OSError:
                break
        self._created = []

    def release(self) -> None:
        """Remove the lock if this run holds it (a lock another run took over is left alone)."""
        if self._record is None:
            return
        record, self._record = self._record, None
        if _read(self.path) == record:
            self.path.unlink(missing_ok=True)
        self._remove_created_folder()

    def __enter__(self) -> "OutputDirLock":
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: Any) -> None:
        return None


def output_dir_lock(output_dir: str | os.PathLike | None, command: str, enabled: bool = True):
    """A context manager holding ``output_dir``'s lock for ``hubtune <command>``; a no-op when not ``enabled`` (the
    processes other than the main one) or without an output folder."""
    if not enabled or output_dir is None:
        return _NoLock()
    return OutputDirLock(output_dir, command)
