"""Where models are published and fetched: the Hugging Face Hub (`HubStore`) or an offline folder (`LocalStore`).

Both offer the same methods (the `Store` protocol in `hf_tna.hub.base`), so code written against one runs on the
other; `open_store` turns a location into a store.
"""

from __future__ import annotations

from pathlib import Path

from .base import (
    DEFAULT_BRANCH,
    RepoNotFoundError,
    RevisionNotFoundError,
    StaleParentError,
    Store,
    check_repo_id,
    folder_files,
    parse_repo_ref,
)
from .hf import HubStore
from .local import LocalStore


def open_store(location: str | Path | None = None) -> HubStore | LocalStore:
    """None, 'hub' or 'hf': the Hub at HF_ENDPOINT; 'http(s)://...': a Hub at that URL; else a local folder."""
    if location is None or str(location).lower() in ("hub", "hf"):
        return HubStore()
    location = str(location)
    if location.startswith(("http://", "https://")):
        return HubStore(endpoint=location)
    return LocalStore(location.removeprefix("file://"))



__all__ = [
    "DEFAULT_BRANCH",
    "HubStore",
    "LocalStore",
    "RepoNotFoundError",
    "RevisionNotFoundError",
    "StaleParentError",
    "Store",
    "check_repo_id",
    "folder_files",
    "open_store",
    "parse_repo_ref",
]
