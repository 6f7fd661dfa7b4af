"""Linear mode connectivity benchmark for TNA-PFN (Li et al., arXiv 2402.01342) at small scale.

Pairs of models start from one initialisation and are trained on different data orders ("order") or on
disjoint halves of the training subset ("disjoint"), with a seeded fraction of their weights anchored at
the initial values (`hf_tna.optimizer.AnchoredOptimizer`). For each pair it measures loss and accuracy
barriers along the linear path (`hf_tna.merge.ops.lmc_curve` / `lmc_barrier`), the accuracy cost of
anchoring each model alone, K-model uniform-soup barriers, MLP width / depth / learning-rate sweeps, and a
pruning-at-init control (same mask, anchored values set to 0).

    python benchmarks/lmc.py                 # full run (~30 min on an idle 2-core box), writes docs/results
    python benchmarks/lmc.py --quick         # a couple of minutes, writes /tmp/hf_tna_lmc_quick

Seeds are the outer loop: when the projected time of the next seed passes --budget-minutes the run stops
and every table reports the seeds it completed. Prints a JSON summary on stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hf_tna.anchors import AnchorSpec, anchor_mask, build_layouts
from hf_tna.example_data import load_fashion_mnist
from hf_tna.merge.ops import (
    lmc_barrier,
    lmc_curve,
    multi_model_barrier,
    uniform_soup,
)
from hf_tna.optimizer import AnchoredOptimizer

REPORT_NAME = "lmc.md"
JSON_NAME = "lmc.json"
PLOT_NAMES = {
    "ratio": "lmc_ratio.png",
    "width": "lmc_width.png",
    "depth": "lmc_depth.png",
    "kfusion": "lmc_kfusion.png",
}
ANALYSIS_START, ANALYSIS_END = "<!-- analysis:start -->", "<!-- analysis:end -->"
SECTIONS = ("main", "width", "depth", "lr")
MODELS = ("mlp", "cnn", "vit")
QUICK_OUT_DIR = Path(tempfile.gettempdir()) / "hf_tna_lmc_quick"


@dataclass
class LMCConfig:
    """Everything the benchmark uses; recorded in the report. Lists are comma-separated on the command line."""

    data: str = field(default="fashion-mnist", metadata={"help": "fashion-mnist or synthetic (tests)"})
    train_size: int = field(default=10000, metadata={"help": "training subsample (disjoint halves split it)"})
    test_size: int = field(default=2000, metadata={"help": "fixed test subsample for every evaluation"})
    epochs: int = field(default=2, metadata={"help": "epochs over each model's training data"})
    batch_size: int = field(default=64, metadata={"help": "mini-batch size"})
    seeds: int = field(default=5, metadata={"help": "seeds (inits, masks and data orders) to run; 0 with --merge"})
    first_seed: int = field(default=0, metadata={"help": "index of the first seed (to add seeds in another run)"})
    grid: int = field(default=25, metadata={"help": "points on the interpolation path"})
    models: tuple = field(default=MODELS, metadata={"help": "models of the main section"})
    sections: tuple = field(default=SECTIONS, metadata={"help": "main, width, depth, lr"})
    ratios: tuple = field(default=(0.0, 0.2, 0.4, 0.6), metadata={"help": "anchor ratios (MLP, CNN)"})
    vit_ratios: tuple = field(default=(0.0, 0.4), metadata={"help": "anchor ratios (ViT)"})
    granularities: tuple = field(default=("element", "neuron"), metadata={"help": "anchor granularities"})
    prune_ratios: tuple = field(default=(0.2, 0.4, 0.6), metadata={"help": "pruning-at-init control ratios"})
    ks: tuple = field(default=(2, 4, 8), metadata={"help": "K of the K-model uniform soups (MLP, CNN)"})
    k_ratio: float = field(default=0.4, metadata={"help": "anchor / prune ratio of the K-model arms"})
    width: int = field(default=200, metadata={"help": "MLP hidden width in the main section"})
    depth: int = field(default=2, metadata={"help": "MLP hidden layers in the main section"})
    widths: tuple = field(default=(5, 20, 80, 200, 800, 1600), metadata={"help": "width sweep (depth 2)"})
    depths: tuple = field(default=(1, 2, 4, 8), metadata={"help": "depth sweep (width 200)"})
    sweep_ratio: float = field(default=0.4, metadata={"help": "anchor ratio compared with 0 in the sweeps"})
    lr_mlp: float = field(default=0.05, metadata={"help": "SGD learning rate, MLP"})
    lr_cnn: float = field(default=0.05, metadata={"help": "SGD learning rate, CNN"})
    lr_vit: float = field(default=1e-3, metadata={"help": "Adam learning rate, ViT"})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum"})
    lr_sweep: tuple = field(default=(0.01, 0.2), metadata={"help": "extra MLP learning rates (lr section)"})
    budget_minutes: float = field(default=40.0, metadata={"help": "stop starting new seeds past this"})
    threads: int = field(default=1, metadata={"help": "torch.set_num_threads"})

    def __post_init__(self):
        if self.data not in ("fashion-mnist", "synthetic"):
            raise ValueError(f"--data must be fashion-mnist or synthetic, got {self.data!r}")
        if self.seeds < 0 or self.first_seed < 0:
            raise ValueError(f"--seeds and --first-seed must be >= 0, got {self.seeds} and {self.first_seed}")
        for name in ("train_size", "test_size", "epochs", "batch_size", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.grid < 2:
            raise ValueError(f"--grid must be >= 2, got {self.grid}")
        if self.train_size < 2 * self.batch_size:
            raise ValueError(f"--train-size {self.train_size} must hold two batches of {self.batch_size}")
        bad = set(self.models) - set(MODELS) or set(self.sections) - set(SECTIONS)
        if bad:
            raise ValueError(f"unknown model/section {sorted(bad)}; models: {MODELS}, sections: {SECTIONS}")
        if 0.0 not in self.ratios or 0.0 not in self.vit_ratios:
            raise ValueError("--ratios and --vit-ratios must include 0 (the baseline every delta is taken against)")


QUICK = dict(
    train_size=2000,
    test_size=500,
    epochs=1,
    seeds=2,
    grid=11,
    ratios=(0.0, 0.4),
    vit_ratios=(0.0, 0.4),
    prune_ratios=(0.4,),
    ks=(2, 4),
    widths=(20, 200, 800),
    depths=(1, 2, 4),
    lr_sweep=(0.2,),
    budget_minutes=5.0,
)


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------
def load_data(cfg: LMCConfig, data_seed: int = 0) -> dict[str, torch.Tensor]:
    """Fixed train / test subsamples (same for every seed), images (N, 1, 28, 28) standardised."""
    if cfg.data == "synthetic":
        gen = torch.Generator().manual_seed(data_seed)
        protos = torch.randn(10, 1, 28, 28, generator=gen)

        def draw(n):
            y = torch.randint(0, 10, (n,), generator=gen)
            return protos[y] + 1.5 * torch.randn(n, 1, 28, 28, generator=gen), y

        x_tr, y_tr = draw(cfg.train_size)
        x_te, y_te = draw(cfg.test_size)
        return {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te}
    splits = load_fashion_mnist()
    arrays = {"x_train": splits["train"][0], "y_train": splits["train"][1],
              "x_test": splits["test"][0], "y_test": splits["test"][1]}
    rng = np.random.default_rng(data_seed)
    tr = rng.permutation(len(arrays["y_train"]))[: cfg.train_size]
    te = rng.permutation(len(arrays["y_test"]))[: cfg.test_size]

    def images(a, idx):
        return torch.from_numpy(a[idx].astype(np.float32) / 255.0).unsqueeze(1)

    x_tr, x_te = images(arrays["x_train"], tr), images(arrays["x_test"], te)
    mean, std = x_tr.mean(), x_tr.std()
    return {
        "x_train": (x_tr - mean) / std,
        "y_train": torch.from_numpy(arrays["y_train"][tr].astype(np.int64)),
        "x_test": (x_te - mean) / std,
        "y_test": torch.from_numpy(arrays["y_test"][te].astype(np.int64)),
    }


# --------------------------------------------------------------------------------------------------
# Models, training, evaluation
# --------------------------------------------------------------------------------------------------
def build_model(kind: str, width: int = 200, depth: int = 2) -> nn.Module:
    """MLP (784 -> width x depth -> 10), small CNN (two stride-2 convs + two linears), or a tiny ViT."""
    if kind == "mlp":
        layers, fan_in = [nn.Flatten()], 28 * 28
        for _ in range(depth):
            layers += [nn.Linear(fan_in, width), nn.ReLU()]
            fan_in = width
        return nn.Sequential(*layers, nn.Linear(fan_in, 10))
    if kind == "cnn":
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10),
        )  # fmt: skip
    if kind == "vit":
        from transformers import ViTConfig, ViTForImageClassification

        config = ViTConfig(
            image_size=28, patch_size=7, num_channels=1, hidden_size=64, num_hidden_layers=2,
            num_attention_heads=4, intermediate_size=128, num_labels=10,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        )  # fmt: skip
        return ViTForImageClassification(config)
    raise ValueError(f"unknown model kind {kind!r}; use one of {MODELS}")


def logits_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if getattr(model, "config", None) is not None:  # transformers model
        return model(pixel_values=x).logits
    return model(x)


def prune_at_init(model: nn.Module, spec: AnchorSpec) -> None:
    """The control of the paper: the anchored entries are set to 0 (and then kept there by the optimizer)."""
    with torch.no_grad():
        for layout, param in build_layouts(model, spec):
            param.masked_fill_(anchor_mask(layout, spec, param.device), 0.0)


@dataclass(frozen=True)
class Arm:
    """One training recipe: anchored ("tna") or pruned ("prune") with a granularity and ratio."""

    variant: str = "tna"
    granularity: str = "element"
    ratio: float = 0.0

    @property
    def label(self) -> str:
        if self.ratio == 0.0:
            return "baseline (ratio 0)"
        return f"{'anchors' if self.variant == 'tna' else 'prune@init'} {self.granularity} {self.ratio:g}"


def train_model(model, init, arm: Arm, seed: int, x, y, order_seed: int, cfg: LMCConfig, opt_name: str, lr: float):
    """Train `model` from `init` under `arm`; returns (state dict copy, largest anchor drift)."""
    model.load_state_dict(init)
    spec = AnchorSpec(ratio=arm.ratio, seed=seed, granularity=arm.granularity)
    if arm.variant == "prune" and arm.ratio > 0:
        prune_at_init(model, spec)
    params = [p for p in model.parameters() if p.requires_grad]
    if opt_name == "sgd":
        inner = torch.optim.SGD(params, lr=lr, momentum=cfg.momentum)
    else:
        inner = torch.optim.Adam(params, lr=lr)
    opt = AnchoredOptimizer(inner, model, spec)
    gen = torch.Generator().manual_seed(order_seed)
    model.train()
    for _ in range(cfg.epochs):
        for idx in torch.randperm(len(y), generator=gen).split(cfg.batch_size):
            loss = F.cross_entropy(logits_of(model, x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.mask_gradients()  # before any clipping (none here), as the API asks
            opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, opt.anchor_drift()


@torch.no_grad()
def evaluate(model, state, x, y, chunk: int = 500) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of `state` loaded into `model` on (x, y)."""
    model.load_state_dict(state)
    model.eval()
    loss, correct = 0.0, 0
    for xs, ys in zip(x.split(chunk), y.split(chunk)):
        out = logits_of(model, xs)
        loss += float(F.cross_entropy(out, ys, reduction="sum"))
        correct += int((out.argmax(1) == ys).sum())
    return loss / len(y), correct / len(y)


