"""A local web app for a trained model: ``hubtune demo MODEL``, and the code a pushed Space runs.

    from hubtune.demo import launch_demo
    launch_demo("gan-digits")            # an output folder or a Hub repo id; http://127.0.0.1:7860

A generator's page has a seed, the number of images, truncation psi (StyleGAN2), a "random seed" button and the
grid (downloadable as PNG); a classifier's takes an image and shows the top-5 labels with probabilities, through
the model's own eval preprocessing. Both show the card's key facts (method, data, metrics).

:mod:`hubtune.demo.model` (loading, checks, answers) needs no Gradio; :func:`build_demo` and :func:`launch_demo`
(:mod:`hubtune.demo.app`) need the ``hubtune[demo]`` extra. Names are imported on first use (as in
``hubtune/__init__.py``), so that without Gradio ``hubtune.demo.build_demo`` raises a one-line ConfigError
saying how to install it, before torch is even imported.
"""

from __future__ import annotations

import importlib
from typing import Any

from hubtune.errors import ConfigError

__all__ = ["INSTALL_HINT", "build_demo", "launch_demo", "load_demo_model", "require_gradio"]

INSTALL_HINT = "the demo needs Gradio, which is not installed: pip install 'hubtune[demo]'"

_EXPORTS = {
    "build_demo": "hubtune.demo.app",
    "launch_demo": "hubtune.demo.app",
    "DemoModel": "hubtune.demo.model",
    "load_demo_model": "hubtune.demo.model",
}


def require_gradio() -> None:
    """A ConfigError with :data:`INSTALL_HINT` when Gradio cannot be imported."""
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise ConfigError(INSTALL_HINT + ".") from None


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        if _EXPORTS[name] == "hubtune.demo.app":
            require_gradio()
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hubtune.demo' has no attribute {name!r}")
