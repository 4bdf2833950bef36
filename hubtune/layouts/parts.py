"""The plain parts of a classifier that every layout writes and reads: no model class involved."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from hubtune.errors import ExportError

__all__ = ["ClassifierParts", "split_head"]


@dataclass
class ClassifierParts:
    """A classifier as plain values.

    spec: the backbone spec (see :mod:`hubtune.backbones`); preprocessing: a PreprocessingConfig dict;
    id2label: class names; backbone_state: the backbone library model's state dict without its head;
    head_weight / head_bias: the linear classifier (bias may be None); source: where it came from (messages).
    """

    spec: dict[str, Any]
    preprocessing: dict[str, Any]
    id2label: dict[int, str]
    backbone_state: dict[str, torch.Tensor]
    head_weight: torch.Tensor
    head_bias: torch.Tensor | None
    source: str = ""

    @property
    def num_labels(self) -> int:
        return int(self.head_weight.shape[0])

    def label_names(self) -> list[str]:
        return [self.id2label.get(i, f"LABEL_{i}") for i in range(self.num_labels)]


def split_head(state: dict[str, torch.Tensor], headless_keys: set[str], source: str):
    """(backbone state, head weight, head bias) of a library state dict, given the headless model's keys."""
    extra = {k: v for k, v in state.items() if k not in headless_keys}
    weights = [k for k, v in extra.items() if v.ndim == 2]
    biases = [k for k, v in extra.items() if v.ndim == 1]
    if len(weights) != 1 or len(biases) > 1 or len(extra) != len(weights) + len(biases):
        raise ExportError(
            f"Cannot find a single linear classifier in the weights of {source!r} (head parameters: "
            f"{sorted(extra)}); hubtune only loads plain linear classification heads."
        )
    backbone_state = {k: v for k, v in state.items() if k in headless_keys}
    return backbone_state, extra[weights[0]], (extra[biases[0]] if biases else None)


def head_keys(full: dict[str, torch.Tensor], headless: dict[str, torch.Tensor], num_labels: int, dim: int,
              where: str) -> tuple[str, str | None]:
    """(weight key, bias key) of a library classifier: the keys the C-class model has and the headless one lacks."""
    extra = {k: v for k, v in full.items() if k not in headless}
    weight = [k for k, v in extra.items() if tuple(v.shape) == (num_labels, dim)]
    bias = [k for k, v in extra.items() if tuple(v.shape) == (num_labels,)]
    if len(weight) != 1 or len(bias) > 1 or len(extra) != len(weight) + len(bias):
        raise ExportError(
            f"{where}: cannot find a single linear classifier ({num_labels}x{dim}) among the head parameters "
            f"{sorted(extra)}; this architecture's head is not a plain linear layer. Use export_format='hubtune'."
        )
    return weight[0], (bias[0] if bias else None)


def head_state(parts: ClassifierParts, weight_key: str, bias_key: str | None) -> dict[str, torch.Tensor]:
    """The library classifier's state from the parts (a missing bias becomes zeros; a lost non-zero bias is an error)."""
    state = {weight_key: parts.head_weight.detach().clone()}
    if bias_key is not None:
        state[bias_key] = (parts.head_bias.detach().clone() if parts.head_bias is not None
                           else torch.zeros(parts.num_labels))
    elif parts.head_bias is not None and bool(parts.head_bias.detach().abs().max() > 0):
        raise ExportError("The library's classifier has no bias but the hubtune classifier has a non-zero one.")
    return state
