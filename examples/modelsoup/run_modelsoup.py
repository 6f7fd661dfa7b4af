"""Model soups of ViT ingredients fine-tuned with and without TNA-PFN anchors, end to end.

    python examples/modelsoup/run_modelsoup.py --quick      # sklearn digits, ~2 min on 2 CPU cores (make demo)
    python examples/modelsoup/run_modelsoup.py --smoke      # the same, smaller (tests)
    python examples/modelsoup/run_modelsoup.py              # Fashion-MNIST, `accelerate launch` per ingredient

Steps: (1) split the data once (`splits.npz`: pretrain / finetune / held-out val carved from train / test);
(2) train the shared base on `pretrain` (a new small ViT, or `--base_model` a folder or Hub id);
(3) fine-tune K ingredients from the base on `finetune` with drawn hyperparameters (learning rate, weight
decay, label smoothing, augmentation, seed), once with `TNATrainer` (anchors) and once with plain `Trainer`,
same hyperparameters; (4) uniform and greedy soups of each set with `hf_tna.merge.soup.build_soup`; (5) check the
anchors with `hf_tna.verify.verify_anchors`, score everything on held-out and test, and write
`results.json`, `results.md` and `modelsoup.png`; (6) optionally push a soup with `--push_to_hub REPO`.
Finished steps are reused when the script is run again with the same settings.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1])]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from soup_data import SplitSizes, build_splits, save_splits, split_sizes  # noqa: E402

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
class SoupExperimentConfig:
    """Settings of `run_modelsoup.py` (every field is a command-line flag; `--quick`/`--smoke` change defaults).

    Data and sizes: `data`, `data_dir`, `pretrain_size`/`finetune_size` (empty: split the rest in halves),
    `val_size`, `test_size` (empty: the whole test set). Base: `base_model` (folder or Hub id; empty: a new
    ViT from the `vit_*` fields), `base_epochs`, `base_learning_rate`. Ingredients: `num_ingredients`,
    `epochs`, `batch_size`, ranges of the drawn hyperparameters, anchor settings. Execution: `launcher`
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
    anchor_ratio: float = field(default=0.4, metadata={"help": "TNA-PFN anchor ratio of the anchored set."})
    anchor_seed: int = field(default=0, metadata={"help": "Anchor mask seed (shared by all anchored ingredients)."})
    anchor_granularity: str = field(
        default="element", metadata={"help": "element or neuron.", "choices": ["element", "neuron"]}
    )
    anchor_exclude: list[str] | None = field(
        default=None,
        metadata={
            "help": "Regex patterns never anchored (default: none; the head is anchored as in the authors' code)."
        },
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
        metadata={"help": "hf (hf_tna.merge.evaluation), torch, or auto.", "choices": ["auto", "hf", "torch"]},
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
        if self.quick and self.smoke:
            raise ValueError("pass --quick or --smoke, not both")
        if self.num_ingredients < 1:
            raise ValueError(f"num_ingredients must be >= 1, got {self.num_ingredients}")
        if not 0 < self.lr_min <= self.lr_max or not 0 < self.wd_min <= self.wd_max:
            raise ValueError("need 0 < lr_min <= lr_max and 0 < wd_min <= wd_max")

    @property
    def mode(self) -> str:
        return "smoke" if self.smoke else "quick" if self.quick else "full"


def parse_config(argv: list[str] | None = None) -> SoupExperimentConfig:
    from transformers import HfArgumentParser

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = HfArgumentParser(SoupExperimentConfig, description=__doc__)
    (first,) = parser.parse_args_into_dataclasses(args=argv)
    if first.mode in PRESETS:
        parser.set_defaults(**PRESETS[first.mode])
        (first,) = parser.parse_args_into_dataclasses(args=argv)
    return first


# --------------------------------------------------------------------------------------------------
# Ingredients
# --------------------------------------------------------------------------------------------------
def draw_hyperparameters(cfg: SoupExperimentConfig) -> list[dict]:
    """K seeded hyperparameter draws (random search as in Wortsman et al. 2022), shared by both sets."""
    rng = np.random.default_rng(cfg.seed + 12345)
    augments = cfg.augments or (["none", "shift"] if cfg.data == "digits" else ["none", "shift", "shift_flip"])
    out = []
    for i in range(cfg.num_ingredients):
        out.append(
            {
                "learning_rate": float(f"{10 ** rng.uniform(np.log10(cfg.lr_min), np.log10(cfg.lr_max)):.3g}"),
                "weight_decay": float(f"{10 ** rng.uniform(np.log10(cfg.wd_min), np.log10(cfg.wd_max)):.3g}"),
                "label_smoothing": float(rng.choice(cfg.label_smoothings)),
                "augment": str(rng.choice(augments)),
                "seed": 1 + i,
            }
        )
    return out


def finetune_argv(
    cfg: SoupExperimentConfig,
    splits_path: Path,
    out: Path,
    trainer: str,
    hp: dict,
    base: str | None,
    epochs: float,
    train_split: str = "finetune",
) -> list[str]:
    argv = [
        "--data",
        str(splits_path),
        "--train_split",
        train_split,
        "--output_dir",
        str(out),
        "--trainer",
        trainer,
        "--augment",
        hp["augment"],
        "--learning_rate",
        str(hp["learning_rate"]),
        "--weight_decay",
        str(hp["weight_decay"]),
        "--seed",
        str(hp["seed"]),
        "--label_smoothing_factor",
        str(hp["label_smoothing"]),
        "--num_train_epochs",
        str(epochs),
        "--per_device_train_batch_size",
        str(cfg.batch_size),
        "--num_threads",
        str(cfg.num_threads),
        "--backend",
        cfg.backend,
        "--dataloader_num_workers",
        str(cfg.dataloader_num_workers),
        "--anchor_ratio",
        str(cfg.anchor_ratio),
        "--anchor_seed",
        str(cfg.anchor_seed),
        "--anchor_granularity",
        cfg.anchor_granularity,
    ]
    if base is not None:
        argv += ["--base_model", base]
    else:
        argv += [
            "--vit_image_size",
            str(cfg.vit_image_size),
            "--vit_patch_size",
            str(cfg.vit_patch_size),
            "--vit_hidden_size",
            str(cfg.vit_hidden_size),
            "--vit_num_layers",
            str(cfg.vit_num_layers),
            "--vit_num_heads",
            str(cfg.vit_num_heads),
            "--vit_intermediate_size",
            str(cfg.vit_intermediate_size),
        ]
    if cfg.anchor_exclude:
        argv += ["--anchor_exclude", *cfg.anchor_exclude]
    if cfg.device == "cpu":
        argv += ["--use_cpu"]
    if cfg.bf16:
        argv += ["--bf16"]
    if cfg.device == "cpu" or not torch.cuda.is_available():
        argv += ["--dataloader_pin_memory", "false"]
    argv += ["--logging_strategy", "no"] if cfg.launcher == "inprocess" else ["--logging_steps", "50"]
    return argv


def launch_finetune(cfg: SoupExperimentConfig, argv: list[str], log: Path) -> dict:
    """Run finetune.py in this process or under `accelerate launch`; return its finetune_result.json."""
    out = Path(argv[argv.index("--output_dir") + 1])
    if cfg.launcher == "inprocess":
        import finetune

        return finetune.main(argv)
    config = cfg.accelerate_config or str(
        HERE / ("accelerate_multigpu.yaml" if cfg.device == "cuda" else "accelerate_cpu.yaml")
    )
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        config,
        "--num_cpu_threads_per_process",
        str(max(cfg.num_threads, 1)),
        str(HERE / "finetune.py"),
        *argv,
    ]
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(max(cfg.num_threads, 1)), "TOKENIZERS_PARALLELISM": "false"}
    with open(log, "w") as f:
        f.write(shlex.join(cmd) + "\n")
        f.flush()
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        raise RuntimeError(f"accelerate launch failed ({proc.returncode}) for {out}; log {log}:\n{tail}")
    return json.loads((out / "finetune_result.json").read_text())


