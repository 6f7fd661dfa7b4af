"""Fusing two LoRA contributors: element anchors on adapters vs FFA-LoRA vs plain LoRA (issue 12).

    python benchmarks/lora_fusion.py [--seeds 0 1 2] [--output_dir docs/results]

Task: 3-way tweet sentiment (`hf_tna.example_data.load_tweet_sentiment`, offline) on the pretrained
all-MiniLM-L6-v2 body with a fresh classification head. A fixed held-out test split; the rest is shuffled per
seed into two disjoint halves, one per contributor. Each contributor trains LoRA r=8 on query/value plus the
head (`modules_to_save=["classifier"]`, so the head is shared-initialised from the anchor seed, trained, and
souped like the adapters) with its own training seed, through `TNATrainer`. Settings:

- `anchored`: element anchors on the LoRA A and B entries (`anchor_ratio`, default 0.4; the head is excluded);
- `ffa`: FFA-LoRA (`anchor_lora_fa=True`, `anchor_ratio=0`): every A frozen whole at its shared init, B trains;
- `plain`: plain LoRA (`anchor_ratio=0`, which `TNATrainer` treats as a plain `Trainer`, without shared
  initialisation; the benchmark calls `hf_tna.shared_init.shared_initialize` itself, so both contributors start
  equal here too).

Each pair is souped with `hf_tna.merge.build_soup` twice: `lora_mode="merged"` (base + mean of the updates
s B A, exact) and `lora_mode="factors"` (mean A, mean B; exact only when all A are equal). Every model is
evaluated as a full merged model (`merge_and_unload` for adapters) with `hf_tna.merge.evaluation.Evaluator` on
the test split. Reported per setting: contributor and soup loss/accuracy, the gap soup - mean contributor, and
how far the factors soup is from the exact one: ||mean(B) mean(A) - mean(B A)|| / ||mean(B A)|| over all LoRA
layers. Prints JSON; writes `lora_fusion.json` and `lora_fusion.md` to `--output_dir`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import build_parser  # noqa: E402

JSON_NAME, MD_NAME = "lora_fusion.json", "lora_fusion.md"
SETTINGS = ("anchored", "ffa", "plain")
SOUPS = ("merged", "factors")
COMMAND = "python benchmarks/lora_fusion.py"
# The head is trained and souped (modules_to_save) but never anchored, so the element anchors sit on the adapters
# only (issue 12's question: element anchors on adapters vs FFA-LoRA).
HEAD_EXCLUDE = ("classifier",)


@dataclass
class LoRAFusionConfig:
    """Settings of the LoRA fusion benchmark (every field is a command-line flag).

    Args:
        seeds: one repetition per seed (data split, training seeds, anchor seed).
        per_label: tweets kept per sentiment label (3 labels).
        test_size: held-out examples (fixed split, the same for every seed).
        epochs, learning_rate, batch_size, max_length: training of each contributor.
        rank, lora_alpha: LoRA on query/value.
        anchor_ratio: element-anchor ratio of the `anchored` setting.
        output_dir: where the JSON and markdown go ("" to only print).
    """

    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "One repetition per seed."})
    per_label: int = field(default=400, metadata={"help": "Tweets per sentiment label (3 labels)."})
    test_size: int = field(default=300, metadata={"help": "Held-out test examples (fixed split)."})
    epochs: float = field(default=2.0, metadata={"help": "Training epochs of each contributor."})
    learning_rate: float = field(default=2e-3, metadata={"help": "AdamW learning rate (all settings)."})
    batch_size: int = field(default=32, metadata={"help": "Training batch size."})
    max_length: int = field(default=64, metadata={"help": "Tokens per tweet (truncation)."})
    rank: int = field(default=8, metadata={"help": "LoRA rank r."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha (scale alpha / r)."})
    anchor_ratio: float = field(default=0.4, metadata={"help": "Element-anchor ratio of the anchored setting."})
    output_dir: str = field(default="docs/results", metadata={"help": "Folder for the JSON and markdown; empty: none."})

    def __post_init__(self):
        if not self.seeds:
            raise ValueError("seeds must name at least one seed, e.g. --seeds 0 1 2")
        if not 0 < self.anchor_ratio < 1:
            raise ValueError(f"anchor_ratio must be in (0, 1), got {self.anchor_ratio}")
        if self.test_size >= 3 * self.per_label - 4:
            raise ValueError(f"test_size {self.test_size} leaves no training data with per_label {self.per_label}")


def build_data(cfg: LoRAFusionConfig, tokenizer):
    """(label names, test tensors, shuffled train texts and labels per seed): a fixed test split."""
    import random

    from hf_tna.example_data import load_tweet_sentiment

    texts, labels = load_tweet_sentiment(cfg.per_label)
    names = sorted(set(labels))
    ids = [names.index(y) for y in labels]
    order = list(range(len(texts)))
    random.Random(0).shuffle(order)
    test, train = order[: cfg.test_size], order[cfg.test_size :]
    enc = tokenizer([texts[i] for i in test], padding=True, truncation=True, max_length=cfg.max_length,
                    return_tensors="pt")
    test_set = ({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}, [ids[i] for i in test])
    return names, test_set, [(texts[i], ids[i]) for i in train]


def split_contributors(train, seed: int):
    import random

    items = list(train)
    random.Random(1000 + seed).shuffle(items)
    half = len(items) // 2
    return items[:half], items[half : 2 * half]


def train_contributor(cfg, setting: str, data, tokenizer, folder: Path, train_seed: int, anchor_seed: int):
    """Train one LoRA contributor with `TNATrainer`, save the adapter to `folder`; returns the shared-init start of
    its adapters and head (to check that contributors start equal) and the training time."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding

    from hf_tna import AnchorSpec, TNAConfig, TNATrainer
    from hf_tna.example_data import minilm_path
    from hf_tna.shared_init import shared_initialize

    torch.manual_seed(train_seed)  # the contributor's own RNG: its head and adapters differ before shared init
    base = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=3)
    model = get_peft_model(base, LoraConfig(r=cfg.rank, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                                            target_modules=["query", "value"], modules_to_save=["classifier"]))
    enc = tokenizer([t for t, _ in data], truncation=True, max_length=cfg.max_length)
    dataset = Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                                 "labels": [y for _, y in data]})
    args = TNAConfig(output_dir=str(folder), per_device_train_batch_size=cfg.batch_size, num_train_epochs=cfg.epochs,
                     learning_rate=cfg.learning_rate, warmup_steps=0, weight_decay=0.0, seed=train_seed,
                     report_to="none", use_cpu=True, save_strategy="no", logging_strategy="no", disable_tqdm=True,
                     anchor_seed=anchor_seed, anchor_ratio=cfg.anchor_ratio if setting == "anchored" else 0.0,
                     anchor_lora_fa=setting == "ffa", anchor_exclude=list(HEAD_EXCLUDE))
    if setting == "plain":  # ratio 0 is plain Trainer (no shared init there): start the adapters and head equal
        shared_initialize(model, AnchorSpec(ratio=0.0, seed=anchor_seed))
    trainer = TNATrainer(model=model, args=args, train_dataset=dataset,
                         data_collator=DataCollatorWithPadding(tokenizer))
    start = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n or "modules_to_save" in n}
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # Trainer prints its metrics; stdout is the JSON
        trainer.train()
    seconds = time.perf_counter() - t0
    trainer.save_model(str(folder))
    return start, seconds


