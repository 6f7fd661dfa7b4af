"""`AnchoredOptimizer`: wraps any torch optimizer so anchored entries keep their anchor values.

Two calls do the work:
- `mask_gradients()` zeroes the gradients of anchored entries. `TNATrainer` makes it before gradient
  clipping, so the clipped and logged norm counts only free entries; hand-written loops call it before
  `clip_grad_norm_`. `step()` makes it again (it is idempotent), so a loop that forgets it stays correct.
- after every real `step()` the anchored entries are written back from a compact copy of their values,
  so weight decay, momentum or any other rule of the inner optimizer cannot move them.

Memory per targeted parameter: element granularity keeps a bool mask (1 byte per targeted entry) and the
anchored values (dtype bytes per anchored entry); neuron granularity keeps the anchored unit indices and
the anchored rows only.
"""

from __future__ import annotations

import logging

import torch

from .anchors import AnchorSpec, TensorLayout, build_layouts
from .manifest import manifest_entry
from .zero_copy import anchored_hashes, full_anchored_values, local_selection, local_tensor, zero_copy_class

logger = logging.getLogger(__name__)


class ParamAnchor:
    """The anchors of one parameter: where they are (an `AnchorSelection`) and what values they hold.

    For a DTensor parameter (FSDP2) both are those of this rank's dim-0 shard."""

    def __init__(self, param: torch.nn.Parameter, layout: TensorLayout, spec: AnchorSpec):
        self.param = param
        self.layout = layout
        self.spec = spec
        self._masked = None  # (id, version) of the gradient last masked
        self.selection = local_selection(layout, spec, param)
        self.values = self.selection.take(local_tensor(param)).clone()

    @property
    def name(self) -> str:
        return self.layout.name

    @property
    def num_anchored(self) -> int:
        return self.values.numel()

    def current_values(self) -> torch.Tensor:
        return self.selection.take(local_tensor(self.param))

    def mask_gradient(self) -> None:
        grad = self.param.grad
        if grad is None or self.num_anchored == 0:
            return
        grad = local_tensor(grad)
        # Skip when this very gradient was masked and not written since (backward bumps `_version`).
        if self._masked == (id(grad), grad._version):
            return
        self.selection.zero_(grad)
        self._masked = (id(grad), grad._version)

    @torch.no_grad()
    def restore(self) -> None:
        self.selection.put_(local_tensor(self.param), self.values)

    @torch.no_grad()
    def drift(self) -> float:
        """Largest absolute difference between the anchored entries and their anchor values."""
        if self.num_anchored == 0:
            return 0.0
        diff = (self.current_values().float() - self.values.float()).abs()
        return float(diff.max()) if diff.numel() else 0.0

    def full_values(self) -> torch.Tensor:
        """The anchor values of the whole tensor (gathered from every rank for a DTensor: a collective)."""
        if type(self.param).__name__ != "DTensor":
            return self.values
        from torch.distributed.tensor import DTensor

        full = DTensor.from_local(
            torch.zeros_like(local_tensor(self.param)), self.param.device_mesh, self.param.placements,
            shape=self.param.shape, stride=self.param.stride(),
        )
        self.selection.put_(local_tensor(full), self.values)
        return full_anchored_values(full, self.layout, self.spec)

    def nbytes(self) -> int:
        return self.selection.nbytes() + self.values.numel() * self.values.element_size()


def build_anchors(model: torch.nn.Module, spec: AnchorSpec) -> list[ParamAnchor]:
    """Anchors of every targeted trainable parameter of `model`, taking their current values (for DTensor
    parameters, sharded on dim 0 by FSDP2, those of this rank's shard)."""
    return [ParamAnchor(param, layout, spec) for layout, param in build_layouts(model, spec)]


