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

`FederatedRunArguments` adds what the Flower app glue of `hf_tna.federated.app` reads: the method (FedAvg,
FedPFN, FedPNU), the inner server strategy and its settings, the rounds, the seed and the clients' local SGD.
This module imports neither Flower nor transformers.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import NoneType, UnionType

from ..anchors import AnchorSpec
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


METHODS = ("fedavg", "fedpfn", "fedpnu")  # fedavg: the inner strategy without anchors
SERVER_STRATEGIES = ("fedavg", "fedavgm", "fedadam", "fedprox")


@dataclass
class FederatedRunArguments(FederatedArguments):
    """One federated run as the app glue of `hf_tna.federated.app` runs it: the anchor fields of
    `FederatedArguments` and

    - `method`: `fedavg` (no anchors, whatever `anchor_ratio` says), `fedpfn` or `fedpnu`;
    - `server`: the inner Flower strategy, `fedavg`, `fedavgm` (`server_lr`, `server_momentum`), `fedadam`
      (`adam_eta`, with `lr` as its client learning rate) or `fedprox` (`proximal_mu`);
    - `rounds`; `seed` (model init and batch order; `anchor_seed` follows it unless given);
    - the clients' local SGD: `local_epochs`, `lr`, `momentum`, `batch_size`.

    An app subclasses it with its own fields (data, model); a field whose metadata names `choices` is checked
    against them. Validated in `__post_init__`.
    """

    method: str = field(
        default="fedpfn", metadata={"help": "fedavg (no anchors), fedpfn or fedpnu.", "choices": METHODS}
    )
    server: str = field(
        default="fedavg",
        metadata={"help": "Inner server strategy: " + ", ".join(SERVER_STRATEGIES), "choices": SERVER_STRATEGIES},
    )
    rounds: int = field(default=10, metadata={"help": "Federated rounds."})
    anchor_seed: int | None = field(default=None, metadata={"help": "Seed of the anchor mask (default: seed)."})
    seed: int = field(default=0, metadata={"help": "Model init, data partition, anchor and batch-order seed."})
    local_epochs: int = field(default=1, metadata={"help": "Local epochs per round."})
    lr: float = field(default=0.05, metadata={"help": "Client SGD learning rate."})
    momentum: float = field(default=0.9, metadata={"help": "Client SGD momentum."})
    batch_size: int = field(default=16, metadata={"help": "Client batch size."})
    server_lr: float = field(default=1.0, metadata={"help": "FedAvgM server learning rate."})
    server_momentum: float = field(default=0.9, metadata={"help": "FedAvgM server momentum."})
    adam_eta: float = field(default=0.01, metadata={"help": "FedAdam server learning rate eta."})
    proximal_mu: float = field(default=0.01, metadata={"help": "FedProx mu (server=fedprox only)."})

    def __post_init__(self):
        if self.anchor_seed is None:
            self.anchor_seed = self.seed
        super().__post_init__()  # the anchor fields
        name = type(self).__name__
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices is not None and getattr(self, f.name) not in choices:
                raise ValueError(f"{name}.{f.name} must be one of {tuple(choices)}, got {getattr(self, f.name)!r}")
        if self.rounds < 1 or self.local_epochs < 1 or self.batch_size < 1:
            raise ValueError(f"{name}.rounds, local_epochs and batch_size must be >= 1")

    @property
    def mode(self) -> str:
        """`AnchoredStrategy`'s mode: `fedpnu`, or `fedpfn` (also for `fedavg`, whose spec has ratio 0)."""
        return "fedpnu" if self.method == "fedpnu" else "fedpfn"

    def to_spec(self) -> AnchorSpec:
        """The run's anchors: the anchor fields, with ratio 0 for `method="fedavg"` (no anchors)."""
        spec = super().to_spec()
        return dataclasses.replace(spec, ratio=0.0) if self.method == "fedavg" else spec


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


__all__ = ["METHODS", "SERVER_STRATEGIES", "FederatedArguments", "FederatedRunArguments", "run_config_key"]
