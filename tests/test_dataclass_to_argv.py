"""`hf_tna.arguments.dataclass_to_argv`: a dataclass instance -> the command line HfArgumentParser parses back."""

import enum
from dataclasses import dataclass, field

import pytest
from transformers import HfArgumentParser

from hf_tna.arguments import AnchorArguments, dataclass_to_argv


class Color(str, enum.Enum):  # like transformers' ExplicitEnum: the parser hands back the value
    RED = "red"
    BLUE = "blue"


@dataclass
class ScriptConfig(AnchorArguments):
    name: str = field(default="run", metadata={"help": "a string"})
    steps: int = field(default=3, metadata={"help": "an int"})
    lr: float = field(default=1e-3, metadata={"help": "a float"})
    verbose: bool = field(default=False, metadata={"help": "a bool, default False"})
    shuffle: bool = field(default=True, metadata={"help": "a bool, default True"})
    maybe: bool | None = field(default=None, metadata={"help": "an optional bool"})
    limit: int | None = field(default=None, metadata={"help": "an optional int"})
    ratios: list[float] = field(default_factory=lambda: [0.0, 0.5], metadata={"help": "a list of floats"})
    tags: list[str] | None = field(default=None, metadata={"help": "an optional list"})
    color: Color = field(default=Color.RED, metadata={"help": "an enum"})


def round_trip(obj):
    (parsed,) = HfArgumentParser(type(obj)).parse_args_into_dataclasses(args=dataclass_to_argv(obj))
    return parsed


@pytest.mark.parametrize(
    "config",
    [
        ScriptConfig(),
        ScriptConfig(name="a b", steps=7, lr=0.1 + 0.2, verbose=True, shuffle=False, maybe=False, limit=0,
                     ratios=[1e-7, 2.5], tags=["x", "-1", "c{1,2}", "a b"], color=Color.BLUE,
                     anchor_ratio=0.25, anchor_granularity="neuron", anchor_exclude=["classifier", "pooler"]),
        ScriptConfig(maybe=True, tags=None, ratios=[-0.5, 3], anchor_include=["layer\\.0\\."], anchor_round=2),
        ScriptConfig(name="--looks-like-a-flag", steps=-4, lr=-1e-07, limit=-1),
    ],
)  # fmt: skip
def test_round_trip_through_hf_argument_parser(config):
    assert round_trip(config) == config


def test_values_are_written_as_the_parser_reads_them():
    argv = dataclass_to_argv(ScriptConfig(verbose=True, shuffle=False, color=Color.BLUE))
    assert argv[argv.index("--verbose") + 1] == "true" and argv[argv.index("--shuffle") + 1] == "false"
    assert argv[argv.index("--color") + 1] == "blue"
    assert "--limit" not in argv and "--tags" not in argv  # None defaults are left to the parser
    ratios = argv.index("--ratios")
    assert argv[ratios + 1 : ratios + 3] == ["0.0", "0.5"]


def test_what_a_command_line_cannot_say_is_refused():
    with pytest.raises(ValueError, match=r"ScriptConfig.ratios is \[\]"):
        dataclass_to_argv(ScriptConfig(ratios=[]))
    with pytest.raises(ValueError, match="ScriptConfig.name is None"):
        dataclass_to_argv(ScriptConfig(name=None))
    with pytest.raises(ValueError, match="read as a flag"):
        dataclass_to_argv(ScriptConfig(tags=["--not-a-flag"]))
    with pytest.raises(TypeError, match="dataclass instance"):
        dataclass_to_argv(ScriptConfig)
