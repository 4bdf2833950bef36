"""A local web app for a trained model: ``hubtune demo MODEL``, and the code a pushed Space runs.

    from hubtune.demo import launch_demo
    launch_demo("gan-digits")            # an output folder or a Hub repo id; http://127.0.0.1:7860

A generator's page has a seed, the number of images, truncation psi (StyleGAN2), a "random seed" button and the
grid (downloadable as PNG); a classifier's takes an image and shows the top-5 labels with probabilities, through
the model's own eval preprocessing. Both show the card's key facts (method, data, metrics).

:mod:`hubtune.demo.model` (loading, checks, answers) needs no Gradio; :func:`build_demo` and :func:`launch_demo`
(:mod:`hubtune.demo.app`) need the ``hubtune[demo]`` extra: without it they raise a ConfigError saying how to
install it.
"""

from __future__ import annotations

from typing import Any

from hubtune.errors import ConfigError

__all__ = ["INSTALL_HINT", "build_demo", "launch_demo", "require_gradio"]

INSTALL_HINT = "the demo needs Gradio, which is not installed: pip install 'hubtune[demo]'"


def require_gradio() -> None:
    """A ConfigError with :data:`INSTALL_HINT` when Gradio cannot be imported."""
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise ConfigError(INSTALL_HINT + ".") from None


def build_demo(*args: Any, **kwargs: Any):
    """See :func:`hubtune.demo.app.build_demo`."""
    require_gradio()
    from hubtune.demo.app import build_demo as build

    return build(*args, **kwargs)


def launch_demo(*args: Any, **kwargs: Any):
    """See :func:`hubtune.demo.app.launch_demo`."""
    require_gradio()
    from hubtune.demo.app import launch_demo as launch

    return launch(*args, **kwargs)
