"""hubtune: Core-tuning and AdaptiveMix for timm and transformers backbones.

The public API, imported on first use so that ``import hubtune`` stays light:

* models: :class:`HubtuneForImageClassification`, :class:`HubtuneConfig`, :func:`create_backbone`
* losses: :class:`CoreTuningLoss`, :class:`AdaptiveMix`, :class:`AdaptiveMixClassifierLoss`
* training: :class:`HubtuneTrainer`, :class:`EtaWarmupCallback`, :func:`run_finetune`
* data: :func:`load_image_classification_data`
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "HubtuneForImageClassification": "hubtune.modeling",
    "HubtuneConfig": "hubtune.modeling",
    "create_backbone": "hubtune.backbones",
    "Backbone": "hubtune.backbones",
    "CoreTuningLoss": "hubtune.losses.core_tuning",
    "AdaptiveMix": "hubtune.losses.adaptive_mix",
    "AdaptiveMixClassifierLoss": "hubtune.losses.adaptive_mix",
    "HubtuneTrainer": "hubtune.trainer",
    "EtaWarmupCallback": "hubtune.trainer",
    "run_finetune": "hubtune.finetune",
    "load_image_classification_data": "hubtune.data",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hubtune' has no attribute {name!r}")