def train_model(cfg, argv, log, what: str) -> dict:
    out = Path(argv[argv.index("--output_dir") + 1])
    result_file = out / "finetune_result.json"
    if result_file.exists():
        print(f"[modelsoup] {what}: reusing {out}", flush=True)
        return json.loads(result_file.read_text())
    result = launch_finetune(cfg, argv, log)
    print(
        f"[modelsoup] {what}: train loss {result['train_loss']:.4f} in {result['train_runtime_s']:.1f} s", flush=True
    )
    return result


# --------------------------------------------------------------------------------------------------
# The experiment
# --------------------------------------------------------------------------------------------------
def prepare_work_dir(cfg: SoupExperimentConfig) -> Path:
    work = Path(cfg.work_dir) if cfg.work_dir else HERE / "runs" / cfg.mode
    if cfg.overwrite and work.exists():
        if any(work.iterdir()) and not (work / "run_config.json").exists():
            raise ValueError(f"refusing to delete {work}: it is not a run_modelsoup.py work dir (no run_config.json)")
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_COMPARED}
    saved = work / "run_config.json"
    if saved.exists() and json.loads(saved.read_text()) != json.loads(json.dumps(settings)):
        old = json.loads(saved.read_text())
        diff = sorted(k for k in set(old) | set(settings) if old.get(k) != json.loads(json.dumps(settings)).get(k))
        raise ValueError(
            f"{work} holds a run with other settings ({', '.join(diff)}); pass --overwrite or another --work_dir"
        )
    saved.write_text(json.dumps(settings, indent=2, sort_keys=True))
    return work


