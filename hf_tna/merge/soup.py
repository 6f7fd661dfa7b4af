"""Model soups of real checkpoints: validated, streamed, written atomically with their recipe and card.

Ingredients are checkpoint folders, Hub repo ids (``org/name`` or ``org/name@revision``, through
`hf_tna.hub`), in-memory models or state dicts. Uniform/weighted soups and interpolations stream
every tensor in chunks (`CHUNK_ELEMENTS`) read with plain file reads into reused buffers and written
straight into planned shards, so memory holds a few chunks whatever the number and size of the
ingredients; greedy soups and LoRA merges work tensor by tensor.

Everything that can be checked from headers and configs (architecture, key sets, shapes, dtypes, anchor
spec, anchors intact) is checked before any output is made; values (NaN/inf) are checked as each tensor
is read. The soup is written into a temporary folder beside the target and renamed at the end: a failed
run leaves no output folder. PEFT LoRA adapters: see `hf_tna.merge.lora`.
"""

from __future__ import annotations

import fnmatch
import json
import math
import shutil
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from .._version import __version__
from ..io import (
    ADAPTER_SAFE_WEIGHTS_NAME,
    SAFE_WEIGHTS_NAME,
    SAFETENSORS_DTYPES,
    ShardedSafetensorsWriter,
    locked_scratch,
    safetensors_dtype,
)
from ..manifest import TNAFileConfig, layout_from_manifest, manifest_entry
from .ingredients import (
    Ingredient,
    IngredientTensors,
    load_ingredient,
    validate_soup_ingredients,
)
from .ops import (
    average_tensors,
    check_output_finite,
    check_weights,
    interpolate_tensors,
    is_excluded,
)

# files copied from the first ingredient (globs); weights, training state and custom code are not
COPIED_FILES = (
    "config.json", "generation_config.json", "preprocessor_config.json", "processor_config.json",
    "image_processor_config.json", "feature_extractor_config.json", "video_preprocessor_config.json",
    "tokenizer*", "special_tokens_map.json", "added_tokens.json", "vocab.*", "merges.txt", "*.model",
    "*.tiktoken", "chat_template.*", "adapter_config.json",
)
METHODS = ("uniform", "weighted", "greedy")
CHUNK_ELEMENTS = 1 << 18  # 1 MB of float32 per buffer: the working set stays in cache


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------
def copy_side_files(src: Path | None, dst: Path, trust_remote_code: bool = False) -> list[str]:
    """Copy config, tokenizer and processor files (and custom `*.py` code only if trusted)."""
    if src is None:
        return []
    copied = []
    for path in sorted(src.iterdir()):
        if not path.is_file():
            continue
        wanted = any(fnmatch.fnmatch(path.name, g) for g in COPIED_FILES)
        if path.suffix == ".py":
            wanted = trust_remote_code
        if wanted and not path.name.endswith((".safetensors", ".bin", ".index.json")):
            shutil.copy2(path, dst / path.name)
            copied.append(path.name)
    return copied


def output_specs(ingredients, dtype, exclude, exclude_from):
    """name -> (shape, dtype) of the output, in the first ingredient's file order."""
    out = {}
    for key in ingredients[0].order():
        if exclude and is_excluded(key, exclude) and exclude_from is None:
            continue
        shape, st_dtype = ingredients[0].specs[key]
        floating = st_dtype.startswith(("F", "BF"))
        out[key] = (shape, safetensors_dtype(dtype) if dtype is not None and floating else st_dtype)
    return out


FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def _torch_dtype(dtype):
    """The output dtype: None (the inputs') or a floating type; integer and bool outputs are refused."""
    if dtype is None:
        return None
    value = dtype if isinstance(dtype, torch.dtype) else getattr(torch, str(dtype).replace("torch.", ""), None)
    if value not in FLOAT_DTYPES:
        raise ValueError(f"dtype {dtype!r} is not a floating type a soup can be written in; use float32, bfloat16, "
                         "float16 or float64")
    return value


def check_output_dir(output_dir) -> Path:
    """The output folder: it must not exist, or be empty."""
    output_dir = Path(output_dir)
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise FileExistsError(f"output folder {output_dir} exists and is not empty; choose another or remove it")
    return output_dir


def scratch_for(output_dir: Path):
    """The hidden temporary folder beside `output_dir` that a result is written into, then renamed; removed on
    any failure, and by the next run if this process is killed (`hf_tna.io.locked_scratch`)."""
    return locked_scratch(output_dir.parent, f".{output_dir.name}.tmp-")


def finish_output(tmp: Path, output_dir: Path) -> None:
    if output_dir.exists():
        output_dir.rmdir()  # empty, checked in check_output_dir
    tmp.rename(output_dir)


