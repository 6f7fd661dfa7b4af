"""Fixed neuron anchors: the spec, the seeded masks, the tensor layouts and the tensor namespace.

This module imports nothing else of hf_tna and does no file I/O: everything here is a function of its inputs
(the model, for layouts and names). `tna_config.json` is read and written by `hf_tna.manifest`.

The mask of a tensor is a pure function of (seed, round, tensor name, shape, ratio, granularity): a
counter-based 32-bit integer hash of the entry's flat index (or the output unit's index for neuron
granularity), keyed by a digest of (seed, round, name), compared with ``ratio * 2**32``. It is computed
with plain int64 tensor ops that never overflow, so it gives the same bits on every machine, device,
process and torch version, can be evaluated in chunks, and could be recomputed inside a fused kernel.

Tensor names are *checkpoint names*: the keys of the saved safetensors file (transformers v5 renames some
parameters in memory; those renames are reverted), without wrapper prefixes (``module.``,
``_orig_mod.``); PEFT parameters use the keys of the saved adapter file (adapter name removed).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
import sys
from dataclasses import dataclass

import torch

HASH_NAME = "hf_tna-lowbias32-v1"
GRANULARITIES = ("element", "neuron")
_M32 = 0xFFFFFFFF
_CHUNK = 1 << 16  # CPU: int64 temporaries of a 64K chunk stay in cache (16x faster than 4M chunks)
_CHUNK_ACCELERATOR = 1 << 22  # GPU: fewer, larger launches
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


# --------------------------------------------------------------------------------------------------
# Spec
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AnchorSpec:
    """Which weight entries are anchored (kept at their initial values) during fine-tuning.

    Args:
        ratio: fraction of targeted entries (element) or output units (neuron) anchored, in [0, 1).
        seed: shared seed; every model or client that must stay aligned uses the same one.
        granularity: ``"element"`` (the paper: each entry i.i.d.) or ``"neuron"`` (whole output units:
            a row of ``nn.Linear``, a column of transformers' ``Conv1D``, an output channel of a
            convolution, each with its bias entry; other tensors fall back to element granularity).
        include: regex patterns (``re.search`` over checkpoint names); ``None`` targets every
            trainable parameter.
        exclude: regex patterns of parameters never anchored (e.g. a task head ``classifier``).
        round: offsets the draw, so federated / ColD-fusion rounds can re-draw the mask.
    """

    ratio: float = 0.4
    seed: int = 0
    granularity: str = "element"
    include: tuple[str, ...] | None = None
    exclude: tuple[str, ...] | None = None
    round: int = 0

    def __post_init__(self):
        if isinstance(self.ratio, bool) or not isinstance(self.ratio, (int, float)) or math.isnan(self.ratio):
            raise TypeError(f"AnchorSpec.ratio must be a number in [0, 1), got {self.ratio!r}")
        if not 0.0 <= float(self.ratio) < 1.0:
            raise ValueError(f"AnchorSpec.ratio must be in [0, 1), got {self.ratio}: 1 would freeze the model")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"AnchorSpec.granularity must be one of {GRANULARITIES}, got {self.granularity!r}")
        for fname in ("seed", "round"):
            value = getattr(self, fname)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"AnchorSpec.{fname} must be a non-negative int, got {value!r}")
        for fname in ("include", "exclude"):
            patterns = getattr(self, fname)
            if patterns is None:
                continue
            if isinstance(patterns, str):
                patterns = (patterns,)
            patterns = tuple(patterns)
            for pattern in patterns:
                try:
                    re.compile(pattern)
                except re.error as err:
                    raise ValueError(f"AnchorSpec.{fname} has an invalid regex {pattern!r}: {err}") from None
            object.__setattr__(self, fname, patterns or None)
        object.__setattr__(self, "ratio", float(self.ratio))

    def targets(self, name: str) -> bool:
        """Whether the parameter called `name` (checkpoint name) is targeted by this spec."""
        if self.include is not None and not any(re.search(p, name) for p in self.include):
            return False
        return not (self.exclude is not None and any(re.search(p, name) for p in self.exclude))

    def for_round(self, round: int) -> AnchorSpec:
        return dataclasses.replace(self, round=round)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for key in ("include", "exclude"):
            d[key] = list(d[key]) if d[key] is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> AnchorSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"Unknown anchor spec field(s) {sorted(unknown)}; known: {sorted(known)}")
        d = dict(d)
        for key in ("include", "exclude"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)


# --------------------------------------------------------------------------------------------------
# Counter-based hash (pure integer tensor ops, no overflow)
# --------------------------------------------------------------------------------------------------
def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2**32 for int64 x in [0, 2**32), without int64 overflow."""
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & _M32


