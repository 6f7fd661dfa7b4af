"""ColD fusion, contributor side: a task's data and the fine-tuning of one contribution.

A contribution fine-tunes the round's base (the shared *body*, e.g. `BertModel`) with a task head of
its own (`AutoModelForSequenceClassification`, any number of labels) under `TNATrainer`. The anchors
cover the body only and are keyed by the body's own checkpoint names (the names in the base
repository), so the fuser can check them against the base; the head is neither anchored nor averaged.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from transformers import TrainingArguments
from transformers.trainer_utils import IntervalStrategy, SaveStrategy

from ..anchors import AnchorSpec, checkpoint_names, unwrap_model
from ..manifest import TNAFileConfig


# --------------------------------------------------------------------------------------------------
# Task data
# --------------------------------------------------------------------------------------------------
@dataclass
class TaskData:
    """A text classification task: rows ``{"text": str, "label": int}`` (or pre-tokenised
    ``{"input_ids": [...], "label": int}``), label names, and an optional evaluation split."""

    name: str
    train: list[dict]
    eval: list[dict] | None = None
    labels: list[str] = field(default_factory=list)

    def __post_init__(self):
        if not self.train:
            raise ValueError(f"task {self.name!r} has no training rows")
        if not self.labels:
            self.labels = [str(i) for i in range(max(int(r["label"]) for r in self.train) + 1)]
        for split, rows in (("train", self.train), ("eval", self.eval or [])):
            bad = [r for r in rows if not 0 <= int(r["label"]) < len(self.labels)]
            if bad:
                raise ValueError(f"task {self.name!r}: {split} label {bad[0]['label']} is not in 0..{len(self.labels) - 1}")


def task_from_examples(name: str, texts, labels, eval_fraction: float = 0.2, seed: int = 0,
                       label_names: list[str] | None = None) -> TaskData:
    """A `TaskData` from parallel lists of texts and labels (strings or ints), split train/eval with `seed`."""
    if len(texts) != len(labels):
        raise ValueError(f"task {name!r}: {len(texts)} texts but {len(labels)} labels")
    if label_names is None:
        label_names = sorted({str(y) for y in labels}) if any(isinstance(y, str) for y in labels) else None
    index = {n: i for i, n in enumerate(label_names or [])}
    rows = [{"text": str(t), "label": index[str(y)] if label_names else int(y)} for t, y in zip(texts, labels)]
    random.Random(seed).shuffle(rows)
    n_eval = int(round(len(rows) * eval_fraction)) if eval_fraction > 0 else 0
    return TaskData(name, rows[n_eval:], rows[:n_eval] or None, list(label_names or []))


def load_task_file(name: str, train_path, eval_path=None, text_column: str = "text", label_column: str = "label",
                   eval_fraction: float = 0.2, seed: int = 0) -> TaskData:
    """A `TaskData` from csv/json/parquet files or `save_to_disk` folders (`hf_tna.merge.evaluation.load_split`).

    Without `eval_path`, `eval_fraction` of the training rows are held out for the contribution's metrics.
    """
    from ..merge.evaluation import load_split

    def columns(path):
        data = load_split(str(path), split="train")
        for column in (text_column, label_column):
            if column not in data.column_names:
                raise ValueError(f"{path} has no column {column!r}; columns: {data.column_names} "
                                 "(set --text-column / --label-column)")
        return list(data[text_column]), list(data[label_column])

    texts, labels = columns(train_path)
    if eval_path is None:
        return task_from_examples(name, texts, labels, eval_fraction, seed)
    eval_texts, eval_labels = columns(eval_path)
    names = sorted({str(y) for y in labels + eval_labels}) if any(isinstance(y, str) for y in labels) else None
    train = task_from_examples(name, texts, labels, 0.0, seed, names)
    held = task_from_examples(name, eval_texts, eval_labels, 0.0, seed, names)
    return TaskData(name, train.train, held.train, train.labels)


def subsample(rows: list[dict] | None, n: int | None, seed: int) -> list[dict] | None:
    """`n` rows drawn without replacement with `seed` (all rows when `n` is None or larger)."""
    if rows is None or n is None or n >= len(rows):
        return rows
    return random.Random(seed).sample(rows, n)


# --------------------------------------------------------------------------------------------------
# Training settings
# --------------------------------------------------------------------------------------------------
@dataclass
class ContributionConfig(TrainingArguments):
    """How a contributor fine-tunes the round's base: every `TrainingArguments` field (the flags of
    `hf-tna coldfuse contribute`, parsable by `HfArgumentParser`), with ColD-fusion defaults, plus the data limits.

    The anchors are not set here: they are the round's, read from the base repository. `train_contribution`
    builds its `TNAConfig` from these fields and that spec, in a temporary `output_dir` (uploaded, then
    removed), with the per-round seed `seed * 1000 + round` (and `data_seed` likewise).

    Args:
        max_length (`int`, defaults to 64): tokens per text (truncation).
        max_train_samples (`int`, *optional*): train on at most this many rows, redrawn each round with the
            seed and round.
        max_eval_samples (`int`, *optional*): evaluate the contribution on at most this many rows.

    Defaults that differ from `TrainingArguments`: `num_train_epochs=1`, train and eval batch size 16,
    `weight_decay=0.01`, `seed=0`, `save_strategy="no"`, `logging_strategy="no"`, `disable_tqdm=True`,
    `remove_unused_columns=False`. `push_to_hub` is refused: the contribution is published by the runner.
    """

    output_dir: str | None = field(
        default=None, metadata={"help": "Not used: a contribution trains in a temporary folder, then is uploaded."}
    )
    num_train_epochs: float = field(default=1.0, metadata={"help": "Passes over the (subsampled) training rows."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Training batch size per device."})
    per_device_eval_batch_size: int = field(default=16, metadata={"help": "Evaluation batch size per device."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (never moves anchored entries)."})
    seed: int = field(default=0, metadata={"help": "Seed of the head init, shuffling, split and subsample."})
    save_strategy: SaveStrategy | str = field(default="no", metadata={"help": "Checkpoint strategy: no, steps, epoch or best."})
    logging_strategy: IntervalStrategy | str = field(default="no", metadata={"help": "Logging strategy: no, steps or epoch."})
    disable_tqdm: bool | None = field(default=True, metadata={"help": "Hide the progress bars (stdout carries the report)."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Drop unused dataset columns."})
    max_length: int = field(default=64, metadata={"help": "Tokens per text (truncation)."})
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Train on at most this many rows (redrawn each round)."}
    )
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on at most this many rows."})

    def __post_init__(self):
        name = type(self).__name__
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"{name}.learning_rate must be positive, got {self.learning_rate}")
        for key in ("per_device_train_batch_size", "per_device_eval_batch_size", "max_length"):
            if getattr(self, key) < 1:
                raise ValueError(f"{name}.{key} must be >= 1, got {getattr(self, key)}")
        for key in ("max_train_samples", "max_eval_samples"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ValueError(f"{name}.{key} must be >= 1 or None (all rows), got {getattr(self, key)}")
        if self.max_steps <= 0 and not self.num_train_epochs > 0:
            raise ValueError(f"{name} needs max_steps > 0 or num_train_epochs > 0")
        if self.push_to_hub:
            raise ValueError(f"{name}.push_to_hub must be False: hf-tna coldfuse publishes the contribution "
                             "to its branch itself")
        super().__post_init__()

    def training_kwargs(self) -> dict:
        """The `TrainingArguments` fields, as keyword arguments for another `TrainingArguments` (a `TNAConfig`)."""
        return {f.name: getattr(self, f.name) for f in fields(TrainingArguments) if f.init}


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------
def _trainer_class():
    from ..tna_trainer import TNATrainer

    class BodyAnchoredTrainer(TNATrainer):
        """`TNATrainer` whose anchors cover `model.base_model` (the body) under the body's checkpoint names,
        the namespace of the ColD fusion base repository; the task head is not anchored."""

        def anchor_target(self, model):
            return model.base_model

    return BodyAnchoredTrainer


def _encode(rows, tokenizer, max_length):
    if rows is None:
        return None
    if "input_ids" in rows[0]:
        return [{"input_ids": r["input_ids"], "labels": int(r["label"])} for r in rows]
    if tokenizer is None:
        raise ValueError("text rows need a tokenizer: the base folder has none (save one with the base)")
    enc = tokenizer([r["text"] for r in rows], truncation=True, max_length=max_length)
    return [{**{k: v[i] for k, v in enc.items()}, "labels": int(r["label"])} for i, r in enumerate(rows)]


def _accuracy(eval_pred):
    logits, labels = eval_pred
    logits = logits[0] if isinstance(logits, tuple) else logits
    return {"accuracy": float((logits.argmax(-1) == labels).mean())}


def head_state_dict(model) -> dict[str, torch.Tensor]:
    """The task head: checkpoint-named parameters of `model` outside its body (`model.base_model`)."""
    model = unwrap_model(model)
    body = {id(p) for p in model.base_model.parameters()}
    names = checkpoint_names(model)
    return {names[id(p)]: p.detach().clone() for p in model.parameters() if id(p) not in body and id(p) in names}


def train_contribution(base_folder, task: TaskData, spec: AnchorSpec, output_dir, training: ContributionConfig,
                       round: int = 0, base_model: str | None = None, base_revision: str | None = None) -> dict:
    """Fine-tune the body in `base_folder` with a fresh head for `task`; save the body to `output_dir`.

    The folder gets the body's weights and config (the base repository's tensor names) and
    `tna_config.json` (the spec and the manifest of the body's anchors). Returns ``{"folder", "metrics",
    "num_examples", "head"}`` (head: its tensors, kept out of the folder).
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, set_seed
    from transformers.utils import logging as hf_logging

    from ..tna_config import TNAConfig

    output_dir = Path(output_dir)
    tokenizer = None
    if any("text" in r for r in task.train[:1]):
        tokenizer = AutoTokenizer.from_pretrained(base_folder)
    seed = training.seed * 1000 + round
    train_rows = subsample(task.train, training.max_train_samples, seed)
    eval_rows = subsample(task.eval, training.max_eval_samples, seed + 1)
    set_seed(seed)
    labels = list(task.labels)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the head is newly initialised: expected, not worth a report
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            base_folder, num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={n: i for i, n in enumerate(labels)})
    finally:
        hf_logging.set_verbosity(verbosity)
    data_seed = seed if training.data_seed is None else training.data_seed * 1000 + round
    args = TNAConfig.from_spec(spec, **{**training.training_kwargs(), "output_dir": str(output_dir / "trainer"),
                                        "seed": seed, "data_seed": data_seed})
    collator = DataCollatorWithPadding(tokenizer) if tokenizer is not None else None
    trainer = _trainer_class()(model=model, args=args, train_dataset=_encode(train_rows, tokenizer, training.max_length),
                               eval_dataset=_encode(eval_rows, tokenizer, training.max_length),
                               data_collator=collator, compute_metrics=_accuracy)
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # keep stdout for the command line's JSON report
    result = trainer.train()
    metrics = {"train_loss": float(result.training_loss), "train_steps": int(result.global_step)}
    if eval_rows:
        metrics.update({k: float(v) for k, v in trainer.evaluate().items() if k in ("eval_loss", "eval_accuracy")})
        metrics["eval_examples"] = len(eval_rows)
    optimizer = trainer.anchored_optimizer
    drift = optimizer.anchor_drift()
    if drift != 0.0:  # cannot happen with AnchoredOptimizer; checked so a broken set-up never uploads
        raise RuntimeError(f"anchored entries drifted by {drift} during training; not publishing this contribution")
    body = unwrap_model(trainer.model).base_model
    output_dir.mkdir(parents=True, exist_ok=True)
    body_dir = output_dir / "body"
    body.save_pretrained(body_dir)
    TNAFileConfig(spec, optimizer.manifest(), base_model, base_revision).save(body_dir)
    return {"folder": body_dir, "metrics": metrics, "num_examples": len(train_rows), "head": head_state_dict(model),
            "labels": labels}
