"""Evaluators of state dicts on a `datasets` split: mean loss and accuracy (greedy soups, loss barriers).

An `Evaluator` holds one model skeleton and the preprocessed split; calling it with a checkpoint-named
state dict loads the weights into the skeleton and returns ``(mean loss, accuracy)``.

- Classifiers (image and sequence classification): mean cross-entropy per example and accuracy, from the
  `evaluate` metric module bundled in `hf_tna/metrics/` (loaded by local path; no metric hub).
- Causal LMs ("causal-lm"): the token-weighted mean cross-entropy over every label token that is neither padding
  nor masked (-100), each token predicted from the ones before it (labels shifted as the models do), and the
  next-token accuracy over the same tokens; ``perplexity = exp(loss)`` (`Evaluator.scores`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch

METRICS_DIR = Path(__file__).parent / "metrics"
TASKS = ("image-classification", "sequence-classification", "causal-lm")
IGNORE_INDEX = -100  # label of tokens not scored (padding, masked prompt tokens), as in transformers
DATA_FILES = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".txt": "text"}


def load_metric(name: str = "accuracy"):
    """An `evaluate` metric bundled with hf_tna (``hf_tna/metrics/<name>/<name>.py``), loaded by path."""
    import evaluate

    path = METRICS_DIR / name
    if not (path / f"{name}.py").exists():
        known = sorted(p.name for p in METRICS_DIR.iterdir() if p.is_dir() and not p.name.startswith("_"))
        raise ValueError(f"no bundled metric {name!r}; bundled: {known}")
    return evaluate.load(str(path))


def load_split(dataset, split: str = "validation", max_samples: int | None = None):
    """A `datasets.Dataset`: given one, a `load_from_disk` folder, a csv/json(l)/parquet file, a text file (one
    example per line, column "text"), or a loader name."""
    import datasets

    if isinstance(dataset, datasets.DatasetDict):
        dataset = dataset[split]
    elif not isinstance(dataset, datasets.Dataset):
        path = Path(str(dataset))
        if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
            dataset = datasets.load_from_disk(str(path))
            dataset = dataset[split] if isinstance(dataset, datasets.DatasetDict) else dataset
        elif path.is_file():
            kind = DATA_FILES.get(path.suffix)
            if kind is None:
                raise ValueError(f"cannot read dataset file {path}: use .csv, .json(l), .parquet or .txt")
            dataset = datasets.load_dataset(kind, data_files={split: str(path)}, split=split)
        else:
            dataset = datasets.load_dataset(str(dataset), split=split)
    if max_samples is not None:
        dataset = dataset.select(range(min(max_samples, len(dataset))))
    return dataset


def task_of(architectures) -> str | None:
    """The task an architecture name (``LlamaForCausalLM``, ``ViTForImageClassification``, ...) is evaluated on."""
    archs = " ".join(architectures)
    if "ImageClassification" in archs:
        return "image-classification"
    if "SequenceClassification" in archs:
        return "sequence-classification"
    if "CausalLM" in archs or "LMHeadModel" in archs:
        return "causal-lm"
    return None


def detect_task(model) -> str:
    archs = getattr(model.config, "architectures", None) or [type(model).__name__]
    task = task_of(archs)
    if task is None:
        raise ValueError(f"cannot tell the task of {' '.join(archs)}; pass task= one of {TASKS}")
    return task


def load_model(path, task: str | None = None, trust_remote_code: bool = False):
    """A classification model or a causal LM from a checkpoint folder (its architecture picks the task when not
    given; sequence classification when it tells nothing)."""
    import transformers

    if task is None:
        config = transformers.AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        task = task_of(config.architectures or []) or "sequence-classification"
    auto = {"image-classification": transformers.AutoModelForImageClassification,
            "sequence-classification": transformers.AutoModelForSequenceClassification,
            "causal-lm": transformers.AutoModelForCausalLM}[task]
    return auto.from_pretrained(path, trust_remote_code=trust_remote_code)


def _causal_lm_inputs(dataset, processor, text_column, max_length, pad_token_id):
    """Right-padded ``input_ids`` / ``attention_mask`` and labels (-100 on padding), sorted longest first so that
    batches trimmed to their longest example hold little padding. A pre-tokenised split (``input_ids``, optional
    ``attention_mask`` and ``labels``, e.g. with masked prompts) keeps its attended tokens and their labels; text is
    tokenised by `processor` (its special tokens included). Both are truncated to `max_length` tokens when given."""
    columns = dataset.column_names
    if "input_ids" in columns:
        ids = [list(x) for x in dataset["input_ids"]]
        labels = [list(x) for x in dataset["labels"]] if "labels" in columns else None
        if "attention_mask" in columns:  # padded rows (either side): keep the attended tokens
            keep = [[m != 0 for m in row] for row in dataset["attention_mask"]]
            ids = [[t for t, k in zip(row, kept) if k] for row, kept in zip(ids, keep)]
            if labels is not None:
                labels = [[t for t, k in zip(row, kept) if k] for row, kept in zip(labels, keep)]
        masks = None
    else:
        column = text_column or "text"
        if column not in columns:
            raise ValueError(f"dataset has no text column {column!r} (columns: {columns}); pass text_column=")
        if processor is None:
            raise ValueError("the dataset has no 'input_ids': pass a tokenizer (processor=)")
        enc = processor(list(dataset[column]), truncation=max_length is not None, max_length=max_length)
        ids, masks, labels = enc["input_ids"], enc.get("attention_mask"), None
    if max_length is not None:
        ids, masks, labels = ([x[:max_length] for x in rows] if rows is not None else None
                              for rows in (ids, masks, labels))
    n, width = len(ids), max((len(x) for x in ids), default=0)
    input_ids = torch.full((n, width), pad_token_id, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    targets = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
    for i, row in enumerate(ids):
        length = len(row)
        input_ids[i, :length] = torch.tensor(row, dtype=torch.long)
        attention[i, :length] = torch.tensor(masks[i], dtype=torch.long) if masks is not None else 1
        targets[i, :length] = torch.tensor(labels[i], dtype=torch.long) if labels is not None else input_ids[i, :length]
    targets[attention == 0] = IGNORE_INDEX
    if int((targets[:, 1:] != IGNORE_INDEX).sum()) == 0:
        raise ValueError(f"the split has no token to predict ({n} examples, none with a scored token after the "
                         "first): check the text column and max_length")
    order = sorted(range(n), key=lambda i: (-len(ids[i]), i))
    return {"input_ids": input_ids[order], "attention_mask": attention[order]}, targets[order]


def _preprocess(dataset, model, task, processor, input_column, label_column, max_length=None):
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
    enc = processor(list(dataset[input_column or "text"]), padding=True, truncation=True, max_length=max_length,
                    return_tensors="pt")
    return dict(enc), labels


def perplexity(loss: float) -> float:
    """exp(loss), infinite past float range."""
    return math.exp(loss) if loss < 709.0 else math.inf


class Evaluator:
    """``evaluator(state_dict) -> (mean loss, accuracy)`` of a classifier or a causal LM on one split.

    Args:
        model: the model skeleton (its architecture; weights are replaced at each call).
        dataset: a `datasets.Dataset` (or anything `load_split` reads).
        task: "image-classification", "sequence-classification" or "causal-lm" (default: from the model's class).
        processor: tokenizer or image processor, needed when the split is not already tensorised.
        input_column / label_column: raw text or image column (default: text / image), label column (classifiers;
            a causal LM's labels are its tokens, or the `labels` column of a pre-tokenised split).
        batch_size, max_samples: evaluation batch size and optional cap on samples.
        max_length: truncate texts to this many tokens (default: the tokenizer's limit for classifiers, none for LMs).
        device: where the model runs and batches go (default: leave the model where it is).

    For a causal LM the loss is the token-weighted mean cross-entropy over the scored tokens (not padding, not
    -100) and the accuracy is next-token accuracy; `scores()` adds the perplexity and the token count.
    `Evaluator.from_tensors` builds one from inputs that are already tensors, without `datasets` or `evaluate`.
    """

    def __init__(self, model, dataset, task=None, processor=None, split="validation", input_column=None,
                 label_column="label", batch_size=32, max_samples=None, device=None, max_length=None):
        self._bind_model(model, device)
        self.task = task or detect_task(self.model)
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if max_length is not None and (type(max_length) is not int or max_length < 2):
            raise ValueError(f"max_length must be an int >= 2 (tokens), got {max_length!r}")
        dataset = load_split(dataset, split, max_samples)
        self.batch_size = batch_size
        if self.task == "causal-lm":
            pad = getattr(processor, "pad_token_id", None)
            self.inputs, self.labels = _causal_lm_inputs(dataset, processor, input_column, max_length,
                                                         0 if pad is None else pad)
            self.metric = None  # next-token accuracy is counted
            return
        if label_column not in dataset.column_names and "labels" in dataset.column_names:
            label_column = "labels"
        if label_column not in dataset.column_names:
            raise ValueError(f"dataset has no label column {label_column!r}; columns: {dataset.column_names}")
        self.inputs, self.labels = _preprocess(dataset, self.model, self.task, processor, input_column, label_column,
                                               max_length)
        self.metric = load_metric("accuracy")

    @classmethod
    def from_tensors(cls, model, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor, task=None, batch_size=32,
                     device=None) -> Evaluator:
        """An evaluator of model-ready inputs (e.g. ``{"pixel_values": ...}``, first dimension = examples) and their
        labels (a causal LM's: token ids per position, -100 where not scored; right padding). Needs neither
        `datasets` nor `evaluate`: accuracy is counted (the value the bundled metric gives)."""
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
        if self.task == "causal-lm" and "attention_mask" in self.inputs:
            self.labels = self.labels.masked_fill(torch.as_tensor(self.inputs["attention_mask"]) == 0, IGNORE_INDEX)
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

    def _batches(self):
        n = len(self.labels)
        for start in range(0, n, self.batch_size):
            batch = {k: v[start : start + self.batch_size] for k, v in self.inputs.items()}
            labels = self.labels[start : start + self.batch_size]
            if self.task == "causal-lm" and "attention_mask" in batch:  # trim to the batch's last attended column
                columns = batch["attention_mask"].any(0).nonzero()
                width = int(columns.max()) + 1 if len(columns) else 1
                batch, labels = {k: v[:, :width] for k, v in batch.items()}, labels[:, :width]
            if self.device is not None:
                batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
                labels = labels.to(self.device, non_blocking=True)
            yield batch, labels

    @torch.no_grad()
    def _evaluate_causal_lm(self) -> dict:
        total_loss, correct, tokens = 0.0, 0, 0
        for batch, labels in self._batches():
            logits = self.model(**batch, use_cache=False).logits[:, :-1].float()
            targets = labels[:, 1:]  # position t predicts token t + 1
            scored = targets != IGNORE_INDEX
            total_loss += float(torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"))
            correct += int(((logits.argmax(-1) == targets) & scored).sum())
            tokens += int(scored.sum())
        if tokens == 0:
            raise ValueError("no label token to score: every label is padding or -100")
        loss = total_loss / tokens
        return {"loss": loss, "accuracy": correct / tokens, "perplexity": perplexity(loss), "tokens": tokens,
                "examples": len(self.labels)}

    def scores(self, state_dict: Mapping[str, torch.Tensor] | None = None) -> dict:
        """``{"loss", "accuracy", "examples"}``, and for a causal LM ``"perplexity"`` (exp of the loss) and
        ``"tokens"`` (the scored ones), of `state_dict` (default: the weights the skeleton holds)."""
        if state_dict is not None:
            self.load_state_dict(state_dict)
        if self.task == "causal-lm":
            return self._evaluate_causal_lm()
        loss, accuracy = self._evaluate_classifier()
        return {"loss": loss, "accuracy": accuracy, "examples": len(self.labels)}

    def evaluate(self) -> tuple[float, float]:
        """(mean loss, accuracy) of the weights the skeleton holds."""
        if self.task == "causal-lm":
            scores = self._evaluate_causal_lm()
            return scores["loss"], scores["accuracy"]
        return self._evaluate_classifier()

    @torch.no_grad()
    def _evaluate_classifier(self) -> tuple[float, float]:
        total_loss, preds = 0.0, []
        n = len(self.labels)
        for batch, labels in self._batches():
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


def evaluator_from_arguments(folder, evaluation, trust_remote_code: bool = False) -> Evaluator:
    """The `Evaluator` an `EvaluationArguments` (or a `SoupConfig`) describes, with the model class and tokenizer of
    the checkpoint `folder`."""
    return build_evaluator(folder, evaluation.dataset, split=evaluation.split, task=evaluation.task,
                           trust_remote_code=trust_remote_code, batch_size=evaluation.batch_size,
                           max_samples=evaluation.max_samples, input_column=evaluation.input_column,
                           label_column=evaluation.label_column, max_length=evaluation.max_length)


def _load_processor(path, task, trust_remote_code):
    from transformers import AutoImageProcessor, AutoTokenizer

    try:
        if task == "image-classification":
            return AutoImageProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError):
        return None  # pre-tensorised splits need none; _preprocess says so otherwise


def build_score_fn(evaluator: Evaluator, metric: str = "accuracy"):
    """``score_fn(state_dict) -> float`` (higher is better) for greedy soups: accuracy (a causal LM's next-token
    accuracy) or minus the loss (for a causal LM, the lowest perplexity wins)."""
    if metric not in ("accuracy", "loss"):
        raise ValueError(f"metric must be 'accuracy' or 'loss', got {metric!r}")
    index, sign = (1, 1.0) if metric == "accuracy" else (0, -1.0)
    return lambda state_dict: sign * evaluator(state_dict)[index]
