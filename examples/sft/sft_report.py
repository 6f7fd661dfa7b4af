"""Aggregation and presentation of the SFT example: mean and standard deviation over seeds (`summarize`), the
markdown table (`markdown_table`, `results_markdown`) and the plot (`plot_results`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SETS = ("anchored", "vanilla")
# summary metric -> (label, format); perplexities and losses are on the test tweets
ROWS = {
    "ingredient_ppl": ("test perplexity, mean ingredient", "{:.2f}"),
    "best_ppl": ("test perplexity, best ingredient (by held-out loss)", "{:.2f}"),
    "uniform_ppl": ("test perplexity, uniform soup", "{:.2f}"),
    "greedy_ppl": ("test perplexity, greedy soup (by held-out loss)", "{:.2f}"),
    "greedy_kept": ("ingredients the greedy soup kept", "{:.2f}"),
    "uniform_gain": ("soup gain: mean ingredient loss - uniform soup loss (nats/token)", "{:.4f}"),
    "barrier": ("loss barrier, absolute (nats/token), mean over pairs", "{:.4f}"),
    "barrier_relative": ("loss barrier, relative to the mean endpoint loss (%)", "{:.3f}"),
    "barrier_max": ("loss barrier, absolute, largest pair", "{:.4f}"),
    "distance_to_base": ("distance to the base, ‖θ − θ_base‖ / ‖θ_base‖", "{:.4f}"),
}


def _seed_metrics(entry: dict) -> dict[str, float]:
    ingredients = entry["ingredients"]
    best = min(ingredients, key=lambda x: x["val_loss"])
    barriers = entry.get("barriers", [])
    mean_loss = float(np.mean([x["test_loss"] for x in ingredients]))
    return {
        "ingredient_ppl": float(np.mean([x["test_ppl"] for x in ingredients])),
        "best_ppl": best["test_ppl"],
        "uniform_ppl": entry["uniform"]["test_ppl"],
        "greedy_ppl": entry["greedy"]["test_ppl"],
        "greedy_kept": float(len(entry["greedy"]["kept"])),
        "uniform_gain": mean_loss - entry["uniform"]["test_loss"],
        "barrier": float(np.mean([b["loss_barrier"] for b in barriers])),
        "barrier_relative": 100 * float(np.mean([b["loss_barrier_relative"] for b in barriers])),
        "barrier_max": float(max(b["loss_barrier"] for b in barriers)),
        "distance_to_base": float(np.mean([x["distance_to_base"] for x in ingredients])),
    }


def summarize(results: dict) -> dict:
    """{set: {metric: {"mean", "std", "values"}}} over seeds (sample standard deviation; 0 for one seed), and
    the anchor checks of the anchored set."""
    out: dict = {}
    for name in SETS:
        per_seed = [_seed_metrics(seed["sets"][name]) for seed in results["seeds"]]
        out[name] = {}
        for metric in ROWS:
            values = [m[metric] for m in per_seed]
            std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
            out[name][metric] = {"mean": float(np.mean(values)), "std": std, "values": values}
    anchored = [seed["sets"]["anchored"] for seed in results["seeds"]]
    ingredients = [i["anchors_intact"] for s in anchored for i in s["ingredients"]]
    soups = [s[m]["anchors_intact"] for s in anchored for m in ("uniform", "greedy")]
    out["anchors"] = {"ingredients_intact": sum(ingredients), "ingredients": len(ingredients),
                      "soups_intact": sum(soups), "soups": len(soups)}
    return out


def _cell(stat: dict, fmt: str) -> str:
    return f"{fmt.format(stat['mean'])} ± {fmt.format(stat['std'])}"


def markdown_table(results: dict) -> str:
    """Anchored vs vanilla, mean ± std over seeds, one row per metric."""
    summary = results["summary"]
    n = len(results["seeds"])
    lines = [f"| mean ± std over {n} seed{'s' if n > 1 else ''} | TNA-PFN (TNASFTTrainer, anchors "
             f"{results['config']['anchor_ratio']}) | vanilla (SFTTrainer) |", "|---|---:|---:|"]
    for metric, (label, fmt) in ROWS.items():
        lines.append(f"| {label} | {_cell(summary['anchored'][metric], fmt)} | {_cell(summary['vanilla'][metric], fmt)} |")
    a = summary["anchors"]
    lines.append(f"| anchors intact (ingredients; soups) | {a['ingredients_intact']}/{a['ingredients']}; "
                 f"{a['soups_intact']}/{a['soups']} | – |")
    lines.append(f"| base (start of every ingredient): test perplexity | {results['base']['test_ppl']:.2f} | |")
    return "\n".join(lines)


def per_seed_table(results: dict) -> str:
    lines = ["| seed | set | ingredients' test perplexity | uniform | greedy (kept) | barriers (nats/token) |",
             "|---:|---|---|---:|---:|---|"]
    for seed in results["seeds"]:
        for name in SETS:
            s = seed["sets"][name]
            ppl = ", ".join(f"{x['test_ppl']:.2f}" for x in s["ingredients"])
            bars = ", ".join(f"{b['loss_barrier']:.4f}" for b in s.get("barriers", []))
            lines.append(f"| {seed['seed']} | {name} | {ppl} | {s['uniform']['test_ppl']:.2f} | "
                         f"{s['greedy']['test_ppl']:.2f} ({len(s['greedy']['kept'])}) | {bars} |")
    return "\n".join(lines)


def results_markdown(results: dict) -> str:
    c, sizes = results["config"], results["sizes"]
    return "\n".join([
        f"# SFT model soups, {results['mode']} mode", "",
        f"Command: `{results['command']}`", "",
        f"Model: {results['model']['description']}, {results['model']['num_parameters']:,} parameters. "
        f"Texts: {sizes['pretrain']} pre-training (quotes, chat), {sizes['finetune']} fine-tuning tweets, "
        f"{sizes['val']} held-out, {sizes['test']} test. {c['num_ingredients']} ingredients per set and seed, "
        f"{c['subset_size']} tweets each, {c['epochs']} epoch(s), batch {c['batch_size']}, learning rate "
        f"log-uniform in [{c['lr_min']}, {c['lr_max']}]. {results['device']}; "
        f"{results['runtime_s']['total']:.0f} s.", "",
        markdown_table(results), "", "Per seed:", "", per_seed_table(results), "",
    ])


def plot_results(results: dict, path: Path) -> Path:
    """Left: test perplexity of the mean/best ingredient and the soups, anchored vs vanilla (bars: mean over seeds,
    whiskers: std). Right: test loss along the ingredient pairs' lines, averaged over pairs and seeds, minus the
    endpoints' chord (the barrier profile)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = results["summary"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    keys = ["ingredient_ppl", "best_ppl", "uniform_ppl", "greedy_ppl"]
    labels = ["mean ingredient", "best ingredient", "uniform soup", "greedy soup"]
    x = np.arange(len(keys))
    for k, (name, color) in enumerate(zip(SETS, ("tab:blue", "tab:orange"))):
        means = [summary[name][m]["mean"] for m in keys]
        stds = [summary[name][m]["std"] for m in keys]
        left.bar(x + (k - 0.5) * 0.38, means, 0.38, yerr=stds, capsize=3, color=color, label=name)
    low = min(summary[n][m]["mean"] - summary[n][m]["std"] for n in SETS for m in keys)
    high = max(summary[n][m]["mean"] + summary[n][m]["std"] for n in SETS for m in keys)
    left.set_ylim(low - 0.15 * (high - low + 1e-9), high + 0.15 * (high - low + 1e-9))
    left.set_xticks(x, labels)
    left.set_ylabel("test perplexity (lower is better)")
    left.set_title(f"mean ± std over {len(results['seeds'])} seeds")
    left.legend()
    for name, color in zip(SETS, ("tab:blue", "tab:orange")):
        gaps = []
        for seed in results["seeds"]:
            for pair in seed["sets"][name].get("barriers", []):
                alphas, losses = pair["curve"]["alphas"], pair["curve"]["losses"]
                gaps.append([v - ((1 - a) * losses[0] + a * losses[-1]) for a, v in zip(alphas, losses)])
        gaps = np.array(gaps)
        mean, std = gaps.mean(0), gaps.std(0)
        right.plot(alphas, mean, marker="o", color=color, label=f"{name} ({len(gaps)} pairs)")
        right.fill_between(alphas, mean - std, mean + std, color=color, alpha=0.2)
    right.axhline(0, color="gray", linewidth=0.8)
    right.set_xlabel("alpha (0 = ingredient A, 1 = ingredient B)")
    right.set_ylabel("test loss - endpoints' chord (nats/token)")
    right.set_title("barrier profile along ingredient pairs (mean ± std)")
    right.legend()
    fig.suptitle(f"SFT soups, {results['mode']} mode: {results['model']['description']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
