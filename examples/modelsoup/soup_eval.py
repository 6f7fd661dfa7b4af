"""Scoring checkpoints of the model-soup example: (loss, accuracy) on the held-out and test splits.

Two evaluator back ends with one interface, ``evaluator(state_dict) -> (mean loss, accuracy)``:

- "hf": `hf_tna.merge.evaluation.Evaluator` over a `datasets.Dataset` of pixel values (needs `datasets` and
  `evaluate`; runs on CPU), the project's own evaluator;
- "torch": `TorchEvaluator` below, plain tensors on any device (GPU machines without `datasets`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from soup_data import to_pixel_values

EVAL_BACKENDS = ("auto", "hf", "torch")


class TorchEvaluator:
    """``evaluator(state_dict) -> (mean loss, accuracy)`` of a classifier on pre-computed pixel values."""

    def __init__(
        self,
        model,
        pixel_values: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int = 512,
        device: str | torch.device = "cpu",
    ):
        from hf_tna.anchors import checkpoint_names, unwrap_model

        self.device = torch.device(device)
        self.model = unwrap_model(model).to(self.device).eval()
        self.pixel_values, self.labels, self.batch_size = pixel_values, labels, batch_size
        names = checkpoint_names(self.model)
        self.params = {names[id(p)]: p for p in self.model.parameters() if id(p) in names}

    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        missing = sorted(set(self.params) - set(state_dict.keys()))
        if missing:
            raise ValueError(
                f"state dict lacks parameter {missing[0]!r} of the evaluated model ({len(missing)} missing)"
            )
        with torch.no_grad():
            for name, param in self.params.items():
                param.copy_(state_dict[name])

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        total_loss, correct, n = 0.0, 0, len(self.labels)
        for start in range(0, n, self.batch_size):
            x = self.pixel_values[start : start + self.batch_size].to(self.device, non_blocking=True)
            y = self.labels[start : start + self.batch_size].to(self.device, non_blocking=True)
            logits = self.model(pixel_values=x).logits.float()
            total_loss += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(-1) == y).sum())
        return total_loss / n, correct / n

    def __call__(self, state_dict: Mapping[str, torch.Tensor] | None = None) -> tuple[float, float]:
        if state_dict is not None:
            self.load_state_dict(state_dict)
        return self.evaluate()


def resolve_eval_backend(backend: str, device: str) -> str:
    if backend not in EVAL_BACKENDS:
        raise ValueError(f"eval backend must be one of {EVAL_BACKENDS}, got {backend!r}")
    if backend != "auto":
        return backend
    if device not in ("auto", "cpu") and torch.cuda.is_available():
        return "torch"
    try:
        import datasets  # noqa: F401
        import evaluate  # noqa: F401
    except ImportError:
        return "torch"
    return "hf" if device == "cpu" or not torch.cuda.is_available() else "torch"


def build_evaluator(
    base_folder: str | Path,
    images: np.ndarray,
    labels: np.ndarray,
    backend: str = "auto",
    device: str = "auto",
    batch_size: int = 512,
):
    """An evaluator of state dicts on one split, with a skeleton loaded from `base_folder`."""
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(str(base_folder))
    pixel_values = to_pixel_values(torch.as_tensor(images), model.config.image_size, model.config.num_channels)
    y = torch.as_tensor(labels, dtype=torch.long)
    backend = resolve_eval_backend(backend, device)
    if backend == "hf":
        import datasets

        from hf_tna.merge.evaluation import Evaluator

        dataset = datasets.Dataset.from_dict({"pixel_values": pixel_values.numpy(), "label": y.numpy()})
        return Evaluator(model, dataset, task="image-classification", batch_size=batch_size)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return TorchEvaluator(model, pixel_values, y, batch_size, device)


def save_eval_dataset(path: str | Path, base_folder: str | Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """Save a split as a `datasets` folder of model-ready `pixel_values` + `label`, the form `hf-tna soup
    --method greedy --dataset PATH` reads (so the soups can be redone from the command line)."""
    import datasets
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(base_folder))
    pixel_values = to_pixel_values(torch.as_tensor(images), config.image_size, config.num_channels)
    dataset = datasets.Dataset.from_dict({"pixel_values": pixel_values.numpy(), "label": np.asarray(labels)})
    dataset.save_to_disk(str(path))
    return Path(path)


def read_state_dict(folder: str | Path) -> dict[str, torch.Tensor]:
    from hf_tna.io import CheckpointReader

    with CheckpointReader(folder) as reader:
        return {k: reader.get(k) for k in reader.keys()}


def score_folder(folder: str | Path, evaluators: dict) -> dict[str, float]:
    """{"<split>_loss", "<split>_acc"} of a checkpoint folder for each evaluator."""
    state_dict = read_state_dict(folder)
    out = {}
    for split, evaluator in evaluators.items():
        loss, acc = evaluator(state_dict)
        out[f"{split}_loss"], out[f"{split}_acc"] = float(loss), float(acc)
    return out


def anchors_report(folder, base_folder, config=None) -> dict:
    """`verify_anchors` of a checkpoint against the base: intact flag and fraction of anchored entries intact."""
    from hf_tna.verify import verify_anchors

    report = verify_anchors(str(folder), str(base_folder), config=config)
    return {
        "intact": bool(report["intact"]),
        "fraction_intact": float(report["fraction_intact"]),
        "num_anchored": int(report["num_anchored"]),
    }
