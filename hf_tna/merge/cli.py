"""`hf-tna soup`, `hf-tna interpolate`, `hf-tna barrier`: the command line of hf_tna.merge.

    hf-tna soup ckpt_a ckpt_b org/c@v2 --output soup/ [--merge_method weighted --weights 1 2 1] [--dtype bfloat16]
    hf-tna soup --recipe fusion_recipe.yaml --output soup/   # hf_tna's or mergekit's recipe (linear), file or Hub id
    hf-tna soup a b c --merge_method greedy --dataset val_dir --split validation --output soup/
    hf-tna interpolate A B --alpha 0.5 --output mid/
    hf-tna barrier A B --dataset val_dir --split validation --num_points 11 --plot lmc.png
    hf-tna barrier --pair anchored/a anchored/b --pair vanilla/a vanilla/b --dataset val.txt --max-length 128

The soup flags are `SoupConfig`'s fields (`HfArgumentParser`; `--max_shard_size` is also `--max-shard-size`),
plus the positional ingredients, `--output` and `--recipe`. Flags given on the command line override the recipe's
settings; `interpolate` is `soup` with the interpolate method.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import MISSING, dataclass, field, fields

from ..errors import UsageError
from .config import EvaluationArguments, SoupConfig

COMMANDS = ("soup", "interpolate", "barrier")


@dataclass
class BarrierArguments:
    """Settings of `hf-tna barrier` besides its evaluation set.

    Args:
        num_points (`int`, defaults to 25): evaluated points on the line from A to B, endpoints included.
        plot (`str`, defaults to `"lmc_barrier.png"`): PNG to write (empty for none; needs matplotlib).
        json (`str`, *optional*): also write the JSON report to this file.
        store (`str`, *optional*): where Hub ids are read from.
        trust_remote_code (`bool`, defaults to False): run custom model code.
        progress (`bool`, *optional*): a progress bar over the evaluations (default: on a terminal).
    """

    num_points: int = field(default=25, metadata={"help": "Evaluated points on the line from A to B (>= 2)."})
    plot: str = field(default="lmc_barrier.png", metadata={"help": "PNG to write ('' for none; needs matplotlib)."})
    json: str | None = field(default=None, metadata={"help": "Also write the JSON report to this file."})
    store: str | None = field(default=None, metadata={"help": "Where Hub ids are read from: hub (HF_ENDPOINT, the "
                                                               "default), a Hub-compatible URL or a local store."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Run custom model code."})
    progress: bool | None = field(default=None, metadata={"help": "Progress bar over the evaluations (default: "
                                                                   "shown on a terminal; --progress false hides it)."})

    def __post_init__(self):
        if type(self.num_points) is not int or self.num_points < 2:
            raise ValueError(f"num_points must be an int >= 2 (the two endpoints), got {self.num_points!r}")


# --------------------------------------------------------------------------------------------------
# Parsers
# --------------------------------------------------------------------------------------------------
def _dataclass_parser(*dataclass_types):
    from transformers import HfArgumentParser

    return HfArgumentParser(dataclass_types, add_help=False)


def _index_or_none(text: str) -> int | None:
    if text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ingredient index or 'none'") from None


def _only_given(parser, *dataclass_types) -> None:
    """Flags of the dataclasses default to 'not given' (their value then comes from a recipe or the dataclass);
    the help still shows the dataclass default."""
    defaults = {f.name: (f.default if f.default is not MISSING else None)
                for cls in dataclass_types for f in fields(cls)}
    for action in parser._actions:
        if action.dest not in defaults:
            continue
        if any(s.lstrip("-").replace("-", "_") == f"no_{action.dest}" for s in action.option_strings):
            action.help = f"Turn --{action.dest.replace('_', '-')} off."
        elif action.help and "default" not in action.help:
            default = defaults[action.dest]
            action.help = f"{action.help} (default: {'none' if default is None else default})"
        action.default = argparse.SUPPRESS
        if action.dest == "exclude_from":
            action.type = _index_or_none


def add_parser(subparsers):
    """Adds the soup, interpolate and barrier subcommands (each once); returns the soup parser."""
    if "soup" not in subparsers.choices:
        p = subparsers.add_parser(
            "soup", help="fuse checkpoints into a model soup", parents=[_dataclass_parser(SoupConfig)],
            description="Validated, streamed model soup of checkpoints (folders, Hub repo ids org/name@rev, PEFT LoRA "
            "adapters), written with its recipe and model card. Prints a JSON report.")
        p.add_argument("models", nargs="*", metavar="MODEL", help="ingredients: folders or Hub repo ids "
                       "(org/name[@revision]); default: the recipe's")
        p.add_argument("--output", "-o", required=True, help="folder to write the soup into (must not exist)")
        p.add_argument("--recipe", default=None, help="recipe: a YAML file (hf_tna's or mergekit's linear format) "
                       "or a Hub repo org/name[@revision] holding fusion_recipe.yaml; flags override its settings")
        _only_given(p, SoupConfig)
        p.set_defaults(func=run_soup)
    if "interpolate" not in subparsers.choices:
        p = subparsers.add_parser(
            "interpolate", help="interpolate two checkpoints: (1 - alpha) A + alpha B",
            parents=[_dataclass_parser(SoupConfig)],
            description="Write (1 - alpha) A + alpha B (torch.lerp in float32, float64 where float32 would overflow; exact endpoints): hf-tna soup with "
            "the interpolate method.")
        p.add_argument("a", help="first checkpoint (alpha 0): folder or Hub repo id")
        p.add_argument("b", help="second checkpoint (alpha 1): folder or Hub repo id")
        p.add_argument("--output", "-o", required=True, help="folder to write the interpolated model into")
        _only_given(p, SoupConfig)
        p.set_defaults(func=run_interpolate)
    if "barrier" not in subparsers.choices:
        p = subparsers.add_parser(
            "barrier", help="loss/accuracy barrier along the line between two checkpoints",
            parents=[_dataclass_parser(EvaluationArguments, BarrierArguments)],
            description="Evaluate (1 - alpha) A + alpha B of each pair on a split (classifiers, or causal LMs: "
            "token-weighted loss and perplexity); print the curves and the absolute and relative loss and accuracy "
            "barriers as JSON and plot every pair in one figure (PNG, needs matplotlib).")
        p.add_argument("models", nargs="*", metavar="MODEL", help="two checkpoints A B (folders or Hub repo ids): "
                       "one pair; more with --pair")
        p.add_argument("--pair", nargs=2, action="append", dest="pairs", metavar=("A", "B"), default=[],
                       help="a pair of checkpoints to measure (repeatable; all in one figure)")
        _only_given(p, EvaluationArguments, BarrierArguments)
        p.set_defaults(func=run_barrier)
    return subparsers.choices["soup"]


def _given(args, cls) -> dict:
    return {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}


def _build(cls, values: dict, from_flags: bool = True):
    """The dataclass from parsed values (and a recipe's). A flag value it refuses is bad usage (exit status 2,
    as argparse's own errors and the coldfuse command's); a value from a recipe file is refused input (exit 1)."""
    try:
        return cls(**values)
    except UsageError:
        raise
    except (TypeError, ValueError) as err:
        if from_flags:
            raise UsageError(str(err)) from err
        raise


# --------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------
def run_soup(args) -> int:
    from .recipe import load_recipe
    from .soup import build_soup

    values = _given(args, SoupConfig)
    models = list(args.models)
    if args.recipe:
        recipe_models, settings = load_recipe(args.recipe, values.get("store"))
        models = models or recipe_models
        values = {**settings, **values}
    if not models:
        raise UsageError("give the ingredients (positional MODEL ...) or a --recipe with `models`")
    result = build_soup(models, args.output, _build(SoupConfig, values, from_flags=not args.recipe))
    print(json.dumps(result.to_dict(), default=str))
    return 0


def run_interpolate(args) -> int:
    from .soup import build_soup

    values = {"merge_method": "interpolate", **_given(args, SoupConfig)}
    result = build_soup([args.a, args.b], args.output, _build(SoupConfig, values))
    print(json.dumps(result.to_dict(), default=str))
    return 0


def run_barrier(args) -> int:
    from .barrier import measure_barriers, plot_barriers, require_matplotlib, write_report

    evaluation = _build(EvaluationArguments, _given(args, EvaluationArguments))
    opts = _build(BarrierArguments, _given(args, BarrierArguments))
    if args.models and len(args.models) != 2:
        raise UsageError(f"give two checkpoints A B (got {len(args.models)}), or pairs with --pair A B")
    pairs = ([tuple(args.models)] if args.models else []) + [tuple(p) for p in args.pairs]
    if not pairs:
        raise UsageError("give two checkpoints A B, or one or more --pair A B")
    if evaluation.dataset is None:
        raise UsageError("--dataset is needed: the split the barrier is measured on")
    if opts.plot:
        require_matplotlib()
    report = measure_barriers(pairs, evaluation, opts.num_points, opts.store, opts.trust_remote_code, opts.progress)
    if len(pairs) == 1:  # one pair: its fields also at the top level, as before --pair
        report = {**{k: v for k, v in report["pairs"][0].items() if k != "label"}, **report}
    if opts.plot:
        plot_barriers(report, opts.plot)
        report["plot"] = opts.plot
    if opts.json:
        write_report(report, opts.json)
    print(json.dumps(report, indent=2))
    return 0
