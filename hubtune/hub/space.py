"""A Hugging Face Space beside a published model: ``hubtune push DIR ORG/NAME --space SPACE``.

The Space holds three files (:func:`space_files`):

* ``app.py``: ``launch_demo("ORG/NAME")``, i.e. the very code of ``hubtune demo`` (:mod:`hubtune.demo`),
  imported from the installed hubtune, not a copy;
* ``requirements.txt``: ``hubtune[demo]`` and the packages that run it, pinned to the versions installed here;
* ``README.md``: the Space front-matter (``sdk: gradio``, ``models: [ORG/NAME]``) and a line linking the model.

:func:`push_model_and_space` publishes the model (its card gains a line linking the Space) and then the Space,
with the fault handling of :func:`~hubtune.hub.push.push_folder`: every check runs before the first request, and
when the Space fails after the model was published, the message says that the model repo is intact and what
was left behind (nothing, or an empty Space repo).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi

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

__all__ = [
    "SPACE_FILES",
    "SPACE_PINNED_PACKAGES",
    "add_space_link",
    "push_model_and_space",
    "push_space",
    "space_files",
    "space_id_for",
    "space_url",
]

logger = logging.getLogger(__name__)

SPACE_FILES = ("app.py", "requirements.txt", "README.md")
# What the Space's app imports, directly or through hubtune, pinned to the versions it was written with.
SPACE_PINNED_PACKAGES = ("torch", "torchvision", "timm", "transformers", "huggingface-hub", "safetensors",
                         "gradio", "gradio_client")
SPACE_LINK_MARK = "<!-- hubtune:space -->"
_APP = '''"""The demo of {repo_id}: the app of `hubtune demo {repo_id}` (written by `hubtune push --space`)."""

from hubtune.demo import launch_demo

launch_demo("{repo_id}"{revision})
'''


def space_id_for(space: str, repo_id: str) -> str:
    """``space`` as a full id: ``NAME`` lives in the model's namespace, ``ORG/NAME`` as given (checked)."""
    validate_repo_id(repo_id)
    return validate_repo_id(space if "/" in space else f"{repo_id.split('/')[0]}/{space}")


def space_url(space_id: str, endpoint: str | None = None) -> str:
    return f"{(endpoint or HfApi().endpoint).rstrip('/')}/spaces/{space_id}"


def _installed(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def space_files(repo_id: str, space_id: str, endpoint: str | None = None,
                revision: str | None = None) -> dict[str, str]:
    """The Space's files (name -> text) for the model ``repo_id`` (at ``revision``) on the Hub at ``endpoint``."""
    model_url = f"{(endpoint or HfApi().endpoint).rstrip('/')}/{repo_id}"
    pins = [f"hubtune[demo]=={__version__}"]
    pins += [f"{name}=={version}" for name in SPACE_PINNED_PACKAGES if (version := _installed(name))]
    gradio_version = _installed("gradio")
    front = ["---", f"title: {space_id.split('/')[1]}", "emoji: 🔬", "colorFrom: indigo", "colorTo: gray",
             "sdk: gradio"]
    front += [f"sdk_version: {gradio_version}"] if gradio_version else []
    front += ["app_file: app.py", "pinned: false", "models:", f"- {repo_id}", "tags:", "- hubtune", "---"]
    readme = "\n".join(front) + (
        f"\n\n# {space_id.split('/')[1]}\n\nThe demo of the model [{repo_id}]({model_url}), "
        f"written by `hubtune push --space`. The same app runs locally: `pip install 'hubtune[demo]'` then "
        f"`hubtune demo {repo_id}`.\n"
    )
    app = _APP.format(repo_id=repo_id, revision=f", revision={revision!r}" if revision not in (None, "main") else "")
    return {"app.py": app, "requirements.txt": "\n".join(pins) + "\n", "README.md": readme}


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
               revision: str | None = None, commit_message: str = "Demo Space written by hubtune") -> str:
    """Create (or update) the Gradio Space ``space_id`` for the model ``repo_id`` (its branch ``revision``) in one
    commit; its URL.

    Raises HubPushError (HubAuthError for the token) in words; when this call created the Space and the upload
    then failed, the message says an empty Space was left behind.
    """
    validate_repo_id(space_id)
    validate_repo_id(repo_id)
    check_online()
    token = resolve_token(token)
    api = HfApi(token=token)
    url = space_url(space_id, api.endpoint)
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=text.encode("utf-8"))
                  for name, text in space_files(repo_id, space_id, api.endpoint, revision).items()]
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

    A failure before or during the model push is :func:`push_folder`'s (nothing of the Space was made). A
    failure of the Space push raises a HubPushError saying that the model repo was published and is intact, what
    the Space push left behind, and how to repeat it.
    """
    validate_repo_id(repo_id)
    space_id = space_id_for(space, repo_id)
    folder = check_push_folder(folder)
    check_online()
    token = resolve_token(token)
    link = space_url(space_id, HfApi(token=token).endpoint)
    with _folder_with_space_link(folder, space_id, link) as staged:
        model_url = push_folder(staged, repo_id, token=token, private=private, revision=revision,
                                commit_message=commit_message)
    try:
        return model_url, push_space(space_id, repo_id, token=token, private=private, revision=revision)
    except HubPushError as err:
        raise type(err)(
            f"The model was published at {model_url} and is intact (its card links to {link}), but the Space "
            f"push failed: {err} Re-run the same `hubtune push ... --space {space}` to publish the Space."
        ) from err
