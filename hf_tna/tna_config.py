"""`TNAConfig`: `TrainingArguments` plus the anchor settings (`AnchorArguments`), parsable by `HfArgumentParser`."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import TrainingArguments

from .arguments import AnchorTrainingArguments


@dataclass
class TNAConfig(AnchorTrainingArguments, TrainingArguments):
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

    The anchor fields are those of `hf_tna.AnchorArguments`; every other field is `TrainingArguments`'.
    """
