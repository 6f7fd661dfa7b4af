"""Anchors wherever `transformers.Trainer` trains: `TNATrainerMixin`, `TNATrainer`, `TNACallback` and a factory.

- `TNATrainerMixin` gives anchors to any `Trainer` subclass (`class TNASFTTrainer(TNATrainerMixin, SFTTrainer)`):
  the optimizer (the one the trainer creates or the one you pass) becomes an anchored one, gradients of anchored
  entries are zeroed before clipping, and `tna_config.json` is written beside every save, checkpoint and push.
  `TNATrainer` is the mixin on `Trainer`: swap `Trainer` for it and nothing else changes.
- `TNACallback` writes `tna_config.json` for a plain `Trainer` given an anchored optimizer.
- `anchored_optimizer_factory` fits `Trainer(optimizer_cls_and_kwargs=...)`.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
from transformers import Trainer
from transformers.trainer_utils import get_last_checkpoint
from transformers.utils import logging

from .anchors import AnchorSpec, TensorLayout, build_layouts, checkpoint_names, unwrap_model
from .arguments import AnchorArguments
from .callback import (
    base_model_info,
    check_optimizer_trains_the_model,
    find_anchored_optimizer,
    to_zero_copy,
)
from .manifest import (
    CONFIG_NAME,
    TNAFileConfig,
    check_layouts_match,
    manifest_entry,
)
from .optimizer import AnchoredOptimizer, choose_zero_copy
from .shared_init import shared_initialize
from .zero_copy import anchored_hashes

logger = logging.get_logger(__name__)


def _refuse_sharding(args, forced: bool = False) -> None:
    if forced or (args is not None and (getattr(args, "fsdp", None) or getattr(args, "deepspeed", None))):
        raise ValueError(
            "TNATrainer does not support FSDP or DeepSpeed yet: accelerate's sharded plumbing is untested with "
            "anchors (it cannot shard on CPU). Train with DDP (`accelerate launch --multi_gpu` or torchrun), or "
            "shard with FSDP2 (`torch.distributed.fsdp.fully_shard`) in your own loop with "
            "`hf_tna.create_anchored_optimizer`, which holds anchors bitwise on dim-0 shards (see the README's "
            "FSDP2 loop). FSDP1 and DeepSpeed ZeRO are not supported."
        )


def training_args_of(init, args: tuple, kwargs: dict):
    """The training arguments a `Trainer` subclass's `__init__` receives, found by keyword or by binding to the
    parent's own signature (DPOTrainer's second positional argument is `ref_model`, not `args`)."""
    if "args" in kwargs:
        return kwargs["args"]
    try:
        return inspect.signature(init).bind_partial(*args, **kwargs).arguments.get("args")
    except TypeError:
        return None


class TNATrainerMixin:
    """Training-time neuron alignment for any `transformers.Trainer` subclass: anchored entries keep their
    initial values.

        class TNASFTTrainer(TNATrainerMixin, SFTTrainer): ...

    Takes exactly the parent trainer's arguments, plus:
        anchor_spec (`AnchorSpec`, *optional*): the anchors. Defaults to the spec of an anchored optimizer passed
            in `optimizers`, else to the `anchor_*` fields of `args` when its class mixes in `AnchorArguments`
            (`TNAConfig`, `TNASFTConfig`, ...), else `AnchorSpec()` (ratio 0.4, element granularity, seed 0).
        new_weights (`list[str]`, *optional*): checkpoint names of the weights the model did not load from its
            pretrained checkpoint (e.g. `missing_keys` of `from_pretrained(..., output_loading_info=True)`).
            They (default: those found by `hf_tna.shared_init.find_new_weights`: a fresh head, resized embedding
            rows, adapters) are re-initialised from the anchor seed so every contributor starts from the same
            values; `anchor_shared_init=False` in the arguments keeps your own initialisation.

    FSDP and DeepSpeed through accelerate are refused (use DDP, or FSDP2 in your own loop).
    """

    def __init__(self, *args, anchor_spec: AnchorSpec | None = None, new_weights=None, **kwargs):
        _refuse_sharding(training_args_of(super().__init__, args, kwargs))
        super().__init__(*args, **kwargs)
        if self.is_fsdp_enabled or self.is_deepspeed_enabled:  # enabled by an accelerate config
            _refuse_sharding(None, forced=True)
        given = find_anchored_optimizer(self.optimizer)  # optimizers=(create_anchored_optimizer(...), None)
        if given is not None:
            check_optimizer_trains_the_model(given, unwrap_model(self.model))
            given.mask_in_step = False  # training_step masks after the last backward of each step
        if anchor_spec is None:
            if given is not None:
                anchor_spec = given.spec
            else:
                anchor_spec = self.args.to_spec() if isinstance(self.args, AnchorArguments) else AnchorSpec()
        elif given is not None and given.spec != anchor_spec:
            raise ValueError(
                f"anchor_spec={anchor_spec} differs from the spec of the anchored optimizer passed in `optimizers` "
                f"({given.spec}); pass one of them"
            )
        if not isinstance(anchor_spec, AnchorSpec):
            raise TypeError(f"anchor_spec must be an hf_tna.AnchorSpec, got {type(anchor_spec).__name__}")
        self.anchor_spec = anchor_spec
        self._resume_tna: TNAFileConfig | None = None
        self._pre_resume_hashes: dict[str, str] | None = None
        self.shared_init: dict[str, list[int] | None] = {}
        self.frozen_whole: list[TensorLayout] = []
        if getattr(self.args, "anchor_lora_fa", False):
            self._setup_lora_fa(anchor_spec, new_weights)
        elif anchor_spec.ratio > 0 and self.model is not None:
            target = self.anchor_target(unwrap_model(self.model))
            build_layouts(target, anchor_spec)  # bad include/exclude patterns fail now
            if getattr(self.args, "anchor_shared_init", True):
                self.shared_init = shared_initialize(target, anchor_spec, new_weights)
                if self.shared_init and given is not None:
                    given.reset_anchor_values()  # the optimizer was built on the values before

    def _setup_lora_fa(self, spec: AnchorSpec, new_weights) -> None:
        """FFA-LoRA: LoRA `A` drawn from the anchor seed (shared initialisation) and frozen whole; `B` trains."""
        model = unwrap_model(self.model)
        if getattr(model, "peft_config", None) is None:
            raise ValueError("anchor_lora_fa=True needs a PEFT LoRA model (get_peft_model or peft_config=)")
        if not getattr(self.args, "anchor_shared_init", True):
            raise ValueError("anchor_lora_fa=True freezes LoRA A at its shared initialisation: keep "
                             "anchor_shared_init=True")
        self.shared_init = shared_initialize(model, spec, new_weights)
        names = checkpoint_names(model)
        for param in model.parameters():
            name = names.get(id(param), "")
            if param.requires_grad and ".lora_A." in name:
                param.requires_grad_(False)
                self.frozen_whole.append(TensorLayout(name, tuple(param.shape), whole=True))
        if not self.frozen_whole:
            raise ValueError("anchor_lora_fa=True found no LoRA A weight to freeze in the model")
        if spec.ratio > 0:
            build_layouts(model, spec)  # bad include/exclude patterns fail now

    # --- anchors ---
    @property
    def anchored_optimizer(self) -> AnchoredOptimizer | None:
        return find_anchored_optimizer(self.optimizer)

    def anchor_target(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module whose trainable parameters are anchored, named as in its own checkpoint. The whole
        model by default; override to anchor a sub-module (ColD fusion anchors `model.base_model`, the body)."""
        return model

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        if find_anchored_optimizer(optimizer) is None:
            target = self.anchor_target(unwrap_model(self.model if model is None else model))
            zero_copy = getattr(self.args, "anchor_zero_copy", None)
            if choose_zero_copy(type(optimizer), target, zero_copy):
                self.optimizer = to_zero_copy(optimizer, target, self.anchor_spec)
                path = f"zero copy ({type(self.optimizer).__name__}, no stored anchor state)"
            else:
                self.optimizer = AnchoredOptimizer(optimizer, target, self.anchor_spec)
                self._sync_anchor_values()
                path = f"restore ({type(optimizer).__name__} wrapped, {self.optimizer.anchor_nbytes()} bytes of anchors)"
            self.optimizer.mask_in_step = False  # training_step masks after the last backward of each step
            if self.is_world_process_zero():
                layouts = self.optimizer.anchor_layouts
                anchored = self.optimizer.anchored_entries()  # a count: no hashing of the values at start-up
                total = sum(p.numel() for p in target.parameters() if p.requires_grad)
                logger.info(
                    "hf_tna: anchoring %d of %d trainable entries (%d tensors), ratio %s, seed %d, granularity %s; "
                    "path: %s; shared-initialised tensors: %s",
                    anchored, total, len(layouts), self.anchor_spec.ratio, self.anchor_spec.seed,
                    self.anchor_spec.granularity, path, ", ".join(self.shared_init) or "none",
                )
        if self._resume_tna is not None and self.anchored_optimizer is not None:
            self._check_resumed_anchors()  # whoever built the optimizer (this trainer, or the user's optimizers=)
        return self.optimizer

    def _sync_anchor_values(self) -> None:
        """Under DDP, every rank takes rank 0's anchor values (DDP broadcasts rank 0's weights too)."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        if torch.distributed.get_world_size() == 1:
            return
        for anchor in self.anchored_optimizer.anchors:
            values = anchor.values.to(self.args.device)
            torch.distributed.broadcast(values, src=0)
            anchor.values = values.to(anchor.values.device)

    def _anchored_hashes(self) -> dict[str, str]:
        """sha256 of the anchored values of every targeted tensor of the model as it is now."""
        target = self.anchor_target(unwrap_model(self.model))
        return anchored_hashes(((param, layout) for layout, param in build_layouts(target, self.anchor_spec)),
                               self.anchor_spec)

    def _check_resumed_anchors(self) -> None:
        """The resumed weights must hold the anchors the checkpoint's manifest records; when the model given to
        the trainer is the base (most of its anchored values match the manifest), they must also equal its
        anchored values everywhere, so a consistent edit of weights and manifest is caught too."""
        resumed = self._resume_tna
        optimizer = self.anchored_optimizer
        if optimizer.spec != resumed.spec:
            raise ValueError(
                f"the anchored optimizer has anchors {optimizer.spec}, the checkpoint's {CONFIG_NAME} {resumed.spec}; "
                "resume with the checkpoint's anchor settings"
            )
        layouts = optimizer.anchor_layouts
        check_layouts_match(layouts, resumed.manifest, what="model being resumed")
        before, now = self._pre_resume_hashes or {}, optimizer.anchored_hashes()
        # The model given is the base when most anchored entries already held the manifest's values before the
        # checkpoint was loaded (a fresh model matches only in constant-initialised tensors, e.g. LayerNorm).
        counts = {layout.name: resumed.manifest[layout.name]["num_anchored"] for layout in layouts}
        matching = sum(n for name, n in counts.items() if before.get(name) == resumed.manifest[name]["sha256"])
        is_base = matching > 0.5 * sum(counts.values())
        for layout in layouts:
            name = layout.name
            if now[name] != resumed.manifest[name]["sha256"]:
                raise ValueError(
                    f"resumed weights of tensor {name!r} do not hold the anchor values recorded in the "
                    f"checkpoint's {CONFIG_NAME}: the checkpoint was modified or belongs to another base"
                )
            if is_base and counts[name] and before.get(name) != now[name]:
                raise ValueError(
                    f"the checkpoint's anchored values of tensor {name!r} differ from those of the model given to "
                    f"the trainer (its base): the checkpoint's weights and {CONFIG_NAME} were edited, or it was "
                    "trained from another base; resume from an unmodified checkpoint of this base (a model whose "
                    "new weights, e.g. a fresh head, were initialised differently than in the checkpoint's run is "
                    "refused too: build it as that run did)"
                )
        optimizer.reset_anchor_values()  # an optimizer built before the checkpoint was loaded took the old values

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        # Zero anchored gradients after the last micro-batch of a step, before Trainer clips and logs the
        # norm: the norm counts free entries only, and the optimizer step sees no anchored gradient.
        optimizer = self.anchored_optimizer
        if optimizer is not None and self.accelerator.sync_gradients:
            optimizer.mask_gradients()
        return loss

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, ignore_keys_for_eval=None, **kwargs):
        self._resume_tna = None
        if isinstance(resume_from_checkpoint, bool) and resume_from_checkpoint:
            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(f"No valid checkpoint found in output directory ({self.args.output_dir})")
        if resume_from_checkpoint:
            self._resume_tna = TNAFileConfig.load(resume_from_checkpoint)
            # the anchored values of the model given, before the checkpoint's weights replace them
            self._pre_resume_hashes = self._anchored_hashes() if self.anchor_spec.ratio > 0 else {}
            if self._resume_tna.spec != self.anchor_spec:
                raise ValueError(
                    f"checkpoint {resume_from_checkpoint} was trained with anchors {self._resume_tna.spec}, "
                    f"but this trainer has {self.anchor_spec}; resume with the checkpoint's anchor settings"
                )
        return super().train(
            resume_from_checkpoint=resume_from_checkpoint, trial=trial, ignore_keys_for_eval=ignore_keys_for_eval, **kwargs
        )

    def anchor_config(self) -> TNAFileConfig:
        """The `tna_config.json` content: the spec, the base and the manifest of the anchor values."""
        optimizer = self.anchored_optimizer
        if optimizer is not None:
            manifest = optimizer.manifest()
        else:  # saved before training: the current weights are the anchor values
            target = self.anchor_target(unwrap_model(self.model))
            manifest = {
                layout.name: manifest_entry(param, layout, self.anchor_spec)
                for layout, param in build_layouts(target, self.anchor_spec)
            }
        base_model, base_revision = base_model_info(self.accelerator.unwrap_model(self.model))
        if self._resume_tna is not None:
            base_model = self._resume_tna.base_model or base_model
            base_revision = self._resume_tna.base_revision or base_revision
        if self.frozen_whole:  # FFA-LoRA's frozen A: recorded whole, so soups and verify check them bitwise
            model = unwrap_model(self.model)
            names = checkpoint_names(model)
            params = {names[id(p)]: p for p in model.parameters() if id(p) in names}
            for layout in self.frozen_whole:
                manifest[layout.name] = manifest_entry(params[layout.name], layout, self.anchor_spec)
        shared = self._resume_tna.shared_init if self._resume_tna is not None else self.shared_init
        return TNAFileConfig(self.anchor_spec, manifest, base_model, base_revision, shared_init=shared)

    # --- saving, logging, model card ---
    def _save(self, output_dir: str | None = None, state_dict=None):
        super()._save(output_dir, state_dict=state_dict)
        if self.args.should_save:
            self.anchor_config().save(output_dir if output_dir is not None else self.args.output_dir)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        optimizer = self.anchored_optimizer
        if optimizer is not None and "loss" in logs:
            logs["anchor_drift"] = optimizer.anchor_drift()
        super().log(logs, start_time)

    def create_model_card(self, *args, tags=None, **kwargs):
        tags = [tags] if isinstance(tags, str) else list(tags or [])
        super().create_model_card(*args, tags=tags + ["hf_tna", "tna-pfn"], **kwargs)
        if self.is_world_process_zero():
            from .card import MODEL_CARD_NAME, append_anchor_section

            pushed = self.args.push_to_hub and getattr(self, "hub_model_id", None)
            append_anchor_section(Path(self.args.output_dir) / MODEL_CARD_NAME, self.anchor_spec,
                                  verify=pushed or str(self.args.output_dir))


class TNATrainer(TNATrainerMixin, Trainer):
    """`Trainer` with training-time neuron alignment (TNA-PFN): anchored entries keep their initial values.

    Takes exactly `Trainer`'s arguments, plus `anchor_spec` (see `TNATrainerMixin`); with `TNAConfig` as `args`,
    the anchors come from its `anchor_*` fields.
    """
