"""A Hugging Face Space beside a published model: ``hubtune push DIR ORG/NAME --space SPACE``.

The Space holds four files (:func:`space_files`):

* ``app.py``: ``launch_demo("ORG/NAME")``, i.e. the very code of ``hubtune demo`` (:mod:`hubtune.demo`), imported
  from the wheel beside it;
* ``hubtune-VERSION-py3-none-any.whl``: the hubtune that pushed the Space (:func:`~hubtune.hub.wheel.hubtune_wheel`);
* ``requirements.txt``: what ``hubtune[demo]`` requires, each pinned to the version installed here, so the Space
  runs what the push ran with (accelerate, datasets, torch, timm, transformers, gradio, ...);
* ``README.md``: the Space front-matter (``sdk: gradio``, ``sdk_version``, ``python_version``, ``models: [ORG/NAME]``)
  and a line linking the model.

Why a wheel imported by app.py, and not a line of requirements.txt: hubtune is not on the package index, and a
Space's build installs requirements.txt alone, before the repository's other files are copied in (its Dockerfile:
``RUN --mount=target=/tmp/requirements.txt,source=requirements.txt pip install -r /tmp/requirements.txt``, then
``COPY ./ /home/user/app``), so a ``./hubtune-....whl`` line there names a file that is not yet there, and a
``git+file://`` line is refused by pip. So requirements.txt holds only what the index has, and app.py puts the
wheel on ``sys.path``: a pure-Python wheel imports from its zip in place (PEP 427 allows it; hubtune reads its
package data through ``importlib.resources``, which reads zips). One app serves classifiers and generators alike
(a classifier-only app without hubtune would be a second page to keep in step with ``hubtune demo``), and a
visitor who clones the Space can still ``pip install`` the wheel.

:func:`check_space_files` checks what is written before anything is sent: every line of requirements.txt is a
pinned release (no path, no URL), the wheel that app.py imports is there, is a wheel of this hubtune, and each of
its requirements is pinned. :func:`push_model_and_space` publishes the model (its card gains a line linking the
Space) and then the Space, with the fault handling of :func:`~hubtune.hub.push.push_folder`: every check runs before
the first request, and when the Space fails after the model was published, the message says that the model repo is
intact and what was left behind (nothing, or an empty Space repo).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from hubtune import __version__
from hubtune.errors import HubPushError
from hubtune.hub.push import (
    DEFAULT_COMMIT_MESSAGE,
    check_online,
    check_push_folder,
    push_folder,
    resolve_token,
    validate_repo_id,
    wrap_hub_error,
)
from hubtune.hub.wheel import WHEEL_NAME, hubtune_wheel, pinned_requirements

__all__ = [
    "add_space_link",
    "check_space_files",
    "push_model_and_space",
    "push_space",
    "space_files",
    "space_id_for",
    "space_url",
]

logger = logging.getLogger(__name__)

SPACE_LINK_MARK = "<!-- hubtune:space -->"
_APP = '''"""The demo of {repo_id}: the page of `hubtune demo {repo_id}`, written by `hubtune push --space`
(hubtune {version}).

requirements.txt installs hubtune's dependencies from the package index, pinned to the versions the push ran with.
hubtune itself is the wheel beside this file, imported in place: a Space installs requirements.txt before its other
files are copied in, so the wheel cannot be a line of requirements.txt.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().with_name("{wheel}")))

from hubtune.demo import launch_demo  # noqa: E402  (after the wheel is on the path)

