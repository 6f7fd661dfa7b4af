"""Linear mode connectivity benchmark for TNA-PFN (Li et al., arXiv 2402.01342) at small scale.

Pairs of models start from one initialisation and are trained on different data orders ("order") or on
disjoint halves of the training subset ("disjoint"), with a seeded fraction of their weights anchored at
the initial values (`hf_tna.optimizer.AnchoredOptimizer`). For each pair it measures loss and accuracy
barriers along the linear path (`hf_tna.merge.ops.lmc_curve` / `lmc_barrier`), the accuracy cost of
anchoring each model alone, K-model uniform-soup barriers, MLP width / depth / learning-rate sweeps, and a
pruning-at-init control (same mask, anchored values set to 0).

    python -m benchmarks.lmc                 # full run (~30 min on an idle 2-core box), writes docs/results
    python -m benchmarks.lmc --quick         # a couple of minutes, writes /tmp/hf_tna_lmc_quick
    python -m benchmarks.lmc --seeds 0 --merge docs/results/lmc.json other/lmc.json   # one report of both

Seeds are the outer loop: when the projected time of the next seed passes --budget_minutes the run stops
and every table reports the seeds it completed. Prints a JSON summary on stdout.

Modules: `config` (the settings, `HfArgumentParser`), `context` (data and the run's typed state), `train`
(models, arms, training, evaluation), `barriers` (the experiments), `report` (aggregation and markdown),
`plots`, `run` (`main`: seeds, merging earlier runs, writing lmc.md / lmc.json / PNGs).
"""

from .config import COMMAND, QUICK, LMCConfig, RunArguments, build_parser, parse_config
from .report import JSON_NAME, PLOT_NAMES, REPORT_NAME, read_analysis
from .run import main

__all__ = [
    "COMMAND",
    "JSON_NAME",
    "PLOT_NAMES",
    "QUICK",
    "REPORT_NAME",
    "LMCConfig",
    "RunArguments",
    "build_parser",
    "main",
    "parse_config",
    "read_analysis",
]
