"""Federated TNA-PFN on Flower: FedPFN and FedPNU as a wrapper around any Flower server strategy.

Two methods (Li et al., arXiv 2402.01342, section on federated learning):

- **FedPFN** (partially fixed neurons): the server draws one anchor mask from `spec` (its seed) at the start;
  every client, every round, trains with those entries fixed, so the anchored entries keep their *initial*
  global values for the whole run.
- **FedPNU** (partial neuron updating): each round `r` the server draws a fresh mask from
  `spec.for_round(r)`; every client keeps the anchored entries at the *current round's* global values
  during local training. Across rounds every weight gets updated.

`AnchoredStrategy(strategy, spec, layouts, mode=...)` wraps any `flwr.serverapp.strategy.Strategy` (FedAvg,
FedAvgM, FedAdam, FedProx, ...). It adds the anchor spec and round to each round's train `ConfigRecord`
and passes everything else to the inner strategy. Clients (`hf_tna.federated.client`) train with
`AnchoredOptimizer` and upload only the non-anchored entries; the server, which knows the anchors, scatters
them back from the round's global model before the inner strategy aggregates. Exactness:

- the expanded replies are handed to the inner strategy in float64 (cast back to the model dtype after
  aggregation), so a weighted average of entries that are equal in every reply is bitwise that entry;
- FedPFN additionally writes the initial anchor values back after aggregation, so the global anchored
  entries stay bitwise at their initial values under *any* server rule (momentum, Adam, ...);
- FedPNU leaves the server rule alone: under FedAvg/FedProx the round's anchored entries come out bitwise
  unchanged, but a server optimiser with state (FedAvgM momentum, FedAdam moments) keeps moving entries
  that were free in earlier rounds, also in rounds where they are anchored. That is the composition of
  FedPNU with a server optimiser, not a leak: the clients' contribution to anchored entries is exactly zero.

With `spec.ratio == 0` the wrapper is a pass-through: the same messages, the same aggregate, bitwise.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from logging import INFO, WARNING

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from flwr.supercore import log

from ..anchors import (
    AnchorSpec,
    TensorLayout,
    anchor_mask,
    build_layouts,
    unwrap_model,
)

MODES = ("fedpfn", "fedpnu")
# ConfigRecord keys the wrapper adds to each round's train configuration.
CONFIG_SPEC_KEY = "tna-anchor-spec"  # JSON of AnchorSpec.to_dict(), round included
CONFIG_MODE_KEY = "tna-mode"
CONFIG_ROUND_KEY = "tna-round"
CONFIG_COMPACT_KEY = "tna-compact-upload"
# Train ConfigRecord keys that are no app setting: the wrapper's and those Flower's strategies add (FedAvg and its
# subclasses: server-round; FedProx: proximal-mu). `FederatedArguments.from_run_config(config, ignore=...)` skips them.
TRAIN_CONFIG_KEYS = (CONFIG_SPEC_KEY, CONFIG_MODE_KEY, CONFIG_ROUND_KEY, CONFIG_COMPACT_KEY, "server-round", "proximal-mu")
# Keys the wrapper adds to the aggregated train MetricRecord (ratio > 0 only).
METRIC_UPLOAD_BYTES = "tna-upload-bytes"
METRIC_FULL_BYTES = "tna-upload-bytes-full"


# --------------------------------------------------------------------------------------------------
# Pure helpers shared by server and clients
# --------------------------------------------------------------------------------------------------
def anchor_layouts(model: torch.nn.Module, spec: AnchorSpec) -> dict[str, TensorLayout]:
    """Layouts of the anchored tensors of `model`, keyed by their `state_dict` key (the ArrayRecord key).

    The layout's `name`/`key` stay the checkpoint names the masks are drawn from, so server and clients
    derive identical masks. Build it once on the server (from the model the initial arrays come from).
    """
    model = unwrap_model(model)
    by_id = {id(p): name for name, p in model.named_parameters()}
    return {by_id[id(param)]: layout for layout, param in build_layouts(model, spec)}


def round_spec(spec: AnchorSpec, mode: str, server_round: int) -> AnchorSpec:
    """The spec clients use in `server_round`: fixed for FedPFN, `spec.for_round(r)` for FedPNU."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return spec if mode == "fedpfn" else spec.for_round(int(server_round))


