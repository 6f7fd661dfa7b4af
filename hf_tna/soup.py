"""Model soups of real checkpoints: validated, streamed, written atomically with their recipe and card.

Ingredients are checkpoint folders, Hub repo ids (``org/name`` or ``org/name@revision``, through
`hf_tna.store`), in-memory models or state dicts. Folder ingredients are read one tensor at a time with
plain file reads, and the soup is written tensor by tensor into planned shards, so memory holds a few
tensors whatever the number of ingredients.

Everything that can be checked from headers and configs (architecture, key sets, shapes, dtypes, anchor
spec, anchors intact) is checked before any output is made; values (NaN/inf) are checked as each tensor
is read. The soup is written into a temporary folder beside the target and renamed at the end: a failed
run leaves no output folder. PEFT LoRA adapters: see `hf_tna.lora_soup`.
"""

from __future__ import annotations

import fnmatch
import shutil
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import __version__
from .anchors import CONFIG_NAME, TNAFileConfig, anchored_values, layout_from_manifest, manifest_entry, values_sha256
from .fusion import average_tensors, check_finite, check_tensor_specs, check_weights, interpolate_tensors, is_excluded
from .io import (
    ADAPTER_SAFE_WEIGHTS_NAME,
    PICKLE_WEIGHTS_NAMES,
    SAFE_WEIGHTS_NAME,
    SAFETENSORS_DTYPES,
    ShardedSafetensorsWriter,
    StreamingCheckpointReader,
    safetensors_dtype,
)

CONFIG_JSON = "config.json"
ADAPTER_CONFIG_NAME = "adapter_config.json"
# files copied from the first ingredient (globs); weights, training state and custom code are not
COPIED_FILES = (
    "config.json", "generation_config.json", "preprocessor_config.json", "processor_config.json",
    "image_processor_config.json", "feature_extractor_config.json", "video_preprocessor_config.json",
    "tokenizer*", "special_tokens_map.json", "added_tokens.json", "vocab.*", "merges.txt", "*.model",
    "*.tiktoken", "chat_template.*", "adapter_config.json",
)
METHODS = ("uniform", "weighted", "greedy")


# --------------------------------------------------------------------------------------------------
# Ingredients
# --------------------------------------------------------------------------------------------------
@dataclass
class Ingredient:
    """One model of a soup: where it comes from and a lazy view of its checkpoint-named tensors."""

    name: str
    source: str
    revision: str | None = None
    folder: Path | None = None
    specs: dict[str, tuple[tuple[int, ...], str]] = field(default_factory=dict)
    config: dict | None = None
    tna: TNAFileConfig | None = None
    adapter_config: dict | None = None
    reader: object = None
    tensors: Mapping[str, torch.Tensor] | None = None
    cast: torch.dtype | None = None

    def get(self, key: str) -> torch.Tensor:
        tensor = self.reader.get(key) if self.reader is not None else self.tensors[key]
        check_finite(tensor, key, self.name)
        if self.cast is not None and tensor.is_floating_point():
            tensor = tensor.to(self.cast)
        return tensor

    def order(self) -> list[str]:
        """Tensor names in file order (sequential reads), else sorted."""
        reader = self.reader
        if isinstance(reader, StreamingCheckpointReader):
            return sorted(self.specs, key=lambda k: (reader.weight_map[k], reader._entry(k)[1]["data_offsets"][0]))
        return sorted(self.specs)

    def close(self):
        if self.reader is not None:
            self.reader.close()


class IngredientTensors(Mapping):
    """`Mapping` view of an ingredient for `hf_tna.fusion`: each lookup reads (and checks) one tensor."""

    def __init__(self, ingredient: Ingredient):
        self.ingredient = ingredient

    def __getitem__(self, key):
        return self.ingredient.get(key)

    def __iter__(self):
        return iter(self.ingredient.specs)

    def __len__(self):
        return len(self.ingredient.specs)


def checkpoint_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A model's tensors under their saved checkpoint names (what `save_pretrained` would write)."""
    from .anchors import strip_wrapper_prefixes, unwrap_model

    model = unwrap_model(model)
    if getattr(model, "peft_config", None) is not None:
        from peft import get_peft_model_state_dict

        return {k: v.detach() for k, v in get_peft_model_state_dict(model).items()}
    state_dict = {strip_wrapper_prefixes(k): v.detach() for k, v in model.state_dict().items()}
    try:
        from transformers import PreTrainedModel
        from transformers.core_model_loading import revert_weight_conversion
        from transformers.modeling_utils import remove_tied_weights_from_state_dict
    except ImportError:  # pragma: no cover
        return state_dict
    if isinstance(model, PreTrainedModel):
        for key in model._keys_to_ignore_on_save or ():
            state_dict.pop(key, None)
        state_dict = revert_weight_conversion(model, remove_tied_weights_from_state_dict(state_dict, model))
    return {k: v.detach() for k, v in state_dict.items()}