# --------------------------------------------------------------------------------------------------
# Experiments
# --------------------------------------------------------------------------------------------------
def main_arms(cfg: LMCConfig, kind: str) -> list[Arm]:
    ratios = cfg.vit_ratios if kind == "vit" else cfg.ratios
    arms = [Arm()]
    arms += [Arm("tna", g, r) for g in cfg.granularities for r in ratios if r > 0]
    if kind != "vit":
        arms += [Arm("prune", "element", r) for r in cfg.prune_ratios if r > 0]
    return arms


def k_arms(cfg: LMCConfig) -> set[Arm]:
    r = cfg.k_ratio
    return {Arm(), *(Arm("tna", g, r) for g in cfg.granularities), Arm("prune", "element", r)}


def run_pairs(ctx, kind, arm, seed, section, lr, width=200, depth=2, settings=("order", "disjoint"), k_max=2):
    """Train one arm's models for one seed and return its result rows (one per setting)."""
    cfg, data = ctx["cfg"], ctx["data"]
    torch.manual_seed(seed)
    model = build_model(kind, width, depth)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    opt_name = "adam" if kind == "vit" else "sgd"
    x, y = data["x_train"], data["y_train"]
    half = len(y) // 2

    def evaluate_fn(state):
        return evaluate(model, state, data["x_test"], data["y_test"])

    base = dict(section=section, model=kind, width=width if kind == "mlp" else None,
                depth=depth if kind == "mlp" else None, lr=lr, seed=seed, **dataclasses.asdict(arm))  # fmt: skip
    rows = []
    for setting in settings:
        if setting == "order":
            n = max(2, k_max)
            shards = [(x, y)] * n
        else:
            n = 2
            shards = [(x[:half], y[:half]), (x[half:], y[half:])]
        states, drift = [], 0.0
        for i, (xs, ys) in enumerate(shards):
            state, d = train_model(
                model, init, arm, seed, xs, ys, 1000 * seed + 100 * (setting != "order") + i, cfg, opt_name, lr
            )
            states.append(state)
            drift = max(drift, d)
        ctx["sanity"]["max_anchor_drift"] = max(ctx["sanity"]["max_anchor_drift"], drift)
        if not ctx["sanity"].get("self_barrier"):
            ctx["sanity"]["self_barrier"] = lmc_barrier(lmc_curve(states[0], states[0], evaluate_fn, cfg.grid))
        curve = lmc_curve(states[0], states[1], evaluate_fn, cfg.grid)
        bar = lmc_barrier(curve)
        row = dict(base, setting=setting, loss_a=curve["losses"][0], loss_b=curve["losses"][-1],
                   acc_a=curve["accuracies"][0], acc_b=curve["accuracies"][-1],
                   loss_barrier=bar["loss_barrier"], acc_barrier=bar["accuracy_barrier"],
                   curve_loss=curve["losses"], curve_acc=curve["accuracies"])  # fmt: skip
        row["acc_mean"] = (row["acc_a"] + row["acc_b"]) / 2
        if setting == "order" and k_max > 2:
            accs = [row["acc_a"], row["acc_b"]] + [evaluate_fn(s)[1] for s in states[2:]]
            row["kfusion"] = {}
            for k in cfg.ks:
                soup_loss, soup_acc = evaluate_fn(uniform_soup(states[:k]))
                row["kfusion"][str(k)] = dict(
                    mean_acc=float(np.mean(accs[:k])), soup_acc=soup_acc, soup_loss=soup_loss,
                    barrier=multi_model_barrier(accs[:k], soup_acc),
                )  # fmt: skip
        rows.append(row)
    return rows


