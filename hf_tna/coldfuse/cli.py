"""ColD fusion: initialise a base repository, contribute, and drive whole runs (`hf-tna coldfuse`).

    hf-tna coldfuse init --store S --base org/base --model sentence-transformers/all-MiniLM-L6-v2 --anchor_ratio 0.4
    hf-tna coldfuse contribute --store S --base org/base --contributor alice --task sentiment --train_data a.csv \\
        --max_steps 200 --learning_rate 1e-4 --bf16 --gradient_accumulation_steps 2
    hf-tna coldfuse fuse --store S --base org/base [--round R]
    hf-tna coldfuse status --store S --base org/base
    hf-tna coldfuse [run] --store S --base org/base --model M --task sentiment=a.csv --task topic=b.csv --rounds 3

Every option comes from a dataclass parsed the way `transformers.HfArgumentParser` parses it (`--anchor_ratio`,
also spelled `--anchor-ratio`): the anchor flags are `hf_tna.AnchorArguments`' (as in `TNAConfig`), the training
flags of `contribute` and `run` are every `TrainingArguments` flag (`ContributionConfig`). `--store` is `hub`
(the Hub at HF_ENDPOINT, the default), a Hub-compatible URL, or a local folder (`hf_tna.hub.LocalStore`). The
repository layout is in `hf_tna.coldfuse.repo`, the fuser's checks in `hf_tna.coldfuse.fuser`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field, fields

from transformers import HfArgumentParser

from ..arguments import AnchorArguments
from ..hub import open_store
from .contributor import ContributionConfig, load_task_file
from .fuser import fuse_round
from .repo import WEIGHTINGS
from .runner import coldfuse_status, contribute, init_coldfuse, run_coldfuse

STORE_HELP = "hub (the Hub at HF_ENDPOINT), a Hub-compatible URL, or a local store folder."
BASE_HELP = "The ColD fusion base repository, org/name."


# --------------------------------------------------------------------------------------------------
# Options, one dataclass per group (each parsed like HfArgumentParser does)
# --------------------------------------------------------------------------------------------------
@dataclass
class RepoArguments:
    """The base repository and where it is stored."""

    base: str = field(metadata={"help": BASE_HELP, "metavar": "REPO"})
    store: str = field(default="hub", metadata={"help": STORE_HELP})


@dataclass
class RoundArguments:
    round: int | None = field(default=None, metadata={"help": "Round number (default: the latest round)."})


@dataclass
class FusionArguments:
    """Settings recorded in the base repository when it is created (`init`, `run`)."""

    redraw_anchors: bool = field(default=False, metadata={"help": "Re-draw the anchor mask each round."})
    weighting: str = field(
        default="uniform", metadata={"help": "Average uniformly or by examples.", "choices": list(WEIGHTINGS)}
    )
    base_model_id: str | None = field(default=None, metadata={"help": "Hub id of the pretrained model (card)."})


@dataclass
class InitArguments:
    model: str = field(metadata={"help": "Pretrained model: a folder or a Hub id."})


@dataclass
class TaskFileArguments:
    """How a task's rows are read from a data file."""

    text_column: str = field(default="text", metadata={"help": "Column of the texts."})
    label_column: str = field(default="label", metadata={"help": "Column of the labels."})
    eval_fraction: float = field(
        default=0.2, metadata={"help": "Rows held out of the training file when no evaluation file is given."}
    )

    def __post_init__(self):
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")


@dataclass
class ContributeArguments:
    """Who contributes what, and where it is published."""

    contributor: str = field(metadata={"help": "Your name: your branch is contrib/round-R/<name>."})
    task: str = field(metadata={"help": "Task name (recorded)."})
    train_data: str = field(metadata={"help": "csv/json/parquet file or save_to_disk folder.", "metavar": "FILE"})
    eval_data: str | None = field(default=None, metadata={"help": "Evaluation rows (default: a split of train_data)."})
    contrib_repo: str | None = field(default=None, metadata={"help": "Publish in this repo of yours, not the base."})
    upload_head: bool = field(default=False, metadata={"help": "Also upload the task head (under head/)."})
    overwrite: bool = field(default=False, metadata={"help": "Replace a contribution already published this round."})


