"""File permissions of what hubtune writes: what ``open()`` would give (0644 under umask 022).

safetensors' ``save_file`` and ``tempfile.mkstemp`` create files with mode 0600, so weights and checkpoints
would be unreadable by the group and by other users (a shared cache, a web server, a colleague) where every
other file of the same folder is readable.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["current_umask", "default_file_mode", "give_default_permissions"]


def current_umask() -> int:
    """The process's umask (read from /proc where it can be, so that the umask is never changed, even briefly)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: 0o666 less the umask."""
    return 0o666 & ~current_umask()


def give_default_permissions(path: str | os.PathLike) -> None:
    """Set :func:`default_file_mode` on a file, or on every file under a folder."""
    path = Path(path)
    mode = default_file_mode()
    files = [p for p in path.rglob("*") if p.is_file() and not p.is_symlink()] if path.is_dir() else [path]
    for file in files:
        os.chmod(file, mode)