def run_seed(ctx, seed: int) -> list[dict]:
    cfg, rows = ctx["cfg"], []
    lrs = {"mlp": cfg.lr_mlp, "cnn": cfg.lr_cnn, "vit": cfg.lr_vit}
    sweep_arms = [Arm(), Arm("tna", "element", cfg.sweep_ratio)]
    timed = ctx["section_seconds"]
    if "main" in cfg.sections:
        for kind in cfg.models:
            t0 = time.time()
            karms = k_arms(cfg) if kind != "vit" else set()
            k_max = max(cfg.ks) if cfg.ks else 2
            for arm in main_arms(cfg, kind):
                rows += run_pairs(ctx, kind, arm, seed, "main", lrs[kind], cfg.width, cfg.depth,
                                  k_max=k_max if arm in karms else 2)  # fmt: skip
            timed[f"main/{kind}"] += time.time() - t0
    for section, values in (("width", cfg.widths), ("depth", cfg.depths), ("lr", cfg.lr_sweep)):
        if section not in cfg.sections:
            continue
        t0 = time.time()
        for value in values:
            width = value if section == "width" else cfg.width
            depth = value if section == "depth" else cfg.depth
            lr = value if section == "lr" else cfg.lr_mlp
            for arm in sweep_arms:
                rows += run_pairs(ctx, "mlp", arm, seed, section, lr, width, depth, settings=("order",))
        timed[section] += time.time() - t0
    return rows


