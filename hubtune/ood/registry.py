"""The registries of OOD scores, ``OOD_SCORES``, and of named OOD sources, ``OOD_SOURCES`` (the one registry style,
:class:`hubtune.registry.Registry`).

A score is one :class:`OODScore` registered with :func:`register_ood_score`, from its own module; the
built-in ones are registered in :mod:`hubtune.ood.scores`. ``hubtune ood``, :func:`hubtune.ood.evaluate_ood` and
the reports look scores up here by name; nothing compares score names.

A named source is one :class:`OODSource` registered with :func:`register_ood_source`: it makes its images at the
in-distribution images' size and mode. The built-in ``noise`` and ``skimage-photos`` are registered in
:mod:`hubtune.ood.sources`; a source that is not a registered name is read as a dataset (folder, saved dataset,
Hub name).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence

import torch
from torch import Tensor

from hubtune.errors import OODError
from hubtune.registry import Registry

__all__ = ["DEFAULT_SCORES", "OODScore", "OODSource", "OOD_SCORES", "OOD_SOURCES", "get_ood_score",
           "register_ood_score", "register_ood_source", "resolve_scores", "unregister_ood_score", "unregister_ood_source"]

# The scores computed when none are named: the built-in ones (a plug-in score is asked for by name).
DEFAULT_SCORES = ("msp", "max-logit", "energy", "subspace", "mahalanobis")


@dataclass(frozen=True)
class OODScore:
    """A named OOD score.

    Attributes:
        name: registry name.
        reads: ``"logits"`` or ``"features"`` (pooled features as the classifier sees them).
        fitted: whether it is fitted on the training split's features and labels.
        description: one line for tables and help.
        build: ``build()`` (not fitted) or ``build(train_features, train_labels)`` (fitted) returns the function
            mapping logits or features (B, .) to scores (B,), higher = more in-distribution.
    """

    name: str
    reads: Literal["logits", "features"]
    fitted: bool
    description: str
    build: Callable[..., Callable[[Tensor], Tensor]]


def _check_score(score: OODScore) -> None:
    if not isinstance(score, OODScore):
        raise OODError(f"{score!r} must be an OODScore to be registered as an OOD score.")
    if score.reads not in ("logits", "features"):
        raise OODError(f"OOD score {score.name!r} must read 'logits' or 'features', not {score.reads!r}.")


OOD_SCORES: Registry[OODScore] = Registry("OOD score", OODError, _check_score)


def register_ood_score(score: OODScore) -> OODScore:
    """Make ``score`` available under ``score.name`` (to ``hubtune ood --score`` and :func:`evaluate_ood`)."""
    return OOD_SCORES.register(score)


def unregister_ood_score(name: str) -> None:
    """Remove a registered score (for tests and plug-ins)."""
    OOD_SCORES.unregister(name)


def get_ood_score(name: str) -> OODScore:
    """The registered score ``name``; an :class:`~hubtune.errors.OODError` listing the valid names otherwise."""
    return OOD_SCORES.get(name)


def resolve_scores(names: Sequence[str] | str | None) -> list[OODScore]:
    """The registered scores ``names`` (one name, a list, or None for ``DEFAULT_SCORES``), checked."""
    if names is None:
        names = DEFAULT_SCORES
    if isinstance(names, str):
        names = [names]
    specs = [get_ood_score(name) for name in names]
    if not specs:
        raise OODError(f"Give at least one OOD score; valid scores: {', '.join(OOD_SCORES)}.")
    return specs


@dataclass(frozen=True)
class OODSource:
    """A named OOD source that makes its own images (``hubtune ood --ood_dataset NAME``, ``out_data={"x": NAME}``).

    Attributes:
        name: registry name.
        description: one line for help and messages.
        images: ``images(num_images, (width, height), mode, generator)`` returns that many PIL images of that size
            and PIL mode (the in-distribution images'), drawing every random choice from the ``torch.Generator``.
    """

    name: str
    description: str
    images: Callable[[int, tuple[int, int], str, torch.Generator], list[Any]]


def _check_source(source: OODSource) -> None:
    if not isinstance(source, OODSource):
        raise OODError(f"{source!r} must be an OODSource to be registered as an OOD source.")


OOD_SOURCES: Registry[OODSource] = Registry("OOD source", OODError, _check_source)


def register_ood_source(source: OODSource) -> OODSource:
    """Make ``source`` available under ``source.name`` (to ``hubtune ood --ood_dataset`` and :func:`evaluate_ood`)."""
    return OOD_SOURCES.register(source)


def unregister_ood_source(name: str) -> None:
    """Remove a registered source (for tests and plug-ins)."""
    OOD_SOURCES.unregister(name)
