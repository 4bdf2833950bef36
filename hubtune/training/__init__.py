"""Fine-tuning with the HF Trainer: the Trainer subclass, its callbacks and the ``hubtune finetune`` job."""

from hubtune.devices import configure_backends
from hubtune.training.callbacks import EtaWarmupCallback, LossWeightWarmupCallback
from hubtune.training.finetune import (
    DataArguments,
    FinetuneTrainingArguments,
    ModelArguments,
    finetune_parser,
    method_arguments_class,
    parse_finetune_args,
    run_finetune,
)
from hubtune.training.trainer import HubtuneTrainer, compute_accuracy, last_checkpoint_in

__all__ = [
    "configure_backends",
    "HubtuneTrainer",
    "compute_accuracy",
    "last_checkpoint_in",
    "EtaWarmupCallback",
    "LossWeightWarmupCallback",
    "ModelArguments",
    "DataArguments",
    "FinetuneTrainingArguments",
    "method_arguments_class",
    "finetune_parser",
    "parse_finetune_args",
    "run_finetune",
]
