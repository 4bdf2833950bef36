"""Publishing a finished output folder to the Hugging Face Hub, with typed, readable errors.

:func:`push_folder` goes through the official ``huggingface_hub`` client (it honours ``HF_ENDPOINT`` and
``HF_TOKEN``). Every check that needs no network runs before the first request. The token is only ever
handed to the client: it is never written to a file, a card or a log line.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from huggingface_hub import CommitOperationAdd, HfApi, constants, get_token
from huggingface_hub.errors import (
    HfHubHTTPError,
    HFValidationError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import filter_repo_objects
from huggingface_hub.utils import validate_repo_id as hub_validate_repo_id

from hubtune.errors import ConfigError, HubAuthError, HubPushError, ModelFileError
from hubtune.files import check_finite_file
from hubtune.locking import LOCK_NAME

__all__ = [
    "DEFAULT_COMMIT_MESSAGE",
    "PUSH_IGNORED_SUFFIXES",
    "PUSH_IGNORE_PATTERNS",
    "HubAuthError",
    "HubPushError",
    "check_online",
    "check_push_folder",
    "is_repo_id",
    "pushed_files",
    "push_folder",
    "resolve_token",
    "validate_repo_id",
    "wrap_hub_error",
]

logger = logging.getLogger(__name__)

DEFAULT_COMMIT_MESSAGE = "Upload model trained with hubtune"
# A push never uploads resumable checkpoint-* folders, tensorboard runs/, the run lock or pickles: huggingface_hub's
# ignore_patterns (fnmatch on the path in the repo; a pattern ending in "/" is a top-level folder).
PUSH_IGNORED_SUFFIXES = (".bin", ".pth", ".pt", ".ckpt", ".pkl", ".pickle")
PUSH_IGNORE_PATTERNS = ("checkpoint-*/", "runs/", ".git/", ".cache/", LOCK_NAME, f"{LOCK_NAME}/",
                        *(f"*{suffix}" for suffix in PUSH_IGNORED_SUFFIXES))
_NON_FINITE_ADVICE = (
    "nothing was uploaded. Publish a model saved before training diverged (e.g. the last good checkpoint-*), or "
    "train again with a lower learning rate."
)
_RETRY = "Nothing was committed by this step; fix the cause and re-run the push (it is safe to repeat)."


# --------------------------------------------------------------------------------------------- checks


def is_repo_id(value: Any) -> bool:
    """Whether ``value`` is a Hub repo id ``"org/name"``: huggingface_hub's ``validate_repo_id`` accepts it, and it
    names its namespace (the library also accepts a bare name; hubtune publishes only to a named owner, so that a
    push never lands in whichever namespace the token belongs to)."""
    try:
        hub_validate_repo_id(value)
    except HFValidationError:
        return False
    return isinstance(value, str) and value.count("/") == 1


def validate_repo_id(repo_id: Any) -> str:
    """``repo_id`` if it is a Hub id ``"org/name"`` (:func:`is_repo_id`); a one-line ConfigError otherwise."""
    if not is_repo_id(repo_id):
        # one line saying what a repo id is, instead of the library's HFValidationError (which allows a bare name)
        raise ConfigError(
            f"Repo id {repo_id!r} is not of the form 'org/name' (an organisation or user name, a slash and a model "
            "name; letters, digits, '-', '_' and '.', no '--' or '..', at most 96 characters each), "
            "e.g. 'my-org/resnet18-digits'."
        )
    return repo_id


def _weights_present(folder: Path) -> bool:
    if (folder / "model.safetensors").is_file():
        return True
    index = folder / "model.safetensors.index.json"
    if not index.is_file():
        return False
    try:
        shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    return all((folder / shard).is_file() for shard in shards)


def check_push_folder(folder: str | Path) -> Path:
    """``folder`` if it holds a complete model (config.json, safetensors weights, README.md) with finite weights.

    Raises:
        ModelFileError: the folder does not exist or lacks one of those files (the message names them).
        ExportError: a safetensors file that would be uploaded holds NaN or inf (the message names it and a tensor);
        WeightsFileError: one cannot be read.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFileError(f"Output folder {str(folder)!r} does not exist (or is not a folder); nothing was uploaded.")
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not _weights_present(folder):
        missing.append("model.safetensors (weights)")
    if not (folder / "README.md").is_file():
        missing.append("README.md (model card)")
    if missing:
        raise ModelFileError(
            f"{str(folder)!r} is not a complete model folder: missing {', '.join(missing)}. Run the training to the "
            "end (or save_pretrained + write_model_card) before pushing; nothing was uploaded."
        )
    for rel in pushed_files(folder):
        if rel.endswith(".safetensors"):
            check_finite_file(folder / rel, refusing="upload", advice=_NON_FINITE_ADVICE)
    return folder


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in ("1", "ON", "YES", "TRUE")


