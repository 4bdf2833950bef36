"""The method registry: every training method hubtune knows, by name.

    from hubtune.methods import create_method, available_methods

    method = create_method("core-tuning", {"eta": 0.1})      # validated CoreTuningConfig inside
    available_methods()                                       # ("core-tuning", "ce", "adaptivemix", ...)

A method is registered by decorating a :class:`~hubtune.methods.base.TrainingMethod` subclass with
:func:`register_method`; it is then available to ``HubtuneForImageClassification``, ``hubtune finetune``
(its knobs become flags), the Trainer callbacks and the model card, with no other file to change.
"""

from __future__ import annotations

from hubtune.methods.base import MethodConfig, MethodOutput, TrainingMethod
from hubtune.methods.registry import (
    available_methods,
    create_method,
    get_method,
    register_method,
    unregister_method,
)

# The built-in methods register themselves on import.
from hubtune.methods import core_tuning  # noqa: E402,F401  (isort: skip; the default method first)
from hubtune.methods import ce  # noqa: E402,F401  (isort: skip)
from hubtune.methods import adaptive_mix  # noqa: E402,F401  (isort: skip)
from hubtune.methods import l2_sp  # noqa: E402,F401  (isort: skip)
from hubtune.methods import bss  # noqa: E402,F401  (isort: skip)
from hubtune.methods import delta  # noqa: E402,F401  (isort: skip)
from hubtune.methods import co_tuning  # noqa: E402,F401  (isort: skip)

__all__ = [
    "MethodConfig",
    "MethodOutput",
    "TrainingMethod",
    "register_method",
    "unregister_method",
    "get_method",
    "available_methods",
    "create_method",
]
