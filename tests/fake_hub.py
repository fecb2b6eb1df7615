"""A local Hugging Face Hub: the endpoints huggingface_hub calls to list a model repository and download its files."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote, urlsplit

# Stored with Git LFS on the real Hub: their ETag is the sha256 of the content, the others' is the git blob id.
LFS_SUFFIXES = (".safetensors", ".bin", ".pth")


class Request(NamedTuple):
    method: str
    path: str
    range: str | None
    authorization: str | None


@dataclass
class Repo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit sha -> {path in repo: content}
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag -> commit sha
    token: str | None = None  # set: the repo is gated, and its files are served only with this bearer token

    def commit(self, revision: str) -> str | None:
        return revision if revision in self.commits else self.refs.get(revision)


class FakeHub:
    """`with FakeHub() as hub:` serves `hub.repos` at `hub.url` and records every request in `hub.requests`."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[Request] = []
        self.interrupt: set[str] = set()  # files whose next full GET breaks off half-way, to exercise resuming
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.hub = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self._server.server_port}"

    def add(self, repo_id: str, files: dict[str, bytes], *, ref: str = "main", token: str | None = None) -> str:
        """Commit `files` as the whole content of `repo_id` at `ref` (a branch or tag); returns the commit sha."""
        repo = self.repos.setdefault(repo_id, Repo())
        repo.token = token or repo.token
        digest = hashlib.sha1(repo_id.encode())
        for name in sorted(files):
            digest.update(name.encode() + hashlib.sha256(files[name]).digest())
        sha = digest.hexdigest()
        repo.commits[sha] = dict(files)
        repo.refs[ref] = sha
        return sha

    def file_gets(self) -> list[str]:
        """Repository paths fetched with GET (HEAD only reads metadata)."""
        return [unquote(r.path.split("/resolve/", 1)[1].split("/", 1)[1]) for r in self.requests if _is_get(r)]

    def __enter__(self) -> FakeHub:
        # A short poll interval: shutdown() waits for one, once per test.
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


def _is_get(request: Request) -> bool:
    return request.method == "GET" and "/resolve/" in request.path


def _blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _file_entry(path: str, content: bytes) -> dict:
    """A file as the tree API lists it (the model API's siblings carry the same facts under other names)."""
    entry = {"type": "file", "path": path, "size": len(content), "oid": _blob_id(content)}
    if path.endswith(LFS_SUFFIXES):
        entry["lfs"] = {"oid": hashlib.sha256(content).hexdigest(), "size": len(content), "pointerSize": 134}
    return entry


def _sibling(entry: dict) -> dict:
    """The same file as model_info(files_metadata=True) lists it."""
    sibling = {"rfilename": entry["path"], "size": entry["size"], "blobId": entry["oid"]}
    if "lfs" in entry:
        sibling["lfs"] = {"sha256": entry["lfs"]["oid"], "size": entry["size"], "pointerSize": 134}
    return sibling


class _Handler(BaseHTTPRequestHandler):
    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def _answer(self, send_body: bool) -> None:
        hub: FakeHub = self.server.hub  # type: ignore[attr-defined]
        raw_path = urlsplit(self.path).path
        hub.requests.append(
            Request(self.command, raw_path, self.headers.get("Range"), self.headers.get("Authorization"))
        )
        # Split before unquoting: a revision such as refs/pr/1 arrives as one %2F-quoted segment.
        parts = [unquote(part) for part in raw_path.strip("/").split("/")]
        if parts[:2] == ["api", "models"] and len(parts) in (4, 6):
            # GET /api/models/{repo_id}[/revision/{revision} | /tree/{revision}]: model_info and list_repo_tree
            repo_id, revision = "/".join(parts[2:4]), parts[5] if len(parts) == 6 else "main"
            if len(parts) == 6 and parts[4] not in ("revision", "tree"):
                return self._error(404, None, "Not Found")
            self._api(hub, repo_id, revision, tree=len(parts) == 6 and parts[4] == "tree")
        elif len(parts) >= 5 and parts[2] == "resolve":
            # HEAD or GET /{repo_id}/resolve/{revision}/{path}: file metadata and content
            self._file(hub, "/".join(parts[:2]), parts[3], "/".join(parts[4:]), send_body)
        else:  # e.g. telemetry: huggingface_hub shrugs off a 404 there
            self._error(404, None, "Not Found")

    def _lookup(self, hub: FakeHub, repo_id: str, revision: str) -> tuple[Repo, str] | None:
        repo = hub.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", f"Repository not found: {repo_id}")
            return None
        commit = repo.commit(revision)
        if commit is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return None
        return repo, commit

    def _api(self, hub: FakeHub, repo_id: str, revision: str, *, tree: bool) -> None:
        found = self._lookup(hub, repo_id, revision)
        if found is None:
            return
        repo, commit = found
        entries = [_file_entry(path, content) for path, content in sorted(repo.commits[commit].items())]
        if tree:  # always the recursive listing, which is what snapshot_download asks for
            return self._json(entries)
        siblings = [_sibling(entry) for entry in entries]
        gated = "manual" if repo.token else False  # a gated repo's listing is public, as on the Hub
        self._json({"id": repo_id, "sha": commit, "private": False, "gated": gated, "siblings": siblings})

    def _file(self, hub: FakeHub, repo_id: str, revision: str, path: str, send_body: bool) -> None:
        found = self._lookup(hub, repo_id, revision)
        if found is None:
            return
        repo, commit = found
        if repo.token and self.headers.get("Authorization") != f"Bearer {repo.token}":
            return self._error(401, "GatedRepo", f"Access to model {repo_id} is restricted and you are not in the "
                               "authorized list. Visit the model page to ask for access.")  # fmt: skip
        content = repo.commits[commit].get(path)
        if content is None:
            return self._error(404, "EntryNotFound", f"{path} does not exist on {revision}", commit=commit)
        entry = _file_entry(path, content)
        start = int(match.group(1)) if (match := re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))) else 0
        self.send_response(206 if start else 200)
        self.send_header("X-Repo-Commit", commit)
        self.send_header("ETag", f'"{entry["oid"]}"')
        if "lfs" in entry:
            self.send_header("X-Linked-Etag", f'"{entry["lfs"]["oid"]}"')
            self.send_header("X-Linked-Size", str(len(content)))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(content) - start))
        self.end_headers()
        if not send_body:
            return
        if not start and path in hub.interrupt:
            hub.interrupt.discard(path)
            self.wfile.write(content[: len(content) // 2])
            self.close_connection = True  # the client sees a body shorter than Content-Length
            return
        self.wfile.write(content[start:])

    def _json(self, data) -> None:
        body = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str | None, message: str, *, commit: str | None = None) -> None:
        # huggingface_hub picks its exception class from X-Error-Code (RepoNotFound, RevisionNotFound, GatedRepo, ...).
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def use_fake_hub(monkeypatch, url: str, home: Path) -> None:
    """Point huggingface_hub at `url`, online, with no saved token, and its default cache under `home`.
    huggingface_hub reads HF_ENDPOINT and friends once, at import, so its constants are patched as well."""
    from huggingface_hub import constants

    for name in ("HF_HUB_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # Xet needs a CAS server; plain HTTP is what we serve
    # Telemetry on also fetches an agent registry from the endpoint once per process: keep requests to what we test.
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))  # a developer's `hf auth login` stays out
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
