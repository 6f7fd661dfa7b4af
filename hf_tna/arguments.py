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

    @classmethod
    def from_spec(cls, spec: AnchorSpec, **kwargs):
        """These settings (any subclass: `TNAConfig.from_spec(spec, output_dir=...)`) for `spec`; the other
        fields from `kwargs`."""
        include = list(spec.include) if spec.include else None
        exclude = list(spec.exclude) if spec.exclude else None
        return cls(
            anchor_ratio=spec.ratio,
            anchor_seed=spec.seed,
            anchor_granularity=spec.granularity,
            anchor_include=include,
            anchor_exclude=exclude,
            anchor_round=spec.round,
            **kwargs,
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


def dataclass_to_argv(obj) -> list[str]:
    """The command line that `HfArgumentParser(type(obj))` parses back into `obj` (a dataclass instance).

    Every init field is written as `--name value` (`--name=value` when the value starts with "-"): booleans as
    `true`/`false`, enums by value, lists as several values, dicts as JSON. A None (or an empty list) is left out
    when it is the field's default, so the parser restores it; what a command line cannot say (another None or
    empty list, a list item that looks like a flag) raises ValueError.
    Used to hand a script's config to another process (`accelerate launch script.py *argv`).
    """
    import dataclasses
    import enum
    import json
    import re

    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        raise TypeError(f"dataclass_to_argv needs a dataclass instance, got {type(obj).__name__}")
    argv: list[str] = []
    for f in dataclasses.fields(obj):
        if not f.init:
            continue
        value = getattr(obj, f.name)
        if value is None or (isinstance(value, (list, tuple)) and not value):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            restored = default is None if value is None else isinstance(default, (list, tuple)) and not default
            if restored:  # the parser's default gives it back
                continue
            raise ValueError(
                f"{type(obj).__name__}.{f.name} is {value!r}, which a command line cannot express (its default is "
                f"{default!r}); give it a value"
            )
        if isinstance(value, enum.Enum):
            value = value.value
        if isinstance(value, (list, tuple)):
            items = [str(v.value if isinstance(v, enum.Enum) else v) for v in value]
            flag_like = [v for v in items if v.startswith("-") and not re.fullmatch(r"-\d+|-\d*\.\d+", v)]
            if flag_like:
                raise ValueError(
                    f"{type(obj).__name__}.{f.name} holds {flag_like[0]!r}, which argparse would read as a flag in "
                    "a list; pass it another way"
                )
            argv += [f"--{f.name}", *items]
        elif isinstance(value, bool):
            argv += [f"--{f.name}", "true" if value else "false"]
        else:
            text = json.dumps(value) if isinstance(value, dict) else str(value)
            argv += [f"--{f.name}={text}"] if text.startswith("-") else [f"--{f.name}", text]  # "-x" is no flag
    return argv


@dataclass
class AnchorTrainingArguments(AnchorArguments):
    """`AnchorArguments` plus how a trainer applies them (mixed into `TNAConfig` and the TRL configs).

    Args:
        anchor_shared_init (`bool`, defaults to True): initialise new weights (a fresh head, new embedding rows,
            adapters) from the anchor seed and their names (`hf_tna.shared_init`), so contributors with different
            training seeds anchor them at the same values; False keeps your own initialisation.
        anchor_lora_fa (`bool`, defaults to False): FFA-LoRA for PEFT LoRA models: every LoRA `A` is initialised
            from the anchor seed (shared initialisation) and frozen whole, only `B` trains (with element anchors
            on it at `anchor_ratio`; 0 for plain FFA-LoRA); the frozen `A`s are recorded in the manifest
            (`whole` entries), so soups verify them and the average of the `B`s times the shared `A` is exactly
            the average of the updates.
        anchor_zero_copy (`bool` or `None`): True for zero-copy anchors (torch AdamW / Adam / SGD: no mask and no
            copy of the anchor values kept), False for the restore path (any optimizer); None picks zero copy on
            accelerators and the restore path on CPU.
    """

    anchor_shared_init: bool = field(
        default=True,
        metadata={"help": "Initialise the weights the model did not load (a fresh head, new embedding rows, adapters) "
                  "from the anchor seed, so every contributor starts them from the same values."},
    )
    anchor_lora_fa: bool = field(
        default=False,
        metadata={"help": "FFA-LoRA: freeze every LoRA A whole at its shared-seed init and train only B, so the "
                  "average of the Bs times the shared A is exactly the average of the updates."},
    )
    anchor_zero_copy: bool | None = field(
        default=None,
        metadata={"help": "Zero-copy anchors (torch AdamW/Adam/SGD; no stored mask or values): true or false; unset "
                  "picks zero copy on accelerators and the restore path on CPU."},
    )
