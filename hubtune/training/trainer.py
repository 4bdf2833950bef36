"""``HubtuneTrainer``: the HF Trainer for :class:`~hubtune.modeling.HubtuneForImageClassification`.

The loss lives in the model's forward (its training method, see :mod:`hubtune.methods`); the Trainer subclass
logs the loss components next to ``loss``, stops at the first non-finite loss, saves checkpoints in the
resumable hubtune layout and the final model in the backbone library's layout, and writes hubtune's card.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from hubtune.errors import CheckpointError, ConfigError, NonFiniteLossError, WeightsFileError
from hubtune.hub import write_model_card
from hubtune.layouts import read_config
from hubtune.manifest import write_manifest
from hubtune.runs.checkpoints import (
    checkpoint_step,
    last_complete,
    publish_checkpoint,
    refuse_past_the_end,
    resolve_resume,
    staging_folder,
)
from hubtune.training.callbacks import MethodPreparationCallback
from hubtune.training.param_groups import (
    check_parts,
    decay_parameter_names,
    describe_parameter_groups,
    parse_lr_multipliers,
    split_by_part,
)
from hubtune.training.recipes import (
    SOURCE_RECIPE,
    Setting,
    recipe_conflicts,
    resolve_training_settings,
    settings_to_json,
)

__all__ = ["HubtuneTrainer", "compute_accuracy", "last_checkpoint_in"]


def compute_accuracy(eval_pred) -> dict[str, float]:
    """``compute_metrics`` for Trainer: top-1 accuracy."""
    logits, labels = eval_pred
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    return {"accuracy": float((np.asarray(logits).argmax(-1) == np.asarray(labels)).mean())}


last_checkpoint_in = last_complete  # the newest complete checkpoint-N folder (the name hubtune.training exports)


def _check_weights_readable(checkpoint: Path) -> None:
    from safetensors import safe_open

    path = checkpoint / "model.safetensors"
    if not path.is_file():
        raise CheckpointError(f"{checkpoint} has no model.safetensors; it is not a complete hubtune checkpoint.")
    try:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                f.get_slice(key)
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for a damaged file
        raise WeightsFileError(f"{path} is truncated or corrupt ({type(e).__name__}); resume from an earlier "
                               "checkpoint (give its folder to --resume_from_checkpoint).") from e


def _checkpoint_to_resume(output_dir: str | os.PathLike, resume: str | bool | None, model_config: Any) -> str | None:
    """The checkpoint folder to resume from (:func:`hubtune.runs.checkpoints.resolve_resume`: the last complete,
    unchanged one for ``True``, or the given folder after checking it), its weights readable and, given
    ``model_config``, of this model."""
    checkpoint = resolve_resume(output_dir, resume, check_files=_check_weights_readable)
    if checkpoint is None:
        return None
    if model_config is not None:
        _check_same_model(checkpoint, model_config)
    return str(checkpoint)


def _identity(config: dict[str, Any]) -> dict[str, Any]:
    """What must agree between a checkpoint and the model resuming from it."""
    spec = config.get("backbone_spec") if isinstance(config.get("backbone_spec"), dict) else {}
    return {"backbone": spec.get("architecture") or spec.get("config", {}).get("model_type"),
            "backbone_name": config.get("backbone_name"), "num_labels": len(config.get("id2label") or {}),
            "method": config.get("method")}


def _check_same_model(checkpoint: Path, model_config: Any) -> None:
    saved, current = _identity(read_config(str(checkpoint))), _identity(model_config.to_dict())
    differ = [k for k in saved if saved[k] != current[k]]
    if differ:
        raise CheckpointError(
            f"{checkpoint} holds another model than this run ("
            + ", ".join(f"{k}: checkpoint {saved[k]!r} vs now {current[k]!r}" for k in differ)
            + "); resume with the same model, labels and method, or use another output folder."
        )


class HubtuneTrainer(Trainer):
    """A :class:`transformers.Trainer` for :class:`~hubtune.modeling.HubtuneForImageClassification`.

    * logs the method's loss components (``ce_loss``, ``contrastive_loss``, ``num_positive_pairs`` for
      Core-tuning; ``ce_loss``, ``shrinkage_loss`` for AdaptiveMix) averaged over the logging interval and
      processes, and the method's current weights (``eta``);
    * returns a per-micro-batch mean loss, so Trainer divides it by the accumulation steps
      (``loss_is_scaled_for_ga = False``): accumulation 2 x B/2 gives the update of 1 x B;
    * stops at the first non-finite training loss (:class:`~hubtune.errors.NonFiniteLossError`, naming the step
      and the last good checkpoint); nothing is saved after it;
    * decays only weights with two or more dimensions (no decay on biases and normalisation parameters; every
      parameter with ``filter_bias_and_bn=False``), and none where the method's own penalty replaces weight decay
      (``TrainingMethod.no_weight_decay``: L2-SP, DELTA);
    * trains each part of the model at its own learning rate when the arguments carry ``lr_multipliers``
      (``FinetuneTrainingArguments``; the recipes of tllib's baselines train the backbone at 0.1x), through
      Trainer's ``create_optimizer`` hook, and records every part's rate (``parameter_groups()``);
    * runs the method's ``prepare`` before the first step (Co-Tuning's category relationship, DELTA's channel
      attention) on ``preparation_dataset``: the training images under the evaluation transform;
    * saves ``checkpoint-*`` folders in the hubtune layout (training heads kept, ``resume_from_checkpoint``
      works) and the final model (``save_model()``, ``push_to_hub()``) in ``export_format`` (default: the
      backbone library's own layout); writes hubtune's model card instead of Trainer's generic one.

    * warns once when an argument left at its transformers default contradicts the training recipe of the model's
      method (``max_grad_norm=1.0`` under Core-tuning's unclipped SGD, for example): ``hubtune finetune`` and
      ``run_finetune`` apply the recipe, plain ``TrainingArguments`` do not (see :mod:`hubtune.training.recipes`).

    Args:
        dataset_name: recorded in the model card.
        export_format: layout of the final model, see ``HubtuneForImageClassification.save_pretrained``.
        training_settings: the effective training settings and their sources, when the caller resolved the
            method's recipe (``run_finetune`` does); recorded in ``hubtune_run.json`` and the card.
        knob_sources: where the method's knobs came from (given / recipe), recorded beside them.
        preparation_dataset: the training images under the evaluation transform (``with_transforms(train,
            build_transforms(preprocessing, train=False))``), for methods that prepare on the training data
            (:meth:`~hubtune.methods.TrainingMethod.prepare`); without it they get the training dataloader and
            a warning.
    """

    loss_is_scaled_for_ga = False

    def __init__(self, *args: Any, dataset_name: str | None = None, export_format: str = "auto",
                 training_settings: Mapping[str, Setting] | None = None,
                 knob_sources: Mapping[str, Setting] | None = None, preparation_dataset: Any = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # the method's work on the training data (Co-Tuning's relationship, DELTA's attention)
        self.add_callback(MethodPreparationCallback(preparation_dataset, self.data_collator,
                                                    self.args.per_device_eval_batch_size))
        self._staging_dir: Path | None = None
        self.dataset_name = dataset_name
        self.export_format = export_format
        self._component_sums: dict[str, torch.Tensor] = {}
        self._component_count = 0
        self._resumed_at_step = 0
        unwrapped = self.accelerator.unwrap_model(self.model)
        method = getattr(unwrapped, "method", None)
        if training_settings is None and method is not None:
            pretrained = bool(getattr(getattr(unwrapped, "config", None), "backbone_spec", {}).get("pretrained", True))
            if pretrained:  # a fine-tuning recipe says nothing about training from random weights
                self._warn_about_recipe_conflicts(method)
            training_settings = resolve_training_settings(method, self.args, None, use_recipe=False)
        self.training_settings = dict(training_settings or {})
        self.knob_sources = dict(knob_sources or {})

    def _warn_about_recipe_conflicts(self, method: Any) -> None:
        conflicts = recipe_conflicts(method, self.args)
        if conflicts and self.is_world_process_zero():
            listed = "; ".join(f"{name}={now!r} (the recipe uses {wanted!r})" for name, (now, wanted) in conflicts.items())
            warnings.warn(
                f"These TrainingArguments are still at transformers' defaults and contradict the training recipe of "
                f"{method.name!r} ({method.recipe_source or 'its recipe'}): {listed}. Set them as the recipe does, or "
                "set them explicitly to keep them; `hubtune finetune` and `run_finetune` apply the recipe for you "
                "(docs/methods.md, 'Training recipes').",
                UserWarning, stacklevel=3,
            )

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any):
        """Trainer's ``train``; ``resume_from_checkpoint=True`` takes the last COMPLETE checkpoint, and a
        checkpoint of another model is refused with a message naming both."""
        model_config = getattr(self.accelerator.unwrap_model(self.model), "config", None)
        resume = _checkpoint_to_resume(self.args.output_dir, resume_from_checkpoint, model_config)
        self._resumed_at_step = checkpoint_step(resume)
        if resume is not None:
            refuse_past_the_end(resume, self.args.max_steps, self.args.num_train_epochs)
        return super().train(resume, *args, **kwargs)

    # Kept on Trainer's private _save_checkpoint / _get_output_dir: the public on_save callback runs after Trainer has
    # written checkpoint-N in place, and no public hook chooses where it writes, so only these overrides make a save
    # all-or-nothing (tests/training/test_trainer.py::test_a_checkpoint_save_that_dies_half_way_leaves_no_checkpoint_folder).
    def _get_output_dir(self, trial) -> str:
        return str(self._staging_dir) if self._staging_dir is not None else super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        """Write ``checkpoint-N`` under a temporary name and rename it once complete, with its ``SHA256SUMS`` (one
        process; :mod:`hubtune.runs.checkpoints`); a save that is interrupted (kill -9, full disk) leaves the earlier
        checkpoints as they were and no half-written one."""
        run_dir = Path(super()._get_output_dir(trial))
        final = run_dir / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        if self.args.world_size > 1 or self.is_deepspeed_enabled or self.is_fsdp_enabled:
            super()._save_checkpoint(model, trial)  # every rank writes its part in place
            self.accelerator.wait_for_everyone()
            if self.is_world_process_zero():
                write_manifest(final)
            return None
        self._staging_dir = staging_folder(final)
        try:
            super()._save_checkpoint(model, trial)  # into <staging>/checkpoint-N
        finally:
            staging, self._staging_dir = self._staging_dir, None
        if self.state.best_model_checkpoint and str(staging) in self.state.best_model_checkpoint:
            self.state.best_model_checkpoint = str(final)
            self.state.save_to_json(str(staging / final.name / "trainer_state.json"))
        publish_checkpoint(staging / final.name, final, best=self.state.best_model_checkpoint,
                           keep=self.args.save_total_limit if self.args.should_save else None)
        shutil.rmtree(staging, ignore_errors=True)

    def get_decay_parameter_names(self, model: torch.nn.Module) -> list[str]:
        method = getattr(self.accelerator.unwrap_model(model), "method", None)
        replaced = method.no_weight_decay(model) if method is not None else set()  # L2-SP's penalty replaces it
        return decay_parameter_names(model, bool(getattr(self.args, "filter_bias_and_bn", True)), replaced)

    def _lr_multipliers(self) -> dict[str, float]:
        return parse_lr_multipliers(getattr(self.args, "lr_multipliers", None))

    def _pretrained_parts(self) -> tuple[str, ...]:
        return tuple(getattr(getattr(self.accelerator.unwrap_model(self.model), "method", None), "pretrained_parts", ()))

    def create_optimizer(self, model=None):
        """Trainer's optimizer, its parameter groups split by model part at ``lr_multipliers`` (a stated reason to
        override: Trainer has no hook for per-group learning rates; weight decay keeps its own hook)."""
        fresh = self.optimizer is None
        optimizer = super().create_optimizer(model)
        multipliers = self._lr_multipliers()
        if fresh and multipliers:
            opt_model = self.model if model is None else model
            setting = self.training_settings.get("lr_multipliers")
            if setting is None or setting.source != SOURCE_RECIPE:  # another method's recipe may name other parts
                check_parts(opt_model, multipliers)
            if not isinstance(optimizer, torch.optim.Optimizer):
                raise ConfigError(f"lr_multipliers needs a torch optimizer with parameter groups; --optim "
                                  f"{self.args.optim} builds {type(optimizer).__name__}. Drop --lr_multipliers or "
                                  "choose sgd / adamw_torch.")
            split_by_part(optimizer, opt_model, multipliers, self._pretrained_parts())
        return optimizer

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Each trainable part of the model with its learning rate, multiplier and weight decay (plain values)."""
        model = self.accelerator.unwrap_model(self.model)
        return describe_parameter_groups(model, self.args.learning_rate, self.args.weight_decay,
                                         self.get_decay_parameter_names(model), self._lr_multipliers(),
                                         self._pretrained_parts())

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

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        # One host read per step: the loss and every gradient norm in a single device-side flag.
        gradients = [p.grad for p in model.parameters() if p.grad is not None]
        parts = [loss.detach().float().reshape(-1)]
        if gradients:
            parts.append(torch.stack(torch._foreach_norm(gradients)).float().to(loss.device))
        if not bool(torch.isfinite(torch.cat(parts)).all()):
            if not bool(torch.isfinite(loss).all()):
                self._stop_on_non_finite(f"the training loss is {float(loss.detach().float().mean())}")
            self._stop_on_non_finite("a gradient is NaN or infinite")
        return loss

    def _stop_on_non_finite(self, what: str) -> None:
        step = self.state.global_step + 1
        last = last_checkpoint_in(self.args.output_dir)
        kept = (f"the last good checkpoint is {last} (resume with --resume_from_checkpoint {last})" if last
                else "no checkpoint had been written yet")
        raise NonFiniteLossError(
            f"step {step}: {what}; training stopped before the update and nothing more was saved ({kept}). "
            f"Likely causes: a learning rate too high (now {self.args.learning_rate:g}) or NaN / inf values in the "
            "input images. Lower --learning_rate (or add warm-up) and check the data."
        )

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "train_loss" in logs and "train_runtime" in logs and self._resumed_at_step:
            # the end-of-training metrics: one train_loss (the whole run's) in the printed line, trainer_state.json,
            # train_results.json and all_results.json (the dict logged here is train()'s metrics)
            logs["train_loss"] = whole_run_train_loss(logs["train_loss"], self._resumed_at_step,
                                                      self.state.global_step, self.state.log_history)
        if "loss" in logs and self._component_count:
            for key, total in self._component_sums.items():
                mean = self.accelerator.reduce(total / self._component_count, reduction="mean")
                logs[key] = round(float(mean), 6)
            self._component_sums, self._component_count = {}, 0
            model = self.accelerator.unwrap_model(self.model)
            method = getattr(model, "method", None)
            if method is not None:
                logs.update(method.logged_values(getattr(model, "loss_fn", None)))
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
        """What the model card needs to know about this run (plain values)."""
        info = self.accelerator.unwrap_model(self.model).run_info(
            dataset=self.dataset_name,
            hyperparameters={name: setting.value for name, setting in self.training_settings.items()},
            metrics=metrics if metrics is not None else _last_eval_metrics(self.state.log_history),
            log_history=self.state.log_history,
        )
        info["training_settings"] = settings_to_json({**self.training_settings, **self.knob_sources})
        info["parameter_groups"] = self.parameter_groups()
        return info

    def create_model_card(self, *args: Any, **kwargs: Any) -> None:
        if not self.is_world_process_zero():
            return
        repo_id = self.hub_model_id if getattr(self, "hub_model_id", None) else None
        write_model_card(self.args.output_dir, self.run_info(), repo_id=repo_id)


def whole_run_train_loss(resumed_loss: float, resumed_at: int, end: int, log_history: list[dict[str, Any]]) -> float:
    """The mean training loss of a resumed run's steps 1..end: Trainer's ``train_loss`` covers the steps after
    ``resumed_at`` only; the steps before it are taken from the logged losses up to ``resumed_at`` (each weighted
    by the steps it covers; steps after the last log before the checkpoint count at that mean)."""
    previous, total, covered = 0, 0.0, 0
    for entry in log_history:
        if "loss" in entry and "step" in entry and previous < entry["step"] <= resumed_at:
            steps = entry["step"] - previous
            total, covered, previous = total + float(entry["loss"]) * steps, covered + steps, entry["step"]
    if not covered or end <= resumed_at:
        return resumed_loss
    return (total / covered * resumed_at + resumed_loss * (end - resumed_at)) / end


def _last_eval_metrics(log_history: list[dict[str, Any]]) -> dict[str, float]:
    for entry in reversed(log_history):
        if any(k.startswith("eval_") for k in entry):
            return {k: v for k, v in entry.items() if k.startswith("eval_")}
    return {}
