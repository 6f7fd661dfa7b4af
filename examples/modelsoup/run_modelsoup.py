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
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1])]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from soup_config import NOT_COMPARED, SOUPS, SoupExperimentConfig, parse_config  # noqa: E402
from soup_data import SplitSizes, build_splits, save_splits, split_sizes  # noqa: E402
from soup_jobs import build_job, train_model  # noqa: E402

SETS = {"anchored": "tna", "vanilla": "plain"}  # ingredient set -> finetune.py --trainer


# --------------------------------------------------------------------------------------------------
# The steps of the experiment
# --------------------------------------------------------------------------------------------------
def configure_runtime(cfg: SoupExperimentConfig) -> None:
    """Quiet transformers, refuse a missing GPU before any work, set torch's threads."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_warning()
    hf_logging.disable_progress_bar()
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda but torch sees no CUDA device")
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)


def prepare_work_dir(cfg: SoupExperimentConfig) -> Path:
    """The run folder: emptied with `--overwrite` (only a run_modelsoup.py one), else reused when it holds a run
    with the same settings (`run_config.json`; the `NOT_COMPARED` ones may differ) and refused otherwise."""
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


def prepare_splits(cfg: SoupExperimentConfig, work: Path) -> tuple[dict, Path]:
    """Step 1: the seeded splits, written once to `splits.npz` for every training process."""
    splits_path = work / "splits.npz"
    sizes = SplitSizes(cfg.pretrain_size, cfg.finetune_size, cfg.val_size, cfg.test_size)
    splits = build_splits(cfg.data, sizes, cfg.seed, cfg.data_dir)
    if not splits_path.exists():
        save_splits(splits_path, splits)
    print(f"[modelsoup] {cfg.mode} mode, {cfg.data}: {split_sizes(splits)}; work dir {work}", flush=True)
    return splits, splits_path


def train_base(cfg: SoupExperimentConfig, work: Path, splits_path: Path) -> tuple[Path, dict]:
    """Step 2: the shared base, trained on the pretrain split (from `--base_model` or a new ViT)."""
    base = work / "base"
    base_hp = {
        "learning_rate": cfg.base_learning_rate,
        "weight_decay": 0.01,
        "label_smoothing": 0.0,
        "seed": cfg.seed,
        "augment": "none" if cfg.data == "digits" else "shift_flip",
    }
    job = build_job(
        cfg, "base", splits_path, base, work / "logs" / "base.log", "plain", base_hp, cfg.base_model, cfg.base_epochs,
        "pretrain",
    )  # fmt: skip
    return base, train_model(cfg, job)


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


def train_ingredients(
    cfg: SoupExperimentConfig, work: Path, splits_path: Path, base: Path, start: float
) -> tuple[list[dict], dict[str, list[tuple[Path, dict]]]]:
    """Step 3: K ingredient pairs from the base, one per drawn hyperparameter set, anchored (`TNATrainer`) and
    vanilla (`Trainer`). Returns the hyperparameters used and, per set, (folder, finetune result) per ingredient."""
    hps = draw_hyperparameters(cfg)
    trained: dict[str, list[tuple[Path, dict]]] = {name: [] for name in SETS}
    for i, hp in enumerate(hps):
        budget = cfg.ingredient_time_budget_s
        if budget is not None and i >= 2 and time.time() - start > budget:
            print(f"[modelsoup] time budget {budget:.0f} s spent: soups of the first {i} ingredient pairs", flush=True)
            hps = hps[:i]
            break
        for name, trainer in SETS.items():
            out = work / name / f"ing{i}"
            log = work / "logs" / f"{name}_ing{i}.log"
            job = build_job(
                cfg, f"{name} ingredient {i} ({hp})", splits_path, out, log, trainer, hp, str(base), cfg.epochs
            )
            trained[name].append((out, train_model(cfg, job)))
    return hps, trained


def build_evaluators(cfg: SoupExperimentConfig, work: Path, base: Path, splits: dict) -> tuple[str, dict]:
    """For steps 4-5: an `Evaluator` per scored split (held-out `val`, `test`), and the held-out split as a
    `datasets` folder for `hf-tna soup --method greedy --dataset` when `datasets` is in use."""
    from soup_eval import build_evaluator, resolve_eval_backend, save_eval_dataset

    backend = resolve_eval_backend(cfg.eval_backend, cfg.device)
    evaluators = {
        split: build_evaluator(
            base, *splits[split], backend=backend, device=cfg.device, batch_size=cfg.eval_batch_size
        )
        for split in ("val", "test")
    }
    if backend == "hf" and not (work / "val_dataset").exists():
        save_eval_dataset(work / "val_dataset", base, *splits["val"])
    return backend, evaluators


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
            out[method] = {"folder": target, "recipe": report.recipe}
    return out


def score_set(
    name: str,
    trained: list[tuple[Path, dict]],
    hps: list[dict],
    base: Path,
    work: Path,
    evaluators: dict,
    score_fn,
    reference=None,
) -> dict:
    """Steps 4-5 for one set: its ingredients scored and anchor-checked, its best and mean, and its soups (made
    here, greedy by held-out accuracy) scored and checked. `reference`: the anchored set's `tna_config.json`, to count
    how many of those entries a vanilla model left untouched (None for the anchored set: its own config)."""
    from soup_eval import anchors_report, score_folder

    ingredients = [
        {
            "name": f"ing{i}",
            "folder": str(folder),
            "hyperparameters": hps[i],
            **score_folder(folder, evaluators),
            "train_loss": result["train_loss"],
            "train_runtime_s": result["train_runtime_s"],
            "anchors": anchors_report(folder, base, reference),
        }
        for i, (folder, result) in enumerate(trained)
    ]
    soups = make_soups([folder for folder, _ in trained], work / "soups" / name, score_fn)
    entry = {"ingredients": ingredients}
    best = max(range(len(ingredients)), key=lambda i: (ingredients[i]["val_acc"], -i))
    metrics = ("val_acc", "test_acc", "val_loss", "test_loss")
    entry["best"] = {"index": best, **{k: ingredients[best][k] for k in metrics}}
    entry["mean"] = {k: float(np.mean([x[k] for x in ingredients])) for k in metrics}
    for method, soup in soups.items():
        entry[method] = {
            "folder": str(soup["folder"]),
            **score_folder(soup["folder"], evaluators),
            "anchors": anchors_report(soup["folder"], base, reference),
        }
        if method == "greedy":
            entry[method]["kept"] = soup["recipe"]["kept"]
    return entry


def push_soup(cfg: SoupExperimentConfig, results: dict) -> dict:
    """Step 6 (optional): upload the `--push_soup` soup to `--push_to_hub`."""
    from hf_tna.merge.soup import push_folder

    set_name, method = cfg.push_soup.split("_")
    return push_folder(
        results["sets"][set_name][method]["folder"],
        cfg.push_to_hub,
        cfg.store,
        message=f"hf_tna {cfg.push_soup} soup ({cfg.data}, {cfg.mode} mode)",
    )


def run_experiment(cfg: SoupExperimentConfig, command: str = "") -> dict:
    """The steps in order (see the module docstring); returns what `results.json` holds."""
    from soup_eval import score_folder

    from hf_tna.manifest import TNAFileConfig
    from hf_tna.merge.evaluation import build_score_fn

    configure_runtime(cfg)
    timings, t0 = {}, time.time()
    work = prepare_work_dir(cfg)
    results_dir = Path(cfg.results_dir) if cfg.results_dir else work
    results_dir.mkdir(parents=True, exist_ok=True)
    splits, splits_path = prepare_splits(cfg, work)

    t = time.time()
    base, base_result = train_base(cfg, work, splits_path)
    timings["base"] = time.time() - t
    t = time.time()
    hps, trained = train_ingredients(cfg, work, splits_path, base, t0)
    timings["ingredients"] = time.time() - t

    t = time.time()
    backend, evaluators = build_evaluators(cfg, work, base, splits)
    score_fn = build_score_fn(evaluators["val"], "accuracy")
    anchor_config = TNAFileConfig.load(trained["anchored"][0][0])
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
    for name in SETS:
        reference = None if name == "anchored" else anchor_config
        results["sets"][name] = score_set(name, trained[name], hps, base, work, evaluators, score_fn, reference)
    timings["soups_and_eval"] = time.time() - t
    timings["total"] = time.time() - t0
    results["runtime_s"] = timings
    if cfg.push_to_hub:
        results["hub"] = push_soup(cfg, results)
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
    cfg = parse_config(argv, description=__doc__)
    command = shlex.join(["python", "examples/modelsoup/run_modelsoup.py", *argv])
    results = run_experiment(cfg, command)
    from soup_report import markdown_table, summary_table

    print("\n" + markdown_table(results) + "\n\n" + summary_table(results) + "\n")
    print(f"[modelsoup] {results['runtime_s']['total']:.0f} s; results in {', '.join(results['files'])}")
    return results


if __name__ == "__main__":
    main()
