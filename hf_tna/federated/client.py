"""Client side of FedPFN / FedPNU on Flower: local training with `AnchoredOptimizer` and compact uploads.

A `ClientApp` train handler is three calls (or `run_train_message`, which makes them):

    spec = read_train_config(msg.content["config"])          # the round's anchors, or None
    load_arrays(model, msg.content["arrays"])                  # the global model: anchors take these values
    stats = run_local_training(model, loader, spec, ...)       # plain torch loop, AnchoredOptimizer(SGD)
    return build_train_reply(msg, model, spec, stats)          # free entries only + "num-examples"

Both methods use the same client code: FedPFN sends the same spec every round (and the global anchored
entries are the initial values), FedPNU sends `spec.for_round(r)`. The anchors are whatever the global model
holds for the round's mask, so no anchor values travel in either direction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from ..anchors import AnchorSpec
from ..optimizer import AnchoredOptimizer
from .config import FederatedArguments
from .server import (
    CONFIG_COMPACT_KEY,
    TRAIN_CONFIG_KEYS,
    anchor_layouts,
    anchor_masks,
    compact_arrays,
    read_train_config,
)

__all__ = [
    "build_train_reply",
    "default_loss",
    "load_arrays",
    "read_settings",
    "read_train_config",
    "run_local_training",
    "run_train_message",
    "train_config",
]


def default_loss(model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, int]:
    """Cross-entropy for `(inputs, labels)` batches, or a model output's `.loss` for dict batches
    (Hugging Face models given `labels`). Returns (loss, number of examples in the batch)."""
    if isinstance(batch, dict):
        out = model(**batch)
        n = len(next(iter(batch.values())))
        return out.loss, n
    inputs, labels = batch[0], batch[1]
    return F.cross_entropy(model(inputs), labels), len(labels)


def train_config(msg: Message) -> ConfigRecord:
    """The ConfigRecord of a train message (the first one; strategies name it "config" by default)."""
    return next(iter(msg.content.config_records.values()), ConfigRecord())


def read_settings(msg: Message, settings_class: type[FederatedArguments], run_config: dict | None = None):
    """An app's settings (a `FederatedArguments` subclass) from a train message: the entries of its train
    ConfigRecord (where a server that sends `settings.to_run_config()` puts them), `run_config` filling the gaps.
    The keys hf_tna's wrapper and Flower's strategies add are skipped; any other unknown key is refused."""
    return settings_class.from_run_config({**(run_config or {}), **dict(train_config(msg))}, ignore=TRAIN_CONFIG_KEYS)


def load_arrays(model: torch.nn.Module, arrays: ArrayRecord) -> None:
    """Load the global ArrayRecord into `model` (strict: every key must match)."""
    state = {k: torch.from_numpy(np.array(a.numpy(), copy=True)) for k, a in arrays.items()}
    model.load_state_dict(state, strict=True)


def run_local_training(
    model: torch.nn.Module,
    batches: Iterable,
    spec: AnchorSpec | None,
    *,
    epochs: int = 1,
    lr: float = 0.01,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    proximal_mu: float = 0.0,
    max_grad_norm: float | None = None,
    loss_fn: Callable[[torch.nn.Module, Any], tuple[torch.Tensor, int]] = default_loss,
    make_optimizer: Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer] | None = None,
) -> dict:
    """Train `model` in place for `epochs` passes over `batches` with anchors per `spec`.

    The anchors take the model's current values (load the global arrays first). `spec=None` or ratio 0
    trains plainly. The optimizer is `SGD(lr, momentum, weight_decay)` unless `make_optimizer(params)` builds
    another (a fresh one per call: local optimizer state does not carry across rounds). `proximal_mu > 0` adds FedProx's `mu/2 * ||w - w_global||^2` (zero on anchored entries).
    Returns `{"num-examples": examples per epoch, "train-loss": mean loss, "anchor-drift": max drift}`.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    params = [p for p in model.parameters() if p.requires_grad]
    if make_optimizer is None:
        inner = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    else:
        inner = make_optimizer(params)
    anchored = spec is not None and spec.ratio > 0
    optimizer = AnchoredOptimizer(inner, model, spec) if anchored else inner
    start = [p.detach().clone() for p in params] if proximal_mu > 0 else None
    model.train()
    total_loss, steps, examples = 0.0, 0, 0
    for epoch in range(epochs):
        for batch in batches:
            optimizer.zero_grad()
            loss, n = loss_fn(model, batch)
            if start is not None:
                loss = loss + proximal_mu / 2 * sum(((p - s) ** 2).sum() for p, s in zip(params, start))
            loss.backward()
            if anchored:
                optimizer.mask_gradients()
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            optimizer.step()
            total_loss += float(loss.detach())
            steps += 1
            examples += n if epoch == 0 else 0
    if steps == 0:
        raise ValueError("the client's data loader yielded no batch; give every client at least one example")
    drift = optimizer.anchor_drift() if anchored else 0.0
    return {"num-examples": examples, "train-loss": total_loss / steps, "anchor-drift": drift}


def build_train_reply(
    msg: Message, model: torch.nn.Module, spec: AnchorSpec | None, stats: dict, compact: bool | None = None
) -> Message:
    """The reply to a train message: the model's arrays (free entries only when anchored and the server
    asked for compact uploads) and a MetricRecord with `num-examples` (the FedAvg weight) and `stats`."""
    state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    config = train_config(msg)
    if compact is None:
        compact = bool(config.get(CONFIG_COMPACT_KEY, False))
    if spec is not None and spec.ratio > 0 and compact:
        arrays = compact_arrays(state, anchor_masks(anchor_layouts(model, spec), spec))
    else:
        arrays = ArrayRecord({k: Array(v) for k, v in state.items()})
    metrics = MetricRecord({k: v for k, v in stats.items() if isinstance(v, (int, float))})
    return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)


def run_train_message(msg: Message, model: torch.nn.Module, batches: Iterable, **train_kwargs) -> Message:
    """Everything a `@app.train()` handler does: read the anchors, load the global model, train, reply.

    `train_kwargs` go to `run_local_training`; FedProx's `proximal-mu` is read from the config.
    """
    config = train_config(msg)
    spec = read_train_config(config)
    arrays = next(iter(msg.content.array_records.values()))
    load_arrays(model, arrays)
    train_kwargs.setdefault("proximal_mu", float(config.get("proximal-mu", 0.0)))
    stats = run_local_training(model, batches, spec, **train_kwargs)
    return build_train_reply(msg, model, spec, stats)
