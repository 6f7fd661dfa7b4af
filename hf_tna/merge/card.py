"""The model card (README.md) of a soup, rendered through `hf_tna.card`: metadata with the ingredients' Hub ids
and `base_model_relation: merge`, then the method, the ingredients (revisions and local folders), the recipe,
the anchors and the scores, written for people."""

from __future__ import annotations

from huggingface_hub import ModelCard

from .._version import __version__
from ..card import anchor_section, build_card
from .config import SoupConfig
from .recipe import RECIPE_NAME

SOUP_TAGS = ("hf_tna", "merge", "model-soup")


def _where(ing) -> str:
    if ing.revision:
        return f"`{ing.revision}`"
    return "local folder" if ing.folder is not None else "in memory"


def _number(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def soup_card(ingredients, config: SoupConfig, recipe: str, anchors=None, kept=None, scores=None,
              verify: str | None = None, base=None) -> ModelCard:
    """The card of a soup of `ingredients` (`hf_tna.merge.ingredients.Ingredient`) made with `config`; `recipe` is
    the text of its `fusion_recipe.yaml`, `anchors` its `TNAFileConfig` (None when not anchored), `kept` and
    `scores` a greedy run's, `verify` the soup's Hub id or folder, `base` the base ingredient (LoRA, or a method's)."""
    method = config.method
    factors = config.lora_mode == "factors" and any(ing.adapter_config is not None for ing in ingredients)
    refs = [ing.source for ing in ingredients if ing.revision]
    if factors:
        adapter_base = ingredients[0].adapter_config.get("base_model_name_or_path")
        bases, relation, library = [adapter_base] if adapter_base else [], "adapter", "peft"
    else:
        bases = refs + ([base.source] if base is not None and base.revision else [])
        relation, library = "merge", "transformers"
    tags = [*SOUP_TAGS, *(["tna-pfn"] if anchors is not None else [])]
    return build_card(_body(ingredients, config, method, recipe, anchors, kept, scores, verify, base),
                      base_model=bases, base_model_relation=relation, tags=tags, library_name=library)


def _body(ingredients, config, method, recipe, anchors, kept, scores, verify, base) -> str:
    lines = ["# Model soup", "", f"Made with hf_tna {__version__}: {method.description}."]
    if config.alpha is not None:
        lines[-1] += f" alpha = {_number(config.alpha)}."
    if any(ing.adapter_config is not None for ing in ingredients):
        if config.lora_mode == "factors":
            lines += ["", "The ingredients are PEFT LoRA adapters whose A and B factors were fused separately: the "
                      "result is an adapter, not exactly the fusion of the merged models."]
        elif base is not None:
            lines += ["", f"The ingredients are PEFT LoRA adapters: their updates B @ A were fused and added to the "
                      f"base model `{base.source}` ({_where(base)}); the result is a full model."]
    elif base is not None:
        lines += ["", f"Base model: `{base.source}` ({_where(base)})."]
    lines += ["", "## Ingredients", ""]
    header = ["#", "model", "revision"]
    if config.weights is not None:
        header.append("weight")
    if kept is not None:
        header.append("kept")
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, ing in enumerate(ingredients):
        row = [str(i), f"`{ing.source}`", _where(ing)]
        if config.weights is not None:
            row.append(_number(config.weights[i]))
        if kept is not None:
            row.append(f"yes ({kept.index(i) + 1})" if i in kept else "no")
        lines.append("| " + " | ".join(row) + " |")
    if config.weights is not None:
        lines += ["", "Weights are divided by their sum." if config.normalize else
                  "Weights are not normalised: the soup is the weighted sum."]
    if config.exclude:
        what = (f"copied from ingredient {config.exclude_from}" if config.exclude_from is not None else "dropped")
        patterns = ", ".join(f"`{p}`" for p in config.exclude)
        lines += ["", f"Tensors matching {patterns} were not fused but {what}."]
    mergekit = recipe.lstrip().startswith("# mergekit")
    body = "\n".join(line for line in recipe.splitlines() if not line.startswith("#"))
    lines += ["", "## Recipe", "", f"`{RECIPE_NAME}` ({'mergekit' if mergekit else 'hf_tna'} format) makes this soup "
              "again:", "", "```bash", f"hf-tna soup --recipe {RECIPE_NAME} --output soup"]
    if mergekit:
        lines.append(f"mergekit-yaml {RECIPE_NAME} soup  # float32 arithmetic: equal up to rounding")
    lines += ["```", "", "```yaml", body.strip(), "```", ""]
    if anchors is not None:
        context = (f"All {len(ingredients)} ingredients were trained with these anchors from the same base; the soup "
                   "keeps their anchored entries bitwise.")
        lines.append(anchor_section(anchors.spec, verify, anchors.base_model, anchors.base_revision,
                                    len(anchors.manifest), context))
    else:
        lines += ["## Anchors", "", "Not every ingredient was trained with fixed neuron anchors "
                  "(a `tna_config.json`), "
                  "so this soup has none to check.", ""]
    if scores:
        metric = "accuracy" if config.metric == "accuracy" else "minus the loss"
        lines += ["## Scores", "", f"Held-out {metric} on `{config.dataset or 'the evaluation set'}` "
                  f"(split `{config.split}`), higher is better.", "", "| ingredients | score | kept |",
                  "|---|---|---|"]
        for row in scores.get("greedy", []):
            lines.append(f"| {', '.join(map(str, row['indices']))} | {_number(row['score'])} | "
                         f"{'yes' if row['kept'] else 'no'} |")
        lines += ["", f"Soup score: {_number(scores['soup_score'])}.", ""]
    return "\n".join(lines)