def check_online() -> None:
    """A HubPushError when offline mode is on (now, or when huggingface_hub was imported)."""
    if _truthy(os.environ.get("HF_HUB_OFFLINE")) or constants.HF_HUB_OFFLINE:
        raise HubPushError("HF_HUB_OFFLINE=1 is set: unset it to push. Nothing was uploaded.")


def resolve_token(token: str | None) -> str:
    if token:
        return token
    found = get_token()
    if not found:
        raise HubAuthError(
            "No Hugging Face token found: pass token=... (--hub_token), set the HF_TOKEN environment variable, or "
            "run `hf auth login`. Nothing was uploaded."
        )
    return found


# --------------------------------------------------------------------------------------------- errors


def _connection_error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, attr in (("httpx2", "TransportError"), ("httpx", "TransportError"), ("requests", "ConnectionError")):
        try:
            types.append(getattr(__import__(module), attr))
        except (ImportError, AttributeError):
            continue
    return tuple(types)


def _status_of(err: BaseException) -> int | None:
    response = getattr(err, "response", None)
    return getattr(response, "status_code", None)


def _http_error(err: HfHubHTTPError, repo_id: str, endpoint: str, step: str) -> HubPushError:
    status = _status_of(err)
    if status == 401:
        return HubAuthError(
            f"The Hub at {endpoint} rejected the token (401 Unauthorized) while trying to {step} for {repo_id!r}. "
            f"Check that the token is valid and has write access (HF_TOKEN, --hub_token or `hf auth login`). {_RETRY}"
        )
    if status == 403:
        return HubAuthError(
            f"The token has no write access to {repo_id!r} on {endpoint} (403 Forbidden) while trying to {step}. "
            f"Use a token with write permission for the '{repo_id.split('/')[0]}' namespace. {_RETRY}"
        )
    if isinstance(err, RevisionNotFoundError):
        return HubPushError(f"Revision not found on {repo_id!r} at {endpoint} while trying to {step}. {_RETRY}")
    if isinstance(err, RepositoryNotFoundError) or status == 404:
        return HubPushError(
            f"Repo {repo_id!r} was not found at {endpoint} (404) while trying to {step}; check the id and that "
            f"your token can see it. {_RETRY}"
        )
    if status is not None and status >= 500:
        return HubPushError(
            f"The Hub at {endpoint} had a server error ({status}) while trying to {step} for {repo_id!r}. "
            f"This is usually temporary. {_RETRY}"
        )
    return HubPushError(f"The Hub at {endpoint} refused to {step} for {repo_id!r} ({status}). {_RETRY}")


def wrap_hub_error(err: BaseException, repo_id: str, endpoint: str, step: str) -> HubPushError:
    """A HubPushError that says what failed, in words, without the token."""
    if isinstance(err, OfflineModeIsEnabled):
        return HubPushError("HF_HUB_OFFLINE=1 is set: unset it to push. Nothing was uploaded.")
    if isinstance(err, HfHubHTTPError):
        return _http_error(err, repo_id, endpoint, step)
    if isinstance(err, _connection_error_types()):
        return HubPushError(
            f"The connection to {endpoint} failed while trying to {step} for {repo_id!r} "
            f"({type(err).__name__}). Check your network and HF_ENDPOINT. {_RETRY}"
        )
    detail = f"{type(err).__name__}: {err}" if isinstance(err, ValueError) else type(err).__name__
    return HubPushError(f"Could not {step} for {repo_id!r} at {endpoint} ({detail}). {_RETRY}")


