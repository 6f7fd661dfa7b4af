"""Model soups of real checkpoints: validated, streamed, written atomically with their recipe and card.

    result = build_soup(["ckpt_a", "org/b@v2"], "soup/", merge_method="weighted", weights=[1, 2])
    result = build_soup(folders, "soup/", SoupConfig(merge_method="greedy", dataset="val_dir"))

Ingredients are checkpoint folders, Hub repo ids (``org/name`` or ``org/name@revision``, through `hf_tna.hub`),
in-memory models or state dicts. The merge method comes from the registry (`hf_tna.merge.methods`): element-wise
methods (uniform, weighted, interpolate) stream every tensor in chunks read with plain file reads into reused
buffers and written straight into planned shards, so memory holds a few chunks whatever the number and size of
the ingredients; other methods work tensor by tensor, whole-model methods (greedy) on lazy state dicts.

Everything that can be checked from the settings, headers and configs (method parameters, architecture, key sets,
shapes, dtypes, anchor spec, anchors intact) is checked before any output is made; values (NaN/inf) are checked as
each tensor is read, and every written tensor is checked finite. The soup is written into a temporary folder beside
the target and renamed at the end: a failed run leaves no output folder. Beside the weights: `fusion_recipe.yaml`
(`hf_tna.merge.recipe`), `tna_config.json` when all ingredients share one anchor spec, and a model card. PEFT LoRA
adapters: see `hf_tna.merge.lora`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..card import write_card
from ..errors import option
from ..io import ADAPTER_SAFE_WEIGHTS_NAME
from ..manifest import TNAFileConfig
from .card import soup_card
from .config import EVALUATION_FIELDS, SoupConfig, torch_dtype
from .config import torch_dtype as _torch_dtype  # noqa: F401  (floating output dtypes only)
from .ingredients import Ingredient, IngredientTensors, load_ingredient, validate_soup_ingredients
from .methods import MergeMethod
from .ops import check_tensor_specs, check_weights
from .recipe import RECIPE_NAME, recipe_text
from .writer import (  # noqa: F401  (re-exported: the writer's pieces are used by ColD fusion and tests)
    CHUNK_ELEMENTS,
    COPIED_FILES,
    FusionPlan,
    check_output_dir,
    chunk_fuser,
    copy_side_files,
    scratch_for,
    write_fused,
)


@dataclass
class SoupResult:
    """What `build_soup` made.

    Attributes:
        output_dir: the soup's folder. files: the files in it.
        models: the ingredients as the recipe names them (folders absolute, Hub ids pinned to their commit).
        config: the settings it was made with (`kept` filled in by a greedy run).
        recipe: the content of its `fusion_recipe.yaml`.
        anchors: its `tna_config.json` content, None when not every ingredient was anchored.
        kept, scores: a greedy run's kept ingredients (in the order they were added) and held-out scores.
        hub: ``{"repo_id", "revision", "sha"}`` of the upload, when pushed.
    """

    output_dir: Path
    files: list[str]
    models: list[str]
    config: SoupConfig
    recipe: dict
    anchors: dict | None = None
    kept: list[int] | None = None
    scores: dict | None = None
    hub: dict | None = field(default=None)

    def to_dict(self) -> dict:
        """JSON-able summary (what `hf-tna soup` prints)."""
        return {"output_dir": str(self.output_dir), "files": self.files, "models": self.models,
                "merge_method": self.config.method.name, "recipe": self.recipe, "anchored": self.anchors is not None,
                "kept": self.kept, "scores": self.scores, "hub": self.hub}


def build_soup(ingredients: Sequence, output_dir, config: SoupConfig | None = None, *, score_fn=None,
               **overrides) -> SoupResult:
    """Fuse `ingredients` into a soup folder `output_dir` with `config` (a `SoupConfig`; keyword `overrides` replace
    its fields, e.g. ``merge_method="weighted", weights=[1, 2]``) and return a `SoupResult`.

    `ingredients`: folders, Hub repo ids (``org/name@rev``, read through `config.store`), models or state dicts.
    `score_fn(state_dict) -> float`: held-out score for methods that evaluate (greedy; higher is better), instead of
    `config.dataset`. The folder gets sharded safetensors, the first ingredient's config and tokenizer files,
    `fusion_recipe.yaml`, `tna_config.json` (when all ingredients share one anchor spec) and a model card; with
    `config.push_to_hub` it is then uploaded.
    """
    config = config if config is not None else SoupConfig()
    if not isinstance(config, SoupConfig):
        raise TypeError(f"config must be a SoupConfig, got {type(config).__name__}")
    if overrides:
        config = config.replace(**overrides)
    method = config.method
    weights = _check_counts(method, config, len(ingredients))
    if score_fn is not None and ("score_fn" not in method.settings or config.kept is not None):
        raise ValueError(f"score_fn is only used by merge methods that evaluate (greedy without kept), not by "
                         f"{method.name!r}" + (" with kept" if config.kept is not None else ""))
    check_output_dir(output_dir)
    loaded: list[Ingredient] = []
    base = None
    try:
        for i, src in enumerate(ingredients):
            loaded.append(load_ingredient(src, i, config.store, config.allow_pickle))
        base = _load_base(loaded, method, config)
        settings = {"weights": weights, "normalize": config.normalize, "alpha": config.alpha}
        details: dict = {}
        if any(ing.adapter_config is not None for ing in loaded):
            plan = _lora_plan(loaded, base, method, config, settings)
        elif method.whole_model:
            plan, details = _whole_model_plan(loaded, method, config, settings, score_fn)
        else:
            plan = _tensor_plan(loaded, base, method, settings)
    except BaseException:
        for ing in [*loaded, *([base] if base is not None else [])]:
            ing.close()
        raise
    kept = details.get("kept")
    models = [reference(ing) for ing in loaded]
    recorded = _recorded(config, kept, base)
    verify_target = _verify_target(config, output_dir)
    written = {}

    def artefacts(folder: Path, anchors: TNAFileConfig | None, dtype: str) -> None:
        written["recipe"] = recipe_text(models, recorded, dtype)
        (folder / RECIPE_NAME).write_text(written["recipe"])
        card = soup_card(loaded, config, written["recipe"], anchors, kept, details.get("scores"), verify_target, base)
        write_card(folder, card)

    folder, anchors, _ = write_fused(loaded, output_dir, plan, config, artefacts)
    result = SoupResult(folder, sorted(p.name for p in folder.iterdir()), models, recorded,
                        yaml.safe_load(written["recipe"]), anchors.to_dict() if anchors else None, kept,
                        details.get("scores"))
    if config.push_to_hub:
        result.hub = push_folder(folder, config.push_to_hub, config.store, config.hub_revision, config.private,
                                 config.commit_message or f"hf_tna {method.name} soup of {len(loaded)} models")
    return result


def interpolate_checkpoints(a, b, alpha: float, output_dir, config: SoupConfig | None = None,
                            **overrides) -> SoupResult:
    """Write ``(1 - alpha) a + alpha b`` (``torch.lerp``; exact endpoints) as a checkpoint folder: `build_soup` with
    the `interpolate` method."""
    return build_soup([a, b], output_dir, config, merge_method="interpolate", alpha=alpha, **overrides)


def reference(ing: Ingredient) -> str:
    """How a recipe names an ingredient: a folder by its absolute path, a Hub id pinned to the commit it was read at,
    an in-memory model by what it is (such a recipe cannot be re-run)."""
    if ing.revision:
        return f"{ing.source.partition('@')[0]}@{ing.revision}"
    if ing.folder is not None:
        return str(Path(ing.folder).resolve())
    return ing.source


# --------------------------------------------------------------------------------------------------
# Checks and plans
# --------------------------------------------------------------------------------------------------
def _check_counts(method: MergeMethod, config: SoupConfig, n: int) -> list[float] | None:
    """Settings that depend on the number of ingredients; returns the checked weights."""
    if n == 0:
        raise ValueError("a soup needs at least one ingredient")
    if method.num_models is not None and n != method.num_models:
        raise ValueError(f"merge_method {method.name!r} takes exactly {method.num_models} ingredients, got {n}")
    weights = check_weights(config.weights, n, config.normalize) if config.weights is not None else None
    if config.kept is not None and max(config.kept) >= n:
        raise ValueError(f"kept names ingredient {max(config.kept)}, but there are {n} ingredients (0..{n - 1})")
    if config.exclude and config.exclude_from is not None and not -n <= config.exclude_from < n:
        raise ValueError(f"exclude_from={config.exclude_from} is not an ingredient index (0..{n - 1}); "
                         f"use {option('exclude_from', None)} to drop the excluded tensors")
    return weights


def _load_base(loaded: list[Ingredient], method: MergeMethod, config: SoupConfig) -> Ingredient | None:
    adapters = any(ing.adapter_config is not None for ing in loaded)
    if config.base is None:
        if "base" in method.required:
            raise ValueError(f"merge_method {method.name!r} needs a base model: pass {option('base')}")
        return None
    if not adapters and "base" not in method.settings:
        takers = sorted(n for n, m in _methods().items() if "base" in m.settings)
        raise ValueError(f"base is used by PEFT adapter ingredients and by merge methods that take a base "
                         f"({', '.join(takers) or 'none registered'}); merge_method {method.name!r} of full models "
                         f"does not use it: drop {option('base')}")
    base = load_ingredient(config.base, len(loaded), config.store, config.allow_pickle)
    base.name = f"base ({base.source})"
    if not adapters:
        check_tensor_specs([ing.specs for ing in loaded] + [base.specs], [ing.name for ing in loaded] + [base.name],
                           check_dtypes=config.dtype is None)
    return base


def _methods():
    from .methods import METHODS

    return METHODS


def _tensor_plan(loaded, base, method: MergeMethod, settings: dict) -> FusionPlan:
    views = [IngredientTensors(ing) for ing in loaded]

    def merge(tensors, consume=False, **extra):
        return method.merge_tensors(tensors, consume=consume, **settings, **extra)

    def fuse(key):
        extra = {} if base is None else {"base": base.get(key)}
        return merge((v[key] for v in views), **extra)

    chunk_fuse = None
    if method.elementwise:
        chunk_fuse = chunk_fuser(loaded, merge, method._accepts("consume"), base)
    return FusionPlan(fuse, chunk_fuse)


def _whole_model_plan(loaded, method: MergeMethod, config: SoupConfig, settings: dict, score_fn):
    evaluates = "score_fn" in method.settings and config.kept is None
    if evaluates and score_fn is None:
        if config.dataset is None:
            raise ValueError(f"merge_method {method.name!r} scores candidate soups on held-out data: pass "
                             f"{option('dataset')} (or score_fn=, or the kept list of an earlier run)")
        score_fn = _score_fn(loaded[0], config)
    if evaluates:  # validated (and warned about) once, before the evaluations
        validate_soup_ingredients(loaded, config.require_anchors, config.verify, torch_dtype(config.dtype))
    views = [IngredientTensors(ing) for ing in loaded]
    soup, details = method.merge_state_dicts(views, config.exclude, config.exclude_from, **settings,
                                             score_fn=score_fn, kept=config.kept)
    return FusionPlan(lambda key: soup[key], validated=evaluates), details


def _score_fn(first: Ingredient, config: SoupConfig):
    from .evaluation import build_score_fn, evaluator_from_arguments

    if first.folder is None:
        raise ValueError("evaluating on a dataset needs the first ingredient as a checkpoint folder (its model "
                         "class and tokenizer are loaded from it); pass score_fn= for in-memory models")
    evaluator = evaluator_from_arguments(first.folder, config, config.trust_remote_code)
    return build_score_fn(evaluator, config.metric)


def _lora_plan(loaded, base, method: MergeMethod, config: SoupConfig, settings: dict) -> FusionPlan:
    from .lora import check_adapters, merged_fuse, shares_a, warn_factors

    if method.whole_model or "base" in method.settings or config.exclude:
        raise ValueError(f"PEFT adapter soups take per-tensor merge methods without a base of their own and without "
                         f"exclude; merge_method {method.name!r}"
                         + (f" with exclude {config.exclude}" if config.exclude else "") + " is not one")
    check_adapters(loaded)

    def merge(tensors):
        return method.merge_tensors(tensors, **settings)

    if config.lora_mode == "factors":
        if base is not None:
            raise ValueError(f"lora_mode='factors' averages the adapters themselves and takes no base: drop "
                             f"{option('base')}")
        if not shares_a(loaded):  # FFA-LoRA adapters share one frozen A: mean(B) @ A is the mean update, exactly
            warn_factors()
        views = [IngredientTensors(ing) for ing in loaded]
        return FusionPlan(lambda key: merge(v[key] for v in views), weights_name=ADAPTER_SAFE_WEIGHTS_NAME,
                          max_shard_size=2**62)
    if base is None:
        raise ValueError(f"LoRA adapters are souped exactly as merged updates B @ A on their base: pass "
                         f"{option('base')} (the adapters' base model), or {option('lora_mode', 'factors')} "
                         "(not exact)")
    return FusionPlan(merged_fuse(loaded, base, merge), template=base)


def _recorded(config: SoupConfig, kept, base) -> SoupConfig:
    """The settings as the recipe records them: a greedy run's choice instead of its evaluation set, the base by
    its reference."""
    changes = {}
    if kept is not None:
        defaults = SoupConfig()
        changes = {name: getattr(defaults, name) for name in (*EVALUATION_FIELDS, "metric")}
        changes["kept"] = kept
    if base is not None:
        changes["base"] = reference(base)
    return dataclasses.replace(config, **changes) if changes else config


def _verify_target(config: SoupConfig, output_dir) -> str:
    if config.push_to_hub:
        from ..hub import parse_repo_ref

        repo, rev = parse_repo_ref(config.push_to_hub)
        revision = rev or config.hub_revision
        return repo if revision == "main" else f"{repo}@{revision}"
    return str(output_dir)


def push_folder(folder, repo_id: str, store=None, revision: str = "main", private: bool = False,
                message: str = "hf_tna soup") -> dict:
    """Upload a soup folder to a Hub repo (created if needed) through the store; return repo and sha."""
    from ..hub import open_store, parse_repo_ref

    store = open_store(store)
    repo, rev = parse_repo_ref(repo_id)
    revision = rev or revision
    store.create_repo(repo, private=private, exist_ok=True)
    sha = store.upload_folder(repo, str(folder), message, revision=revision)
    return {"repo_id": repo, "revision": revision, "sha": sha}
