"""Soup ingredients: folders, Hub repo ids, models or state dicts, read lazily and validated together.

An `Ingredient` exposes checkpoint-named tensors (the saved safetensors keys: transformers v5 renames in
memory are reverted), their specs (shape, safetensors dtype) from the file headers, the model config and
the anchor config (`tna_config.json`). Folder ingredients are read with plain file reads, whole or in
element ranges into reusable buffers, so fusing N of them needs memory for a few chunks.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import option
from ..hub import resolve_folder
from ..io import PICKLE_WEIGHTS_NAMES, StreamingCheckpointReader, safetensors_dtype
from ..manifest import CONFIG_NAME, TNAFileConfig
from ..verify import check_manifests_agree, verify_anchors_many
from .ops import check_finite, check_tensor_specs

CONFIG_JSON = "config.json"
ADAPTER_CONFIG_NAME = "adapter_config.json"


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

    def get_range(self, key: str, start: int, stop: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """Elements [start, stop) of the flattened tensor (read into the reusable buffer `out` when given);
        checked finite and cast like `get`. In-memory tensors give a view: do not modify it."""
        if self.reader is not None:
            values = self.reader.read_range(key, start, stop, out)
        else:
            values = self.tensors[key].reshape(-1)[start:stop]
        check_finite(values, key, self.name)
        if self.cast is not None and values.is_floating_point():
            values = values.to(self.cast)
        return values

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
    """`Mapping` view of an ingredient for `hf_tna.merge.ops`: each lookup reads (and checks) one tensor."""

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
    from ..anchors import strip_wrapper_prefixes, unwrap_model

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


def _jsonable(value):
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return getattr(value, "value", str(value))  # enums such as PeftType, TaskType


def _read_json(path: Path) -> dict | None:
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
        ing = _from_tensors(f"model {index} ({type(source).__name__})", f"<in-memory {type(source).__name__}>",
                            tensors, config)
        peft_config = getattr(source, "peft_config", None)
        if isinstance(peft_config, dict) and peft_config:  # a PeftModel: its saved-adapter tensors
            adapter = getattr(source, "active_adapter", None) or next(iter(peft_config))
            ing.adapter_config = json.loads(json.dumps(peft_config[adapter].to_dict(), default=_jsonable))
            ing.config = None
        return ing
    if isinstance(source, Mapping):
        return _from_tensors(f"state dict {index}", "<in-memory state dict>", dict(source), None)
    text = str(source)
    try:
        folder, revision = resolve_folder(source, store)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"ingredient {index}: {err}") from None
    except ValueError as err:
        raise ValueError(f"ingredient {index}: {err}") from None
    except Exception as err:  # the store's transport (an unreachable Hub): one sentence, not the client's traceback
        raise OSError(f"ingredient {index}: {text} is not a local folder and could not be fetched as a Hub repo id "
                      f"({type(err).__name__}: {' '.join(str(err).split())}); check the path, or the network and "
                      "HF_ENDPOINT") from err
    name = f"ingredient {index} ({text})"
    ing = Ingredient(name=name, source=text, revision=revision, folder=folder)
    ing.config = _read_json(folder / CONFIG_JSON)
    ing.adapter_config = _read_json(folder / ADAPTER_CONFIG_NAME)
    if (folder / CONFIG_NAME).exists():
        ing.tna = TNAFileConfig.load(folder)
    try:
        ing.reader = StreamingCheckpointReader(folder)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{name}: {err}") from None
    except ValueError as err:
        pickles = [n for n in PICKLE_WEIGHTS_NAMES if (folder / n).exists()]
        if not pickles or "pickle" not in str(err):
            raise ValueError(f"{name}: {err}") from None
        if not allow_pickle:
            raise ValueError(
                f"{name}: {folder} holds only pickle weights ({pickles[0]}); pickle files can run code when loaded. "
                f"Pass {option('allow_pickle', True)} if you trust it, or re-save it as safetensors."
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
def model_architecture(config: dict | None) -> tuple[str | None, tuple[str, ...]]:
    """(model_type, architectures) of a model's `config.json` contents; (None, ()) without a config."""
    config = config or {}
    return config.get("model_type"), tuple(config.get("architectures") or ())


def read_model_config(folder: Path) -> dict | None:
    """A checkpoint folder's `config.json`, or None when it has none."""
    return _read_json(Path(folder) / CONFIG_JSON)


def validate_soup_ingredients(
    ingredients: Sequence[Ingredient], require_anchors: bool = False, verify: bool = True, dtype=None
) -> TNAFileConfig | None:
    """Check architecture, key sets, shapes, dtypes and anchors; return the shared anchor config or None.

    Raises ValueError naming the ingredient (and tensor) that does not fit. Ingredients without
    `tna_config.json` are refused with `require_anchors`, else named in a warning. The anchor configs must
    agree whatever the order of the ingredients, and (with `verify`) every ingredient's anchored entries
    must match its manifest (`hf_tna.verify.verify_anchors_many`).
    """
    if not ingredients:
        raise ValueError("a soup needs at least one ingredient")
    names = [ing.name for ing in ingredients]
    ref = ingredients[0]
    for ing in ingredients[1:]:
        a, b = model_architecture(ref.config), model_architecture(ing.config)
        if ref.config and ing.config and a != b:
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
        raise ValueError(f"{plain[0]} has no {CONFIG_NAME} (not trained with anchors); "
                         f"{option('require_anchors', True)} refuses un-anchored ingredients. Fine-tune it with "
                         f"TNATrainer or drop {option('require_anchors', True)}.")
    if plain:
        warnings.warn(f"un-anchored ingredient(s) (no {CONFIG_NAME}): {', '.join(plain)}; the soup is not anchored "
                      "and may fuse poorly", stacklevel=3)
        return None
    configs, names = [ing.tna for ing in anchored], [ing.name for ing in anchored]
    lead = check_manifests_agree(configs, names)
    if verify:  # raw tensors: the manifest hashes the saved bytes, before any cast
        sources = [ing.reader if ing.reader is not None else ing.tensors for ing in anchored]
        for ing, report in zip(anchored, verify_anchors_many(sources, config=configs, names=names)):
            bad = [k for k, t in report["tensors"].items() if t.get("hash_ok") is False or t.get("num_drifted")]
            if bad:
                raise ValueError(f"{ing.name}: anchored entries of tensor {bad[0]!r} drifted from {CONFIG_NAME} "
                                 f"({len(bad)} tensor(s)); it was not trained with these anchors")
    return lead