@dataclass
class FuseArguments:
    contribution: list[str] = field(
        default_factory=list,
        metadata={"help": "Contributions outside the base repo (repeatable).", "metavar": "REPO@REF", "action": "extend"},
    )
    weighting: str | None = field(
        default=None, metadata={"help": "Default: the repository's.", "choices": list(WEIGHTINGS)}
    )
    min_contributions: int = field(default=1, metadata={"help": "Fuse only with at least this many valid ones."})
    verify_authors: bool = field(
        default=True,
        metadata={"help": "Count a contribution only when the store reports its contributor as the author of its "
                  "commits (the Hub does; a LocalStore cannot). --no_verify_authors for a simulation in which one "
                  "account plays every contributor."},
    )

    def __post_init__(self):
        if self.min_contributions < 1:
            raise ValueError(f"min_contributions must be >= 1, got {self.min_contributions}")


@dataclass
class RunArguments:
    """A whole run in one process: every contributor's task, and the number of rounds."""

    store: str = field(default="hub", metadata={"help": STORE_HELP})
    base: str | None = field(default=None, metadata={"help": BASE_HELP, "metavar": "REPO"})
    model: str | None = field(default=None, metadata={"help": "Pretrained model: a folder or a Hub id."})
    task: list[str] = field(
        default_factory=list,
        metadata={"help": "A contributor's task (repeatable): name, training file and optional evaluation file.",
                  "metavar": "NAME=TRAIN[,EVAL]", "action": "extend"},
    )
    rounds: int = field(default=3, metadata={"help": "Rounds of ColD fusion."})

    def __post_init__(self):
        if not (self.base and self.model and self.task):
            raise ValueError("run needs --base, --model and at least one --task NAME=TRAIN[,EVAL]")
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        self.task_files()

    def task_files(self) -> dict[str, tuple[str, str | None]]:
        """name -> (training file, evaluation file or None)."""
        out = {}
        for item in self.task:
            name, sep, paths = item.partition("=")
            if not (name and sep and paths):
                raise ValueError(f"--task {item!r}: write NAME=TRAIN_FILE[,EVAL_FILE]")
            train, _, evaluation = paths.partition(",")
            out[name] = (train, evaluation or None)
        return out


RUN_ARGUMENTS = (RunArguments, TaskFileArguments, AnchorArguments, FusionArguments, ContributionConfig)


# --------------------------------------------------------------------------------------------------
# Parsers
# --------------------------------------------------------------------------------------------------
def add_parser(subparsers):
    parser = subparsers.add_parser(
        "coldfuse", help="ColD fusion through a Hub repository: init, contribute, fuse, status, run",
        description="Iterative ColD fusion with fixed neuron anchors. Without a sub-command: `run` (a whole "
        "multi-round run in one process).", usage="%(prog)s [ACTION] [options]",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        parents=[HfArgumentParser(RUN_ARGUMENTS, add_help=False)])
    parser.set_defaults(func=_run_run)
    sub = parser.add_subparsers(dest="coldfuse_command", metavar="ACTION", prog=parser.prog, parser_class=HfArgumentParser)
    p = sub.add_parser("init", help="create the base repository with round 0's base",
                       usage="%(prog)s --base REPO --model MODEL [options]",
                       dataclass_types=[RepoArguments, InitArguments, AnchorArguments, FusionArguments])
    p.set_defaults(func=_run_init)
    p = sub.add_parser("contribute", help="fine-tune the round's base on a task and publish the body",
                       usage="%(prog)s --base REPO --contributor NAME --task NAME --train_data FILE [options]",
                       description="Fine-tune the round's base on a task and publish the body. Every "
                       "TrainingArguments flag is accepted; the anchors are the round's, read from the base.",
                       dataclass_types=[RepoArguments, RoundArguments, ContributeArguments, TaskFileArguments,
                                        ContributionConfig])
    p.set_defaults(func=_run_contribute)
    p = sub.add_parser("fuse", help="validate and average the round's contributions into the next base",
                       dataclass_types=[RepoArguments, RoundArguments, FuseArguments])
    p.set_defaults(func=_run_fuse)
    p = sub.add_parser("status", help="latest round, its base revision and pending contributions",
                       dataclass_types=[RepoArguments])
    p.set_defaults(func=_run_status)
    p = sub.add_parser("run", help="a whole run in one process (the default action)",
                       usage="%(prog)s --base REPO --model MODEL --task NAME=TRAIN[,EVAL] ... [options]",
                       dataclass_types=list(RUN_ARGUMENTS))
    p.set_defaults(func=_run_run)
    return parser