def anchor_masks(layouts: dict[str, TensorLayout], spec: AnchorSpec) -> dict[str, np.ndarray]:
    """Boolean numpy mask (True = anchored) per ArrayRecord key."""
    return {key: anchor_mask(layout, spec).numpy() for key, layout in layouts.items()}


def train_config_entries(spec: AnchorSpec, mode: str, server_round: int, compact: bool = True) -> dict:
    """The ConfigRecord entries that tell clients how to anchor this round."""
    rspec = round_spec(spec, mode, server_round)
    return {
        CONFIG_SPEC_KEY: json.dumps(rspec.to_dict(), sort_keys=True),
        CONFIG_MODE_KEY: mode,
        CONFIG_ROUND_KEY: int(server_round),
        CONFIG_COMPACT_KEY: bool(compact),
    }


def read_train_config(config: ConfigRecord | dict) -> AnchorSpec | None:
    """The round's AnchorSpec from a train ConfigRecord, or None when the server sent no anchors."""
    if CONFIG_SPEC_KEY not in config:
        return None
    try:
        return AnchorSpec.from_dict(json.loads(str(config[CONFIG_SPEC_KEY])))
    except (json.JSONDecodeError, TypeError) as err:
        raise ValueError(f"train config entry {CONFIG_SPEC_KEY!r} is not an AnchorSpec JSON: {err}") from None


def compact_arrays(arrays: dict[str, np.ndarray], masks: dict[str, np.ndarray]) -> ArrayRecord:
    """Client upload: the free (non-anchored) entries of each masked tensor as a flat 1-D array, in C order;
    tensors without a mask are sent whole."""
    out = ArrayRecord()
    for key, arr in arrays.items():
        arr = np.asarray(arr)
        out[key] = Array(np.ascontiguousarray(arr[~masks[key]]) if key in masks else arr)
    return out


