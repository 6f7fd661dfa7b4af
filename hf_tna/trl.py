"""Anchored TRL trainers: `TNASFTTrainer` / `TNASFTConfig` and `TNADPOTrainer` / `TNADPOConfig`.

TRL users get anchors by changing one class; everything else is TRL's (datasets, collators, `peft_config`,
reference models, the model card TRL writes at every checkpoint, to which the anchor section is appended):

    from hf_tna.trl import TNASFTConfig, TNASFTTrainer

    args = TNASFTConfig(output_dir="out", anchor_ratio=0.4, anchor_seed=0)
    trainer = TNASFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    trainer.train()

Needs `trl` (`pip install hf_tna[trl]`; it pulls torch, so install it with your torch pinned).
Any other TRL trainer works the same way: `class TNAGRPOTrainer(TNATrainerMixin, GRPOTrainer): ...`, with a
config `@dataclass class TNAGRPOConfig(AnchorTrainingArguments, GRPOConfig)`.
"""

from __future__ import annotations

from dataclasses import dataclass

try:
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError("hf_tna.trl needs TRL: `pip install hf_tna[trl]` (pin your torch version first)") from err

from .arguments import AnchorTrainingArguments
from .tna_trainer import TNATrainerMixin


@dataclass
class TNASFTConfig(AnchorTrainingArguments, SFTConfig):
    """TRL's `SFTConfig` with the anchor settings of `hf_tna.AnchorArguments` (`anchor_ratio`, `anchor_seed`,
    `anchor_granularity`, `anchor_include`, `anchor_exclude`, `anchor_round`), parsable by `HfArgumentParser`."""


@dataclass
class TNADPOConfig(AnchorTrainingArguments, DPOConfig):
    """TRL's `DPOConfig` with the anchor settings of `hf_tna.AnchorArguments`."""


class TNASFTTrainer(TNATrainerMixin, SFTTrainer):
    """TRL's `SFTTrainer` with fixed neuron anchors (see `hf_tna.TNATrainerMixin`). With `peft_config`, the
    adapter weights TRL adds are the anchored parameters."""


class TNADPOTrainer(TNATrainerMixin, DPOTrainer):
    """TRL's `DPOTrainer` with fixed neuron anchors on the policy (the reference model is never trained). Pass
    `ref_model`, or a model loaded from a folder or Hub id, from which TRL loads its reference copy."""

    def __init__(self, model, ref_model=None, *args, peft_config=None, **kwargs):
        source = getattr(getattr(model, "config", None), "_name_or_path", None)
        if ref_model is None and peft_config is None and not isinstance(model, str) and not source:
            raise ValueError(
                "TNADPOTrainer: the model was built from a config, so TRL has no folder or Hub id to load the "
                "reference model from; pass ref_model= (e.g. a copy of the model before training), or load the "
                "model with from_pretrained"
            )
        super().__init__(model, ref_model, *args, peft_config=peft_config, **kwargs)


__all__ = ["TNADPOConfig", "TNADPOTrainer", "TNASFTConfig", "TNASFTTrainer"]
