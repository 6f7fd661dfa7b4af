"""Anchors for a plain `Trainer` and the helpers every trainer integration shares: `TNACallback`,
`anchored_optimizer_factory` (for `optimizer_cls_and_kwargs`), finding the anchored optimizer inside accelerate's
wrapper, converting Trainer's optimizer to zero copy, and the LoRA-trap check."""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback
from transformers.utils import logging

from .anchors import AnchorSpec, unwrap_model
from .arguments import AnchorArguments
from .manifest import TNAFileConfig
from .optimizer import AnchoredOptimizer, create_anchored_optimizer
from .zero_copy import ZeroCopyMixin, zero_copy_class

logger = logging.get_logger(__name__)


def find_anchored_optimizer(optimizer) -> AnchoredOptimizer | ZeroCopyMixin | None:
    """The anchored optimizer (restore path or zero copy) inside wrappers such as accelerate's
    `AcceleratedOptimizer`."""
    while optimizer is not None and not isinstance(optimizer, (AnchoredOptimizer, ZeroCopyMixin)):
        optimizer = getattr(optimizer, "optimizer", None)
    return optimizer


def to_zero_copy(optimizer: torch.optim.Optimizer, model: torch.nn.Module, spec: AnchorSpec):
    """The zero-copy version of a torch AdamW / Adam / SGD built by `Trainer` (same groups and settings)."""

    cls = zero_copy_class(type(optimizer))
    accepted = inspect.signature(type(optimizer).__init__).parameters
    defaults = {k: v for k, v in optimizer.defaults.items() if k in accepted}
    return cls([dict(group) for group in optimizer.param_groups], model=model, spec=spec, **defaults)


def base_model_info(model) -> tuple[str | None, str | None]:
    """(name or path, revision) of the pretrained base a model was loaded from, when known."""
    peft_config = getattr(model, "peft_config", None)
    if isinstance(peft_config, dict) and peft_config:
        config = next(iter(peft_config.values()))
        return getattr(config, "base_model_name_or_path", None), getattr(config, "revision", None)
    config = getattr(model, "config", None)
    if config is None:
        return None, None
    return getattr(config, "_name_or_path", None) or None, getattr(config, "_commit_hash", None)


def check_optimizer_trains_the_model(optimizer, model: torch.nn.Module) -> None:
    """Refuse an anchored optimizer that holds none of the parameters being trained (e.g. built on the base
    model before PEFT wrapped it, so it would step frozen weights while the adapters never move)."""
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    if trainable and not trainable & held:
        raise ValueError(
            f"the anchored optimizer holds none of the {len(trainable)} parameters being trained (it was built on "
            "other parameters, e.g. on the base model before `peft_config` / `get_peft_model` added the adapters): "
            "pass `anchor_spec=` and let the trainer build it, or build it on the model the trainer trains"
        )


class TNACallback(TrainerCallback):
    """`tna_config.json` for a plain `Trainer` given an anchored optimizer (`optimizers=(...)` or
    `optimizer_cls_and_kwargs=(anchored_optimizer_factory(...), {...})`):

        trainer = Trainer(model, args, ..., optimizers=(create_anchored_optimizer(model, spec=spec), None),
                          callbacks=[TNACallback()])

    It writes `tna_config.json` into every checkpoint (`on_save`) and into `args.output_dir` when training ends
    (`on_train_end`); `trainer.save_model()` fires no callback event, so a folder saved that way gets none: use
    `TNATrainer` (or the mixin), which writes it beside every save. A plain `Trainer` clips the gradient norm with
    the anchored gradients counted (they are zeroed only inside `step()`): one warning says so; the mixin masks
    them before clipping.
    """

    def __init__(self):
        self._checked = False

    def _optimizer(self, kwargs):
        optimizer = find_anchored_optimizer(kwargs.get("optimizer"))
        if optimizer is None:
            raise ValueError(
                "TNACallback found no anchored optimizer: pass one in `optimizers=` (hf_tna.create_anchored_optimizer) "
                "or `optimizer_cls_and_kwargs=` (hf_tna.anchored_optimizer_factory), or use TNATrainer"
            )
        return optimizer

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        optimizer = find_anchored_optimizer(kwargs.get("optimizer"))
        if optimizer is None or self._checked:
            return
        self._checked = True
        check_optimizer_trains_the_model(optimizer, unwrap_model(model))
        if optimizer.mask_in_step and args.max_grad_norm and state.is_world_process_zero:
            logger.warning(
                "hf_tna: a plain Trainer clips the gradient norm before the anchored optimizer zeroes the anchored "
                "gradients, so the clipped and logged norm counts them; use TNATrainer (or TNATrainerMixin) to count "
                "free entries only"
            )

    def _write(self, folder, args, state, model, kwargs):
        if not state.is_world_process_zero:
            return
        optimizer = self._optimizer(kwargs)
        base_model, base_revision = base_model_info(unwrap_model(model))
        TNAFileConfig(optimizer.spec, optimizer.manifest(), base_model, base_revision).save(folder)

    def on_save(self, args, state, control, model=None, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            self._write(folder, args, state, model, kwargs)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
        self._write(args.output_dir, args, state, model, kwargs)


def anchored_optimizer_factory(
    optimizer_cls: type[torch.optim.Optimizer] = torch.optim.AdamW,
    spec: AnchorSpec | None = None,
    args=None,
    zero_copy: bool | None = None,
):
    """A factory for `Trainer(optimizer_cls_and_kwargs=(factory, kwargs))`.

    transformers calls a factory as `factory()(model, **kwargs)` with only your `kwargs` (no learning rate from
    the training arguments, no decay / no-decay groups), so the factory takes the learning rate, the weight decay
    and `Trainer`'s parameter groups from `args` (a `TrainingArguments`; its `anchor_*` fields give the spec when
    it mixes in `AnchorArguments` and `spec` is None):

        factory = anchored_optimizer_factory(torch.optim.AdamW, spec, args)
        trainer = TNATrainer(model, args, optimizer_cls_and_kwargs=(factory, {"betas": (0.9, 0.95)}))
    """
    if spec is None:
        spec = args.to_spec() if isinstance(args, AnchorArguments) else AnchorSpec()

    class AnchoredOptimizerFactory:
        def __call__(self, model: torch.nn.Module, **kwargs) -> torch.optim.Optimizer:
            decay = set(Trainer.get_decay_parameter_names(None, model))
            weight_decay = kwargs.pop("weight_decay", args.weight_decay if args is not None else 0.0)
            groups = [
                {"params": [p for n, p in model.named_parameters() if n in decay and p.requires_grad],
                 "weight_decay": weight_decay},
                {"params": [p for n, p in model.named_parameters() if n not in decay and p.requires_grad],
                 "weight_decay": 0.0},
            ]
            groups = [g for g in groups if g["params"]]
            kwargs.setdefault("lr", args.learning_rate if args is not None else 1e-3)
            return create_anchored_optimizer(model, optimizer_cls, spec, params=groups, zero_copy=zero_copy, **kwargs)

    AnchoredOptimizerFactory.__name__ = f"Anchored{optimizer_cls.__name__}Factory"
    return AnchoredOptimizerFactory