# --------------------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------------------
KEY = ("section", "model", "width", "depth", "lr", "setting", "variant", "granularity", "ratio")


def stats(values) -> dict:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if v.size == 0:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0, "n": int(v.size)}


def aggregate(rows: list[dict]) -> list[dict]:
    """Mean / std over seeds per key, with per-seed paired deltas against the ratio-0 run of the same seed."""
    baseline = {}
    for r in rows:
        if r["ratio"] == 0.0:
            baseline[tuple(r[k] for k in KEY[:6]) + (r["seed"],)] = r
    groups = defaultdict(list)
    for r in rows:
        groups[tuple(r[k] for k in KEY)].append(r)
    out = []
    for key, rs in groups.items():
        entry = dict(zip(KEY, key))
        for metric in ("acc_barrier", "loss_barrier", "acc_mean"):
            entry[metric] = stats(r[metric] for r in rs)
            deltas = [r[metric] - b[metric] for r in rs if (b := baseline.get(key[:6] + (r["seed"],)))]
            entry[f"delta_{metric}"] = dict(stats(deltas), lower=int(sum(d < 0 for d in deltas)))
        if all("kfusion" in r for r in rs):
            entry["kfusion"] = {}
            for k in rs[0]["kfusion"]:
                kf = {m: stats(r["kfusion"][k][m] for r in rs) for m in ("mean_acc", "soup_acc", "barrier")}
                deltas = [r["kfusion"][k]["barrier"] - b["kfusion"][k]["barrier"] for r in rs
                          if (b := baseline.get(key[:6] + (r["seed"],))) and "kfusion" in b]  # fmt: skip
                kf["delta_barrier"] = dict(stats(deltas), lower=int(sum(d < 0 for d in deltas)))
                entry["kfusion"][k] = kf
        entry["mean_curve_acc"] = np.mean([r["curve_acc"] for r in rs], axis=0).tolist()
        out.append(entry)
    order = {s: i for i, s in enumerate(SECTIONS)}
    out.sort(key=lambda e: (order[e["section"]], MODELS.index(e["model"]), e["width"] or 0, e["depth"] or 0,
                            e["lr"], e["setting"] != "order", e["variant"] != "tna", e["granularity"], e["ratio"]))  # fmt: skip
    return out


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------
def fmt(s: dict, scale: float = 1.0, digits: int = 2, lower: bool = False) -> str:
    if s.get("mean") is None:
        return "n/a"
    if lower and s["mean"] == 0.0 and s["std"] == 0.0 and s["lower"] == 0:
        return "—"  # the baseline against itself
    text = f"{s['mean'] * scale:+.{digits}f}" if lower else f"{s['mean'] * scale:.{digits}f}"
    text += f" ± {s['std'] * scale:.{digits}f}"
    if lower:
        text += f" ({s['lower']}/{s['n']} lower)"
    return text


