"""`hf-tna` command line: one console script, one subcommand per feature.

Each subcommand lives in its feature's `cli` module, which exposes `add_parser(subparsers)` returning the parser;
the parser's `func` default runs it. Modules are imported lazily so `hf-tna --help` stays fast.

Errors follow `huggingface-cli` and `accelerate`: bad usage exits 2 with argparse's message; refused input or a
failed operation prints one line, `hf-tna <command>: error: <what and the fix>`, and exits 1; `--debug` (anywhere
on the line) shows the traceback instead. SIGTERM and SIGHUP (what `timeout`, CI runners and closed terminals
send) interrupt like Ctrl-C, so the same clean-up runs: a half-written output is removed. The handlers are
installed here only, never by library code, so launchers (torchrun, accelerate, Ray) keep their own.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys

from ._version import __version__

# subcommand name -> module that defines `add_parser(subparsers)`
SUBCOMMANDS = {
    "soup": "hf_tna.merge.cli",
    "interpolate": "hf_tna.merge.cli",
    "barrier": "hf_tna.merge.cli",
    "verify": "hf_tna.verify",
    "coldfuse": "hf_tna.coldfuse.cli",
}
PROG = "hf-tna"


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Training-time neuron alignment for Hugging Face")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in SUBCOMMANDS.items():
        if only is None or only == name:
            importlib.import_module(module).add_parser(subparsers)
    return parser


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the program is so that its clean-up runs as for Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _interrupt(signum, frame):
    raise Interrupted(signum)


@contextlib.contextmanager
def interrupt_on_termination():
    """While active, SIGTERM and SIGHUP raise `Interrupted` (a `KeyboardInterrupt`) in the main thread."""
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
            previous[sig] = signal.signal(sig, _interrupt)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if argv[:1] == ["--version"]:  # without importing any subcommand
        print(f"{PROG} {__version__}")
        return 0
    only = next((a for a in argv if not a.startswith("-")), None)
    only = only if only in SUBCOMMANDS else None
    args = build_parser(only).parse_args(argv)
    where = f"{PROG} {args.command}"
    with interrupt_on_termination():
        try:
            return int(args.func(args) or 0)
        except KeyboardInterrupt as err:
            if debug:
                raise
            signum = getattr(err, "signum", signal.SIGINT)
            print(f"{where}: interrupted ({signal.Signals(signum).name}); nothing half-written is left", file=sys.stderr)
            return 128 + int(signum)
        except SystemExit:
            raise
        except Exception as err:  # one line for the user; the traceback with --debug
            if debug:
                raise
            message = " ".join(str(err).split()) or type(err).__name__
            print(f"{where}: error: {message}", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
