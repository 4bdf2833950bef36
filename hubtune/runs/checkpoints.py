"""Checkpoint folders of both halves: which one to resume from, the "past --max_steps" refusal, atomic writing.

Both ``hubtune finetune`` (the Trainer) and ``hubtune gan`` write ``<output_dir>/checkpoint-<step>/`` folders whose
``trainer_state.json`` is written after every other file but ``SHA256SUMS`` (:mod:`hubtune.manifest`), which comes
last. So a folder without ``trainer_state.json`` was interrupted while being saved, and one whose files no longer
match ``SHA256SUMS`` changed after it was written; neither is resumed from.

Discovery is transformers' (:func:`transformers.trainer_utils.sort_checkpoints`, the listing the Trainer prunes
with). Where hubtune must differ from :func:`transformers.trainer_utils.get_last_checkpoint`: that returns the
highest-numbered folder even when a kill -9 left it half-written or a file in it changed since;
:func:`resolve_resume` takes the newest complete one whose files still match (tests/runs/test_checkpoints.py).

Writing: :func:`staging_folder` gives a hidden ``.checkpoint-<step>.partial`` folder beside the final one; the
half writes its files there; :func:`publish_checkpoint` writes ``SHA256SUMS``, gives the files the usual
permissions, renames the folder into place (an older folder of the same name is removed only once the new one is
there) and prunes old checkpoints. A save that dies half-way leaves the earlier checkpoints as they were.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable

from hubtune.errors import CheckpointError
from hubtune.manifest import MANIFEST_NAME, has_manifest, manifest_mismatch, refuse_if_changed, write_manifest
from hubtune.messages import warn
from hubtune.permissions import give_default_permissions

__all__ = ["LATEST", "STATE_FILE", "checkpoint_folders", "checkpoint_step", "is_complete", "last_complete",
           "last_good", "publish_checkpoint", "refuse_past_the_end", "resolve_resume", "resume_request",
           "staging_folder"]

STATE_FILE = "trainer_state.json"
LATEST = "latest"
_NAME = re.compile(r"checkpoint-(\d+)")  # transformers' PREFIX_CHECKPOINT_DIR
# transformers (and so torch) is imported by the functions that list or prune folders, not with this module: the
# configs' checks (resume_request) run before any of it is needed, e.g. for `hubtune gan --help` and argument errors
_RESTART = "start the run again without --resume_from_checkpoint"


# ------------------------------------------------------------------------------------------ which folders


def resume_request(value: Any) -> str | None:
    """What ``--resume_from_checkpoint`` asks for: None (start afresh: unset, false, none, empty), :data:`LATEST`
    (the last good checkpoint of the output folder: true, latest, last, the bare flag) or a checkpoint folder."""
    if value is None or value is False:
        return None
    if value is True:
        return LATEST
    text = str(value).strip()
    if text.lower() in ("", "false", "no", "none"):
        return None
    return LATEST if text.lower() in ("true", "yes", "latest", "last") else str(value)


def checkpoint_folders(output_dir: str | os.PathLike) -> list[Path]:
    """Every ``checkpoint-<step>`` folder of ``output_dir``, complete or not, by step (oldest first)."""
    from transformers.trainer_utils import sort_checkpoints

    if not Path(output_dir).is_dir():
        return []
    return [Path(p) for p in sort_checkpoints(str(output_dir)) if _NAME.fullmatch(Path(p).name)]


def is_complete(folder: str | os.PathLike) -> bool:
    """Whether the folder's save finished (its trainer_state.json, written after the other files, is there)."""
    return (Path(folder) / STATE_FILE).is_file()


