"""Shared initialisation of new weights: every contributor starts from the same values.

Anchors only mean something when every model to be fused starts from the same values. A pretrained body loads
the same weights everywhere, but the weights it did not load (a fresh classification head, resized embedding
rows, LoRA adapters) come from the global RNG, so two runs with different training seeds anchor their heads at
different values and their soup is refused. `shared_initialize` re-initialises exactly those weights with the
model's own initialisation scheme (`_init_weights` for transformers models, `reset_lora_parameters` for PEFT
LoRA layers) under a generator seeded from the anchor seed and the module's checkpoint name, on the CPU (so the
values do not depend on the device), and then they are anchored like everything else.

Which weights are new: an explicit list (`new_weights=`, e.g. `from_pretrained(..., output_loading_info=True)`'s
`missing_keys`), else the tensors (or the rows of a tensor, for resized embeddings) that the safetensors header of
the folder the model was loaded from (`config._name_or_path`) does not have; PEFT adapter weights are always new.
A model built from a config (training from scratch) has no such folder: it is left as the user initialised it.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from pathlib import Path

import torch

from .anchors import AnchorSpec, checkpoint_names, unwrap_model

logger = logging.getLogger(__name__)
ALL_ROWS = None  # `new` value: the whole tensor is new


def _loaded_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]] | None:
    """Tensor name -> shape in the safetensors checkpoint the model was loaded from, when that folder is here."""
    from .io import StreamingCheckpointReader

    config = getattr(model, "config", None)
    source = getattr(config, "_name_or_path", None) if config is not None else None
    if not source or not Path(source).is_dir():
        return None
    try:
        with StreamingCheckpointReader(source) as reader:
            return {name: reader.shape(name) for name in reader.keys()}
    except (FileNotFoundError, ValueError):
        return None


def find_new_weights(model: torch.nn.Module, new_weights=None) -> dict[str, tuple[int, int] | None]:
    """Checkpoint name -> the new rows `(start, stop)`, or None when the whole tensor is new, of every trainable
    parameter the model did not load from its pretrained checkpoint (see the module docstring)."""
    model = unwrap_model(model)
    names = checkpoint_names(model)
    trainable = {names[id(p)]: p for p in model.parameters() if p.requires_grad and id(p) in names}
    if new_weights is not None:
        unknown = sorted(set(new_weights) - set(trainable))
        if unknown:
            raise ValueError(f"new_weights names {unknown[0]!r}, which is not a trainable parameter of the model "
                             f"(checkpoint names look like {sorted(trainable)[:3]})")
        return {name: ALL_ROWS for name in sorted(new_weights)}
    new = {}
    if getattr(model, "peft_config", None) is not None:  # adapters: never in the base checkpoint
        new.update({name: ALL_ROWS for name in trainable if ".lora_" in name})
        model = model.get_base_model()
        trainable = {n: p for n, p in trainable.items() if ".lora_" not in n}
    loaded = _loaded_shapes(model)
    if loaded is None:
        return new
    base_names = checkpoint_names(model) if new else None
    prefix = getattr(model, "base_model_prefix", "") or ""
    embeddings = _embedding_ids(model)
    for name, param in trainable.items():
        key = _loaded_name(name if base_names is None else base_names.get(id(param), name), loaded, prefix)
        if key is None:
            new[name] = ALL_ROWS
        elif tuple(loaded[key]) != tuple(param.shape):
            rows = loaded[key][0] if loaded[key] and tuple(loaded[key][1:]) == tuple(param.shape[1:]) else None
            grown = id(param) in embeddings and rows is not None and rows < param.shape[0]
            new[name] = (rows, param.shape[0]) if grown else ALL_ROWS  # resized embeddings: only the new rows
    return new


def _loaded_name(name: str, loaded: dict, prefix: str) -> str | None:
    """The checkpoint tensor `name` was loaded from: transformers loads a body checkpoint into a task model and a
    task checkpoint into a body, adding or dropping `base_model_prefix` (e.g. `bert.`)."""
    candidates = [name]
    if prefix:
        candidates += [name[len(prefix) + 1:]] if name.startswith(prefix + ".") else [f"{prefix}.{name}"]
    return next((c for c in candidates if c in loaded), None)


def _embedding_ids(model: torch.nn.Module) -> set[int]:
    """Parameters whose rows are vocabulary entries (input embeddings and the output embedding)."""
    ids = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    output = getattr(model, "get_output_embeddings", lambda: None)()
    if output is not None and getattr(output, "weight", None) is not None:
        ids.add(id(output.weight))
    return ids


def init_seed(spec: AnchorSpec, module_name: str) -> int:
    digest = hashlib.sha256(f"hf_tna-shared-init|{spec.seed}|{module_name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@torch.no_grad()
def shared_initialize(model: torch.nn.Module, spec: AnchorSpec, new_weights=None) -> dict[str, list[int] | None]:
    """Re-initialise the new weights of `model` from `spec.seed` and their module's checkpoint name (see the
    module docstring). Returns checkpoint name -> `[start, stop]` rows (None: the whole tensor), as recorded in
    `tna_config.json` under `shared_init`."""
    model = unwrap_model(model)
    new = find_new_weights(model, new_weights)
    if not new:
        return {}
    names = checkpoint_names(model)
    by_module: dict[str, list[tuple[torch.nn.Module, str, torch.nn.Parameter, str]]] = {}
    for module in model.modules():
        for pname, param in module.named_parameters(recurse=False):
            name = names.get(id(param))
            if name in new:
                by_module.setdefault(name.rsplit(".", 1)[0], []).append((module, pname, param, name))
    initializer = _transformers_initializer(model)
    parents = {id(child): parent for parent in model.modules() for child in parent.children()}
    for module_name, items in sorted(by_module.items()):
        module = items[0][0]
        owner = _lora_owner(module, parents)
        fresh = _fresh_values(module, {pname for _, pname, _, _ in items}, initializer, init_seed(spec, module_name),
                              owner)
        for _, pname, param, name in items:
            rows = new[name]
            value = fresh[pname].to(param.device, param.dtype)
            if rows is None:
                param.copy_(value)
            else:
                param[rows[0]:rows[1]].copy_(value[rows[0]:rows[1]])
    logger.info("hf_tna: shared initialisation (seed %d) of %d new tensor(s): %s", spec.seed, len(new),
                ", ".join(sorted(new)[:8]) + (" ..." if len(new) > 8 else ""))
    return {name: (list(rows) if rows is not None else None) for name, rows in sorted(new.items())}


def _transformers_initializer(model):
    init = getattr(model, "_init_weights", None)
    return init if callable(init) else None


def _fresh_values(module: torch.nn.Module, new: set[str], initializer, seed: int, owner=None) -> dict:
    """The module's own initialisation of the parameters in `new`, drawn on the CPU under `seed` (a copy of the
    module is initialised; the model is not touched). `owner`: the PEFT LoRA layer holding `module`, if any."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if owner is not None:  # a PEFT LoRA weight: its layer's own reset, per adapter
            layer = copy.deepcopy(owner).to("cpu")
            for adapter in list(getattr(layer, "lora_A", {})):
                layer.reset_lora_parameters(adapter, True)
            clone = _find_submodule(layer, owner, module)
        elif initializer is not None:
            clone = copy.deepcopy(module).to("cpu")
            for pname, param in clone.named_parameters(recurse=False):
                param._is_hf_initialized = pname not in new  # transformers' init functions skip flagged tensors
            for sub in clone.modules():  # e.g. a head's dense + out_proj: each initialised as the model does
                initializer(sub)
        else:
            clone = copy.deepcopy(module).to("cpu")
            if not hasattr(clone, "reset_parameters"):
                raise ValueError(f"cannot re-initialise {type(module).__name__}: it has no reset_parameters(); pass "
                                 "anchor_shared_init=False to keep your own initialisation")
            clone.reset_parameters()
    return {pname: p.detach() for pname, p in clone.named_parameters(recurse=False)}


def _lora_owner(module, parents: dict) -> torch.nn.Module | None:
    """The PEFT LoRA layer (with `reset_lora_parameters`) that holds `module` (its lora_A / lora_B Linear)."""
    while module is not None:
        if callable(getattr(module, "reset_lora_parameters", None)):
            return module
        module = parents.get(id(module))
    return None


def _find_submodule(layer, owner, module):
    if module is owner:
        return layer
    for (_, a), (_, b) in zip(owner.named_modules(), layer.named_modules()):
        if a is module:
            return b
    raise ValueError("module not found in its LoRA layer")
