"""Soup recipes (`fusion_recipe.yaml`): hf_tna's flat format and mergekit's, read strictly and written beside
every soup so that ``hf-tna soup --recipe`` (and, for linear soups, ``mergekit-yaml``) makes it again.

hf_tna's format is flat: ``models`` (a list of folders or Hub ids ``org/name@revision``) and the recipe fields of
`SoupConfig` (`RECIPE_FIELDS`: merge_method, weights, normalize, alpha, kept, exclude, dtype, base, ...).
mergekit's format (``models: [{model:, parameters: {weight:}}]``, ``merge_method: linear``, ``base_model``,
``parameters: {normalize:}``, ``dtype``, ``out_dtype``) is read and written for the methods both tools have:
mergekit's `linear` is hf_tna's `weighted` (`uniform` when the weights are equal and normalized). A recipe is in
mergekit's format when its models are mappings (``- model: ...``), else in hf_tna's.

Both are strict where mergekit is lenient: an unknown or misspelt key is an error naming the nearest valid key,
and a mergekit feature hf_tna does not have (ties, slerp and the other methods, ``slices``, ``modules``,
``tokenizer_source``, gradient or per-tensor weights, ``model+lora`` paths) is refused listing what is supported.
Dtypes: mergekit's ``dtype`` is the dtype it computes in and ``out_dtype`` (default ``dtype``) the one it writes;
hf_tna computes in float32 (float64 where float32 would overflow) and writes ``out_dtype`` (else ``dtype``).

Local recipe files are trusted: relative paths in them are resolved from the recipe's folder. A recipe read from
a Hub repo (``--recipe org/name[@revision]``) may name only Hub ids.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from .._version import __version__
from .config import FLOAT_DTYPES, RECIPE_FIELDS, SoupConfig, nearest
from .methods import METHODS, get_method

RECIPE_NAME = "fusion_recipe.yaml"
MAX_RECIPE_BYTES = 1 << 20
MERGEKIT_KEYS = ("models", "merge_method", "base_model", "parameters", "dtype", "out_dtype")
MERGEKIT_REFUSED_KEYS = {
    "slices": "layer slices: layer_range, passthrough stacking",
    "modules": "per-module merges",
    "tokenizer_source": "tokenizer merging: hf_tna copies the first model's tokenizer",
    "tokenizer": "tokenizer merging: hf_tna copies the first model's tokenizer",
    "chat_template": "chat templates: hf_tna copies the first model's",
}
MERGEKIT_METHODS = ("linear", "slerp", "nuslerp", "multislerp", "passthrough", "model_stock", "arcee_fusion",
                    "karcher", "task_arithmetic", "ties", "dare_ties", "dare_linear", "breadcrumbs",
                    "breadcrumbs_ties", "della", "della_linear", "sce", "nearswap", "lrp", "core_space", "ram")
MERGEKIT_PARAMETERS = ("weight", "normalize", "density", "epsilon", "lambda", "t", "rescale", "int8_mask",
                       "gamma", "select_topk", "filter_wise", "embed_slerp", "nuslerp_flatten", "nuslerp_row_wise")
HEADER = ("# {kind} recipe of this soup, written by hf_tna {version}. Make it again with\n"
          "#   hf-tna soup --recipe {name} --output OUT{mergekit}\n")


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------
def load_recipe(source, store=None) -> tuple[list[str], dict]:
    """(models, recipe settings) of a recipe: a local YAML file, a soup folder, or a Hub repo ``org/name[@revision]``
    holding a `fusion_recipe.yaml` (read through `store`). The settings are `SoupConfig` fields."""
    path = Path(os.fspath(source)).expanduser()
    if path.is_dir():  # a soup folder: its recipe
        if not (path / RECIPE_NAME).is_file():
            raise FileNotFoundError(f"recipe {source} is a folder without a {RECIPE_NAME}")
        path = path / RECIPE_NAME
    if path.is_file():
        return parse_recipe(_read_yaml(path.read_bytes(), str(path)), str(path), folder=path.parent)
    from ..hub import is_repo_ref, open_store, parse_repo_ref

    if not is_repo_ref(str(source)):
        raise FileNotFoundError(f"recipe {source} is neither a file nor a Hub repo id (org/name[@revision]): the "
                                f"file {source} does not exist")
    repo_id, revision = parse_repo_ref(str(source))
    where = f"{repo_id}@{revision or 'main'}/{RECIPE_NAME}"
    try:
        data = open_store(store).read_file(repo_id, RECIPE_NAME, revision or "main")
    except (OSError, ValueError) as err:
        raise ValueError(f"recipe {source}: cannot read {where}: {err}") from None
    return parse_recipe(_read_yaml(data, where), where, folder=None)


def _read_yaml(data: bytes, where: str):
    if len(data) > MAX_RECIPE_BYTES:
        raise ValueError(f"{where} is {len(data)} bytes; a recipe is at most {MAX_RECIPE_BYTES} bytes")
    try:
        return yaml.safe_load(data.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ValueError(f"{where} is not valid YAML: {' '.join(str(err).split())}") from None


def is_mergekit_recipe(data: dict) -> bool:
    models = data.get("models")
    return (isinstance(models, list) and any(isinstance(m, dict) for m in models)) or any(
        key in data for key in (*MERGEKIT_REFUSED_KEYS, "base_model", "parameters", "out_dtype"))


def parse_recipe(data, where: str, folder: Path | None = None) -> tuple[list[str], dict]:
    """(models, settings) of a parsed recipe in either format; `folder`: the local recipe's folder (relative paths
    are resolved from it), None for a recipe from the Hub (only Hub ids allowed)."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: a recipe is a YAML mapping with `models` and `merge_method`, got "
                         f"{type(data).__name__}")
    if is_mergekit_recipe(data):
        models, settings = from_mergekit(data, where)
    else:
        models, settings = _from_flat(data, where)
    models = [_locate(m, f"{where}: models[{i}]", folder) for i, m in enumerate(models)]
    for key in ("base", "dataset"):
        if isinstance(settings.get(key), str):
            settings[key] = _locate(settings[key], f"{where}: {key}", folder)
    return models, settings