def last_complete(output_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint folder of ``output_dir`` (its files are not checked), or None."""
    complete = [c for c in checkpoint_folders(output_dir) if is_complete(c)]
    return complete[-1] if complete else None


def last_good(output_dir: str | os.PathLike, excluding: str | os.PathLike | None = None) -> Path | None:
    """The newest complete checkpoint whose files match their SHA256SUMS (other than ``excluding``), or None."""
    skip = Path(excluding).resolve() if excluding is not None else None
    for folder in reversed([c for c in checkpoint_folders(output_dir) if is_complete(c)]):
        if folder.resolve() != skip and manifest_mismatch(folder) is None:
            return folder
    return None


def resolve_resume(output_dir: str | os.PathLike, resume: Any,
                   check_files: Callable[[Path], None] | None = None) -> Path | None:
    """The checkpoint folder to resume from, or None to start afresh (``resume`` as :func:`resume_request` reads it).

    For the latest: the newest complete checkpoint whose files match their SHA256SUMS; newer ones that are
    incomplete or changed are skipped, each with a warning naming it and why. For a given folder: CheckpointError
    unless it exists, is complete and its files match (the message names the last good checkpoint).
    ``check_files(folder)`` is the half's own check of the chosen folder's files (readable, of the sizes recorded),
    run before the SHA256SUMS comparison so that a truncated file is named as such; what the files hold (the model,
    the options of the run) is the caller's to check afterwards.
    """
    request = resume_request(resume)
    if request is None:
        return None
    if request == LATEST:
        folder = _latest_good(Path(output_dir))
        if check_files is not None:
            check_files(folder)
        return _noted_if_unchecked(folder)
    folder = Path(request)
    if not folder.is_dir():
        raise CheckpointError(f"Checkpoint folder {folder} does not exist; give an existing checkpoint-<step> folder to "
                              "--resume_from_checkpoint, or `true` for the last one in --output_dir.")
    if not is_complete(folder):
        raise CheckpointError(f"{folder} is incomplete (no {STATE_FILE}: its save was interrupted); the last complete "
                              f"checkpoint is {last_complete(folder.parent) or 'none'}.")
    if check_files is not None:
        check_files(folder)
    refuse_if_changed(folder, last_good(folder.parent, excluding=folder), _RESTART)
    return _noted_if_unchecked(folder)


def _noted_if_unchecked(folder: Path) -> Path:
    """``folder``, after a warning when it has no SHA256SUMS (written before manifests existed, or the file was
    removed): it is resumed from, but its content could not be checked."""
    if not has_manifest(folder):
        warn(f"Note: {folder} has no {MANIFEST_NAME}, so its content could not be checked (a change that kept the "
             "files' sizes would go unnoticed); resuming from it as it is.")
    return folder


def _latest_good(output_dir: Path) -> Path:
    folders = checkpoint_folders(output_dir)
    good = last_good(output_dir)
    for folder in reversed(folders):
        if folder == good:
            break
        why = (f"it has no {STATE_FILE} (its save was interrupted)" if not is_complete(folder)
               else manifest_mismatch(folder))
        warn(f"Skipping {folder}: {why}; resuming from {good or 'nothing'} instead (the steps trained since it are "
             "trained again).")
    if good is not None:
        return good
    if not any(is_complete(c) for c in folders):
        raise CheckpointError(f"--resume_from_checkpoint: no complete checkpoint in {output_dir} (a checkpoint-<step> "
                              f"folder with its {STATE_FILE}): nothing to resume; start without "
                              "--resume_from_checkpoint, or give it a checkpoint folder.")
    raise CheckpointError(f"--resume_from_checkpoint: no checkpoint in {output_dir} passes its content check "
                          f"({MANIFEST_NAME}): nothing to resume; start without --resume_from_checkpoint.")


# ------------------------------------------------------------------------------------------ past the end


def _state(checkpoint: str | os.PathLike) -> dict[str, Any]:
    path = Path(checkpoint) / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{path} cannot be read ({type(e).__name__}); resume from an earlier checkpoint.") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a JSON {type(state).__name__}, not a trainer state; resume from an earlier "
                              "checkpoint.")
    return state


def checkpoint_step(folder: str | os.PathLike | None) -> int:
    """The step a checkpoint was saved at (the Trainer's ``global_step``, the GAN's ``step``); 0 for None."""
    if not folder:
        return 0
    state = _state(folder)
    return int(state.get("global_step", state.get("step")) or 0)


def refuse_past_the_end(checkpoint: str | os.PathLike, max_steps: int | None,
                        num_train_epochs: float | None = None) -> None:
    """CheckpointError when the run would end before ``checkpoint``'s step: ``max_steps`` when it is set (> 0),
    else ``num_train_epochs`` against the checkpoint's epoch (the Trainer's runs)."""
    state = _state(checkpoint)
    step = checkpoint_step(checkpoint)
    if max_steps is not None and max_steps > 0:
        if max_steps < step:
            raise CheckpointError(
                f"{checkpoint} is at step {step}, past --max_steps {max_steps}: pass --max_steps {step} or more (the "
                "total number of steps, counting the ones already trained) to continue that run, or resume from an "
                "earlier checkpoint."
            )
        return
    epoch = float(state.get("epoch") or 0.0)
    if num_train_epochs is not None and num_train_epochs < epoch - 1e-6:
        raise CheckpointError(
            f"{checkpoint} is at step {step} (epoch {epoch:g}), past --num_train_epochs {num_train_epochs:g}: pass "
            f"--num_train_epochs {math.ceil(epoch - 1e-6)} or more (the total, counting the epochs already trained) or "
            f"--max_steps above {step} to continue that run, or resume from an earlier checkpoint."
        )


# ------------------------------------------------------------------------------------------ writing


def staging_folder(final: str | os.PathLike) -> Path:
    """An empty hidden ``.<name>.partial`` folder beside ``final`` (a leftover of a dead save is removed first)."""
    final = Path(final)
    staging = final.with_name(f".{final.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def publish_checkpoint(written: str | os.PathLike, final: str | os.PathLike, *, keep: int | None = None,
                       best: str | None = None) -> Path:
    """Make the completely written folder ``written`` the checkpoint ``final``: write its SHA256SUMS (last), give
    its files the permissions open() gives, rename it into place (an older ``final`` is removed only once the new
    one is there), then keep the ``keep`` newest checkpoints of the output folder (and ``best``; none pruned for
    None), as the Trainer prunes (:func:`transformers.trainer_utils.rotate_checkpoints`)."""
    written, final = Path(written), Path(final)
    write_manifest(written)
    give_default_permissions(written)  # safetensors and torch.save write 0600 files
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(written, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(written, final)
    if keep is not None:
        from transformers.trainer_utils import rotate_checkpoints

        rotate_checkpoints(output_dir=str(final.parent), save_total_limit=keep, best_model_checkpoint=best,
                           use_mtime=False)
    return final
