"""Helpers of the demo tests: a folder's file digests, a free local port."""

from __future__ import annotations

import hashlib
import socket


def digest(folder):
    """Every file under ``folder`` with its SHA-256 (what the demo must never change)."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
