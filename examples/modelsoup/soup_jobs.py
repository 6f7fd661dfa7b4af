"""Training one model of the model-soup example: a `FinetuneJob` (finetune.py's settings as dataclasses, turned
into its command line by `hf_tna.arguments.dataclass_to_argv`), run in this process or under `accelerate launch`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from finetune import RESULT_NAME, FinetuneConfig
from soup_config import SoupExperimentConfig

from hf_tna.arguments import AnchorArguments, dataclass_to_argv
from hf_tna.launch import accelerate_launch

HERE = Path(__file__).resolve().parent


@dataclass
class ModelTrainingArguments:
    """The `TrainingArguments` fields this script sets for each model it trains; finetune.py's defaults give
    the rest. Field names are `TrainingArguments`' own, so `dataclass_to_argv` makes finetune.py flags of them."""

    output_dir: str
    seed: int
    learning_rate: float
    weight_decay: float
    label_smoothing_factor: float
    num_train_epochs: float
    per_device_train_batch_size: int
    dataloader_num_workers: int
    dataloader_pin_memory: bool
    use_cpu: bool
    bf16: bool
    logging_strategy: str
    logging_steps: int


@dataclass
class FinetuneJob:
    """One model for finetune.py: its script settings, anchor settings and `TrainingArguments` fields."""

    what: str  # for the progress lines
    script: FinetuneConfig
    anchors: AnchorArguments
    training: ModelTrainingArguments
    log: Path

    @property
    def output_dir(self) -> Path:
        return Path(self.training.output_dir)

    def argv(self) -> list[str]:
        """finetune.py's command line."""
        return [*dataclass_to_argv(self.script), *dataclass_to_argv(self.anchors), *dataclass_to_argv(self.training)]


def build_job(
    cfg: SoupExperimentConfig,
    what: str,
    splits_path: Path,
    out: Path,
    log: Path,
    trainer: str,
    hp: dict,
    base: str | None,
    epochs: float,
    train_split: str = "finetune",
) -> FinetuneJob:
    """The finetune.py job of one model: `hp` holds its drawn hyperparameters, `base` the folder to start from
    (None: a new ViT from the `vit_*` settings)."""
    script = FinetuneConfig(
        data=str(splits_path),
        train_split=train_split,
        base_model=base,
        trainer=trainer,
        augment=hp["augment"],
        vit_image_size=cfg.vit_image_size,
        vit_patch_size=cfg.vit_patch_size,
        vit_hidden_size=cfg.vit_hidden_size,
        vit_num_layers=cfg.vit_num_layers,
        vit_num_heads=cfg.vit_num_heads,
        vit_intermediate_size=cfg.vit_intermediate_size,
        num_threads=cfg.num_threads,
        backend=cfg.backend,
    )
    training = ModelTrainingArguments(
        output_dir=str(out),
        seed=hp["seed"],
        learning_rate=hp["learning_rate"],
        weight_decay=hp["weight_decay"],
        label_smoothing_factor=hp["label_smoothing"],
        num_train_epochs=epochs,
        per_device_train_batch_size=cfg.batch_size,
        dataloader_num_workers=cfg.dataloader_num_workers,
        dataloader_pin_memory=cfg.device != "cpu" and torch.cuda.is_available(),
        use_cpu=cfg.device == "cpu",
        bf16=cfg.bf16,
        logging_strategy="no" if cfg.launcher == "inprocess" else "steps",
        logging_steps=50,
    )
    return FinetuneJob(what, script, AnchorArguments(**cfg.anchor_kwargs()), training, log)


def launch_finetune(cfg: SoupExperimentConfig, job: FinetuneJob) -> dict:
    """Run finetune.py in this process or under `accelerate launch`; return its finetune_result.json."""
    argv, out, log = job.argv(), job.output_dir, job.log
    if cfg.launcher == "inprocess":
        import finetune

        return finetune.main(argv)
    config = cfg.accelerate_config or str(
        HERE / ("accelerate_multigpu.yaml" if cfg.device == "cuda" else "accelerate_cpu.yaml")
    )
    accelerate_launch(HERE / "finetune.py", argv, config_file=config, num_threads=cfg.num_threads, log=log,
                      what=str(out))
    return json.loads((out / RESULT_NAME).read_text())


def train_model(cfg: SoupExperimentConfig, job: FinetuneJob) -> dict:
    """Train `job`'s model, or reuse it when its folder already holds a finished one; return its result."""
    result_file = job.output_dir / RESULT_NAME
    if result_file.exists():
        print(f"[modelsoup] {job.what}: reusing {job.output_dir}", flush=True)
        return json.loads(result_file.read_text())
    result = launch_finetune(cfg, job)
    print(
        f"[modelsoup] {job.what}: train loss {result['train_loss']:.4f} in {result['train_runtime_s']:.1f} s",
        flush=True,
    )
    return result
