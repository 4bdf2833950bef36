"""The main job: fine-tune a timm / transformers backbone on an image-classification dataset.

``run_finetune`` is what ``hubtune finetune`` runs; examples call it too. It loads the data, builds a
:class:`~hubtune.modeling.HubtuneForImageClassification`, trains it with :class:`~hubtune.trainer.HubtuneTrainer`,
evaluates on the held-out split and writes a Hub-ready folder: the model in its backbone library's
layout, ``README.md`` (model card), ``all_results.json`` (as the HF examples write it) and
``hubtune_run.json``; ``checkpoint-*`` folders allow ``resume_from_checkpoint``.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch

from .data import build_transforms, collate_image_batch, load_image_classification_data, with_transforms
from .modeling import HubtuneForImageClassification
from .hub import write_run_info
from .trainer import EtaWarmupCallback, HubtuneTrainer, compute_accuracy

logger = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "model": "resnet18",
    "dataset": "digits",
    "method": "core-tuning",
    "epochs": 5,
    "batch_size": 64,
    "lr": 1e-3,
    "eta": 0.1,
    "image_size": 32,
    "output_dir": "hubtune-output",
    "seed": 0,
}


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, optimizer: str) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum 0.9 (Core-tuning's recipe) or AdamW; no weight decay on biases and norms."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    if optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ValueError(f"optimizer must be 'sgd' or 'adamw', not {optimizer!r}.")


def run_finetune(
    model: str = DEFAULTS["model"],
    dataset: Any = DEFAULTS["dataset"],
    method: str = DEFAULTS["method"],
    method_preset: str = "paper",
    epochs: float = DEFAULTS["epochs"],
    batch_size: int = DEFAULTS["batch_size"],
    lr: float = DEFAULTS["lr"],
    eta: float = DEFAULTS["eta"],
    image_size: int | None = DEFAULTS["image_size"],
    output_dir: str = DEFAULTS["output_dir"],
    pretrained: bool = False,
    seed: int = DEFAULTS["seed"],
    optimizer: str = "adamw",
    weight_decay: float = 1e-4,
    gradient_accumulation_steps: int = 1,
    bf16: bool = False,
    eta_warmup_ratio: float = 0.0,
    loss_kwargs: dict[str, Any] | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    eval_fraction: float = 0.2,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    resume_from_checkpoint: str | bool | None = None,
    push_to_hub: str | None = None,
    private: bool = False,
    revision: str | None = None,
    hub_token: str | None = None,
    export_format: str = "auto",
    max_steps: int = -1,
    report_to: str = "none",
    disable_tqdm: bool = False,
    dataloader_num_workers: int = 0,
) -> dict[str, float]:
    """Fine-tune ``model`` on ``dataset`` with ``method``; returns the final metrics (``eval_accuracy``, ...)."""
    from transformers import TrainingArguments, set_seed

    if batch_size < 1:
        raise ValueError("batch_size must be at least 1.")
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}.")
    if push_to_hub is not None:
        from .hub import validate_repo_id

        validate_repo_id(push_to_hub)
    set_seed(seed)
    started = time.perf_counter()
    data = load_image_classification_data(
        dataset,
        image_column=image_column,
        label_column=label_column,
        eval_fraction=eval_fraction,
        seed=seed,
        max_train_samples=max_train_samples,
        max_eval_samples=max_eval_samples,
    )
    kwargs = dict(loss_kwargs or {})
    if method == "core-tuning":
        kwargs.setdefault("eta", eta)
    net = HubtuneForImageClassification.from_backbone(
        model,
        id2label=data.id2label,
        pretrained=pretrained,
        method=method,
        method_preset=method_preset,
        image_size=image_size,
        loss_kwargs=kwargs,
    )
    if not pretrained:
        print(f"Note: backbone {model!r} starts from random weights (pass --pretrained to load pretrained weights).")
    preprocessing = net.preprocessing
    train_ds = with_transforms(data.train, build_transforms(preprocessing, train=True))
    eval_ds = with_transforms(data.eval, build_transforms(preprocessing, train=False))

    out = Path(output_dir)
    args = TrainingArguments(
        output_dir=str(out),
        num_train_epochs=epochs,
        max_steps=max_steps,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=max(batch_size, 64),
        gradient_accumulation_steps=gradient_accumulation_steps,
        learning_rate=lr,
        weight_decay=weight_decay,
        lr_scheduler_type="cosine",
        warmup_steps=0,
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=1,
        logging_strategy="steps",
        logging_steps=max(1, min(10, math.ceil(len(train_ds) / batch_size) // 2)),
        remove_unused_columns=False,
        seed=seed,
        data_seed=seed,
        bf16=bf16,
        report_to=report_to,
        disable_tqdm=disable_tqdm,
        dataloader_num_workers=dataloader_num_workers,
        push_to_hub=False,
        use_cpu=not torch.cuda.is_available(),
    )
    callbacks = [EtaWarmupCallback(warmup_ratio=eta_warmup_ratio)] if method == "core-tuning" and eta_warmup_ratio > 0 else []
    trainer = HubtuneTrainer(
        model=net,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        data_collator=collate_image_batch,
        compute_metrics=compute_accuracy,
        optimizers=(build_optimizer(net, lr, weight_decay, optimizer), None),
        callbacks=callbacks,
        dataset_name=data.name,
        export_format=export_format,
    )
    train_result = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    metrics = dict(train_result.metrics)
    eval_metrics = trainer.evaluate()
    metrics.update(eval_metrics)
    metrics["eval_samples"] = len(eval_ds)
    metrics["train_samples"] = len(train_ds)
    elapsed = time.perf_counter() - started

    trainer.save_model()
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_metrics("eval", eval_metrics)
    trainer.save_metrics("all", metrics)
    trainer.save_state()
    run_info = trainer.run_info(metrics={k: v for k, v in metrics.items() if k.startswith("eval_")})
    run_info["hyperparameters"].update({"epochs": epochs, "batch_size": batch_size, "optimizer": optimizer})
    if trainer.is_world_process_zero():
        write_run_info(out, run_info)
        from .hub import write_model_card

        write_model_card(out, run_info, repo_id=push_to_hub)
    print(
        f"{method} on {data.name} with {model}: eval_accuracy={metrics.get('eval_accuracy', float('nan')):.4f} "
        f"in {elapsed:.1f} s; model, card and metrics in {out.resolve()}"
    )
    if push_to_hub is not None and trainer.is_world_process_zero():
        from .hub import push_folder

        url = push_folder(out, push_to_hub, token=hub_token, private=private, revision=revision)
        print(f"Pushed to {url}")
    return metrics

