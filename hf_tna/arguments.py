"""`AnchorArguments`: the anchor settings, defined once for every front end.

It is mixed into `TNAConfig` (with `TrainingArguments`), and reused by the ColD fusion command line, the
examples' script configs and the federated settings, so each flag has one name, default, help and check:

    @dataclass
    class MyScriptConfig(AnchorArguments):
        epochs: int = field(default=3, metadata={"help": "..."})

    config, = HfArgumentParser(MyScriptConfig).parse_args_into_dataclasses()
    spec = config.to_spec()
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from .anchors import GRANULARITIES, AnchorSpec


@dataclass
class AnchorArguments:
    """Fixed-neuron-anchor settings of TNA-PFN (parsable by `HfArgumentParser`).

    Args:
        anchor_ratio (`float`, defaults to 0.4): fraction of targeted weight entries (or output units) kept at
            their initial value during training, in [0, 1). 0 trains exactly like without anchors.
        anchor_seed (`int`, defaults to 0): seed of the anchor mask. Every model that will be fused must use the
            same seed, ratio, granularity and base.
        anchor_granularity (`str`, defaults to `"element"`): `"element"` (the paper: each entry i.i.d.) or
            `"neuron"` (whole output units with their bias entries).
        anchor_include (`list[str]` or `None`): regex patterns over checkpoint parameter names to anchor;
            default: every trainable parameter.
        anchor_exclude (`list[str]` or `None`): regex patterns of parameters never anchored (e.g. `classifier`
            for a task head).
        anchor_round (`int`, defaults to 0): round offset of the draw (federated / ColD-fusion rounds).
    """

    anchor_ratio: float = field(
        default=0.4,
        metadata={"help": "Fraction of weight entries kept at their initial value, in [0, 1). 0 = no anchors."},
    )
    anchor_seed: int = field(default=0, metadata={"help": "Seed of the anchor mask; shared by all models to fuse."})
    anchor_granularity: str = field(
        default="element",
        metadata={
            "help": "Anchor granularity: element (i.i.d. entries, the paper) or neuron (whole output units).",
            "choices": list(GRANULARITIES),
        },
    )
    anchor_include: list[str] | None = field(
        default=None, metadata={"help": "Regex patterns of parameter names to anchor (default: all trainable)."}
    )
    anchor_exclude: list[str] | None = field(
        default=None, metadata={"help": "Regex patterns of parameter names never anchored, e.g. classifier."}
    )
    anchor_round: int = field(default=0, metadata={"help": "Round offset of the mask draw (federated / ColD fusion)."})

    def __post_init__(self):
        try:
            self.to_spec()  # validates every anchor field, naming it
        except (TypeError, ValueError) as err:
            raise ValueError(str(err).replace("AnchorSpec.", f"{type(self).__name__}.anchor_")) from None
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:  # e.g. TrainingArguments, whose own __post_init__ does not call super()
            parent()

    def to_spec(self) -> AnchorSpec:
        """The `AnchorSpec` these settings describe."""
        return AnchorSpec(
            ratio=self.anchor_ratio,
            seed=self.anchor_seed,
            granularity=self.anchor_granularity,
            include=tuple(self.anchor_include) if self.anchor_include else None,
            exclude=tuple(self.anchor_exclude) if self.anchor_exclude else None,
            round=self.anchor_round,
        )

    @property
    def anchor_spec(self) -> AnchorSpec:
        return self.to_spec()

    @classmethod
    def anchor_field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(AnchorArguments))

    def anchor_kwargs(self) -> dict:
        """The anchor fields as keyword arguments (to pass them on to another config)."""
        return {name: getattr(self, name) for name in self.anchor_field_names()}
