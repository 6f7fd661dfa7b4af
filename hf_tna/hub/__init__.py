"""Where models are published and fetched: the Hugging Face Hub (`HubStore`) or an offline folder (`LocalStore`).

Both offer the same methods (the `Store` protocol in `hf_tna.hub.base`), so code written against one runs on the
other. `open_store` turns a `store` argument into a store, `resolve_folder` a checkpoint argument (a local
folder or a Hub id ``org/name@revision``) into a local folder: every command and function goes through these two.
"""

from __future__ import annotations

import os
from pathlib import Path

from .base import (
    DEFAULT_BRANCH,
    REPO_ID_RE,
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

STORE_METHODS = tuple(name for name in vars(Store) if not name.startswith("_"))


def open_store(location=None) -> Store:
    """A store from a `store` argument.

    None, 'hub' or 'hf': the Hub at HF_ENDPOINT; 'http(s)://...': a Hub at that URL; 'file://...', any other
    string or a `Path`: a `LocalStore` folder; an object that already is a store (has the `Store` methods):
    itself.
    """
    if location is None or (isinstance(location, str) and location.lower() in ("hub", "hf")):
        return HubStore()
    if isinstance(location, os.PathLike):
        return LocalStore(location)
    if isinstance(location, str):
        if location.startswith(("http://", "https://")):
            return HubStore(endpoint=location)
        return LocalStore(location.removeprefix("file://"))
    missing = [name for name in STORE_METHODS if not callable(getattr(location, name, None))]
    if missing:
        raise TypeError(
            f"store must be 'hub', a Hub URL, a local store folder or a store object, got a "
            f"{type(location).__name__} without {', '.join(missing)}"
        )
    return location


def is_repo_ref(ref) -> bool:
    """Whether `ref` is a string shaped like a Hub id, ``org/name`` or ``org/name@revision``."""
    return isinstance(ref, str) and bool(REPO_ID_RE.match(ref.partition("@")[0]))


def resolve_folder(ref, store=None) -> tuple[Path, str | None]:
    """(local folder, commit sha or None) of a checkpoint argument.

    A local folder when one exists at `ref`; else, when `ref` is a Hub id (``org/name[@revision]``, a string),
    the snapshot of that revision (default `main`) from `store` (anything `open_store` accepts); else
    FileNotFoundError saying the folder does not exist. A Hub id the store cannot give is a ValueError.
    """
    if isinstance(ref, (str, os.PathLike)) and Path(ref).is_dir():
        return Path(ref), None
    if not is_repo_ref(ref):
        raise FileNotFoundError(
            f"{ref} is neither a folder nor a Hub repo id (org/name[@revision]): the folder {ref} does not exist"
        )
    repo_id, revision = parse_repo_ref(ref)
    store = open_store(store)
    try:
        folder, sha = store.download(repo_id, revision or DEFAULT_BRANCH)
    except (OSError, ValueError) as err:
        raise ValueError(f"{ref} is not a local folder, and {store!r} cannot give it: {err}") from None
    return Path(folder), sha


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
    "is_repo_ref",
    "open_store",
    "parse_repo_ref",
    "resolve_folder",
]
