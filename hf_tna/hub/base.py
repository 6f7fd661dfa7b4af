"""The `Store` protocol shared by `LocalStore` (`hf_tna.hub.local`) and `HubStore` (`hf_tna.hub.hf`): its
errors, constants and the checks both apply to repo ids, paths, refs and files."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Protocol

DEFAULT_BRANCH = "main"
REPO_META_NAME = "repo.json"
REF_KINDS = {"branches": "branch", "tags": "tag"}
LOCK_NAME = "lock"
LOCK_TIMEOUT_S = 120.0
LFS_PATTERNS = (
    "*.safetensors *.bin *.pt *.pth *.ckpt *.h5 *.msgpack *.onnx *.npy *.npz *.pkl *.gz *.zip *.tar *tfevents*"
)
GITATTRIBUTES = "".join(f"{pattern} filter=lfs diff=lfs merge=lfs -text\n" for pattern in LFS_PATTERNS.split())
REPO_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
SHA_RE = re.compile(r"^[0-9a-f]{40}$")
IGNORED_FOLDERS = (".git", ".cache/huggingface")  # never uploaded, like huggingface_hub's upload_folder

FileSource = str | Path | bytes


class StaleParentError(RuntimeError):
    """`parent_commit` was given and is no longer the head of the branch: someone committed in between."""


class RepoNotFoundError(ValueError):
    """The repository does not exist in the store."""


class RevisionNotFoundError(ValueError):
    """The branch, tag or commit does not exist in the repository."""


class StoreMixin:
    """What both stores derive from their own `commit`."""

    def upload_folder(self, repo_id: str, folder: str | Path, message: str, revision: str = DEFAULT_BRANCH,
                      parent_commit: str | None = None) -> str:
        """Commit every file below `folder` (`.git` and `.cache/huggingface` skipped) to `revision`."""
        return self.commit(repo_id, folder_files(folder), message, revision, parent_commit)


class Store(Protocol):
    """What `HubStore` and `LocalStore` both offer (see `LocalStore` for the argument types)."""

    def create_repo(self, repo_id, private=False, exist_ok=True) -> None: ...
    def commit(
        self, repo_id, files, message, revision="main", parent_commit=None, create_branch=True, delete=None
    ) -> str: ...
    def upload_folder(self, repo_id, folder, message, revision="main", parent_commit=None) -> str: ...
    def create_branch(self, repo_id, branch, revision=None, exist_ok=True) -> None: ...
    def create_tag(self, repo_id, tag, revision="main", exist_ok=False) -> None: ...
    def list_refs(self, repo_id) -> dict[str, dict[str, str]]: ...
    def resolve(self, repo_id, revision="main") -> str: ...
    def list_files(self, repo_id, revision="main") -> list[str]: ...
    def read_file(self, repo_id, path, revision="main") -> bytes: ...
    def commit_authors(self, repo_id, revision="main", since=None) -> list[str] | None: ...
    def download(self, repo_id, revision="main", allow_patterns=None, local_dir=None) -> tuple[Path, str]: ...
    def repo_exists(self, repo_id) -> bool: ...

# -- helpers shared by both stores ---------------------------------------------------------------------------
def check_repo_id(repo_id: str) -> str:
    if not isinstance(repo_id, str) or not REPO_ID_RE.match(repo_id) or "--" in repo_id or ".." in repo_id:
        raise ValueError(f"repo_id {repo_id!r} is not valid: write it as 'namespace/name' (letters, digits, -_.)")
    return repo_id


def check_repo_path(path: str, folder_ok: bool = False) -> str:
    """A path inside a repo: relative, '/'-separated, no '.' or '..' parts (a trailing '/' names a folder)."""
    if not isinstance(path, str):
        raise ValueError(f"path in repo {path!r} is not valid: it must be a string")
    parts = path.removesuffix("/" if folder_ok else "").split("/")
    if "\\" in path or "\x00" in path or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"path in repo {path!r} is not valid: use a relative path like 'sub/model.safetensors'")
    return str(path)


BLOB_RE = re.compile(r"^[0-9a-f]{64}$")


def check_commit_manifest(manifest, where: str) -> dict:
    """A `LocalStore` commit manifest read from disk, checked before any of it is used: every file path is a
    valid repo path (no absolute path, no '..'), every blob a sha256 and every size a non-negative int, so a
    tampered shared store can never make a download read or write outside its folders."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ValueError(f"{where} is not a commit manifest (no 'files' map); the store is corrupt")
    for path, entry in manifest["files"].items():
        try:
            check_repo_path(path)
        except ValueError:
            raise ValueError(f"{where} lists file {path!r}, which is not a safe path in a repo; refusing it") from None
        if not isinstance(entry, dict) or not BLOB_RE.match(str(entry.get("sha256"))):
            raise ValueError(f"{where}: file {path!r} has no valid sha256 blob name; the store is corrupt")
        size = entry.get("size")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"{where}: file {path!r} has size {size!r}; the store is corrupt")
    parents = manifest.get("parents", [])
    if not isinstance(parents, list) or not all(isinstance(p, str) and SHA_RE.match(p) for p in parents):
        raise ValueError(f"{where} has invalid parents {parents!r}; the store is corrupt")
    return manifest


