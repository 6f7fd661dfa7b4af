"""Settings of the model-soup example: `SoupExperimentConfig` (the command line of `run_modelsoup.py`) and its
`--quick` / `--smoke` presets."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from hf_tna.arguments import AnchorArguments

MODES = ("full", "quick", "smoke")
# digits are 8x8: the ViT gets its own config (image_size 8, patch 4: a 2x2 grid of patches plus [CLS])
_QUICK = dict(
    data="digits",
    val_size=300,
    num_ingredients=4,
    base_epochs=30,
    base_learning_rate=3e-3,
    epochs=5,
    batch_size=32,
    vit_image_size=8,
    vit_patch_size=4,
    vit_hidden_size=32,
    vit_intermediate_size=64,
    launcher="inprocess",
    overwrite=True,  # cheap: a demo run starts fresh (pass --overwrite false to reuse finished steps)
)
PRESETS = {
    "quick": _QUICK,
    "smoke": dict(
        _QUICK,
        val_size=200,
        num_ingredients=2,
        base_epochs=10,
        epochs=3,
        vit_hidden_size=16,
        vit_intermediate_size=32,
        vit_num_heads=2,
    ),
}
# settings that do not change what is computed (a re-run with other values reuses finished steps)
NOT_COMPARED = (
    "results_dir",
    "overwrite",
    "push_to_hub",
    "push_soup",
    "store",
    "launcher",
    "accelerate_config",
    "num_threads",
    "eval_backend",
    "eval_batch_size",
)
SOUPS = ("uniform", "greedy")


@dataclass
class SoupExperimentConfig(AnchorArguments):
    """Settings of `run_modelsoup.py` (every field is a command-line flag; `--quick`/`--smoke` change defaults).

    Data and sizes: `data`, `data_dir`, `pretrain_size`/`finetune_size` (empty: split the rest in halves),
    `val_size`, `test_size` (empty: the whole test set). Base: `base_model` (folder or Hub id; empty: a new
    ViT from the `vit_*` fields), `base_epochs`, `base_learning_rate`. Ingredients: `num_ingredients`,
    `epochs`, `batch_size`, ranges of the drawn hyperparameters, and the anchor settings of the anchored set
    (`anchor_ratio`, `anchor_seed`, `anchor_granularity`, `anchor_include`, `anchor_exclude`, `anchor_round`: the
    `AnchorArguments` fields, shared with `TNAConfig`). Execution: `launcher`
    (`accelerate` runs `accelerate launch finetune.py` per model; `inprocess` calls it in this process),
    `device`, `num_threads`, evaluation back end. Outputs: `work_dir`, `results_dir`, `push_to_hub`.
    """

    quick: bool = field(default=False, metadata={"help": "Digits, 4 small ingredients, in-process (~2 min on CPU)."})
    smoke: bool = field(default=False, metadata={"help": "Digits, 2 tiny ingredients (tests, < 1 min)."})
    data: str = field(default="fashion_mnist", metadata={"help": "fashion_mnist or digits."})
    data_dir: str | None = field(default=None, metadata={"help": "Folder of the Fashion-MNIST *-ubyte.gz files."})
    pretrain_size: int | None = field(default=None, metadata={"help": "Examples to train the base (default: half)."})
    finetune_size: int | None = field(default=None, metadata={"help": "Examples to fine-tune on (default: half)."})
    val_size: int = field(default=5000, metadata={"help": "Held-out examples carved from the training set."})
    test_size: int | None = field(default=None, metadata={"help": "Test examples (default: all)."})
    seed: int = field(default=0, metadata={"help": "Seed of the splits, the base and the hyperparameter draw."})
    base_model: str | None = field(default=None, metadata={"help": "Folder or Hub id to train the base from."})
    base_epochs: float = field(default=10, metadata={"help": "Epochs of base training on the pretrain split."})
    base_learning_rate: float = field(default=1e-3, metadata={"help": "Learning rate of base training."})
    num_ingredients: int = field(default=8, metadata={"help": "Ingredients per set (anchored and vanilla)."})
    ingredient_time_budget_s: float | None = field(
        default=None,
        metadata={
            "help": "Start no new ingredient pair after this many seconds of the run (at least 2 pairs are "
            "trained); the soups use the pairs done. For time-boxed runs (gpu_check.sh)."
        },
    )
    epochs: float = field(default=3, metadata={"help": "Fine-tuning epochs per ingredient."})
    batch_size: int = field(default=128, metadata={"help": "Per-device batch size."})
    lr_min: float = field(
        default=1e-4, metadata={"help": "Learning rates are drawn log-uniformly from [lr_min, lr_max]."}
    )
    lr_max: float = field(default=3e-3, metadata={"help": "Upper end of the learning-rate range."})
    wd_min: float = field(
        default=1e-4, metadata={"help": "Weight decays are drawn log-uniformly from [wd_min, wd_max]."}
    )
    wd_max: float = field(default=0.1, metadata={"help": "Upper end of the weight-decay range."})
    label_smoothings: list[float] = field(
        default_factory=lambda: [0.0, 0.1], metadata={"help": "Label smoothing values to draw from."}
    )
    augments: list[str] | None = field(
        default=None,
        metadata={"help": "Augmentations to draw from (default: none shift shift_flip; none shift for digits)."},
    )
    vit_image_size: int = field(default=28, metadata={"help": "New ViT: input image size."})
    vit_patch_size: int = field(default=7, metadata={"help": "New ViT: patch size."})
    vit_hidden_size: int = field(default=64, metadata={"help": "New ViT: hidden size."})
    vit_num_layers: int = field(default=2, metadata={"help": "New ViT: transformer layers."})
    vit_num_heads: int = field(default=4, metadata={"help": "New ViT: attention heads."})
    vit_intermediate_size: int = field(default=128, metadata={"help": "New ViT: MLP width."})
    launcher: str = field(
        default="accelerate", metadata={"help": "accelerate or inprocess.", "choices": ["accelerate", "inprocess"]}
    )
    accelerate_config: str | None = field(
        default=None,
        metadata={
            "help": "accelerate config file (default: accelerate_cpu.yaml, or accelerate_multigpu.yaml with cuda)."
        },
    )
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda.", "choices": ["auto", "cpu", "cuda"]})
    bf16: bool = field(default=False, metadata={"help": "Train in bf16 mixed precision (GPU)."})
    num_threads: int = field(default=1, metadata={"help": "torch threads per process (1 is fastest on busy CPUs)."})
    dataloader_num_workers: int = field(default=0, metadata={"help": "DataLoader workers per training process."})
    backend: str = field(
        default="auto",
        metadata={
            "help": "Training data: datasets, torch (no datasets) or auto.",
            "choices": ["auto", "datasets", "torch"],
        },
    )
    eval_backend: str = field(
        default="auto",
        metadata={
            "help": "Scoring, always with hf_tna.merge.evaluation.Evaluator: hf (from a datasets.Dataset, on CPU; "
            "needs datasets and evaluate), torch (from tensors, on --device; needs neither), or auto.",
            "choices": ["auto", "hf", "torch"],
        },
    )
    eval_batch_size: int = field(default=512, metadata={"help": "Evaluation batch size."})
    work_dir: str | None = field(
        default=None, metadata={"help": "Run folder (default: examples/modelsoup/runs/MODE)."}
    )
    results_dir: str | None = field(default=None, metadata={"help": "Where results.json/md and the PNG go."})
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "Delete the work dir first (a run_modelsoup.py work dir only). Default: true with --quick/--smoke; "
            "false otherwise, where a rerun with the same settings reuses finished models."
        },
    )
    push_to_hub: str | None = field(default=None, metadata={"help": "Hub repo id to push a soup to."})
    push_soup: str = field(
        default="anchored_greedy",
        metadata={
            "help": "Which soup to push.",
            "choices": [f"{s}_{m}" for s in ("anchored", "vanilla") for m in SOUPS],
        },
    )
    store: str | None = field(default=None, metadata={"help": "Store for --push_to_hub (default: the Hub)."})

    def __post_init__(self):
        super().__post_init__()  # the anchor fields
        if self.quick and self.smoke:
            raise ValueError("pass --quick or --smoke, not both")
        if self.num_ingredients < 1:
            raise ValueError(f"num_ingredients must be >= 1, got {self.num_ingredients}")
        if not 0 < self.lr_min <= self.lr_max or not 0 < self.wd_min <= self.wd_max:
            raise ValueError("need 0 < lr_min <= lr_max and 0 < wd_min <= wd_max")

    @property
    def mode(self) -> str:
        return "smoke" if self.smoke else "quick" if self.quick else "full"


def parse_config(argv: list[str] | None = None, description: str | None = None) -> SoupExperimentConfig:
    """The settings of a command line; `--quick` / `--smoke` change the defaults (given flags still win)."""
    from transformers import HfArgumentParser

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = HfArgumentParser(SoupExperimentConfig, description=description)
    (first,) = parser.parse_args_into_dataclasses(args=argv)
    if first.mode in PRESETS:
        parser.set_defaults(**PRESETS[first.mode])
        (first,) = parser.parse_args_into_dataclasses(args=argv)
    return first