launch_demo("{repo_id}"{revision})
'''
_DO = "Nothing was uploaded; reinstall hubtune with pip (`pip install -c constraints.txt '.[demo]'`) and push again."


def space_id_for(space: str, repo_id: str) -> str:
    """``space`` as a full id: ``NAME`` lives in the model's namespace, ``ORG/NAME`` as given (checked)."""
    validate_repo_id(repo_id)
    return validate_repo_id(space if "/" in space else f"{repo_id.split('/')[0]}/{space}")


def space_url(space_id: str, endpoint: str | None = None) -> str:
    return f"{(endpoint or HfApi().endpoint).rstrip('/')}/spaces/{space_id}"


def space_files(repo_id: str, space_id: str, endpoint: str | None = None,
                revision: str | None = None) -> dict[str, str | bytes]:
    """The Space's files (name -> text, or bytes for the wheel) for the model ``repo_id`` (at ``revision``) on the Hub
    at ``endpoint``, checked by :func:`check_space_files`. HubPushError, in one line, when they could not build."""
    model_url = f"{(endpoint or HfApi().endpoint).rstrip('/')}/{repo_id}"
    wheel_name, wheel = hubtune_wheel()
    requirements = pinned_requirements(("demo",))
    gradio_version = next(line.split("==")[1] for line in requirements if line.startswith("gradio=="))
    front = ["---", f"title: {space_id.split('/')[1]}", "emoji: 🔬", "colorFrom: indigo", "colorTo: gray",
             "sdk: gradio", f"sdk_version: {gradio_version}", f'python_version: "{sys.version_info[0]}.'
             f'{sys.version_info[1]}"', "app_file: app.py", "pinned: false", "models:", f"- {repo_id}", "tags:",
             "- hubtune", "---"]
    readme = "\n".join(front) + (
        f"\n\n# {space_id.split('/')[1]}\n\nThe demo of the model [{repo_id}]({model_url}), written by `hubtune push "
        f"--space` (hubtune {__version__}). The same page runs on your machine: `pip install {wheel_name}` (from this "
        f"Space's files) with `pip install -r requirements.txt`, then `hubtune demo {repo_id}`.\n"
    )
    app = _APP.format(repo_id=repo_id, version=__version__, wheel=wheel_name,
                      revision=f", revision={revision!r}" if revision not in (None, "main") else "")
    files = {"app.py": app, "requirements.txt": "\n".join(requirements) + "\n", "README.md": readme,
             wheel_name: wheel}
    check_space_files(files)
    return files


def _wheel_requirements(wheel: bytes, name: str) -> set[str]:
    """The names of what the wheel ``name`` requires for its ``demo`` extra; HubPushError if it is not a wheel of
    this hubtune."""
    try:
        with zipfile.ZipFile(io.BytesIO(wheel)) as archive:
            meta = archive.read(f"hubtune-{__version__}.dist-info/METADATA").decode()
            archive.getinfo("hubtune/demo/app.py")
    except (zipfile.BadZipFile, KeyError):
        raise HubPushError(f"The Space's {name} is not a wheel of hubtune {__version__} with its demo; {_DO}") from None
    names = set()
    for line in meta.splitlines():
        if line.startswith("Requires-Dist: "):
            requirement = Requirement(line.removeprefix("Requires-Dist: "))
            if requirement.marker is None or requirement.marker.evaluate({"extra": "demo"}):
                names.add(canonicalize_name(requirement.name))
    return names


def check_space_files(files: dict[str, str | bytes]) -> None:
    """Refuse, in one line, Space files whose requirements.txt would not resolve from the package index alone or whose
    app would not find hubtune: a line that is not ``NAME==VERSION`` (a path, a URL, a range), the wheel that app.py
    imports missing or not a wheel of this hubtune, or a requirement of that wheel left unpinned."""
    missing = [name for name in ("app.py", "requirements.txt", "README.md", WHEEL_NAME) if name not in files]
    if missing:
        raise HubPushError(f"The Space would lack {', '.join(missing)} (app.py imports hubtune from {WHEEL_NAME}); "
                           f"{_DO}")
    app, requirements, wheel = files["app.py"], files["requirements.txt"], files[WHEEL_NAME]
    if not isinstance(app, str) or f'"{WHEEL_NAME}"' not in app or not isinstance(wheel, bytes):
        raise HubPushError(f"The Space's app.py does not import hubtune from {WHEEL_NAME}; {_DO}")
    pinned = set()
    for line in str(requirements).splitlines():
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            requirement = None
        specifiers = list(requirement.specifier) if requirement else []
        if requirement is None or requirement.url or len(specifiers) != 1 or specifiers[0].operator != "==" \
                or "*" in specifiers[0].version or "+" in specifiers[0].version:
            raise HubPushError(f"The Space's requirements.txt line {line!r} is not a release pinned as NAME==VERSION, "
                               f"so the Space could not install it from the package index; {_DO}")
        pinned.add(canonicalize_name(requirement.name))
    unpinned = sorted(_wheel_requirements(wheel, WHEEL_NAME) - pinned)
    if unpinned:
        raise HubPushError(f"The Space's requirements.txt does not pin {', '.join(unpinned)}, which hubtune[demo] "
                           f"needs; {_DO}")


def add_space_link(card: str, space_id: str, url: str) -> str:
    """The model card ``card`` with one line linking the Space, after its title (replacing an earlier link)."""
    line = f"{SPACE_LINK_MARK}**Try it:** the demo Space [{space_id}]({url})."
    lines = [row for row in card.splitlines() if not row.startswith(SPACE_LINK_MARK)]
    at = next((i + 1 for i, row in enumerate(lines) if row.startswith("# ")), len(lines))
    lines[at:at] = ["", line]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def _folder_with_space_link(folder: Path, space_id: str, url: str) -> Iterator[Path]:
    """A temporary copy of ``folder`` (hard links where possible; the folder itself is never written) whose
    README.md links the Space."""
    with tempfile.TemporaryDirectory(prefix="hubtune-push-") as tmp:
        staged = Path(tmp) / folder.name

        def link_or_copy(src: str, dst: str) -> None:
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)

        shutil.copytree(folder, staged, copy_function=link_or_copy,
                        ignore=shutil.ignore_patterns("checkpoint-*", "runs", ".git", ".cache"))
        card = staged / "README.md"
        text = card.read_text(encoding="utf-8")
        card.unlink()  # a hard link: write a new file, not into the model folder's README.md
        card.write_text(add_space_link(text, space_id, url), encoding="utf-8")
        yield staged


def push_space(space_id: str, repo_id: str, *, token: str | None = None, private: bool = False,
               revision: str | None = None, commit_message: str = "Demo Space written by hubtune",
               files: dict[str, str | bytes] | None = None) -> str:
    """Create (or update) the Gradio Space ``space_id`` for the model ``repo_id`` (its branch ``revision``) in one
    commit; its URL. ``files`` (default :func:`space_files`) are checked (:func:`check_space_files`) before the
    first request.

    Raises HubPushError (HubAuthError for the token) in words; when this call created the Space and the upload
    then failed, the message says an empty Space was left behind.
    """
    validate_repo_id(space_id)
    validate_repo_id(repo_id)
    check_online()
    token = resolve_token(token)
    api = HfApi(token=token)
    url = space_url(space_id, api.endpoint)
    if files is None:
        files = space_files(repo_id, space_id, api.endpoint, revision)
    check_space_files(files)
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=data.encode() if isinstance(data, str) else data)
                  for name, data in files.items()]
    step, created = "create the Space", False
    try:
        existed = api.repo_exists(space_id, repo_type="space")
        if not existed:
            api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
            created = True
        step = "upload the Space's files"
        api.create_commit(space_id, repo_type="space", operations=operations, commit_message=commit_message)
    except Exception as err:  # noqa: BLE001 - every failure is said in words, as a HubPushError
        wrapped = wrap_hub_error(err, space_id, api.endpoint, step)
        note = (f" An empty Space was left behind at {url}; re-running fills it, or delete it (`hf repo delete "
                f"{space_id} --repo-type space`).") if created else ""
        raise type(wrapped)(f"{wrapped}{note}") from err
    logger.info("Pushed the Space %s", url)
    return url


def push_model_and_space(folder: str | Path, repo_id: str, space: str, *, token: str | None = None,
                         private: bool = False, revision: str | None = None,
                         commit_message: str = DEFAULT_COMMIT_MESSAGE) -> tuple[str, str]:
    """Publish the output folder as :func:`push_folder` does, its card linking the Space, then the Space
    (:func:`push_space`); returns (model URL, Space URL).

    The Space's files are built and checked first (:func:`space_files`): a requirements.txt that could not resolve
    stops the push before the model is sent. A failure before or during the model push is :func:`push_folder`'s
    (nothing of the Space was made). A failure of the Space push raises a HubPushError saying that the model repo was published and is intact, what
    the Space push left behind, and how to repeat it.
    """
    validate_repo_id(repo_id)
    space_id = space_id_for(space, repo_id)
    folder = check_push_folder(folder)
    check_online()
    token = resolve_token(token)
    endpoint = HfApi(token=token).endpoint
    link = space_url(space_id, endpoint)
    files = space_files(repo_id, space_id, endpoint, revision)
    with _folder_with_space_link(folder, space_id, link) as staged:
        model_url = push_folder(staged, repo_id, token=token, private=private, revision=revision,
                                commit_message=commit_message)
    try:
        return model_url, push_space(space_id, repo_id, token=token, private=private, revision=revision, files=files)
    except HubPushError as err:
        raise type(err)(
            f"The model was published at {model_url} and is intact (its card links to {link}), but the Space "
            f"push failed: {err} Re-run the same `hubtune push ... --space {space}` to publish the Space."
        ) from err
