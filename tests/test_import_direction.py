"""hubtune's layers, read with `ast` (nothing is imported): no module imports from a layer above its own.

Every import counts, as in tests/test_import_cycles.py (whose analysis this test reuses): module level, class
bodies, functions, try/except, relative imports resolved; ``if TYPE_CHECKING:`` blocks excepted. A module may
import its own layer and every layer below. Every module must be placed in :data:`LAYERS`: a new module that is
not fails the test, so its author decides where it belongs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from test_import_cycles import PACKAGE_DIR, Import, collect_imports

# High to low. A module belongs to the first entry whose prefix names it or a package around it
# ("hubtune.ood" places hubtune.ood and hubtune.ood.*); the longest matching prefix wins.
LAYERS: dict[str, tuple[str, ...]] = {
    "commands": ("hubtune.commands", "hubtune.__main__"),
    "training, gan, demo": ("hubtune.training", "hubtune.gan", "hubtune.demo"),
    "runs": ("hubtune.runs",),  # the run layer both training halves use (folder, resume, signals, publishing)
    "modeling": ("hubtune.modeling",),
    "methods, ood, layouts": ("hubtune.methods", "hubtune.ood", "hubtune.layouts",
                              "hubtune.convert"),  # convert: checkpoints into timm's layout (uses layouts)
    "losses, data, backbones, hub": ("hubtune.losses", "hubtune.data", "hubtune.backbones", "hubtune.hub"),
    "errors, devices, registry, utilities": (
        "hubtune",  # the package itself: the version and lazy names (imported by importlib, not statements)
        "hubtune.errors", "hubtune.devices", "hubtune.registry", "hubtune._lazy", "hubtune._auto_classes", "hubtune.arguments",
        "hubtune.distributed", "hubtune.files", "hubtune.locking", "hubtune.manifest", "hubtune.messages", "hubtune.offline",
        "hubtune.permissions", "hubtune.stats", "hubtune.trackers",
    ),
}


def layer_table(layers: dict[str, tuple[str, ...]]) -> dict[str, int]:
    """prefix -> rank (0 = the lowest layer)."""
    ranks = {}
    for rank, prefixes in enumerate(reversed(list(layers.values()))):
        for prefix in prefixes:
            ranks[prefix] = rank
    return ranks


def layer_of(module: str, ranks: dict[str, int], root: str) -> int | None:
    """The rank of the longest prefix naming ``module`` or a package around it; the package ``root`` itself only
    places ``root`` (not its submodules). None when no prefix does."""
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        prefix = ".".join(parts[:i])
        if prefix == root and module != root:
            return None
        if prefix in ranks:
            return ranks[prefix]
    return None


def unplaced_modules(modules: dict[str, Path], ranks: dict[str, int], root: str) -> list[str]:
    return sorted(m for m in modules if layer_of(m, ranks, root) is None)


def upward_imports(imports: list[Import], ranks: dict[str, int], root: str) -> list[Import]:
    """Imports of a module of a higher layer than the importer's (packages around the importer excepted)."""
    found = []
    for imp in imports:
        low, high = layer_of(imp.importer, ranks, root), layer_of(imp.target, ranks, root)
        if low is not None and high is not None and high > low:
            found.append(imp)
    return sorted(found, key=lambda imp: (str(imp.path), imp.lineno, imp.target))


def describe(imports: list[Import], layers: dict[str, tuple[str, ...]], ranks: dict[str, int], root: str) -> str:
    names = list(reversed(list(layers)))
    return "\n".join(
        f"    {imp.where()}  {imp.importer} ({names[layer_of(imp.importer, ranks, root)]}) imports {imp.target} "
        f"({names[layer_of(imp.target, ranks, root)]}){', in a function' if imp.in_function else ''}"
        for imp in imports
    )


# --------------------------------------------------------------------------------------------- hubtune itself


def test_every_hubtune_module_has_a_layer():
    modules, _ = collect_imports(PACKAGE_DIR)
    missing = unplaced_modules(modules, layer_table(LAYERS), "hubtune")
    assert not missing, (
        f"{len(missing)} module(s) not placed in a layer; add them to LAYERS in tests/test_import_direction.py "
        f"(lower layers never import higher ones): {', '.join(missing)}"
    )


def test_no_hubtune_module_imports_from_a_layer_above_its_own():
    _, imports = collect_imports(PACKAGE_DIR)
    ranks = layer_table(LAYERS)
    upward = upward_imports(imports, ranks, "hubtune")
    assert not upward, (
        f"{len(upward)} import(s) from a higher layer (move the shared piece down, or pass values in):\n"
        + describe(upward, LAYERS, ranks, "hubtune")
    )


# --------------------------------------------------------------------------------------------- the check itself


TOY_LAYERS = {"top": ("pkg.app",), "middle": ("pkg.model",), "bottom": ("pkg", "pkg.util")}


def _toy(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path / "pkg"


def test_a_fake_upward_import_is_found_even_inside_a_function(tmp_path):
    package = _toy(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/app.py": "from pkg.model import M\nfrom pkg import util\n",  # downward: fine
        "pkg/model/__init__.py": "from .core import M\n",
        "pkg/model/core.py": "from ..util import helper\n\nclass M:\n    def run(self):\n        from pkg.app import main\n",
        "pkg/util.py": "import typing\nif typing.TYPE_CHECKING:\n    from pkg.model import M\n\ndef helper():\n    pass\n",
    })
    modules, imports = collect_imports(package)
    ranks = layer_table(TOY_LAYERS)
    assert unplaced_modules(modules, ranks, "pkg") == []
    upward = upward_imports(imports, ranks, "pkg")
    assert [(imp.importer, imp.target, imp.lineno, imp.in_function) for imp in upward] == [
        ("pkg.model.core", "pkg.app", 5, True)
    ]
    text = describe(upward, TOY_LAYERS, ranks, "pkg")
    assert "pkg.model.core (middle) imports pkg.app (top), in a function" in text and "core.py:5" in text


def test_a_module_outside_the_table_is_reported(tmp_path):
    package = _toy(tmp_path, {"pkg/__init__.py": "", "pkg/util.py": "", "pkg/newthing.py": "import pkg.util\n",
                              "pkg/model/__init__.py": "", "pkg/model/extra.py": ""})
    modules, _ = collect_imports(package)
    ranks = layer_table(TOY_LAYERS)
    assert unplaced_modules(modules, ranks, "pkg") == ["pkg.newthing"]  # pkg.model.extra is placed by pkg.model
    assert layer_of("pkg.model.extra", ranks, "pkg") == ranks["pkg.model"] == 1


@pytest.mark.parametrize("module, layer", [("hubtune.commands.ood", "commands"), ("hubtune.gan.loop", "training, gan, demo"),
                                           ("hubtune.layouts.timm", "methods, ood, layouts"), ("hubtune", "errors, devices, registry, utilities"),
                                           ("hubtune.losses.core_tuning", "losses, data, backbones, hub")])
def test_the_table_places_hubtune_modules(module, layer):
    names = list(reversed(list(LAYERS)))
    assert names[layer_of(module, layer_table(LAYERS), "hubtune")] == layer
