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
                ax.set_title(f"{kind.upper()}, {setting} pairs")
                ax.set_xlabel("anchor ratio")
                ax.set_ylabel("accuracy barrier (pp)")
                ax.grid(alpha=0.3)
                ax.legend(fontsize=7)
        fig.tight_layout()
        _save(fig, out_dir / PLOT_NAMES["ratio"])
        made.append("ratio")
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
            ax.set_xlabel(f"MLP {section}")
            ax.set_ylabel(name)
            ax.grid(alpha=0.3)
            ax.legend()
            if section == "width":
                ax.set_xscale("log")
        fig.tight_layout()
        _save(fig, out_dir / PLOT_NAMES[section])
        made.append(section)
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
            ax.set_title(f"{kind.upper()}: K-model uniform soup")
            ax.set_xlabel("K")
            ax.set_ylabel("multi-model barrier (pp)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        _save(fig, out_dir / PLOT_NAMES["kfusion"])
        made.append("kfusion")
    plt.close("all")
    return made


def _save(fig, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)
