"""The PNGs of the LMC report: barriers against anchor ratio, MLP width and depth, and K (matplotlib, Agg)."""

from __future__ import annotations

import os
from pathlib import Path

from .config import MODELS
from .report import PLOT_NAMES, arm_label
from .train import Arm


def make_plots(agg: list[dict], out_dir: Path) -> list[str]:
    """Write the PNGs; returns which plot keys were written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    main = [e for e in agg if e["section"] == "main"]

    def series(es, xkey):
        xs = [e[xkey] for e in es]
        return xs, [100 * e["acc_barrier"]["mean"] for e in es], [100 * e["acc_barrier"]["std"] for e in es]

    if main:
        kinds = [k for k in MODELS if any(e["model"] == k for e in main)]
        fig, axes = plt.subplots(2, len(kinds), figsize=(4.2 * len(kinds), 6.5), squeeze=False)
        for col, kind in enumerate(kinds):
            for row, setting in enumerate(("order", "disjoint")):
                ax = axes[row][col]
                es = [e for e in main if e["model"] == kind and e["setting"] == setting]
                base = [e for e in es if e["ratio"] == 0.0]
                for variant, gran, style in (
                    ("tna", "element", "o-"),
                    ("tna", "neuron", "s-"),
                    ("prune", "element", "x--"),
                ):
                    line = base + [
                        e for e in es if e["ratio"] > 0 and e["variant"] == variant and e["granularity"] == gran
                    ]
                    if len(line) > 1:
                        ax.errorbar(
                            *series(line, "ratio"),
                            fmt=style,
                            capsize=3,
                            label=Arm(variant, gran, 1.0).label.rsplit(" ", 1)[0],
                        )
                _label(ax, "anchor ratio", "accuracy barrier (pp)", title=f"{kind.upper()}, {setting} pairs")
        made.append(_save(fig, out_dir, "ratio"))
    for section in ("width", "depth"):
        es = [e for e in agg if e["section"] == section]
        if not es:
            continue
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
        for ratio in sorted({e["ratio"] for e in es}):
            line = [e for e in es if e["ratio"] == ratio]
            label = "ratio 0" if ratio == 0 else f"anchors {ratio:g}"
            axes[0].errorbar(*series(line, section), fmt="o-", capsize=3, label=label)
            axes[1].errorbar([e[section] for e in line], [e["loss_barrier"]["mean"] for e in line],
                             [e["loss_barrier"]["std"] for e in line], fmt="o-", capsize=3, label=label)  # fmt: skip
        for ax, name in zip(axes, ("accuracy barrier (pp)", "loss barrier (nats)")):
            _label(ax, f"MLP {section}", name, fontsize=None)
            if section == "width":
                ax.set_xscale("log")
        made.append(_save(fig, out_dir, section))
    kf = [e for e in main if "kfusion" in e]
    if kf:
        kinds = [k for k in MODELS if any(e["model"] == k for e in kf)]
        fig, axes = plt.subplots(1, len(kinds), figsize=(4.5 * len(kinds), 3.6), squeeze=False)
        for ax, kind in zip(axes[0], kinds):
            for e in (e for e in kf if e["model"] == kind):
                ks = sorted(e["kfusion"], key=int)
                ax.errorbar([int(k) for k in ks], [100 * e["kfusion"][k]["barrier"]["mean"] for k in ks],
                            [100 * e["kfusion"][k]["barrier"]["std"] for k in ks], fmt="o-", capsize=3,
                            label=arm_label(e))  # fmt: skip
            _label(ax, "K", "multi-model barrier (pp)", title=f"{kind.upper()}: K-model uniform soup")
        made.append(_save(fig, out_dir, "kfusion"))
    plt.close("all")
    return made


def _label(ax, xlabel: str, ylabel: str, title: str | None = None, fontsize: int | None = 7) -> None:
    """Axis labels, an optional title, a light grid and the legend: the look of every panel."""
    if title is not None:
        ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=fontsize)


def _save(fig, out_dir: Path, key: str) -> str:
    """Lay out `fig` and write it atomically as the PNG of plot `key`; returns `key`."""
    fig.tight_layout()
    path = out_dir / PLOT_NAMES[key]
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)
    return key
