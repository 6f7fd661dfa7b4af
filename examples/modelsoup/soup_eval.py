"""Scoring checkpoints of the model-soup example: (loss, accuracy) on the held-out and test splits.

Every score comes from `hf_tna.merge.evaluation.Evaluator` (``evaluator(state_dict) -> (mean loss, accuracy)``),
built one of two ways (`--eval_backend`):

- "hf": over a `datasets.Dataset` of pixel values (needs `datasets` and `evaluate`; runs on CPU);
- "torch": `Evaluator.from_tensors` over the same pixel values, on any device (GPU machines without `datasets`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from soup_data import to_pixel_values

from hf_tna.merge.evaluation import Evaluator

EVAL_BACKENDS = ("auto", "hf", "torch")


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
    """An `Evaluator` of state dicts on one split, with a skeleton loaded from `base_folder`."""
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(str(base_folder))
    pixel_values = to_pixel_values(torch.as_tensor(images), model.config.image_size, model.config.num_channels)
    y = torch.as_tensor(labels, dtype=torch.long)
    backend = resolve_eval_backend(backend, device)
    if backend == "hf":
        import datasets

        dataset = datasets.Dataset.from_dict({"pixel_values": pixel_values.numpy(), "label": y.numpy()})
        return Evaluator(model, dataset, task="image-classification", batch_size=batch_size)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return Evaluator.from_tensors(
        model, {"pixel_values": pixel_values}, y, task="image-classification", batch_size=batch_size, device=device
    )


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
