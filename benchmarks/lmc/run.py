"""`main`: run the seeds, merge earlier runs' lmc.json files, and write lmc.md, lmc.json and the PNGs."""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path

import torch

from .barriers import run_seed
from .config import COMMAND, LMCConfig, parse_config
from .context import LMCContext, load_data
from .plots import make_plots
from .report import JSON_NAME, REPORT_NAME, aggregate, read_analysis, render_markdown, write_text

MERGE_FREE_FIELDS = {"seeds", "first_seed", "budget_minutes", "threads"}  # may differ between merged runs


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


def add_merged_checks(ctx: LMCContext, paths: list[str]) -> None:
    """Sanity checks and section timings of the merged runs."""
    for path in paths:
        saved = json.loads(Path(path).read_text())
        ctx.sanity.max_anchor_drift = max(ctx.sanity.max_anchor_drift, saved["sanity"]["max_anchor_drift"])
        if ctx.sanity.self_barrier is None:
            ctx.sanity.self_barrier = saved["sanity"]["self_barrier"]
        for key, value in saved["section_seconds"].items():
            ctx.section_seconds[key] += value


def run_seeds(ctx: LMCContext, start: float) -> tuple[list[dict], list[int], str | None]:
    """Rows of every seed run before the budget ran out, the seeds done, and why it stopped early (or None)."""
    cfg = ctx.cfg
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
    return rows, done, stopped


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    cfg, run_args = parse_config(argv)
    merge = list(run_args.merge or [])
    if cfg.seeds == 0 and not merge:
        raise ValueError("--seeds 0 trains nothing; give --merge files to report, or --seeds >= 1")
    out_dir = run_args.output_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    start = time.time()
    ctx = LMCContext(cfg, data=load_data(cfg) if cfg.seeds else None)
    rows, done, stopped = run_seeds(ctx, start)
    command = COMMAND + (" " + shlex.join(argv) if argv else "")
    runs = [{"command": command, "seeds_made": done, "seeds": done, "runtime_s": time.time() - start}]
    merged_rows, merged_runs = load_merged(merge, cfg, set(done))
    rows += merged_rows
    runs += merged_runs
    add_merged_checks(ctx, merge)
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
        "section_seconds": {k: round(v, 1) for k, v in ctx.section_seconds.items()},
        "sanity": dataclasses.asdict(ctx.sanity),
        "versions": {"torch": torch.__version__, "python": sys.version.split()[0]},
    }
    summary["plots"] = make_plots(agg, out_dir)
    summary["results"] = [{k: v for k, v in e.items() if k != "mean_curve_acc"} for e in agg]
    report = out_dir / REPORT_NAME
    write_text(report, render_markdown(summary, agg, read_analysis(report)))
    full = {**summary, "results": agg, "rows": rows}
    write_text(out_dir / JSON_NAME, json.dumps(full, indent=1, default=float) + "\n")
    print(json.dumps(summary, indent=1, default=float))
    return summary
