"""Model soups of small causal LMs fine-tuned with TRL, with and without TNA-PFN anchors, end to end.

    python examples/sft/run_sft.py --quick      # tiny, in-process, well under a minute (the test)
    python examples/sft/run_sft.py              # the full run, `accelerate launch` per model (~17 min on 2 shared cores)

Steps: (1) the offline text (sft_data.py): quotes and chat utterances for the base, tweets for the ingredients, a
held-out and a test split of tweets; a byte-level BPE tokenizer trained on the training text; (2) the base: a new
Llama pre-trained on the quotes with TRL's `SFTTrainer`; (3) for each seed, K ingredient draws (a subset of the
tweet pool, a learning rate, a training seed), each fine-tuned from the base once with `hf_tna.trl.TNASFTTrainer`
(anchored) and once with `SFTTrainer` (vanilla); (4) per set and seed, a uniform soup and a greedy soup chosen by
held-out loss (`hf_tna.merge.soup.build_soup`); (5) anchors checked (`hf_tna.verify_anchors`), test loss and
perplexity of every ingredient and soup (`hf_tna.merge.evaluation`), the loss barrier of every ingredient pair
(`hf_tna.merge.barrier.measure_barriers`); `results.json`, `results.md`, `sft.png` and `barriers_seed0.png`.
Finished models are reused when the script is run again with the same settings.
"""

from __future__ import annotations

import dataclasses
import itertools
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
from sft_config import NOT_COMPARED, SFTExperimentConfig, parse_config  # noqa: E402
from sft_jobs import build_job, train_model  # noqa: E402

SETS = {"anchored": "tna", "vanilla": "plain"}  # ingredient set -> train_sft.py --trainer
SOUPS = ("uniform", "greedy")


# --------------------------------------------------------------------------------------------------
# The steps
# --------------------------------------------------------------------------------------------------
def configure_runtime(cfg: SFTExperimentConfig) -> None:
    """Quiet transformers and datasets, set torch's threads."""
    import datasets
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_warning()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)


def prepare_work_dir(cfg: SFTExperimentConfig) -> Path:
    """The run folder: emptied with `--overwrite` (only a run_sft.py one), else reused when it holds a run with the
    same settings (`run_config.json`; the `NOT_COMPARED` ones may differ) and refused otherwise."""
    work = Path(cfg.work_dir) if cfg.work_dir else HERE / "runs" / cfg.mode
    if cfg.overwrite and work.exists():
        if any(work.iterdir()) and not (work / "run_config.json").exists():
            raise ValueError(f"refusing to delete {work}: it is not a run_sft.py work dir (no run_config.json)")
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    settings = json.loads(json.dumps({k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_COMPARED}))
    saved = work / "run_config.json"
    if saved.exists() and json.loads(saved.read_text()) != settings:
        old = json.loads(saved.read_text())
        diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        raise ValueError(f"{work} holds a run with other settings ({', '.join(diff)}); pass --overwrite or another "
                         "--work_dir")
    saved.write_text(json.dumps(settings, indent=2, sort_keys=True))
    return work


def prepare_data(cfg: SFTExperimentConfig, work: Path) -> tuple[Path, Path, dict]:
    """Step 1: the splits as `datasets` folders and the BPE tokenizer, written once."""
    from sft_data import SPLITS, build_splits, build_tokenizer, load_texts, save_splits

    data_dir, tokenizer_dir = work / "data", work / "tokenizer"
    if not all((data_dir / s / "dataset_info.json").exists() for s in SPLITS):
        shutil.rmtree(data_dir, ignore_errors=True)
        save_splits(data_dir, build_splits(cfg.pretrain_size, cfg.finetune_size, cfg.val_size, cfg.test_size,
                                           cfg.data_seed))
    sizes = {s: len(load_texts(data_dir, s)) for s in SPLITS}
    if not (tokenizer_dir / "tokenizer.json").exists():
        texts = load_texts(data_dir, "pretrain") + load_texts(data_dir, "finetune")
        build_tokenizer(texts, cfg.vocab_size).save_pretrained(str(tokenizer_dir))
    print(f"[sft] {cfg.mode} mode: {sizes}; work dir {work}", flush=True)
    return data_dir, tokenizer_dir, sizes


def train_base(cfg: SFTExperimentConfig, work: Path, data_dir: Path, tokenizer_dir: Path) -> tuple[Path, dict]:
    """Step 2: the shared base, a new Llama pre-trained on the quotes and chat utterances."""
    base = work / "base"
    hp = {"learning_rate": cfg.base_learning_rate, "seed": cfg.data_seed, "max_steps": cfg.base_max_steps,
          "batch_size": cfg.base_batch_size}
    job = build_job(cfg, "base", data_dir, base, work / "logs" / "base.log", "plain", hp, None, tokenizer_dir)
    return base, train_model(cfg, job)


