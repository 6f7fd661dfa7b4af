"""`hf-tna` command line: one console script, one subcommand per feature.

Each subcommand lives in its feature's `cli` module, which exposes `add_parser(subparsers)` returning the parser;
the parser's `func` default runs it. Modules are imported lazily so `hf-tna --help` stays fast.

Errors follow `huggingface-cli` and `accelerate`: every error is one line on stderr,
`hf-tna <command>: error: <what and the fix>`; bad usage (an unknown flag, a value a config refuses: argparse's
errors and `hf_tna.errors.UsageError`) exits 2, refused input or a failed operation exits 1. `--debug` (anywhere on
the line) or `HF_TNA_DEBUG=1` shows the traceback instead. While a command runs, hints in error messages name
command-line flags rather than Python keyword arguments (`hf_tna.errors.option`). SIGTERM and SIGHUP (what
`timeout`, CI runners and closed terminals send) interrupt like Ctrl-C, so the same clean-up runs: a half-written output is removed. The handlers are
installed here only, never by library code, so launchers (torchrun, accelerate, Ray) keep their own.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys

from ._version import __version__
from .errors import UsageError, command_line

# subcommand name -> module that defines `add_parser(subparsers)`
SUBCOMMANDS = {
    "soup": "hf_tna.merge.cli",
    "interpolate": "hf_tna.merge.cli",
    "barrier": "hf_tna.merge.cli",
    "verify": "hf_tna.verify",
    "coldfuse": "hf_tna.coldfuse.cli",
}
# what `hf-tna --help` says of each, without importing its module (which can take seconds)
SUMMARIES = {
    "soup": "uniform / weighted / greedy soup of checkpoints (flags or a recipe)",
    "interpolate": "linear interpolation of two checkpoints: (1 - alpha) A + alpha B",
    "barrier": "loss (and accuracy) along the line between two checkpoints",
    "verify": "check that a checkpoint's anchored entries hold their anchor values",
    "coldfuse": "ColD fusion through a Hub repository: init, contribute, fuse, status, run",
}
PROG = "hf-tna"
DEBUG_ENV = "HF_TNA_DEBUG"


def _one_line_error(parser: argparse.ArgumentParser, message: str):
    """argparse's `error()` without the usage block (which, for commands taking every `TrainingArguments` flag, is
    pages long): one line on stderr naming the command, exit status 2."""
    text = " ".join(str(message).split())
    print(f"{parser.prog}: error: {text} (see {parser.prog} --help)", file=sys.stderr)
    raise SystemExit(2)


def one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make `parser` and every sub-command parser below it (whatever their class, e.g. `HfArgumentParser`) report
    usage errors in one line."""
    parser.error = lambda message, parser=parser: _one_line_error(parser, message)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                one_line_errors(sub)
    return parser


def chosen_parser(parser: argparse.ArgumentParser, args) -> argparse.ArgumentParser:
    """The (sub-)command parser that `args` went through, e.g. `hf-tna coldfuse init`'s."""
    while True:
        action = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        name = getattr(args, action.dest, None) if action is not None else None
        if name not in (action.choices if action is not None else {}):
            return parser
        parser = action.choices[name]


def refuse_unknown(parser: argparse.ArgumentParser, args, unknown: list[str]) -> None:
    """Report flags no parser took against the command they were given to, with the nearest valid flag."""
    import difflib

    command = chosen_parser(parser, args)
    flags = [s for a in command._actions for s in a.option_strings]
    hints = [f"{u} (did you mean {near[0]}?)" if (near := difflib.get_close_matches(u.split("=")[0], flags, n=1))
             else u for u in unknown]
    command.error(f"unrecognized arguments: {' '.join(hints)}")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Training-time neuron alignment for Hugging Face")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = SUBCOMMANDS.get(only)
    if chosen is not None:  # the module of the command being run adds its parsers (one module may add several)
        importlib.import_module(chosen).add_parser(subparsers)
    for name, module in SUBCOMMANDS.items():
        if module != chosen:  # listed for `--help` and argparse's choices without importing the module; never run
            subparsers.add_parser(name, help=SUMMARIES[name], add_help=False)
    return one_line_errors(parser)


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
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")
    argv = [a for a in argv if a != "--debug"]
    if argv[:1] == ["--version"]:  # without importing any subcommand
        print(f"{PROG} {__version__}")
        return 0
    only = next((a for a in argv if not a.startswith("-")), None)
    only = only if only in SUBCOMMANDS else None
    parser = build_parser(only)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        refuse_unknown(parser, args, unknown)
    where = f"{PROG} {args.command}"
    with interrupt_on_termination(), command_line():
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
            return 2 if isinstance(err, UsageError) else 1


if __name__ == "__main__":
    sys.exit(main())
