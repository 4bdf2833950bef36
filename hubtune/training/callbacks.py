"""Trainer callbacks: the warm-up of a method's loss weight (Core-tuning's ``eta``) and the method's preparation on the
training data."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from transformers import TrainerCallback

from hubtune.distributed import get_rank, get_world_size

from hubtune.errors import ConfigError, MethodError

__all__ = ["LossWeightWarmupCallback", "EtaWarmupCallback", "MethodPreparationCallback"]


class LossWeightWarmupCallback(TrainerCallback):
    """Ramp a weight of the model's loss module linearly from 0 to its configured value.

    Args:
        attribute: the loss module's attribute to ramp (Core-tuning: ``"eta"``); None asks the model's
            method (its ``weight_attribute``).
        warmup_steps: number of optimizer steps of the ramp; or
        warmup_ratio: fraction of the total steps (used when ``warmup_steps`` is None).
    """

    def __init__(self, attribute: str | None = None, warmup_steps: int | None = None, warmup_ratio: float = 0.1):
        if warmup_steps is not None and warmup_steps < 0:
            raise ConfigError("warmup_steps must be >= 0.")
        if not 0 <= warmup_ratio <= 1:
            raise ConfigError("warmup_ratio must lie in [0, 1].")
        self.attribute = attribute
        self.warmup_steps = warmup_steps
        self.warmup_ratio = warmup_ratio
        self.target: float | None = None

    def _loss(self, model):
        method = getattr(model, "method", None)
        attribute = self.attribute or getattr(method, "weight_attribute", None)
        loss = getattr(model, "loss_fn", None)
        if attribute is None or loss is None or not hasattr(loss, attribute):
            name = getattr(method, "name", type(model).__name__)
            raise MethodError(
                f"{type(self).__name__}: the {name!r} method's loss has no weight "
                f"{repr(attribute) if attribute else ''} to warm up; drop the warm-up or use a method that has one "
                "(Core-tuning's eta)."
            )
        self.attribute = attribute
        return loss

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        loss = self._loss(model)
        if self.target is None:
            self.target = float(getattr(loss, self.attribute))
        self._set(state, loss)

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        self._set(state, self._loss(model))

    def _set(self, state, loss) -> None:
        steps = self.warmup_steps if self.warmup_steps is not None else int(self.warmup_ratio * max(state.max_steps, 1))
        factor = 1.0 if steps == 0 else min(1.0, state.global_step / steps)
        setattr(loss, self.attribute, self.target * factor)


class EtaWarmupCallback(LossWeightWarmupCallback):
    """Ramp Core-tuning's contrastive weight ``eta`` linearly from 0 to its configured value."""

    def __init__(self, warmup_steps: int | None = None, warmup_ratio: float = 0.1):
        super().__init__("eta", warmup_steps=warmup_steps, warmup_ratio=warmup_ratio)


class MethodPreparationCallback(TrainerCallback):
    """Run the model's method's ``prepare`` before the first step (Co-Tuning computes its category relationship
    there, DELTA its channel attention; the other methods do nothing). ``HubtuneTrainer`` adds it itself.

    ``dataset`` holds the training images under the evaluation transform, as the references compute these quantities
    (see :meth:`hubtune.methods.TrainingMethod.prepare`); each process reads its own interleaved part (``rank::world``,
    no padding, so nothing is counted twice), in an order shuffled with the run's seed (a class-sorted image folder
    would otherwise give DELTA's first batches a few classes only; the authors' loader shuffles too, DELTA
    channel_eval.py:65-67) from a generator of its own, so that nothing is drawn from the global random state.
    Without it the training dataloader is used, with a warning.
    """

    def __init__(self, dataset: Any = None, collate_fn: Any = None, batch_size: int = 64):
        self.dataset = dataset
        self.collate_fn = collate_fn
        self.batch_size = batch_size

    def _loader(self, seed: int):
        from torch.utils.data import DataLoader, Subset

        part = Subset(self.dataset, range(get_rank(), len(self.dataset), get_world_size()))
        order = torch.Generator().manual_seed(int(seed))
        return DataLoader(part, batch_size=self.batch_size, shuffle=True, generator=order, collate_fn=self.collate_fn)

    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        method = getattr(model, "method", None)
        if method is None or not method.needs_preparation():
            return
        if self.dataset is not None:
            method.prepare(model, self._loader(args.seed))
        elif train_dataloader is not None:
            warnings.warn(
                f"{method.name} prepares on the training images under the evaluation transform, as its reference "
                "does, but the Trainer got no preparation_dataset: using the training dataloader (random crops and "
                "flips) instead. Pass HubtuneTrainer(preparation_dataset=with_transforms(train, "
                "build_transforms(model.preprocessing, train=False)), ...).", UserWarning, stacklevel=2)
            method.prepare(model, train_dataloader)