def check_ref_name(name: str, kind: str) -> str:
    bad = not name or name.startswith(".") or name.strip("/") != name or ".." in name or SHA_RE.match(name)
    if bad or re.search(r"[\s~^:?*\[\\]", name):
        raise ValueError(f"{kind} name {name!r} is not valid: use letters, digits, '-', '_', '.', '/'")
    return name


def parse_repo_ref(ref: str) -> tuple[str, str | None]:
    """'org/name@rev' -> ('org/name', 'rev'); 'org/name' -> ('org/name', None)."""
    repo_id, sep, revision = str(ref).partition("@")
    check_repo_id(repo_id)
    if sep and not revision:
        raise ValueError(f"{ref!r} ends with '@' but names no revision: write 'org/name@main' or drop the '@'")
    return repo_id, revision or None


def folder_files(folder: str | Path) -> dict[str, Path]:
    """Every file below `folder`, keyed by its '/'-separated relative path (`.git`, `.cache/huggingface` skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"cannot upload {folder}: it is not a folder")
    files = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and not any(rel == f or rel.startswith(f + "/") for f in IGNORED_FOLDERS):
            files[rel] = path
    return files


def check_source(path_in_repo: str, source: FileSource) -> FileSource:
    if isinstance(source, bytes):
        return source
    if not isinstance(source, (str, Path)):
        raise TypeError(f"files[{path_in_repo!r}] must be bytes or a local file path, not {type(source).__name__}")
    if not Path(source).is_file():
        raise FileNotFoundError(f"files[{path_in_repo!r}] = {str(source)!r} is not an existing local file")
    return source


def temp_file(folder: Path) -> tuple[int, str]:
    """A new temporary file in `folder` (renamed into place later), readable by all like a normal file."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    os.fchmod(fd, 0o644)
    return fd, tmp


def atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file(path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def branch_to_create(refs: dict, repo_id: str, branch: str, create: bool) -> bool:
    """Whether committing to `branch` must first create it (from main's head); refuses tags and shas."""
    if branch in refs["branches"]:
        return False
    if branch in refs["tags"] or SHA_RE.match(branch):
        raise ValueError(f"cannot commit to {repo_id}@{branch}: it is a tag or a commit, not a branch")
    if not create:
        raise RevisionNotFoundError(f"branch {branch!r} not found in {repo_id}: pass create_branch=True")
    check_ref_name(branch, "branch")
    return True


def apply_changes(old: dict, added: dict, deleted: list[str], where: str) -> dict:
    """New `{path: entry}` map: `deleted` files (or folders, with a trailing '/') removed, then `added` set."""
    new = dict(old)
    for path in deleted:
        if path.endswith("/"):
            gone = [p for p in new if p.startswith(path)]
        else:
            gone = [path] if path in new else []
        if not gone:
            raise FileNotFoundError(f"cannot delete {path!r}: it does not exist in {where}")
        for p in gone:
            del new[p]
    new.update(added)
    return new