def _from_flat(data: dict, where: str) -> tuple[list[str], dict]:
    valid = ("models", *RECIPE_FIELDS)
    for key in data:
        if key in valid:
            continue
        if key in {f for f in SoupConfig.__dataclass_fields__}:
            raise ValueError(f"{where}: `{key}` is a setting of the run, not of the recipe: pass it on the command "
                             f"line (--{key.replace('_', '-')}) or to build_soup")
        raise ValueError(f"{where}: unknown recipe key `{key}`{nearest(key, valid)}; hf_tna recipe keys: "
                         f"{', '.join(valid)}")
    models = data.get("models")
    if not isinstance(models, list) or not models or not all(isinstance(m, str) and m for m in models):
        raise ValueError(f"{where}: `models` must be a non-empty list of folders or Hub ids (org/name[@revision])")
    settings = {k: v for k, v in data.items() if k != "models"}
    if "merge_method" in settings:
        _method_of(settings["merge_method"], where)
    return list(models), settings


def _method_of(name, where: str):
    if name in METHODS:
        return get_method(name)
    if name == "linear":
        raise ValueError(f"{where}: merge_method 'linear' is mergekit's name, for recipes in mergekit's format "
                         "(models as `- model: ...` entries); in hf_tna's format write weighted (with weights) or "
                         "uniform")
    if name in MERGEKIT_METHODS:
        raise ValueError(f"{where}: merge_method {name!r} is mergekit's; hf_tna does not implement it. Supported: "
                         f"{_supported()}")
    raise ValueError(f"{where}: merge_method {name!r} is not a merge method{nearest(name, [*METHODS, 'linear'])}. "
                     f"Supported: {_supported()}")


def _supported() -> str:
    linear = [n for n, m in sorted(METHODS.items()) if m.mergekit == "linear"]
    return (f"{', '.join(sorted(METHODS))} in hf_tna recipes (models as a list of strings); linear (= "
            f"{' / '.join(linear)}) in mergekit recipes")


