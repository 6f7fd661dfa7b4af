"""`HubStore`: the `Store` interface (see `hf_tna.hub.base`) on the Hugging Face Hub, or a Hub-compatible server,
through `huggingface_hub.HfApi`. HTTP errors become this package's errors, naming the repo, revision and file."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .base import (
    DEFAULT_BRANCH,
    FileSource,
    RepoNotFoundError,
    RevisionNotFoundError,
    StaleParentError,
    StoreMixin,
    branch_to_create,
    check_ref_name,
    check_repo_id,
    check_repo_path,
    check_source,
)


@contextlib.contextmanager
def hub_errors(repo_id: str, revision: str | None = None, path: str | None = None, parent: str | None = None):
    """Turn huggingface_hub's HTTP errors into this module's errors, naming the repo, revision and file."""
    from huggingface_hub import errors

    where = f"{repo_id}@{revision}" if revision else repo_id
    try:
        yield
    except errors.GatedRepoError:
        raise
    except errors.RepositoryNotFoundError as err:
        raise RepoNotFoundError(f"repository {repo_id!r} not found on the Hub: create it with create_repo()") from err
    except errors.RevisionNotFoundError as err:
        raise RevisionNotFoundError(f"revision {revision!r} not found in {repo_id} on the Hub") from err
    except errors.RemoteEntryNotFoundError as err:
        raise FileNotFoundError(f"{path or 'a file'!r} does not exist in {where} on the Hub") from err
    except errors.HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        if status == 412:
            raise StaleParentError(
                f"parent_commit {parent} is not the head of {where}: someone committed in between; "
                "resolve() the branch again, redo your change on top and retry"
            ) from err
        if status == 409:
            raise FileExistsError(f"{where}: already exists ({err.server_message or err})") from err
        raise


class HubStore(StoreMixin):
    """The Hugging Face Hub (or a Hub-compatible server at `endpoint`, default `HF_ENDPOINT`) via `HfApi`."""

    def __init__(self, endpoint: str | None = None, token: str | None = None):
        from huggingface_hub import HfApi

        self.api = HfApi(endpoint=endpoint or os.environ.get("HF_ENDPOINT") or None, token=token)
        self.endpoint, self.token = self.api.endpoint, token

    def __repr__(self) -> str:
        return f"HubStore({self.endpoint!r})"

    def _ensure_branch(self, repo_id: str, branch: str, create: bool) -> None:
        if branch != DEFAULT_BRANCH and branch_to_create(self.list_refs(repo_id), repo_id, branch, create):
            self.create_branch(repo_id, branch, exist_ok=True)

    def create_repo(self, repo_id: str, private: bool = False, exist_ok: bool = True) -> None:
        with hub_errors(check_repo_id(repo_id)):
            self.api.create_repo(repo_id, private=private, exist_ok=exist_ok, repo_type="model")

    def repo_exists(self, repo_id: str) -> bool:
        return self.api.repo_exists(check_repo_id(repo_id))

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
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        if not message:
            raise ValueError(f"commit to {repo_id}@{revision} needs a non-empty message")
        ops = [CommitOperationDelete(path_in_repo=check_repo_path(p, folder_ok=True)) for p in delete or []]
        ops += [CommitOperationAdd(check_repo_path(p), _hub_source(check_source(p, s))) for p, s in files.items()]
        self._ensure_branch(repo_id, revision, create_branch)
        with hub_errors(repo_id, revision, ", ".join(delete or []) or None, parent_commit):
            info = self.api.create_commit(
                repo_id, ops, commit_message=message, revision=revision, parent_commit=parent_commit
            )
        return info.oid

    def create_branch(self, repo_id: str, branch: str, revision: str | None = None, exist_ok: bool = True) -> None:
        with hub_errors(repo_id, revision or branch):
            self.api.create_branch(
                repo_id, branch=check_ref_name(branch, "branch"), revision=revision, exist_ok=exist_ok
            )

    def create_tag(self, repo_id: str, tag: str, revision: str = DEFAULT_BRANCH, exist_ok: bool = False) -> None:
        with hub_errors(repo_id, revision):
            self.api.create_tag(repo_id, tag=check_ref_name(tag, "tag"), revision=revision, exist_ok=exist_ok)

    def list_refs(self, repo_id: str) -> dict[str, dict[str, str]]:
        with hub_errors(repo_id):
            refs = self.api.list_repo_refs(repo_id)
        return {
            "branches": {ref.name: ref.target_commit for ref in refs.branches},
            "tags": {ref.name: ref.target_commit for ref in refs.tags},
        }

    def resolve(self, repo_id: str, revision: str = DEFAULT_BRANCH) -> str:
        with hub_errors(repo_id, revision):
            return self.api.repo_info(repo_id, revision=revision).sha

    def commit_authors(self, repo_id: str, revision: str = DEFAULT_BRANCH, since: str | None = None) -> list[str]:
        """The Hub users who authored the commits of `revision`'s history, newest first, stopping before commit
        `since` (e.g. the base a contribution branch started from). The Hub records the user of the token that
        pushed each commit, so these are authenticated identities."""
        with hub_errors(repo_id, revision):
            commits = self.api.list_repo_commits(repo_id, revision=revision)
        authors = []
        for commit in commits:
            if since is not None and commit.commit_id == since:
                break
            authors.extend(commit.authors)
        return authors

    def list_files(self, repo_id: str, revision: str = DEFAULT_BRANCH) -> list[str]:
        with hub_errors(repo_id, revision):
            return sorted(self.api.list_repo_files(repo_id, revision=revision))

    def read_file(self, repo_id: str, path: str, revision: str = DEFAULT_BRANCH) -> bytes:
        from huggingface_hub import hf_hub_download

        with hub_errors(repo_id, revision, path):
            local = hf_hub_download(repo_id, path, revision=revision, endpoint=self.endpoint, token=self.token)
        return Path(local).read_bytes()

    def download(
        self,
        repo_id: str,
        revision: str = DEFAULT_BRANCH,
        allow_patterns: list[str] | str | None = None,
        local_dir: str | Path | None = None,
    ) -> tuple[Path, str]:
        """`snapshot_download` of the resolved commit (to the HF cache, or to `local_dir`)."""
        from huggingface_hub import snapshot_download

        sha = self.resolve(repo_id, revision)
        with hub_errors(repo_id, revision):
            folder = snapshot_download(
                repo_id,
                revision=sha,
                allow_patterns=allow_patterns,
                local_dir=local_dir,
                endpoint=self.endpoint,
                token=self.token,
            )
        return Path(folder), sha


def _hub_source(source: FileSource) -> str | bytes:
    return source if isinstance(source, bytes) else str(source)
