"""GAN training checkpoints as safetensors + JSON (no pickles).

A checkpoint is a folder ``checkpoint-<step>`` holding::

    generator.safetensors  discriminator.safetensors  ema.safetensors     model state dicts (with buffers)
    optimizer_g.safetensors / .json   optimizer_d.safetensors / .json       tensors / everything else
    rng_state_<rank>.safetensors / .json                                     torch (CPU, CUDA), numpy, python
    trainer_state.json                                                       step, config, scaler, manifest

``trainer_state.json`` lists every file with its size: a folder without it, or whose files are missing or of
another size, is incomplete, and loading it raises :class:`CheckpointError`. What is common to both halves' checkpoints
is the run layer's (:mod:`hubtune.runs.checkpoints`): the folder is written under a temporary name and renamed once
complete (so an interrupted save never replaces a good one), ``SHA256SUMS`` comes last and is checked on resume (a
file changed after it was written, even without changing its size, refuses the checkpoint; a folder of an older
hubtune without it still loads), and which checkpoint to resume from.

Why not ``accelerator.save_state`` / ``load_state``: it pickles optimizer, RNG and scaler states (``torch.save``),
while these checkpoints hold no pickle, are written atomically with a SHA256SUMS manifest, and resume exactly
(tests/gan/test_checkpoint_format.py, tests/gan/test_gan_loop.py::test_resume_continues_exactly).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from hubtune.errors import CheckpointError
from hubtune.runs.checkpoints import STATE_FILE

__all__ = [
    "CheckpointError",
    "STATE_FILE",
    "checkpoint_dir",
    "save_module",
    "load_module",
    "save_optimizer",
    "load_optimizer",
    "save_rng_state",
    "load_rng_state",
    "write_trainer_state",
    "read_trainer_state",
    "write_process_state",
    "read_process_state",
]


def checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / f"checkpoint-{step}"


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} is missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint file {path} is truncated or corrupt ({err}); resume from an earlier checkpoint") from err


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} is missing")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"checkpoint file {path} is truncated or corrupt ({err})") from err


def save_module(module: nn.Module, path: Path) -> None:
    save_file(_contiguous(module.state_dict()), str(path))


def load_module(module: nn.Module, path: Path) -> None:
    state = _load_tensors(path)
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{path} does not fit {type(module).__name__}: missing {result.missing_keys[:5]}, unexpected "
            f"{result.unexpected_keys[:5]} (was it written with another --arch / --image-size?)"
        )


def save_optimizer(optimizer: torch.optim.Optimizer, stem: Path) -> None:
    """``stem.safetensors`` holds the per-parameter tensors, ``stem.json`` the groups and other values."""
    state_dict = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, slots in state_dict["state"].items():
        for name, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{name}"] = value
            else:
                scalars[f"{index}.{name}"] = value
    save_file(_contiguous(tensors), str(stem.with_suffix(".safetensors")))
    stem.with_suffix(".json").write_text(json.dumps({"param_groups": state_dict["param_groups"], "scalars": scalars}))


def load_optimizer(optimizer: torch.optim.Optimizer, stem: Path) -> None:
    tensors = _load_tensors(stem.with_suffix(".safetensors"))
    meta = _load_json(stem.with_suffix(".json"))
    state: dict[int, dict[str, Any]] = {}
    for key, value in list(tensors.items()) + list(meta["scalars"].items()):
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    try:
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"{stem} does not fit this optimizer: {err}") from err


def save_rng_state(stem: Path) -> None:
    """This process's torch (CPU and CUDA), numpy and python RNG states."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = state
    np_state = np.random.get_state()
    tensors["numpy_keys"] = torch.from_numpy(np_state[1].astype(np.int64))
    py_version, py_state, py_gauss = random.getstate()
    meta = {
        "numpy": {"algorithm": np_state[0], "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_version, "state": list(py_state), "gauss_next": py_gauss},
    }
    save_file(_contiguous(tensors), str(stem.with_suffix(".safetensors")))
    stem.with_suffix(".json").write_text(json.dumps(meta))


def load_rng_state(stem: Path) -> None:
    tensors = _load_tensors(stem.with_suffix(".safetensors"))
    meta = _load_json(stem.with_suffix(".json"))
    torch.set_rng_state(tensors["torch_cpu"])
    if torch.cuda.is_available():
        cuda_states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("torch_cuda_"))]
        if cuda_states:
            torch.cuda.set_rng_state_all(cuda_states)
    n = meta["numpy"]
    np.random.set_state((n["algorithm"], tensors["numpy_keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = meta["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))


def write_trainer_state(folder: Path, state: dict[str, Any]) -> None:
    """Write ``trainer_state.json`` (after every other file: it marks the folder complete), with every file's size."""
    manifest = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file() and p.name != STATE_FILE}
    (folder / STATE_FILE).write_text(json.dumps({**state, "files": manifest}, indent=2))


def read_trainer_state(folder: str | Path) -> dict[str, Any]:
    """Read a checkpoint folder's trainer_state.json and check that every file it lists has its recorded size."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"no checkpoint at {folder}: the folder does not exist")
    if not (folder / STATE_FILE).is_file():
        raise CheckpointError(f"{folder} is incomplete: {STATE_FILE} is missing (the save was interrupted?)")
    state = _load_json(folder / STATE_FILE)
    for name, size in state.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{folder} is incomplete: {name} is missing")
        if path.stat().st_size != size:
            raise CheckpointError(
                f"{path} is truncated or was modified: {path.stat().st_size} bytes instead of {size}; "
                "resume from an earlier checkpoint"
            )
    return state


def write_process_state(folder: Path, rank: int, state: dict[str, Any]) -> None:
    """``process_state_<rank>.json``: JSON values that differ between processes (e.g. the path-length mean)."""
    (Path(folder) / f"process_state_{rank}.json").write_text(json.dumps(state))


def read_process_state(folder: str | Path, rank: int) -> dict[str, Any]:
    return _load_json(Path(folder) / f"process_state_{rank}.json")