def model_summary(base: Path) -> dict:
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(str(base))
    from soup_eval import read_state_dict

    n = sum(t.numel() for t in read_state_dict(base).values())
    return {
        "description": f"ViT {c.image_size}x{c.image_size}x{c.num_channels}, patch {c.patch_size}, hidden "
        f"{c.hidden_size}, {c.num_hidden_layers} layers, {c.num_attention_heads} heads, MLP {c.intermediate_size}",
        "num_parameters": int(n),
        "config": {
            k: getattr(c, k)
            for k in (
                "image_size",
                "patch_size",
                "num_channels",
                "hidden_size",
                "num_hidden_layers",
                "num_attention_heads",
                "intermediate_size",
            )
        },
    }


def make_soups(folders: list[Path], soup_dir: Path, score_fn) -> dict:
    from hf_tna.merge.soup import build_soup

    out = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="un-anchored ingredient")  # the vanilla set, on purpose
        for method in SOUPS:
            target = soup_dir.parent / f"{soup_dir.name}_{method}"
            if (target / "fusion_recipe.yaml").exists():
                import yaml

                out[method] = {"folder": target, "recipe": yaml.safe_load((target / "fusion_recipe.yaml").read_text())}
                continue
            report = build_soup(
                [str(f) for f in folders],
                target,
                method=method,
                progress=False,
                score_fn=score_fn if method == "greedy" else None,
            )
            out[method] = {"folder": target, "recipe": report["recipe"]}
    return out


