"""Settings of the SFT example: `SFTExperimentConfig` (the command line of `run_sft.py`) and its `--quick` preset."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from hf_tna.arguments import AnchorArguments

MODES = ("full", "quick")
PRESETS = {
    "quick": dict(
        pretrain_size=1500,
        finetune_size=1200,
        val_size=80,
        test_size=80,
        vocab_size=384,
        max_length=48,
        llama_hidden_size=32,
        llama_num_layers=2,
        llama_num_heads=2,
        llama_num_kv_heads=1,
        llama_intermediate_size=64,
        base_max_steps=40,
        base_batch_size=16,
        num_seeds=2,
        num_ingredients=2,
        subset_size=160,
        batch_size=16,
        barrier_points=3,
        launcher="inprocess",
        overwrite=True,  # cheap: a quick run starts fresh
    ),
}
# settings that do not change what is computed (a re-run with other values reuses finished steps)
NOT_COMPARED = ("results_dir", "overwrite", "launcher", "accelerate_config", "num_threads", "eval_batch_size")


@dataclass
class SFTExperimentConfig(AnchorArguments):
    """Settings of `run_sft.py` (every field is a command-line flag; `--quick` changes the defaults).

    Data: `pretrain_size` (quotes and chat utterances for the base; empty: all), `finetune_size` (the tweet pool the
    ingredients draw from; empty: all the rest), `val_size` (held-out tweets: greedy soups choose by them),
    `test_size` (test tweets: every reported number), `vocab_size` and `max_length` of the BPE tokenizer and the
    training sequences. Base: a new Llama (`llama_*`) trained `base_max_steps` steps with batch `base_batch_size`
    at `base_learning_rate`. Ingredients: for each of `num_seeds` seeds, `num_ingredients` draws of a training
    subset (`subset_size` tweets), a learning rate (log-uniform in [`lr_min`, `lr_max`]) and a training seed,
    each fine-tuned once with `TNASFTTrainer` (anchored: the `AnchorArguments` fields `anchor_ratio`, `anchor_seed`,
    `anchor_granularity`, `anchor_include`, `anchor_exclude`, `anchor_round`) and once with `SFTTrainer` (vanilla),
    `epochs` epochs at batch `batch_size`. Soups and barriers: `barrier_points` points on each pair's line.
    Execution: `launcher` (`accelerate`: `accelerate launch train_sft.py` per model; `inprocess`: in this process),
    `accelerate_config`, `num_threads`. Outputs: `work_dir`, `results_dir`, `overwrite`.
    """

    quick: bool = field(default=False, metadata={"help": "Small and fast (the test; well under a minute)."})
    pretrain_size: int | None = field(default=None, metadata={"help": "Texts for the base (empty: all)."})
    finetune_size: int | None = field(default=None, metadata={"help": "Tweet pool of the ingredients (empty: all)."})
    val_size: int = field(default=400, metadata={"help": "Held-out tweets (greedy soups choose by them)."})
    test_size: int = field(default=800, metadata={"help": "Test tweets (every reported number)."})
    data_seed: int = field(default=0, metadata={"help": "Seed of the splits."})
    vocab_size: int = field(default=2048, metadata={"help": "BPE vocabulary size."})
    max_length: int = field(default=96, metadata={"help": "Tokens per training and evaluation sequence."})
    llama_hidden_size: int = field(default=128, metadata={"help": "Base Llama: hidden size."})
    llama_num_layers: int = field(default=4, metadata={"help": "Base Llama: decoder layers."})
    llama_num_heads: int = field(default=4, metadata={"help": "Base Llama: attention heads."})
    llama_num_kv_heads: int = field(default=2, metadata={"help": "Base Llama: key/value heads."})
    llama_intermediate_size: int = field(default=384, metadata={"help": "Base Llama: MLP width."})
    base_max_steps: int = field(default=350, metadata={"help": "Pre-training steps of the base."})
    base_batch_size: int = field(default=32, metadata={"help": "Pre-training batch size."})
    base_learning_rate: float = field(default=2e-3, metadata={"help": "Pre-training learning rate."})
    num_seeds: int = field(default=3, metadata={"help": "Repetitions (new draws of every ingredient) for mean and std."})
    num_ingredients: int = field(default=3, metadata={"help": "Ingredients per set and seed."})
    subset_size: int = field(default=1200, metadata={"help": "Training tweets per ingredient (a seeded draw)."})
    epochs: float = field(default=1.0, metadata={"help": "Fine-tuning epochs per ingredient."})
    batch_size: int = field(default=16, metadata={"help": "Fine-tuning batch size."})
    lr_min: float = field(default=3e-4, metadata={"help": "Smallest drawn learning rate."})
    lr_max: float = field(default=3e-3, metadata={"help": "Largest drawn learning rate."})
    barrier_points: int = field(default=5, metadata={"help": "Points on each pair's line (endpoints included)."})
    eval_batch_size: int = field(default=64, metadata={"help": "Evaluation batch size."})
    launcher: str = field(default="accelerate", metadata={
        "help": "accelerate (accelerate launch per model) or inprocess.", "choices": ["accelerate", "inprocess"]})
    accelerate_config: str | None = field(default=None, metadata={
        "help": "accelerate config file (default: examples/sft/accelerate_cpu.yaml)."})
    num_threads: int = field(default=1, metadata={"help": "torch threads per training process."})
    work_dir: str | None = field(default=None, metadata={"help": "Run folder (default: examples/sft/runs/MODE)."})
    results_dir: str | None = field(default=None, metadata={"help": "Where results.json/md and the PNGs go."})
    overwrite: bool = field(default=False, metadata={
        "help": "Delete the work dir first (a run_sft.py work dir only). Default: true with --quick; false otherwise, "
        "where a rerun with the same settings reuses finished models."})

    def __post_init__(self):
        super().__post_init__()  # the anchor fields
        if self.anchor_ratio <= 0:
            raise ValueError(f"anchor_ratio must be > 0: the anchored set is compared with the vanilla one, got "
                             f"{self.anchor_ratio}")
        for name in ("num_seeds", "num_ingredients", "subset_size", "batch_size", "base_max_steps", "val_size",
                     "test_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_ingredients < 2:
            raise ValueError(f"num_ingredients must be >= 2 (soups and barriers need pairs), got {self.num_ingredients}")
        if not 0 < self.lr_min <= self.lr_max:
            raise ValueError(f"need 0 < lr_min <= lr_max, got {self.lr_min} and {self.lr_max}")
        if self.barrier_points < 2:
            raise ValueError(f"barrier_points must be >= 2 (the endpoints), got {self.barrier_points}")
        if self.max_length < 8:
            raise ValueError(f"max_length must be >= 8 tokens, got {self.max_length}")

    @property
    def mode(self) -> str:
        return "quick" if self.quick else "full"


def parse_config(argv: list[str] | None = None, description: str | None = None) -> SFTExperimentConfig:
    """The settings of a command line; `--quick` changes the defaults (given flags still win)."""
    from transformers import HfArgumentParser

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = HfArgumentParser(SFTExperimentConfig, description=description)
    (first,) = parser.parse_args_into_dataclasses(args=argv)
    if first.mode in PRESETS:
        parser.set_defaults(**PRESETS[first.mode])
        (first,) = parser.parse_args_into_dataclasses(args=argv)
    return first
