"""hubtune: Core-tuning and AdaptiveMix for timm and transformers backbones.

The public API:

* models: :class:`HubtuneForImageClassification`, :class:`HubtuneConfig`, :func:`create_backbone`
* methods: :func:`create_method`, :func:`register_method`, :func:`available_methods` (see :mod:`hubtune.methods`)
* losses: :class:`CoreTuningLoss`, :class:`AdaptiveMix`, :class:`AdaptiveMixClassifierLoss`
* training: :class:`HubtuneTrainer`, :class:`EtaWarmupCallback`, :func:`parse_finetune_args`, :func:`run_finetune`
* data: :func:`load_image_classification_data`
* errors: :class:`HubtuneError` and its subclasses (:mod:`hubtune.errors`)

Importing hubtune registers ``model_type="hubtune"`` with transformers' ``AutoConfig`` and
``AutoModelForImageClassification`` (when transformers is imported, see :mod:`hubtune._auto_classes`), so a
hubtune-layout folder (a ``checkpoint-*`` folder, say) loads through them. Every other name is imported on first
use: ``import hubtune`` imports neither torch nor transformers.
"""

import importlib
import importlib.util

__version__ = "0.2.0"

from hubtune import _auto_classes  # noqa: E402
from hubtune._lazy import lazy_exports  # noqa: E402
from hubtune.errors import HubtuneError  # noqa: E402

_auto_classes.install()

_EXPORTS = {
    "HubtuneConfig": "hubtune.modeling",
    "HubtuneForImageClassification": "hubtune.modeling",
    "create_backbone": "hubtune.backbones",
    "Backbone": "hubtune.backbones",
    "create_method": "hubtune.methods",
    "register_method": "hubtune.methods",
    "available_methods": "hubtune.methods",
    "CoreTuningLoss": "hubtune.losses.core_tuning",
    "AdaptiveMix": "hubtune.losses.adaptive_mix",
    "AdaptiveMixClassifierLoss": "hubtune.losses.adaptive_mix",
    "HubtuneTrainer": "hubtune.training",
    "EtaWarmupCallback": "hubtune.training",
    "parse_finetune_args": "hubtune.training",
    "run_finetune": "hubtune.training",
    "load_image_classification_data": "hubtune.data",
}

__all__ = ["__version__", "HubtuneError", *_EXPORTS]


def _submodule(name):
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")  # hubtune.modeling etc., as an eager import allowed
    raise AttributeError(f"module 'hubtune' has no attribute {name!r}")


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals(), fallback=_submodule)