def arm_label(e: dict) -> str:
    return Arm(e["variant"], e["granularity"], e["ratio"]).label


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def commands_line(summary: dict) -> str:
    """'Command: `...`', or every run's command with its seeds when results were merged."""
    runs = summary["runs"]
    if len(runs) == 1:
        return f"Command: `{runs[0]['command']}`"
    made = "; ".join(f"`{r['command']}` (seeds {', '.join(map(str, r['seeds']))})" for r in runs if r["seeds"])
    return f"Commands: {made}; merged by `{summary['command']}`"


def render_markdown(summary: dict, agg: list[dict], analysis: str) -> str:
    cfg, cmd = summary["config"], commands_line(summary)
    out = [
        "# Linear mode connectivity with fixed anchors (TNA-PFN) — small-scale reproduction",
        "",
        "Generated by `benchmarks/lmc.py` (tables and plots); the Analysis section is kept across re-runs.",
        f"Seeds: **{summary['seeds_completed']}** ({', '.join(map(str, summary['seeds']))}); runtime "
        f"{summary['runtime_s']:.0f} s (wall, summed over runs) "
        f"on {cfg['threads']} torch thread(s) (torch {summary['versions']['torch']}); sanity: barrier of a model with itself = "
        f"{summary['sanity']['self_barrier']['loss_barrier']:.3g} (loss), "
        f"{summary['sanity']['self_barrier']['accuracy_barrier']:.3g} (accuracy); largest anchor drift after "
        f"training = {summary['sanity']['max_anchor_drift']:.3g}.",
        "",
        "## Setup",
        "",
        f"- Data: {cfg['data']}, fixed subsample of {cfg['train_size']} training and {cfg['test_size']} test images "
        "(same for all seeds); 'order' pairs train on the whole subsample with different shuffles, 'disjoint' pairs "
        f"on its two halves ({cfg['train_size'] // 2} each). {cfg['epochs']} epochs, batch {cfg['batch_size']}, "
        "constant learning rate, no weight decay, no augmentation.",
        f"- MLP {cfg['width']}x{cfg['depth']} (ReLU) and CNN (conv16-s2, conv32-s2, fc64, fc10): SGD momentum "
        f"{cfg['momentum']}, lr {cfg['lr_mlp']} / {cfg['lr_cnn']}. ViT (transformers ViTForImageClassification, "
        f"patch 7, hidden 64, 2 layers, 4 heads, MLP 128): Adam lr {cfg['lr_vit']}.",
        "- Every trainable tensor is targeted (classifier included); anchors = initial values, kept by "
        "`AnchoredOptimizer`; mask seed = run seed, so both models of a pair share init and mask. "
        "prune@init = same element mask with the anchored values set to 0. Data orders are shared across arms "
        "(paired comparison).",
        f"- Barriers on a {cfg['grid']}-point grid (`hf_tna.merge.ops.lmc_barrier`): loss barrier in nats, accuracy "
        "barrier in percentage points (max over alpha of the linear interpolation of the endpoint accuracies minus "
        "the accuracy of the interpolated weights). Δ = paired difference with the ratio-0 model of the same seed; "
        "'lower' counts seeds where the arm's barrier is lower. All cells mean ± std over seeds.",
        f"- K-model fusion (order setting, arms at ratio {cfg['k_ratio']}): barrier = mean individual accuracy "
        "minus accuracy of the uniform soup of the K models.",
        "",
    ]
    main = [e for e in agg if e["section"] == "main"]
    if main:
        out += ["## Pair barriers vs anchor ratio", ""]
        for kind in MODELS:
            es = [e for e in main if e["model"] == kind]
            if not es:
                continue
            out += [f"### {kind.upper()}", "", cmd, ""]
            rows = [[e["setting"], arm_label(e), fmt(e["acc_barrier"], 100), fmt(e["delta_acc_barrier"], 100, lower=True),
                     fmt(e["loss_barrier"], 1, 3), fmt(e["delta_loss_barrier"], 1, 3, lower=True),
                     fmt(e["acc_mean"], 100), fmt(e["delta_acc_mean"], 100, lower=True)] for e in es]  # fmt: skip
            out += table(["setting", "arm", "acc barrier (pp)", "Δ acc barrier", "loss barrier", "Δ loss barrier",
                          "model acc (%)", "Δ model acc (cost)"], rows)  # fmt: skip
            out += [""]
    kf = [e for e in main if "kfusion" in e]
    if kf:
        out += ["## K-model fusion (uniform soup of K models from one init, different data orders)", "",
                cmd, ""]  # fmt: skip
        rows = []
        for e in kf:
            for k, s in e["kfusion"].items():
                rows.append([e["model"], arm_label(e), k, fmt(s["mean_acc"], 100), fmt(s["soup_acc"], 100),
                             fmt(s["barrier"], 100), fmt(s["delta_barrier"], 100, lower=True)])  # fmt: skip
        out += table(["model", "arm", "K", "mean individual acc (%)", "soup acc (%)", "multi-model barrier (pp)",
                      "Δ barrier"], rows) + [""]  # fmt: skip
    for section, col, title in (("width", "width", "MLP width sweep (depth {depth}, order pairs)"),
                                ("depth", "depth", "MLP depth sweep (width {width}, order pairs)"),
                                ("lr", "lr", "MLP learning-rate sweep ({width}x{depth}, order pairs)")):  # fmt: skip
        es = [e for e in agg if e["section"] == section]
        if not es:
            continue
        out += [f"## {title.format(**cfg)}", "", cmd, ""]
        rows = [[f"{e[col]:g}", arm_label(e), fmt(e["acc_barrier"], 100), fmt(e["delta_acc_barrier"], 100, lower=True),
                 fmt(e["loss_barrier"], 1, 3), fmt(e["delta_loss_barrier"], 1, 3, lower=True), fmt(e["acc_mean"], 100),
                 fmt(e["delta_acc_mean"], 100, lower=True)] for e in es]  # fmt: skip
        out += table([col, "arm", "acc barrier (pp)", "Δ acc barrier", "loss barrier", "Δ loss barrier",
                      "model acc (%)", "Δ model acc (cost)"], rows) + [""]  # fmt: skip
    out += ["## Plots", ""] + [f"![{k}]({v})" for k, v in PLOT_NAMES.items() if k in summary["plots"]] + [""]
    out += ["## Section timings (s)", "", "```", json.dumps(summary["section_seconds"], indent=1), "```", ""]
    out += [
        "## Analysis",
        "",
        ANALYSIS_START,
        analysis.strip() or "(to be written after the full run)",
        ANALYSIS_END,
        "",
    ]
    return "\n".join(out)


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


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_analysis(path: Path) -> str:
    if not path.exists():
        return ""
    text = path.read_text()
    if ANALYSIS_START in text and ANALYSIS_END in text:
        return text.split(ANALYSIS_START, 1)[1].split(ANALYSIS_END, 1)[0]
    return ""


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small preset for development (a few minutes)")
    parser.add_argument("--out-dir", default=None, help="report folder (default docs/results; quick: a temp folder)")
    parser.add_argument("--merge", default=None, help="comma-separated lmc.json files of runs to add (same config)")
    for f in dataclasses.fields(LMCConfig):
        kind = type(f.default)
        parser.add_argument(f"--{f.name.replace('_', '-')}", default=None, type=str if kind is tuple else kind,
                            help=f.metadata["help"] + f" (default {f.default})")  # fmt: skip
    return parser


