"""Fine-tuning with the HF Trainer: the Trainer subclass, its callbacks and the ``hubtune finetune`` job.

Names are imported on first use, so that :mod:`hubtune.training.finetune_args` (the arguments and parser of
``hubtune finetune``) imports without the Trainer, the model classes or the data code.
"""

import importlib

_EXPORTS = {
    "configure_backends": "hubtune.devices",
    "HubtuneTrainer": "hubtune.training.trainer",
    "compute_accuracy": "hubtune.training.trainer",
    "last_checkpoint_in": "hubtune.training.trainer",
    "EtaWarmupCallback": "hubtune.training.callbacks",
    "LossWeightWarmupCallback": "hubtune.training.callbacks",
    "ModelArguments": "hubtune.training.finetune_args",
    "DataArguments": "hubtune.training.finetune_args",
    "FinetuneTrainingArguments": "hubtune.training.finetune_args",
    "method_arguments_class": "hubtune.training.finetune_args",
    "finetune_parser": "hubtune.training.finetune_args",
    "parse_finetune_args": "hubtune.training.finetune_args",
    "run_finetune": "hubtune.training.finetune",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hubtune.training' has no attribute {name!r}")
