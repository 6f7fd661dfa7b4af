"""Table (markdown) and per-round plot (PNG) of the ColD fusion example's results.json.

    python examples/coldfuse/report.py outputs/coldfuse/results.json [plot.png]   # prints the tables
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

MODELS = ("pretrained", "vanilla", "tna")
NAMES = {"pretrained": "pretrained MiniLM", "vanilla": "vanilla ColD (ratio 0)", "tna": "TNA ColD (anchors)"}


def _ms(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} ± {100 * sd:.1f}"


def results_table(results: dict) -> str:
    s = results["settings"]
    tasks = [*s["seen_tasks"], *s["held_out_tasks"]]
    lines = [f"Command: `{s['command']}`", "",
             f"Rounds {s['rounds']}, seeds {s['seeds']}, anchor ratio {s['anchor_ratio']} (vanilla: 0), "
             f"{s['steps']} steps x batch {s['batch_size']} per contribution, max length {s['max_length']}. "
             f"Evaluation subsamples per task: {s['evaluation_sizes']['n_train']} train / "
             f"{s['evaluation_sizes']['n_test']} test rows, fine-tuning {s['evaluation_sizes']['finetune_steps']} "
             f"steps. Accuracy in percent, mean ± std over seeds.", ""]
    for metric, title in (("finetune_accuracy", "Fine-tuned"), ("probe_accuracy", "Linear probe")):
        lines += [f"**{title}** (after {s['rounds']} rounds)", "",
                  "| task | " + " | ".join(NAMES[m] for m in MODELS) + " |", "|---|" + "---|" * len(MODELS)]
        for task in [*tasks, "mean seen", "mean held-out"]:
            cells = []
            for m in MODELS:
                if task.startswith("mean"):
                    group = s["seen_tasks"] if task == "mean seen" else s["held_out_tasks"]
                    vals = [statistics.mean(r[metric] for r in results["final"] if r["model"] == m and
                                            r["seed"] == seed and r["task"] in group) for seed in s["seeds"]]
                else:
                    vals = [r[metric] for r in results["final"] if r["model"] == m and r["task"] == task]
                cells.append(_ms(vals))
            label = task if task.startswith("mean") else (task + ("" if task in s["seen_tasks"] else " (held out)"))
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["**Linear probe per round** (mean over seen / held-out tasks; round 0 is the pretrained model)", "",
              "| round | vanilla seen | TNA seen | vanilla held-out | TNA held-out |", "|---|---|---|---|---|"]
    for r in range(s["rounds"] + 1):
        cells = []
        for seen in (True, False):
            for v in ("vanilla", "tna"):
                vals = [statistics.mean(x["probe_accuracy"] for x in results["per_round"] if x["variant"] == v and
                                        x["seed"] == seed and x["round"] == r and x["seen"] == seen)
                        for seed in s["seeds"]]
                cells.append(_ms(vals))
        lines.append(f"| {r} | {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} |")
    lines += ["", "**Contributors' own test accuracy per round** (their fine-tuned model with its head)", "",
              "| round | task | vanilla | TNA |", "|---|---|---|---|"]
    for r in range(s["rounds"]):
        for task in s["seen_tasks"]:
            cells = [_ms([c["eval_accuracy"] for c in results["contributions"]
                          if c["variant"] == v and c["round"] == r and c["task"] == task]) for v in ("vanilla", "tna")]
            lines.append(f"| {r} | {task} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def plot_rounds(results: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = results["settings"]
    rounds = list(range(s["rounds"] + 1))
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    panels = [("probe, seen tasks", "per_round", True), ("probe, held-out task", "per_round", False),
              ("contributors' own accuracy", "contributions", None)]
    for ax, (title, key, seen) in zip(axes, panels):
        for v, color in (("vanilla", "tab:orange"), ("tna", "tab:blue")):
            means, sds, xs = [], [], []
            for r in rounds if key == "per_round" else rounds[:-1]:
                vals = []
                for seed in s["seeds"]:
                    if key == "per_round":
                        rows = [x["probe_accuracy"] for x in results["per_round"]
                                if x["variant"] == v and x["seed"] == seed and x["round"] == r and x["seen"] == seen]
                    else:
                        rows = [c["eval_accuracy"] for c in results["contributions"]
                                if c["variant"] == v and c["seed"] == seed and c["round"] == r]
                    if rows:
                        vals.append(statistics.mean(rows))
                if vals:
                    xs.append(r)
                    means.append(100 * statistics.mean(vals))
                    sds.append(100 * (statistics.stdev(vals) if len(vals) > 1 else 0.0))
            ax.errorbar(xs, means, yerr=sds, marker="o", capsize=3, color=color, label=NAMES[v])
        ax.set_title(title)
        ax.set_xlabel("round (base of round r)" if key == "per_round" else "round (contributions to round r)")
        ax.set_ylabel("accuracy (%)")
        ax.set_xticks(rounds if key == "per_round" else rounds[:-1])
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"ColD fusion of all-MiniLM-L6-v2, {len(s['seeds'])} seed(s): mean ± std over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    # python examples/coldfuse/report.py RESULTS_JSON [PLOT_PNG]: print the tables (and re-draw the plot)
    data = json.loads(Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/coldfuse/results.json").read_text())
    if len(sys.argv) > 2:
        plot_rounds(data, sys.argv[2])
    print(results_table(data))