def parse_config(args: argparse.Namespace) -> LMCConfig:
    values = dict(QUICK) if args.quick else {}
    for f in dataclasses.fields(LMCConfig):
        given = getattr(args, f.name)
        if given is None:
            continue
        if isinstance(f.default, tuple):
            cast = str if f.name in ("models", "sections", "granularities") else float
            if f.name in ("ks", "widths", "depths"):
                cast = int
            given = tuple(cast(v) for v in given.split(",") if v.strip())
        values[f.name] = given
    return LMCConfig(**values)


MERGE_FREE_FIELDS = {"seeds", "first_seed", "budget_minutes", "threads"}


def load_merged(paths: list[str], cfg: LMCConfig, seen: set[int]) -> tuple[list[dict], list[dict]]:
    """Rows and run records of earlier runs (lmc.json files); seeds already in `seen` are skipped."""
    rows, runs = [], []
    mine = dataclasses.asdict(cfg)
    for path in paths:
        try:
            saved = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"--merge file {path} cannot be read as an lmc.json: {err}") from None
        for key, value in saved["config"].items():
            if (
                key not in MERGE_FREE_FIELDS
                and key in mine
                and json.dumps(value) != json.dumps(mine[key], default=list)
            ):
                raise ValueError(f"--merge file {path} was made with {key}={value!r}, this run has {mine[key]!r}")
        fresh = sorted({r["seed"] for r in saved["rows"]} - seen)
        rows += [r for r in saved["rows"] if r["seed"] in fresh]
        made = sorted({r["seed"] for r in saved["rows"]})
        for run in saved.get("runs") or [
            {"command": saved["command"], "runtime_s": saved["runtime_s"], "seeds_made": made}
        ]:
            runs.append(dict(run, seeds=[seed for seed in run["seeds_made"] if seed in fresh]))
        seen |= set(fresh)
    return rows, runs


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    cfg = parse_config(args)
    merge = [p for p in (args.merge or "").split(",") if p.strip()]
    if cfg.seeds == 0 and not merge:
        raise ValueError("--seeds 0 trains nothing; give --merge files to report, or --seeds >= 1")
    out_dir = Path(args.out_dir) if args.out_dir else (QUICK_OUT_DIR if args.quick else Path("docs/results"))
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    start = time.time()
    ctx = {"cfg": cfg, "sanity": {"max_anchor_drift": 0.0}, "section_seconds": defaultdict(float)}
    ctx["data"] = load_data(cfg) if cfg.seeds else None
    rows, done, stopped = [], [], None
    for seed in range(cfg.first_seed, cfg.first_seed + cfg.seeds):
        rows += run_seed(ctx, seed)
        done.append(seed)
        elapsed = time.time() - start
        print(f"[lmc] seed {seed} done, {elapsed:.0f} s elapsed", file=sys.stderr, flush=True)
        if len(done) < cfg.seeds and elapsed * (len(done) + 1) / len(done) > 60 * cfg.budget_minutes:
            stopped = (
                f"stopped after {len(done)} seed(s): the next one would pass --budget-minutes {cfg.budget_minutes}"
            )
            print(f"[lmc] {stopped}", file=sys.stderr)
            break
    command = "python benchmarks/lmc.py" + (" " + shlex.join(argv) if argv else "")
    runs = [{"command": command, "seeds_made": done, "seeds": done, "runtime_s": time.time() - start}]
    merged_rows, merged_runs = load_merged(merge, cfg, set(done))
    rows += merged_rows
    runs += merged_runs
    for path in merge:  # sanity and timings of the merged runs
        saved = json.loads(Path(path).read_text())
        ctx["sanity"]["max_anchor_drift"] = max(ctx["sanity"]["max_anchor_drift"], saved["sanity"]["max_anchor_drift"])
        ctx["sanity"].setdefault("self_barrier", saved["sanity"]["self_barrier"])
        for key, value in saved["section_seconds"].items():
            ctx["section_seconds"][key] += value
    agg = aggregate(rows)
    seeds = sorted({r["seed"] for r in rows})
    summary = {
        "command": command,
        "runs": runs,
        "config": dict(dataclasses.asdict(cfg), seeds=len(seeds)),
        "seeds_completed": len(seeds),
        "seeds": seeds,
        "stopped_early": stopped,
        "runtime_s": sum(r["runtime_s"] for r in runs),
        "section_seconds": {k: round(v, 1) for k, v in ctx["section_seconds"].items()},
        "sanity": ctx["sanity"],
        "versions": {"torch": torch.__version__, "python": sys.version.split()[0]},
    }
    summary["plots"] = make_plots(agg, out_dir)
    summary["results"] = [{k: v for k, v in e.items() if k != "mean_curve_acc"} for e in agg]
    report = out_dir / REPORT_NAME
    _write_text(report, render_markdown(summary, agg, read_analysis(report)))
    full = {**summary, "results": agg, "rows": rows}
    _write_text(out_dir / JSON_NAME, json.dumps(full, indent=1, default=float) + "\n")
    print(json.dumps(summary, indent=1, default=float))
    return summary


if __name__ == "__main__":
    main()
