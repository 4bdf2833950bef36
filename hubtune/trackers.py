"""Experiment trackers (``--report_to`` for finetune, ``--log_with`` for gan): a missing package is one line,
before anything is loaded or trained, naming what to install."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable

from hubtune.errors import ConfigError

__all__ = ["TRACKER_PACKAGES", "check_trackers_installed"]

# tracker name (transformers' report_to / Accelerate's log_with) -> (importable modules, any one will do; pip package)
TRACKER_PACKAGES: dict[str, tuple[tuple[str, ...], str]] = {
    "tensorboard": (("tensorboard", "tensorboardX"), "tensorboard"),
    "wandb": (("wandb",), "wandb"),
    "mlflow": (("mlflow",), "mlflow"),
    "comet_ml": (("comet_ml",), "comet-ml"),
    "neptune": (("neptune",), "neptune"),
    "clearml": (("clearml",), "clearml"),
    "azure_ml": (("azureml",), "azureml-core"),
    "dagshub": (("dagshub",), "dagshub"),
    "codecarbon": (("codecarbon",), "codecarbon"),
    "dvclive": (("dvclive",), "dvclive"),
    "swanlab": (("swanlab",), "swanlab"),
    "trackio": (("trackio",), "trackio"),
    "aim": (("aim",), "aim"),
    "flyte": (("flytekit",), "flytekit"),
}

# trackers that hubtune's extras install (pip install "hubtune[tensorboard]", "hubtune[trackers]")
_EXTRAS = {"tensorboard": "tensorboard", "wandb": "trackers", "mlflow": "trackers"}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check_trackers_installed(trackers: Iterable[str] | str | None, option: str) -> None:
    """ConfigError naming the package to install for the first tracker in ``trackers`` that is not installed
    (names hubtune does not know, and "none" / "all", are left to transformers / Accelerate)."""
    if isinstance(trackers, str):
        trackers = [trackers]
    for tracker in trackers or []:
        name = str(getattr(tracker, "value", tracker))
        if name not in TRACKER_PACKAGES:
            continue
        modules, package = TRACKER_PACKAGES[name]
        if not any(_installed(module) for module in modules):
            extra = f"pip install 'hubtune[{_EXTRAS[name]}]' or " if name in _EXTRAS else ""
            raise ConfigError(f"{option} {name} needs the {package} package, which is not installed: {extra}"
                              f"pip install {package} (or leave {name} out of {option}).")