class AnchoredOptimizer(torch.optim.Optimizer):
    """Wraps `optimizer` so the anchored entries of `model` (per `spec`) never leave their anchor values.

    It is a `torch.optim.Optimizer` that delegates `param_groups`, `state`, `state_dict` and `zero_grad` to
    the inner optimizer (like accelerate's `AcceleratedOptimizer`), so LR schedulers, `GradScaler` and
    `accelerator.prepare` accept it.

    Args:
        optimizer: any torch optimizer over (a superset or subset of) the model's parameters.
        model: the model whose current weights become the anchor values.
        spec: the `AnchorSpec`.
        anchors: prebuilt anchors (advanced: to share them between optimizers).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, model: torch.nn.Module, spec: AnchorSpec, anchors=None):
        if isinstance(optimizer, AnchoredOptimizer):
            raise TypeError("optimizer is already an AnchoredOptimizer; wrap the inner optimizer once")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.spec = spec
        self.anchors = build_anchors(model, spec) if anchors is None else anchors
        optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
        # Only parameters the inner optimizer steps can move; keep the others out of the hot loop.
        self._active = [a for a in self.anchors if id(a.param) in optimized and a.num_anchored > 0]
        # A caller that guarantees `mask_gradients()` after the last backward of every step (TNATrainer)
        # sets this to False, so `step()` does not mask again after clipping (which keeps zeros zero).
        self.mask_in_step = True
        self._restore_graph = None  # CUDA: the restore, captured once (static params, masks and values)
        self._eager_restores = 0
        self._graph_pointers: list[int] = []

    # --- delegation (as accelerate's AcceleratedOptimizer) ---
    @property
    def defaults(self):
        return self.optimizer.defaults

    @defaults.setter
    def defaults(self, value):
        self.optimizer.defaults = value

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value):
        self.optimizer.param_groups = value

    @property
    def state(self):
        return self.optimizer.state

    @state.setter
    def state(self, value):
        self.optimizer.state = value

    def add_param_group(self, param_group):
        self.optimizer.add_param_group(param_group)

    def state_dict(self):
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict):
        self.optimizer.load_state_dict(state_dict)

    def zero_grad(self, set_to_none: bool = True):
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def __getstate__(self):
        return self.__dict__

    def __setstate__(self, state):
        self.__dict__.update(state)

    def __repr__(self):
        return f"AnchoredOptimizer(ratio={self.spec.ratio}, granularity={self.spec.granularity}, {self.optimizer!r})"

    # --- anchors ---
    def mask_gradients(self) -> None:
        """Zero the gradients of anchored entries (call before clipping the gradient norm)."""
        for anchor in self._active:
            anchor.mask_gradient()

    def restore_anchors(self) -> None:
        """Write the anchor values back into the anchored entries.

        On CUDA the restore of every tensor is captured once in a CUDA graph and replayed (parameters,
        masks and anchor values never move), so it costs one launch instead of a few per tensor; where
        capture fails it stays eager.
        """
        if self._restore_graph is not None:
            if self._graph_pointers == [a.param.data_ptr() for a in self._active]:
                self._restore_graph.replay()
                return
            self._restore_graph, self._eager_restores = None, 0  # a parameter was re-allocated: re-capture later
        for anchor in self._active:
            anchor.restore()
        self._eager_restores += 1
        if self._eager_restores == 2 and self._active and self._active[0].param.is_cuda:
            self._restore_graph = _capture_restore(self._active)
            self._graph_pointers = [a.param.data_ptr() for a in self._active]

    def step(self, closure=None):
        if self.mask_in_step or closure is not None:
            self.mask_gradients()
        loss = self.optimizer.step(closure)
        self.restore_anchors()
        return loss

    def anchor_drift(self) -> float:
        """Largest absolute drift of any anchored entry from its anchor value (0.0 when intact)."""
        return max((a.drift() for a in self.anchors), default=0.0)

    def manifest(self) -> dict[str, dict]:
        """Per-tensor manifest (shape, count, sha256 of the anchor values) for `tna_config.json` (a collective
        for DTensor parameters: every rank must call it)."""
        manifest = {}
        for anchor in self.anchors:
            values = anchor.full_values()
            manifest[anchor.name] = manifest_entry(values, anchor.layout, self.spec, values)
        return manifest

    def anchored_hashes(self) -> dict[str, str]:
        """sha256 of the current anchored values per tensor (what the weights hold, not the stored values)."""
        return anchored_hashes(((a.param, a.layout) for a in self.anchors), self.spec)

    def anchored_entries(self) -> int:
        """How many entries are anchored (on this rank)."""
        return sum(a.num_anchored for a in self.anchors)

    def reset_anchor_values(self) -> None:
        """Take the current weights as the anchor values (after a checkpoint was loaded into the model)."""
        for anchor in self.anchors:
            anchor.values = anchor.current_values().clone()

    @property
    def anchor_layouts(self) -> list[TensorLayout]:
        return [a.layout for a in self.anchors]

    def anchor_nbytes(self) -> int:
        """Bytes held for anchors: masks or unit indices plus the compact anchor values."""
        return sum(a.nbytes() for a in self.anchors)


def _capture_restore(anchors: list[ParamAnchor]):
    """A CUDA graph replaying `restore()` of every anchor, or None where capture is not possible."""
    if any(a.param.device != anchors[0].param.device for a in anchors):
        return None
    try:
        graph = torch.cuda.CUDAGraph()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for anchor in anchors:  # warm-up on the capture stream
                anchor.restore()
            with torch.cuda.graph(graph, stream=side):
                for anchor in anchors:
                    anchor.restore()
        torch.cuda.current_stream().wait_stream(side)
        return graph
    except Exception as err:  # capture is an optimisation: stay eager, correct either way
        import warnings

        warnings.warn(f"hf_tna: anchor restore stays eager (CUDA graph capture failed: {err})")
        torch.cuda.synchronize()
        return None


def choose_zero_copy(optimizer_cls: type, model: torch.nn.Module, zero_copy: bool | None) -> bool:
    """Whether `create_anchored_optimizer` takes the zero-copy path: forced by `zero_copy`, else automatic (zero
    copy for torch's AdamW / Adam / SGD on an accelerator, where it is as fast as the restore path; the restore
    path on CPU, where re-drawing the mask every step costs more than the copy saves)."""
    supported = zero_copy_class(optimizer_cls) is not None
    if zero_copy and not supported:
        raise ValueError(
            f"zero-copy anchors support torch.optim.AdamW, Adam and SGD, not {optimizer_cls.__name__}; pass "
            "zero_copy=None (or anchor_zero_copy unset) to use the restore path, which wraps any optimizer"
        )
    if zero_copy is not None:
        return bool(zero_copy)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    return supported and device.type != "cpu"


def create_anchored_optimizer(
    model: torch.nn.Module,
    optimizer_cls: type[torch.optim.Optimizer] = torch.optim.AdamW,
    spec: AnchorSpec | None = None,
    params=None,
    zero_copy: bool | None = None,
    **optimizer_kwargs,
) -> torch.optim.Optimizer:
    """Factory for plain `Trainer` users and hand-written loops (like peft's `create_loraplus_optimizer`).

    Builds `optimizer_cls` over `params` (parameters or param groups, e.g. decay / no-decay; default: the
    model's trainable parameters) with anchors on `model` per `spec`:
    - zero copy (`ZeroCopyAdamW` / `ZeroCopyAdam` / `ZeroCopySGD`): for torch's AdamW, Adam and SGD, no mask
      and no copy of anchor values kept; the default on accelerators;
    - restore (`AnchoredOptimizer` wrapping the optimizer): any optimizer class; the default on CPU.
    `zero_copy=True` / `False` forces a path. One INFO line says which path was taken.

    Pass the result as `Trainer(..., optimizers=(optimizer, None))` or use it in your own loop; call
    `optimizer.mask_gradients()` before clipping the gradient norm (`TNATrainer` does it for you).
    """
    spec = spec or AnchorSpec()
    params = [p for p in model.parameters() if p.requires_grad] if params is None else params
    if choose_zero_copy(optimizer_cls, model, zero_copy):
        optimizer = zero_copy_class(optimizer_cls)(params, model=model, spec=spec, **optimizer_kwargs)
        logger.info("hf_tna: zero-copy anchors (%s, no stored anchor state)", type(optimizer).__name__)
        return optimizer
    optimizer = AnchoredOptimizer(optimizer_cls(params, **optimizer_kwargs), model, spec)
    logger.info(
        "hf_tna: restore-path anchors (%s wrapped, %d bytes of anchor state)",
        optimizer_cls.__name__, optimizer.anchor_nbytes(),
    )
    return optimizer
