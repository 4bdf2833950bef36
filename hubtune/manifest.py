"""Content check of checkpoint folders: ``SHA256SUMS``, the SHA-256 of every file, written last.

A checkpoint folder (``hubtune finetune``'s and ``hubtune gan``'s ``checkpoint-<step>``) ends with a
``SHA256SUMS`` file in ``sha256sum``'s format (``<hex>  <path>`` per line; ``sha256sum -c SHA256SUMS`` checks it
by hand). Resuming verifies it: a file that changed after it was written, even without changing its size, or
that is missing, refuses that checkpoint. A folder without ``SHA256SUMS`` (written by an older hubtune) is not
content-checked; the callers' size and structure checks still apply to it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from hubtune.errors import CheckpointError

__all__ = ["MANIFEST_NAME", "has_manifest", "manifest_mismatch", "refuse_if_changed", "write_manifest"]

MANIFEST_NAME = "SHA256SUMS"
_CHUNK = 1 << 20


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and p.relative_to(folder).as_posix() != MANIFEST_NAME)


def write_manifest(folder: str | os.PathLike) -> Path:
    """Write ``folder/SHA256SUMS`` over every other file of ``folder`` (sub-folders included); call it last."""
    folder = Path(folder)
    lines = [f"{_sha256(folder / name)}  {name}\n" for name in _files(folder)]
    tmp = folder / f".{MANIFEST_NAME}.tmp"
    tmp.write_text("".join(lines), encoding="utf-8")
    os.replace(tmp, folder / MANIFEST_NAME)
    return folder / MANIFEST_NAME


def has_manifest(folder: str | os.PathLike) -> bool:
    return (Path(folder) / MANIFEST_NAME).is_file()


def manifest_mismatch(folder: str | os.PathLike) -> str | None:
    """None when every file listed in ``folder/SHA256SUMS`` has its recorded SHA-256 (or there is no manifest);
    else what differs, in words, naming the first such file (e.g. ``"generator.safetensors changed after it was
    written (its SHA-256 differs from SHA256SUMS)"``)."""
    folder = Path(folder)
    manifest = folder / MANIFEST_NAME
    if not manifest.is_file():
        return None
    try:
        lines = manifest.read_text(encoding="utf-8").splitlines()
        entries = [line.split("  ", 1) for line in lines if line.strip()]
    except (OSError, UnicodeDecodeError):
        entries = None
    if not entries or any(len(e) != 2 or len(e[0]) != 64 for e in entries):
        return f"{MANIFEST_NAME} is damaged (it is not a list of SHA-256 sums)"
    for expected, name in entries:
        path = folder / name
        if not path.is_file():
            return f"{name} is missing (it is listed in {MANIFEST_NAME})"
        if _sha256(path) != expected:
            return f"{name} changed after it was written (its SHA-256 differs from {MANIFEST_NAME})"
    return None


def refuse_if_changed(folder: str | os.PathLike, last_good: str | os.PathLike | None, restart: str) -> None:
    """CheckpointError naming the changed file and the last good checkpoint (``restart`` says what to do when there
    is none) when ``folder``'s files no longer match its manifest."""
    mismatch = manifest_mismatch(folder)
    if mismatch is not None:
        where = (f"the last good checkpoint is {last_good}: resume from it (--resume_from_checkpoint {last_good}); the "
                 "steps trained since it are lost" if last_good else f"no other checkpoint passes its check: {restart}")
        raise CheckpointError(f"{folder}: {mismatch}; {where}.")
