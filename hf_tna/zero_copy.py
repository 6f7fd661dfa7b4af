"""Zero-copy anchored optimizers: torch's `AdamW`, `Adam` and `SGD` that keep no anchor state at all.

The restore path (`AnchoredOptimizer`) keeps a mask (or unit indices) and a copy of the anchored values per
parameter and writes them back after every step: about 1.3 bytes per targeted fp32 entry at ratio 0.4, plus
the mask. These subclasses keep nothing: the mask is re-drawn from the counter-based hash inside each step
(`AnchorSelection`, for the local dim-0 shard of a DTensor too), the anchored gradients are zeroed, weight decay
is applied to free entries only, and then torch's own `step()` runs unchanged. With zero gradients an anchored
entry's moments stay exactly 0 and its update is `p - 0`, so it never changes (bitwise), and the free entries
follow torch's own code, bitwise equal to the same torch optimizer on the same masked gradients.

They subclass torch's classes and override only `step()` (and `add_param_group`, to name new parameters), so
`state_dict()` is torch's: a checkpoint saved from one resumes in the other. Anchor bookkeeping lives beside
`param_groups` (never inside it, where a plain torch state would drop it), by position, never by `id(param)`
(accelerate's FSDP2 preparation swaps parameter objects in place).

Cost: the mask is drawn again at every step (and at `mask_gradients()`, which the trainer calls before clipping),
so on CPU a zero-copy step is slower than the restore path's (see `benchmarks/overhead.py`); it buys memory.
`anchor_drift()` cannot compare with stored values: it re-hashes the anchored values and compares them with the
manifest's sha256 taken when anchoring started.
"""

from __future__ import annotations

import torch

from .anchors import AnchorSelection, AnchorSpec, TensorLayout, build_layouts, counter_map
from .fused import failed, hash_scalars
from .fused import run as run_kernel
from .manifest import manifest_entry, values_sha256


def local_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor (in place operations on it change the DTensor), or the tensor itself."""
    return tensor.to_local() if type(tensor).__name__ == "DTensor" else tensor


def shard_offset(param: torch.Tensor) -> tuple[int, int | None]:
    """(first dim-0 row, number of rows) of this rank's shard of `param`; (0, None) for a plain tensor.

    FSDP2 shards every parameter on dim 0 (`Shard(0)`); replicated placements hold the whole tensor. Other
    placements (tensor parallel on another dim) are refused.
    """
    if type(param).__name__ != "DTensor":
        return 0, None
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    for placement in param.placements:
        if not isinstance(placement, (Replicate, Shard)) or (isinstance(placement, Shard) and placement.dim != 0):
            raise ValueError(
                f"anchors support DTensor parameters sharded on dim 0 (FSDP2) or replicated, got placements "
                f"{param.placements}"
            )
    local_shape, offset = compute_local_shape_and_global_offset(param.shape, param.device_mesh, param.placements)
    if not param.shape:
        return 0, None
    return int(offset[0]), int(local_shape[0])


def local_selection(layout: TensorLayout, spec: AnchorSpec, param: torch.Tensor) -> AnchorSelection:
    """The anchors of this rank's part of `param` (the whole tensor, or its dim-0 shard)."""
    offset, rows = shard_offset(param)
    return AnchorSelection(layout, spec, local_tensor(param).device, offset=offset, rows=rows)


def full_anchored_values(param: torch.Tensor, layout: TensorLayout, spec: AnchorSpec) -> torch.Tensor:
    """The anchored values of the whole tensor (a collective for DTensors: every rank must call it)."""
    full = param.full_tensor() if type(param).__name__ == "DTensor" else param
    return AnchorSelection(layout, spec, full.device).take(full.detach())


def anchored_hashes(pairs, spec: AnchorSpec) -> dict[str, str]:
    """sha256 of the current anchored values of each `(param, layout)` pair, by tensor name (a collective for
    DTensor parameters)."""
    return {layout.name: values_sha256(full_anchored_values(param, layout, spec)) for param, layout in pairs}


