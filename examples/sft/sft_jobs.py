"""Training one model of the SFT example: a `TrainJob` (train_sft.py's settings as dataclasses, turned into its
command line by `hf_tna.arguments.dataclass_to_argv`), run in this process or under `accelerate launch`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sft_config import SFTExperimentConfig
from train_sft import RESULT_NAME, TrainSFTScriptConfig

from hf_tna.arguments import AnchorArguments, dataclass_to_argv
from hf_tna.launch import accelerate_launch

HERE = Path(__file__).resolve().parent


@dataclass
class SFTTrainingFields:
    """The `SFTConfig` / `TrainingArguments` fields this example sets per model; train_sft.py's defaults give the
    rest. Field names are `SFTConfig`'s own, so `dataclass_to_argv` makes train_sft.py flags of them."""

    output_dir: str
    seed: int
    learning_rate: float
    num_train_epochs: float
    max_steps: int
    per_device_train_batch_size: int
    max_length: int
    logging_strategy: str


@dataclass
class TrainJob:
    """One model for train_sft.py: its script settings, anchor settings and `SFTConfig` fields."""

    what: str  # for the progress lines
    script: TrainSFTScriptConfig
    anchors: AnchorArguments
    training: SFTTrainingFields
    log: Path

    @property
    def output_dir(self) -> Path:
        return Path(self.training.output_dir)

    def argv(self) -> list[str]:
        """train_sft.py's command line."""
        return [*dataclass_to_argv(self.script), *dataclass_to_argv(self.anchors), *dataclass_to_argv(self.training)]


def build_job(cfg: SFTExperimentConfig, what: str, data_dir: Path, out: Path, log: Path, trainer: str, hp: dict,
              base: Path | None, tokenizer_dir: Path | None = None) -> TrainJob:
    """The train_sft.py job of one model. `hp`: learning_rate, seed, subset_size, subset_seed, epochs, max_steps,
    batch_size; `base`: the folder to start from (None: a new Llama over `tokenizer_dir`, on the pretrain split)."""
    script = TrainSFTScriptConfig(
        data_dir=str(data_dir), train_split="pretrain" if base is None else "finetune",
        subset_size=hp.get("subset_size"), subset_seed=hp.get("subset_seed", 0),
        base_model=None if base is None else str(base), tokenizer_dir=None if tokenizer_dir is None else str(tokenizer_dir),
        trainer=trainer, llama_hidden_size=cfg.llama_hidden_size, llama_num_layers=cfg.llama_num_layers,
        llama_num_heads=cfg.llama_num_heads, llama_num_kv_heads=cfg.llama_num_kv_heads,
        llama_intermediate_size=cfg.llama_intermediate_size, llama_context=max(cfg.max_length, 16),
        num_threads=cfg.num_threads,
    )
    training = SFTTrainingFields(
        output_dir=str(out), seed=hp["seed"], learning_rate=hp["learning_rate"], num_train_epochs=hp.get("epochs", 1.0),
        max_steps=hp.get("max_steps", -1), per_device_train_batch_size=hp["batch_size"], max_length=cfg.max_length,
        logging_strategy="no" if cfg.launcher == "inprocess" else "steps",
    )
    return TrainJob(what, script, AnchorArguments(**cfg.anchor_kwargs()), training, log)


def launch(cfg: SFTExperimentConfig, job: TrainJob) -> dict:
    """Run train_sft.py in this process or under `accelerate launch`; return its train_result.json."""
    argv, out, log = job.argv(), job.output_dir, job.log
    if cfg.launcher == "inprocess":
        import train_sft

        return train_sft.main(argv)
    config = cfg.accelerate_config or str(HERE / "accelerate_cpu.yaml")
    accelerate_launch(HERE / "train_sft.py", argv, config_file=config, num_threads=cfg.num_threads, log=log,
                      what=str(out))
    return json.loads((out / RESULT_NAME).read_text())


def train_model(cfg: SFTExperimentConfig, job: TrainJob) -> dict:
    """Train `job`'s model, or reuse it when its folder already holds a finished one; return its result."""
    result_file = job.output_dir / RESULT_NAME
    if result_file.exists():
        print(f"[sft] {job.what}: reusing {job.output_dir}", flush=True)
        return json.loads(result_file.read_text())
    result = launch(cfg, job)
    print(f"[sft] {job.what}: train loss {result['train_loss']:.4f}, {result['steps']} steps in "
          f"{result['train_runtime_s']:.1f} s", flush=True)
    return result
