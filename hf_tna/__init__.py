"""hf_tna: training-time neuron alignment with fixed neuron anchors (TNA-PFN) for Hugging Face.

Swap `transformers.Trainer` for `TNATrainer` (and `TrainingArguments` for `TNAConfig`) to fine-tune models
that will be averaged later: model soups, ColD fusion, federated learning.
"""

__version__ = "0.1.0"

from .anchors import CONFIG_NAME, AnchorSpec, TNAFileConfig, anchor_mask  # noqa: E402
from .optimizer import AnchoredOptimizer, create_anchored_optimizer  # noqa: E402


def __getattr__(name):  # transformers-dependent pieces are imported on first use
    if name == "TNATrainer":
        from .tna_trainer import TNATrainer

        return TNATrainer
    if name == "TNAConfig":
        from .tna_config import TNAConfig

        return TNAConfig
    if name == "verify_anchors":
        from .verify import verify_anchors

        return verify_anchors
    raise AttributeError(f"module 'hf_tna' has no attribute {name!r}")


__all__ = [
    "CONFIG_NAME",
    "AnchorSpec",
    "AnchoredOptimizer",
    "TNAConfig",
    "TNAFileConfig",
    "TNATrainer",
    "anchor_mask",
    "create_anchored_optimizer",
    "verify_anchors",
]
