"""Evaluation of ColD fusion bases as in the ColD fusion paper: fine-tune, and linear-probe, on each task.

- fine-tune: the base's body with a fresh head, plain fine-tuning (`train_contribution` with anchor ratio 0,
  which is bitwise plain `Trainer`), accuracy on the task's test subsample.
- linear probe: mean-pooled last hidden states of the frozen body, a logistic regression (scikit-learn) on
  the train subsample, accuracy on the test subsample.

`plan_sizes` turns a time budget into subsample sizes from a measured forward cost, so the evaluation
fits `--budget-minutes`; the sizes are recorded with the results.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hf_tna.anchors import AnchorSpec
from hf_tna.coldfuse.contributor import (
    ContributionConfig,
    TaskData,
    subsample,
    train_contribution,
)

_EMBED_CACHE: dict[tuple, np.ndarray] = {}


def weights_digest(folder) -> str:
    """sha256 of a model folder's weights (bases with equal weights share cached features)."""
    digest = hashlib.sha256()
    for path in sorted(Path(folder).glob("*.safetensors")):
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                digest.update(chunk)
    return digest.hexdigest()


@torch.no_grad()
def embed(folder, texts: list[str], max_length: int = 48, batch_size: int = 64) -> np.ndarray:
    """Mean-pooled last hidden states of the body in `folder` (cached by weights and texts)."""
    from transformers import AutoModel, AutoTokenizer

    key = (weights_digest(folder), max_length, hashlib.sha256("\x00".join(texts).encode()).hexdigest())
    if key in _EMBED_CACHE:
        return _EMBED_CACHE[key]
    body = AutoModel.from_pretrained(str(folder)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    out = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(texts[start:start + batch_size], truncation=True, max_length=max_length, padding=True,
                        return_tensors="pt")
        hidden = body(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        out.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).numpy())
    _EMBED_CACHE[key] = np.concatenate(out)
    return _EMBED_CACHE[key]


def split_rows(task: TaskData, n_train: int, n_test: int, seed: int):
    return subsample(task.train, n_train, seed), subsample(task.eval, n_test, 10_000 + seed)


def probe_accuracy(folder, task: TaskData, n_train: int, n_test: int, seed: int, max_length: int = 48) -> float:
    """Linear-probe accuracy of the frozen body on `task` (seeded subsamples)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train, test = split_rows(task, n_train, n_test, seed)
    x_train = embed(folder, [r["text"] for r in train], max_length)
    x_test = embed(folder, [r["text"] for r in test], max_length)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.5, random_state=seed))
    clf.fit(x_train, [r["label"] for r in train])
    return float(clf.score(x_test, [r["label"] for r in test]))


def finetune_accuracy(folder, task: TaskData, n_train: int, n_test: int, steps: int, seed: int,
                      max_length: int = 48, learning_rate: float = 1e-4, batch_size: int = 16) -> float:
    """Accuracy after plain fine-tuning (body + fresh head) of the base in `folder` on `task`."""
    train, test = split_rows(task, n_train, n_test, seed)
    sub = TaskData(task.name, train, test, task.labels)
    training = ContributionConfig(learning_rate=learning_rate, max_steps=steps, per_device_train_batch_size=batch_size,
                                  per_device_eval_batch_size=batch_size, max_length=max_length, seed=seed,
                                  warmup_steps=0.1)  # a float below 1: a fraction of the steps
    with tempfile.TemporaryDirectory(prefix="coldfuse-eval-") as tmp:
        result = train_contribution(folder, sub, AnchorSpec(ratio=0.0), tmp, training)
    return float(result["metrics"]["eval_accuracy"])


@torch.no_grad()
def forward_cost(folder, max_length: int = 48, n: int = 64) -> float:
    """Seconds per example of one forward pass of the body (measured, after a warm-up)."""
    from transformers import AutoModel, AutoTokenizer

    body = AutoModel.from_pretrained(str(folder)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    enc = tokenizer(["a reasonably long sentence to measure the speed of the model " * 4] * 16, truncation=True,
                    max_length=max_length, padding="max_length", return_tensors="pt")
    body(**enc)
    start = time.perf_counter()
    for _ in range(n // 16):
        body(**enc)
    return (time.perf_counter() - start) / n


def plan_sizes(budget_s: float, fwd_s: float, probe_models: int, finetune_models: int, tasks: int,
               batch_size: int = 16, overhead_s: float = 4.0, min_test: int = 32, max_test: int = 1000) -> dict:
    """Subsample sizes that fit `budget_s`: probes cost ~(n_train + n_test) forwards, fine-tuning ~3 forwards per
    training example plus the test forwards and a fixed start-up overhead. n_train = 2 n_test."""
    budget = max(budget_s - finetune_models * tasks * overhead_s, 0.0)
    per_test = fwd_s * tasks * (probe_models * 3 + finetune_models * 7)
    n_test = int(max(min_test, min(max_test, budget / per_test if per_test else max_test)))
    n_train = 2 * n_test
    steps = max(2, n_train // batch_size)
    return {"n_test": n_test, "n_train": n_train, "finetune_steps": steps, "finetune_batch_size": batch_size,
            "forward_s_per_example": fwd_s, "budget_s": budget_s, "probe_models": probe_models,
            "finetune_models": finetune_models}
