"""ColD fusion of all-MiniLM-L6-v2 on real offline tasks, with anchors (TNA) and without (vanilla), then evaluation.

    python examples/coldfuse/run_coldfuse.py --quick                       # a few minutes on 2 CPU cores
    python examples/coldfuse/run_coldfuse.py --rounds 3 --seeds 0 1 2 --budget-minutes 40

For each variant (`tna`: anchor ratio 0.4; `vanilla`: ratio 0) and seed, a base repository
`coldfuse/<variant>-seed<seed>` is initialised with the pretrained model; each round, one contributor per
seen task runs as its own process (`accelerate launch ... contribute.py`, all of a round at once) against the
store (a local folder, or a Hub-compatible endpoint with `--store http://...`), then the round is fused.
The held-out task never contributes. Then every base is evaluated (evaluate.py): linear probes after each
round, and after the last round fine-tuning and linear probing on every task, against the pretrained model.
Writes results.json, results.md, coldfuse_rounds.png and final_state_<variant>.json to --output-dir.
Options: `ExperimentConfig` below, parsed by `HfArgumentParser`; its anchor flags (`--anchor_ratio`, ...) are
`hf_tna.AnchorArguments`'.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from evaluate import finetune_accuracy, forward_cost, plan_sizes, probe_accuracy  # noqa: E402
from tasks import HELD_OUT_TASKS, SEEN_TASKS, load_task, minilm_path  # noqa: E402
from transformers import HfArgumentParser  # noqa: E402

from hf_tna.anchors import AnchorSpec  # noqa: E402
from hf_tna.arguments import AnchorArguments  # noqa: E402
from hf_tna.coldfuse.fuser import fuse_round  # noqa: E402
from hf_tna.coldfuse.repo import load_round_base, round_tag  # noqa: E402
from hf_tna.coldfuse.runner import init_coldfuse  # noqa: E402
from hf_tna.hub import open_store  # noqa: E402

VARIANTS = ("tna", "vanilla")  # tna: the anchor fields; vanilla: ratio 0
CONTRIBUTORS = {"tweet_sentiment": "ana", "chat_topic": "bo", "quote_language": "chen"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


@dataclass
class ExperimentConfig(AnchorArguments):
    """Settings of the experiment, parsed by `HfArgumentParser` (`--output_dir`, also `--output-dir`, ...).

    The anchor fields are `hf_tna.AnchorArguments`' (the `tna` variant; `vanilla` has ratio 0); the run of seed
    `s` draws its mask with seed `anchor_seed + s`, so by default the anchor seed is the run's seed, as are the
    contributors' and the evaluation's. `--quick`: 1 round, seed 0, 2 steps x batch 8, a 0.5-minute evaluation.
    """

    output_dir: str = field(default="outputs/coldfuse", metadata={"help": "Where the results go."})
    store: str | None = field(
        default=None, metadata={"help": "Local store folder or Hub-compatible URL (default: OUTPUT/store)."}
    )
    model: str | None = field(
        default=None, metadata={"help": "Pretrained model folder or Hub id (default: the packaged MiniLM)."}
    )
    base_model_id: str = field(
        default="sentence-transformers/all-MiniLM-L6-v2", metadata={"help": "Hub id of the model, for the cards."}
    )
    rounds: int = field(default=3, metadata={"help": "Rounds of ColD fusion."})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "One base repository per seed."})
    redraw_anchors: bool = field(default=False, metadata={"help": "Re-draw the anchor mask every round."})
    steps: int = field(default=30, metadata={"help": "Optimizer steps per contribution."})
    batch_size: int = field(default=16, metadata={"help": "Contributors' train and eval batch size."})
    max_length: int = field(default=48, metadata={"help": "Tokens per text."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Contributors' AdamW learning rate."})
    contrib_eval_samples: int = field(default=200, metadata={"help": "Test rows each contributor reports on."})
    budget_minutes: float = field(default=40.0, metadata={"help": "Time budget of the evaluation."})
    launcher: str = field(
        default="accelerate",
        metadata={"help": "Start contributors with `accelerate launch` or plain python.",
                  "choices": ["accelerate", "python"]},
    )
    accelerate_config: str = field(
        default=str(HERE / "accelerate_cpu.yaml"), metadata={"help": "accelerate config of the contributors."}
    )
    quick: bool = field(default=False, metadata={"help": "Tiny settings: a smoke run in a few minutes."})

    def __post_init__(self):
        if self.quick:
            self.rounds, self.seeds, self.steps, self.batch_size, self.max_length = 1, [0], 2, 8, 24
            self.contrib_eval_samples, self.budget_minutes = 16, 0.5
        if self.rounds < 1 or not self.seeds:
            raise ValueError("ExperimentConfig needs rounds >= 1 and at least one seed")
        super().__post_init__()  # the anchor fields

    def spec(self, variant: str, seed: int) -> AnchorSpec:
        """The anchors of one base repository: the anchor fields (ratio 0 for `vanilla`), seed `anchor_seed + seed`."""
        spec = dataclasses.replace(self.to_spec(), seed=self.anchor_seed + seed)
        return dataclasses.replace(spec, ratio=0.0) if variant == "vanilla" else spec


def parse_args(argv=None) -> ExperimentConfig:
    parser = HfArgumentParser(ExperimentConfig, description=__doc__.split("\n\n")[0])
    (config,) = parser.parse_args_into_dataclasses(argv, look_for_args_file=False)
    return config


def contributor_command(args, store: str, repo: str, round: int, task: str, seed: int) -> list[str]:
    script = [str(HERE / "contribute.py"), "--store", store, "--base", repo, "--round", str(round),
              "--contributor", CONTRIBUTORS[task], "--task", task, "--max_steps", str(args.steps),
              "--per_device_train_batch_size", str(args.batch_size),
              "--per_device_eval_batch_size", str(args.batch_size), "--max_length", str(args.max_length),
              "--learning_rate", str(args.learning_rate), "--max_train_samples", str(args.steps * args.batch_size),
              "--max_eval_samples", str(args.contrib_eval_samples), "--warmup_steps", "0.1", "--seed", str(seed)]
    if args.launcher == "python":
        return [sys.executable, *script]
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", args.accelerate_config,
            "--num_processes", "1", *script]


def run_round(args, store_arg: str, store, repo: str, round: int, seed: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get(
        "PYTHONPATH", "")]), "TOKENIZERS_PARALLELISM": "false"}
    procs = []
    for task in SEEN_TASKS:  # all contributors of the round at once, each its own process
        cmd = contributor_command(args, store_arg, repo, round, task, seed)
        procs.append((task, cmd, subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                  text=True)))
    for task, cmd, proc in procs:
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"contributor {task} failed ({proc.returncode}): {shlex.join(cmd)}\n{err[-4000:]}")
        log(f"  {repo} round {round}: {out.strip().splitlines()[-1][:200]}")
    report = fuse_round(store, repo, round, verify_authors=False)  # one account plays every contributor here
    log(f"  {repo} round {round} -> {round + 1}: {report['status']}, {len(report['accepted'])} accepted, "
        f"{len(report['rejected'])} rejected")
    return report


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    store_arg = args.store or str(out / "store")
    store = open_store(store_arg)
    model = args.model or str(minilm_path())
    command = shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(["run_coldfuse.py", *argv])
    started = time.time()
    repos = {}
    for variant in VARIANTS:
        for seed in args.seeds:
            repo = f"coldfuse/{variant}-seed{seed}"
            spec = args.spec(variant, seed)
            init_coldfuse(store, repo, model, anchor_spec=spec, redraw_anchors=args.redraw_anchors,
                          base_model=args.base_model_id)
            repos[(variant, seed)] = repo
            for r in range(args.rounds):
                if round_tag(r + 1) not in store.list_refs(repo)["tags"]:
                    run_round(args, store_arg, store, repo, r, seed)
    coldfuse_s = time.time() - started
    log(f"ColD fusion done in {coldfuse_s:.0f}s; evaluating")

    tasks = {name: load_task(name) for name in (*SEEN_TASKS, *HELD_OUT_TASKS)}
    bases = {key: [load_round_base(store, repo, r).folder for r in range(args.rounds + 1)]
             for key, repo in repos.items()}
    probe_models = 1 + args.rounds * len(repos)
    finetune_models = (1 + len(VARIANTS)) * len(args.seeds)
    sizes = plan_sizes(args.budget_minutes * 60, forward_cost(model, args.max_length), probe_models,
                       finetune_models, len(tasks), args.batch_size)
    if args.quick:
        sizes.update(n_test=16, n_train=32, finetune_steps=1)
    log(f"evaluation sizes: {sizes}")
    per_round, final = [], []
    for (variant, seed), folders in bases.items():
        for r, folder in enumerate(folders):
            for name, task in tasks.items():
                acc = probe_accuracy(folder, task, sizes["n_train"], sizes["n_test"], seed, args.max_length)
                per_round.append({"variant": variant, "seed": seed, "round": r, "task": name,
                                  "seen": name in SEEN_TASKS, "probe_accuracy": acc})
    for seed in args.seeds:
        candidates = {"pretrained": Path(model), **{v: bases[(v, seed)][-1] for v in VARIANTS}}
        for label, folder in candidates.items():
            for name, task in tasks.items():
                ft = finetune_accuracy(folder, task, sizes["n_train"], sizes["n_test"], sizes["finetune_steps"], seed,
                                       args.max_length, args.learning_rate, args.batch_size)
                probe = probe_accuracy(folder, task, sizes["n_train"], sizes["n_test"], seed, args.max_length)
                final.append({"model": label, "seed": seed, "task": name, "seen": name in SEEN_TASKS,
                              "finetune_accuracy": ft, "probe_accuracy": probe})
                log(f"  {label} seed {seed} {name}: fine-tune {ft:.4f}, probe {probe:.4f}")
    contributions = []
    for (variant, seed), repo in repos.items():
        for r in range(1, args.rounds + 1):
            state = load_round_base(store, repo, r, download=False).state
            for row in state["contributions"]:
                contributions.append({"variant": variant, "seed": seed, "round": r - 1, "task": row["task"],
                                      "eval_accuracy": row["metrics"].get("eval_accuracy"),
                                      "ingredient": row["ingredient"]})
        if seed == args.seeds[0]:
            final_state = load_round_base(store, repo, args.rounds, download=False).state
            (out / f"final_state_{variant}.json").write_text(json.dumps(final_state, indent=2, sort_keys=True))
    settings = dataclasses.asdict(args)
    settings.update(command=command, model=model, seen_tasks=list(SEEN_TASKS), held_out_tasks=list(HELD_OUT_TASKS),
                    evaluation_sizes=sizes, coldfuse_seconds=coldfuse_s, total_seconds=time.time() - started,
                    task_sizes={n: {"labels": len(t.labels), "train": len(t.train), "test": len(t.eval)}
                                for n, t in tasks.items()})
    results = {"settings": settings, "per_round": per_round, "final": final, "contributions": contributions}
    (out / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True))
    from report import plot_rounds, results_table

    (out / "results.md").write_text(results_table(results))
    plot_rounds(results, out / "coldfuse_rounds.png")
    log(f"wrote {out / 'results.json'}, results.md, coldfuse_rounds.png in {time.time() - started:.0f}s")
    print((out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
