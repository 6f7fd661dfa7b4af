"""hf_tna: training-time neuron alignment with fixed neuron anchors (TNA-PFN) for Hugging Face.

Swap `transformers.Trainer` for `TNATrainer` (and `TrainingArguments` for `TNAConfig`) to fine-tune models
that will be averaged later: model soups, ColD fusion, federated learning.
"""

import logging as _logging

from ._version import __version__
from .anchors import AnchorSelection, AnchorSpec, anchor_mask
from .arguments import AnchorArguments, AnchorTrainingArguments
from .manifest import CONFIG_NAME, TNAFileConfig
from .optimizer import AnchoredOptimizer, create_anchored_optimizer
from .zero_copy import ZeroCopyAdam, ZeroCopyAdamW, ZeroCopySGD

# hf_tna's loggers (`hf_tna.*`) hang under transformers' library logger, so they follow its verbosity
# (`transformers.logging.set_verbosity_info()`, `TrainingArguments(log_level=...)`) and its handler.
_logging.getLogger("hf_tna").parent = _logging.getLogger("transformers")

def __getattr__(name):  # transformers-dependent pieces are imported on first use
    if name in ("TNATrainer", "TNATrainerMixin"):
        from .tna_trainer import TNATrainer, TNATrainerMixin

        return {"TNATrainer": TNATrainer, "TNATrainerMixin": TNATrainerMixin}[name]
    if name in ("TNACallback", "anchored_optimizer_factory"):
        from .callback import TNACallback, anchored_optimizer_factory

        return {"TNACallback": TNACallback, "anchored_optimizer_factory": anchored_optimizer_factory}[name]
    if name == "TNAConfig":
        from .tna_config import TNAConfig

        return TNAConfig
    if name == "verify_anchors":
        from .verify import verify_anchors

        return verify_anchors
    raise AttributeError(f"module 'hf_tna' has no attribute {name!r}")


__all__ = [
    "__version__",
    "CONFIG_NAME",
    "AnchorArguments",
    "AnchorSelection",
    "AnchorTrainingArguments",
    "AnchorSpec",
    "AnchoredOptimizer",
    "TNAConfig",
    "TNAFileConfig",
    "TNACallback",
    "TNATrainer",
    "TNATrainerMixin",
    "ZeroCopyAdam",
    "ZeroCopyAdamW",
    "ZeroCopySGD",
    "anchor_mask",
    "anchored_optimizer_factory",
    "create_anchored_optimizer",
    "verify_anchors",
]
