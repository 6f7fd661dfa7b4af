"""Tables (markdown) and plot (PNG) of a model-soup run's `results.json`."""

from __future__ import annotations

from pathlib import Path

SETS = ("anchored", "vanilla")
SET_TITLES = {"anchored": "TNA-PFN (anchors 0.4)", "vanilla": "vanilla Trainer"}
SPLITS = (("val", "held-out"), ("test", "test"))


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def describe_hparams(hp: dict) -> str:
    return (
        f"lr {hp['learning_rate']:.1e}, wd {hp['weight_decay']:.1e}, ls {hp['label_smoothing']:g}, "
        f"{hp['augment']}, seed {hp['seed']}"
    )


def table_rows(results: dict) -> list[tuple[str, str, list[str]]]:
    """(row name, hyperparameters, [anchored val, anchored test, vanilla val, vanilla test]) rows."""
    sets = results["sets"]
    rows = []
    first = sets[SETS[0]]["ingredients"]
    for i, ing in enumerate(first):
        cells = [_pct(sets[s]["ingredients"][i][f"{sp}_acc"]) for s in SETS for sp, _ in SPLITS]
        rows.append((f"ingredient {i}", describe_hparams(ing["hyperparameters"]), cells))
    rows.append(("mean of ingredients", "", [_pct(sets[s]["mean"][f"{sp}_acc"]) for s in SETS for sp, _ in SPLITS]))
    best = [f"{_pct(sets[s]['best'][f'{sp}_acc'])} (#{sets[s]['best']['index']})" for s in SETS for sp, _ in SPLITS]
    rows.append(("best ingredient (by held-out)", "", best))
    rows.append(
        (
            "uniform soup",
            f"all {len(first)}",
            [_pct(sets[s]["uniform"][f"{sp}_acc"]) for s in SETS for sp, _ in SPLITS],
        )
    )
    kept = "; ".join(f"{s}: #{','.join(str(k) for k in sets[s]['greedy']['kept'])}" for s in SETS)
    rows.append(
        ("greedy soup", f"kept {kept}", [_pct(sets[s]["greedy"][f"{sp}_acc"]) for s in SETS for sp, _ in SPLITS])
    )
    base = results["base"]
    rows.append(("base (start of every ingredient)", "", [_pct(base[f"{sp}_acc"]) for _ in SETS for sp, _ in SPLITS]))
    return rows


def markdown_table(results: dict) -> str:
    head = ["model", "hyperparameters"] + [f"{s} {label}" for s in SETS for _, label in SPLITS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * 4]
    for name, hp, cells in table_rows(results):
        lines.append("| " + " | ".join([name, hp, *cells]) + " |")
    return "\n".join(lines)


def summary_table(results: dict) -> str:
    """Per set: soup gains over the ingredients and the anchor checks."""
    lines = [
        "| set | best ingredient test | uniform soup test | greedy soup test | uniform − mean ingredient (test) "
        "| greedy − best ingredient (test) | anchors intact: ingredients / uniform soup |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for s in SETS:
        d = results["sets"][s]
        ing = d["ingredients"]
        intact = [x["anchors"]["fraction_intact"] for x in ing]
        if s == "anchored":
            checks = (
                f"{sum(x['anchors']['intact'] for x in ing)}/{len(ing)} / "
                f"{'bitwise' if d['uniform']['anchors']['intact'] else 'NO'}"
            )
        else:
            checks = (
                f"control: {100 * min(intact):.1f}–{100 * max(intact):.1f}% of anchor positions unchanged; "
                f"soup {100 * d['uniform']['anchors']['fraction_intact']:.1f}%"
            )
        lines.append(
            f"| {SET_TITLES[s]} | {_pct(d['best']['test_acc'])} | {_pct(d['uniform']['test_acc'])} | "
            f"{_pct(d['greedy']['test_acc'])} | {100 * (d['uniform']['test_acc'] - d['mean']['test_acc']):+.2f} | "
            f"{100 * (d['greedy']['test_acc'] - d['best']['test_acc']):+.2f} | {checks} |"
        )
    return "\n".join(lines)


def results_markdown(results: dict) -> str:
    sizes = ", ".join(f"{k} {v}" for k, v in results["sizes"].items())
    m = results["model"]
    return "\n".join(
        [
            f"# Model soups with and without TNA-PFN anchors ({results['mode']} mode)",
            "",
            f"Command: `{results['command']}`",
            "",
            f"Data: {results['config']['data']} ({sizes}). Model: {m['description']} ({m['num_parameters']:,} parameters). "
            f"{len(results['sets']['anchored']['ingredients'])} ingredients per set, same hyperparameters in both sets. "
            f"Runtime {results['runtime_s']['total']:.0f} s on {results['device']}.",
            "",
            "Accuracy (%):",
            "",
            markdown_table(results),
            "",
            summary_table(results),
            "",
        ]
    )


def plot_results(results: dict, path: str | Path) -> Path | None:
    """Grouped bars (anchored vs vanilla) of held-out and test accuracy; None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    sets = results["sets"]
    k = len(sets["anchored"]["ingredients"])
    labels = [f"ing {i}" for i in range(k)] + ["best ing", "uniform\nsoup", "greedy\nsoup"]
    colors = {"anchored": "tab:blue", "vanilla": "tab:orange"}

    def values(s, split):
        d = sets[s]
        return [x[f"{split}_acc"] for x in d["ingredients"]] + [
            d[r][f"{split}_acc"] for r in ("best", "uniform", "greedy")
        ]

    lo = min(min(values(s, sp) + [results["base"][f"{sp}_acc"]]) for s in SETS for sp, _ in SPLITS)
    hi = max(max(values(s, sp)) for s in SETS for sp, _ in SPLITS)
    fig, axes = plt.subplots(1, 2, figsize=(max(9, 0.6 * len(labels) * 2), 4.4), sharey=True)
    for ax, (split, title) in zip(axes, SPLITS):
        for j, s in enumerate(SETS):
            xs = [i + (j - 0.5) * 0.38 for i in range(len(labels))]
            ax.bar(xs, [100 * v for v in values(s, split)], width=0.38, color=colors[s], label=SET_TITLES[s])
        ax.axhline(100 * results["base"][f"{split}_acc"], color="gray", linestyle="--", linewidth=1, label="base")
        ax.axvline(k - 0.5, color="black", linewidth=0.6)
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_title(f"{title} accuracy")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("accuracy (%)")
    axes[0].set_ylim(max(0.0, 100 * lo - 1.5), min(100.0, 100 * hi + 1.0))
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="upper right", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(f"Model soups, {results['config']['data']} ({results['mode']} mode)", x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
