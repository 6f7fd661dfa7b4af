"""Publish and fetch model folders on the Hugging Face Hub (`HubStore`) or in an offline folder (`LocalStore`).

Both classes (`LocalStore` here, `HubStore` in `hf_tna.hub.hf`) have the same methods (the `Store` protocol), so code written against one runs on the other:

    store = open_store("hub")                  # or open_store("/data/store"), open_store("file:///data/store")
    store.create_repo("org/model")
    sha = store.upload_folder("org/model", "checkpoint/", "round 3")
    folder, sha = store.download("org/model", revision=sha)

A `LocalStore` is a directory of immutable, content-addressed commits: `blobs/{sha256}` hold file contents,
`commits/{sha1}.json` a manifest (parents, message, date, `{path: {sha256, size}}`), named by the sha1 of its
bytes, and `refs/branches/{name}`, `refs/tags/{name}` a commit sha. Writes go to a temporary file then are
renamed; a commit holds an exclusive `fcntl.flock` on the repo's `lock` file, so threads and processes can
commit at once. Like the Hub, a new repo starts with one commit holding a `.gitattributes` file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote, unquote

from .base import (
    DEFAULT_BRANCH,
    GITATTRIBUTES,
    LOCK_NAME,
    LOCK_TIMEOUT_S,
    REF_KINDS,
    REPO_META_NAME,
    SHA_RE,
    FileSource,
    RepoNotFoundError,
    RevisionNotFoundError,
    StaleParentError,
    StoreMixin,
    apply_changes,
    atomic_write,
    branch_to_create,
    check_commit_manifest,
    check_ref_name,
    check_repo_id,
    check_repo_path,
    check_source,
    temp_file,
)


# -- LocalStore ----------------------------------------------------------------------------------------------
class LocalStore(StoreMixin):
    """An offline store in folder `root`, one `models--{namespace}--{name}` folder per repo (see module doc)."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def _dir(self, repo_id: str) -> Path:
        return self.root / ("models--" + check_repo_id(repo_id).replace("/", "--"))

    def _repo(self, repo_id: str) -> Path:
        repo_dir = self._dir(repo_id)
        if not (repo_dir / REPO_META_NAME).is_file():
            raise RepoNotFoundError(f"repository {repo_id!r} not found in {self}: create it with create_repo()")
        return repo_dir

    @contextlib.contextmanager
    def _locked(self, repo_dir: Path):
        fd = os.open(repo_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        deadline, wait = time.monotonic() + LOCK_TIMEOUT_S, 0.005
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{repo_dir / LOCK_NAME} stayed locked for {LOCK_TIMEOUT_S}s") from None
                    time.sleep(wait)
                    wait = min(wait * 2, 0.1)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    @staticmethod
    def _refs(repo_dir: Path, kind: str) -> dict[str, str]:
        folder = repo_dir / "refs" / kind
        return {unquote(p.name): p.read_text().strip() for p in sorted(folder.iterdir()) if not p.name.startswith(".")}

    @staticmethod
    def _write_ref(repo_dir: Path, kind: str, name: str, sha: str) -> None:
        atomic_write(repo_dir / "refs" / kind / quote(name, safe=""), sha.encode())

    @staticmethod
    def _put_blob(repo_dir: Path, source: FileSource) -> dict:
        """Copy `source` into `blobs/{sha256}` (atomically, once) and return its `{sha256, size}` entry."""
        blobs = repo_dir / "blobs"
        fd, tmp = temp_file(blobs)
        digest, size = hashlib.sha256(), 0
        try:
            with os.fdopen(fd, "wb") as out, contextlib.ExitStack() as stack:
                src = stack.enter_context(open(source, "rb")) if not isinstance(source, bytes) else None
                for chunk in iter(lambda: src.read(1 << 20), b"") if src else [source]:
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
            os.replace(tmp, blobs / digest.hexdigest())
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return {"sha256": digest.hexdigest(), "size": size}

    @staticmethod
    def _write_commit(repo_dir: Path, parents: list[str], message: str, files: dict) -> str:
        manifest = {
            "parents": parents,
            "message": message,
            "date": datetime.now(timezone.utc).isoformat(),
            "files": dict(sorted(files.items())),
        }
        data = json.dumps(manifest, sort_keys=True, indent=1).encode()
        sha = hashlib.sha1(data).hexdigest()
        atomic_write(repo_dir / "commits" / f"{sha}.json", data)
        return sha

    def _manifest(self, repo_dir: Path, sha: str) -> dict:
        """A commit's manifest, validated: a shared store folder is untrusted (see `check_commit_manifest`)."""
        if not SHA_RE.match(str(sha)):
            raise ValueError(f"{repo_dir}: a ref points at {sha!r}, which is not a commit sha; the store is corrupt")
        path = repo_dir / "commits" / f"{sha}.json"
        try:
            manifest = json.loads(path.read_bytes())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"commit {sha} of {repo_dir} cannot be read ({err}); the store is corrupt") from None
        return check_commit_manifest(manifest, f"commit {sha} of {repo_dir}")

    def _resolve(self, repo_dir: Path, repo_id: str, revision: str) -> str:
        branches, tags = self._refs(repo_dir, "branches"), self._refs(repo_dir, "tags")
        sha = branches.get(revision) or tags.get(revision)
        if sha is None and SHA_RE.match(revision or "") and (repo_dir / "commits" / f"{revision}.json").is_file():
            sha = revision
        if sha is None:
            raise RevisionNotFoundError(
                f"revision {revision!r} not found in {repo_id} ({self}): branches {sorted(branches)}, "
                f"tags {sorted(tags)}; or give a full 40-character commit sha"
            )
        return sha

    def create_repo(self, repo_id: str, private: bool = False, exist_ok: bool = True) -> None:
        repo_dir = self._dir(repo_id)
        if (repo_dir / REPO_META_NAME).is_file():
            if exist_ok:
                return
            raise FileExistsError(f"repository {repo_id!r} already exists in {self}")
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-repo-", dir=self.root))
        tmp.chmod(0o755)
        for sub in ("blobs", "commits", "refs/branches", "refs/tags"):
            (tmp / sub).mkdir(parents=True)
        files = {".gitattributes": self._put_blob(tmp, GITATTRIBUTES.encode())}
        self._write_ref(tmp, "branches", DEFAULT_BRANCH, self._write_commit(tmp, [], "initial commit", files))
        meta = {"repo_id": repo_id, "private": private, "created_at": datetime.now(timezone.utc).isoformat()}
        atomic_write(tmp / REPO_META_NAME, json.dumps(meta, indent=1).encode())
        try:
            os.rename(tmp, repo_dir)  # atomic: the repo appears complete or not at all
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not (repo_dir / REPO_META_NAME).is_file():
                raise
            if not exist_ok:  # another process created it in between
                raise FileExistsError(f"repository {repo_id!r} already exists in {self}") from None

    def repo_exists(self, repo_id: str) -> bool:
        return (self._dir(repo_id) / REPO_META_NAME).is_file()

    def commit(
        self,
        repo_id: str,
        files: dict[str, FileSource],
        message: str,
        revision: str = DEFAULT_BRANCH,
        parent_commit: str | None = None,
        create_branch: bool = True,
        delete: list[str] | None = None,
    ) -> str:
        repo_dir = self._repo(repo_id)
        if not message:
            raise ValueError(f"commit to {repo_id}@{revision} needs a non-empty message")
        if parent_commit is not None and not re.fullmatch(r"[0-9a-f]{5,40}", parent_commit):
            raise ValueError(f"parent_commit {parent_commit!r} is not a commit sha (5 to 40 hex characters)")
        sources = {check_repo_path(p): check_source(p, src) for p, src in files.items()}
        deleted = [check_repo_path(p, folder_ok=True) for p in delete or []]
        added = {path: self._put_blob(repo_dir, src) for path, src in sources.items()}  # outside the lock
        with self._locked(repo_dir):
            refs = self.list_refs(repo_id)
            if branch_to_create(refs, repo_id, revision, create_branch):
                refs["branches"][revision] = refs["branches"][DEFAULT_BRANCH]
                self._write_ref(repo_dir, "branches", revision, refs["branches"][revision])
            head = refs["branches"][revision]
            if parent_commit is not None and not head.startswith(parent_commit):
                raise StaleParentError(
                    f"parent_commit {parent_commit} is not the head of {repo_id}@{revision} (now {head}): someone "
                    "committed in between; resolve() the branch again, redo your change on top and retry"
                )
            old = self._manifest(repo_dir, head)["files"]
            new = apply_changes(old, added, deleted, f"{repo_id}@{revision}")
            if new == old:
                return head  # nothing changed: no empty commit, like the Hub client
            sha = self._write_commit(repo_dir, [head], message, new)
            self._write_ref(repo_dir, "branches", revision, sha)
        return sha

    def _add_ref(self, repo_id: str, kind: str, name: str, revision: str, exist_ok: bool) -> None:
        repo_dir = self._repo(repo_id)
        with self._locked(repo_dir):
            sha = self._resolve(repo_dir, repo_id, revision)
            if name in self._refs(repo_dir, kind):
                if exist_ok:
                    return
                raise FileExistsError(f"{REF_KINDS[kind]} {name!r} already exists in {repo_id}")
            self._write_ref(repo_dir, kind, check_ref_name(name, REF_KINDS[kind]), sha)

    def create_branch(self, repo_id: str, branch: str, revision: str | None = None, exist_ok: bool = True) -> None:
        self._add_ref(repo_id, "branches", branch, revision or DEFAULT_BRANCH, exist_ok)

    def create_tag(self, repo_id: str, tag: str, revision: str = DEFAULT_BRANCH, exist_ok: bool = False) -> None:
        self._add_ref(repo_id, "tags", tag, revision, exist_ok)

    def list_refs(self, repo_id: str) -> dict[str, dict[str, str]]:
        repo_dir = self._repo(repo_id)
        return {"branches": self._refs(repo_dir, "branches"), "tags": self._refs(repo_dir, "tags")}

    def resolve(self, repo_id: str, revision: str = DEFAULT_BRANCH) -> str:
        return self._resolve(self._repo(repo_id), repo_id, revision)

    def commit_authors(self, repo_id: str, revision: str = DEFAULT_BRANCH, since: str | None = None) -> None:
        """None: a `LocalStore` has no accounts, so it cannot say who made a commit (anyone who can write the
        folder can write any branch); see the README's reliability section."""
        self.resolve(repo_id, revision)
        return None

    def list_files(self, repo_id: str, revision: str = DEFAULT_BRANCH) -> list[str]:
        repo_dir = self._repo(repo_id)
        return sorted(self._manifest(repo_dir, self._resolve(repo_dir, repo_id, revision))["files"])

    def read_file(self, repo_id: str, path: str, revision: str = DEFAULT_BRANCH) -> bytes:
        repo_dir = self._repo(repo_id)
        sha = self._resolve(repo_dir, repo_id, revision)
        entry = self._manifest(repo_dir, sha)["files"].get(path)
        if entry is None:
            raise FileNotFoundError(f"{path!r} does not exist in {repo_id}@{revision} (commit {sha[:10]})")
        return (repo_dir / "blobs" / entry["sha256"]).read_bytes()

    def download(
        self,
        repo_id: str,
        revision: str = DEFAULT_BRANCH,
        allow_patterns: list[str] | str | None = None,
        local_dir: str | Path | None = None,
    ) -> tuple[Path, str]:
        """Copy the files of `revision` (matching `allow_patterns`) to `local_dir`, or to `snapshots/{sha}`."""
        from huggingface_hub.utils import filter_repo_objects

        repo_dir = self._repo(repo_id)
        sha = self._resolve(repo_dir, repo_id, revision)
        target = Path(local_dir).expanduser().resolve() if local_dir is not None else repo_dir / "snapshots" / sha
        target.mkdir(parents=True, exist_ok=True)
        files = self._manifest(repo_dir, sha)["files"]
        root = target.resolve()
        for path in filter_repo_objects(list(files), allow_patterns=allow_patterns):
            dest, entry = target / path, files[path]
            if not dest.resolve().is_relative_to(root):  # e.g. through a symlinked folder in local_dir
                raise ValueError(f"{path!r} of {repo_id}@{revision} would be written outside {target}")
            if local_dir is None and dest.is_file() and dest.stat().st_size == entry["size"]:
                continue  # already in the snapshot (commits never change)
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = temp_file(dest.parent)
            os.close(fd)
            shutil.copyfile(repo_dir / "blobs" / entry["sha256"], tmp)
            os.replace(tmp, dest)
        return target, sha

