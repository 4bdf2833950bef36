"""Every error a user can cause, under one root: :class:`HubtuneError`.

The command line catches ``HubtuneError`` and prints its message on one line (no traceback), so each
message says what is wrong and what to do. Each class also derives from the built-in exception that a
Python user would catch for the same failure (``ValueError`` for bad input, ``OSError`` / ``FileNotFoundError``
for files, ``RuntimeError`` for a run that cannot go on), so ``except ValueError`` keeps working.

Nothing in this module imports anything of hubtune's: every layer may raise these.
"""

from __future__ import annotations

__all__ = [
    "HubtuneError",
    "ConfigError",
    "MethodError",
    "BackboneError",
    "PretrainedWeightsError",
    "DatasetError",
    "GANDataError",
    "DatasetTooSmallError",
    "ModelFileError",
    "WeightsFileError",
    "ExportError",
    "PickleCheckpointError",
    "CheckpointError",
    "NonFiniteLossError",
    "HubPushError",
    "HubAuthError",
    "GeneratorLoadError",
    "FeatureExtractorError",
    "GatherShapeMismatchError",
    "OODError",
    "OutputDirError",
    "Terminated",
]


class HubtuneError(Exception):
    """Root of hubtune's errors: a failure the user can fix; the message says how."""


# ------------------------------------------------------------------------------------------- bad input


class ConfigError(HubtuneError, ValueError):
    """A bad argument, knob, preset or configuration file."""


class MethodError(ConfigError):
    """An unknown training method, or a knob that belongs to another method."""


class BackboneError(HubtuneError, ValueError):
    """A backbone name, source or output that hubtune cannot use."""


class DatasetError(HubtuneError, ValueError):
    """A dataset that hubtune cannot use, with what to do about it."""


class GANDataError(DatasetError):
    """A data source that cannot be turned into GAN training images."""


class DatasetTooSmallError(GANDataError):
    """Fewer images than one step's batch (per-process batch x processes)."""


class GatherShapeMismatchError(HubtuneError, ValueError):
    """Processes tried to all-gather tensors of different shapes (raised on every rank alike)."""


class OODError(HubtuneError, ValueError):
    """An OOD evaluation that cannot run as asked (unknown score, empty set, missing features ...)."""


class FeatureExtractorError(HubtuneError, ValueError):
    """A FID/KID feature-extractor name that cannot be resolved here (unknown, or its weights are unavailable)."""


# ------------------------------------------------------------------------------------------- files


class ModelFileError(HubtuneError, FileNotFoundError):
    """A model folder or Hub repo that lacks a file hubtune needs (the message names it)."""


class WeightsFileError(HubtuneError, OSError):
    """A weights or config file that exists but cannot be read: truncated, corrupt or of the wrong type."""


class PretrainedWeightsError(HubtuneError, OSError):
    """Pretrained weights were asked for and could not be loaded (never silently replaced by random ones)."""


class GeneratorLoadError(HubtuneError, ValueError):
    """A generator folder or repository that hubtune cannot load."""


class ExportError(HubtuneError, RuntimeError):
    """A model cannot be written in (or read from) a library layout without changing what it computes."""


class PickleCheckpointError(ExportError):
    """Only a pickle checkpoint was found and the caller did not opt in to loading it."""


class CheckpointError(HubtuneError, RuntimeError):
    """A checkpoint that is missing, incomplete, truncated or does not match the run resuming from it."""


class OutputDirError(HubtuneError, FileExistsError):
    """An output folder that would overwrite another run's results, or that cannot be written."""


# ------------------------------------------------------------------------------------------- runs


class NonFiniteLossError(HubtuneError, RuntimeError):
    """A loss or gradient became NaN or infinite; training stopped and the last good checkpoint is kept."""


class HubPushError(HubtuneError, RuntimeError):
    """Publishing to the Hub failed; the message says why and what to do. Re-running the push is safe."""


class HubAuthError(HubPushError):
    """No token was found, or the Hub rejected it."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (what a cluster scheduler sends) arrived: the run stops as on Ctrl-C; the command exits with 143.

    A ``KeyboardInterrupt``, so that every ``except KeyboardInterrupt`` that says where the last checkpoint is
    handles it too (re-raise with ``type(error)(message)`` to keep the kind).
    """
