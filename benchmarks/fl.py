"""FedAvg vs FedPFN vs FedPNU on Fashion-MNIST with Flower's simulation engine (Ray), on one machine.

    python benchmarks/fl.py --budget-minutes 30           # the full table -> docs/results/federated.md + PNGs
    python benchmarks/fl.py --quick                       # smoke run (minutes), writes to /tmp/hf_tna_fl_quick

Setting: the CNN of the TNA-PFN authors' FL code (conv 32, conv 64, conv 64, fc 64, fc 10), 10 clients with
Dirichlet label skew (alpha 0.1 and 0.5), local SGD, each method with two server strategies (FedAvg and
FedAvgM), several seeds; score = server-side test accuracy averaged over the last 5 rounds. The task and the
Flower app are the package's, the same as examples/federated's: `hf_tna.federated.image_task` run by
`hf_tna.federated.app`.

Ray is started once: Flower's `run_simulation` shuts Ray down when a run ends (RayBackend.terminate calls
`ray.shutdown()`), so separate `run_simulation` calls cannot share it. Instead one simulation runs every
experiment: its ServerApp calls `run_experiment` (`strategy.start()`) once per (alpha, server, method, seed) on the same grid of
SuperNodes; each experiment's settings travel in the train config, so the Ray actors serve all of them.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks.common

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import build_parser  # noqa: E402
from hf_tna.arguments import AnchorArguments  # noqa: E402
from hf_tna.example_data import build_federated_model, dirichlet_partition, load_image_split, subsample  # noqa: E402
from hf_tna.federated.app import build_client_app, run_experiment, simulate  # noqa: E402
from hf_tna.federated.config import METHODS, SERVER_STRATEGIES  # noqa: E402
from hf_tna.federated.image_task import IMAGE_TASK, ImageTaskArguments  # noqa: E402

METHOD_NAMES = {"fedavg": "FedAvg", "fedpfn": "FedPFN", "fedpnu": "FedPNU"}
SERVER_NAMES = {"fedavg": "FedAvg", "fedavgm": "FedAvgM", "fedadam": "FedAdam", "fedprox": "FedProx"}
LAST = 5  # rounds averaged for the score
QUICK_OUTPUT_DIR = Path("/tmp/hf_tna_fl_quick")


@dataclass
class FLBenchmarkConfig(AnchorArguments):
    """Settings of benchmarks/fl.py (lists are space-separated values). Every (alpha, server, method, seed)
    combination is one run; the anchor fields are `AnchorArguments`' (FedPFN / FedPNU runs), with `anchor_seed`
    following each run's seed unless given. `--quick`: one alpha, server and seed, 4 clients, 3 rounds."""

    budget_minutes: float = field(default=30.0, metadata={"help": "Wall-clock budget; sizes the training set."})
    quick: bool = field(default=False, metadata={"help": "Tiny smoke run (one alpha, one seed, 3 rounds)."})
    alphas: list[float] = field(default_factory=lambda: [0.1, 0.5], metadata={"help": "Dirichlet label skews."})
    servers: list[str] = field(
        default_factory=lambda: ["fedavg", "fedavgm"],
        metadata={"help": "Server strategies: " + ", ".join(SERVER_STRATEGIES)},
    )
    methods: list[str] = field(
        default_factory=lambda: list(METHODS), metadata={"help": "Methods: " + ", ".join(METHODS)}
    )
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "Seeds of the runs."})
    rounds: int = field(default=15, metadata={"help": "Federated rounds."})
    num_clients: int = field(default=10, metadata={"help": "Simulated clients (all sampled every round)."})
    train_size: int | None = field(
        default=None, metadata={"help": "Training examples over all clients (default: from the budget)."}
    )
    test_size: int = field(default=1000, metadata={"help": "Server-side test examples."})
    local_epochs: int = field(default=1, metadata={"help": "Local epochs per round."})
    lr: float = field(default=0.05, metadata={"help": "Client SGD learning rate."})
    momentum: float = field(default=0.9, metadata={"help": "Client SGD momentum."})
    batch_size: int = field(default=16, metadata={"help": "Client batch size."})
    anchor_seed: int | None = field(
        default=None, metadata={"help": "Seed of the anchor mask (default: each run's seed)."}
    )
    server_momentum: float = field(default=0.9, metadata={"help": "FedAvgM momentum."})
    num_cpus: int = field(default=2, metadata={"help": "CPUs Ray may use."})
    output_dir: str | None = field(
        default=None, metadata={"help": f"Report folder (default: docs/results; quick: {QUICK_OUTPUT_DIR})."}
    )

    def __post_init__(self):
        seed, self.anchor_seed = self.anchor_seed, 0 if self.anchor_seed is None else self.anchor_seed
        super().__post_init__()  # the anchor fields (None, "each run's seed", is checked as seed 0)
        self.anchor_seed = seed
        bad = sorted(set(self.servers) - set(SERVER_STRATEGIES)) + sorted(set(self.methods) - set(METHODS))
        if bad:
            raise ValueError(f"unknown server/method {bad}; servers: {SERVER_STRATEGIES}, methods: {METHODS}")
        if self.quick:
            self.alphas, self.seeds, self.rounds, self.num_clients = self.alphas[:1], self.seeds[:1], 3, 4
            self.servers, self.train_size, self.test_size = self.servers[:1], self.train_size or 800, 300
        if self.output_dir is None:
            self.output_dir = str(QUICK_OUTPUT_DIR if self.quick else ROOT / "docs" / "results")