def expand_array(key: str, sent: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Server side: rebuild a full tensor from a client's upload; anchored entries come from `reference`.

    `sent` is either the compact 1-D free entries or a full tensor (whose anchored entries are ignored).
    """
    free = ~mask
    out = reference.copy()
    if sent.shape == reference.shape:
        out[free] = sent[free]
    elif sent.ndim == 1 and sent.size == int(free.sum()):
        out[free] = sent
    else:
        raise ValueError(
            f"client upload for tensor {key!r} has shape {sent.shape}; expected the full shape "
            f"{reference.shape} or the {int(free.sum())} free entries (1-D). Do clients and server use the "
            "same model and anchor spec?"
        )
    return out


def record_nbytes(record: ArrayRecord) -> int:
    """Serialized payload bytes of an ArrayRecord (what Flower ships: npy buffers)."""
    return sum(len(a.data) for a in record.values())


def _upcast(arr: np.ndarray) -> np.ndarray:
    return arr.astype(np.float64) if np.issubdtype(arr.dtype, np.floating) else arr


# --------------------------------------------------------------------------------------------------
# The strategy wrapper
# --------------------------------------------------------------------------------------------------
class AnchoredStrategy(Strategy):
    """FedPFN / FedPNU around any Flower Message-API server strategy.

    Args:
        strategy: the inner `flwr.serverapp.strategy.Strategy` (FedAvg, FedAvgM, FedAdam, FedProx, ...).
        spec: the `AnchorSpec` (ratio, seed, granularity, include/exclude). `spec.ratio == 0` passes the
            inner strategy through unchanged.
        layouts: ArrayRecord key -> `TensorLayout` of every anchored tensor (`anchor_layouts(model, spec)`),
            or a list of layouts keyed by their names (`TNAFileConfig.layouts()`).
        mode: `"fedpfn"` (one mask, anchors at the initial values) or `"fedpnu"` (a fresh mask per round,
            anchors at the round's global values).
        compact_upload: ask clients to upload only the free entries (the server scatters anchors back).

    After `start()`, `history` holds one dict per round: bytes uploaded, bytes a full upload would take,
    replies, seconds spent expanding.
    """

    def __init__(
        self,
        strategy: Strategy,
        spec: AnchorSpec,
        layouts: dict[str, TensorLayout] | list[TensorLayout],
        mode: str = "fedpfn",
        compact_upload: bool = True,
    ):
        if not isinstance(strategy, Strategy):
            raise TypeError(
                f"strategy must be a flwr.serverapp.strategy.Strategy (Message API), got {type(strategy).__name__}; "
                "the deprecated flwr.server.strategy classes are not supported"
            )
        if isinstance(strategy, AnchoredStrategy):
            raise TypeError("strategy is already an AnchoredStrategy; wrap the inner strategy once")
        if not isinstance(spec, AnchorSpec):
            raise TypeError(f"spec must be an hf_tna AnchorSpec, got {type(spec).__name__}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if isinstance(layouts, (list, tuple)):
            layouts = {layout.name: layout for layout in layouts}
        if spec.ratio > 0 and not layouts:
            raise ValueError("layouts is empty: pass anchor_layouts(model, spec) so the server knows the anchors")
        self.strategy = strategy
        self.spec = spec
        self.layouts = dict(layouts)
        self.mode = mode
        self.compact_upload = bool(compact_upload)
        self.history: list[dict] = []
        self._global: dict[str, np.ndarray] = {}
        self._full_nbytes = 0
        self._masks: dict[str, np.ndarray] = {}
        self._masks_spec: AnchorSpec | None = None
        self._initial_anchors: dict[str, np.ndarray] | None = None  # FedPFN: anchor values at round 1

    @property
    def enabled(self) -> bool:
        return self.spec.ratio > 0

    def summary(self) -> None:
        log(INFO, "\t├──> %s (hf_tna) around %s:", self.mode.upper(), type(self.strategy).__name__)
        log(INFO, "\t│\t├── anchor spec: %s", self.spec.to_dict())
        log(INFO, "\t│\t└── anchored tensors: %d, compact upload: %s", len(self.layouts), self.compact_upload)
        self.strategy.summary()

    def start(self, grid: Grid, initial_arrays: ArrayRecord, *args, **kwargs):
        """Flower's round loop (`Strategy.start`), after forgetting the anchors and history of a previous run.

        The inner strategy's own state (FedAvgM momentum, FedAdam moments) is not reset: Flower keeps it across
        `start()` calls, so give each run a fresh inner strategy when it has state.
        """
        self._initial_anchors, self._masks_spec, self.history = None, None, []
        return super().start(grid, initial_arrays, *args, **kwargs)

    # --- training ---
    def masks_for_round(self, server_round: int) -> dict[str, np.ndarray]:
        rspec = round_spec(self.spec, self.mode, server_round)
        if rspec != self._masks_spec:  # FedPFN draws once; FedPNU re-draws each round
            self._masks = anchor_masks(self.layouts, rspec)
            self._masks_spec = rspec
        return self._masks

    def _check_layouts(self, arrays: dict[str, np.ndarray]) -> None:
        for key, layout in self.layouts.items():
            if key not in arrays:
                raise ValueError(
                    f"anchored tensor {key!r} is not in the global ArrayRecord (keys look like "
                    f"{sorted(arrays)[:3]}); build layouts with anchor_layouts(model, spec) on the same model"
                )
            if tuple(arrays[key].shape) != layout.shape:
                raise ValueError(
                    f"anchored tensor {key!r}: layout shape {layout.shape}, global array {arrays[key].shape}"
                )

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if not self.enabled:
            return self.strategy.configure_train(server_round, arrays, config, grid)
        self._global = {key: arr.numpy() for key, arr in arrays.items()}
        self._full_nbytes = record_nbytes(arrays)
        self._check_layouts(self._global)
        masks = self.masks_for_round(server_round)
        if self.mode == "fedpfn" and self._initial_anchors is None:
            self._initial_anchors = {key: self._global[key][mask].copy() for key, mask in masks.items()}
        config.update(train_config_entries(self.spec, self.mode, server_round, self.compact_upload))
        return self.strategy.configure_train(server_round, arrays, config, grid)

    def expand_reply(self, record: ArrayRecord) -> ArrayRecord:
        """A client's (compact) upload as full float64 arrays, anchored entries from the round's global."""
        missing = sorted(set(self._global) - set(record))
        if missing:
            raise ValueError(f"client upload lacks tensor {missing[0]!r} of the global model")
        out = ArrayRecord()
        for key, arr in record.items():
            if key not in self._global:
                raise ValueError(f"client upload has tensor {key!r}, which the global model does not have")
            sent, ref = arr.numpy(), self._global[key]
            full = expand_array(key, sent, ref, self._masks[key]) if key in self._masks else sent
            out[key] = Array(_upcast(full))
        return out

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        valid = [m for m in replies if not m.has_error() and m.has_content()]
        sent = sum(record_nbytes(rec) for m in valid for rec in m.content.array_records.values())
        if not self.enabled:
            self.history.append(
                {
                    "round": server_round,
                    "replies": len(valid),
                    "upload_bytes": sent,
                    "upload_bytes_full": sent,
                    "expand_seconds": 0.0,
                }
            )
            arrays, metrics = self.strategy.aggregate_train(server_round, replies)
            return self._finite_or_keep(server_round, arrays), metrics
        start = time.perf_counter()
        for msg in valid:
            for rkey in list(msg.content.array_records):
                msg.content[rkey] = self.expand_reply(msg.content[rkey])
        full_one = self._full_nbytes
        self.history.append(
            {
                "round": server_round,
                "replies": len(valid),
                "upload_bytes": sent,
                "upload_bytes_full": full_one * len(valid),
                "expand_seconds": time.perf_counter() - start,
            }
        )
        arrays, metrics = self.strategy.aggregate_train(server_round, replies)
        if arrays is None:
            return arrays, metrics
        arrays = self._finite_or_keep(server_round, self._finish_aggregate(arrays))
        if metrics is not None:
            metrics[METRIC_UPLOAD_BYTES] = int(sent)
            metrics[METRIC_FULL_BYTES] = int(full_one * len(valid))
        return arrays, metrics

    def _finite_or_keep(self, server_round: int, arrays: ArrayRecord | None) -> ArrayRecord | None:
        """The aggregate, or None (Flower then keeps the previous global model) when any floating array of it
        holds NaN or inf: a diverged or malicious client never becomes the next global model."""
        if arrays is None:
            return None
        for key, arr in arrays.items():
            value = arr.numpy()
            if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
                log(WARNING, "hf_tna round %d: the aggregate of %r holds %d NaN/inf value(s); keeping the previous "
                    "global model", server_round, key, int((~np.isfinite(value)).sum()))
                return None
        return arrays

    def _finish_aggregate(self, arrays: ArrayRecord) -> ArrayRecord:
        """Cast back to the global dtypes; FedPFN: write the initial anchor values back (bitwise)."""
        out = ArrayRecord()
        for key, arr in arrays.items():
            value = arr.numpy()
            ref = self._global.get(key)
            if ref is not None and value.dtype != ref.dtype:
                value = value.astype(ref.dtype)
            if self.mode == "fedpfn" and key in self._masks:
                value = np.array(value, copy=True)
                value[self._masks[key]] = self._initial_anchors[key]
            out[key] = Array(np.asarray(value))
        return out

    # --- evaluation: the inner strategy's ---
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.strategy.aggregate_evaluate(server_round, replies)