def from_mergekit(data: dict, where: str) -> tuple[list[str], dict]:
    """(models, settings) of a mergekit recipe, for the methods both tools have (`linear`)."""
    for key in data:
        if key in MERGEKIT_REFUSED_KEYS:
            raise ValueError(f"{where}: mergekit's `{key}` ({MERGEKIT_REFUSED_KEYS[key]}) is not supported by hf_tna; "
                             f"mergekit recipe keys hf_tna reads: {', '.join(MERGEKIT_KEYS)}")
        if key not in MERGEKIT_KEYS:
            hint = nearest(key, [*MERGEKIT_KEYS, *MERGEKIT_REFUSED_KEYS])
            if not hint and key in RECIPE_FIELDS:
                hint = " (an hf_tna recipe key: write hf_tna's flat format, with models as a list of strings)"
            raise ValueError(f"{where}: unknown recipe key `{key}`{hint}; mergekit recipe keys hf_tna reads: "
                             f"{', '.join(MERGEKIT_KEYS)}")
    if "merge_method" not in data:
        raise ValueError(f"{where}: a mergekit recipe needs `merge_method` (hf_tna reads linear)")
    method = data["merge_method"]
    if method != "linear":
        if method in METHODS:
            raise ValueError(f"{where}: merge_method {method!r} is hf_tna's, not mergekit's: write it in hf_tna's "
                             "flat recipe format (models as a list of strings)")
        _method_of(method, where)
    models = data.get("models")
    if not isinstance(models, list) or not models:
        raise ValueError(f"{where}: `models` must be a non-empty list of `- model: ...` entries")
    params = _mapping(data.get("parameters"), f"{where}: parameters")
    for key in params:
        _check_parameter(key, ("weight", "normalize"), f"{where}: parameters")
    default_weight = None
    if "weight" in params:
        default_weight = _scalar_weight(params["weight"], f"{where}: parameters.weight")
    normalize = params.get("normalize", True)
    if not isinstance(normalize, bool):
        raise ValueError(f"{where}: parameters.normalize must be true or false, got {normalize!r}")
    refs, weights = [], []
    for i, entry in enumerate(models):
        here = f"{where}: models[{i}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{here} must be a mapping `- model: ...` like the other entries, got {entry!r}")
        for key in entry:
            if key not in ("model", "parameters"):
                raise ValueError(f"{here}: unknown key `{key}`{nearest(key, ['model', 'parameters'])}; an entry has "
                                 "`model` and `parameters`")
        ref = entry.get("model")
        if not isinstance(ref, str) or not ref:
            raise ValueError(f"{here}: `model` must be a folder or a Hub id (org/name[@revision]), got {ref!r}")
        if "+" in ref and not Path(ref).exists():
            raise ValueError(f"{here}: mergekit's `model+lora` paths are not supported: give the LoRA adapters as "
                             "models and their base model as base_model")
        entry_params = _mapping(entry.get("parameters"), f"{here}.parameters")
        for key in entry_params:
            _check_parameter(key, ("weight",), f"{here}.parameters")
        weight = entry_params.get("weight", default_weight)
        if weight is None:
            raise ValueError(f"{here} has no weight: mergekit's linear needs `parameters: {{weight: ...}}` on every "
                             "model (or a global parameters.weight)")
        refs.append(ref)
        weights.append(_scalar_weight(weight, f"{here}.parameters.weight"))
    settings: dict = {}
    if normalize and len(set(weights)) == 1:
        settings["merge_method"] = "uniform"
    else:
        settings.update(merge_method="weighted", weights=weights, normalize=normalize)
    dtype = data.get("out_dtype", data.get("dtype"))
    for key in ("dtype", "out_dtype"):
        if key in data and data[key] not in FLOAT_DTYPES:
            raise ValueError(f"{where}: {key} {data[key]!r} is not one of {', '.join(FLOAT_DTYPES)}")
    if dtype is not None:
        settings["dtype"] = dtype
    if "base_model" in data:
        if not isinstance(data["base_model"], str) or not data["base_model"]:
            raise ValueError(f"{where}: base_model must be a folder or a Hub id, got {data['base_model']!r}")
        settings["base"] = data["base_model"]
    return refs, settings