def _read_json(path: Path) -> dict | None:
    import json

    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None


def load_ingredient(source, index: int = 0, store=None, allow_pickle: bool = False) -> Ingredient:
    """An `Ingredient` from a folder, a Hub repo id (``org/name@rev``), a model, or a state dict."""
    if isinstance(source, torch.nn.Module):
        tensors = checkpoint_state_dict(source)
        config = source.config.to_dict() if hasattr(source, "config") and hasattr(source.config, "to_dict") else None
        return _from_tensors(f"model {index} ({type(source).__name__})", f"<in-memory {type(source).__name__}>",
                             tensors, config)
    if isinstance(source, Mapping):
        return _from_tensors(f"state dict {index}", "<in-memory state dict>", dict(source), None)
    text = str(source)
    folder, revision = Path(text), None
    if not folder.is_dir():
        if text.startswith((".", "/", "~")) or text.count("/") != 1 or text.endswith("/"):
            raise FileNotFoundError(f"ingredient {index}: {text} is neither a folder nor a Hub repo id (org/name[@rev])")
        from .store import open_store, parse_repo_ref

        store = open_store(store) if store is None or isinstance(store, str) else store
        repo_id, rev = parse_repo_ref(text)
        folder, revision = store.download(repo_id, rev or "main")
        folder = Path(folder)
    name = f"ingredient {index} ({text})"
    ing = Ingredient(name=name, source=text, revision=revision, folder=folder)
    ing.config = _read_json(folder / CONFIG_JSON)
    ing.adapter_config = _read_json(folder / ADAPTER_CONFIG_NAME)
    if (folder / CONFIG_NAME).exists():
        ing.tna = TNAFileConfig.load(folder)
    try:
        ing.reader = StreamingCheckpointReader(folder)
    except ValueError as err:
        pickles = [n for n in PICKLE_WEIGHTS_NAMES if (folder / n).exists()]
        if not pickles or "pickle" not in str(err):
            raise ValueError(f"{name}: {err}") from None
        if not allow_pickle:
            raise ValueError(
                f"{name}: {folder} holds only pickle weights ({pickles[0]}); pickle files can run code when loaded. "
                "Pass allow_pickle=True (--allow-pickle) if you trust it, or re-save it as safetensors."
            ) from None
        ing.tensors = torch.load(folder / pickles[0], map_location="cpu", weights_only=True)
        ing.specs = {k: (tuple(t.shape), safetensors_dtype(t.dtype)) for k, t in ing.tensors.items()}
        return ing
    ing.specs = ing.reader.specs()
    return ing


def _from_tensors(name, source, tensors, config) -> Ingredient:
    specs = {k: (tuple(t.shape), safetensors_dtype(t.dtype)) for k, t in tensors.items()}
    return Ingredient(name=name, source=source, specs=specs, config=config, tensors=tensors)


# --------------------------------------------------------------------------------------------------
# Validation (before anything is written)
# --------------------------------------------------------------------------------------------------
def _architecture(config: dict | None) -> tuple | None:
    if not config:
        return None
    return config.get("model_type"), tuple(config.get("architectures") or ())


