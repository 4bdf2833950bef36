"""The registry of GAN architectures (see :mod:`hubtune.gan.archs.base`).

To add one: a module with an :class:`~hubtune.gan.archs.base.ArchConfig` dataclass and a
:class:`~hubtune.gan.archs.base.GANArchitecture` subclass decorated with :func:`register_architecture`, and its
import below (or, from a plug-in or a test, call :func:`register_architecture` on it).
"""

from hubtune.gan.archs.base import ArchConfig, GANArchitecture, GeneratorRegulariser, TrainingDefaults
from hubtune.gan.archs.registry import (
    ARCHITECTURES,
    architectures,
    discriminator_for,
    get_architecture,
    register_architecture,
    unregister_architecture,
)

# the built-in architectures (each module registers itself)
from hubtune.gan.archs import dcgan, stylegan2, timm  # noqa: E402,F401  isort: skip

__all__ = ["ARCHITECTURES", "ArchConfig", "GANArchitecture", "GeneratorRegulariser", "TrainingDefaults",
           "register_architecture", "unregister_architecture", "get_architecture", "architectures",
           "discriminator_for"]