class ZeroCopyMixin:
    """The anchor part of `ZeroCopyAdamW` / `ZeroCopyAdam` / `ZeroCopySGD` (see the module docstring)."""

    zero_copy = True

    def _setup_anchors(self, model: torch.nn.Module, spec: AnchorSpec, compiled: bool | None = None) -> None:
        # Called before torch's __init__, whose add_param_group calls need the layouts.
        self.spec = spec
        self.compiled = compiled
        self.mask_in_step = True
        self._layout_of = {id(p): layout for layout, p in build_layouts(model, spec)}
        self._layouts: list[list[TensorLayout | None]] = []
        self._masked: dict[tuple[int, int], tuple[int, int]] = {}
        self._manifest: dict[str, dict] | None = None

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        self._layouts.append([self._layout_of.get(id(p)) for p in self.param_groups[-1]["params"]])

    # --- anchors ---
    def _targets(self):
        """(group index, param index, group, param, layout) of every anchored parameter with a gradient."""
        for g, group in enumerate(self.param_groups):
            for i, param in enumerate(group["params"]):
                layout = self._layouts[g][i]
                if layout is not None:
                    yield g, i, group, param, layout

    @torch.no_grad()
    def mask_gradients(self) -> None:
        """Zero the gradients of anchored entries, the mask drawn now (call before clipping the gradient norm)."""
        compiled = self._use_compiled()
        for g, i, _, param, layout in self._targets():
            if param.grad is None:
                continue
            if compiled and run_kernel("mask", *self._kernel_args(param, layout, masks_only=True)):
                continue
            self._mask_one(g, i, param, layout)

    # --- the fused kernel (hf_tna.fused) ---
    def _use_compiled(self) -> bool:
        """The compiled kernel: Adam / AdamW only, without AMSGrad, capturable or differentiable groups; by
        default on CUDA, where it pays (`compiled=True` forces it, False keeps the eager path)."""
        if self.compiled is False or not isinstance(self, torch.optim.Adam) or failed("adam"):
            return False
        if any(g.get("amsgrad") or g.get("capturable") or g.get("differentiable") or torch.is_tensor(g["lr"])
               for g in self.param_groups):
            return False
        if self.compiled is None:
            return any(p.is_cuda for g in self.param_groups for p in g["params"])
        return True

    def _kernel_args(self, param, layout, masks_only: bool = False) -> tuple:
        local = local_tensor(param)
        offset, _ = shard_offset(param) if layout is not None else (0, None)
        div, mod, base = counter_map(layout, offset, tuple(local.shape))
        ints = [torch.tensor(v, dtype=torch.int64, device=local.device) for v in (div, mod, base)]
        keys = hash_scalars(layout, self.spec, local.device)
        grad = local_tensor(param.grad).view(-1)
        return (grad, *ints, *keys) if masks_only else (local.view(-1), grad, *ints, *keys)

    @torch.no_grad()
    def _compiled_step(self) -> bool:
        """One step through the compiled kernel; False when it cannot compile (nothing was changed then)."""
        for g, group in enumerate(self.param_groups):
            beta1, beta2 = group["betas"]
            for i, param in enumerate(group["params"]):
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:  # what torch's Adam creates, so state dicts stay interchangeable
                    state["step"] = torch.tensor(0.0, dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                p, grad, div, mod, base, key0, key1, threshold = self._kernel_args(param, self._layouts[g][i])
                device = p.device
                scalars = [torch.tensor(float(v), dtype=torch.float32, device=device)
                           for v in (state["step"] + 1, group["lr"], beta1, beta2, group["eps"], group["weight_decay"])]
                ok = run_kernel(
                    "adam", p, grad, local_tensor(state["exp_avg"]).view(-1), local_tensor(state["exp_avg_sq"]).view(-1),
                    *scalars, div, mod, base, key0, key1, threshold,
                    decoupled=bool(group.get("decoupled_weight_decay", False)), maximize=bool(group.get("maximize")),
                )
                if not ok:
                    return False
                state["step"] += 1
        return True

    def _mask_one(self, g: int, i: int, param, layout, selection=None) -> AnchorSelection | None:
        grad = local_tensor(param.grad)
        if self._masked.get((g, i)) == (id(grad), grad._version):
            return selection
        selection = selection or local_selection(layout, self.spec, param)
        selection.zero_(grad)
        self._masked[(g, i)] = (id(grad), grad._version)
        return selection

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self._manifest is None:  # anchoring starts now: after DDP broadcast the weights, before they move
            self._manifest = self.manifest()
        if self._use_compiled() and self._compiled_step():
            return loss
        decays = []
        for g, group in enumerate(self.param_groups):
            wd = group.get("weight_decay", 0.0)
            decoupled = self._decoupled(group)
            lr = float(group["lr"])
            for i, param in enumerate(group["params"]):
                if param.grad is None:
                    continue
                layout = self._layouts[g][i]
                selection = None
                if layout is not None:
                    selection = self._mask_one(g, i, param, layout) if self.mask_in_step or closure else None
                if not wd:
                    continue
                p, grad = local_tensor(param), local_tensor(param.grad)
                if layout is None:  # not anchored: torch's own decay
                    if decoupled:
                        p.mul_(1 - lr * wd)
                    else:
                        grad.add_(p, alpha=-wd if group.get("maximize") else wd)
                    continue
                selection = selection or local_selection(layout, self.spec, param)
                anchored = selection.dense_mask().to(p.device)
                if decoupled:  # torch: p.mul_(1 - lr * wd), on free entries only
                    factor = torch.full_like(p, 1 - lr * wd, dtype=torch.float32)
                    p.mul_(factor.masked_fill_(anchored, 1.0))
                else:  # torch: grad = grad.add(p, alpha=wd), on free entries only (after maximize's negation)
                    alpha = -wd if group.get("maximize") else wd
                    grad.copy_(torch.where(anchored, grad, grad.add(p, alpha=alpha)))
            if wd:
                decays.append((group, wd))
                group["weight_decay"] = 0.0
        try:
            super().step()
        finally:
            for group, wd in decays:
                group["weight_decay"] = wd
        return loss

    def _decoupled(self, group: dict) -> bool:
        return bool(group.get("decoupled_weight_decay", False))

    def manifest(self) -> dict[str, dict]:
        """Per-tensor manifest of the current anchored values (a collective for DTensor parameters)."""
        if self._manifest is not None:
            return self._manifest
        out = {}
        for _, _, _, param, layout in self._targets():
            values = full_anchored_values(param, layout, self.spec)
            out[layout.name] = manifest_entry(values, layout, self.spec, values)
        return out

    def anchored_hashes(self) -> dict[str, str]:
        """sha256 of the current anchored values per tensor."""
        return anchored_hashes(((param, layout) for _, _, _, param, layout in self._targets()), self.spec)

    def anchored_entries(self) -> int:
        """How many entries are anchored (on this rank): one mask draw per tensor, no hashing."""
        return sum(local_selection(layout, self.spec, param).num_anchored for _, _, _, param, layout in self._targets())

    def reset_anchor_values(self) -> None:
        """Take the current weights as the anchor values (after a checkpoint was loaded into the model)."""
        self._manifest = None
        self._manifest = self.manifest()

    def anchor_drift(self) -> float:
        """Number of tensors whose anchored values no longer hash to the manifest's sha256 (0.0 when intact).

        Zero-copy holds no values to measure a distance with; this re-hashes every anchored value (a pass over
        them, so `TNATrainer` calls it at logging steps only)."""
        if self._manifest is None:
            return 0.0
        now = self.anchored_hashes()
        return float(sum(now[name] != entry["sha256"] for name, entry in self._manifest.items()))

    def anchor_nbytes(self) -> int:
        """Bytes held for anchors between steps: none."""
        return 0

    @property
    def anchor_layouts(self) -> list[TensorLayout]:
        return [layout for _, _, _, _, layout in self._targets()]


def _init(cls_name: str, base: type[torch.optim.Optimizer]):
    def __init__(self, params, model: torch.nn.Module, spec: AnchorSpec | None = None, compiled: bool | None = None,
                 **kwargs):
        self._setup_anchors(model, spec or AnchorSpec(), compiled)
        base.__init__(self, params, **kwargs)

    __init__.__doc__ = (
        f"`torch.optim.{base.__name__}` over `params` (parameters or groups), keeping the anchored entries of "
        f"`model` (per `spec`) bitwise fixed with no stored anchor state. `compiled`: the fused kernel of "
        f"`hf_tna.fused` (Adam / AdamW; default: on CUDA). Other arguments are `{base.__name__}`'s."
    )
    return __init__


class ZeroCopyAdamW(ZeroCopyMixin, torch.optim.AdamW):
    __init__ = _init("ZeroCopyAdamW", torch.optim.AdamW)


class ZeroCopyAdam(ZeroCopyMixin, torch.optim.Adam):
    __init__ = _init("ZeroCopyAdam", torch.optim.Adam)


class ZeroCopySGD(ZeroCopyMixin, torch.optim.SGD):
    __init__ = _init("ZeroCopySGD", torch.optim.SGD)


ZERO_COPY_CLASSES = {torch.optim.AdamW: ZeroCopyAdamW, torch.optim.Adam: ZeroCopyAdam, torch.optim.SGD: ZeroCopySGD}


def zero_copy_class(optimizer_cls: type) -> type | None:
    """The zero-copy subclass for exactly `AdamW`, `Adam` or `SGD`; None for any other class."""
    return ZERO_COPY_CLASSES.get(optimizer_cls)