def draw_ingredients(cfg: SFTExperimentConfig, seed: int) -> list[dict]:
    """K seeded draws (data subset, learning rate, training seed), shared by the anchored and the vanilla set."""
    rng = np.random.default_rng(10_000 + seed)
    return [{"learning_rate": float(f"{10 ** rng.uniform(np.log10(cfg.lr_min), np.log10(cfg.lr_max)):.3g}"),
             "subset_size": cfg.subset_size, "subset_seed": int(rng.integers(2**31)), "seed": 1 + 100 * seed + i,
             "epochs": cfg.epochs, "batch_size": cfg.batch_size}
            for i in range(cfg.num_ingredients)]


def train_ingredients(cfg: SFTExperimentConfig, work: Path, data_dir: Path, base: Path, seed: int
                      ) -> tuple[list[dict], dict[str, list[tuple[Path, dict]]]]:
    """Step 3 for one seed: K ingredient pairs (anchored, vanilla) with the same draws."""
    hps = draw_ingredients(cfg, seed)
    trained: dict[str, list[tuple[Path, dict]]] = {name: [] for name in SETS}
    for i, hp in enumerate(hps):
        for name, trainer in SETS.items():
            out = work / name / f"seed{seed}" / f"ing{i}"
            job = build_job(cfg, f"seed {seed} {name} ingredient {i} (lr {hp['learning_rate']})", data_dir, out,
                            work / "logs" / f"{name}_seed{seed}_ing{i}.log", trainer, hp, base)
            trained[name].append((out, train_model(cfg, job)))
    return hps, trained


def read_state_dict(folder) -> dict:
    from hf_tna.io import CheckpointReader

    with CheckpointReader(folder) as reader:
        return {k: reader.get(k) for k in reader.keys()}


def score_folder(folder, evaluators: dict) -> dict:
    """{"<split>_loss", "<split>_ppl", "<split>_acc"} of a checkpoint folder on each split."""
    state_dict = read_state_dict(folder)
    out = {}
    for split, evaluator in evaluators.items():
        scores = evaluator.scores(state_dict)
        out.update({f"{split}_loss": scores["loss"], f"{split}_ppl": scores["perplexity"],
                    f"{split}_acc": scores["accuracy"]})
    return out


def distance_to_base(folder, base_sd: dict) -> float:
    """||theta - theta_base|| / ||theta_base|| over every tensor."""
    sd = read_state_dict(folder)
    num = sum(float((sd[k].double() - v.double()).pow(2).sum()) for k, v in base_sd.items())
    den = sum(float(v.double().pow(2).sum()) for v in base_sd.values())
    return (num / den) ** 0.5


def make_soups(cfg: SFTExperimentConfig, folders: list[Path], soup_dir: Path, val_dir: Path) -> dict:
    """Step 4 for one set: the uniform soup and the greedy soup by held-out loss (`build_soup` evaluates the causal
    LMs on the held-out split itself)."""
    import yaml

    from hf_tna.merge.soup import build_soup

    out = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="un-anchored ingredient")  # the vanilla set, on purpose
        for method in SOUPS:
            target = soup_dir.parent / f"{soup_dir.name}_{method}"
            if not (target / "fusion_recipe.yaml").exists():
                evaluation = {} if method == "uniform" else dict(
                    metric="loss", dataset=str(val_dir), max_length=cfg.max_length, batch_size=cfg.eval_batch_size)
                build_soup([str(f) for f in folders], target, merge_method=method, progress=False, **evaluation)
            recipe = yaml.safe_load((target / "fusion_recipe.yaml").read_text())
            out[method] = {"folder": str(target), "kept": recipe.get("kept")}
    return out


def score_seed(cfg, work: Path, seed: int, hps: list[dict], trained: dict, base: Path, data_dir: Path,
               evaluators: dict) -> tuple[dict, dict]:
    """Steps 4-5 for one seed: every ingredient and soup scored, anchors checked, the barrier of every ingredient
    pair on test. Returns the seed's results and the barrier report (`measure_barriers`)."""
    from hf_tna.merge.barrier import measure_barriers
    from hf_tna.merge.config import EvaluationArguments
    from hf_tna.verify import verify_anchors

    base_sd = read_state_dict(base)
    entry: dict = {"seed": seed, "sets": {}}
    pairs, owners = [], []
    for name in SETS:
        ingredients = []
        for i, (folder, result) in enumerate(trained[name]):
            anchors = verify_anchors(folder, base) if name == "anchored" else None
            ingredients.append({"name": f"ing{i}", "folder": str(folder), "hyperparameters": hps[i],
                                **score_folder(folder, evaluators), "train_loss": result["train_loss"],
                                "train_runtime_s": result["train_runtime_s"],
                                "distance_to_base": distance_to_base(folder, base_sd),
                                "anchors_intact": None if anchors is None else bool(anchors["intact"]),
                                "num_anchored": None if anchors is None else anchors["num_anchored"]})
        soups = make_soups(cfg, [Path(i["folder"]) for i in ingredients], work / "soups" / f"seed{seed}" / name,
                           data_dir / "val")
        set_entry = {"ingredients": ingredients}
        for method, soup in soups.items():
            anchors = verify_anchors(soup["folder"], base) if name == "anchored" else None
            set_entry[method] = {**soup, **score_folder(soup["folder"], evaluators),
                                 "anchors_intact": None if anchors is None else bool(anchors["intact"])}
        entry["sets"][name] = set_entry
        for i, j in itertools.combinations(range(len(ingredients)), 2):
            pairs.append((ingredients[i]["folder"], ingredients[j]["folder"]))
            owners.append(name)
    evaluation = EvaluationArguments(dataset=str(data_dir / "test"), max_length=cfg.max_length,
                                     batch_size=cfg.eval_batch_size)
    report = measure_barriers(pairs, evaluation, cfg.barrier_points, progress=False)
    for owner, pair in zip(owners, report["pairs"]):
        entry["sets"][owner].setdefault("barriers", []).append(pair)
    entry["barrier_report"] = {k: v for k, v in report.items() if k != "pairs"}
    return entry, report