def _mapping(value, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a mapping, got {value!r}")
    return value


def _check_parameter(key, valid, where: str) -> None:
    if key in valid:
        return
    if key in MERGEKIT_PARAMETERS:
        raise ValueError(f"{where}: mergekit's parameter `{key}` belongs to a method hf_tna does not implement; "
                         f"linear takes: {', '.join(valid)}")
    raise ValueError(f"{where}: unknown parameter `{key}`{nearest(key, valid)}; linear takes: {', '.join(valid)}")


def _scalar_weight(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        kind = "gradient (a list)" if isinstance(value, list) else "conditional or non-numeric"
        raise ValueError(f"{where}: {kind} weights are not supported by hf_tna, got {value!r}; give one number per "
                         "model")
    return float(value)


def _locate(ref: str, where: str, folder: Path | None) -> str:
    """A local recipe's relative path resolved from its folder; a Hub recipe's reference checked to be a Hub id."""
    if not isinstance(ref, str) or not ref:
        raise ValueError(f"{where} must be a folder or a Hub id, got {ref!r}")
    if folder is None:
        from ..hub import is_repo_ref, parse_repo_ref

        if not is_repo_ref(ref) or Path(ref.partition("@")[0]).exists():
            raise ValueError(f"{where} is {ref!r}: a recipe from the Hub may name only Hub ids (org/name[@revision]), "
                             "never local paths")
        parse_repo_ref(ref)  # '..', '--' and empty revisions refused
        return ref
    path = Path(ref).expanduser()
    if path.is_absolute():
        return str(path)
    local = folder / path
    return str(local) if local.exists() else ref


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------
def to_mergekit(models: list[str], config: SoupConfig, dtype: str) -> dict | None:
    """mergekit's recipe of the same soup (`dtype`: the output dtype), or None when mergekit has no equivalent."""
    method = config.method
    if method.mergekit != "linear" or config.exclude or config.base is not None:
        return None
    if dtype not in FLOAT_DTYPES:
        return None
    weights = config.weights if config.weights is not None else [1.0] * len(models)
    compute = "float64" if dtype == "float64" else "float32"
    recipe = {"merge_method": "linear",
              "models": [{"model": m, "parameters": {"weight": float(w)}} for m, w in zip(models, weights)],
              "parameters": {"normalize": bool(config.normalize)}, "dtype": compute}
    if dtype != compute:
        recipe["out_dtype"] = dtype
    return recipe


def recipe_text(models: list[str], config: SoupConfig, dtype: str) -> str:
    """The YAML of a soup's recipe: mergekit's format when mergekit can make the soup, else hf_tna's."""
    mergekit = to_mergekit(models, config, dtype)
    if mergekit is not None:
        data, kind, extra = mergekit, "mergekit (linear)", f"\n#   mergekit-yaml {RECIPE_NAME} OUT"
    else:
        data = {"models": list(models), **config.recipe_dict()}
        if dtype in FLOAT_DTYPES:
            data["dtype"] = dtype
        kind, extra = "hf_tna", ""
    header = HEADER.format(kind=kind, version=__version__, name=RECIPE_NAME, mergekit=extra)
    return header + yaml.dump(data, Dumper=_RecipeDumper, sort_keys=False, default_flow_style=False)


class _RecipeDumper(yaml.SafeDumper):
    """Lists of numbers on one line (as mergekit writes them), everything else in block style."""

    def represent_list(self, data):
        flow = bool(data) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in data)
        return self.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_RecipeDumper.add_representer(list, _RecipeDumper.represent_list)


def write_recipe(folder, models: list[str], config: SoupConfig, dtype: str) -> Path:
    path = Path(folder) / RECIPE_NAME
    path.write_text(recipe_text(models, config, dtype))
    return path
