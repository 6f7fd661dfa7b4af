"""Soups of PEFT LoRA adapters (folders with `adapter_config.json` + `adapter_model.safetensors`).

Two modes, because averaging LoRA factors is not averaging models:

- ``lora_mode="merged"`` (default, exact): each adapter's update of a layer is ``delta W_i = s_i B_i A_i``
  (``s = lora_alpha / r``, or ``lora_alpha / sqrt(r)`` with rsLoRA; transposed for ``fan_in_fan_out``).
  The soup is the full model ``W + merge(delta W_1, ..., delta W_n)`` written with the *base* checkpoint's
  tensors and key set (needs `base`), where ``merge`` is the soup's per-tensor merge method (for uniform and
  weighted soups, ``sum_i w_i delta W_i / sum_i w_i``); `modules_to_save` tensors (e.g. a classifier head) are
  merged likewise and written under their base names; every other tensor is the base's. For averages this is
  exactly the average of the merged models (up to float rounding; computed in float64).
- ``lora_mode="factors"`` (not exact, warns): ``A`` and ``B`` are merged separately and written as an
  adapter folder with the ingredients' key set. ``mean(B) mean(A) != mean(B A)``, so the result is not
  the average of the merged models; use it only when adapters must stay adapters.

Only plain LoRA on linear layers is handled; DoRA, embedding/conv LoRA and rank/alpha patterns are refused.
"""

from __future__ import annotations

import math
import re
import warnings

import torch

PREFIX = "base_model.model."
_LORA_KEY = re.compile(r"^base_model\.model\.(.+)\.lora_([AB])\.weight$")
_SAME_FIELDS = ("peft_type", "r", "lora_alpha", "use_rslora", "fan_in_fan_out", "target_modules", "modules_to_save")


def check_adapters(ingredients) -> None:
    """All ingredients are plain LoRA adapters with one configuration, else ValueError naming one."""
    ref = ingredients[0]
    for ing in ingredients:
        cfg = ing.adapter_config
        if cfg is None:
            raise ValueError(f"{ing.name} is not a PEFT adapter but {ref.name} is: do not mix adapters and models")
        if cfg.get("peft_type", "LORA") != "LORA":
            raise ValueError(f"{ing.name} is a {cfg.get('peft_type')} adapter; only LoRA adapters can be souped")
        if cfg.get("use_dora"):
            raise ValueError(f"{ing.name} uses DoRA; its magnitude vectors cannot be souped as LoRA updates")
        if cfg.get("rank_pattern") or cfg.get("alpha_pattern"):
            raise ValueError(f"{ing.name} sets rank_pattern/alpha_pattern; per-layer ranks are not supported")
        for fname in _SAME_FIELDS:
            a, b = ref.adapter_config.get(fname), cfg.get(fname)
            if isinstance(a, list) and isinstance(b, list):
                a, b = sorted(a), sorted(b)
            if a != b:
                raise ValueError(f"{ing.name}: adapter_config.json {fname}={b!r}, {ref.name} has {a!r}; "
                                 "souped adapters need one LoRA configuration")


def lora_scale(adapter_config: dict) -> float:
    r, alpha = adapter_config["r"], adapter_config["lora_alpha"]
    return alpha / math.sqrt(r) if adapter_config.get("use_rslora") else alpha / r


def lora_layers(adapter_keys, base_keys) -> tuple[dict[str, tuple[str, str]], dict[str, str]]:
    """(base weight name -> (lora_A key, lora_B key), base name -> adapter key of modules_to_save tensors)."""
    layers: dict[str, dict[str, str]] = {}
    saved = {}
    base_keys = set(base_keys)
    for key in adapter_keys:
        match = _LORA_KEY.match(key)
        if match:
            layers.setdefault(f"{match.group(1)}.weight", {})[match.group(2)] = key
            continue
        name = key[len(PREFIX):] if key.startswith(PREFIX) else key
        if name not in base_keys:
            raise ValueError(f"adapter tensor {key!r} is neither a LoRA factor of a linear layer nor a tensor of the "
                             f"base (no {name!r}); embedding/conv LoRA and DoRA are not supported")
        saved[name] = key
    out = {}
    for name, factors in layers.items():
        if name not in base_keys:
            raise ValueError(f"LoRA layer {name!r} has no weight in the base checkpoint: is it the adapters' base?")
        if set(factors) != {"A", "B"}:
            raise ValueError(f"LoRA layer {name!r} lacks its lora_{({'A', 'B'} - set(factors)).pop()} factor")
        out[name] = (factors["A"], factors["B"])
    return out, saved


def lora_delta(a: torch.Tensor, b: torch.Tensor, scale: float, fan_in_fan_out: bool) -> torch.Tensor:
    """``scale * B @ A`` in float64 (transposed for fan_in_fan_out layers such as GPT-2's Conv1D)."""
    if a.dim() != 2 or b.dim() != 2:
        raise ValueError(f"LoRA factors of shapes {tuple(a.shape)}, {tuple(b.shape)}: only linear layers are supported")
    delta = (b.double() @ a.double()) * scale
    return delta.T if fan_in_fan_out else delta


def merged_fuse(adapters, base, merge):
    """``fuse(key)`` for the soup writer: the base weight plus ``merge`` (a per-tensor merge method applied to an
    iterable of tensors, e.g. the weighted mean) of the adapters' updates ``delta W_i``; `modules_to_save` tensors
    are merged as they are; every other tensor is the base's."""
    layers, saved = lora_layers(adapters[0].specs, base.specs)
    cfg = adapters[0].adapter_config
    scale, fifo = lora_scale(cfg), bool(cfg.get("fan_in_fan_out"))

    def fuse(key):
        if key in layers:
            a_key, b_key = layers[key]
            delta = merge(lora_delta(ing.get(a_key), ing.get(b_key), scale, fifo) for ing in adapters)
            weight = base.get(key)
            if delta.shape != weight.shape:
                raise ValueError(f"LoRA update of {key!r} has shape {tuple(delta.shape)}, the base weight "
                                 f"{tuple(weight.shape)}: check fan_in_fan_out and the base model")
            return (weight.double() + delta.double()).to(weight.dtype)
        if key in saved:
            return merge(ing.get(saved[key]) for ing in adapters)
        return base.get(key)

    return fuse


def shares_a(adapters) -> bool:
    """Whether every adapter's `tna_config.json` fixes every LoRA `A` whole (FFA-LoRA, `anchor_lora_fa`): the
    manifests agree (checked with the anchors), so all `A`s are the same tensor and the factors soup is exact."""
    a_names = {key for key in adapters[0].specs if ".lora_A." in key}
    return bool(a_names) and all(
        ing.tna is not None and all(ing.tna.manifest.get(name, {}).get("whole") for name in a_names)
        for ing in adapters
    )


def warn_factors() -> None:
    warnings.warn("lora_mode='factors' averages LoRA A and B separately: mean(B) @ mean(A) is not the mean of the "
                  "updates B @ A, so the soup is not the average of the merged models. Pass a base model for the "
                  "exact 'merged' mode.", stacklevel=3)
