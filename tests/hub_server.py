"""A small, in-memory Hugging Face Hub that the real ``huggingface_hub`` client, timm and transformers talk to.

It speaks the part of the Hub's HTTP protocol that publishing and loading a model use:

* ``GET  /api/whoami-v2``                                      who owns the token
* ``POST /api/repos/create``, ``DELETE /api/repos/delete``    repositories (public / private)
* ``POST /api/validate-yaml``                                  model-card metadata check
* ``POST /api/models/{ns}/{name}/preupload/{rev}``             always answers ``uploadMode: "regular"``, so
  file bytes travel base64-encoded inside the commit (no LFS / Xet storage needed)
* ``POST /api/models/{ns}/{name}/commit/{rev}``                NDJSON commit
* ``POST /api/models/{ns}/{name}/branch/{branch}``             branches for ``revision=``
* ``GET  /api/models/{ns}/{name}[/revision/{rev}]``            repo info with ``sha`` and ``siblings``
* ``GET  /api/models/{ns}/{name}/tree/{rev}[/{path}]``         file listing
* ``POST /api/models/{ns}/{name}/paths-info/{rev}``            per-path info
* ``GET  /api/models/{ns}/{name}/refs``                        branches
* ``GET  /api/agent-harnesses``                                an empty registry (the client asks for it)
* ``HEAD/GET /{ns}/{name}/resolve/{rev}/{path}``               downloads, with ``X-Repo-Commit``, ``ETag``,
  ``Content-Length``; 404s carry ``X-Error-Code`` (RepoNotFound / RevisionNotFound / EntryNotFound)

Authentication: ``Authorization: Bearer <token>``; tokens are registered on the :class:`LocalHub`. Writes and
private repos need a valid token (401 otherwise, as the Hub answers); an unknown token is always a 401.

Fault injection (per test): :meth:`LocalHub.inject_fault` makes the next N requests of a route answer an
HTTP status (401, 404, 500, ...) or drop the connection after reading part of the request body.

Models and Spaces are hosted (``repo_type="model"`` / ``"space"``, the same routes under ``/api/spaces/`` and
``/spaces/{ns}/{name}/resolve/``); a Space is stored as ``"spaces/{ns}/{name}"`` in :attr:`LocalHub.repos`, so
``hub.files("spaces/org/name")`` lists its files. Anything else (datasets) is answered with a 404 and recorded
in :attr:`LocalHub.unhandled` so a test can see what a client asked for that the server does not know.

This file is also the suite's pytest plugin (registered by tests/conftest.py, see the bottom of the file):
fixtures ``local_hub`` (the session's one server, started at the first test that asks for it, with no
injected faults before or after each test), ``hub_token`` and ``hub_repo_id``.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import re
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import yaml

DEFAULT_USER = "hubtune-tester"
DEFAULT_TOKEN = "hf_hubtuneLocalTestTokenDoNotLeak0123456789"
REVISION_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
REPO_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")

# Values the Hub accepts for two of the fields it checks strictly (subset of the Hub's lists).
KNOWN_PIPELINE_TAGS = {
    "image-classification", "image-feature-extraction", "unconditional-image-generation", "text-to-image",
    "image-to-image", "zero-shot-image-classification", "object-detection", "image-segmentation",
    "text-classification", "text-generation", "feature-extraction", "other",
}
KNOWN_LICENSES = {
    "apache-2.0", "mit", "bsd-3-clause", "bsd-2-clause", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0",
    "cc-by-nc-sa-4.0", "cc0-1.0", "gpl-3.0", "lgpl-3.0", "agpl-3.0", "openrail", "creativeml-openrail-m",
    "bigscience-openrail-m", "llama2", "llama3", "gemma", "unlicense", "other", "unknown",
}


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob, which the Hub uses as ETag and oid of regular files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


# --------------------------------------------------------------------------------------------- storage


@dataclass
class Commit:
    sha: str
    files: dict[str, bytes]
    message: str
    parent: str | None
    timestamp: float = field(default_factory=time.time)


@dataclass
class Repo:
    repo_id: str
    private: bool
    owner: str
    branches: dict[str, str] = field(default_factory=dict)  # branch name -> commit sha
    commits: dict[str, Commit] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        if revision in self.branches:
            return self.commits[self.branches[revision]]
        if REVISION_SHA_RE.match(revision) and revision in self.commits:
            return self.commits[revision]
        return None


@dataclass
class Fault:
    route: str
    kind: int | str  # an HTTP status, or "drop"
    remaining: int
    method: str | None = None


@dataclass
class RequestRecord:
    method: str
    path: str
    route: str
    status: int | str
    authenticated: bool


class LocalHub:
    """State of the local Hub: repos, tokens, faults, and a log of the requests it answered."""

    def __init__(self, tokens: dict[str, str] | None = None):
        self.tokens = dict(tokens) if tokens is not None else {DEFAULT_TOKEN: DEFAULT_USER}
        self.repos: dict[str, Repo] = {}
        self.faults: list[Fault] = []
        self.requests: list[RequestRecord] = []
        self.unhandled: list[str] = []
        self.lock = threading.RLock()
        self._counter = 0
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def endpoint(self) -> str:
        if self.server is None:
            raise RuntimeError("The local Hub is not started; call start() first.")
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self, host: str = "127.0.0.1", port: int = 0, sock: socket.socket | None = None) -> "LocalHub":
        """Serve from a daemon thread on ``host:port`` (0: a free port), or on ``sock``, an already bound socket."""
        handler = type("BoundHubHandler", (HubRequestHandler,), {"hub": self})
        if sock is None:
            self.server = ThreadingHTTPServer((host, port), handler)
        else:
            self.server = ThreadingHTTPServer(sock.getsockname()[:2], handler, bind_and_activate=False)
            self.server.socket.close()
            self.server.socket = sock
            self.server.server_address = sock.getsockname()[:2]
            self.server.server_name, self.server.server_port = self.server.server_address
            self.server.server_activate()
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="local-hub", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    # ------------------------------------------------------------------ test controls

    def inject_fault(self, route: str, kind: int | str, count: int = 1, method: str | None = None) -> None:
        """Make the next ``count`` requests of ``route`` answer ``kind``.

        ``route`` is one of the names in :attr:`RequestRecord.route` (``"commit"``, ``"preupload"``,
        ``"create_repo"``, ``"resolve"``, ``"repo_info"``, ``"whoami"``, ``"branch"``, ``"tree"``,
        ``"validate_yaml"``, ...; a Space's repo routes are ``"space_commit"``, ``"space_repo_info"``, ...); ``kind`` an HTTP status such as 401/404/500, ``"drop"`` to close the
        connection after reading half of the request body, without an answer, or ``"garbage"`` to answer
        200 with a body that is not JSON (a proxy's error page, say).
        """
        if not (kind in ("drop", "garbage") or isinstance(kind, int)):
            raise ValueError(f"fault kind must be an HTTP status, 'drop' or 'garbage', not {kind!r}")
        with self.lock:
            self.faults.append(Fault(route=route, kind=kind, remaining=int(count), method=method))

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def take_fault(self, route: str, method: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.route == route and fault.remaining > 0 and fault.method in (None, method):
                    fault.remaining -= 1
                    return fault
        return None

    def add_token(self, token: str, user: str) -> None:
        with self.lock:
            self.tokens[token] = user

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The files of a repo at a revision (for assertions in tests)."""
        with self.lock:
            repo = self.repos[repo_id]
            commit = repo.resolve(revision)
            if commit is None:
                raise KeyError(f"{repo_id} has no revision {revision!r}")
            return dict(commit.files)

    def routes_seen(self) -> list[str]:
        with self.lock:
            return [r.route for r in self.requests]

    # ------------------------------------------------------------------ repo operations (under lock)

    def _new_sha(self, *parts: str) -> str:
        self._counter += 1
        h = hashlib.sha1()
        for part in (*parts, str(self._counter), repr(time.time())):
            h.update(part.encode())
        return h.hexdigest()

    def create_repo(self, repo_id: str, private: bool, owner: str) -> Repo:
        repo = Repo(repo_id=repo_id, private=private, owner=owner)
        # The Hub creates every repo with a first commit holding .gitattributes.
        files = {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"}
        sha = self._new_sha(repo_id, "initial commit")
        repo.commits[sha] = Commit(sha=sha, files=files, message="initial commit", parent=None)
        repo.branches["main"] = sha
        self.repos[repo_id] = repo
        return repo


# --------------------------------------------------------------------------------------------- YAML check


def validate_card_yaml(content: str) -> tuple[list[str], list[str]]:
    """(errors, warnings) for a README.md, checking the metadata fields the Hub checks."""
    errors: list[str] = []
    warnings: list[str] = []
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, flags=re.S)
    if match is None:
        return errors, ["empty or missing yaml metadata in repo card"]
    try:
        meta = yaml.safe_load(match.group(1))
    except yaml.YAMLError as e:
        return [f"Invalid YAML in the metadata block: {e}"], warnings
    if meta is None:
        return errors, ["empty or missing yaml metadata in repo card"]
    if not isinstance(meta, dict):
        return ["The metadata block must be a YAML mapping (key: value)."], warnings

    def is_str_list(v: Any) -> bool:
        return isinstance(v, list) and all(isinstance(x, str) and x for x in v)

    for key in ("tags", "datasets", "language", "metrics"):
        if key in meta and not (isinstance(meta[key], str) or is_str_list(meta[key])):
            errors.append(f'"{key}" must be a string or a list of strings')
    if "license" in meta:
        lic = meta["license"]
        if not isinstance(lic, str):
            errors.append('"license" must be a string')
        elif lic not in KNOWN_LICENSES:
            errors.append(f'"license" must be one of the Hub license identifiers, not {lic!r}')
    if "library_name" in meta and not isinstance(meta["library_name"], str):
        errors.append('"library_name" must be a string')
    if "pipeline_tag" in meta and meta["pipeline_tag"] not in KNOWN_PIPELINE_TAGS:
        errors.append(f'"pipeline_tag" must be a known task, not {meta["pipeline_tag"]!r}')
    if "base_model" in meta:
        bases = meta["base_model"] if isinstance(meta["base_model"], list) else [meta["base_model"]]
        for base in bases:
            if not isinstance(base, str) or not re.match(r"^[\w.-]+(/[\w.-]+)?$", base):
                errors.append(f'"base_model" must be a Hub model id such as "org/name", not {base!r}')
    if "model-index" in meta:
        errors.extend(_model_index_errors(meta["model-index"]))
    return errors, warnings


def _model_index_errors(index: Any) -> list[str]:
    if not isinstance(index, list) or not index:
        return ['"model-index" must be a non-empty list']
    errors = []
    for i, entry in enumerate(index):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            errors.append(f'"model-index[{i}].name" must be a string')
            continue
        results = entry.get("results")
        if not isinstance(results, list):
            errors.append(f'"model-index[{i}].results" must be a list')
            continue
        for j, result in enumerate(results):
            where = f"model-index[{i}].results[{j}]"
            if not isinstance(result, dict):
                errors.append(f'"{where}" must be a mapping')
                continue
            task = result.get("task")
            if not isinstance(task, dict) or not isinstance(task.get("type"), str):
                errors.append(f'"{where}.task.type" is required')
            dataset = result.get("dataset")
            if not isinstance(dataset, dict) or not isinstance(dataset.get("type"), str) or not isinstance(
                dataset.get("name"), str
            ):
                errors.append(f'"{where}.dataset" needs "type" and "name" strings')
            metrics = result.get("metrics")
            if not isinstance(metrics, list) or not metrics:
                errors.append(f'"{where}.metrics" must be a non-empty list')
                continue
            for k, metric in enumerate(metrics):
                if not isinstance(metric, dict) or not isinstance(metric.get("type"), str) or "value" not in metric:
                    errors.append(f'"{where}.metrics[{k}]" needs "type" and "value"')
                elif not isinstance(metric["value"], (int, float, str)) or isinstance(metric["value"], bool):
                    errors.append(f'"{where}.metrics[{k}].value" must be a number or a string')
    return errors


# --------------------------------------------------------------------------------------------- HTTP


class HubError(Exception):
    def __init__(self, status: int, message: str, error_code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code


API_REPO_RE = re.compile(r"^/api/(models|datasets|spaces)/([^/]+)/([^/]+)(?:/(.*))?$")


class HubRequestHandler(BaseHTTPRequestHandler):
    hub: LocalHub  # bound by LocalHub.start
    protocol_version = "HTTP/1.1"
    server_version = "LocalHub/0.1"

    def log_message(self, format, *args):  # noqa: A002 - keep test output quiet (and free of tokens)
        pass

    # ------------------------------------------------------------------ plumbing

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _user(self) -> str | None:
        """The user of a valid token, None without a token; raises 401 for an unknown token."""
        auth = self.headers.get("Authorization", "")
        if not auth:
            return None
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else ""
        user = self.hub.tokens.get(token)
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return user

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, head: bool = False):
        self.send_response(status)
        headers = dict(headers or {})
        headers.setdefault("Content-Type", "application/json")
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(headers.get("Content-Length", len(body))) if head else str(len(body)))
        self.end_headers()
        if not head and body:
            self.wfile.write(body)
        self._status = status

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None):
        self._send(status, json.dumps(payload).encode(), headers)

    def _error(self, err: HubError, head: bool = False):
        headers = {"X-Error-Message": err.message}
        if err.error_code:
            headers["X-Error-Code"] = err.error_code
        body = b"" if head else json.dumps({"error": err.message}).encode()
        self._send(err.status, body, headers, head=head)

    def _drop(self):
        """Read half the announced body, then close the socket without answering (a dropped upload)."""
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(max(1, length // 2))
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._status = "dropped"

    def _dispatch(self, method: str):
        self._status: int | str = 0
        parts = urlsplit(self.path)
        path, query = parts.path, parse_qs(parts.query)
        route, handler = self._route(method, path)
        authenticated = False
        try:
            authenticated = bool(self.headers.get("Authorization"))
            fault = self.hub.take_fault(route, method)
            if fault is not None:
                if fault.kind == "drop":
                    self._drop()
                    return
                self._body()  # consume the request so the connection stays usable
                if fault.kind == "garbage":
                    self._send(200, b"<html>Bad gateway</html>", {"Content-Type": "text/html"}, head=method == "HEAD")
                    return
                code = {404: "RepoNotFound"}.get(int(fault.kind))
                self._error(HubError(int(fault.kind), f"Injected fault {fault.kind} on {route}", code), head=method == "HEAD")
                return
            if handler is None:
                with self.hub.lock:
                    self.hub.unhandled.append(f"{method} {self.path}")
                self._body()
                raise HubError(404, f"No route for {method} {path}")
            handler(path, query)
        except HubError as err:
            self._error(err, head=method == "HEAD")
        except (BrokenPipeError, ConnectionResetError):
            self._status = "client-gone"
        finally:
            with self.hub.lock:
                self.hub.requests.append(RequestRecord(method, path, route, self._status, authenticated))

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def do_PUT(self):
        self._dispatch("PUT")

    # ------------------------------------------------------------------ routing

    def _route(self, method: str, path: str):
        if path == "/api/whoami-v2" and method == "GET":
            return "whoami", self.h_whoami
        if path == "/api/repos/create" and method == "POST":
            return "create_repo", self.h_create_repo
        if path == "/api/repos/delete" and method == "DELETE":
            return "delete_repo", self.h_delete_repo
        if path == "/api/validate-yaml" and method == "POST":
            return "validate_yaml", self.h_validate_yaml
        if path == "/api/agent-harnesses" and method == "GET":  # client telemetry registry: an empty one
            return "agent_harnesses", lambda p, q: self._json(200, {"standardEnvVars": [], "harnesses": {}})
        m = API_REPO_RE.match(path)
        if m:
            kind, ns, name, rest = m.group(1), unquote(m.group(2)), unquote(m.group(3)), m.group(4) or ""
            if kind not in ("models", "spaces"):
                return "other", None
            repo_id = f"{'spaces/' if kind == 'spaces' else ''}{ns}/{name}"
            if kind == "spaces":  # the same handlers; routes named "space_commit", "space_repo_info", ...
                route, handler = self._repo_route(method, repo_id, rest)
                return f"space_{route}", handler
            return self._repo_route(method, repo_id, rest)
        if method in ("GET", "HEAD"):
            segs = path.lstrip("/").split("/")
            prefix = ""
            if segs[0] == "spaces":
                prefix, segs = "spaces/", segs[1:]
            if len(segs) >= 5 and segs[2] == "resolve":
                repo_id = f"{prefix}{unquote(segs[0])}/{unquote(segs[1])}"
                revision = unquote(segs[3])
                filename = "/".join(unquote(s) for s in segs[4:])
                return "resolve", lambda p, q: self.h_resolve(repo_id, revision, filename, head=method == "HEAD")
        return "other", None

    def _repo_route(self, method: str, repo_id: str, rest: str):
        segs = rest.split("/") if rest else []
        if not segs and method == "GET":
            return "repo_info", lambda p, q: self.h_repo_info(repo_id, "main", q)
        if segs[:1] == ["revision"] and len(segs) >= 2 and method == "GET":
            return "repo_info", lambda p, q: self.h_repo_info(repo_id, unquote("/".join(segs[1:])), q)
        if segs[:1] == ["preupload"] and len(segs) >= 2 and method == "POST":
            return "preupload", lambda p, q: self.h_preupload(repo_id, unquote(segs[1]))
        if segs[:1] == ["commit"] and len(segs) >= 2 and method == "POST":
            return "commit", lambda p, q: self.h_commit(repo_id, unquote(segs[1]), q)
        if segs[:1] == ["branch"] and len(segs) >= 2 and method in ("POST", "DELETE"):
            return "branch", lambda p, q: self.h_branch(repo_id, unquote(segs[1]), method)
        if segs[:1] == ["tree"] and len(segs) >= 2 and method == "GET":
            sub = unquote("/".join(segs[2:])) if len(segs) > 2 else ""
            return "tree", lambda p, q: self.h_tree(repo_id, unquote(segs[1]), sub, q)
        if segs[:1] == ["paths-info"] and len(segs) >= 2 and method == "POST":
            return "paths_info", lambda p, q: self.h_paths_info(repo_id, unquote(segs[1]))
        if segs == ["refs"] and method == "GET":
            return "refs", lambda p, q: self.h_refs(repo_id)
        return "other", None

    # ------------------------------------------------------------------ access helpers

    def _readable_repo(self, repo_id: str) -> Repo:
        user = self._user()
        repo = self.hub.repos.get(repo_id)
        if repo is None or (repo.private and user is None):
            # The Hub does not tell a missing repo from a private one you cannot see.
            raise HubError(401 if user is None else 404, "Repository not found", "RepoNotFound")
        return repo

    def _writable_repo(self, repo_id: str) -> tuple[Repo, str]:
        user = self._user()
        if user is None:
            raise HubError(401, "You must be authenticated to write to a repository")
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo, user

    @staticmethod
    def _commit_of(repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    # ------------------------------------------------------------------ handlers

    def h_whoami(self, path, query):
        user = self._user()
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        self._json(200, {
            "type": "user", "name": user, "fullname": user, "orgs": [],
            "auth": {"type": "access_token", "accessToken": {"displayName": "local", "role": "write"}},
        })

    def h_create_repo(self, path, query):
        payload = json.loads(self._body() or b"{}")
        user = self._user()
        if user is None:
            raise HubError(401, "You must be authenticated to create a repository")
        kind = payload.get("type") or "model"
        if kind not in ("model", "space"):
            raise HubError(400, "The local Hub only hosts model and Space repositories")
        if kind == "space" and payload.get("sdk") not in ("gradio", "docker", "static"):
            raise HubError(400, f"A Space needs an sdk (gradio, docker or static), got {payload.get('sdk')!r}")
        name = payload.get("name") or ""
        if not REPO_NAME_RE.match(name):
            raise HubError(400, f"Invalid repository name {name!r}")
        namespace = payload.get("organization") or user
        repo_id = f"{'spaces/' if kind == 'space' else ''}{namespace}/{name}"
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        with self.hub.lock:
            if repo_id in self.hub.repos:
                self._json(409, {"error": "You already created this model repo", "url": f"{self.hub.endpoint}/{repo_id}"})
                return
            self.hub.create_repo(repo_id, private=private, owner=user)
        plain_id = repo_id.removeprefix("spaces/")
        self._json(200, {"url": f"{self.hub.endpoint}/{repo_id}", "name": plain_id, "id": plain_id})

    def h_delete_repo(self, path, query):
        payload = json.loads(self._body() or b"{}")
        repo_id = f"{payload.get('organization') or self._user()}/{payload.get('name')}"
        if payload.get("type") == "space":
            repo_id = f"spaces/{repo_id}"
        self._writable_repo(repo_id)
        with self.hub.lock:
            del self.hub.repos[repo_id]
        self._json(200, {})

    def h_validate_yaml(self, path, query):
        payload = json.loads(self._body() or b"{}")
        errors, warnings = validate_card_yaml(payload.get("content", ""))
        body = {"errors": [{"message": e} for e in errors], "warnings": [{"message": w} for w in warnings]}
        self._json(400 if errors else 200, body)

    def h_preupload(self, repo_id, revision):
        payload = json.loads(self._body() or b"{}")
        repo, _ = self._writable_repo(repo_id)
        with self.hub.lock:
            commit = self._commit_of(repo, revision)
            files = []
            for f in payload.get("files", []):
                existing = commit.files.get(f["path"])
                files.append({
                    "path": f["path"],
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    "oid": git_blob_sha1(existing) if existing is not None else None,
                })
        self._json(200, {"files": files, "commitOid": commit.sha})

    def h_commit(self, repo_id, revision, query):
        body = self._body()
        repo, user = self._writable_repo(repo_id)
        if query.get("create_pr"):
            raise HubError(400, "The local Hub does not support pull requests")
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "A commit must start with a header line")
        header = lines[0]["value"]
        with self.hub.lock:
            if revision not in repo.branches:
                raise HubError(404, f"Branch {revision!r} does not exist; create it first", "RevisionNotFound")
            parent = repo.commits[repo.branches[revision]]
            if header.get("parentCommit") and header["parentCommit"] != parent.sha:
                raise HubError(412, "The parent commit does not match the head of the branch")
            files = dict(parent.files)
            for line in lines[1:]:
                key, value = line.get("key"), line.get("value", {})
                if key == "file":
                    if value.get("encoding") != "base64":
                        raise HubError(400, "Regular files must be base64-encoded")
                    files[value["path"]] = base64.b64decode(value["content"])
                elif key == "deletedFile":
                    if value["path"] not in files:
                        raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                    del files[value["path"]]
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    for p in [p for p in files if p.startswith(prefix)]:
                        del files[p]
                elif key == "lfsFile":
                    raise HubError(400, "The local Hub stores regular files only; LFS pointers are not accepted")
                else:
                    raise HubError(400, f"Unknown commit operation {key!r}")
            sha = self.hub._new_sha(repo_id, parent.sha, header.get("summary", ""))
            repo.commits[sha] = Commit(sha=sha, files=files, message=header.get("summary", ""), parent=parent.sha)
            repo.branches[revision] = sha
        self._json(200, {
            "commitUrl": f"{self.hub.endpoint}/{repo_id}/commit/{sha}",
            "commitOid": sha,
            "success": True,
        })

    def h_branch(self, repo_id, branch, method):
        body = self._body()
        repo, _ = self._writable_repo(repo_id)
        with self.hub.lock:
            if method == "DELETE":
                if branch not in repo.branches or branch == "main":
                    raise HubError(404 if branch not in repo.branches else 403, f"Cannot delete branch {branch!r}")
                del repo.branches[branch]
                self._json(200, {})
                return
            payload = json.loads(body or b"{}")
            if branch in repo.branches:
                raise HubError(409, f"Branch {branch!r} already exists")
            start = self._commit_of(repo, payload.get("startingPoint") or "main")
            repo.branches[branch] = start.sha
        self._json(200, {})

    def h_repo_info(self, repo_id, revision, query):
        repo = self._readable_repo(repo_id)
        with self.hub.lock:
            commit = self._commit_of(repo, revision)
            siblings = [
                {"rfilename": p, "size": len(d), "blobId": git_blob_sha1(d)} for p, d in sorted(commit.files.items())
            ]
        last_modified = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(commit.timestamp))
        self._json(200, {
            "_id": repo_id, "id": repo_id.removeprefix("spaces/"), "modelId": repo_id.removeprefix("spaces/"),
            "author": repo_id.removeprefix("spaces/").split("/")[0],
            "sha": commit.sha, "lastModified": last_modified, "createdAt": last_modified,
            "private": repo.private, "gated": False, "disabled": False, "downloads": 0, "likes": 0,
            "tags": [], "siblings": siblings,
        })

    def _tree_entries(self, commit: Commit, sub: str, recursive: bool) -> list[dict]:
        prefix = sub.strip("/") + "/" if sub.strip("/") else ""
        entries, folders = [], set()
        for p, d in sorted(commit.files.items()):
            if not p.startswith(prefix):
                continue
            rest = p[len(prefix):]
            if "/" in rest:
                parts = rest.split("/")
                depth = range(1, len(parts)) if recursive else range(1, 2)
                for i in depth:
                    folders.add(prefix + "/".join(parts[:i]))
                if not recursive:
                    continue
            entries.append({"type": "file", "path": p, "size": len(d), "oid": git_blob_sha1(d)})
        entries += [{"type": "directory", "path": f, "size": 0, "oid": hashlib.sha1(f.encode()).hexdigest()} for f in sorted(folders)]
        if prefix and not entries:
            raise HubError(404, f"{sub} does not exist", "EntryNotFound")
        return entries

    def h_tree(self, repo_id, revision, sub, query):
        repo = self._readable_repo(repo_id)
        recursive = query.get("recursive", ["False"])[0].lower() in ("1", "true")
        with self.hub.lock:
            commit = self._commit_of(repo, revision)
            entries = self._tree_entries(commit, sub, recursive)
        self._json(200, entries)

    def h_paths_info(self, repo_id, revision):
        body = self._body()
        repo = self._readable_repo(repo_id)
        ctype = self.headers.get("Content-Type", "")
        if "json" in ctype:
            paths = json.loads(body or b"{}").get("paths", [])
        else:
            paths = parse_qs(body.decode()).get("paths", [])
        with self.hub.lock:
            commit = self._commit_of(repo, revision)
            out = []
            for p in paths:
                if p in commit.files:
                    d = commit.files[p]
                    out.append({"type": "file", "path": p, "size": len(d), "oid": git_blob_sha1(d)})
                elif any(f.startswith(p.rstrip("/") + "/") for f in commit.files):
                    out.append({"type": "directory", "path": p, "size": 0, "oid": hashlib.sha1(p.encode()).hexdigest()})
        self._json(200, out)

    def h_refs(self, repo_id):
        repo = self._readable_repo(repo_id)
        with self.hub.lock:
            branches = [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": s} for b, s in repo.branches.items()]
        self._json(200, {"branches": branches, "tags": [], "converts": []})

    def h_resolve(self, repo_id, revision, filename, head: bool):
        repo = self._readable_repo(repo_id)
        with self.hub.lock:
            commit = self._commit_of(repo, revision)
            data = commit.files.get(filename)
        if data is None:
            raise HubError(404, f"Entry not found: {filename}", "EntryNotFound")
        etag = git_blob_sha1(data)
        headers = {
            "Content-Type": "application/octet-stream",
            "X-Repo-Commit": commit.sha,
            "ETag": f'"{etag}"',
            "Accept-Ranges": "bytes",
        }
        status, body = 200, data
        range_header = self.headers.get("Range")
        m = re.match(r"bytes=(\d+)-(\d*)$", range_header or "")
        if m:
            start = int(m.group(1))
            end = int(m.group(2)) if m.group(2) else len(data) - 1
            if start >= len(data):
                raise HubError(416, "Requested range not satisfiable")
            body = data[start:end + 1]
            headers["Content-Range"] = f"bytes {start}-{start + len(body) - 1}/{len(data)}"
            status = 206
        if head:
            headers["Content-Length"] = str(len(body))
        self._send(status, body, headers, head=head)


def start_local_hub(
    tokens: dict[str, str] | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    sock: socket.socket | None = None,
    attempts: int = 20,
    delay: float = 0.25,
) -> LocalHub:
    """Start a :class:`LocalHub` serving from a daemon thread.

    On ``sock`` (a bound socket, see :class:`ReservedPort`) when given, else on ``host:port`` (0: any free
    port). A fixed port that is busy is retried ``attempts`` times, ``delay`` seconds apart, because the
    endpoint URL cannot change once huggingface_hub has read it.
    """
    hub = LocalHub(tokens)
    if sock is not None:
        return hub.start(sock=sock)
    for attempt in range(attempts):
        try:
            return hub.start(host, port)
        except OSError as err:
            if port == 0 or err.errno != errno.EADDRINUSE or attempt == attempts - 1:
                raise
            time.sleep(delay)
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------------------------- pytest plugin
# tests/conftest.py loads this file and registers it as a plugin (no sys.path edits). huggingface_hub reads
# HF_ENDPOINT when it is imported and transformers caches its HfApi client at first use, so the endpoint must be
# final before any test module imports them: conftest calls `reserve_endpoint()` at import time, which binds a
# free port on 127.0.0.1 and holds it (bound, not listening, no thread) until the first test that asks for
# `local_hub` starts the one server of the session on exactly that socket. Sessions that never ask for it never
# start it; requests to the endpoint are then refused, as for an unreachable Hub.


class ReservedPort:
    """A TCP port on ``host`` held by a bound socket until a server takes the socket over."""

    def __init__(self, host: str = "127.0.0.1"):
        self.sock: socket.socket | None = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.host, self.port = self.sock.getsockname()[:2]

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def take(self) -> socket.socket | None:
        """The bound socket, once (None afterwards, or after `close`)."""
        sock, self.sock = self.sock, None
        return sock

    def close(self) -> None:
        sock = self.take()
        if sock is not None:
            sock.close()


_reservation: ReservedPort | None = None
_session_hub: LocalHub | None = None


def reserve_endpoint(host: str = "127.0.0.1") -> str:
    """Reserve the session's Hub port (once) and return its endpoint URL, for HF_ENDPOINT."""
    global _reservation
    if _reservation is None:
        _reservation = ReservedPort(host)
    return _reservation.endpoint


def session_hub() -> LocalHub:
    """The session's Hub, started on the reserved endpoint at the first call."""
    global _session_hub
    if _session_hub is None:
        endpoint = reserve_endpoint()
        if os.environ.get("HF_ENDPOINT", "").rstrip("/") != endpoint:
            raise RuntimeError(f"HF_ENDPOINT is {os.environ.get('HF_ENDPOINT')!r}, not the local Hub {endpoint}")
        constants = sys.modules.get("huggingface_hub.constants")
        if constants is not None and constants.ENDPOINT != endpoint:
            raise RuntimeError(
                f"huggingface_hub was imported with endpoint {constants.ENDPOINT}, not the local Hub {endpoint}: "
                "something imported it before tests/conftest.py set HF_ENDPOINT"
            )
        sock = _reservation.take()
        if sock is not None:
            _session_hub = start_local_hub(sock=sock)
        else:  # the reserved socket is gone (closed): bind the same port again
            _session_hub = start_local_hub(host=_reservation.host, port=_reservation.port)
    return _session_hub


@pytest.fixture(scope="session")
def local_hub_server() -> LocalHub:
    """The session's Hub, started once, at the first test that needs it."""
    return session_hub()


@pytest.fixture
def local_hub(local_hub_server) -> LocalHub:
    """The session's local Hub, with no injected faults before or after the test."""
    local_hub_server.clear_faults()
    yield local_hub_server
    local_hub_server.clear_faults()


@pytest.fixture
def hub_token() -> str:
    """A token the local Hub accepts (never set in the environment unless a test does it)."""
    return DEFAULT_TOKEN


@pytest.fixture
def hub_repo_id() -> str:
    """A fresh "org/name" repo id, so tests sharing the session's Hub never collide."""
    return f"hubtune-tests/model-{uuid.uuid4().hex[:10]}"


def pytest_unconfigure(config) -> None:
    global _session_hub
    if _session_hub is not None:
        _session_hub.stop()
        _session_hub = None
    if _reservation is not None:
        _reservation.close()
