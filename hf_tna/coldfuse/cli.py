"""ColD fusion: initialise a base repository, contribute, and drive whole runs (`hf-tna coldfuse`).

    hf-tna coldfuse init --store S --base org/base --model sentence-transformers/all-MiniLM-L6-v2 --anchor-ratio 0.4
    hf-tna coldfuse contribute --store S --base org/base --contributor alice --task sentiment --train-data a.csv
    hf-tna coldfuse fuse --store S --base org/base [--round R]
    hf-tna coldfuse status --store S --base org/base
    hf-tna coldfuse [run] --store S --base org/base --model M --task sentiment=a.csv --task topic=b.csv --rounds 3

`--store` is `hub` (the Hub at HF_ENDPOINT, the default), a Hub-compatible URL, or a local folder
(`hf_tna.hub.LocalStore`). The repository layout is in `hf_tna.coldfuse.repo`, the fuser's checks in
`hf_tna.coldfuse.fuser`.
"""

from __future__ import annotations

import json
from dataclasses import fields

from ..anchors import GRANULARITIES, AnchorSpec
from ..hub import open_store
from .contributor import ContributionTraining, load_task_file
from .fuser import fuse_round
from .repo import WEIGHTINGS
from .runner import coldfuse_status, contribute, init_coldfuse, run_coldfuse


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------
def _common(p, round_arg=True):
    p.add_argument("--store", default="hub", help="hub (HF_ENDPOINT), a Hub-compatible URL, or a local store folder")
    p.add_argument("--base", required=True, metavar="REPO", help="the ColD fusion base repository, org/name")
    if round_arg:
        p.add_argument("--round", type=int, default=None, help="round number (default: the latest round)")


def _anchor_args(p):
    p.add_argument("--anchor-ratio", type=float, default=0.4, help="fraction of body entries anchored; 0: vanilla")
    p.add_argument("--anchor-seed", type=int, default=0, help="seed of the anchor mask")
    p.add_argument("--anchor-granularity", default="element", choices=list(GRANULARITIES))
    p.add_argument("--anchor-include", nargs="+", default=None, help="regex patterns of body tensors to anchor")
    p.add_argument("--anchor-exclude", nargs="+", default=None, help="regex patterns of body tensors never anchored")
    p.add_argument("--redraw-anchors", action="store_true", help="re-draw the mask each round (seed and round)")
    p.add_argument("--weighting", default="uniform", choices=list(WEIGHTINGS), help="average uniformly or by examples")
    p.add_argument("--base-model-id", default=None, help="Hub id of the pretrained model, for the model card")


def _training_args(p):
    for f in fields(ContributionTraining):
        kind = {"int | None": int, "int": int, "float": float}[str(f.type)]
        p.add_argument("--" + f.name.replace("_", "-"), type=kind, default=f.default, help=f.metadata["help"])


def _task_args(p):
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label")
    p.add_argument("--eval-fraction", type=float, default=0.2, help="held out of --train-data without --eval-data")


def _spec(args) -> AnchorSpec:
    return AnchorSpec(ratio=args.anchor_ratio, seed=args.anchor_seed, granularity=args.anchor_granularity,
                      include=args.anchor_include, exclude=args.anchor_exclude)


