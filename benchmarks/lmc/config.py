"""Settings of the LMC benchmark: `LMCConfig` (what is computed; recorded in the report) and `RunArguments`
(where the report goes, which earlier runs to merge). Both are parsed by `HfArgumentParser`."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

MODELS = ("mlp", "cnn", "vit")
SECTIONS = ("main", "width", "depth", "lr")
DATA = ("fashion-mnist", "synthetic")
COMMAND = "python -m benchmarks.lmc"  # how the benchmark is run (recorded in the report with the arguments)
QUICK_OUT_DIR = Path(tempfile.gettempdir()) / "hf_tna_lmc_quick"
DEFAULT_OUT_DIR = Path("docs/results")


def _list(*values, help: str):
    """A list field (space-separated values on the command line) with a default."""
    return field(default_factory=lambda: list(values), metadata={"help": help})


@dataclass
class LMCConfig:
    """Everything the benchmark computes with; recorded in the report (lists are space-separated values).

    Data: `data`, `train_size`, `test_size`. Training: `epochs`, `batch_size`, `lr_mlp`, `lr_cnn`, `lr_vit`,
    `momentum`. Seeds: `seeds`, `first_seed` (seeds are the outer loop; `budget_minutes` stops starting new
    ones). What is run: `models` and `sections` (main, width, depth, lr); the main section's arms (`ratios`,
    `vit_ratios`, `granularities`, `prune_ratios`) and K-model soups (`ks`, `k_ratio`); the MLP `width` /
    `depth` and the sweeps (`widths`, `depths`, `lr_sweep`, `sweep_ratio`). `grid`: points on the path.
    """

    data: str = field(default="fashion-mnist", metadata={"help": "fashion-mnist or synthetic (tests)"})
    train_size: int = field(default=10000, metadata={"help": "training subsample (disjoint halves split it)"})
    test_size: int = field(default=2000, metadata={"help": "fixed test subsample for every evaluation"})
    epochs: int = field(default=2, metadata={"help": "epochs over each model's training data"})
    batch_size: int = field(default=64, metadata={"help": "mini-batch size"})
    seeds: int = field(default=5, metadata={"help": "seeds (inits, masks and data orders) to run; 0 with --merge"})
    first_seed: int = field(default=0, metadata={"help": "index of the first seed (to add seeds in another run)"})
    grid: int = field(default=25, metadata={"help": "points on the interpolation path"})
    models: list[str] = _list(*MODELS, help="models of the main section")
    sections: list[str] = _list(*SECTIONS, help="main, width, depth, lr")
    ratios: list[float] = _list(0.0, 0.2, 0.4, 0.6, help="anchor ratios (MLP, CNN)")
    vit_ratios: list[float] = _list(0.0, 0.4, help="anchor ratios (ViT)")
    granularities: list[str] = _list("element", "neuron", help="anchor granularities")
    prune_ratios: list[float] = _list(0.2, 0.4, 0.6, help="pruning-at-init control ratios")
    ks: list[int] = _list(2, 4, 8, help="K of the K-model uniform soups (MLP, CNN)")
    k_ratio: float = field(default=0.4, metadata={"help": "anchor / prune ratio of the K-model arms"})
    width: int = field(default=200, metadata={"help": "MLP hidden width in the main section"})
    depth: int = field(default=2, metadata={"help": "MLP hidden layers in the main section"})
    widths: list[int] = _list(5, 20, 80, 200, 800, 1600, help="width sweep (depth 2)")
    depths: list[int] = _list(1, 2, 4, 8, help="depth sweep (width 200)")
    sweep_ratio: float = field(default=0.4, metadata={"help": "anchor ratio compared with 0 in the sweeps"})
    lr_mlp: float = field(default=0.05, metadata={"help": "SGD learning rate, MLP"})
    lr_cnn: float = field(default=0.05, metadata={"help": "SGD learning rate, CNN"})
    lr_vit: float = field(default=1e-3, metadata={"help": "Adam learning rate, ViT"})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum"})
    lr_sweep: list[float] = _list(0.01, 0.2, help="extra MLP learning rates (lr section)")
    budget_minutes: float = field(default=40.0, metadata={"help": "stop starting new seeds past this"})
    threads: int = field(default=1, metadata={"help": "torch.set_num_threads"})

    def __post_init__(self):
        if self.data not in DATA:
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


@dataclass
class RunArguments:
    """How this run is carried out; not recorded as a setting (a merged report may come from several runs)."""

    quick: bool = field(default=False, metadata={"help": "small preset for development (a few minutes)"})
    out_dir: str | None = field(
        default=None, metadata={"help": f"report folder (default {DEFAULT_OUT_DIR}; quick: {QUICK_OUT_DIR})"}
    )
    merge: list[str] | None = field(
        default=None, metadata={"help": "lmc.json files of earlier runs to add (made with the same settings)"}
    )

    @property
    def output_dir(self) -> Path:
        if self.out_dir:
            return Path(self.out_dir)
        return QUICK_OUT_DIR if self.quick else DEFAULT_OUT_DIR


QUICK = dict(
    train_size=2000,
    test_size=500,
    epochs=1,
    seeds=2,
    grid=11,
    ratios=[0.0, 0.4],
    vit_ratios=[0.0, 0.4],
    prune_ratios=[0.4],
    ks=[2, 4],
    widths=[20, 200, 800],
    depths=[1, 2, 4],
    lr_sweep=[0.2],
    budget_minutes=5.0,
)


def build_parser():
    from ..common import build_parser as build
    from . import __doc__ as doc

    return build((LMCConfig, RunArguments), doc, prog=COMMAND)


def parse_config(argv: list[str]) -> tuple[LMCConfig, RunArguments]:
    """The settings of a command line; `--quick` changes the defaults to `QUICK` (given flags still win)."""
    parser = build_parser()
    cfg, run = parser.parse_args_into_dataclasses(args=argv)
    if run.quick:
        parser.set_defaults(**QUICK)
        cfg, run = parser.parse_args_into_dataclasses(args=argv)
    return cfg, run