def write_fused(
    ingredients: Sequence[Ingredient],
    output_dir,
    fuse,
    recipe: dict,
    dtype=None,
    exclude=None,
    exclude_from: int | None = 0,
    max_shard_size="5GB",
    require_anchors: bool = False,
    verify: bool = True,
    trust_remote_code: bool = False,
    progress: bool = True,
    scores: dict | None = None,
    template: Ingredient | None = None,
    weights_name: str = SAFE_WEIGHTS_NAME,
    quiet: bool = False,
    chunk_fuse=None,
) -> dict:
    """Validate, then write ``fuse(key) -> tensor`` for every key into `output_dir` with recipe and card.

    `fuse` gets a tensor name and returns the fused tensor (before the optional `dtype` cast). Element-wise
    methods also give ``chunk_fuse(key, start, stop)`` -> the fused elements [start, stop) of the flattened
    tensor: tensors are then streamed in chunks of `CHUNK_ELEMENTS` through reused buffers. The output
    has the tensors and side files of `template` (default: the first ingredient; the base for merged LoRA
    soups, which get no `tna_config.json`). Returns a report: output folder, files, anchors (the soup's
    `TNAFileConfig` dict or None), recipe.
    """
    from tqdm.auto import tqdm

    from .card import write_model_card, write_recipe

    dtype = _torch_dtype(dtype)
    with warnings.catch_warnings():
        if quiet:  # already validated (and warned) before an evaluation
            warnings.simplefilter("ignore")
        anchors = validate_soup_ingredients(ingredients, require_anchors, verify, dtype)
    if template is not None:
        anchors = None
    template = template or ingredients[0]
    specs = output_specs([template], dtype, exclude, exclude_from)
    output_dir = check_output_dir(output_dir)
    threads = torch.get_num_threads()
    try:
        with scratch_for(output_dir) as tmp:  # removed on failure; renamed into place at the end
            manifest = dict(anchors.manifest) if anchors is not None else {}
            recompute = anchors is not None and dtype is not None
            torch.set_num_threads(1)  # streamed element-wise work is memory-bound; one thread avoids OpenMP waits
            pending = None  # the previous chunk's write runs in a thread while the next chunk is computed
            with ShardedSafetensorsWriter(tmp, specs, max_shard_size, weights_name) as writer, \
                    ThreadPoolExecutor(max_workers=1) as pool:
                for key in tqdm(list(specs), desc="soup", unit="tensor", disable=not progress):
                    excluded = bool(exclude) and is_excluded(key, exclude)
                    if chunk_fuse is not None and not excluded and not (recompute and key in manifest):
                        numel = math.prod(specs[key][0])
                        for start in range(0, numel, CHUNK_ELEMENTS):
                            values = chunk_fuse(key, start, min(numel, start + CHUNK_ELEMENTS))
                            values = values.to(dtype) if dtype is not None else values
                            check_output_finite(values, key)
                            pending = _write_async(pool, pending, writer.write_range, key, values, start)
                        continue
                    if excluded:
                        tensor = ingredients[exclude_from].get(key)
                    else:
                        tensor = fuse(key)
                    if dtype is not None and tensor.is_floating_point():
                        tensor = tensor.to(dtype)
                    check_output_finite(tensor, key)
                    if recompute and key in manifest:
                        layout = layout_from_manifest(key, manifest[key])
                        manifest[key] = manifest_entry(tensor, layout, anchors.spec)
                    pending = _write_async(pool, pending, writer.write, key, tensor)
                if pending is not None:
                    pending.result()
            torch.set_num_threads(threads)
            copy_side_files(template.folder, tmp, trust_remote_code)
            if weights_name == ADAPTER_SAFE_WEIGHTS_NAME and not (tmp / "adapter_config.json").exists():
                (tmp / "adapter_config.json").write_text(json.dumps(template.adapter_config, indent=2, sort_keys=True))
            soup_tna = None
            if anchors is not None:
                soup_tna = TNAFileConfig(anchors.spec, manifest, anchors.base_model, anchors.base_revision)
                soup_tna.save(tmp)
            recipe = {**recipe, "dtype": str(dtype or _torch_dtype_of([template])).replace("torch.", ""),
                      "hf_tna_version": __version__}
            write_recipe(tmp, recipe)
            write_model_card(tmp, recipe, soup_tna.to_dict() if soup_tna else None, scores)
            finish_output(tmp, output_dir)
    finally:
        torch.set_num_threads(threads)
        for ing in [*ingredients, template]:
            ing.close()
    return {"output_dir": str(output_dir), "files": sorted(p.name for p in output_dir.iterdir()),
            "anchors": soup_tna.to_dict() if soup_tna else None, "recipe": recipe}