def build_evaluators(cfg: SFTExperimentConfig, base: Path, data_dir: Path) -> dict:
    """Causal-LM evaluators (`hf_tna.merge.evaluation`) of the held-out and the test split."""
    from hf_tna.merge.evaluation import build_evaluator

    return {split: build_evaluator(base, data_dir / split, max_length=cfg.max_length, batch_size=cfg.eval_batch_size)
            for split in ("val", "test")}


def model_summary(base: Path, tokenizer_dir: Path) -> dict:
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(str(base))
    n = sum(t.numel() for t in read_state_dict(base).values())
    return {"description": f"Llama, hidden {c.hidden_size}, {c.num_hidden_layers} layers, {c.num_attention_heads} "
            f"heads ({c.num_key_value_heads} key/value), MLP {c.intermediate_size}, vocabulary {c.vocab_size} "
            f"(byte-level BPE), tied embeddings", "num_parameters": int(n)}


def run_experiment(cfg: SFTExperimentConfig, command: str = "") -> dict:
    """The steps in order (see the module docstring); returns what `results.json` holds."""
    from sft_report import summarize

    configure_runtime(cfg)
    timings, t0 = {}, time.time()
    work = prepare_work_dir(cfg)
    results_dir = Path(cfg.results_dir) if cfg.results_dir else work
    results_dir.mkdir(parents=True, exist_ok=True)
    data_dir, tokenizer_dir, sizes = prepare_data(cfg, work)
    t = time.time()
    base, base_result = train_base(cfg, work, data_dir, tokenizer_dir)
    timings["base"] = time.time() - t
    evaluators = build_evaluators(cfg, base, data_dir)
    results = {"mode": cfg.mode, "command": command, "config": dataclasses.asdict(cfg), "sizes": sizes,
               "model": model_summary(base, tokenizer_dir), "device": _device_name(cfg),
               "base": {**score_folder(base, evaluators), "train": base_result}, "seeds": []}
    reports = []
    timings["ingredients"] = timings["soups_and_eval"] = 0.0
    for seed in range(cfg.num_seeds):
        t = time.time()
        hps, trained = train_ingredients(cfg, work, data_dir, base, seed)
        timings["ingredients"] += time.time() - t
        t = time.time()
        entry, report = score_seed(cfg, work, seed, hps, trained, base, data_dir, evaluators)
        results["seeds"].append(entry)
        reports.append(report)
        timings["soups_and_eval"] += time.time() - t
    results["summary"] = summarize(results)
    timings["total"] = time.time() - t0
    results["runtime_s"] = timings
    write_results(results, reports[0], results_dir)
    return results


def _device_name(cfg) -> str:
    return f"CPU ({os.cpu_count()} cores visible, {cfg.num_threads} torch thread(s) per training process)"


def write_results(results: dict, barrier_report: dict, results_dir: Path) -> None:
    from sft_report import plot_results, results_markdown

    from hf_tna.merge.barrier import plot_barriers

    tmp = results_dir / ".results.json.tmp"
    tmp.write_text(json.dumps(results, indent=2, sort_keys=True, default=str))
    tmp.rename(results_dir / "results.json")
    (results_dir / "results.md").write_text(results_markdown(results))
    files = [results_dir / "results.json", results_dir / "results.md"]
    files.append(plot_results(results, results_dir / "sft.png"))
    plot_barriers(barrier_report, results_dir / "barriers_seed0.png",
                  title=f"seed 0: loss along each ingredient pair's line, test tweets "
                  f"({barrier_report['num_samples']} texts, {barrier_report['num_tokens']} tokens)")
    files.append(results_dir / "barriers_seed0.png")
    results["files"] = [str(f) for f in files]


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    cfg = parse_config(argv, description=__doc__)
    command = shlex.join(["python", "examples/sft/run_sft.py", *argv])
    results = run_experiment(cfg, command)
    from sft_report import markdown_table

    print("\n" + markdown_table(results) + "\n")
    print(f"[sft] {results['runtime_s']['total']:.0f} s; results in {', '.join(results['files'])}")
    return results


if __name__ == "__main__":
    main()
