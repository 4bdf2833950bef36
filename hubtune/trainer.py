"""HF Trainer integration: ``HubtuneTrainer`` and callbacks.

The loss itself lives in the model's forward (see :mod:`hubtune.modeling`); the Trainer subclass only
logs the loss components next to ``loss``, saves checkpoints in the resumable hubtune layout and the
final model in the backbone library's layout, and writes hubtune's model card.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR


def compute_accuracy(eval_pred) -> dict[str, float]:
    """``compute_metrics`` for Trainer: top-1 accuracy."""
    logits, labels = eval_pred
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    return {"accuracy": float((np.asarray(logits).argmax(-1) == np.asarray(labels)).mean())}


class HubtuneTrainer(Trainer):
    """A :class:`transformers.Trainer` for :class:`~hubtune.modeling.HubtuneForImageClassification`.

    * logs the loss components (``ce_loss``, ``contrastive_loss``, ``num_positive_pairs`` for Core-tuning;
      ``ce_loss``, ``shrinkage_loss`` for AdaptiveMix) averaged over the logging interval and processes;
    * returns a per-micro-batch mean loss, so Trainer divides it by the accumulation steps
      (``loss_is_scaled_for_ga = False``): accumulation 2 x B/2 gives the update of 1 x B;
    * saves ``checkpoint-*`` folders in the hubtune layout (projector kept, ``resume_from_checkpoint`` works)
      and the final model (``save_model()``, ``push_to_hub()``) in ``export_format`` (default: the backbone
      library's own layout);
    * writes hubtune's model card instead of Trainer's generic one.

    Args:
        dataset_name: recorded in the model card.
        export_format: layout of the final model, see ``HubtuneForImageClassification.save_pretrained``.
    """

    loss_is_scaled_for_ga = False

    def __init__(self, *args: Any, dataset_name: str | None = None, export_format: str = "auto", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.dataset_name = dataset_name
        self.export_format = export_format
        self._component_sums: dict[str, torch.Tensor] = {}
        self._component_count = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        if outputs.get("loss") is None:
            raise ValueError("The model returned no loss: the batch needs a 'labels' entry.")
        components = outputs.get("loss_components")
        if components and model.training:
            for key, value in components.items():
                value = value.detach().float()
                self._component_sums[key] = self._component_sums.get(key, 0) + value
            self._component_count += 1
        return (outputs["loss"], outputs) if return_outputs else outputs["loss"]

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs and self._component_count:
            for key, total in self._component_sums.items():
                mean = self.accelerator.reduce(total / self._component_count, reduction="mean")
                logs[key] = round(float(mean), 6)
            self._component_sums, self._component_count = {}, 0
            eta = getattr(getattr(self.accelerator.unwrap_model(self.model), "loss_fn", None), "eta", None)
            if eta is not None:
                logs["eta"] = float(eta)
        super().log(logs, *args, **kwargs)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir or self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        model = self.accelerator.unwrap_model(self.model)
        is_checkpoint = Path(output_dir).name.startswith(PREFIX_CHECKPOINT_DIR)
        model.save_pretrained(output_dir, export_format="hubtune" if is_checkpoint else self.export_format)
        # The training arguments as JSON, not Trainer's pickled training_args.bin.
        with open(os.path.join(output_dir, "training_args.json"), "w", encoding="utf-8") as f:
            f.write(self.args.to_json_string())

    def run_info(self, metrics: dict[str, float] | None = None) -> dict[str, Any]:
        """What the model card needs to know about this run."""
        from .hub import build_run_info

        return build_run_info(
            self.accelerator.unwrap_model(self.model),
            dataset=self.dataset_name,
            hyperparameters={
                "epochs": self.args.num_train_epochs,
                "max_steps": self.args.max_steps,
                "per_device_train_batch_size": self.args.per_device_train_batch_size,
                "gradient_accumulation_steps": self.args.gradient_accumulation_steps,
                "learning_rate": self.args.learning_rate,
                "weight_decay": self.args.weight_decay,
                "lr_scheduler_type": getattr(self.args.lr_scheduler_type, "value", self.args.lr_scheduler_type),
                "optimizer": getattr(self.args.optim, "value", self.args.optim),
                "seed": self.args.seed,
                "bf16": self.args.bf16,
            },
            metrics=metrics if metrics is not None else _last_eval_metrics(self.state.log_history),
            log_history=self.state.log_history,
        )

    def create_model_card(self, *args: Any, **kwargs: Any) -> None:
        if not self.is_world_process_zero():
            return
        from .hub import write_model_card

        repo_id = self.hub_model_id if getattr(self, "hub_model_id", None) else None
        write_model_card(self.args.output_dir, self.run_info(), repo_id=repo_id)


def _last_eval_metrics(log_history: list[dict[str, Any]]) -> dict[str, float]:
    for entry in reversed(log_history):
        if any(k.startswith("eval_") for k in entry):
            return {k: v for k, v in entry.items() if k.startswith("eval_")}
    return {}



class EtaWarmupCallback(TrainerCallback):
    """Ramp Core-tuning's contrastive weight ``eta`` linearly from 0 to its configured value.

    Args:
        warmup_steps: number of optimizer steps of the ramp; or
        warmup_ratio: fraction of the total steps (used when ``warmup_steps`` is None).
    """

    def __init__(self, warmup_steps: int | None = None, warmup_ratio: float = 0.1):
        if warmup_steps is not None and warmup_steps < 0:
            raise ValueError("warmup_steps must be >= 0.")
        if not 0 <= warmup_ratio <= 1:
            raise ValueError("warmup_ratio must lie in [0, 1].")
        self.warmup_steps = warmup_steps
        self.warmup_ratio = warmup_ratio
        self.target_eta: float | None = None

    @staticmethod
    def _loss(model):
        loss = getattr(model, "loss_fn", None)
        if loss is None or not hasattr(loss, "eta"):
            raise ValueError("EtaWarmupCallback needs a Core-tuning model (method='core-tuning').")
        return loss

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        loss = self._loss(model)
        if self.target_eta is None:
            self.target_eta = float(loss.eta)
        self._set(state, loss)

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        self._set(state, self._loss(model))

    def _set(self, state, loss) -> None:
        steps = self.warmup_steps if self.warmup_steps is not None else int(self.warmup_ratio * max(state.max_steps, 1))
        factor = 1.0 if steps == 0 else min(1.0, state.global_step / steps)
        loss.eta = self.target_eta * factor

