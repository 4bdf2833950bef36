"""Register ``model_type="hubtune"`` with transformers' ``AutoConfig`` / ``AutoModelForImageClassification`` as
soon as transformers is imported, without importing transformers (or torch) when hubtune is imported.

``import hubtune`` stays cheap (``hubtune --help`` imports neither torch nor transformers), and a hubtune-layout
folder still loads through the Auto classes once hubtune has been imported: if transformers is already loaded,
:mod:`hubtune.modeling` (whose import registers the classes) is imported at once; otherwise a one-shot import hook
imports it right after transformers. The command line removes the hook (:func:`uninstall`): a command that loads a
model imports :mod:`hubtune.modeling` itself.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

__all__ = ["install", "uninstall"]

_MODELING = "hubtune.modeling"


def _register() -> None:
    try:
        importlib.import_module(_MODELING)
    except ImportError:
        # transformers was imported half-way through an import of a module that hubtune.modeling needs: that
        # chain imports hubtune.modeling itself (which registers the classes) once it completes
        pass


class _RegisterAfterTransformers(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loader of ``transformers`` so that hubtune registers right after it loads."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "transformers":
            return None
        uninstall()
        spec = importlib.util.find_spec(fullname)
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            _register()

        loader.exec_module = exec_then_register
        return spec


_HOOK = _RegisterAfterTransformers()


def install() -> None:
    """Register now if transformers is loaded, else once it is."""
    if "transformers" in sys.modules:
        _register()
    elif _HOOK not in sys.meta_path:
        sys.meta_path.insert(0, _HOOK)


def uninstall() -> None:
    """Remove the hook (the command line imports transformers for argument parsing, not for the Auto classes)."""
    while _HOOK in sys.meta_path:
        sys.meta_path.remove(_HOOK)
