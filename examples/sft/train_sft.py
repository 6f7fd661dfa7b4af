"""Train one model of the SFT example: the shared base (a new Llama) or an ingredient fine-tuned from it, with TRL's
`SFTTrainer` (vanilla) or `hf_tna.trl.TNASFTTrainer` (anchors). One process or many, the same script:

    accelerate launch --config_file examples/sft/accelerate_cpu.yaml examples/sft/train_sft.py \\
        --data_dir runs/full/data --base_model runs/full/base --output_dir runs/full/anchored/seed0/ing0 \\
        --trainer tna --anchor_ratio 0.4 --subset_size 3000 --subset_seed 11 --learning_rate 1e-3 --seed 1

Without `--base_model` a new `LlamaForCausalLM` is built from the `llama_*` fields with the tokenizer in
`--tokenizer_dir` (this is how `run_sft.py` makes the base, on the `pretrain` split). The arguments are
`TrainSFTScriptConfig` (below) plus every `hf_tna.trl.TNASFTConfig` field (TRL's `SFTConfig`, hence
`TrainingArguments`, and the anchor fields, used with `--trainer tna` only). The folder gets the model, its
tokenizer, `tna_config.json` (tna), TRL's model card and `train_result.json`; it is written under a temporary
name and renamed at the end.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1])]  # sft_data.py and hf_tna when run from a checkout

import torch  # noqa: E402

RESULT_NAME = "train_result.json"
TRAINERS = ("tna", "plain")
# example defaults for SFTConfig / TrainingArguments fields (the command line still overrides them)
TRAINING_DEFAULTS = dict(
    output_dir="runs/model",
    report_to="none",
    save_strategy="no",
    per_device_train_batch_size=32,
    learning_rate=1e-3,
    num_train_epochs=1,
    lr_scheduler_type="cosine",
    warmup_steps=0.05,
    weight_decay=0.01,
    max_length=96,
    logging_steps=25,
    dataloader_num_workers=0,
    disable_tqdm=True,
    use_cpu=True,
)


@dataclass
class TrainSFTScriptConfig:
    """Settings of `train_sft.py` besides `TNASFTConfig`'s.

    Args:
        data_dir: folder of the `datasets` splits written by `run_sft.py` (`sft_data.save_splits`).
        train_split: "pretrain" (the base) or "finetune" (the ingredients).
        subset_size / subset_seed: train on a seeded random subset of that many texts (empty: all of them).
        base_model: folder to start from; empty: a new Llama from the `llama_*` fields and `tokenizer_dir`.
        tokenizer_dir: folder of the tokenizer of a new Llama.
        trainer: "tna" (`TNASFTTrainer`, anchors) or "plain" (TRL's `SFTTrainer`).
        llama_*: size of a new Llama (width, depth, heads, key/value heads, MLP width, context).
        num_threads: torch threads per process (0 leaves torch's default).
    """

    data_dir: str = field(default="runs/data", metadata={"help": "Folder of the datasets splits (run_sft.py)."})
    train_split: str = field(default="finetune", metadata={"help": "Split to train on.",
                                                            "choices": ["pretrain", "finetune"]})
    subset_size: int | None = field(default=None, metadata={"help": "Train on a seeded subset of this many texts."})
    subset_seed: int = field(default=0, metadata={"help": "Seed of the subset."})
    base_model: str | None = field(default=None, metadata={"help": "Folder to start from; empty: a new Llama."})
    tokenizer_dir: str | None = field(default=None, metadata={"help": "Tokenizer of a new Llama."})
    trainer: str = field(default="tna", metadata={"help": "tna (TNASFTTrainer) or plain (SFTTrainer).",
                                                   "choices": list(TRAINERS)})
    llama_hidden_size: int = field(default=128, metadata={"help": "New Llama: hidden size."})
    llama_num_layers: int = field(default=4, metadata={"help": "New Llama: decoder layers."})
    llama_num_heads: int = field(default=4, metadata={"help": "New Llama: attention heads."})
    llama_num_kv_heads: int = field(default=2, metadata={"help": "New Llama: key/value heads."})
    llama_intermediate_size: int = field(default=384, metadata={"help": "New Llama: MLP width."})
    llama_context: int = field(default=128, metadata={"help": "New Llama: maximum positions."})
    num_threads: int = field(default=2, metadata={"help": "torch threads per process (0: torch default)."})

    def __post_init__(self):
        if self.trainer not in TRAINERS:
            raise ValueError(f"TrainSFTScriptConfig.trainer must be one of {TRAINERS}, got {self.trainer!r}")
        if self.base_model == "":
            self.base_model = None
        if self.base_model is None and not self.tokenizer_dir:
            raise ValueError("a new Llama (no --base_model) needs --tokenizer_dir")
        if self.llama_hidden_size % self.llama_num_heads or self.llama_num_heads % self.llama_num_kv_heads:
            raise ValueError(f"llama_hidden_size {self.llama_hidden_size} must be a multiple of llama_num_heads "
                             f"{self.llama_num_heads}, itself a multiple of llama_num_kv_heads {self.llama_num_kv_heads}")
        if self.subset_size is not None and self.subset_size < 1:
            raise ValueError(f"subset_size must be >= 1, got {self.subset_size}")


def build_parser():
    from transformers import HfArgumentParser

    from hf_tna.trl import TNASFTConfig

    parser = HfArgumentParser((TrainSFTScriptConfig, TNASFTConfig), description=__doc__)
    parser.set_defaults(**TRAINING_DEFAULTS)
    return parser


def build_model(cfg: TrainSFTScriptConfig, seed: int):
    """`base_model` with its tokenizer, or a new Llama (seeded) over the tokenizer of `tokenizer_dir`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, set_seed

    set_seed(seed)
    if cfg.base_model is not None:
        return AutoModelForCausalLM.from_pretrained(cfg.base_model), AutoTokenizer.from_pretrained(cfg.base_model)
    tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.llama_hidden_size, intermediate_size=cfg.llama_intermediate_size,
        num_hidden_layers=cfg.llama_num_layers, num_attention_heads=cfg.llama_num_heads,
        num_key_value_heads=cfg.llama_num_kv_heads, max_position_embeddings=cfg.llama_context,
        tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return LlamaForCausalLM(config), tokenizer


def train_dataset(cfg: TrainSFTScriptConfig):
    from datasets import Dataset
    from sft_data import load_texts

    texts = load_texts(Path(cfg.data_dir), cfg.train_split)
    if cfg.subset_size is not None and cfg.subset_size < len(texts):
        texts = random.Random(cfg.subset_seed).sample(texts, cfg.subset_size)
    return Dataset.from_dict({"text": texts})


def run_training(cfg: TrainSFTScriptConfig, args) -> dict:
    """Train one model into `args.output_dir` (atomically) and return its `train_result.json` content."""
    from trl import SFTTrainer

    from hf_tna.trl import TNASFTTrainer

    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    final = Path(args.output_dir)
    if final.exists() and any(final.iterdir()):
        raise FileExistsError(f"output_dir {final} exists and is not empty; remove it or choose another")
    model, tokenizer = build_model(cfg, args.seed)
    dataset = train_dataset(cfg)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    args.output_dir = str(tmp)
    trainer_cls = TNASFTTrainer if cfg.trainer == "tna" else SFTTrainer
    trainer = trainer_cls(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    try:
        start = time.time()
        output = trainer.train()
        runtime = time.time() - start
        trainer.save_model(str(tmp))
        hyperparameters = {"learning_rate": args.learning_rate, "weight_decay": args.weight_decay, "seed": args.seed,
                           "epochs": args.num_train_epochs, "max_steps": args.max_steps,
                           "batch_size": args.per_device_train_batch_size, "subset_size": len(dataset),
                           "subset_seed": cfg.subset_seed}
        if cfg.trainer == "tna":
            hyperparameters["anchors"] = args.anchor_spec.to_dict()
        result = {
            "trainer": cfg.trainer, "train_split": cfg.train_split, "train_size": len(dataset),
            "base_model": cfg.base_model, "hyperparameters": hyperparameters,
            "train_loss": float(output.training_loss), "train_runtime_s": runtime,
            "steps": int(trainer.state.global_step), "world_size": int(args.world_size), "device": str(args.device),
            "anchor_drift": trainer.anchored_optimizer.anchor_drift() if cfg.trainer == "tna" else None,
            "num_parameters": int(sum(p.numel() for p in model.parameters())), "config": asdict(cfg),
        }
        if trainer.is_world_process_zero():
            (tmp / RESULT_NAME).write_text(json.dumps(result, indent=2, sort_keys=True, default=str))
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists():
                final.rmdir()  # empty, checked above
            tmp.rename(final)
        trainer.accelerator.wait_for_everyone()
    except BaseException:
        if trainer.is_world_process_zero():
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        args.output_dir = str(final)
    return result


def main(argv: list[str] | None = None) -> dict:
    cfg, args = build_parser().parse_args_into_dataclasses(args=argv)
    return run_training(cfg, args)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
