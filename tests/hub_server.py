"""A fake Hugging Face Hub on 127.0.0.1, for tests: ``with serve_hub() as (url, hub): HfApi(endpoint=url, ...)``.

It answers the requests ``huggingface_hub`` sends for ``create_repo``, ``upload_folder`` / ``upload_file`` /
``create_commit`` (every file is uploaded "regular": base64 in the commit's NDJSON body, never LFS or Xet),
``delete_repo``, ``whoami``, ``model_info`` / ``repo_info``, ``list_repo_tree`` / ``list_repo_files``, and
``hf_hub_download`` / ``snapshot_download``; ``hub`` (a :class:`FakeHub`) records what it received.

``serve_hub(fail_with=401)`` answers every request (or, with ``fail_only``, those whose ``"METHOD /path"`` matches that
regular expression) with that status and a JSON error body, as the Hub does; a refused request changes nothing.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["FAKE_USER", "FakeHub", "git_blob_sha1", "serve_hub"]

FAKE_USER = "fake-user"  # the namespace of a repository created without one, and the name `whoami` answers
_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_FAIL_MESSAGES = {
    400: "Bad request",
    401: "Invalid credentials in Authorization header",
    403: "You don't have the rights to create a model under this namespace",
    404: "Repository not found",
    409: "You already created this model repo",
    429: "You have been rate-limited",
    500: "Internal Error - We're working hard to fix this as soon as possible!",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
_REPO = r"(?P<repo>[^/]+(?:/[^/]+)?)"
_API_REPO = rf"/api/(?P<kind>models|datasets|spaces)/{_REPO}"
_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(r"/api/repos/create"), "create_repo"),
    ("DELETE", re.compile(r"/api/repos/delete"), "delete_repo"),
    ("POST", re.compile(r"/api/validate-yaml"), "validate_yaml"),
    ("GET", re.compile(r"/api/whoami-v2"), "whoami"),
    ("POST", re.compile(rf"{_API_REPO}/preupload/(?P<rev>[^/]+)"), "preupload"),
    ("POST", re.compile(rf"{_API_REPO}/commit/(?P<rev>[^/]+)"), "commit"),
    ("GET", re.compile(rf"{_API_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?"), "tree"),
    ("GET", re.compile(rf"{_API_REPO}(?:/revision/(?P<rev>[^/]+))?"), "repo_info"),
    ("GET", re.compile(rf"/(?:(?P<kind>datasets|spaces)/)?{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)"), "resolve"),
    ("HEAD", re.compile(rf"/(?:(?P<kind>datasets|spaces)/)?{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)"), "resolve"),
]


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob holding ``data`` (``git hash-object``): the Hub's ETag of a regular file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class _HubError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


@dataclass
class FakeHub:
    """What the fake Hub holds and received.

    ``repos`` maps a repository id (``org/name``) to ``{"type": "model", "private": bool, "files": {path: bytes},
    "commits": [commit summaries], "sha": head commit id, "snapshots": {commit id: {path: bytes}}}``; ``requests`` lists
    ``(method, path)`` of every request (path unquoted, without its query); ``auth_headers`` the ``Authorization``
    header of every request, ``None`` where there was none.
    """

    fail_with: int | None = None
    fail_only: str | None = None
    url: str = ""
    repos: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    auth_headers: list[str | None] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def files(self, repo_id: str) -> dict[str, bytes]:
        """The files at the head of ``repo_id`` (a copy)."""
        with self.lock:
            return dict(self.repos[repo_id]["files"])

    def _fails(self, method: str, path: str) -> bool:
        if self.fail_with is None:
            return False
        return self.fail_only is None or re.search(self.fail_only, f"{method} {path}") is not None

    # ------------------------------------------------------------------ helpers (called with the lock held)

    def _repo(self, repo_id: str, kind: str | None = None) -> tuple[str, dict[str, Any]]:
        repo_id = repo_id if "/" in repo_id else f"{FAKE_USER}/{repo_id}"
        repo = self.repos.get(repo_id)
        if repo is None or (kind is not None and repo["type"] != _TYPES.get(kind, kind)):
            raise _HubError(404, "Repository not found", {"X-Error-Code": "RepoNotFound"})
        return repo_id, repo

    @staticmethod
    def _snapshot(repo: dict[str, Any], revision: str) -> tuple[str, dict[str, bytes]]:
        if revision in ("main", repo["sha"]):
            return repo["sha"], repo["files"]
        if revision in repo["snapshots"]:
            return revision, repo["snapshots"][revision]
        raise _HubError(404, f"Invalid rev id: {revision}", {"X-Error-Code": "RevisionNotFound"})

    def _repo_url(self, repo_id: str, repo_type: str) -> str:
        return f"{self.url}/{_URL_PREFIX[repo_type]}{repo_id}"

    # ------------------------------------------------------------------ endpoints: (status, JSON body, headers)

    def create_repo(self, body: bytes, **_: Any) -> tuple[int, Any, dict[str, str]]:
        payload = json.loads(body or b"{}")
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or FAKE_USER}/{payload['name']}"
        if repo_id in self.repos:
            message = f"You already created this {repo_type} repo"
            return 409, {"error": message, "url": self._repo_url(repo_id, repo_type)}, {}
        private = payload["visibility"] != "public" if "visibility" in payload else bool(payload.get("private"))
        sha = hashlib.sha1(f"initial commit of {repo_type} {repo_id}".encode()).hexdigest()
        self.repos[repo_id] = {
            "type": repo_type,
            "private": private,
            "files": {},
            "commits": [],
            "sha": sha,
            "snapshots": {sha: {}},
        }
        return 200, {"url": self._repo_url(repo_id, repo_type), "name": repo_id, "id": repo_id}, {}

    def delete_repo(self, body: bytes, **_: Any) -> tuple[int, Any, dict[str, str]]:
        payload = json.loads(body or b"{}")
        repo_id, _repo = self._repo(f"{payload.get('organization') or FAKE_USER}/{payload['name']}")
        del self.repos[repo_id]
        return 200, {}, {}

    def validate_yaml(self, **_: Any) -> tuple[int, Any, dict[str, str]]:
        return 200, {"errors": [], "warnings": []}, {}

    def whoami(self, **_: Any) -> tuple[int, Any, dict[str, str]]:
        token = {"displayName": "fake", "role": "write"}
        return (
            200,
            {
                "type": "user",
                "name": FAKE_USER,
                "fullname": "Fake User",
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": token},
            },
            {},
        )

    def preupload(self, repo: str, kind: str, rev: str, body: bytes, **_: Any) -> tuple[int, Any, dict[str, str]]:
        _repo_id, record = self._repo(repo, kind)
        _sha, files = self._snapshot(record, rev)
        answer = []
        for item in json.loads(body)["files"]:
            existing = files.get(item["path"])
            answer.append(
                {
                    "path": item["path"],
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    "oid": git_blob_sha1(existing) if existing is not None else None,
                }
            )
        return 200, {"files": answer, "commitOid": record["sha"]}, {}

    def commit(self, repo: str, kind: str, rev: str, body: bytes, query: dict[str, list[str]], **_: Any):
        repo_id, record = self._repo(repo, kind)
        if rev != "main":
            raise _HubError(
                404, f"Invalid rev id: {rev} (the fake hub commits to main only)", {"X-Error-Code": "RevisionNotFound"}
            )
        if query.get("create_pr"):
            raise _HubError(400, "Pull requests are not supported by the fake hub")
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise _HubError(400, "The first NDJSON line must be the commit header")
        header = lines[0]["value"]
        parent = header.get("parentCommit")
        if parent is not None and not record["sha"].startswith(parent):
            raise _HubError(412, "A commit has happened since the parent commit you gave")
        files = dict(record["files"])
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value", {})
            if key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise _HubError(400, f"Unsupported encoding {value.get('encoding')!r}")
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise _HubError(404, "A file with this name doesn't exist", {"X-Error-Code": "EntryNotFound"})
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {path: data for path, data in files.items() if not path.startswith(prefix)}
            else:  # lfsFile: the fake hub never asks for LFS/Xet uploads, so it has no content for one
                raise _HubError(400, f"Unsupported commit operation {key!r} (the fake hub takes regular files only)")
        state = "\n".join(f"{path}:{git_blob_sha1(data)}" for path, data in sorted(files.items()))
        sha = hashlib.sha1(f"{record['sha']}\n{header.get('summary', '')}\n{state}".encode()).hexdigest()
        record.update(files=files, sha=sha)
        record["snapshots"][sha] = files
        record["commits"].append(header.get("summary", ""))
        url = f"{self._repo_url(repo_id, record['type'])}/commit/{sha}"
        return 200, {"success": True, "commitOid": sha, "commitUrl": url, "pullRequestUrl": None}, {}

    def repo_info(self, repo: str, kind: str, rev: str | None, **_: Any) -> tuple[int, Any, dict[str, str]]:
        repo_id, record = self._repo(repo, kind)
        sha, files = self._snapshot(record, rev or "main")
        siblings = [
            {"rfilename": path, "size": len(data), "blobId": git_blob_sha1(data)}
            for path, data in sorted(files.items())
        ]
        info = {
            "id": repo_id,
            "author": repo_id.split("/")[0],
            "sha": sha,
            "private": record["private"],
            "disabled": False,
            "gated": False,
            "tags": [],
            "siblings": siblings,
        }
        if record["type"] == "model":
            info["modelId"] = repo_id
        return 200, info, {}

    def tree(self, repo: str, kind: str, rev: str, path: str | None, query: dict[str, list[str]], **_: Any):
        _repo_id, record = self._repo(repo, kind)
        _sha, files = self._snapshot(record, rev)
        recursive = query.get("recursive", ["False"])[0].lower() in ("true", "1")
        base = f"{path.strip('/')}/" if path else ""
        entries: dict[str, dict[str, Any]] = {}
        for name, data in sorted(files.items()):
            if not name.startswith(base):
                continue
            parts = name[len(base) :].split("/")
            for depth in range(1, len(parts)):  # the folders on the way
                folder = base + "/".join(parts[:depth])
                if recursive or depth == 1:
                    entries.setdefault(
                        folder,
                        {
                            "type": "directory",
                            "path": folder,
                            "size": 0,
                            "oid": hashlib.sha1(folder.encode()).hexdigest(),
                        },
                    )
            if recursive or len(parts) == 1:
                entries[name] = {"type": "file", "path": name, "size": len(data), "oid": git_blob_sha1(data)}
        if path and not entries:
            raise _HubError(404, f"{path} does not exist on this revision", {"X-Error-Code": "EntryNotFound"})
        return 200, list(entries.values()), {}

    def resolve(self, repo: str, kind: str | None, rev: str, path: str, **_: Any) -> tuple[int, Any, dict[str, str]]:
        _repo_id, record = self._repo(repo, kind or "models")
        sha, files = self._snapshot(record, rev)
        data = files.get(path)
        if data is None:
            raise _HubError(404, "Entry not found", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": sha})
        headers = {
            "X-Repo-Commit": sha,
            "ETag": f'"{git_blob_sha1(data)}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        return 200, data, headers


class _HubHandler(http.server.BaseHTTPRequestHandler):
    # HTTP/1.1 answers with a Content-Length each, but one request per connection: a pooled keep-alive connection
    # could otherwise outlive the server and reach a later one that got the same port
    protocol_version = "HTTP/1.1"

    def __init__(self, *args: Any, hub: FakeHub, **kwargs: Any):
        self.hub = hub
        super().__init__(*args, **kwargs)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():  # trailers, then the blank line
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self) -> None:
        body = self._read_body()  # read even when refused: a client still sending its body would see a reset
        split = urlsplit(self.path)
        path, method, hub = split.path, self.command, self.hub
        with hub.lock:
            hub.requests.append((method, unquote(path)))
            hub.auth_headers.append(self.headers.get("Authorization"))
            try:
                if hub._fails(method, unquote(path)):
                    status = hub.fail_with or 500
                    message = _FAIL_MESSAGES.get(status, "Error")
                    extra = {"X-Error-Message": message} if status in (401, 403) else {}
                    if status == 404:
                        extra["X-Error-Code"] = "RepoNotFound"
                    raise _HubError(status, message, extra)
                for route_method, pattern, name in _ROUTES:
                    match = pattern.fullmatch(path) if route_method == method else None
                    if match is not None:
                        groups = {
                            key: unquote(value) if value is not None else None
                            for key, value in match.groupdict().items()
                        }
                        status, answer, headers = getattr(hub, name)(body=body, query=parse_qs(split.query), **groups)
                        break
                else:
                    raise _HubError(404, f"The fake hub does not serve {method} {path}")
            except _HubError as err:
                status, answer, headers = err.status, {"error": err.message}, err.headers
        if isinstance(answer, bytes):
            self._send(status, answer, headers, ranged=True)
        else:
            self._send(status, json.dumps(answer).encode(), {"Content-Type": "application/json", **headers})

    def _send(self, status: int, payload: bytes, headers: dict[str, str], ranged: bool = False) -> None:
        wanted = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "")) if ranged else None
        if wanted is not None and status == 200:
            start = int(wanted.group(1))
            end = min(int(wanted.group(2)) if wanted.group(2) else len(payload) - 1, len(payload) - 1)
            if start >= len(payload):
                status, headers = 416, {**headers, "Content-Range": f"bytes */{len(payload)}"}
                payload = b""
            else:
                status, headers = 206, {**headers, "Content-Range": f"bytes {start}-{end}/{len(payload)}"}
                payload = payload[start : end + 1]
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)


@contextmanager
def serve_hub(fail_with: int | None = None, fail_only: str | None = None) -> Iterator[tuple[str, FakeHub]]:
    """Serve a fake, empty Hub on a free port of 127.0.0.1 until the block ends; yields its URL and the recorder.

    ``fail_with``: answer requests with this HTTP status and the Hub's JSON error body (401: ``{"error": "Invalid
    credentials in Authorization header"}``, also in ``X-Error-Message``), storing nothing; ``fail_only``: a regular
    expression searched in ``"METHOD /path"``, so that only the requests it matches fail (default: all of them).
    """
    hub = FakeHub(fail_with=fail_with, fail_only=fail_only)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_HubHandler, hub=hub))
    httpd.daemon_threads = True
    hub.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, name="fake-hub", daemon=True)
    thread.start()
    try:
        yield hub.url, hub
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