def validate_soup_ingredients(
    ingredients: Sequence[Ingredient], require_anchors: bool = False, verify: bool = True, dtype=None
) -> TNAFileConfig | None:
    """Check architecture, key sets, shapes, dtypes and anchors; return the shared anchor config or None.

    Raises ValueError naming the ingredient (and tensor) that does not fit. Ingredients without
    `tna_config.json` are refused with `require_anchors`, else named in a warning.
    """
    if not ingredients:
        raise ValueError("a soup needs at least one ingredient")
    names = [ing.name for ing in ingredients]
    ref = ingredients[0]
    for ing in ingredients[1:]:
        a, b = _architecture(ref.config), _architecture(ing.config)
        if a is not None and b is not None and a != b:
            raise ValueError(f"{ing.name} is a {b[0]} {list(b[1])}, {ref.name} a {a[0]} {list(a[1])}: "
                             "a soup needs one architecture")
    dtypes = {d for ing in ingredients for _, d in ing.specs.values()}
    check_tensor_specs([ing.specs for ing in ingredients], names, check_dtypes=dtype is None)
    if dtype is not None and len(dtypes) > 1:
        for ing in ingredients:
            ing.cast = torch.float64 if "F64" in dtypes else torch.float32
    anchored = [ing for ing in ingredients if ing.tna is not None]
    plain = [ing.name for ing in ingredients if ing.tna is None]
    if plain and require_anchors:
        raise ValueError(f"{plain[0]} has no {CONFIG_NAME} (not trained with anchors); require_anchors=True "
                         "refuses un-anchored ingredients. Fine-tune it with TNATrainer or drop require_anchors.")
    if plain:
        warnings.warn(f"un-anchored ingredient(s) (no {CONFIG_NAME}): {', '.join(plain)}; the soup is not anchored "
                      "and may fuse poorly", stacklevel=3)
        return None
    lead = anchored[0].tna
    for ing in anchored[1:]:
        if ing.tna.spec != lead.spec:
            raise ValueError(f"{ing.name} was anchored with {ing.tna.spec.to_dict()}, {anchored[0].name} with "
                             f"{lead.spec.to_dict()}: a soup needs one anchor spec across ingredients")
        for key, entry in lead.manifest.items():
            other = ing.tna.manifest.get(key)
            if other is None or other["sha256"] != entry["sha256"]:
                raise ValueError(f"{ing.name}: anchored tensor {key!r} has other anchor values than {anchored[0].name} "
                                 "(anchored on another base); a soup needs one base")
    if verify:
        for ing in anchored:
            _verify_anchors(ing)
    return lead


def _verify_anchors(ing: Ingredient) -> None:
    """Anchored entries of an ingredient still match the manifest hashes, else ValueError."""
    if ing.folder is not None and ing.reader is not None:
        from .verify import verify_anchors

        report = verify_anchors(ing.folder, config=ing.tna)
        bad = [k for k, t in report["tensors"].items() if t.get("hash_ok") is False or t.get("num_drifted")]
    else:
        bad = []
        for key, entry in sorted(ing.tna.manifest.items()):
            values = anchored_values(ing.get(key), layout_from_manifest(key, entry), ing.tna.spec)
            if values_sha256(values) != entry["sha256"]:
                bad.append(key)
    if bad:
        raise ValueError(f"{ing.name}: anchored entries of tensor {bad[0]!r} drifted from {CONFIG_NAME} "
                         f"({len(bad)} tensor(s)); it was not trained with these anchors")


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


def _torch_dtype(dtype):
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype).replace("torch.", ""), None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; use float32, bfloat16, float16 or float64")
    return value


def prepare_output(output_dir) -> tuple[Path, Path]:
    """(final folder, temporary folder beside it). Refuses an existing non-empty target."""
    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()):
        raise FileExistsError(f"output folder {output_dir} exists and is not empty; choose another or remove it")
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_dir.parent / f".{output_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    return output_dir, tmp


