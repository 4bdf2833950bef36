"""Accelerator settings for image training: TF32 and cuDNN autotuning, set as timm's train.py and the Trainer do.

:func:`configure_backends` is called once at the start of a training job. On a CUDA machine it

* allows TF32 for float32 matmuls and convolutions (Ampere and newer run float32 maths on tensor cores, with a
  10-bit mantissa; bf16 / fp16 autocast regions are unaffected). It follows ``TrainingArguments.tf32`` when that
  is set (``--tf32 true|false``), and otherwise turns TF32 on, as timm's ``train.py`` does;
* sets ``torch.backends.cudnn.benchmark = True``: image training feeds fixed-size batches, so cuDNN's one-off
  autotuning of each convolution pays for itself after a few steps (a last batch of another size tunes once more);

and returns the settings in force, for results files and logs. Without CUDA it changes nothing and returns the
current settings. PyTorch 2.9 introduced a new TF32 API (``fp32_precision``) and refuses a mix of old and new
calls; the new one is used when present.
"""

from __future__ import annotations

import os
from typing import Any

import torch

__all__ = ["configure_backends", "backend_settings", "default_dataloader_workers"]


def _new_tf32_api() -> bool:
    return hasattr(torch.backends.cuda.matmul, "fp32_precision") and hasattr(torch.backends.cudnn, "conv")


def _set_tf32(enabled: bool) -> None:
    if _new_tf32_api():
        precision = "tf32" if enabled else "ieee"
        torch.backends.cuda.matmul.fp32_precision = precision
        torch.backends.cudnn.conv.fp32_precision = precision
    else:  # PyTorch < 2.9
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled


def _tf32_state() -> tuple[bool, bool]:
    """(TF32 in float32 matmuls, TF32 in cuDNN convolutions) as PyTorch will apply them."""
    if _new_tf32_api():
        default = getattr(torch.backends, "fp32_precision", "none")

        def resolve(precision: str, unset: bool) -> bool:
            if precision == "none":
                precision = default
            return unset if precision == "none" else precision == "tf32"

        # PyTorch's own defaults: matmuls in IEEE float32, cuDNN convolutions in TF32
        return (resolve(torch.backends.cuda.matmul.fp32_precision, False),
                resolve(torch.backends.cudnn.conv.fp32_precision, True))
    return bool(torch.backends.cuda.matmul.allow_tf32), bool(torch.backends.cudnn.allow_tf32)


def backend_settings() -> dict[str, Any]:
    """The settings in force now (JSON-serialisable)."""
    cuda = torch.cuda.is_available()
    tf32_matmul, tf32_cudnn = _tf32_state()
    return {
        "cuda": cuda,
        "device_name": torch.cuda.get_device_name(0) if cuda else "cpu",
        "device_capability": ".".join(map(str, torch.cuda.get_device_capability(0))) if cuda else None,
        "torch": torch.__version__,
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if cuda else None,
        "tf32_matmul": tf32_matmul,
        "tf32_cudnn": tf32_cudnn,
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
    }


def configure_backends(tf32: bool | None = None, cudnn_benchmark: bool = True) -> dict[str, Any]:
    """Set TF32 and ``cudnn.benchmark`` for image training when CUDA is present; return the settings in force.

    Args:
        tf32: ``TrainingArguments.tf32``: True / False force TF32 on / off; None (the default) turns it on, as
            timm's ``train.py`` does (TF32 exists from Ampere on; older GPUs ignore the flag).
        cudnn_benchmark: autotune convolutions for the (fixed) input sizes. It is left off when
            ``torch.backends.cudnn.deterministic`` was asked for (``full_determinism``).
    """
    if torch.cuda.is_available():
        _set_tf32(True if tf32 is None else bool(tf32))
        if cudnn_benchmark and not torch.backends.cudnn.deterministic:
            torch.backends.cudnn.benchmark = True
    settings = backend_settings()
    settings["tf32_requested"] = tf32
    return settings


def default_dataloader_workers() -> int:
    """Data-loading processes when none are asked for: ``min(8, CPU cores)`` with CUDA, else 0 (on a CPU the
    training step needs the cores; benchmarks/bench_dataloading.py --mode step measured 0 workers as fast as any)."""
    return min(8, os.cpu_count() or 1) if torch.cuda.is_available() else 0