def _print(report) -> int:
    print(json.dumps(report, indent=2, sort_keys=True, default=str))
    return 0


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "coldfuse", help="ColD fusion through a Hub repository: init, contribute, fuse, status, run",
        description="Iterative ColD fusion with fixed neuron anchors. Without a sub-command: `run` (a whole "
        "multi-round run in one process).")
    _run_args(parser)
    sub = parser.add_subparsers(dest="coldfuse_command", metavar="ACTION")
    p = sub.add_parser("init", help="create the base repository with round 0's base")
    _common(p, round_arg=False)
    p.add_argument("--model", required=True, help="pretrained model: a folder or a Hub id")
    _anchor_args(p)
    p.set_defaults(func=_run_init)
    p = sub.add_parser("contribute", help="fine-tune the round's base on a task and publish the body")
    _common(p)
    p.add_argument("--contributor", required=True, help="your name: your branch is contrib/round-R/<name>")
    p.add_argument("--task", required=True, help="task name (recorded)")
    p.add_argument("--train-data", required=True, help="csv/json/parquet file or save_to_disk folder")
    p.add_argument("--eval-data", default=None, help="evaluation rows (default: a split of --train-data)")
    _task_args(p)
    _training_args(p)
    p.add_argument("--contrib-repo", default=None, help="publish in this repo of yours instead of the base repo")
    p.add_argument("--upload-head", action="store_true", help="also upload the task head (under head/)")
    p.add_argument("--overwrite", action="store_true", help="replace a contribution already published this round")
    p.set_defaults(func=_run_contribute)
    p = sub.add_parser("fuse", help="validate and average the round's contributions into the next base")
    _common(p)
    p.add_argument("--contribution", action="append", default=[], metavar="REPO@REF",
                   help="a contribution outside the base repo (repeatable)")
    p.add_argument("--weighting", default=None, choices=list(WEIGHTINGS), help="default: the repository's")
    p.add_argument("--min-contributions", type=int, default=1)
    p.set_defaults(func=_run_fuse)
    p = sub.add_parser("status", help="latest round, its base revision and pending contributions")
    _common(p, round_arg=False)
    p.set_defaults(func=lambda a: _print(coldfuse_status(open_store(a.store), a.base)))
    p = sub.add_parser("run", help="a whole run in one process (the default action)")
    _run_args(p)
    parser.set_defaults(func=_run_run)
    return parser


def _run_args(p):
    p.add_argument("--store", default="hub", help="hub (HF_ENDPOINT), a Hub-compatible URL, or a local store folder")
    p.add_argument("--base", metavar="REPO", help="the ColD fusion base repository, org/name")
    p.add_argument("--model", help="pretrained model: a folder or a Hub id")
    p.add_argument("--task", action="append", default=[], metavar="NAME=TRAIN[,EVAL]",
                   help="a contributor's task (repeatable): name, training file and optional evaluation file")
    p.add_argument("--rounds", type=int, default=3)
    _task_args(p)
    _anchor_args(p)
    _training_args(p)
    p.set_defaults(func=_run_run)


def _run_init(args) -> int:
    return _print(init_coldfuse(open_store(args.store), args.base, args.model, anchor_spec=_spec(args),
                                redraw_anchors=args.redraw_anchors, weighting=args.weighting,
                                base_model=args.base_model_id))


def _run_contribute(args) -> int:
    task = load_task_file(args.task, args.train_data, args.eval_data, args.text_column, args.label_column,
                          args.eval_fraction, args.seed)
    result = contribute(open_store(args.store), args.base, task, args.contributor, args.round,
                        ContributionTraining.from_args(args), args.contrib_repo, args.upload_head, args.overwrite)
    return _print(result)


def _run_fuse(args) -> int:
    return _print(fuse_round(open_store(args.store), args.base, args.round, args.contribution, args.weighting,
                             args.min_contributions))


def _run_run(args) -> int:
    if not (args.base and args.model and args.task):
        raise SystemExit("hf-tna coldfuse run needs --base, --model and at least one --task NAME=TRAIN[,EVAL]")
    tasks = {}
    for item in args.task:
        name, sep, paths = item.partition("=")
        if not sep or not paths:
            raise SystemExit(f"--task {item!r}: write NAME=TRAIN_FILE[,EVAL_FILE]")
        train, _, evaluation = paths.partition(",")
        tasks[name] = load_task_file(name, train, evaluation or None, args.text_column, args.label_column,
                                     args.eval_fraction, args.seed)
    result = run_coldfuse(open_store(args.store), args.base, args.model, tasks, args.rounds, _spec(args),
                          args.redraw_anchors, args.weighting, ContributionTraining.from_args(args),
                          base_model=args.base_model_id)
    return _print({"repo_id": result["repo_id"], "revision": result["revision"],
                   "rounds": [{k: r[k] for k in ("round", "status", "revision", "accepted", "rejected")}
                              for r in result["rounds"]]})


__all__ = ["add_parser"]
