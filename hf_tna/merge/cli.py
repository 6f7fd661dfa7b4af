"""`hf-tna soup`, `hf-tna interpolate`, `hf-tna barrier`: the command line of hf_tna.merge.soup.

    hf-tna soup ckpt_a ckpt_b org/c@v2 --output soup/ [--method weighted --weights 1 2 1] [--dtype bfloat16]
    hf-tna soup --recipe recipe.yaml --output soup/          # mergekit-like YAML recipe
    hf-tna soup a b c --method greedy --dataset val_dir --split validation --output soup/
    hf-tna interpolate A B --alpha 0.5 --output mid/
    hf-tna barrier A B --dataset val_dir --split validation --num-points 11 --plot lmc.png
"""

from __future__ import annotations

import json
import sys

COMMANDS = ("soup", "interpolate", "barrier")


def _fusion_args(p, what):
    """Flags of every command that writes a fused checkpoint (soup, interpolate): output, dtype, checks, store."""
    p.add_argument("--output", "-o", required=True, help=f"folder to write the {what} into (must not exist)")
    p.add_argument("--dtype", default=None, help="output dtype (float32, bfloat16, float16); default: the inputs'")
    p.add_argument("--max-shard-size", default="5GB", help="largest safetensors shard, e.g. 5GB or 500MB")
    p.add_argument("--require-anchors", action="store_true", help="refuse ingredients without tna_config.json")
    p.add_argument("--no-verify", dest="verify", action="store_false", help="skip checking anchors against hashes")
    p.add_argument("--allow-pickle", action="store_true", help="accept pickle (.bin) weights: they can run code")
    p.add_argument("--trust-remote-code", action="store_true", help="copy and run custom model code")
    p.add_argument("--store", default=None, help="where Hub repo ids are read from and pushed to (hf_tna.hub)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def _eval_args(p):
    p.add_argument("--dataset", help="evaluation data: a datasets folder (save_to_disk), a csv/json/parquet file")
    p.add_argument("--split", default="validation", help="split of --dataset")
    p.add_argument("--task", default=None, choices=["image-classification", "sequence-classification"])
    p.add_argument("--max-samples", type=int, default=None, help="evaluate on at most this many samples")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--input-column", default=None, help="raw text or image column (default: text / image)")
    p.add_argument("--label-column", default="label")


def add_parser(subparsers):
    """Adds the soup, interpolate and barrier subcommands (each once); returns the soup parser."""
    if "soup" not in subparsers.choices:
        p = subparsers.add_parser("soup", help="average checkpoints into a model soup",
                                  description="Validated, streamed model soup of checkpoints (folders, Hub repo ids "
                                  "org/name@rev, PEFT LoRA adapters). Prints a JSON report.")
        p.add_argument("models", nargs="*", help="ingredients: folders or Hub repo ids (org/name[@revision])")
        p.add_argument("--recipe", default=None, help="YAML recipe: models, merge_method, parameters, dtype")
        p.add_argument("--method", default=None, choices=["uniform", "weighted", "greedy"])
        p.add_argument("--weights", type=float, nargs="+", default=None, help="one weight per ingredient")
        p.add_argument("--no-normalize", dest="normalize", action="store_false", default=None,
                       help="weighted sum instead of weighted mean")
        p.add_argument("--exclude", nargs="+", default=None, help="regex patterns of tensors not averaged")
        p.add_argument("--exclude-from", default=None, help="ingredient index excluded tensors come from, or 'none'")
        p.add_argument("--base", default=None, help="base model of LoRA adapter ingredients (exact merged soup)")
        p.add_argument("--lora-mode", default=None, choices=["merged", "factors"])
        p.add_argument("--metric", default="accuracy", choices=["accuracy", "loss"], help="greedy soup criterion")
        p.add_argument("--push-to-hub", default=None, metavar="REPO", help="upload the soup to this repo")
        p.add_argument("--revision", default="main", help="branch to push to")
        p.add_argument("--private", action="store_true", help="create the repo private")
        p.add_argument("--commit-message", default=None)
        _fusion_args(p, "soup")
        _eval_args(p)
        p.set_defaults(func=run_soup)
    if "interpolate" not in subparsers.choices:
        p = subparsers.add_parser("interpolate", help="interpolate two checkpoints: (1 - alpha) A + alpha B",
                                  description="Write (1 - alpha) A + alpha B (torch.lerp; exact endpoints).")
        p.add_argument("a")
        p.add_argument("b")
        p.add_argument("--alpha", type=float, required=True, help="0 gives A, 1 gives B")
        _fusion_args(p, "interpolated model")
        p.set_defaults(func=run_interpolate)
    if "barrier" not in subparsers.choices:
        p = subparsers.add_parser("barrier", help="loss/accuracy barrier along the line between two checkpoints",
                                  description="Evaluate (1 - alpha) A + alpha B on a split; print the curve and the "
                                  "loss and accuracy barriers as JSON and plot them (PNG).")
        p.add_argument("a")
        p.add_argument("b")
        p.add_argument("--num-points", type=int, default=25)
        p.add_argument("--plot", default="lmc_barrier.png", help="PNG to write ('' for none)")
        p.add_argument("--json", default=None, help="also write the JSON report here")
        p.add_argument("--store", default=None, help="where Hub repo ids are read from")
        p.add_argument("--trust-remote-code", action="store_true")
        _eval_args(p)
        p.set_defaults(func=run_barrier)
    return subparsers.choices["soup"]


def _recipe_args(args) -> dict:
    from .card import load_recipe

    recipe = load_recipe(args.recipe) if args.recipe else {}
    models, weights = [], []
    for m in recipe.get("models", []):
        if isinstance(m, str):
            models.append(m)
            continue
        ref = m["model"] + (f"@{m['revision']}" if m.get("revision") else "")
        models.append(ref)
        weights.append((m.get("parameters") or {}).get("weight"))
    method = recipe.get("merge_method")
    if method == "linear":
        method = "weighted" if any(w is not None for w in weights) else "uniform"
    params = recipe.get("parameters") or {}
    out = {"models": args.models or models, "method": args.method or method,
           "weights": args.weights or (weights if any(w is not None for w in weights) else None),
           "normalize": args.normalize if args.normalize is not None else params.get("normalize", True),
           "dtype": args.dtype or recipe.get("dtype"), "exclude": args.exclude or recipe.get("exclude") or None,
           "exclude_from": recipe.get("exclude_from", 0), "base": args.base or recipe.get("base"),
           "lora_mode": args.lora_mode or recipe.get("lora_mode") or "merged"}
    if args.exclude_from is not None:
        out["exclude_from"] = None if args.exclude_from.lower() == "none" else int(args.exclude_from)
    if out["method"] is None:
        out["method"] = "weighted" if out["weights"] else "uniform"
    if not out["models"]:
        raise SystemExit("hf-tna soup: give ingredients (positional) or a --recipe with `models`")
    return out


def _evaluator(args, model_path):
    from .evaluation import build_evaluator

    if not args.dataset:
        raise SystemExit(f"hf-tna {args.command}: --dataset is needed to evaluate")
    return build_evaluator(model_path, args.dataset, split=args.split, task=args.task,
                           trust_remote_code=args.trust_remote_code, batch_size=args.batch_size,
                           max_samples=args.max_samples, input_column=args.input_column,
                           label_column=args.label_column)


def _local_folder(ref, store):
    from ..hub import resolve_folder

    return resolve_folder(ref, store)[0]


def run_soup(args) -> int:
    from .soup import build_soup

    r = _recipe_args(args)
    score_fn = None
    if r["method"] == "greedy":
        from .evaluation import build_score_fn

        score_fn = build_score_fn(_evaluator(args, _local_folder(r["models"][0], args.store)), args.metric)
    report = build_soup(r["models"], args.output, method=r["method"], weights=r["weights"], normalize=r["normalize"],
                        score_fn=score_fn, exclude=r["exclude"], exclude_from=r["exclude_from"], dtype=r["dtype"],
                        max_shard_size=args.max_shard_size, require_anchors=args.require_anchors,
                        verify=args.verify, allow_pickle=args.allow_pickle, trust_remote_code=args.trust_remote_code,
                        store=args.store, progress=args.progress, push_to_hub=args.push_to_hub,
                        hub_revision=args.revision, private=args.private, commit_message=args.commit_message,
                        base=r["base"], lora_mode=r["lora_mode"])
    report.pop("anchors", None)
    print(json.dumps(report, default=str))
    return 0


def run_interpolate(args) -> int:
    from .soup import interpolate_checkpoints

    report = interpolate_checkpoints(args.a, args.b, args.alpha, args.output, store=args.store,
                                     allow_pickle=args.allow_pickle, dtype=args.dtype,
                                     max_shard_size=args.max_shard_size, require_anchors=args.require_anchors,
                                     verify=args.verify, trust_remote_code=args.trust_remote_code,
                                     progress=args.progress)
    report.pop("anchors", None)
    print(json.dumps(report, default=str))
    return 0


def run_barrier(args) -> int:
    import warnings

    from .ingredients import IngredientTensors, load_ingredient, validate_soup_ingredients
    from .ops import lmc_barrier, lmc_curve

    a, b = (load_ingredient(ref, i, args.store) for i, ref in enumerate((args.a, args.b)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        validate_soup_ingredients([a, b])
    evaluator = _evaluator(args, a.folder)
    curve = lmc_curve(IngredientTensors(a), IngredientTensors(b), evaluator, args.num_points)
    report = {"a": args.a, "b": args.b, "revisions": [a.revision, b.revision], "split": args.split,
              **lmc_barrier(curve), "curve": curve, "warnings": [str(w.message) for w in caught]}
    if args.plot:
        plot_curve(curve, report, args.plot)
        report["plot"] = args.plot
    text = json.dumps(report, indent=2)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0


def plot_curve(curve: dict, report: dict, path) -> None:
    """Loss and accuracy along the interpolation line, with the endpoints' chord, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    alphas = curve["alphas"]
    has_acc = all(a is not None for a in curve["accuracies"])
    fig, axes = plt.subplots(1, 2 if has_acc else 1, figsize=(10 if has_acc else 5, 3.6), squeeze=False)
    rows = [("losses", "loss", report["loss_barrier"])]
    if has_acc:
        rows.append(("accuracies", "accuracy", report["accuracy_barrier"]))
    for ax, (key, label, barrier) in zip(axes[0], rows):
        values = curve[key]
        ax.plot(alphas, values, marker="o", label=label)
        ax.plot([0, 1], [values[0], values[-1]], linestyle="--", color="gray", label="endpoints")
        ax.set_xlabel("alpha (0 = A, 1 = B)")
        ax.set_ylabel(label)
        ax.set_title(f"{label} barrier {barrier:.4g}")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":  # pragma: no cover
    from ..cli import main

    sys.exit(main())
