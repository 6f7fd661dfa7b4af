"""Scratch folders that never outlive their run: `locked_scratch` (results are written into one, then renamed)
and `remove_stale_scratch` (the folders of killed runs, found by their released `fcntl.flock`)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def locked_scratch(parent: str | Path | None, prefix: str, keep: bool = False) -> Iterator[Path]:
    """A new folder `parent/{prefix}{random}` (parent: the system temp folder when None), removed when the block
    exits (unless `keep` and the block succeeded: the caller renamed or kept it).

    While it exists, this process holds an exclusive `fcntl.flock` on `{folder}.lock`. The kernel drops the lock
    when the process dies, even by `kill -9`, so on entry every sibling `{prefix}*` folder whose lock can be
    taken belongs to a dead run and is removed; a running run's folder is never touched.
    """
    parent = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    remove_stale_scratch(parent, prefix)
    folder = parent / f"{prefix}{uuid.uuid4().hex[:12]}"
    lock = Path(f"{folder}.lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    ok = False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # before the folder exists: a folder is never seen unlocked
        folder.mkdir()
        yield folder
        ok = True
    finally:
        if not (ok and keep):
            shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            lock.unlink()
        os.close(fd)


def remove_stale_scratch(parent: str | Path, prefix: str) -> list[Path]:
    """Remove the `{prefix}*` folders of `parent` left by dead runs of `locked_scratch`; returns them."""
    removed = []
    for lock in sorted(Path(parent).glob(f"{glob_escape(prefix)}*.lock")):
        try:
            fd = os.open(lock, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: a live run
            os.close(fd)
            continue
        folder = Path(str(lock)[: -len(".lock")])
        shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            lock.unlink()
        os.close(fd)
        removed.append(folder)
    return removed


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)
