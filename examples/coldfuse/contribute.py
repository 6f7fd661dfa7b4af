"""One ColD fusion contributor: fine-tune the round's base on one real task and publish the body.

Run it as its own process, once per contributor and round (the orchestrator `run_coldfuse.py` does):

    accelerate launch --config_file examples/coldfuse/accelerate_cpu.yaml examples/coldfuse/contribute.py \
        --store out/store --base coldfuse/tna-seed0 --round 0 --contributor alice --task tweet_sentiment \
        --max-steps 30 --max-train-samples 480 --max-eval-samples 200 --max-length 48 --seed 0

It prints one JSON line: the published contribution (repo, branch, sha) or "exists" when already there.
The same thing without this script: `hf-tna coldfuse contribute --train-data file.csv ...` (any csv/json).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tasks import LOADERS, load_task  # noqa: E402

from hf_tna.coldfuse.contributor import ContributionTraining  # noqa: E402
from hf_tna.coldfuse.runner import contribute  # noqa: E402
from hf_tna.hub import open_store  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True, help="local store folder or Hub(-compatible) URL, or 'hub'")
    parser.add_argument("--base", required=True, help="the ColD fusion base repository")
    parser.add_argument("--round", type=int, default=None)
    parser.add_argument("--contributor", required=True)
    parser.add_argument("--task", required=True, choices=sorted(LOADERS))
    for f in fields(ContributionTraining):
        kind = {"int | None": int, "int": int, "float": float}[str(f.type)]
        parser.add_argument("--" + f.name.replace("_", "-"), type=kind, default=f.default, help=f.metadata["help"])
    args = parser.parse_args(argv)
    task = load_task(args.task)
    result = contribute(open_store(args.store), args.base, task, args.contributor, args.round,
                        ContributionTraining.from_args(args))
    print(json.dumps({"contributor": args.contributor, "task": args.task, **result}, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
