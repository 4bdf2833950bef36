"""The running hubtune packed as a wheel, and its requirements pinned to what is installed here: what a Space needs to
run the very code that pushed it (:mod:`hubtune.hub.space`).

:func:`hubtune_wheel` zips the files Python imports hubtune from (the package folder, and ``hubtune.model_cards``,
which setup.cfg maps from the top-level ``model_cards/``) with the installed distribution's metadata, in the layout
of the wheel specification (PEP 427: ``NAME-VERSION.dist-info/`` with METADATA, WHEEL, RECORD). The same code gives
the same bytes (sorted entries, fixed timestamps), so re-pushing an unchanged Space changes nothing.

:func:`pinned_requirements` lists what ``hubtune[EXTRA]`` requires, each pinned to the version installed here, and
refuses, in one line, a requirement that the package index could not resolve: a package that is not installed, or
one installed from a folder, a file or a version-control URL (its version need not exist on any index).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import json
import re
import zipfile
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from hubtune import __version__
from hubtune.errors import HubPushError

__all__ = ["WHEEL_NAME", "hubtune_wheel", "pinned_requirements"]

WHEEL_NAME = f"hubtune-{__version__}-py3-none-any.whl"
# The packages whose folders make up the installed hubtune (setup.cfg: package_dir maps hubtune.model_cards).
_PACKAGES = ("hubtune", "hubtune.model_cards")
_SKIPPED = re.compile(r"(^|/)__pycache__/|\.py[co]$|(^|/)\.")
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold: the same bytes on every machine
_INSTALL_HINT = "install hubtune with pip (`pip install -c constraints.txt '.[demo]'` in a clone) and push again"


def _distribution() -> metadata.Distribution:
    try:
        return metadata.distribution("hubtune")
    except metadata.PackageNotFoundError:
        raise HubPushError(f"hubtune is importable but not installed as a package, so the Space cannot get its wheel "
                           f"nor its pinned requirements; {_INSTALL_HINT}. Nothing was uploaded.") from None


def _package_files() -> dict[str, bytes]:
    """Path in the wheel -> bytes, for every file of hubtune's packages (no caches, no hidden files)."""
    files: dict[str, bytes] = {}
    for package in _PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise HubPushError(f"The package {package} was not found beside the running hubtune; {_INSTALL_HINT}.")
        root = Path(next(iter(spec.submodule_search_locations)))
        prefix = package.replace(".", "/")
        for path in sorted(root.rglob("*")):
            name = f"{prefix}/{path.relative_to(root).as_posix()}"
            if path.is_file() and not _SKIPPED.search(name):
                files.setdefault(name, path.read_bytes())
    return files


def _metadata_text(dist: metadata.Distribution) -> str:
    """The installed METADATA (PKG-INFO where hubtune is found as an egg-info folder, e.g. that of an editable
    install seen from the source tree) with this code's version (an editable install keeps the version it was
    installed at)."""
    text = (dist.read_text("METADATA") or dist.read_text("PKG-INFO")
            or f"Metadata-Version: 2.1\nName: hubtune\nVersion: {__version__}\n")
    return re.sub(r"(?m)^Version: .*$", f"Version: {__version__}", text, count=1)


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def hubtune_wheel() -> tuple[str, bytes]:
    """(file name, bytes) of a pure-Python wheel of the running hubtune, installable with pip and importable from a
    path entry. HubPushError, in one line, when hubtune is not installed as a package."""
    dist = _distribution()
    info = f"hubtune-{__version__}.dist-info"
    files = _package_files()
    files[f"{info}/METADATA"] = _metadata_text(dist).encode()
    files[f"{info}/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: hubtune.hub.wheel\nRoot-Is-Purelib: true\n"
                              b"Tag: py3-none-any\n")
    entry_points = dist.read_text("entry_points.txt")
    if entry_points:
        files[f"{info}/entry_points.txt"] = entry_points.encode()
    record = [_record_line(name, data) for name, data in files.items()] + [f"{info}/RECORD,,"]
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():  # dist-info last, as the specification recommends
            entry = zipfile.ZipInfo(name, date_time=_EPOCH)
            entry.external_attr = 0o644 << 16
            archive.writestr(entry, data, compress_type=zipfile.ZIP_DEFLATED)
    return WHEEL_NAME, buffer.getvalue()


def _installed_from_elsewhere(dist: metadata.Distribution) -> str | None:
    """Where a package was installed from when that was not a package index (PEP 610's direct_url.json)."""
    text = dist.read_text("direct_url.json")
    if not text:
        return None
    try:
        url = json.loads(text).get("url", "a direct URL")
    except ValueError:
        url = "a direct URL"
    return url


def pinned_requirements(extras: tuple[str, ...] = ("demo",)) -> list[str]:
    """``NAME==VERSION`` for each requirement of ``hubtune[extras]``, at the version installed here (a local version
    label such as ``+cpu`` dropped: indexes publish ``2.14.1``, not ``2.14.1+cpu``).

    HubPushError, in one line naming the package and what to do, for a requirement that is not installed or was
    installed from somewhere other than a package index."""
    pins: dict[str, str] = {}
    for line in _distribution().requires or []:
        requirement = Requirement(line)
        if requirement.marker is not None and not any(requirement.marker.evaluate({"extra": e}) for e in extras):
            continue
        name = canonicalize_name(requirement.name)
        if name in pins:
            continue
        try:
            dist = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            raise HubPushError(
                f"The Space's requirements.txt would need {requirement.name}, which is not installed here, so its "
                f"version cannot be pinned to a tested one: pip install 'hubtune[{','.join(extras)}]' (or pip install "
                f"{requirement.name}) and push again. Nothing was uploaded.") from None
        source = _installed_from_elsewhere(dist)
        if source is not None:
            raise HubPushError(
                f"The Space's requirements.txt would pin {requirement.name}=={dist.version}, but that was installed "
                f"from {source}, not from a package index, which may not have that version: install a released one "
                f"(pip install '{requirement.name}=={dist.version.split('+')[0]}' or another release) and push again. "
                "Nothing was uploaded.")
        pins[name] = f"{requirement.name}=={dist.version.split('+')[0]}"
    return list(pins.values())
