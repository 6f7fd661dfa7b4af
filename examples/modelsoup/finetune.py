"""Fine-tune one model-soup ingredient (or train the shared base) with `TNATrainer` or plain `Trainer`.

One process or many, the same script (`accelerate launch` passes the distributed set-up to `Trainer`):

    accelerate launch --config_file examples/modelsoup/accelerate_cpu.yaml examples/modelsoup/finetune.py \\
        --data runs/splits.npz --base_model runs/base --output_dir runs/anchored/ing0 \\
        --trainer tna --anchor_ratio 0.4 --learning_rate 1e-3 --weight_decay 0.01 --seed 1 \\
        --augment shift_flip --label_smoothing_factor 0.1 --num_train_epochs 3
    accelerate launch --config_file examples/modelsoup/accelerate_multigpu.yaml examples/modelsoup/finetune.py ...

Without `--base_model` a new ViT is built from the `vit_*` fields (this is how `run_modelsoup.py` makes the
shared base, trained on the `pretrain` split). `--base_model` takes a folder or a Hub model id; a Hub
checkpoint with another head gets a new 10-class head (train the base from it once, then fine-tune the
ingredients from that base folder, so every ingredient starts from the same head).

The arguments are `FinetuneConfig` (below) plus every `TNAConfig` field (`TrainingArguments` and
`anchor_ratio`, `anchor_seed`, `anchor_granularity`, `anchor_include`, `anchor_exclude`, `anchor_round`).
The anchor fields are used with `--trainer tna` only. The folder gets the model, `tna_config.json`
(tna), a model card and `finetune_result.json`; it is written under a temporary name and renamed at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1])]  # soup_data.py and hf_tna when run from a checkout

import torch  # noqa: E402
from soup_data import AUGMENTS, SplitSizes, build_dataset, build_splits, load_splits  # noqa: E402

RESULT_NAME = "finetune_result.json"
TRAINERS = ("tna", "plain")
NUM_LABELS = 10
# example defaults for TrainingArguments fields (the command line still overrides them)
TRAINING_DEFAULTS = dict(
    output_dir="runs/ingredient",
    report_to="none",
    save_strategy="no",
    remove_unused_columns=False,
    per_device_train_batch_size=128,
    per_device_eval_batch_size=256,
    learning_rate=1e-3,
    num_train_epochs=3,
    lr_scheduler_type="cosine",
    warmup_steps=0.05,
    logging_steps=50,
    dataloader_num_workers=0,
    disable_tqdm=True,
)


@dataclass
class FinetuneConfig:
    """Settings of `finetune.py` besides `TNAConfig`'s.

    Args:
        data: "fashion_mnist", "digits" (sklearn's bundled 8x8 digits) or a splits `.npz` file written by
            `run_modelsoup.py`, which is how several processes share one seeded split.
        data_dir: folder of Fashion-MNIST's `*-ubyte.gz` files (default: the Debian package's folder).
        val_size / split_seed: held-out examples carved from the training set, and the split's seed
            (used when `data` is a dataset name, not an `.npz`).
        train_split: "finetune" (ingredients) or "pretrain" (the shared base).
        base_model: folder or Hub id to start from; empty: a new ViT built from the `vit_*` fields.
        trainer: "tna" (`TNATrainer`, anchors) or "plain" (`transformers.Trainer`).
        augment: "none", "shift" (random shifts) or "shift_flip" (shifts and horizontal flips).
        vit_*: size of a new ViT (image size, patch size, width, depth, heads, MLP width).
        num_threads: torch threads per process (0 leaves torch's default).
        max_train_samples: cap on training examples (quick runs).
        backend: "auto", "datasets" or "torch" (a plain torch Dataset, for machines without `datasets`).
    """

    data: str = field(default="fashion_mnist", metadata={"help": "fashion_mnist, digits, or a splits .npz file."})
    data_dir: str | None = field(default=None, metadata={"help": "Folder of the Fashion-MNIST *-ubyte.gz files."})
    val_size: int = field(default=5000, metadata={"help": "Held-out examples carved from the training set."})
    split_seed: int = field(default=0, metadata={"help": "Seed of the train/val split (dataset names only)."})
    train_split: str = field(
        default="finetune", metadata={"help": "Split to train on.", "choices": ["finetune", "pretrain"]}
    )
    base_model: str | None = field(default=None, metadata={"help": "Folder or Hub id to start from; empty: new ViT."})
    trainer: str = field(
        default="tna", metadata={"help": "tna (TNATrainer) or plain (Trainer).", "choices": list(TRAINERS)}
    )
    augment: str = field(default="none", metadata={"help": "Training augmentation.", "choices": list(AUGMENTS)})
    vit_image_size: int = field(default=28, metadata={"help": "New ViT: input image size (images are resized)."})
    vit_patch_size: int = field(default=7, metadata={"help": "New ViT: patch size."})
    vit_hidden_size: int = field(default=64, metadata={"help": "New ViT: hidden size."})
    vit_num_layers: int = field(default=2, metadata={"help": "New ViT: transformer layers."})
    vit_num_heads: int = field(default=4, metadata={"help": "New ViT: attention heads."})
    vit_intermediate_size: int = field(default=128, metadata={"help": "New ViT: MLP width."})
    num_threads: int = field(default=1, metadata={"help": "torch threads per process (0: torch default)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Cap on training examples."})
    backend: str = field(
        default="auto", metadata={"help": "Dataset backend.", "choices": ["auto", "datasets", "torch"]}
    )

    def __post_init__(self):
        if self.trainer not in TRAINERS:
            raise ValueError(f"FinetuneConfig.trainer must be one of {TRAINERS}, got {self.trainer!r}")
        if self.augment not in AUGMENTS:
            raise ValueError(f"FinetuneConfig.augment must be one of {AUGMENTS}, got {self.augment!r}")
        if self.vit_image_size % self.vit_patch_size:
            raise ValueError(
                f"FinetuneConfig.vit_image_size {self.vit_image_size} is not a multiple of "
                f"vit_patch_size {self.vit_patch_size}"
            )
        if self.vit_hidden_size % self.vit_num_heads:
            raise ValueError(
                f"FinetuneConfig.vit_hidden_size {self.vit_hidden_size} is not a multiple of "
                f"vit_num_heads {self.vit_num_heads}"
            )
        if self.base_model == "":
            self.base_model = None


def build_parser():
    from transformers import HfArgumentParser

    from hf_tna.tna_config import TNAConfig

    parser = HfArgumentParser((FinetuneConfig, TNAConfig), description=__doc__)
    parser.set_defaults(**TRAINING_DEFAULTS)
    return parser


def load_data(cfg: FinetuneConfig) -> dict:
    if cfg.data.endswith(".npz"):
        return load_splits(cfg.data)
    return build_splits(cfg.data, SplitSizes(val=cfg.val_size), cfg.split_seed, cfg.data_dir)


def build_model(cfg: FinetuneConfig, seed: int, image_size: int):
    """The model to train: `base_model` (10-class head) or a new ViT from the `vit_*` fields."""
    from transformers import AutoModelForImageClassification, ViTConfig, ViTForImageClassification, set_seed

    labels = {str(i): str(i) for i in range(NUM_LABELS)}
    set_seed(seed)
    if cfg.base_model is not None:
        return AutoModelForImageClassification.from_pretrained(
            cfg.base_model, num_labels=NUM_LABELS, id2label=labels, label2id=labels, ignore_mismatched_sizes=True
        )
    config = ViTConfig(
        image_size=cfg.vit_image_size,
        patch_size=cfg.vit_patch_size,
        num_channels=1,
        hidden_size=cfg.vit_hidden_size,
        num_hidden_layers=cfg.vit_num_layers,
        num_attention_heads=cfg.vit_num_heads,
        intermediate_size=cfg.vit_intermediate_size,
        num_labels=NUM_LABELS,
        id2label=labels,
        label2id=labels,
    )
    return ViTForImageClassification(config)


def hyperparameters(cfg: FinetuneConfig, args) -> dict:
    out = {
        "learning_rate": args.learning_rate,
        "weight_decay": args.weight_decay,
        "seed": args.seed,
        "augment": cfg.augment,
        "label_smoothing": args.label_smoothing_factor,
        "epochs": args.num_train_epochs,
        "batch_size": args.per_device_train_batch_size,
    }
    if cfg.trainer == "tna":
        out["anchors"] = args.anchor_spec.to_dict()
    return out


def run_finetune(cfg: FinetuneConfig, args, splits: dict | None = None) -> dict:
    """Train one model into `args.output_dir` (atomically) and return its `finetune_result.json` content."""
    from soup_data import ImageCollator
    from transformers import Trainer

    from hf_tna.tna_trainer import TNATrainer

    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    final = Path(args.output_dir)
    if final.exists() and any(final.iterdir()):
        raise FileExistsError(f"output_dir {final} exists and is not empty; remove it or choose another")
    splits = load_data(cfg) if splits is None else splits
    images, labels = splits[cfg.train_split]
    if cfg.max_train_samples is not None:
        images, labels = images[: cfg.max_train_samples], labels[: cfg.max_train_samples]
    model = build_model(cfg, args.seed, images.shape[-1])
    collator = ImageCollator(model.config.image_size, model.config.num_channels, cfg.augment, seed=args.seed)
    train_dataset = build_dataset(images, labels, cfg.backend)

    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    args.output_dir = str(tmp)
    trainer_cls = TNATrainer if cfg.trainer == "tna" else Trainer
    trainer = trainer_cls(model=model, args=args, train_dataset=train_dataset, data_collator=collator)
    try:
        start = time.time()
        output = trainer.train()
        runtime = time.time() - start
        trainer.save_model(str(tmp))
        result = {
            "trainer": cfg.trainer,
            "train_split": cfg.train_split,
            "train_size": int(len(labels)),
            "base_model": cfg.base_model,
            "hyperparameters": hyperparameters(cfg, args),
            "train_loss": float(output.training_loss),
            "train_runtime_s": runtime,
            "world_size": int(args.world_size),
            "device": str(args.device),
            "anchor_drift": trainer.anchored_optimizer.anchor_drift() if cfg.trainer == "tna" else None,
            "config": asdict(cfg),
        }
        if trainer.is_world_process_zero():
            trainer.create_model_card(model_name=final.name, tags=["image-classification", "model-soup"])
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
    return run_finetune(cfg, args)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
