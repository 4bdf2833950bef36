"""setup.cfg lists every package of hubtune: a non-editable install (CI, a user's `pip install .`) ships only those."""

from __future__ import annotations

import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_setup_cfg_lists_every_package_with_an_init():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    listed = {line.strip() for line in config["options"]["packages"].splitlines() if line.strip()}
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "hubtune").rglob("__init__.py")}
    missing = sorted(on_disk - listed)
    assert not missing, f"add {', '.join(missing)} to `packages` in setup.cfg"
    assert "hubtune.gan.archs" in on_disk  # the check sees nested packages
