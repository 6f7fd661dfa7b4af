"""`TNAConfig`: `TrainingArguments` plus the anchor settings, parsable by `HfArgumentParser`."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

from .anchors import GRANULARITIES, AnchorSpec


@dataclass
class TNAConfig(TrainingArguments):
    """`TrainingArguments` for `TNATrainer`, with the fixed-neuron-anchor settings of TNA-PFN.

    Args:
        anchor_ratio (`float`, defaults to 0.4): fraction of targeted weight entries (or output units)
            kept at their initial value during training, in [0, 1). 0 trains exactly like `Trainer`.
        anchor_seed (`int`, defaults to 0): seed of the anchor mask. Every model that will be fused must
            use the same seed, ratio, granularity and base.
        anchor_granularity (`str`, defaults to `"element"`): `"element"` (the paper: each entry
            i.i.d.) or `"neuron"` (whole output units with their bias entries).
        anchor_include (`list[str]` or `None`): regex patterns over checkpoint parameter names to anchor;
            default: every trainable parameter.
        anchor_exclude (`list[str]` or `None`): regex patterns of parameters never anchored (e.g.
            `classifier` for a task head).
        anchor_round (`int`, defaults to 0): round offset of the draw (federated / ColD-fusion rounds).
    """

    anchor_ratio: float = field(
        default=0.4,
        metadata={"help": "Fraction of weight entries kept at their initial value, in [0, 1). 0 = plain Trainer."},
    )
    anchor_seed: int = field(default=0, metadata={"help": "Seed of the anchor mask; shared by all models to fuse."})
    anchor_granularity: str = field(
        default="element",
        metadata={"help": "Anchor granularity: element (i.i.d. entries, the paper) or neuron (whole output units).",
                  "choices": list(GRANULARITIES)},
    )
    anchor_include: list[str] | None = field(
        default=None, metadata={"help": "Regex patterns of parameter names to anchor (default: all trainable)."}
    )
    anchor_exclude: list[str] | None = field(
        default=None, metadata={"help": "Regex patterns of parameter names never anchored, e.g. classifier."}
    )
    anchor_round: int = field(default=0, metadata={"help": "Round offset of the mask draw (federated / ColD fusion)."})

    def __post_init__(self):
        super().__post_init__()
        try:
            _ = self.anchor_spec  # validates every field, naming it
        except (TypeError, ValueError) as err:
            raise ValueError(str(err).replace("AnchorSpec.", "TNAConfig.anchor_")) from None

    @property
    def anchor_spec(self) -> AnchorSpec:
        return AnchorSpec(
            ratio=self.anchor_ratio,
            seed=self.anchor_seed,
            granularity=self.anchor_granularity,
            include=tuple(self.anchor_include) if self.anchor_include else None,
            exclude=tuple(self.anchor_exclude) if self.anchor_exclude else None,
            round=self.anchor_round,
        )
