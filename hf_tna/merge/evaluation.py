"""Evaluators of state dicts on a `datasets` split: mean loss and accuracy (greedy soups, loss barriers).

An `Evaluator` holds one model skeleton and the preprocessed split; calling it with a checkpoint-named
state dict loads the weights into the skeleton and returns ``(mean loss, accuracy)``. Accuracy comes
from the `evaluate` metric module bundled in `hf_tna/metrics/` (loaded by local path; no metric hub).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

METRICS_DIR = Path(__file__).parent / "metrics"
TASKS = ("image-classification", "sequence-classification")


def load_metric(name: str = "accuracy"):
    """An `evaluate` metric bundled with hf_tna (``hf_tna/metrics/<name>/<name>.py``), loaded by path."""
    import evaluate

    path = METRICS_DIR / name
    if not (path / f"{name}.py").exists():
        known = sorted(p.name for p in METRICS_DIR.iterdir() if p.is_dir() and not p.name.startswith("_"))
        raise ValueError(f"no bundled metric {name!r}; bundled: {known}")
    return evaluate.load(str(path))


def load_split(dataset, split: str = "validation", max_samples: int | None = None):
    """A `datasets.Dataset`: given one, a `load_from_disk` folder, a csv/json/parquet file, or a loader name."""
    import datasets

    if isinstance(dataset, datasets.DatasetDict):
        dataset = dataset[split]
    elif not isinstance(dataset, datasets.Dataset):
        path = Path(str(dataset))
        if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
            dataset = datasets.load_from_disk(str(path))
            dataset = dataset[split] if isinstance(dataset, datasets.DatasetDict) else dataset
        elif path.is_file():
            kind = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}.get(path.suffix)
            if kind is None:
                raise ValueError(f"cannot read dataset file {path}: use .csv, .json(l) or .parquet")
            dataset = datasets.load_dataset(kind, data_files={split: str(path)}, split=split)
        else:
            dataset = datasets.load_dataset(str(dataset), split=split)
    if max_samples is not None:
        dataset = dataset.select(range(min(max_samples, len(dataset))))
    return dataset


def detect_task(model) -> str:
    archs = " ".join(getattr(model.config, "architectures", None) or [type(model).__name__])
    if "ImageClassification" in archs:
        return "image-classification"
    if "SequenceClassification" in archs:
        return "sequence-classification"
    raise ValueError(f"cannot tell the task of {archs}; pass task= one of {TASKS}")


def load_model(path, task: str | None = None, trust_remote_code: bool = False):
    """A classification model from a checkpoint folder (its architecture picks the task when not given)."""
    from transformers import AutoConfig, AutoModelForImageClassification, AutoModelForSequenceClassification

    if task is None:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        archs = " ".join(config.architectures or [])
        task = "image-classification" if "ImageClassification" in archs else "sequence-classification"
    auto = AutoModelForImageClassification if task == "image-classification" else AutoModelForSequenceClassification
    return auto.from_pretrained(path, trust_remote_code=trust_remote_code)


def _preprocess(dataset, model, task, processor, input_column, label_column):
    """Tensors of inputs and labels, computed once."""
    labels = torch.tensor(list(dataset[label_column]), dtype=torch.long)
    if task == "image-classification":
        if "pixel_values" in dataset.column_names:
            return {"pixel_values": torch.tensor(list(dataset["pixel_values"]), dtype=torch.float32)}, labels
        if processor is None:
            raise ValueError("the dataset has no 'pixel_values': pass an image processor (processor=)")
        images = [img.convert("RGB") if hasattr(img, "convert") else img for img in list(dataset[input_column or "image"])]
        return {"pixel_values": processor(images, return_tensors="pt")["pixel_values"]}, labels
    if "input_ids" in dataset.column_names:
        inputs = {"input_ids": torch.tensor(list(dataset["input_ids"]))}
        if "attention_mask" in dataset.column_names:
            inputs["attention_mask"] = torch.tensor(list(dataset["attention_mask"]))
        return inputs, labels
    if processor is None:
        raise ValueError("the dataset has no 'input_ids': pass a tokenizer (processor=)")
    enc = processor(list(dataset[input_column or "text"]), padding=True, truncation=True, return_tensors="pt")
    return dict(enc), labels


class Evaluator:
    """``evaluator(state_dict) -> (mean loss, accuracy)`` of a classification model on one split.

    Args:
        model: the model skeleton (its architecture; weights are replaced at each call).
        dataset: a `datasets.Dataset` (or anything `load_split` reads).
        task: "image-classification" or "sequence-classification" (default: from the model's class).
        processor: tokenizer or image processor, needed when the split is not already tensorised.
        input_column / label_column: raw text or image column, label column.
        batch_size, max_samples: evaluation batch size and optional cap on samples.
        device: where the model runs and batches go (default: leave the model where it is).

    `Evaluator.from_tensors` builds one from inputs that are already tensors, without `datasets` or `evaluate`.
    """

    def __init__(self, model, dataset, task=None, processor=None, split="validation", input_column=None,
                 label_column="label", batch_size=32, max_samples=None, device=None):
        self._bind_model(model, device)
        self.task = task or detect_task(self.model)
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        dataset = load_split(dataset, split, max_samples)
        if label_column not in dataset.column_names and "labels" in dataset.column_names:
            label_column = "labels"
        if label_column not in dataset.column_names:
            raise ValueError(f"dataset has no label column {label_column!r}; columns: {dataset.column_names}")
        self.inputs, self.labels = _preprocess(dataset, self.model, self.task, processor, input_column, label_column)
        self.batch_size = batch_size
        self.metric = load_metric("accuracy")

    @classmethod
    def from_tensors(cls, model, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor, task=None, batch_size=32,
                     device=None) -> Evaluator:
        """An evaluator of model-ready inputs (e.g. ``{"pixel_values": ...}``, first dimension = examples) and their
        labels. Needs neither `datasets` nor `evaluate`: accuracy is counted (the value the bundled metric gives)."""
        n = len(labels)
        bad = [k for k, v in inputs.items() if len(v) != n]
        if bad:
            raise ValueError(f"inputs[{bad[0]!r}] holds {len(inputs[bad[0]])} examples, labels hold {n}")
        self = cls.__new__(cls)
        self._bind_model(model, device)
        self.task = task or detect_task(self.model)
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        self.inputs, self.labels = dict(inputs), torch.as_tensor(labels, dtype=torch.long)
        self.batch_size = batch_size
        self.metric = None
        return self

    def _bind_model(self, model, device) -> None:
        """The skeleton (on `device` when given) and its checkpoint-named parameters and buffers."""
        from ..anchors import checkpoint_names, unwrap_model

        self.device = torch.device(device) if device is not None else None
        self.model = unwrap_model(model).eval()
        if self.device is not None:
            self.model.to(self.device)
        names = checkpoint_names(self.model)
        self.params = {names[id(p)]: p for p in self.model.parameters() if id(p) in names}
        self.buffers = dict(self.model.named_buffers())

    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Copy checkpoint-named tensors into the model; every parameter must be given."""
        missing = sorted(set(self.params) - set(state_dict.keys()))
        if missing:
            raise ValueError(f"state dict lacks parameter {missing[0]!r} of the evaluated model ({len(missing)} missing)")
        with torch.no_grad():
            for name, param in self.params.items():
                param.copy_(state_dict[name])
            for name, buf in self.buffers.items():
                if name in state_dict:
                    buf.copy_(state_dict[name])

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        total_loss, preds = 0.0, []
        n = len(self.labels)
        for start in range(0, n, self.batch_size):
            batch = {k: v[start : start + self.batch_size] for k, v in self.inputs.items()}
            labels = self.labels[start : start + self.batch_size]
            if self.device is not None:
                batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
                labels = labels.to(self.device, non_blocking=True)
            logits = self.model(**batch).logits.float()
            total_loss += float(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
            preds.append(logits.argmax(-1))
        predictions = torch.cat(preds).cpu()
        if self.metric is None:  # from_tensors: counted
            return total_loss / n, int((predictions == self.labels.cpu()).sum()) / n
        accuracy = self.metric.compute(predictions=predictions.tolist(), references=self.labels.tolist())
        return total_loss / n, float(accuracy["accuracy"])

    def __call__(self, state_dict: Mapping[str, torch.Tensor] | None = None) -> tuple[float, float]:
        if state_dict is not None:
            self.load_state_dict(state_dict)
        return self.evaluate()


def build_evaluator(model_or_path, dataset, split="validation", task=None, trust_remote_code=False, **kwargs):
    """An `Evaluator` for a checkpoint folder (processor loaded from it when present) or a model."""
    processor = kwargs.pop("processor", None)
    if isinstance(model_or_path, torch.nn.Module):
        model = model_or_path
    else:
        model = load_model(model_or_path, task, trust_remote_code)
        if processor is None:
            processor = _load_processor(model_or_path, task or detect_task(model), trust_remote_code)
    return Evaluator(model, dataset, task=task, processor=processor, split=split, **kwargs)


def _load_processor(path, task, trust_remote_code):
    from transformers import AutoImageProcessor, AutoTokenizer

    try:
        if task == "image-classification":
            return AutoImageProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError):
        return None  # pre-tensorised splits need none; _preprocess says so otherwise


def build_score_fn(evaluator: Evaluator, metric: str = "accuracy"):
    """``score_fn(state_dict) -> float`` (higher is better) for greedy soups: accuracy or minus the loss."""
    if metric not in ("accuracy", "loss"):
        raise ValueError(f"metric must be 'accuracy' or 'loss', got {metric!r}")
    index, sign = (1, 1.0) if metric == "accuracy" else (0, -1.0)
    return lambda state_dict: sign * evaluator(state_dict)[index]
