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
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from evaluate import finetune_accuracy, forward_cost, plan_sizes, probe_accuracy  # noqa: E402
from tasks import HELD_OUT_TASKS, SEEN_TASKS, load_task, minilm_path  # noqa: E402

from hf_tna.anchors import AnchorSpec  # noqa: E402
from hf_tna.coldfuse.fuser import fuse_round  # noqa: E402
from hf_tna.coldfuse.repo import load_round_base, round_tag  # noqa: E402
from hf_tna.coldfuse.runner import init_coldfuse  # noqa: E402
from hf_tna.hub import open_store  # noqa: E402

VARIANTS = {"tna": None, "vanilla": 0.0}  # None: --anchor-ratio
CONTRIBUTORS = {"tweet_sentiment": "ana", "chat_topic": "bo", "quote_language": "chen"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output-dir", default="outputs/coldfuse")
    p.add_argument("--store", default=None, help="local store folder or Hub-compatible URL (default: OUTPUT/store)")
    p.add_argument("--model", default=None, help="pretrained model folder or Hub id (default: the packaged MiniLM)")
    p.add_argument("--base-model-id", default="sentence-transformers/all-MiniLM-L6-v2", help="for the model cards")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--anchor-ratio", type=float, default=0.4)
    p.add_argument("--redraw-anchors", action="store_true", help="re-draw the anchor mask every round")
    p.add_argument("--steps", type=int, default=30, help="optimizer steps per contribution")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=48)
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--contrib-eval-samples", type=int, default=200, help="test rows each contributor reports on")
    p.add_argument("--budget-minutes", type=float, default=40.0, help="time budget of the evaluation")
    p.add_argument("--launcher", default="accelerate", choices=["accelerate", "python"],
                   help="start contributors with `accelerate launch` (default) or plain python")
    p.add_argument("--accelerate-config", default=str(HERE / "accelerate_cpu.yaml"))
    p.add_argument("--quick", action="store_true", help="tiny settings: a smoke run in a few minutes")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.seeds, args.steps, args.batch_size, args.max_length = 1, [0], 2, 8, 24
        args.contrib_eval_samples, args.budget_minutes = 16, 0.5
    return args


def contributor_command(args, store: str, repo: str, round: int, task: str, seed: int) -> list[str]:
    script = [str(HERE / "contribute.py"), "--store", store, "--base", repo, "--round", str(round),
              "--contributor", CONTRIBUTORS[task], "--task", task, "--max-steps", str(args.steps),
              "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
              "--learning-rate", str(args.learning_rate), "--max-train-samples", str(args.steps * args.batch_size),
              "--max-eval-samples", str(args.contrib_eval_samples), "--warmup-ratio", "0.1", "--seed", str(seed)]
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
    report = fuse_round(store, repo, round)
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
    for variant, ratio in VARIANTS.items():
        for seed in args.seeds:
            repo = f"coldfuse/{variant}-seed{seed}"
            spec = AnchorSpec(ratio=args.anchor_ratio if ratio is None else ratio, seed=seed)
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
    settings = {k: v for k, v in vars(args).items()}
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