def finish_output(tmp: Path, output_dir: Path) -> None:
    if output_dir.exists():
        output_dir.rmdir()  # empty, checked in prepare_output
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
) -> dict:
    """Validate, then write ``fuse(key) -> tensor`` for every key into `output_dir` with recipe and card.

    `fuse` gets a tensor name and returns the fused tensor (before the optional `dtype` cast). The output
    has the tensors and side files of `template` (default: the first ingredient; the base for merged LoRA
    soups, which get no `tna_config.json`). Returns a report: output folder, files, anchors (the soup's
    `TNAFileConfig` dict or None), recipe.
    """
    from tqdm.auto import tqdm

    from .model_card import write_model_card, write_recipe

    dtype = _torch_dtype(dtype)
    with warnings.catch_warnings():
        if quiet:  # already validated (and warned) before an evaluation
            warnings.simplefilter("ignore")
        anchors = validate_soup_ingredients(ingredients, require_anchors, verify, dtype)
    if template is not None:
        anchors = None
    template = template or ingredients[0]
    specs = output_specs([template], dtype, exclude, exclude_from)
    output_dir, tmp = prepare_output(output_dir)
    try:
        manifest = dict(anchors.manifest) if anchors is not None else {}
        recompute = anchors is not None and dtype is not None
        with ShardedSafetensorsWriter(tmp, specs, max_shard_size, weights_name) as writer:
            for key in tqdm(list(specs), desc="soup", unit="tensor", disable=not progress):
                if exclude and is_excluded(key, exclude):
                    tensor = ingredients[exclude_from].get(key)
                else:
                    tensor = fuse(key)
                if dtype is not None and tensor.is_floating_point():
                    tensor = tensor.to(dtype)
                if recompute and key in manifest:
                    layout = layout_from_manifest(key, manifest[key])
                    manifest[key] = manifest_entry(tensor, layout, anchors.spec)
                writer.write(key, tensor)
        copy_side_files(template.folder, tmp, trust_remote_code)
        soup_tna = None
        if anchors is not None:
            soup_tna = TNAFileConfig(anchors.spec, manifest, anchors.base_model, anchors.base_revision)
            soup_tna.save(tmp)
        recipe = {**recipe, "dtype": str(dtype or _torch_dtype_of([template])).replace("torch.", ""),
                  "hf_tna_version": __version__}
        write_recipe(tmp, recipe)
        write_model_card(tmp, recipe, soup_tna.to_dict() if soup_tna else None, scores)
        finish_output(tmp, output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        for ing in [*ingredients, template]:
            ing.close()
    return {"output_dir": str(output_dir), "files": sorted(p.name for p in output_dir.iterdir()),
            "anchors": soup_tna.to_dict() if soup_tna else None, "recipe": recipe}


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
    `hf_tna.evaluation.build_score_fn`). `exclude`: regex patterns of tensors not averaged but copied from
    ingredient `exclude_from` (or dropped when None). `dtype`: output dtype (default: the inputs').
    The folder gets sharded safetensors, config/tokenizer files of the first ingredient,
    `fusion_recipe.yaml`, `tna_config.json` (when all ingredients share one anchor spec) and a README
    model card; it is written to a temporary folder and renamed at the end. `push_to_hub`: repo id to
    upload the folder to, through `hf_tna.store`. PEFT LoRA adapter ingredients: `lora_mode="merged"`
    (exact; needs `base`, writes a full model) or `"factors"` (A and B averaged apart; not exact, warns);
    see `hf_tna.lora_soup`.
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

    report = write_fused(loaded, output_dir, fuse, recipe, dtype, exclude, exclude_from,
                         extra.get("max_shard_size", max_shard_size), require_anchors, verify and method != "greedy",
                         trust_remote_code, progress, scores, quiet=method == "greedy",
                         **{k: v for k, v in extra.items() if k != "max_shard_size"})
    if push_to_hub:
        report["hub"] = push_folder(report["output_dir"], push_to_hub, store, hub_revision, private,
                                    commit_message or f"hf_tna {method} soup of {len(loaded)} models")
    return report


def _lora_setup(loaded, base, lora_mode, method, weights, normalize, exclude, store, allow_pickle):
    from . import lora_soup

    if lora_mode not in lora_soup.LORA_MODES:
        raise ValueError(f"lora_mode must be one of {lora_soup.LORA_MODES}, got {lora_mode!r}")
    if method == "greedy" or exclude or not normalize:
        raise ValueError("PEFT adapter soups support methods uniform and weighted, normalized, without exclude")
    lora_soup.check_adapters(loaded)
    if lora_mode == "factors":
        lora_soup.warn_factors()
        views = [IngredientTensors(ing) for ing in loaded]
        return (lambda key: average_tensors((v[key] for v in views), weights)), {
            "recipe": {"lora_mode": "factors"}, "weights_name": ADAPTER_SAFE_WEIGHTS_NAME, "max_shard_size": 2**62}
    if base is None:
        raise ValueError("LoRA adapters are souped exactly as merged updates B @ A on their base: pass base= "
                         "(--base) the adapters' base model, or lora_mode='factors' (not exact)")
    base_ing = load_ingredient(base, len(loaded), store, allow_pickle)
    base_ing.name = f"base ({base_ing.source})"
    recipe = {"lora_mode": "merged", "base_model": {"model": base_ing.source, "revision": base_ing.revision}}
    return lora_soup.merged_fuse(loaded, base_ing, weights), {"recipe": recipe, "template": base_ing}


def _greedy(loaded, score_fn, exclude, exclude_from, dtype, require_anchors, verify):
    from .fusion import greedy_soup

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

    return write_fused(loaded, output_dir, fuse, recipe, **kwargs)


def push_folder(folder, repo_id: str, store=None, revision: str = "main", private: bool = False,
                message: str = "hf_tna soup") -> dict:
    """Upload a soup folder to a Hub repo (created if needed) through the store; return repo and sha."""
    from .store import open_store, parse_repo_ref

    store = open_store(store) if store is None or isinstance(store, str) else store
    repo, rev = parse_repo_ref(repo_id)
    revision = rev or revision
    store.create_repo(repo, private=private, exist_ok=True)
    sha = store.upload_folder(repo, str(folder), message, revision=revision)
    return {"repo_id": repo, "revision": revision, "sha": sha}


def _as_list(value) -> list:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)