def factors_error(folders) -> float:
    """||mean(B) mean(A) - mean(B A)||_F / ||mean(B A)||_F summed over every LoRA layer of the adapters."""
    from safetensors.torch import load_file

    tensors = [load_file(str(f / "adapter_model.safetensors")) for f in folders]
    pairs = [(k[: -len("lora_A.weight")], k) for k in tensors[0] if k.endswith("lora_A.weight")]
    num = den = 0.0
    for prefix, a_key in pairs:
        b_key = prefix + "lora_B.weight"
        a = [t[a_key].double() for t in tensors]
        b = [t[b_key].double() for t in tensors]
        exact = sum(bi @ ai for ai, bi in zip(a, b)) / len(a)
        approx = (sum(b) / len(b)) @ (sum(a) / len(a))
        num += float((approx - exact).pow(2).sum())
        den += float(exact.pow(2).sum())
    return (num / den) ** 0.5 if den else 0.0


def adapter_as_full(folder: Path, base_dir: Path):
    """The full checkpoint-named state dict of base + adapter (PEFT's merge_and_unload)."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from hf_tna.merge.ingredients import checkpoint_state_dict

    model = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base_dir), str(folder))
    return checkpoint_state_dict(model.merge_and_unload())


def run_seed(cfg, seed: int, data, tokenizer, evaluator, base_dir: Path, work: Path) -> dict:
    import torch
    from safetensors.torch import load_file

    from hf_tna.merge.soup import build_soup

    parts = split_contributors(data, seed)
    out = {}
    for setting in SETTINGS:
        folders, starts, seconds, contributors = [], [], [], []
        for c, part in enumerate(parts):
            folder = work / f"s{seed}_{setting}_c{c}"
            start, sec = train_contributor(cfg, setting, part, tokenizer, folder, train_seed=100 * seed + c + 1,
                                           anchor_seed=seed)
            folders.append(folder)
            starts.append(start)
            seconds.append(sec)
            loss, acc = evaluator(adapter_as_full(folder, base_dir))
            contributors.append({"loss": loss, "accuracy": acc})
        same_start = all(torch.equal(starts[0][k], starts[1][k]) for k in starts[0])
        soups = {}
        for mode in SOUPS:
            soup_dir = work / f"s{seed}_{setting}_{mode}"
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                if mode == "merged":
                    build_soup(folders, soup_dir, lora_mode="merged", base=base_dir, progress=False)
                else:
                    build_soup(folders, soup_dir, lora_mode="factors", progress=False)
            if mode == "merged":
                state = load_file(str(soup_dir / "model.safetensors"))
            else:
                state = adapter_as_full(soup_dir, base_dir)
            loss, acc = evaluator(state)
            soups[mode] = {"loss": loss, "accuracy": acc,
                           "warned_not_exact": any("not the mean" in str(w.message) for w in caught)}
        mean_acc = statistics.fmean(c["accuracy"] for c in contributors)
        mean_loss = statistics.fmean(c["loss"] for c in contributors)
        for s in soups.values():
            s["gap_accuracy"] = s["accuracy"] - mean_acc
            s["gap_loss"] = s["loss"] - mean_loss
        out[setting] = {"contributors": contributors, "mean_contributor": {"loss": mean_loss, "accuracy": mean_acc},
                        "soups": soups, "factors_rel_error": factors_error(folders),
                        "contributors_start_equal": same_start, "train_seconds": seconds}
        print(f"seed {seed} {setting}: contributors {[round(c['accuracy'], 4) for c in contributors]} "
              + " ".join(f"{m} {soups[m]['accuracy']:.4f}" for m in SOUPS), file=sys.stderr, flush=True)
    return out


def summarize(per_seed: list[dict]) -> dict:
    """Mean and (sample) std over seeds of every number a setting reports."""

    def stat(values):
        values = list(values)
        return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}

    out = {}
    for setting in SETTINGS:
        runs = [r[setting] for r in per_seed]
        row = {"contributor_" + k: stat(c[k] for r in runs for c in r["contributors"]) for k in ("accuracy", "loss")}
        for mode in SOUPS:
            for k in ("accuracy", "loss", "gap_accuracy", "gap_loss"):
                row[f"{mode}_{k}"] = stat(r["soups"][mode][k] for r in runs)
        row["factors_rel_error"] = stat(r["factors_rel_error"] for r in runs)
        row["factors_minus_merged_accuracy"] = stat(
            r["soups"]["factors"]["accuracy"] - r["soups"]["merged"]["accuracy"] for r in runs)
        out[setting] = row
    return out


def _pm(s: dict, scale: float = 1.0, digits: int = 2, sign: bool = False) -> str:
    fmt = f"{{:{'+' if sign else ''}.{digits}f}}"
    return f"{fmt.format(s['mean'] * scale)} ± {s['std'] * scale:.{digits}f}"


LABELS = {"anchored": "element anchors on adapters (`anchor_ratio={r}`)",
          "ffa": "FFA-LoRA (`anchor_lora_fa=True`, ratio 0)",
          "plain": "plain LoRA (ratio 0, shared init)"}


def render_markdown(result: dict) -> str:
    cfg, summary = result["config"], result["summary"]
    n = len(cfg["seeds"])
    label = {k: v.format(r=cfg["anchor_ratio"]) for k, v in LABELS.items()}
    lines = [
        "# LoRA fusion: element anchors on adapters vs FFA-LoRA vs plain LoRA",
        "",
        "Command (run on this project's 2-core CPU machine):",
        "",
        "```bash",
        result["command"],
        "```",
        "",
        f"Task: 3-way tweet sentiment (`load_tweet_sentiment`, {cfg['per_label']} tweets per label), fixed held-out "
        f"split of {cfg['test_size']}; the rest is split per seed into two disjoint halves of "
        f"{result['train_per_contributor']} tweets, one per contributor. Body: pretrained all-MiniLM-L6-v2; LoRA "
        f"r={cfg['rank']}, alpha={cfg['lora_alpha']} on query/value; the fresh classification head is in "
        "`modules_to_save` (shared-initialised from the anchor seed, trained, and averaged in both soup modes, so "
        "the soups are comparable; never anchored, see below). Each contributor: its own training seed, `TNATrainer`, AdamW lr "
        f"{cfg['learning_rate']}, {cfg['epochs']:g} epochs, batch {cfg['batch_size']}, the same settings in all three "
        f"cases. Seeds {cfg['seeds']} (data split, training seeds, anchor seed); values are mean ± std over the "
        f"{n} seeds (contributor rows over {2 * n} contributors). Accuracy in percent; gap = soup - mean of the two "
        "contributors (same seed), then averaged. Soups: `build_soup(..., lora_mode=\"merged\", base=...)` (base + "
        "mean of the updates, exact) and `lora_mode=\"factors\"` (mean A, mean B). Total run time "
        f"{result['seconds']:.0f} s. Raw output: [{JSON_NAME}]({JSON_NAME}).",
        "",
        "| setting | contributors acc | merged soup acc | gap (merged) | factors soup acc | gap (factors) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for s in SETTINGS:
        row = summary[s]
        lines.append(f"| {label[s]} | {_pm(row['contributor_accuracy'], 100)} | {_pm(row['merged_accuracy'], 100)} | "
                     f"{_pm(row['merged_gap_accuracy'], 100, sign=True)} | {_pm(row['factors_accuracy'], 100)} | "
                     f"{_pm(row['factors_gap_accuracy'], 100, sign=True)} |")
    lines += ["", "| setting | contributors loss | merged soup loss | gap (merged) | factors soup loss | gap (factors) "
              "| factors error ‖mean B·mean A − mean BA‖/‖mean BA‖ |", "|---|---:|---:|---:|---:|---:|---:|"]
    for s in SETTINGS:
        row = summary[s]
        lines.append(f"| {label[s]} | {_pm(row['contributor_loss'], digits=4)} | {_pm(row['merged_loss'], digits=4)} | "
                     f"{_pm(row['merged_gap_loss'], digits=4, sign=True)} | {_pm(row['factors_loss'], digits=4)} | "
                     f"{_pm(row['factors_gap_loss'], digits=4, sign=True)} | "
                     f"{_pm(row['factors_rel_error'], digits=4)} |")
    lines += ["", "Per seed (accuracy in percent: contributor 1, contributor 2 → merged soup, factors soup):", ""]
    for seed, run in zip(cfg["seeds"], result["per_seed"]):
        cells = []
        for s in SETTINGS:
            r = run[s]
            c = ", ".join(f"{x['accuracy'] * 100:.1f}" for x in r["contributors"])
            cells.append(f"{s}: {c} → {r['soups']['merged']['accuracy'] * 100:.1f}, "
                         f"{r['soups']['factors']['accuracy'] * 100:.1f}")
        lines.append(f"- seed {seed}: " + "; ".join(cells))
    lines += ["", "## What the numbers say", "", *findings(result), "", "## Notes on the set-up", "", *NOTES, ""]
    return "\n".join(lines)


NOTES = [
    "- The head is trained and souped in every setting but never anchored (`anchor_exclude=[\"classifier\"]`), "
    "so the element anchors sit on the LoRA A and B entries only: the comparison the issue asks for.",
    "- `anchor_ratio=0` without `anchor_lora_fa` makes `TNATrainer` a plain `Trainer`, which also skips shared "
    "initialisation; the plain-LoRA setting calls `hf_tna.shared_init.shared_initialize` itself so that its "
    "contributors start from the same adapters and head, like the other two (checked: first line above).",
    "- One learning rate for all three settings. FFA-LoRA trains half the adapter parameters (B only); its "
    "authors tune its learning rate separately, which this benchmark does not do.",
    "- IID halves of one small data set: the contributors are similar, so this measures whether a soup loses "
    "anything, not how much fusion helps across very different data.",
]


def findings(result: dict) -> list[str]:
    """Statements read off the numbers (no number here is typed in by hand)."""
    summary, per_seed = result["summary"], result["per_seed"]
    out = []
    starts = all(r[s]["contributors_start_equal"] for r in per_seed for s in SETTINGS)
    out.append(f"- Both contributors started from bitwise equal adapters and head in every run: {starts}.")
    ffa_err = summary["ffa"]["factors_rel_error"]["mean"]
    warned = [s for s in SETTINGS if any(r[s]["soups"]["factors"]["warned_not_exact"] for r in per_seed)]
    out.append(f"- FFA-LoRA's factors soup is exact: relative error {ffa_err:.1e} (float rounding); `build_soup` "
               f"warned \"not the mean\" for the factors soup of: {', '.join(warned) or 'none'}.")
    for s in ("anchored", "plain"):
        row = summary[s]
        out.append(f"- {s}: factors soup differs from the exact soup by relative error "
                   f"{row['factors_rel_error']['mean']:.3f}; its accuracy minus the merged soup's: "
                   f"{_pm(row['factors_minus_merged_accuracy'], 100, sign=True)} points.")
    gaps = {s: summary[s]["merged_gap_accuracy"]["mean"] for s in SETTINGS}
    best = max(gaps, key=gaps.get)
    spread = max(gaps.values()) - min(gaps.values())
    noise = max(summary[s]["merged_gap_accuracy"]["std"] for s in SETTINGS)
    verdict = ("within one seed-to-seed std of each other: on this task the settings are not distinguishable by "
               "their exact-soup gap" if spread <= noise else f"largest for {best}")
    out.append("- Exact (merged) soup gaps per setting: "
               + ", ".join(f"{s} {gaps[s] * 100:+.2f}" for s in SETTINGS)
               + f" points; spread {spread * 100:.2f} vs largest std {noise * 100:.2f}: {verdict}.")
    fl = {s: summary[s]["factors_gap_loss"]["mean"] - summary[s]["merged_gap_loss"]["mean"] for s in SETTINGS}
    out.append("- What factor averaging costs over the exact soup, in held-out loss (factors - merged): "
               + ", ".join(f"{s} {fl[s]:+.4f}" for s in SETTINGS) + "; relative factor error "
               + ", ".join(f"{s} {summary[s]['factors_rel_error']['mean']:.3f}" for s in SETTINGS) + ".")
    chance = math.log(len(result["labels"]))
    losses = ", ".join(f"{s} {summary[s]['contributor_loss']['mean']:.4f}" for s in SETTINGS)
    out.append(f"- A weak task for these small runs: contributor loss {losses} against {chance:.4f} (= ln "
               f"{len(result['labels'])}, chance); accuracy differences under a few points are within seed noise.")
    acc = {s: summary[s]["contributor_accuracy"]["mean"] for s in SETTINGS}
    out.append("- Contributor accuracy per setting (what each pays for its constraint): "
               + ", ".join(f"{s} {acc[s] * 100:.2f}" for s in SETTINGS) + ".")
    return out


def main(argv=None) -> dict:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from hf_tna.example_data import minilm_path
    from hf_tna.merge.evaluation import Evaluator

    (cfg,) = build_parser([LoRAFusionConfig], __doc__, prog="benchmarks/lora_fusion.py").parse_args_into_dataclasses(
        args=argv)
    torch.set_num_threads(os.cpu_count() or 1)
    hf_logging.set_verbosity_error()
    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    names, (test_inputs, test_labels), train = build_data(cfg, tokenizer)
    per_seed = []
    with tempfile.TemporaryDirectory(prefix="lora_fusion_") as tmp:
        work = Path(tmp)
        base_dir = work / "base"  # the adapters' base as a checkpoint: body + a head (replaced by the souped head)
        torch.manual_seed(0)
        AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=3).save_pretrained(base_dir)
        evaluator = Evaluator.from_tensors(AutoModelForSequenceClassification.from_pretrained(base_dir), test_inputs,
                                           torch.tensor(test_labels), batch_size=100)
        for seed in cfg.seeds:
            per_seed.append(run_seed(cfg, seed, train, tokenizer, evaluator, base_dir, work))
    argv_text = " ".join(sys.argv[1:]) if argv is None else " ".join(argv)
    result = {
        "command": f"{COMMAND} {argv_text}".strip(),
        "config": asdict(cfg),
        "labels": names,
        "train_per_contributor": len(train) // 2,
        "per_seed": per_seed,
        "summary": summarize(per_seed),
        "seconds": time.perf_counter() - t0,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__},
    }
    print(json.dumps(result, indent=1))
    if cfg.output_dir:
        out = Path(cfg.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / JSON_NAME).write_text(json.dumps(result, indent=1) + "\n")
        (out / MD_NAME).write_text(render_markdown(result))
    return result


if __name__ == "__main__":
    main()
