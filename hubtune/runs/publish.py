"""Publishing a finished run: its model folder (weights, config.json, card) to a Hub model repository, and
optionally a demo Space beside it.

Both halves hand :func:`publish` a folder that holds exactly what the repository gets, its card already naming
the repository: ``hubtune finetune`` its output folder (checkpoints, runs/ and pickles are never uploaded, see
:data:`hubtune.hub.push.PUSH_IGNORE_PATTERNS`), ``hubtune gan`` a temporary folder where the EMA generator was saved
with a card naming the repository (so the local output folder is never changed by a push). The upload is
:func:`hubtune.hub.push_folder` (one commit; every check before the first request; errors in one line), the
Space :func:`hubtune.hub.space.push_model_and_space`.
"""

from __future__ import annotations

import os

from hubtune.hub import push_folder
from hubtune.hub.space import push_model_and_space

__all__ = ["publish", "published_line"]


def publish(folder: str | os.PathLike, repo_id: str, space: str | None = None, *, token: str | None = None,
            private: bool = False, revision: str | None = None) -> tuple[str, str | None]:
    """Push ``folder`` to ``repo_id`` (and, with ``space``, a Gradio Space showing it, the card linking to it);
    returns (the model's URL, the Space's URL or None). Raises what :func:`hubtune.hub.push_folder` raises."""
    options = dict(token=token, private=bool(private), revision=revision)
    if space:
        return push_model_and_space(folder, repo_id, space, **options)
    return push_folder(folder, repo_id, **options), None


def published_line(url: str, space_url: str | None = None) -> str:
    """The line a run prints once published."""
    return f"Pushed to {url}; its demo Space: {space_url}" if space_url else f"Pushed to {url}"
