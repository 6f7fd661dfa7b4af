"""Merge methods, one file each, registered by name (`registry`). A new method is a file here with a function
decorated by `merge_method`, plus its line below; or, from outside the package, any module calling
`merge_method` before `build_soup` or `hf-tna soup` runs."""

from . import greedy, interpolate, linear  # noqa: F401  (the registry lines: one per method file)
from .registry import METHODS, MergeMethod, get_method, merge_method, method_names, register_method, unregister_method

__all__ = [
    "METHODS",
    "MergeMethod",
    "get_method",
    "merge_method",
    "method_names",
    "register_method",
    "unregister_method",
]
