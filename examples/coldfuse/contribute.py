"""One ColD fusion contributor: fine-tune the round's base on one real task and publish the body.

Run it as its own process, once per contributor and round (the orchestrator `run_coldfuse.py` does):

    accelerate launch --config_file examples/coldfuse/accelerate_cpu.yaml examples/coldfuse/contribute.py \
        --store out/store --base coldfuse/tna-seed0 --round 0 --contributor alice --task tweet_sentiment \
        --max_steps 30 --max_train_samples 480 --max_eval_samples 200 --max_length 48 --seed 0

Options are parsed by `HfArgumentParser`: this script's own (below) and every `TrainingArguments` flag
(`ContributionConfig`: `--bf16`, `--gradient_accumulation_steps`, ...); dashed spellings work too.

It prints one JSON line: the published contribution (repo, branch, sha) or "exists" when already there.
The same thing without this script: `hf-tna coldfuse contribute --train_data file.csv ...` (any csv/json).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tasks import LOADERS, load_task  # noqa: E402
from transformers import HfArgumentParser  # noqa: E402

from hf_tna.coldfuse.contributor import ContributionConfig  # noqa: E402
from hf_tna.coldfuse.runner import contribute  # noqa: E402
from hf_tna.hub import open_store  # noqa: E402


@dataclass
class ContributorArguments:
    """Which base, round and task this contributor works on."""

    store: str = field(metadata={"help": "Local store folder, Hub(-compatible) URL, or 'hub'."})
    base: str = field(metadata={"help": "The ColD fusion base repository."})
    contributor: str = field(metadata={"help": "Your name: your branch is contrib/round-R/<name>."})
    task: str = field(metadata={"help": "One of the offline tasks of tasks.py.", "choices": sorted(LOADERS)})
    round: int | None = field(default=None, metadata={"help": "Round number (default: the latest round)."})


def main(argv=None) -> int:
    parser = HfArgumentParser((ContributorArguments, ContributionConfig), description=__doc__.split("\n\n")[0])
    where, training = parser.parse_args_into_dataclasses(argv, look_for_args_file=False)
    task = load_task(where.task)
    result = contribute(open_store(where.store), where.base, task, where.contributor, where.round, training)
    print(json.dumps({"contributor": where.contributor, "task": where.task, **result}, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