def mix32(x: torch.Tensor) -> torch.Tensor:
    """The `lowbias32` integer finaliser (C. Wellons) on int64 tensors holding uint32 values."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def tensor_key(seed: int, round: int, name: str) -> tuple[int, int]:
    """Two uint32 keys derived from (seed, round, tensor name) with sha256: stable everywhere."""
    digest = hashlib.sha256(f"{HASH_NAME}|{seed}|{round}|{name}".encode()).digest()
    return int.from_bytes(digest[:4], "little"), int.from_bytes(digest[4:8], "little")


def hash_counters(counters: torch.Tensor, key: tuple[int, int]) -> torch.Tensor:
    """uint32 hash (held in int64) of each int64 counter under `key`."""
    lo = counters & _M32
    hi = counters >> 32
    h = mix32(lo ^ key[0])
    return mix32(h ^ hi ^ key[1])


def ratio_threshold(ratio: float) -> int:
    """A counter is anchored when its hash is below this threshold."""
    return int(round(ratio * 2**32))


def is_anchored(counters: torch.Tensor, key_name: str, spec: AnchorSpec) -> torch.Tensor:
    """The per-index predicate: which `counters` (global flat entry indices, or unit indices for neuron
    layouts; int64) are anchored for the tensor keyed `key_name` under `spec`. Pure integer ops, so a fused
    kernel can evaluate the same expression on any slice of any tensor on any device."""
    if spec.ratio == 0.0:
        return torch.zeros(counters.shape, dtype=torch.bool, device=counters.device)
    return hash_counters(counters, tensor_key(spec.seed, spec.round, key_name)) < ratio_threshold(spec.ratio)


def draw_anchored(
    num: int, key_name: str, spec: AnchorSpec, device: torch.device | str = "cpu", start: int = 0
) -> torch.Tensor:
    """Bool vector of length `num`: which counters start..start+num-1 are anchored for `key_name` under `spec`."""
    out = torch.empty(num, dtype=torch.bool, device=device)
    if spec.ratio == 0.0:
        return out.fill_(False)
    key = tensor_key(spec.seed, spec.round, key_name)
    threshold = ratio_threshold(spec.ratio)
    chunk = _CHUNK if out.device.type == "cpu" else _CHUNK_ACCELERATOR
    for lo in range(0, num, chunk):
        hi = min(num, lo + chunk)
        counters = torch.arange(start + lo, start + hi, dtype=torch.int64, device=device)
        out[lo:hi] = hash_counters(counters, key) < threshold
    return out


# --------------------------------------------------------------------------------------------------
# Layout: which tensors, which granularity, which hash key
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TensorLayout:
    """How one tensor is anchored: by element (unit_dim None) or by output unit along `unit_dim`, or whole
    (`whole=True`: every entry, e.g. the frozen LoRA `A` of FFA-LoRA, which the manifest records too).

    `key` is the name the hash is keyed by: the tensor's own name for elements, the module's name for
    neuron units (so a weight's rows and its bias entries share one draw).
    """

    name: str
    shape: tuple[int, ...]
    unit_dim: int | None = None
    key: str = ""
    whole: bool = False

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if not self.key:
            object.__setattr__(self, "key", self.name)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def granularity(self) -> str:
        return "whole" if self.whole else "element" if self.unit_dim is None else "neuron"


class AnchorSelection:
    """The anchored entries of one tensor, or of a dim-0 slice of it (an FSDP2 shard), under one spec.

    Element layouts hold a bool mask of the slice; neuron layouts hold the int64 indices of the anchored output
    units (local to the slice along `unit_dim`). Every user of anchors goes through these few operations, so a
    new granularity only touches this module:

    - `take(t)`: the anchored values of `t` (a tensor of the slice's shape), compact: element entries in flat
      order, neuron units stacked along `unit_dim`;
    - `zero_(grad)`: zero the anchored entries in place; `put_(t, values)`: write `values` (from `take`) back;
    - `num_anchored`, `dense_mask()`, `nbytes()`; `counters()` and `is_anchored` give the pure per-index
      predicate underneath (global flat index, or global unit index, in; anchored or not out).

    Args:
        layout: the whole tensor's layout.
        spec: the anchor spec.
        device: where the mask or unit indices live.
        offset: first dim-0 row of the slice within the whole tensor (0 for the whole tensor).
        rows: number of dim-0 rows of the slice (None: to the end of the tensor).
    """

    def __init__(self, layout: TensorLayout, spec: AnchorSpec, device="cpu", offset: int = 0, rows: int | None = None):
        full = layout.shape
        if not full:
            if offset or rows not in (None, 1):
                raise ValueError(f"tensor {layout.name!r} is a scalar: it has no dim-0 slices")
            rows = None
        else:
            rows = full[0] - offset if rows is None else rows
            if not (0 <= offset and 0 <= rows and offset + rows <= full[0]):
                raise ValueError(
                    f"slice [{offset}:{offset + rows}] of dim 0 is outside tensor {layout.name!r} of shape {full}"
                )
        self.layout, self.spec, self.offset = layout, spec, int(offset)
        self.shape = full if not full else (rows, *full[1:])
        if layout.whole:
            self.mask = torch.ones(self.shape, dtype=torch.bool, device=device)
            self.units = None
            self.num_anchored = math.prod(self.shape)
        elif layout.unit_dim is None:
            row = math.prod(full[1:]) if full else 1
            numel = math.prod(self.shape)
            self.mask = draw_anchored(numel, layout.key, spec, device, start=self.offset * row).view(self.shape)
            self.units = None
            self.num_anchored = int(self.mask.sum()) if numel else 0
        else:
            first, count = self.unit_range()
            drawn = draw_anchored(count, layout.key, spec, device, start=first)
            self.mask = None
            self.units = torch.nonzero(drawn).flatten()
            self.num_anchored = int(self.units.numel()) * (math.prod(self.shape) // max(self.shape[layout.unit_dim], 1))

    @property
    def granularity(self) -> str:
        return self.layout.granularity

    def unit_range(self) -> tuple[int, int]:
        """(first global unit index, number of units) of the slice (neuron layouts)."""
        dim = self.layout.unit_dim
        if dim == 0:
            return self.offset, self.shape[0]
        return 0, self.shape[dim]

    def counters(self) -> torch.Tensor:
        """The global counters the predicate is evaluated on: flat entry indices of the slice (element), or the
        global indices of its units (neuron)."""
        if self.units is None:
            row = math.prod(self.layout.shape[1:]) if self.layout.shape else 1
            start = self.offset * row
            return torch.arange(start, start + math.prod(self.shape), dtype=torch.int64)
        first, count = self.unit_range()
        return torch.arange(first, first + count, dtype=torch.int64)

    def predicate(self, counters: torch.Tensor) -> torch.Tensor:
        """`is_anchored` for this tensor's key and spec (every counter of a whole layout)."""
        if self.layout.whole:
            return torch.ones(counters.shape, dtype=torch.bool, device=counters.device)
        return is_anchored(counters, self.layout.key, self.spec)

    def _check(self, tensor: torch.Tensor) -> None:
        if tuple(tensor.shape) != self.shape:
            raise ValueError(
                f"tensor {self.layout.name!r} has shape {tuple(tensor.shape)}, its anchors expect {self.shape}"
            )

    def take(self, tensor: torch.Tensor) -> torch.Tensor:
        """The anchored entries of `tensor`, compact (a new tensor; the input is not modified)."""
        self._check(tensor)
        data = tensor.detach()
        if self.units is None:
            return data[self._on(self.mask, data)]
        return data.index_select(self.layout.unit_dim, self._on(self.units, data))

    @torch.no_grad()
    def zero_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Zero the anchored entries of `tensor` in place (a gradient, or an optimizer state)."""
        if self.num_anchored == 0:
            return tensor
        if self.units is not None:
            return tensor.index_fill_(self.layout.unit_dim, self._on(self.units, tensor), 0)
        if tensor.device.type == "cpu":
            # on CPU a multiply by the free-entry mask runs about 3x faster than masked_fill_; a non-finite
            # anchored value stays non-finite (a step over it is lost anyway, and the anchors are restored)
            return tensor.mul_(self._on(self.mask, tensor).logical_not())
        return tensor.masked_fill_(self._on(self.mask, tensor), 0)

    @torch.no_grad()
    def put_(self, tensor: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Write `values` (as returned by `take`) into the anchored entries of `tensor`, in place."""
        if self.num_anchored == 0:
            return tensor
        if self.units is None:
            return tensor.masked_scatter_(self._on(self.mask, tensor), values)
        return tensor.index_copy_(self.layout.unit_dim, self._on(self.units, tensor), values)

    def dense_mask(self) -> torch.Tensor:
        """Bool mask of the slice's shape, True where anchored."""
        if self.units is None:
            return self.mask
        dim = self.layout.unit_dim
        drawn = torch.zeros(self.shape[dim], dtype=torch.bool, device=self.units.device)
        drawn[self.units] = True
        view = [1] * len(self.shape)
        view[dim] = -1
        return drawn.view(view).expand(self.shape).contiguous()

    def nbytes(self) -> int:
        """Bytes held by the selection: the mask (element) or the unit indices (neuron)."""
        if self.units is None:
            return self.mask.numel() * self.mask.element_size()
        return self.units.numel() * self.units.element_size()

    @staticmethod
    def _on(index: torch.Tensor, tensor: torch.Tensor) -> torch.Tensor:
        return index if index.device == tensor.device else index.to(tensor.device)

    def __repr__(self) -> str:
        return (f"AnchorSelection({self.layout.name!r}, shape={self.shape}, offset={self.offset}, "
                f"granularity={self.granularity}, num_anchored={self.num_anchored})")


COUNTER_MOD_NONE = 1 << 62  # `counter_map`'s modulus when counters do not wrap


def counter_map(layout: TensorLayout | None, offset: int, shape) -> tuple[int, int, int]:
    """(div, mod, base) such that the hash counter of flat entry `f` of a (local) tensor of `shape`, the dim-0
    slice of `layout` from row `offset`, is `(f // div) % mod + base`: its global flat index (element, whole), or
    its unit's global index (neuron). For kernels that evaluate `is_anchored` entry by entry (`hf_tna.fused`)."""
    if layout is None:
        return 1, COUNTER_MOD_NONE, 0
    if layout.whole or layout.unit_dim is None:
        row = math.prod(layout.shape[1:]) if layout.shape else 1
        return 1, COUNTER_MOD_NONE, offset * row
    if layout.unit_dim == 0:
        return max(math.prod(shape[1:]), 1), COUNTER_MOD_NONE, offset
    return max(math.prod(shape[layout.unit_dim + 1:]), 1), shape[layout.unit_dim], 0


def hash_constants(layout: TensorLayout | None, spec: AnchorSpec) -> tuple[int, int, int]:
    """(key0, key1, threshold) of `layout` under `spec`: a counter is anchored when `hash_counters(counter, (key0,
    key1)) < threshold`; nothing is anchored without a layout, every entry of a whole one."""
    if layout is None:
        return 0, 0, 0
    key = tensor_key(spec.seed, spec.round, layout.key)
    return (*key, 1 << 32 if layout.whole else ratio_threshold(spec.ratio))


def anchor_mask(layout: TensorLayout, spec: AnchorSpec, device="cpu") -> torch.Tensor:
    """Full-size bool mask of the anchored entries of one tensor."""
    return AnchorSelection(layout, spec, device).dense_mask()


def _unit_dim(module: torch.nn.Module, param_name: str, param: torch.Tensor) -> int | None:
    """Output-unit dimension of a module's parameter, or None where it has no output unit."""
    from torch.nn.modules.conv import _ConvNd

    if param.dim() == 1 and param_name == "bias":
        if isinstance(module, (torch.nn.Linear, _ConvNd)) or type(module).__name__ == "Conv1D":
            return 0
        return None
    if param_name != "weight" or param.dim() < 2:
        return None
    if type(module).__name__ == "Conv1D":  # transformers' GPT-2 layer stores weight as (in, out)
        return 1
    if isinstance(module, _ConvNd):
        if module.transposed:
            return 1 if module.groups == 1 else None
        return 0
    if isinstance(module, torch.nn.Linear):
        return 0
    return None


def strip_wrapper_prefixes(name: str) -> str:
    """Drop DDP (`module.`) and torch.compile (`_orig_mod.`) prefixes from a parameter name."""
    name = name.replace("._orig_mod.", ".")
    while name.startswith(_WRAPPER_PREFIXES):
        name = name.split(".", 1)[1]
    return name


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """Strip DDP / DataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
        else:
            return model


def checkpoint_names(model: torch.nn.Module) -> dict[int, str]:
    """Map id(parameter) -> its name in the saved checkpoint (safetensors file / PEFT adapter file).

    transformers v5 renames some parameters in memory; its own `revert_weight_conversion` gives the saved
    names. Parameters that the conversion does more than rename (fused, split, transposed) are refused.
    """
    names, converted = _checkpoint_names(model)
    if converted:
        raise ValueError(_converted_message(model, next(iter(converted.values()))))
    return names


def _converted_message(model, name: str) -> str:
    return (
        f"Cannot anchor {type(unwrap_model(model)).__name__}: transformers converts parameter {name!r} (fuses, "
        "splits or reshapes it) when saving, so its entries have no stable checkpoint name. Exclude it with "
        "`anchor_exclude` (patterns match its in-memory name) or anchor a model whose checkpoint conversion "
        "only renames tensors."
    )


def _checkpoint_names(model: torch.nn.Module) -> tuple[dict[int, str], dict[int, str]]:
    """(id -> checkpoint name for renamed-only parameters, id -> in-memory name for converted ones)."""
    model = unwrap_model(model)
    named = {name: p for name, p in model.named_parameters()}
    if getattr(model, "peft_config", None) is not None and hasattr(model, "active_adapter"):
        return _peft_checkpoint_names(model, named), {}
    plain = {id(p): strip_wrapper_prefixes(n) for n, p in named.items()}
    if "transformers" not in sys.modules:  # then it cannot be a PreTrainedModel: skip a costly import
        return plain, {}
    try:
        from transformers import PreTrainedModel
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:  # pragma: no cover - transformers is a hard dependency
        return plain, {}
    if not isinstance(model, PreTrainedModel):
        return plain, {}
    reverted = revert_weight_conversion(model, dict(named))
    by_id = {id(t): name for name, t in reverted.items()}
    names = {id(p): by_id[id(p)] for p in named.values() if id(p) in by_id}
    converted = {id(p): n for n, p in named.items() if id(p) not in by_id}
    return names, converted


def _peft_checkpoint_names(model, named: dict[str, torch.Tensor]) -> dict[int, str]:
    """PEFT: names as in the saved adapter file (adapter name removed; a `modules_to_save` copy, e.g. a trained
    head, under the name of the module it replaces, as PEFT saves it), base weights by their base names."""
    adapters = list(model.peft_config)
    out = {}
    for name, p in named.items():
        clean = strip_wrapper_prefixes(name)
        for adapter in adapters:
            clean = clean.replace(f".modules_to_save.{adapter}.", ".")
            clean = clean.replace(f".{adapter}.", ".")
            if clean.endswith(f".{adapter}"):
                clean = clean[: -len(adapter) - 1]
        out[id(p)] = clean
    return out


def build_layouts(model: torch.nn.Module, spec: AnchorSpec) -> list[tuple[TensorLayout, torch.nn.Parameter]]:
    """The targeted trainable parameters of `model`, each with its layout, in a stable (name) order.

    Raises ValueError when `include` / `exclude` patterns match no parameter.
    """
    model = unwrap_model(model)
    names, converted = _checkpoint_names(model)
    seen: set[int] = set()
    rows = []
    all_names = []
    for module in model.modules():
        for pname, param in module.named_parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            if not param.requires_grad:
                continue
            if id(param) in converted:
                all_names.append(converted[id(param)])
                if spec.targets(converted[id(param)]):
                    raise ValueError(_converted_message(model, converted[id(param)]))
                continue
            name = names[id(param)]
            all_names.append(name)
            if not spec.targets(name):
                continue
            unit_dim = _unit_dim(module, pname, param) if spec.granularity == "neuron" else None
            key = name.rsplit(".", 1)[0] if unit_dim is not None else name
            rows.append((TensorLayout(name, tuple(param.shape), unit_dim, key), param))
    _check_patterns_match(spec, all_names)
    rows.sort(key=lambda row: row[0].name)
    return rows


def _check_patterns_match(spec: AnchorSpec, names: list[str]) -> None:
    for fname in ("include", "exclude"):
        for pattern in getattr(spec, fname) or ():
            if not any(re.search(pattern, n) for n in names):
                example = ", ".join(names[:3])
                raise ValueError(
                    f"anchor {fname} pattern {pattern!r} matches no trainable parameter "
                    f"(checkpoint names look like: {example}, ...)"
                )


def anchored_values(tensor: torch.Tensor, layout: TensorLayout, spec: AnchorSpec) -> torch.Tensor:
    """The anchored entries of `tensor`, compact (element: masked 1-D; neuron: selected units)."""
    if tuple(tensor.shape) != layout.shape:
        raise ValueError(f"tensor {layout.name!r} has shape {tuple(tensor.shape)}, anchors expect {layout.shape}")
    return AnchorSelection(layout, spec, tensor.device).take(tensor)