def run_experiment(cfg: SoupExperimentConfig, command: str = "") -> dict:
    from soup_eval import anchors_report, build_evaluator, resolve_eval_backend, save_eval_dataset, score_folder
    from transformers.utils import logging as hf_logging

    from hf_tna.manifest import TNAFileConfig

    hf_logging.set_verbosity_warning()
    hf_logging.disable_progress_bar()
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda but torch sees no CUDA device")
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    timings, t0 = {}, time.time()
    work = prepare_work_dir(cfg)
    results_dir = Path(cfg.results_dir) if cfg.results_dir else work
    results_dir.mkdir(parents=True, exist_ok=True)

    splits_path = work / "splits.npz"
    sizes = SplitSizes(cfg.pretrain_size, cfg.finetune_size, cfg.val_size, cfg.test_size)
    splits = build_splits(cfg.data, sizes, cfg.seed, cfg.data_dir)
    if not splits_path.exists():
        save_splits(splits_path, splits)
    print(f"[modelsoup] {cfg.mode} mode, {cfg.data}: {split_sizes(splits)}; work dir {work}", flush=True)

    t = time.time()
    base = work / "base"
    base_hp = {
        "learning_rate": cfg.base_learning_rate,
        "weight_decay": 0.01,
        "label_smoothing": 0.0,
        "seed": cfg.seed,
        "augment": "none" if cfg.data == "digits" else "shift_flip",
    }
    base_result = train_model(
        cfg,
        finetune_argv(cfg, splits_path, base, "plain", base_hp, cfg.base_model, cfg.base_epochs, "pretrain"),
        work / "logs" / "base.log",
        "base",
    )
    timings["base"] = time.time() - t

    hps = draw_hyperparameters(cfg)
    folders: dict[str, list[Path]] = {"anchored": [], "vanilla": []}
    train_results: dict[str, list[dict]] = {"anchored": [], "vanilla": []}
    t = time.time()
    for i, hp in enumerate(hps):
        budget = cfg.ingredient_time_budget_s
        if budget is not None and i >= 2 and time.time() - t0 > budget:
            print(f"[modelsoup] time budget {budget:.0f} s spent: soups of the first {i} ingredient pairs", flush=True)
            hps = hps[:i]
            break
        for name, trainer in (("anchored", "tna"), ("vanilla", "plain")):
            out = work / name / f"ing{i}"
            argv = finetune_argv(cfg, splits_path, out, trainer, hp, str(base), cfg.epochs)
            train_results[name].append(
                train_model(cfg, argv, work / "logs" / f"{name}_ing{i}.log", f"{name} ingredient {i} ({hp})")
            )
            folders[name].append(out)
    timings["ingredients"] = time.time() - t

    t = time.time()
    backend = resolve_eval_backend(cfg.eval_backend, cfg.device)
    evaluators = {
        split: build_evaluator(
            base, *splits[split], backend=backend, device=cfg.device, batch_size=cfg.eval_batch_size
        )
        for split in ("val", "test")
    }
    from hf_tna.merge.evaluation import build_score_fn

    score_fn = build_score_fn(evaluators["val"], "accuracy")
    if backend == "hf" and not (work / "val_dataset").exists():  # for `hf-tna soup --method greedy --dataset`
        save_eval_dataset(work / "val_dataset", base, *splits["val"])
    anchor_config = TNAFileConfig.load(folders["anchored"][0])
    results = {
        "mode": cfg.mode,
        "command": command,
        "config": dataclasses.asdict(cfg),
        "sizes": split_sizes(splits),
        "model": model_summary(base),
        "device": _device_name(cfg),
        "eval_backend": backend,
        "base": {**score_folder(base, evaluators), "train": base_result},
        "sets": {},
    }
    for name in ("anchored", "vanilla"):
        ingredients = []
        for i, folder in enumerate(folders[name]):
            row = {
                "name": f"ing{i}",
                "folder": str(folder),
                "hyperparameters": hps[i],
                **score_folder(folder, evaluators),
                "train_loss": train_results[name][i]["train_loss"],
                "train_runtime_s": train_results[name][i]["train_runtime_s"],
                "anchors": anchors_report(folder, base, None if name == "anchored" else anchor_config),
            }
            ingredients.append(row)
        soups = make_soups(folders[name], work / "soups" / name, score_fn)
        entry = {"ingredients": ingredients}
        best = max(range(len(ingredients)), key=lambda i: (ingredients[i]["val_acc"], -i))
        entry["best"] = {
            "index": best,
            **{k: ingredients[best][k] for k in ("val_acc", "test_acc", "val_loss", "test_loss")},
        }
        entry["mean"] = {
            k: float(np.mean([x[k] for x in ingredients])) for k in ("val_acc", "test_acc", "val_loss", "test_loss")
        }
        for method, soup in soups.items():
            folder = soup["folder"]
            entry[method] = {
                "folder": str(folder),
                **score_folder(folder, evaluators),
                "anchors": anchors_report(folder, base, None if name == "anchored" else anchor_config),
            }
            if method == "greedy":
                entry[method]["kept"] = soup["recipe"]["kept"]
        results["sets"][name] = entry
    timings["soups_and_eval"] = time.time() - t
    timings["total"] = time.time() - t0
    results["runtime_s"] = timings

    if cfg.push_to_hub:
        from hf_tna.merge.soup import push_folder

        set_name, method = cfg.push_soup.split("_")
        results["hub"] = push_folder(
            results["sets"][set_name][method]["folder"],
            cfg.push_to_hub,
            cfg.store,
            message=f"hf_tna {cfg.push_soup} soup ({cfg.data}, {cfg.mode} mode)",
        )
    write_results(results, results_dir)
    return results


def _device_name(cfg) -> str:
    if cfg.device != "cpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({os.cpu_count()} cores visible, {cfg.num_threads} torch thread(s) per process)"


def write_results(results: dict, results_dir: Path) -> None:
    from soup_report import plot_results, results_markdown

    tmp = results_dir / ".results.json.tmp"
    tmp.write_text(json.dumps(results, indent=2, sort_keys=True, default=str))
    tmp.rename(results_dir / "results.json")
    (results_dir / "results.md").write_text(results_markdown(results))
    plot = plot_results(results, results_dir / "modelsoup.png")
    results["files"] = [str(results_dir / n) for n in ("results.json", "results.md")] + ([str(plot)] if plot else [])


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    cfg = parse_config(argv)
    command = shlex.join(["python", "examples/modelsoup/run_modelsoup.py", *argv])
    results = run_experiment(cfg, command)
    from soup_report import markdown_table, summary_table

    print("\n" + markdown_table(results) + "\n\n" + summary_table(results) + "\n")
    print(f"[modelsoup] {results['runtime_s']['total']:.0f} s; results in {', '.join(results['files'])}")
    return results


if __name__ == "__main__":
    main()
