"""A Hub-compatible HTTP server on 127.0.0.1 for tests (stdlib only, in-memory storage).

It implements the part of the Hugging Face Hub HTTP API that `huggingface_hub` (v2.4, with Xet disabled:
`HF_HUB_DISABLE_XET=1`) uses for model repos:

- `POST /api/repos/create`, `DELETE /api/repos/delete`, `GET /api/whoami-v2`, `POST /api/validate-yaml`
- `GET /api/models/{repo}[/revision/{rev}]` (model_info / repo_info: sha, siblings, `?blobs=1` sizes and LFS info)
- `GET .../refs`, `GET .../tree/{rev}[/{path}]` (recursive or not), `POST .../paths-info/{rev}`, `GET .../commits/{rev}`
- `POST .../preupload/{rev}` (regular or LFS upload mode, remote oid), `POST /{repo}.git/info/lfs/objects/batch`
  (basic transfer: `PUT` upload and `POST` verify actions), `POST .../commit/{rev}` (ndjson: header with
  `parentCommit`, `file` base64, `lfsFile`, `deletedFile`, `deletedFolder`; stale parent -> HTTP 412)
- `POST/DELETE .../branch/{name}`, `POST .../tag/{rev}`, `DELETE .../tag/{name}`
- `HEAD/GET /{repo}/resolve/{rev}/{path}`: regular files are served directly (`ETag` = git blob sha1,
  `X-Repo-Commit`); LFS files answer 302 to a second "CDN" listener on another port (`X-Linked-Etag` = sha256,
  `X-Linked-Size`, `X-Repo-Commit`, `Location`), as the real Hub does, so the client drops auth there.

Not implemented: Xet, pull requests (`create_pr`), copies from other repos, datasets/spaces, gated/private access
control (any token, or none, is accepted), pagination (one page), multipart LFS uploads, `expand` fields.
Mutations run one at a time under a lock; every commit gets its own sha and its parent is the branch head.
Unknown routes answer 404 and are recorded in `server.unhandled` (and printed to stderr) to ease debugging.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

LFS_SIZE_THRESHOLD = 10 * 1024 * 1024  # the Hub stores files above 10 MB with LFS, whatever their name
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*",
        "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb",
        "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors", "saved_model/**/*", "*.tar.*",
        "*.tar", "*.tflite", "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*",
    )
)  # fmt: skip
API_ACTIONS = "revision|refs|tree|commits|commit|preupload|branch|tag|paths-info"
API_ROUTE = re.compile(rf"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/(?P<action>{API_ACTIONS})(?:/(?P<rest>.*))?)?$")
RESOLVE_ROUTE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
LFS_BATCH_ROUTE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch$")


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None, **body):
        super().__init__(message)
        self.status, self.message, self.code, self.headers, self.body = status, message, code, headers or {}, body


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def iso_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class Entry:
    """One file of a commit: its content key (sha256 for LFS, git sha1 otherwise) and metadata."""

    size: int
    git_oid: str
    sha256: str | None = None  # set for LFS files

    def tree_item(self, path: str) -> dict:
        item = {"type": "file", "path": path, "size": self.size, "oid": self.git_oid}
        if self.sha256 is not None:
            pointer_size = len(lfs_pointer(self.sha256, self.size))
            item["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": pointer_size}
        return item


@dataclass
class Commit:
    sha: str
    parents: list[str]
    title: str
    message: str
    date: str
    files: dict[str, Entry]


@dataclass
class Repo:
    repo_id: str
    private: bool
    created_at: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


class HubState:
    """In-memory repos, blobs and LFS objects; every method is called with `self.lock` held."""

    def __init__(self):
        self.lock = threading.Lock()
        self.repos: dict[str, Repo] = {}
        self.blobs: dict[str, bytes] = {}  # git sha1 -> content of regular files
        self.lfs: dict[str, bytes] = {}  # sha256 -> content of LFS files
        self.counter = 0

    def repo(self, repo_id: str) -> Repo:
        if repo_id not in self.repos:
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return self.repos[repo_id]

    def resolve(self, repo: Repo, revision: str) -> Commit:
        sha = repo.branches.get(revision) or repo.tags.get(revision)
        if sha is None and revision in repo.commits:
            sha = revision
        if sha is None:
            raise HubError(404, f"Invalid rev id: {revision} in {repo.repo_id}", "RevisionNotFound")
        return repo.commits[sha]

    def new_commit(self, repo: Repo, parents: list[str], title: str, message: str, files: dict) -> Commit:
        self.counter += 1
        seed = json.dumps([repo.repo_id, parents, title, sorted(files), self.counter, time.time()]).encode()
        commit = Commit(hashlib.sha1(seed).hexdigest(), parents, title, message, iso_now(), dict(files))
        repo.commits[commit.sha] = commit
        return commit

    def create_repo(self, repo_id: str, private: bool, url: str) -> None:
        if repo_id in self.repos:  # the Hub's 409 carries the repo url, which create_repo(exist_ok=True) returns
            raise HubError(409, "You already created this model repo", url=url)
        repo = Repo(repo_id, private, iso_now())
        data = DEFAULT_GITATTRIBUTES.encode()
        self.blobs[git_blob_sha1(data)] = data
        initial = self.new_commit(
            repo, [], "initial commit", "", {".gitattributes": Entry(len(data), git_blob_sha1(data))}
        )
        repo.branches["main"] = initial.sha
        self.repos[repo_id] = repo

    def is_lfs(self, commit: Commit | None, path: str, size: int) -> bool:
        entry = commit.files.get(".gitattributes") if commit else None
        text = self.blobs.get(entry.git_oid, b"").decode(errors="replace") if entry else DEFAULT_GITATTRIBUTES
        patterns = [line.split()[0] for line in text.splitlines() if "filter=lfs" in line]
        name = path.rsplit("/", 1)[-1]
        return size > LFS_SIZE_THRESHOLD or any(fnmatch.fnmatch(p, pat) for pat in patterns for p in (path, name))

    def apply_commit(self, repo: Repo, branch: str, lines: list[dict]) -> Commit:
        if branch not in repo.branches:
            raise HubError(404, f"Invalid rev id: {branch} is not a branch of {repo.repo_id}", "RevisionNotFound")
        head = repo.branches[branch]
        header = next((item["value"] for item in lines if item.get("key") == "header"), {})
        parent = header.get("parentCommit")
        if parent is not None and not head.startswith(parent):
            raise HubError(412, f"A commit has happened since {parent} on {branch}: head is {head}")
        files = dict(repo.commits[head].files)
        for item in lines:
            key, value = item.get("key"), item.get("value", {})
            if key == "file":
                data = base64.b64decode(value["content"])
                self.blobs[git_blob_sha1(data)] = data
                files[value["path"]] = Entry(len(data), git_blob_sha1(data))
            elif key == "lfsFile":
                if value["oid"] not in self.lfs:
                    raise HubError(400, f"LFS object {value['oid']} for {value['path']} was never uploaded")
                size = len(self.lfs[value["oid"]])
                files[value["path"]] = Entry(size, git_blob_sha1(lfs_pointer(value["oid"], size)), value["oid"])
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                gone = [p for p in files if p.startswith(prefix)]
                if not gone:
                    raise HubError(404, f"A folder with this name doesn't exist: {value['path']}", "EntryNotFound")
                for p in gone:
                    del files[p]
            elif key != "header":
                raise HubError(400, f"unknown commit operation {key!r}")
        commit = self.new_commit(repo, [head], header.get("summary", ""), header.get("description", ""), files)
        repo.branches[branch] = commit.sha
        return commit

    def content(self, entry: Entry) -> bytes:
        return self.lfs[entry.sha256] if entry.sha256 is not None else self.blobs[entry.git_oid]


def tree_items(files: dict[str, Entry], prefix: str, recursive: bool) -> list[dict]:
    """Files and folders under `prefix` ('' for the root), like GET /tree."""
    base = prefix.strip("/") + "/" if prefix.strip("/") else ""
    items, folders = [], set()
    for path in sorted(files):
        if not path.startswith(base):
            continue
        parts = path[len(base) :].split("/")
        for depth in range(1, len(parts)):
            if recursive or depth == 1:
                folders.add(base + "/".join(parts[:depth]))
        if recursive or len(parts) == 1:
            items.append(files[path].tree_item(path))
    folder_oid = lambda p: hashlib.sha1(p.encode()).hexdigest()  # noqa: E731 (stable fake tree oid)
    items += [{"type": "directory", "path": p, "oid": folder_oid(p), "size": 0} for p in sorted(folders)]
    if base and not items:
        raise HubError(404, f"{prefix} does not exist on this revision", "EntryNotFound")
    return items


class HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every response carries Content-Length
    server: _Listener

    def log_message(self, format, *args):  # noqa: A002 (silence the per-request access log)
        pass

    # -- plumbing ---------------------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, content_type="application/json"):
        self.send_response(status)
        headers = {"Content-Type": content_type, "Content-Length": str(len(body)), **(headers or {})}
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, obj, status: int = 200, headers: dict | None = None):
        self._send(status, json.dumps(obj).encode(), headers)

    def _dispatch(self):
        url = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.body = self._read_body() if self.command in ("POST", "PUT", "DELETE") else b""
        hub: HubServer = self.server.hub
        try:
            routes = hub.cdn_routes if self.server.is_cdn else hub.api_routes
            for methods, pattern, handler in routes:
                match = pattern.match(url.path) if methods is None or self.command in methods else None
                if match:
                    return handler(self, **match.groupdict(default=""))
            hub.unhandled.append(f"{self.command} {self.path}")
            print(f"[hub_server] no route for {self.command} {self.path}", file=sys.stderr)
            raise HubError(404, f"hub_server: no route for {self.command} {url.path}")
        except HubError as err:
            headers = dict(err.headers)
            if err.code:
                headers["X-Error-Code"] = err.code
            headers["X-Error-Message"] = err.message.encode("ascii", "replace").decode().replace("\n", " ")
            self._json({"error": err.message, **err.body}, err.status, headers)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

    def _payload(self) -> dict:
        return json.loads(self.body or b"{}")


# -- API handlers (each takes the request handler and the route's named groups) --------------------------
def _repo_info(req: HubHandler, repo: str, action: str, rest: str):
    hub = req.server.hub
    with hub.state.lock:
        r = hub.state.repo(repo)
        commit = hub.state.resolve(r, rest if action == "revision" else "main")
    siblings = []
    for path, entry in sorted(commit.files.items()):
        sibling = {"rfilename": path}
        if req.query.get("blobs") in ("1", "true", "True"):
            sibling.update(size=entry.size, blobId=entry.git_oid)
            if entry.sha256:
                lfs = entry.tree_item(path)["lfs"]
                sibling["lfs"] = {"size": entry.size, "sha256": entry.sha256, "pointerSize": lfs["pointerSize"]}
        siblings.append(sibling)
    namespace = repo.split("/")[0]
    req._json({
        "_id": hashlib.md5(repo.encode()).hexdigest()[:24], "id": repo, "modelId": repo, "author": namespace,
        "sha": commit.sha, "lastModified": commit.date, "createdAt": r.created_at, "private": r.private,
        "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": [], "library_name": None,
        "siblings": siblings,
    })  # fmt: skip


def _api(req: HubHandler, repo: str, action: str, rest: str):
    hub = req.server.hub
    rest = rest if action == "tree" else unquote(rest)  # tree: "{quoted rev}/{quoted path}", split it first
    if req.command == "GET" and action in ("", "revision"):
        return _repo_info(req, repo, action, rest)
    handler = API_HANDLERS.get((req.command, action))
    if handler is None:
        raise HubError(404, f"hub_server: no route for {req.command} /api/models/{repo}/{action}")
    with hub.state.lock:
        return handler(req, hub, hub.state.repo(repo), rest)


def _refs(req, hub, repo: Repo, rest):
    def ref(kind, name, sha):
        return {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": sha}

    req._json({
        "branches": [ref("heads", n, s) for n, s in sorted(repo.branches.items())],
        "tags": [ref("tags", n, s) for n, s in sorted(repo.tags.items())],
        "converts": [], "pullRequests": [],
    })  # fmt: skip


def _tree(req, hub, repo: Repo, rest):
    revision, _, path = rest.partition("/")
    commit = hub.state.resolve(repo, unquote(revision))
    recursive = req.query.get("recursive", "false").lower() in ("1", "true")
    req._json(tree_items(commit.files, unquote(path), recursive))


def _paths_info(req, hub, repo: Repo, rest):
    commit = hub.state.resolve(repo, rest)
    form = parse_qs(req.body.decode())
    out = []
    for path in form.get("paths", []):
        path = path.strip("/")
        if path in commit.files:
            out.append(commit.files[path].tree_item(path))
        elif any(p.startswith(path + "/") for p in commit.files):
            out.append({"type": "directory", "path": path, "oid": hashlib.sha1(path.encode()).hexdigest()})
    req._json(out)


def _commits(req, hub, repo: Repo, rest):
    commit, out = hub.state.resolve(repo, rest), []
    while commit is not None:
        out.append({
            "id": commit.sha, "title": commit.title, "message": commit.message, "date": commit.date,
            "authors": [{"user": "tester"}],
        })  # fmt: skip
        commit = repo.commits[commit.parents[0]] if commit.parents else None
    req._json(out)


def _preupload(req, hub, repo: Repo, rest):
    try:
        commit = hub.state.resolve(repo, rest)
    except HubError:
        commit = None  # a branch still to be created: nothing to compare against
    files = []
    for item in req._payload().get("files", []):
        path = item["path"]
        lfs = hub.state.is_lfs(commit, path, item.get("size", 0))
        entry = commit.files.get(path) if commit else None
        oid = None if entry is None else (entry.sha256 or entry.git_oid)
        files.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
    req._json({"files": files, "commitOid": commit.sha if commit else None})


def _commit(req, hub, repo: Repo, rest):
    lines = [json.loads(line) for line in req.body.splitlines() if line.strip()]
    commit = hub.state.apply_commit(repo, rest, lines)
    url = f"{hub.base_url}/{repo.repo_id}/commit/{commit.sha}"
    req._json({"success": True, "commitOid": commit.sha, "commitUrl": url, "pullRequestUrl": None})


def _create_branch(req, hub, repo: Repo, rest):
    if rest in repo.branches:
        raise HubError(409, f"Branch {rest} already exists in {repo.repo_id}")
    start = req._payload().get("startingPoint") or "main"
    repo.branches[rest] = hub.state.resolve(repo, start).sha
    req._json({})


def _delete_branch(req, hub, repo: Repo, rest):
    if repo.branches.pop(rest, None) is None:
        raise HubError(404, f"Invalid rev id: {rest}", "RevisionNotFound")
    req._json({})


def _create_tag(req, hub, repo: Repo, rest):
    tag = req._payload()["tag"]
    commit = hub.state.resolve(repo, rest)
    if tag in repo.tags:
        raise HubError(409, f"Tag {tag} already exists in {repo.repo_id}")
    repo.tags[tag] = commit.sha
    req._json({})


def _delete_tag(req, hub, repo: Repo, rest):
    if repo.tags.pop(rest, None) is None:
        raise HubError(404, f"Invalid rev id: {rest}", "RevisionNotFound")
    req._json({})


API_HANDLERS = {
    ("GET", "refs"): _refs,
    ("GET", "tree"): _tree,
    ("POST", "paths-info"): _paths_info,
    ("GET", "commits"): _commits,
    ("POST", "preupload"): _preupload,
    ("POST", "commit"): _commit,
    ("POST", "branch"): _create_branch,
    ("DELETE", "branch"): _delete_branch,
    ("POST", "tag"): _create_tag,
    ("DELETE", "tag"): _delete_tag,
}


def _create_repo(req: HubHandler):
    payload, hub = req._payload(), req.server.hub
    if payload.get("type", "model") != "model":
        raise HubError(400, f"hub_server only serves model repos, not {payload.get('type')!r}")
    if not payload.get("organization"):
        raise HubError(400, "hub_server needs a namespaced repo id ('org/name')")
    repo_id = f"{payload['organization']}/{payload['name']}"
    with hub.state.lock:
        hub.state.create_repo(repo_id, private=payload.get("visibility") == "private", url=f"{hub.base_url}/{repo_id}")
    req._json({"url": f"{hub.base_url}/{repo_id}", "name": repo_id, "id": repo_id})


def _delete_repo(req: HubHandler):
    payload, hub = req._payload(), req.server.hub
    repo_id = f"{payload.get('organization')}/{payload.get('name')}"
    with hub.state.lock:
        hub.state.repo(repo_id)
        del hub.state.repos[repo_id]
    req._json({})


def _lfs_batch(req: HubHandler, repo: str):
    hub = req.server.hub
    with hub.state.lock:
        hub.state.repo(repo)
        present = set(hub.state.lfs)
    objects = []
    for obj in req._payload().get("objects", []):
        out = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
        if obj["oid"] not in present:
            out["actions"] = {
                "upload": {"href": f"{hub.base_url}/_lfs/upload/{obj['oid']}", "header": {}},
                "verify": {"href": f"{hub.base_url}/_lfs/verify/{obj['oid']}", "header": {}},
            }
        objects.append(out)
    req._json({"transfer": "basic", "objects": objects}, headers={"Content-Type": "application/vnd.git-lfs+json"})


def _lfs_upload(req: HubHandler, oid: str):
    if hashlib.sha256(req.body).hexdigest() != oid:
        raise HubError(400, f"uploaded content does not match sha256 {oid}")
    with req.server.hub.state.lock:
        req.server.hub.state.lfs[oid] = req.body
    req._send(200, b"", {"ETag": f'"{oid}"'})


def _lfs_verify(req: HubHandler, oid: str):
    payload, state = req._payload(), req.server.hub.state
    with state.lock:
        data = state.lfs.get(oid)
    if data is None or len(data) != payload.get("size", len(data)):
        raise HubError(404, f"LFS object {oid} not found (or wrong size)")
    req._json({"success": True})


def _send_bytes(req: HubHandler, data: bytes, headers: dict):
    """200 with the file, or 206 for a `Range: bytes=N-[M]` request (resumed downloads)."""
    match = re.fullmatch(r"bytes=(\d+)-(\d*)", req.headers.get("Range", ""))
    headers = {"Accept-Ranges": "bytes", **headers}
    if match:
        start, end = int(match[1]), int(match[2]) if match[2] else len(data) - 1
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        return req._send(206, data[start : end + 1], headers, "application/octet-stream")
    req._send(200, data, headers, "application/octet-stream")


def _resolve(req: HubHandler, repo: str, rev: str, path: str):
    hub, rev, path = req.server.hub, unquote(rev), unquote(path)
    with hub.state.lock:
        commit = hub.state.resolve(hub.state.repo(repo), rev)
        entry = commit.files.get(path)
        data = hub.state.content(entry) if entry else None
    commit_header = {"X-Repo-Commit": commit.sha}
    if entry is None:
        raise HubError(404, f"{path} does not exist in {repo}@{rev}", "EntryNotFound", commit_header)
    if entry.sha256 is None:
        return _send_bytes(req, data, {**commit_header, "ETag": f'"{entry.git_oid}"'})
    location = f"{hub.cdn_url}/{entry.sha256}?filename={quote(path.rsplit('/', 1)[-1])}"
    headers = {
        **commit_header, "Location": location, "ETag": f'"{entry.git_oid}"',
        "X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size),
    }  # fmt: skip
    req._send(302, b"", headers)


def _cdn_get(req: HubHandler, oid: str):
    with req.server.hub.state.lock:
        data = req.server.hub.state.lfs.get(oid)
    if data is None:
        raise HubError(404, f"no LFS object {oid}")
    filename = req.query.get("filename", oid)
    _send_bytes(req, data, {"ETag": f'"{oid}"', "Content-Disposition": f'attachment; filename="{filename}"'})


def _whoami(req: HubHandler):
    req._json(
        {"type": "user", "name": "tester", "fullname": "Test User", "orgs": [], "auth": {"type": "access_token"}}
    )


def _agent_harnesses(req: HubHandler):
    req._json({"standardEnvVars": [], "harnesses": {}})


def _validate_yaml(req: HubHandler):
    req._json({"errors": [], "warnings": []})


class _Listener(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, hub: HubServer, port: int, is_cdn: bool):
        self.hub, self.is_cdn = hub, is_cdn
        super().__init__(("127.0.0.1", port), HubHandler, bind_and_activate=False)
        self.server_bind()  # reserves the port; connections are refused (fail fast) until start() listens


class HubServer:
    """Two loopback listeners (API and LFS "CDN"), bound on construction so their ports are reserved; until
    `start()` they refuse connections (clients fail fast rather than hang). `stop()` closes both."""

    def __init__(self, port: int = 0):
        self.state = HubState()
        self.unhandled: list[str] = []
        self.api = _Listener(self, port, is_cdn=False)
        self.cdn = _Listener(self, 0, is_cdn=True)
        self.port = self.api.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.cdn_url = f"http://127.0.0.1:{self.cdn.server_address[1]}"
        self.api_routes = [
            (("POST",), re.compile(r"^/api/repos/create$"), _create_repo),
            (("DELETE",), re.compile(r"^/api/repos/delete$"), _delete_repo),
            (("GET",), re.compile(r"^/api/whoami-v2$"), _whoami),
            (("POST",), re.compile(r"^/api/validate-yaml$"), _validate_yaml),
            (("GET",), re.compile(r"^/api/agent-harnesses$"), _agent_harnesses),
            (("POST",), LFS_BATCH_ROUTE, _lfs_batch),
            (("PUT",), re.compile(r"^/_lfs/upload/(?P<oid>[0-9a-f]{64})$"), _lfs_upload),
            (("POST",), re.compile(r"^/_lfs/verify/(?P<oid>[0-9a-f]{64})$"), _lfs_verify),
            (("GET", "HEAD"), RESOLVE_ROUTE, _resolve),
            (None, API_ROUTE, _api),
        ]
        self.cdn_routes = [(("GET", "HEAD"), re.compile(r"^/(?P<oid>[0-9a-f]{64})$"), _cdn_get)]
        self._threads: list[threading.Thread] = []

    def start(self) -> HubServer:
        if not self._threads:
            for listener in (self.api, self.cdn):
                listener.server_activate()
                serve = {"poll_interval": 0.05}  # quick stop()
                thread = threading.Thread(target=listener.serve_forever, kwargs=serve, name="hub_server", daemon=True)
                thread.start()
                self._threads.append(thread)
        return self

    def stop(self) -> None:
        for listener in (self.api, self.cdn):
            if self._threads:
                listener.shutdown()
            listener.server_close()
        self._threads.clear()


def start_hub_server(port: int = 0) -> tuple[HubServer, str]:
    """Start a server on 127.0.0.1:`port` (0: any free port); returns `(server, base_url)`."""
    server = HubServer(port).start()
    return server, server.base_url


def stop_hub_server(server: HubServer) -> None:
    server.stop()