def _write_async(pool, pending, write, *args):
    """Wait for the previous write, then start this one (one write in flight; double-buffered chunks)."""
    if pending is not None:
        pending.result()
    return pool.submit(write, *args)


def _torch_dtype_of(ingredients) -> str:
    dtypes = sorted({d for _, d in ingredients[0].specs.values() if d.startswith(("F", "BF"))})
    return str(SAFETENSORS_DTYPES[dtypes[0]]) if len(dtypes) == 1 else "mixed"


def ingredient_records(ingredients, weights=None) -> list[dict]:
    rows = []
    for i, ing in enumerate(ingredients):
        row = {"model": ing.source, "revision": ing.revision}
        if weights is not None:
            row["parameters"] = {"weight": weights[i]}
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------------
def build_soup(
    ingredients: Sequence,
    output_dir,
    method: str = "uniform",
    weights: Sequence[float] | None = None,
    normalize: bool = True,
    score_fn=None,
    exclude: str | Sequence[str] | None = None,
    exclude_from: int | None = 0,
    dtype=None,
    max_shard_size="5GB",
    require_anchors: bool = False,
    verify: bool = True,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    store=None,
    progress: bool = True,
    push_to_hub: str | None = None,
    hub_revision: str = "main",
    private: bool = False,
    commit_message: str | None = None,
    base=None,
    lora_mode: str = "merged",
) -> dict:
    """Fuse checkpoints into a soup folder (``method``: uniform, weighted or greedy) and return a report.

    `ingredients`: folders, Hub repo ids (``org/name@rev``), models or state dicts. `weights` (weighted):
    one per ingredient. `score_fn(state_dict) -> float` (greedy; higher is better, on held-out data, e.g.
    `hf_tna.merge.evaluation.build_score_fn`). `exclude`: regex patterns of tensors not averaged but copied from
    ingredient `exclude_from` (or dropped when None). `dtype`: output dtype (default: the inputs').
    The folder gets sharded safetensors, config/tokenizer files of the first ingredient,
    `fusion_recipe.yaml`, `tna_config.json` (when all ingredients share one anchor spec) and a README
    model card; it is written to a temporary folder and renamed at the end. `push_to_hub`: repo id to
    upload the folder to, through `hf_tna.hub`. PEFT LoRA adapter ingredients: `lora_mode="merged"`
    (exact; needs `base`, writes a full model) or `"factors"` (A and B averaged apart; not exact, warns);
    see `hf_tna.merge.lora`.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "weighted":
        if weights is None:
            raise ValueError("method='weighted' needs weights (one per ingredient)")
        weights = check_weights(weights, len(ingredients), normalize)
    elif weights is not None:
        raise ValueError(f"weights are only used by method='weighted', not {method!r}")
    if method == "greedy" and score_fn is None:
        raise ValueError("method='greedy' needs score_fn (held-out score of a state dict, higher is better)")
    if output_dir is not None and Path(output_dir).exists() and any(Path(output_dir).iterdir()):
        raise FileExistsError(f"output folder {output_dir} exists and is not empty; choose another or remove it")
    loaded = [load_ingredient(src, i, store, allow_pickle) for i, src in enumerate(ingredients)]
    recipe = {"merge_method": method, "models": ingredient_records(loaded, weights),
              "parameters": {"normalize": normalize}, "exclude": list(_as_list(exclude)), "exclude_from": exclude_from}
    scores, extra = None, {}
    if any(ing.adapter_config is not None for ing in loaded):
        fuse, extra = _lora_setup(loaded, base, lora_mode, method, weights, normalize, exclude, store, allow_pickle)
        recipe.update(extra.pop("recipe"))
    elif base is not None:
        raise ValueError("base= is only used for PEFT adapter ingredients")
    elif method == "greedy":
        fuse, kept, scores = _greedy(loaded, score_fn, exclude, exclude_from, dtype, require_anchors, verify)
        recipe["kept"] = kept
    else:
        views = [IngredientTensors(ing) for ing in loaded]

        def fuse(key):
            return average_tensors((v[key] for v in views), weights, normalize)

        extra["chunk_fuse"] = chunk_averager(loaded, weights, normalize)

    report = write_fused(loaded, output_dir, fuse, recipe, dtype, exclude, exclude_from,
                         extra.get("max_shard_size", max_shard_size), require_anchors, verify and method != "greedy",
                         trust_remote_code, progress, scores, quiet=method == "greedy",
                         **{k: v for k, v in extra.items() if k != "max_shard_size"})
    if push_to_hub:
        report["hub"] = push_folder(report["output_dir"], push_to_hub, store, hub_revision, private,
                                    commit_message or f"hf_tna {method} soup of {len(loaded)} models")
    return report


def chunk_averager(ingredients: Sequence[Ingredient], weights=None, normalize: bool = True):
    """``chunk_fuse(key, start, stop)``: the weighted mean of elements [start, stop) of every ingredient.

    File ingredients are read into three reused buffers (first, running deviation, current), so memory
    holds three chunks whatever the number of ingredients, and nothing is allocated per chunk; two such
    sets alternate so that one chunk is written while the next is computed.
    """
    fresh = all(ing.reader is not None for ing in ingredients)  # buffers are ours: reuse them in place
    buffers: dict[tuple, torch.Tensor] = {}

    def buffer(dtype, slot):
        if (dtype, slot) not in buffers:
            buffers[(dtype, slot)] = torch.empty(CHUNK_ELEMENTS, dtype=dtype)
        return buffers[(dtype, slot)]

    calls = [0]

    def chunk_fuse(key, start, stop):
        calls[0] += 1
        parity = 3 * (calls[0] % 2)  # two buffer sets: one is written out while the other is filled
        reads = (
            ing.get_range(key, start, stop, buffer(SAFETENSORS_DTYPES[ing.specs[key][1]], parity + min(i, 2))
                          if fresh else None)
            for i, ing in enumerate(ingredients)
        )
        return average_tensors(reads, weights, normalize, consume=fresh)

    return chunk_fuse


def _lora_setup(loaded, base, lora_mode, method, weights, normalize, exclude, store, allow_pickle):
    from . import lora

    if lora_mode not in lora.LORA_MODES:
        raise ValueError(f"lora_mode must be one of {lora.LORA_MODES}, got {lora_mode!r}")
    if method == "greedy" or exclude or not normalize:
        raise ValueError("PEFT adapter soups support methods uniform and weighted, normalized, without exclude")
    lora.check_adapters(loaded)
    if lora_mode == "factors":
        lora.warn_factors()
        views = [IngredientTensors(ing) for ing in loaded]
        return (lambda key: average_tensors((v[key] for v in views), weights)), {
            "recipe": {"lora_mode": "factors"}, "weights_name": ADAPTER_SAFE_WEIGHTS_NAME, "max_shard_size": 2**62}
    if base is None:
        raise ValueError("LoRA adapters are souped exactly as merged updates B @ A on their base: pass base= "
                         "(--base) the adapters' base model, or lora_mode='factors' (not exact)")
    base_ing = load_ingredient(base, len(loaded), store, allow_pickle)
    base_ing.name = f"base ({base_ing.source})"
    recipe = {"lora_mode": "merged", "base_model": {"model": base_ing.source, "revision": base_ing.revision}}
    return lora.merged_fuse(loaded, base_ing, weights), {"recipe": recipe, "template": base_ing}


def _greedy(loaded, score_fn, exclude, exclude_from, dtype, require_anchors, verify):
    from .ops import greedy_soup

    validate_soup_ingredients(loaded, require_anchors, verify, _torch_dtype(dtype))
    views = [IngredientTensors(ing) for ing in loaded]
    soup, kept, seen = greedy_soup(views, score_fn, exclude=exclude, exclude_from=exclude_from)
    scores = {"greedy": seen, "ingredient_scores": [s["score"] for s in seen[: len(loaded)]],
              "soup_score": max(s["score"] for s in seen if s["kept"])}
    return (lambda key: soup[key]), kept, scores


def interpolate_checkpoints(a, b, alpha: float, output_dir, **kwargs) -> dict:
    """Write ``(1 - alpha) a + alpha b`` (``torch.lerp``; exact endpoints) as a checkpoint folder."""
    alpha = float(alpha)
    store, allow_pickle = kwargs.pop("store", None), kwargs.pop("allow_pickle", False)
    loaded = [load_ingredient(src, i, store, allow_pickle) for i, src in enumerate((a, b))]
    recipe = {"merge_method": "interpolate", "models": ingredient_records(loaded, [1 - alpha, alpha]),
              "parameters": {"alpha": alpha}}

    def fuse(key):
        return interpolate_tensors(loaded[0].get(key), loaded[1].get(key), alpha)

    def chunk_fuse(key, start, stop):
        return interpolate_tensors(loaded[0].get_range(key, start, stop), loaded[1].get_range(key, start, stop), alpha)

    return write_fused(loaded, output_dir, fuse, recipe, chunk_fuse=chunk_fuse, **kwargs)


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


def _as_list(value) -> list:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)
