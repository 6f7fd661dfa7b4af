"""Errors meant for people: a usage error type and hints that name a setting the way the reader spells it.

`option("allow_pickle", True)` is ``allow_pickle=True`` in Python and ``--allow-pickle`` while a command of the
`hf-tna` console script runs (`hf_tna.cli` wraps commands in `command_line()`), so the same message tells a
library user which keyword to pass and a command-line user which flag.
"""

from __future__ import annotations

import contextlib
import contextvars

_COMMAND_LINE = contextvars.ContextVar("hf_tna_command_line", default=False)
_UNSET = object()


class UsageError(ValueError):
    """Invalid usage (a setting that cannot work, a missing argument): exit status 2 on the command line."""


@contextlib.contextmanager
def command_line():
    """While active, `option` spells settings as command-line flags."""
    token = _COMMAND_LINE.set(True)
    try:
        yield
    finally:
        _COMMAND_LINE.reset(token)


def in_command_line() -> bool:
    return _COMMAND_LINE.get()


def option(name: str, value=_UNSET) -> str:
    """How the reader sets `name` (to `value`): ``name=value`` in Python, ``--name value`` on the command line
    (``--name`` / ``--no-name`` for booleans)."""
    if not _COMMAND_LINE.get():
        return f"{name}=" if value is _UNSET else f"{name}={value!r}"
    flag = "--" + name.replace("_", "-")
    if value is _UNSET or value is True:
        return flag
    if value is False:
        return f"--no-{name.replace('_', '-')}"
    if value is None:
        return f"{flag} none"
    if isinstance(value, (list, tuple)):
        return f"{flag} {' '.join(str(v) for v in value)}"
    return f"{flag} {value}"
