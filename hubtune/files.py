"""File helpers that every layer may use: a JSON object read with a message naming the file, and the check that
weights hold no NaN or inf (a diverged model is never written or uploaded).

A utility of the lowest layer: it imports nothing of hubtune's but :mod:`hubtune.errors`. :mod:`hubtune.layouts.files`
(model folders) and :mod:`hubtune.backbones` read JSON through :func:`read_json_file`; :mod:`hubtune.hub.push`
checks what it uploads with :func:`check_finite_file`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from hubtune.errors import ExportError, WeightsFileError

__all__ = ["DIVERGED_ADVICE", "check_finite", "check_finite_file", "nonfinite_tensors", "read_json_file"]

DIVERGED_ADVICE = "training diverged. Lower the learning rate and train again from the last good checkpoint."


def read_json_file(path: str | Path, what: str = "") -> dict[str, Any]:
    """A JSON object from ``path``; WeightsFileError naming the file (``what``, then the path) when it is not one."""
    path = Path(path)
    where = f"{what} ({path})" if what else str(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WeightsFileError(f"{where} is not valid JSON ({type(e).__name__}); the file is corrupt or was written by "
                               "something else: restore or re-create it.") from e
    if not isinstance(value, dict):
        raise WeightsFileError(f"{where} holds a JSON {type(value).__name__}, not an object; it is not a model "
                               "configuration.")
    return value


def nonfinite_tensors(state: dict[str, torch.Tensor]) -> list[str]:
    """The names of the floating tensors of ``state`` that hold NaN or inf."""
    return [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def _nonfinite_message(refusing: str, where: str, bad: list[str], total: int, advice: str) -> str:
    return (f"Refusing to {refusing} {where}: {len(bad)} of {total} weight tensor(s) hold NaN or inf (e.g. "
            f"{', '.join(bad[:3])}); {advice}")


def check_finite(state: dict[str, torch.Tensor], where: str, *, refusing: str = "write",
                 advice: str = DIVERGED_ADVICE) -> None:
    """ExportError when any floating tensor holds NaN or inf: a diverged model is never written (nor uploaded).

    The message reads "Refusing to {refusing} {where}: N of M weight tensor(s) hold NaN or inf (e.g. ...); {advice}".
    """
    bad = nonfinite_tensors(state)
    if bad:
        total = sum(1 for v in state.values() if v.is_floating_point())
        raise ExportError(_nonfinite_message(refusing, where, bad, total, advice))


def check_finite_file(path: str | Path, *, refusing: str, advice: str = DIVERGED_ADVICE) -> None:
    """:func:`check_finite` for a safetensors file, read one tensor at a time; WeightsFileError when unreadable."""
    path = Path(path)
    bad, total = [], 0
    try:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                tensor = f.get_tensor(key)
                if tensor.is_floating_point():
                    total += 1
                    if not bool(torch.isfinite(tensor).all()):
                        bad.append(key)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise WeightsFileError(f"{path} is truncated or corrupt and cannot be read ({type(e).__name__}); refusing to "
                               f"{refusing} it. Restore it or save the model again.") from e
    if bad:
        raise ExportError(_nonfinite_message(refusing, str(path), bad, total, advice))
