"""Loss barriers along the line between checkpoints, for one pair or several (`hf-tna barrier`).

`measure_barriers(pairs, evaluation)` evaluates ``(1 - alpha) A + alpha B`` of each pair on one split
(`hf_tna.merge.ops.lmc_curve`, any task `hf_tna.merge.evaluation.Evaluator` takes, causal LMs included) and
reports, per pair, the absolute loss barrier ``max_alpha L(alpha) - ((1 - alpha) L(0) + alpha L(1))``, the
relative one (divided by the mean endpoint loss), the mirrored accuracy barriers and the curve
(`hf_tna.merge.ops.lmc_barrier`); `plot_barriers` draws every pair in one figure.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

from .evaluation import evaluator_from_arguments, perplexity

# the files that decide how a checkpoint folder is evaluated besides its weights: pairs whose folders agree on
# them share one evaluator (one model skeleton, one tokenised split)
EVALUATOR_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "vocab.json", "merges.txt", "tokenizer.model", "preprocessor_config.json", "chat_template.jinja")


def require_matplotlib() -> None:
    """Refuse a plot before any work when matplotlib is missing (it is not a dependency of hf_tna)."""
    if importlib.util.find_spec("matplotlib") is None:
        raise RuntimeError("--plot needs matplotlib, which is not installed: pip install matplotlib (or "
                           "hf_tna[examples]), or pass --plot '' for the JSON report only")


def pair_labels(pairs: Sequence[tuple[str, str]]) -> list[str]:
    """'A vs B' per pair, local folders named relative to their common parent (``anchored/ing0``)."""
    refs = [str(r) for pair in pairs for r in pair]
    local = [r for r in refs if os.path.isdir(r)]
    parent = None
    if len(local) == len(refs):
        parent = os.path.commonpath([os.path.abspath(r) for r in refs])
        if all(os.path.abspath(r) == parent for r in refs):  # one folder everywhere
            parent = os.path.dirname(parent)

    def short(ref):
        return os.path.relpath(os.path.abspath(ref), parent) if parent else ref

    return [f"{short(a)} vs {short(b)}" for a, b in pairs]


def _evaluator_key(folder: Path) -> str:
    digest = hashlib.sha256()
    for name in EVALUATOR_FILES:
        path = Path(folder) / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def measure_barriers(pairs: Sequence[tuple[str, str]], evaluation, num_points: int = 25, store=None,
                     trust_remote_code: bool = False, progress: bool | None = None) -> dict:
    """Barriers of each pair (folders or Hub ids) on the split `evaluation` (an `EvaluationArguments`) names.

    Returns ``{"dataset", "split", "task", "num_samples", "num_points", "pairs": [...]}`` (and ``"num_tokens"`` for
    causal LMs); each pair holds ``a``, ``b``, ``label``, ``revisions``, the `lmc_barrier` fields, its ``curve``
    (``alphas``, ``losses``, ``accuracies``, and ``perplexities`` for causal LMs) and the validation warnings.
    `progress`: a bar over the evaluations (None: when the output is a terminal).
    """
    from tqdm.auto import tqdm

    from .ingredients import IngredientTensors, load_ingredient, validate_soup_ingredients
    from .ops import lmc_barrier, lmc_curve

    pairs = [(str(a), str(b)) for a, b in pairs]
    if not pairs:
        raise ValueError("no pair to measure: give two checkpoints A B, or --pair A B (repeatable)")
    labels = pair_labels(pairs)
    evaluators: dict[str, object] = {}
    out_pairs, evaluator = [], None
    bar = tqdm(total=len(pairs) * num_points, desc="barrier", unit="point",
               disable=None if progress is None else not progress)
    try:
        for (ref_a, ref_b), label in zip(pairs, labels):
            a, b = load_ingredient(ref_a, 0, store), load_ingredient(ref_b, 1, store)
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    validate_soup_ingredients([a, b])
                if a.folder is None:
                    raise ValueError(f"{ref_a}: a barrier needs a checkpoint folder or Hub id (its model class and "
                                     "tokenizer are loaded from it)")
                key = _evaluator_key(a.folder)
                if key not in evaluators:
                    evaluators[key] = evaluator_from_arguments(a.folder, evaluation, trust_remote_code)
                evaluator = evaluators[key]

                def evaluate(state_dict, evaluator=evaluator):
                    result = evaluator(state_dict)
                    bar.update()
                    return result

                curve = lmc_curve(IngredientTensors(a), IngredientTensors(b), evaluate, num_points)
            finally:
                a.close()
                b.close()
            if evaluator.task == "causal-lm":
                curve["perplexities"] = [perplexity(loss) for loss in curve["losses"]]
            out_pairs.append({"a": ref_a, "b": ref_b, "label": label, "revisions": [a.revision, b.revision],
                              **lmc_barrier(curve), "curve": curve, "warnings": [str(w.message) for w in caught]})
    finally:
        bar.close()
    report = {"dataset": evaluation.dataset, "split": evaluation.split, "task": evaluator.task,
              "num_samples": len(evaluator.labels), "num_points": num_points}
    if evaluator.task == "causal-lm":
        report["num_tokens"] = int((evaluator.labels[:, 1:] != -100).sum())
    report["pairs"] = out_pairs
    return report


def plot_barriers(report: dict, path, title: str | None = None) -> None:
    """Loss (and accuracy) along the line of every pair, each with its endpoints' chord, in one PNG; the pairs'
    names and barriers in the legend, the split and the sample count in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = report["pairs"]
    has_acc = all(all(a is not None for a in p["curve"]["accuracies"]) for p in pairs)
    lm = report.get("task") == "causal-lm"
    panels = [("losses", "loss (nats per token)" if lm else "loss", "loss_barrier")]
    if has_acc:
        panels.append(("accuracies", "next-token accuracy" if lm else "accuracy", "accuracy_barrier"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.2), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (key, ylabel, barrier) in zip(axes[0], panels):
        for i, pair in enumerate(pairs):
            color = colors[i % len(colors)]
            alphas, values = pair["curve"]["alphas"], pair["curve"][key]
            relative = pair[f"{barrier}_relative"]
            ax.plot(alphas, values, marker="o", markersize=3, color=color,
                    label=f"{pair['label']}: barrier {pair[barrier]:.3g} ({100 * relative:.2g}%)")
            ax.plot([0, 1], [values[0], values[-1]], linestyle="--", linewidth=0.8, color=color)
        ax.set_xlabel("alpha (0 = A, 1 = B)")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    samples = f"{report['num_samples']} samples" + (f", {report['num_tokens']} tokens" if "num_tokens" in report else "")
    fig.suptitle(title or f"{report.get('dataset')} [{report['split']}], {samples}; dashed: endpoints' chord",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(report: dict, path) -> None:
    """The JSON report, written atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(path)
