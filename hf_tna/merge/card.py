"""Recipe (`fusion_recipe.yaml`, mergekit-like) and model card (README.md with YAML metadata) of a soup."""

from __future__ import annotations

from pathlib import Path

import yaml

RECIPE_NAME = "fusion_recipe.yaml"
MODEL_CARD_NAME = "README.md"
TAGS = ["hf_tna", "merge", "model-soup"]
METHOD_TEXT = {
    "uniform": "uniform soup: the plain average of the ingredients' weights (Wortsman et al., 2022)",
    "weighted": "weighted soup: the weighted average of the ingredients' weights",
    "greedy": "greedy soup (Wortsman et al., 2022): ingredients sorted by held-out score, each added only if "
    "the held-out score of the average strictly improves",
    "interpolate": "linear interpolation of two models' weights",
}


def write_recipe(folder, recipe: dict) -> Path:
    """Write the recipe as YAML (keys in insertion order) into `folder`."""
    path = Path(folder) / RECIPE_NAME
    path.write_text(yaml.safe_dump(recipe, sort_keys=False, default_flow_style=False))
    return path


def load_recipe(path) -> dict:
    """Read a soup recipe: ``models`` (list of ``{model, revision?, parameters: {weight}}`` or strings),
    ``merge_method`` (uniform, weighted, greedy; mergekit's ``linear`` means weighted), ``parameters``
    (``normalize``), ``dtype``, ``exclude``, ``exclude_from``."""
    path = Path(path)
    try:
        recipe = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(recipe, dict) or not isinstance(recipe.get("models"), list) or not recipe["models"]:
        raise ValueError(f"{path}: a recipe needs a non-empty `models` list")
    return recipe


def model_card_text(recipe: dict, anchors: dict | None = None, scores: dict | None = None) -> str:
    """README.md text: YAML metadata (base_model list, tags, library_name) and a description."""
    models = recipe.get("models", [])
    sources = [str(m["model"]).partition("@")[0] if m.get("revision") else str(m["model"])
               for m in models if not str(m["model"]).startswith("<")]
    library = "peft" if recipe.get("lora_mode") == "factors" else "transformers"
    meta = {"base_model": sources, "tags": TAGS, "library_name": library}
    method = recipe.get("merge_method", "uniform")
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).rstrip(), "---", "", "# Model soup", ""]
    lines += [f"Made with hf_tna {recipe.get('hf_tna_version', '')}: "
              f"{METHOD_TEXT.get(method, method)}.", "", "## Ingredients", "",
              "| # | model | revision | weight | kept |", "|---|---|---|---|---|"]
    kept = recipe.get("kept")
    for i, m in enumerate(models):
        weight = (m.get("parameters") or {}).get("weight", "")
        lines.append(f"| {i} | {m['model']} | {m.get('revision') or ''} | {weight} | "
                     f"{'' if kept is None else ('yes' if i in kept else 'no')} |")
    params = {k: v for k, v in recipe.items() if k not in ("models", "hf_tna_version")}
    lines += ["", "## Recipe", "", "```yaml", yaml.safe_dump(params, sort_keys=False).rstrip(), "```", ""]
    lines += ["## Anchors", ""]
    if anchors:
        spec = anchors["anchor_spec"]
        lines += [f"All ingredients were fine-tuned with training-time neuron alignment (TNA-PFN) from one base "
                  f"({anchors.get('base_model') or 'unknown'}): ratio {spec['ratio']}, seed {spec['seed']}, "
                  f"granularity {spec['granularity']}, include {spec['include']}, exclude {spec['exclude']}, "
                  f"round {spec['round']}. The anchored entries are bitwise those of the base; `tna_config.json` "
                  f"holds their manifest ({len(anchors.get('manifest', {}))} tensors).", ""]
    else:
        lines += ["Not all ingredients were anchored: no `tna_config.json` for this soup.", ""]
    if scores:
        lines += ["## Scores", "", "```yaml", yaml.safe_dump(scores, sort_keys=False).rstrip(), "```", ""]
    return "\n".join(lines)


def write_model_card(folder, recipe: dict, anchors: dict | None = None, scores: dict | None = None) -> Path:
    path = Path(folder) / MODEL_CARD_NAME
    path.write_text(model_card_text(recipe, anchors, scores))
    return path
