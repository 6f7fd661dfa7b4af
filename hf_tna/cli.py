"""`hf-tna` command line: one console script, one subcommand per feature.

Each subcommand lives in its own module, which exposes `add_parser(subparsers)` returning the parser;
the parser's `func` default runs it. Modules are imported lazily so `hf-tna --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand name -> module that defines `add_parser(subparsers)`
SUBCOMMANDS = {
    "soup": "hf_tna.merge.cli",
    "interpolate": "hf_tna.merge.cli",
    "barrier": "hf_tna.merge.cli",
    "verify": "hf_tna.verify",
    "coldfuse": "hf_tna.coldfuse.cli",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-tna", description="Training-time neuron alignment for Hugging Face")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in SUBCOMMANDS.items():
        if only is None or only == name:
            importlib.import_module(module).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    only = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    args = build_parser(only).parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
