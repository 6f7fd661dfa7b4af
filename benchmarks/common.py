"""What the benchmarks' command lines share."""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """`--help` with every default, and the module docstring as written."""


def build_parser(dataclass_types, description: str, prog: str | None = None):
    """An `HfArgumentParser` of the benchmark's config dataclass(es)."""
    from transformers import HfArgumentParser

    return HfArgumentParser(dataclass_types, prog=prog, description=description, formatter_class=HelpFormatter)
