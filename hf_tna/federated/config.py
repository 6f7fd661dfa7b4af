"""`FederatedArguments`: the anchor settings of a federated run, as dataclass fields and as a Flower run config.

Flower's run config (`[tool.flwr.app.config]` in an app's `pyproject.toml`, `flwr run --run-config "k=v"`) and
its `ConfigRecord`s hold flat scalars under hyphenated keys. `FederatedArguments` reads and writes the fields of
`AnchorArguments` (and of any subclass that adds an app's own settings) in that form:

    @dataclass
    class MySettings(FederatedArguments):
        rounds: int = field(default=10, metadata={"help": "federated rounds"})

    settings = MySettings.from_run_config(context.run_config)   # {"anchor-ratio": 0.4, "rounds": 20, ...}
    spec = settings.to_spec()

Lists (`anchor_include`, `anchor_exclude`) are written as one string of whitespace-separated regex patterns
(parameter names hold no spaces, and a regex may hold a comma: `a{1,2}`); an empty string is `None`.
This module imports neither Flower nor transformers.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import NoneType, UnionType

from ..arguments import AnchorArguments


def run_config_key(name: str) -> str:
    """The run-config key of a field: `anchor_ratio` -> `anchor-ratio`."""
    return name.replace("_", "-")


@dataclass
class FederatedArguments(AnchorArguments):
    """Fixed-neuron-anchor settings of a federated run (FedPFN / FedPNU), readable from a Flower run config.

    The fields are `AnchorArguments`' (`anchor_ratio`, `anchor_seed`, `anchor_granularity`, `anchor_include`,
    `anchor_exclude`, `anchor_round`), under the keys `anchor-ratio`, `anchor-seed`, ...; subclasses add their
    own fields and get the same mapping. Validated in `__post_init__`, as every `AnchorArguments`.
    """

    @classmethod
    def from_run_config(cls, config: Mapping, ignore: Iterable[str] = ()):
        """Settings from a flat mapping with hyphenated keys (a run config or a `ConfigRecord`).

        Missing keys take the field's default; values are converted to the field's type (an int where a float
        is expected, a whitespace-separated string where a list is). Keys that are no field raise `ValueError`
        naming them, except those in `ignore` (e.g. the keys a strategy adds to a train config).
        """
        hints = typing.get_type_hints(cls)
        by_key = {run_config_key(f.name): f for f in dataclasses.fields(cls) if f.init}
        ignored = set(ignore)
        unknown = sorted(str(k) for k in config if k not in by_key and k not in ignored)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown run config key(s) {unknown}; known keys: {sorted(by_key)}")
        kwargs = {f.name: _convert(cls.__name__, key, config[key], hints[f.name])
                  for key, f in by_key.items() if key in config}
        return cls(**kwargs)

    def to_run_config(self) -> dict:
        """The settings as a flat mapping with hyphenated keys (what `from_run_config` reads back); lists become
        whitespace-separated strings, `None` lists empty strings, and other `None` values are left out (Flower's
        records hold no `None`)."""
        hints = typing.get_type_hints(type(self))
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if _list_type(hints[f.name]):
                out[run_config_key(f.name)] = " ".join(value or ())
            elif value is not None:
                out[run_config_key(f.name)] = value
        return out


def _list_type(annotation) -> bool:
    return any(typing.get_origin(t) is list for t in _members(annotation))


def _members(annotation) -> tuple:
    if typing.get_origin(annotation) in (typing.Union, UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _convert(owner: str, key: str, value, annotation):
    """`value` as `annotation` (bool, int, float, str, list[str], and each of them `| None`), strictly."""
    members = _members(annotation)
    optional = NoneType in members
    kinds = [t for t in members if t is not NoneType]
    if value is None and optional:
        return None
    if len(kinds) != 1:
        raise TypeError(f"{owner}: field of run config key {key!r} has type {annotation}; use one type or X | None")
    kind = kinds[0]
    expected = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        kind, "a string of whitespace-separated items")
    wrong = ValueError(f"{owner}: run config key {key!r} = {value!r}, expected {expected}")
    if typing.get_origin(kind) is list:
        items = value.split() if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(item, str) for item in items):
            raise wrong
        return list(items) or (None if optional else [])
    if kind is bool:
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise wrong
        return value
    if kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise wrong
        if kind is int and isinstance(value, float):
            if not value.is_integer():
                raise wrong
            value = int(value)
        try:
            return kind(value)
        except ValueError:
            raise wrong from None
    if kind is str:
        if not isinstance(value, str):
            raise wrong
        return value
    raise TypeError(f"{owner}: field of run config key {key!r} has type {annotation}; a run config holds "
                    "bool, int, float, str or list[str]")


__all__ = ["FederatedArguments", "run_config_key"]