def parse_args(argv=None) -> FLBenchmarkConfig:
    (args,) = build_parser(FLBenchmarkConfig, __doc__, prog="python benchmarks/fl.py").parse_args_into_dataclasses(
        args=argv
    )
    return args


# --------------------------------------------------------------------------------------------------
# Sizing
# --------------------------------------------------------------------------------------------------
def calibrate(batch_size: int) -> dict:
    """Training and evaluation throughput of the CNN on one thread (the simulation runs one per actor)."""
    torch.set_num_threads(1)
    model = build_federated_model("cnn")
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(batch_size, 1, 28, 28), torch.randint(0, 10, (batch_size,))
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < 2.0:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        steps += 1
    train = steps * batch_size / (time.perf_counter() - start)
    start = time.perf_counter()
    with torch.no_grad():
        model(torch.randn(500, 1, 28, 28))
    return {"train_samples_per_s": train, "eval_samples_per_s": 500 / (time.perf_counter() - start)}


def size_training_set(args, num_runs: int, speed: dict) -> int:
    """Largest training set (over all clients) whose estimated cost fits the budget."""
    per_round_overhead = 0.06 * args.num_clients + 0.3  # messaging, actors, aggregation (measured)
    per_run = args.budget_minutes * 60 * 0.85 / num_runs - 25 / num_runs  # Ray start-up
    per_round = per_run / args.rounds - per_round_overhead - args.test_size / speed["eval_samples_per_s"]
    size = per_round * speed["train_samples_per_s"] * args.num_cpus / args.local_epochs
    return int(min(60000, max(1000, size)) // 100 * 100)


def client_sizes(labels: np.ndarray, args, alpha: float, seed: int) -> list[int]:
    pool = subsample(labels, args.train_size, seed)
    return [len(p) for p in dirichlet_partition(labels[pool], args.num_clients, alpha, seed)]


# --------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------
def experiments(args: FLBenchmarkConfig) -> list[ImageTaskArguments]:
    """Seeds outermost, so a run cut short by the budget still covers every configuration."""
    return [
        ImageTaskArguments(
            **args.anchor_kwargs(),
            method=m,
            server=s,
            rounds=args.rounds,
            seed=seed,
            alpha=a,
            train_size=args.train_size,
            test_size=args.test_size,
            local_epochs=args.local_epochs,
            lr=args.lr,
            momentum=args.momentum,
            batch_size=args.batch_size,
            server_momentum=args.server_momentum,
        )
        for seed in args.seeds
        for a in args.alphas
        for s in args.servers
        for m in args.methods
    ]


def write_json(path: Path, data) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def run_all(args: FLBenchmarkConfig, todo: list[ImageTaskArguments], deadline: float, partial: Path) -> list[dict]:
    """Every run in one simulation: its ServerApp calls `run_experiment` per run on the same grid."""
    from flwr.app import Context
    from flwr.serverapp import Grid, ServerApp

    results: list[dict] = []
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        torch.set_num_threads(1)
        for i, settings in enumerate(todo):
            if time.time() > deadline:
                print(f"[fl] budget spent: skipping {len(todo) - i} remaining runs", flush=True)
                break
            try:
                out = run_experiment(grid, IMAGE_TASK, settings)
            except Exception as err:  # keep the other runs; report the failure in the table
                out = {"settings": settings.to_run_config(), "error": repr(err), "accuracy": [], "bytes": []}
            results.append(out)
            write_json(partial, results)
            acc = out["accuracy"][-1] if out["accuracy"] else float("nan")
            print(
                f"[fl] {i + 1}/{len(todo)} {settings.method}/{settings.server} alpha={settings.alpha} "
                f"seed={settings.seed}: final acc {acc:.4f} ({out.get('seconds', 0):.0f}s)",
                flush=True,
            )

    simulate(server_app, build_client_app(IMAGE_TASK), args.num_clients, args.num_cpus, quiet=True)
    return results


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------
def row_command(args: FLBenchmarkConfig, alpha: float, server: str, method: str) -> str:
    parts = [
        "python",
        "benchmarks/fl.py",
        "--alphas",
        str(alpha),
        "--servers",
        server,
        "--methods",
        method,
        "--seeds",
        *map(str, args.seeds),
        "--rounds",
        str(args.rounds),
        "--num-clients",
        str(args.num_clients),
        "--train-size",
        str(args.train_size),
        "--test-size",
        str(args.test_size),
        "--local-epochs",
        str(args.local_epochs),
        "--lr",
        str(args.lr),
        "--momentum",
        str(args.momentum),
        "--batch-size",
        str(args.batch_size),
        "--anchor-ratio",
        str(args.anchor_ratio),
        "--server-momentum",
        str(args.server_momentum),
    ]
    defaults = FLBenchmarkConfig()
    for name in AnchorArguments.anchor_field_names():  # the anchor flags besides the ratio, when not the default
        value = getattr(args, name)
        if name != "anchor_ratio" and value != getattr(defaults, name):
            parts += ["--" + name.replace("_", "-"), *(map(str, value) if isinstance(value, list) else [str(value)])]
    return shlex.join(parts)


def summarize(results: list[dict]) -> dict:
    """(alpha, server, method) -> scores per seed, mean curve, upload bytes per round."""
    table: dict = {}
    for r in results:
        s = r["settings"]
        if not r["accuracy"]:
            continue
        cell = table.setdefault(
            (s["alpha"], s["server"], s["method"]), {"scores": [], "curves": [], "up": [], "full": []}
        )
        cell["scores"].append(float(np.mean(r["accuracy"][-LAST:])))
        cell["curves"].append(r["accuracy"])
        cell["up"] += [h["upload_bytes"] for h in r["bytes"]]
        cell["full"] += [h["upload_bytes_full"] for h in r["bytes"]]
    return table


def plot(table: dict, args, out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    for alpha in args.alphas:
        fig, axes = plt.subplots(1, len(args.servers), figsize=(5 * len(args.servers), 3.6), squeeze=False)
        for ax, server in zip(axes[0], args.servers):
            for method in args.methods:
                cell = table.get((alpha, server, method))
                if not cell:
                    continue
                curves = np.array([c for c in cell["curves"] if len(c) == len(cell["curves"][0])])
                mean, std = curves.mean(0), curves.std(0)
                xs = np.arange(len(mean))
                ax.plot(xs, mean, label=f"{METHOD_NAMES[method]} ({len(curves)} seeds)")
                ax.fill_between(xs, mean - std, mean + std, alpha=0.2)
            ax.set_title(f"server {SERVER_NAMES[server]}, Dirichlet alpha={alpha}")
            ax.set_xlabel("round")
            ax.set_ylabel("test accuracy")
            ax.grid(alpha=0.3)
            ax.legend(loc="lower right")
        fig.tight_layout()
        name = f"federated_alpha{alpha}.png"
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        names.append(name)
    return names


def write_report(args, results: list[dict], meta: dict, out_dir: Path) -> Path:
    table = summarize(results)
    pngs = plot(table, args, out_dir)
    lines = [
        "# Federated TNA-PFN: FedAvg vs FedPFN vs FedPNU (Flower simulation, Fashion-MNIST)",
        "",
        f"Generated by `{meta['command']}` in {meta['minutes']:.1f} minutes on {meta['cpus']} shared CPU cores "
        f"(Flower {meta['flwr']}, torch {torch.__version__}). Raw numbers: `federated.json`.",
        "",
        "Setting: the CNN of the TNA-PFN authors' FL code (conv 32, conv 64, conv 64, fc 64, fc 10); "
        f"{args.num_clients} clients, all sampled every round; Dirichlet label skew; {args.rounds} rounds; "
        f"{args.local_epochs} local epoch(s) of SGD (lr {args.lr}, momentum {args.momentum}, batch {args.batch_size}); "
        f"anchor ratio {args.anchor_ratio} ({args.anchor_granularity} granularity) for FedPFN/FedPNU; FedAvgM with server lr 1.0 and "
        f"momentum {args.server_momentum}. Score: server-side test accuracy averaged over the last {LAST} rounds, "
        "mean ± std over seeds (model init, partition, anchors and batch order all follow the seed).",
        "",
        f"Data sizes (subsampled to fit the budget): {args.train_size} training examples shared by all clients "
        f"(seeded subset of the 60000), {args.test_size} test examples (seeded subset of the 10000). "
        "Examples per client (seed 0): "
        + "; ".join(
            f"alpha {a}: min {min(s)}, median {int(np.median(s))}, max {max(s)}"
            for a, s in meta["client_sizes"].items()
        ),
        "",
        "| alpha | server | method | accuracy (last 5 rounds) | seeds | upload MB / round | vs full upload | command |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for alpha in args.alphas:
        for server in args.servers:
            for method in args.methods:
                cell = table.get((alpha, server, method))
                if not cell:
                    lines.append(f"| {alpha} | {SERVER_NAMES[server]} | {METHOD_NAMES[method]} | not run | 0 | | | |")
                    continue
                sc = np.array(cell["scores"])
                up, full = np.mean(cell["up"]), np.mean(cell["full"])
                lines.append(
                    f"| {alpha} | {SERVER_NAMES[server]} | {METHOD_NAMES[method]} | {sc.mean():.4f} ± {sc.std():.4f} | "
                    f"{len(sc)} | {up / 1e6:.3f} | {up / full:.0%} | `{row_command(args, alpha, server, method)}` |"
                )
    errors = [r for r in results if r.get("error")]
    lines += ["", *[f"![accuracy per round]({name})" for name in pngs], ""]
    lines += [
        "Notes:",
        "- Upload bytes are the serialized npy payloads of the clients' ArrayRecords, summed over the round's "
        "clients; FedPFN/FedPNU clients send only the non-anchored entries (the server scatters the anchors back "
        "from the global model), so about `1 - ratio` of a full upload plus npy headers.",
        "- FedPNU composed with FedAvgM: the server momentum keeps moving entries that are anchored in the "
        "current round (the clients' contribution to them is exactly zero); FedPFN's anchors stay bitwise fixed.",
        "- Runs are seeded but not bitwise reproducible: Flower samples client order at random and Ray runs "
        "clients in parallel, which changes the float summation order of the aggregate.",
        f"- Calibration on this machine: {meta['speed']['train_samples_per_s']:.0f} training samples/s per core; "
        f"runs done: {len(results)} of {meta['planned']} planned; failed: {len(errors)}.",
    ]
    lines += [
        f"  - failed: {e['settings']['method']}/{e['settings']['server']} alpha {e['settings']['alpha']} "
        f"seed {e['settings']['seed']}: {e['error']}"
        for e in errors
    ]
    path = out_dir / "federated.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)
    return path


def main(argv=None) -> Path:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    start = time.time()
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    speed = calibrate(args.batch_size)
    todo_count = len(args.alphas) * len(args.servers) * len(args.methods) * len(args.seeds)
    if args.train_size is None:
        args.train_size = size_training_set(args, todo_count, speed)
    _, labels = load_image_split("train")
    meta = {
        "command": "python benchmarks/fl.py " + shlex.join(argv),
        "cpus": os.cpu_count(),
        "speed": speed,
        "planned": todo_count,
        "client_sizes": {a: client_sizes(labels, args, a, args.seeds[0]) for a in args.alphas},
    }
    print(
        f"[fl] {todo_count} runs, train size {args.train_size}, test size {args.test_size}, "
        f"speed {speed['train_samples_per_s']:.0f} samples/s",
        flush=True,
    )
    partial = output_dir / "federated.json"
    deadline = start + args.budget_minutes * 60
    results = run_all(args, experiments(args), deadline, partial)
    import flwr

    meta.update(minutes=(time.time() - start) / 60, flwr=flwr.__version__)
    write_json(partial, {"meta": meta, "args": {k: str(v) for k, v in vars(args).items()}, "results": results})
    path = write_report(args, results, meta, output_dir)
    print(f"[fl] wrote {path}", flush=True)
    return path


if __name__ == "__main__":
    main()