def _build(args, *dataclass_types) -> list:
    """The dataclasses of a parsed command line (validated before any work starts); a refused value is a
    usage error: one line on stderr, exit status 2."""
    try:
        return [cls(**{f.name: getattr(args, f.name) for f in fields(cls) if f.init}) for cls in dataclass_types]
    except ValueError as err:
        action = getattr(args, "coldfuse_command", None) or "run"
        print(f"hf-tna coldfuse {action}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def _print(report) -> int:
    print(json.dumps(report, indent=2, sort_keys=True, default=str))
    return 0


# --------------------------------------------------------------------------------------------------
# Actions
# --------------------------------------------------------------------------------------------------
def _run_init(args) -> int:
    repo, init, anchors, fusion = _build(args, RepoArguments, InitArguments, AnchorArguments, FusionArguments)
    return _print(init_coldfuse(open_store(repo.store), repo.base, init.model, anchor_spec=anchors.to_spec(),
                                redraw_anchors=fusion.redraw_anchors, weighting=fusion.weighting,
                                base_model=fusion.base_model_id))


def _run_contribute(args) -> int:
    repo, where, job, files, training = _build(args, RepoArguments, RoundArguments, ContributeArguments,
                                               TaskFileArguments, ContributionConfig)
    task = load_task_file(job.task, job.train_data, job.eval_data, files.text_column, files.label_column,
                          files.eval_fraction, training.seed)
    result = contribute(open_store(repo.store), repo.base, task, job.contributor, where.round, training,
                        job.contrib_repo, job.upload_head, job.overwrite)
    return _print(result)


def _run_fuse(args) -> int:
    repo, where, fuse = _build(args, RepoArguments, RoundArguments, FuseArguments)
    return _print(fuse_round(open_store(repo.store), repo.base, where.round, fuse.contribution, fuse.weighting,
                             fuse.min_contributions, verify_authors=fuse.verify_authors))


def _run_status(args) -> int:
    (repo,) = _build(args, RepoArguments)
    return _print(coldfuse_status(open_store(repo.store), repo.base))


def _run_run(args) -> int:
    run, files, anchors, fusion, training = _build(args, *RUN_ARGUMENTS)
    tasks = {name: load_task_file(name, train, evaluation, files.text_column, files.label_column,
                                  files.eval_fraction, training.seed)
             for name, (train, evaluation) in run.task_files().items()}
    result = run_coldfuse(open_store(run.store), run.base, run.model, tasks, run.rounds, anchors.to_spec(),
                          fusion.redraw_anchors, fusion.weighting, training, base_model=fusion.base_model_id)
    return _print({"repo_id": result["repo_id"], "revision": result["revision"],
                   "rounds": [{k: r[k] for k in ("round", "status", "revision", "accepted", "rejected")}
                              for r in result["rounds"]]})


__all__ = ["add_parser"]
