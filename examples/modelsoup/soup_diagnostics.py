"""Post-hoc diagnostics of a finished `run_modelsoup.py` run: why did the soups do what they did?

    python examples/modelsoup/soup_diagnostics.py examples/modelsoup/runs/full [--subset 1 5 6]

For each set (anchored, vanilla), from the run's checkpoints and splits (no training):
- distance of each ingredient from the base (relative L2 over all weights) and between ingredients;
- every ingredient pair's midpoint (`hf_tna.merge.ops.lmc_curve` with 3 points, `lmc_barrier`) on held-out data:
  the midpoint's loss and accuracy minus the mean of the two endpoints' (accuracy gap > 0: averaging the two
  weights beats the mean of the two models), and how many pairs have an accuracy barrier;
- held-out and test accuracy of the uniform soup of `--subset` (ingredient indices), e.g. the ingredients
  of one kind, to separate "averaging hurts" from "averaging mixes in worse models".
Writes `diagnostics.json` next to `results.json` and prints a markdown summary.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1])]

import numpy as np  # noqa: E402
import torch  # noqa: E402


def relative_distance(a: dict, b: dict) -> float:
    num = sum(float((a[k].double() - b[k].double()).pow(2).sum()) for k in a)
    den = sum(float(b[k].double().pow(2).sum()) for k in b)
    return (num / den) ** 0.5


def run_diagnostics(work: Path, subset: list[int] | None = None, eval_backend: str = "auto") -> dict:
    from soup_data import load_splits
    from soup_eval import build_evaluator, read_state_dict

    from hf_tna.merge.ops import lmc_barrier, lmc_curve, uniform_soup

    torch.set_num_threads(1)
    results = json.loads((work / "results.json").read_text())
    splits = load_splits(work / "splits.npz")
    base_dir = work / "base"
    evaluators = {
        s: build_evaluator(base_dir, *splits[s], backend=eval_backend, device="cpu") for s in ("val", "test")
    }
    base = read_state_dict(base_dir)
    out = {"subset": subset, "sets": {}}
    for name, entry in results["sets"].items():
        sds = [read_state_dict(ing["folder"]) for ing in entry["ingredients"]]
        k = len(sds)
        to_base = [relative_distance(sd, base) for sd in sds]
        pairs = []
        for i, j in itertools.combinations(range(k), 2):
            curve = lmc_curve(sds[i], sds[j], evaluators["val"], num_points=3)
            barrier = lmc_barrier(curve)
            losses, accs = curve["losses"], curve["accuracies"]
            pairs.append(
                {
                    "pair": [i, j],
                    "distance": relative_distance(sds[i], sds[j]),
                    "loss_barrier": barrier["loss_barrier"],
                    "accuracy_barrier": barrier["accuracy_barrier"],
                    "midpoint_loss_gap": losses[1] - (losses[0] + losses[2]) / 2,
                    "midpoint_acc_gap": accs[1] - (accs[0] + accs[2]) / 2,
                    "midpoint_acc": accs[1],
                }
            )
        row = {
            "distance_to_base": to_base,
            "pairs": pairs,
            "mean_pair_distance": float(np.mean([p["distance"] for p in pairs])),
            "mean_midpoint_loss_gap": float(np.mean([p["midpoint_loss_gap"] for p in pairs])),
            "mean_midpoint_acc_gap": float(np.mean([p["midpoint_acc_gap"] for p in pairs])),
            "pairs_with_accuracy_barrier": sum(p["accuracy_barrier"] > 0 for p in pairs),
            "max_accuracy_barrier": float(np.max([p["accuracy_barrier"] for p in pairs])),
        }
        if subset:
            soup = uniform_soup([sds[i] for i in subset])
            row["subset_soup"] = {f"{s}_acc": float(ev(soup)[1]) for s, ev in evaluators.items()}
            row["subset_best"] = {
                f"{s}_acc": max(entry["ingredients"][i][f"{s}_acc"] for i in subset) for s in ("val", "test")
            }
        out["sets"][name] = row
    (work / "diagnostics.json").write_text(json.dumps(out, indent=2, sort_keys=True))
    return out


def summary(diag: dict) -> str:
    lines = [
        "| set | distance to base (mean, relative L2) | pairwise distance (mean) | midpoint − endpoint mean: "
        "loss | accuracy (points) | pairs with an accuracy barrier (max, points) |"
        + (" subset soup held-out / test | best of subset held-out / test |" if diag["subset"] else ""),
        "|---|---:|---:|---:|---:|---:|" + ("---:|---:|" if diag["subset"] else ""),
    ]
    for name, d in diag["sets"].items():
        n = len(d["pairs"])
        line = (
            f"| {name} | {np.mean(d['distance_to_base']):.4f} | {d['mean_pair_distance']:.4f} | "
            f"{d['mean_midpoint_loss_gap']:+.4f} | {100 * d['mean_midpoint_acc_gap']:+.2f} | "
            f"{d['pairs_with_accuracy_barrier']}/{n} ({100 * d['max_accuracy_barrier']:.2f}) |"
        )
        if diag["subset"]:
            s, b = d["subset_soup"], d["subset_best"]
            line += (
                f" {100 * s['val_acc']:.2f} / {100 * s['test_acc']:.2f} | "
                f"{100 * b['val_acc']:.2f} / {100 * b['test_acc']:.2f} |"
            )
        lines.append(line)
    return "\n".join(lines)


@dataclass
class DiagnosticsConfig:
    """Settings of soup_diagnostics.py besides the work dir (its one positional argument)."""

    subset: list[int] | None = field(default=None, metadata={"help": "Ingredient indices of a subset soup."})
    eval_backend: str = field(
        default="auto", metadata={"help": "As run_modelsoup.py's --eval_backend.", "choices": ["auto", "hf", "torch"]}
    )


def build_parser():
    from transformers import HfArgumentParser

    parser = HfArgumentParser(
        DiagnosticsConfig, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("work_dir", type=Path, help="a finished run_modelsoup.py work dir")
    return parser


def main(argv=None):
    cfg, positional = build_parser().parse_args_into_dataclasses(args=argv)
    diag = run_diagnostics(positional.work_dir, cfg.subset, cfg.eval_backend)
    print(summary(diag))
    return diag


if __name__ == "__main__":
    main()
