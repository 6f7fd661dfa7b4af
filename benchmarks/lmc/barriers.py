"""The experiments: for each seed and arm, train pairs (or K models) from one init and measure their barriers."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from hf_tna.merge.ops import lmc_barrier, lmc_curve, multi_model_barrier, uniform_soup

from .config import LMCConfig
from .context import LMCContext
from .train import Arm, build_model, evaluate, train_model

SETTINGS = ("order", "disjoint")  # pairs trained on different data orders, or on disjoint halves


def main_arms(cfg: LMCConfig, kind: str) -> list[Arm]:
    """The main section's arms of one model kind: the baseline, anchors per granularity and ratio, prune@init."""
    ratios = cfg.vit_ratios if kind == "vit" else cfg.ratios
    arms = [Arm()]
    arms += [Arm("tna", g, r) for g in cfg.granularities for r in ratios if r > 0]
    if kind != "vit":
        arms += [Arm("prune", "element", r) for r in cfg.prune_ratios if r > 0]
    return arms


def k_arms(cfg: LMCConfig) -> set[Arm]:
    """The arms that also get K-model soups (order setting)."""
    r = cfg.k_ratio
    return {Arm(), *(Arm("tna", g, r) for g in cfg.granularities), Arm("prune", "element", r)}


def run_pairs(
    ctx: LMCContext,
    kind: str,
    arm: Arm,
    seed: int,
    section: str,
    lr: float,
    width: int = 200,
    depth: int = 2,
    settings: tuple[str, ...] = SETTINGS,
    k_max: int = 2,
) -> list[dict]:
    """Train one arm's models for one seed and return its result rows (one per setting)."""
    cfg, data = ctx.cfg, ctx.data
    torch.manual_seed(seed)
    model = build_model(kind, width, depth)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    opt_name = "adam" if kind == "vit" else "sgd"
    x, y = data.x_train, data.y_train
    half = len(y) // 2

    def evaluate_fn(state):
        return evaluate(model, state, data.x_test, data.y_test)

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
        ctx.sanity.max_anchor_drift = max(ctx.sanity.max_anchor_drift, drift)
        if ctx.sanity.self_barrier is None:
            ctx.sanity.self_barrier = lmc_barrier(lmc_curve(states[0], states[0], evaluate_fn, cfg.grid))
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


def run_seed(ctx: LMCContext, seed: int) -> list[dict]:
    """Every selected section for one seed; adds each section's seconds to `ctx.section_seconds`."""
    cfg, rows = ctx.cfg, []
    lrs = {"mlp": cfg.lr_mlp, "cnn": cfg.lr_cnn, "vit": cfg.lr_vit}
    sweep_arms = [Arm(), Arm("tna", "element", cfg.sweep_ratio)]
    timed = ctx.section_seconds
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