def _empty_repo_note(repo_id: str, url: str) -> str:
    return (
        f" Note: this push created the repo {repo_id!r} before the failure, so an empty repo was left behind at "
        f"{url}; re-running the push fills it, or delete it (`hf repo delete {repo_id}` or the repo's settings page)."
    )


# --------------------------------------------------------------------------------------------- push


def pushed_files(folder: str | Path) -> list[str]:
    """The files of ``folder`` that a push uploads (paths relative to it, sorted): all but PUSH_IGNORE_PATTERNS."""
    folder = Path(folder)
    files = sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())
    return list(filter_repo_objects(files, ignore_patterns=list(PUSH_IGNORE_PATTERNS)))


def _folder_operations(folder: Path) -> list[CommitOperationAdd]:
    return [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(folder / rel)) for rel in pushed_files(folder)]


def _create_repo(api: HfApi, repo_id: str, private: bool) -> tuple[str, bool]:
    """(repo URL, whether this call created the repo). ``create_repo(exist_ok=True)`` also accepts a repo that
    exists where the token may not create one (401 / 402 / 403); asking first tells a failed push to say whether it
    left an empty repo behind."""
    existed = api.repo_exists(repo_id)
    return str(api.create_repo(repo_id, private=private, exist_ok=True)), not existed


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
) -> str:
    """Publish a finished output folder to the Hub in one commit and return the repo URL.

    Args:
        folder: a folder with config.json, model.safetensors and README.md (``hubtune finetune``'s output).
            Resumable ``checkpoint-*`` folders, tensorboard ``runs/`` and pickle files are not uploaded.
        repo_id: ``"org/name"``.
        token: Hub token; default ``HF_TOKEN`` or the stored login. Never written anywhere.
        private: create the repo private (an existing repo keeps its visibility).
        revision: branch to commit to; created from ``main`` if it does not exist.
        commit_message: the commit's summary.

    Raises:
        ConfigError: a malformed repo id. ModelFileError: an incomplete folder. ExportError: weights holding
        NaN or inf (nothing is uploaded). HubPushError: offline mode
        (``HF_HUB_OFFLINE=1``), or any Hub or connection failure; HubAuthError: no token, or the Hub rejected it.
    Every check runs before the first request; the local folder is only read; re-running after a failure
    is safe. When this push created the repo and a later step failed, the message says an empty repo was
    left behind.
    """
    validate_repo_id(repo_id)
    folder = check_push_folder(folder)
    check_online()
    token = resolve_token(token)
    operations = _folder_operations(folder)

    api = HfApi(token=token)
    endpoint = api.endpoint
    logger.info("Pushing %s to %s on %s%s", folder, repo_id, endpoint, f" (branch {revision})" if revision else "")
    step, created, repo_url = "create the repo", False, f"{endpoint.rstrip('/')}/{repo_id}"
    try:
        repo_url, created = _create_repo(api, repo_id, private)
        if revision and revision != "main":
            step = f"create the branch {revision!r}"
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        step = "upload the files"
        # One create_commit, not upload_folder: with hf_xet installed, upload_folder streams a folder in several
        # commits, so a failure half-way would leave the repo half-updated; one commit is all or nothing.
        api.create_commit(repo_id, operations=operations, commit_message=commit_message, revision=revision)
    except Exception as err:  # noqa: BLE001 - every failure is said in words, as a HubPushError
        note = _empty_repo_note(repo_id, repo_url) if created else ""
        if isinstance(err, ValueError) and not isinstance(err, HfHubHTTPError) and "metadata" in str(err):
            # the client's own check of README.md's metadata
            raise HubPushError(f"The Hub rejected README.md's metadata for {repo_id!r}: {err}{note}") from err
        wrapped = wrap_hub_error(err, repo_id, endpoint, step)
        raise type(wrapped)(f"{wrapped}{note}") from err
    url = str(repo_url).rstrip("/")
    if revision and revision != "main":
        url = f"{url}/tree/{revision}"
    logger.info("Pushed %d files to %s", len(operations), url)
    return url
