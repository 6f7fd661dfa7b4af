"""Data, model and settings of the FedPFN / FedPNU example (shared by the Flower app and benchmarks/fl.py).

- Fashion-MNIST from the Debian package `dataset-fashion-mnist` (idx `.gz` files parsed with numpy), or a
  synthetic stand-in (`data="synthetic"`) for smoke tests;
- Dirichlet label skew over clients (per class, client shares drawn from Dir(alpha));
- the CNN of the TNA-PFN authors' federated code: conv 32, conv 64, conv 64, fc 64, fc 10 (and a tiny MLP).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hf_tna.example_data import FASHION_MNIST_FILES, load_fashion_mnist

METHODS = ("fedavg", "fedpfn", "fedpnu")
SERVER_STRATEGIES = ("fedavg", "fedavgm", "fedadam", "fedprox")


@dataclass
class FLSettings:
    """One federated run. Every field travels to clients in the train ConfigRecord (hyphenated keys)."""

    method: str = field(default="fedpfn", metadata={"help": "fedavg (no anchors), fedpfn or fedpnu"})
    server: str = field(default="fedavg", metadata={"help": "inner server strategy: " + ", ".join(SERVER_STRATEGIES)})
    rounds: int = field(default=10, metadata={"help": "federated rounds"})
    anchor_ratio: float = field(default=0.4, metadata={"help": "fraction of entries anchored (fedpfn/fedpnu)"})
    seed: int = field(default=0, metadata={"help": "model init, data partition, anchor and batch-order seed"})
    alpha: float = field(default=0.5, metadata={"help": "Dirichlet concentration of the label skew"})
    train_size: int = field(default=6000, metadata={"help": "training examples shared by all clients"})
    test_size: int = field(default=2000, metadata={"help": "test examples for the server-side accuracy"})
    local_epochs: int = field(default=1, metadata={"help": "local epochs per round"})
    lr: float = field(default=0.05, metadata={"help": "client SGD learning rate"})
    momentum: float = field(default=0.9, metadata={"help": "client SGD momentum"})
    batch_size: int = field(default=16, metadata={"help": "client batch size"})
    model: str = field(default="cnn", metadata={"help": "cnn (authors' FL CNN) or mlp (tiny)"})
    data: str = field(default="fashion-mnist", metadata={"help": "fashion-mnist or synthetic"})
    server_lr: float = field(default=1.0, metadata={"help": "FedAvgM server learning rate"})
    server_momentum: float = field(default=0.9, metadata={"help": "FedAvgM server momentum"})
    adam_eta: float = field(default=0.01, metadata={"help": "FedAdam server learning rate eta"})
    proximal_mu: float = field(default=0.01, metadata={"help": "FedProx mu (server=fedprox only)"})

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"FLSettings.method must be one of {METHODS}, got {self.method!r}")
        if self.server not in SERVER_STRATEGIES:
            raise ValueError(f"FLSettings.server must be one of {SERVER_STRATEGIES}, got {self.server!r}")
        if self.model not in ("cnn", "mlp") or self.data not in ("fashion-mnist", "synthetic"):
            raise ValueError(f"FLSettings: unknown model {self.model!r} or data {self.data!r}")
        if self.rounds < 1 or self.local_epochs < 1:
            raise ValueError("FLSettings.rounds and local_epochs must be >= 1")

    def to_config(self) -> dict:
        return {f.name.replace("_", "-"): getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_config(cls, config) -> FLSettings:
        """From a ConfigRecord / run_config (hyphenated keys); unknown keys are ignored."""
        kwargs = {}
        for f in dataclasses.fields(cls):
            key = f.name.replace("_", "-")
            if key in config:
                kwargs[f.name] = type(f.default)(config[key])
        return cls(**kwargs)


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------
def load_split(split: str, data: str = "fashion-mnist", root: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 28, 28], labels int64 [N]) of the train or test split."""
    if data == "synthetic":
        return _synthetic(split)
    if split not in FASHION_MNIST_FILES:
        raise ValueError(f"split must be one of {sorted(FASHION_MNIST_FILES)}, got {split!r}")
    return load_fashion_mnist(root)[split]


def _synthetic(split: str, n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """Ten noisy class prototypes on 28x28: learnable in a few steps, no file needed."""
    protos = np.random.default_rng(1234).integers(0, 256, size=(10, 28, 28))
    rng = np.random.default_rng(0 if split == "train" else 1)
    labels = rng.integers(0, 10, size=n)
    images = np.clip(protos[labels] + rng.normal(0, 60, size=(n, 28, 28)), 0, 255).astype(np.uint8)
    return images, labels.astype(np.int64)


def subsample(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Indices of a seeded random subset of `size` examples (all when size >= len)."""
    idx = np.random.default_rng(seed).permutation(len(labels))
    return np.sort(idx[: min(size, len(labels))])


def dirichlet_partition(labels: np.ndarray, num_clients: int, alpha: float, seed: int, min_size: int = 10):
    """Split example indices over clients with Dirichlet(alpha) label skew (re-drawn until every client
    holds at least `min_size` examples, as in the usual FL benchmarks). Returns a list of index arrays."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    for _ in range(1000):
        parts = [[] for _ in range(num_clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            shares = rng.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            for client, chunk in enumerate(np.split(idx, cuts)):
                parts[client].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min(min_size, len(labels) // num_clients):
            return [np.sort(np.array(p, dtype=np.int64)) for p in parts]
    raise ValueError(f"could not give each of {num_clients} clients {min_size} examples with alpha={alpha}")


def to_tensors(images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return (x - 0.2860) / 0.3530, torch.from_numpy(labels)


_CACHE: dict = {}


def client_data(settings: FLSettings, partition_id: int, num_partitions: int):
    """This client's (x, y) tensors; cached per process (Ray actors serve many clients and runs)."""
    key = (settings.data, settings.train_size, settings.alpha, settings.seed, num_partitions)
    if key not in _CACHE:
        images, labels = load_split("train", settings.data)
        pool = subsample(labels, settings.train_size, settings.seed)
        parts = dirichlet_partition(labels[pool], num_partitions, settings.alpha, settings.seed)
        _CACHE.clear()  # one partitioning at a time keeps actor memory flat
        _CACHE[key] = [to_tensors(images[pool[p]], labels[pool[p]]) for p in parts]
    return _CACHE[key][partition_id]


def test_data(settings: FLSettings):
    images, labels = load_split("test", settings.data)
    idx = subsample(labels, settings.test_size, 10_000 + settings.seed)
    return to_tensors(images[idx], labels[idx])


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------
class CNN(torch.nn.Module):
    """conv 32, conv 64, conv 64 (3x3), fc 64, fc 10: the CNN of the TNA-PFN authors' FL code, on 28x28x1."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 32, 3)
        self.conv2 = torch.nn.Conv2d(32, 64, 3)
        self.conv3 = torch.nn.Conv2d(64, 64, 3)
        self.fc1 = torch.nn.Linear(64 * 3 * 3, 64)
        self.fc2 = torch.nn.Linear(64, num_classes)

    def forward(self, x):
        f = torch.nn.functional
        x = f.max_pool2d(f.relu(self.conv1(x)), 2)
        x = f.max_pool2d(f.relu(self.conv2(x)), 2)
        x = f.relu(self.conv3(x))
        return self.fc2(f.relu(self.fc1(x.flatten(1))))


def build_model(name: str = "cnn", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    if name == "cnn":
        return CNN()
    return torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(28 * 28, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10)
    )


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    model.eval()
    correct = sum(
        int((model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum())
        for i in range(0, len(y), batch_size)
    )
    return correct / len(y)


def simulate(server_app, client_app, num_clients: int, num_cpus: int, quiet: bool = False) -> None:
    """Run a ServerApp and a ClientApp on Flower's simulation engine (Ray), one CPU per client."""
    import os

    from flwr.simulation import run_simulation

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    init_args = {"num_cpus": num_cpus, **({"logging_level": "ERROR"} if quiet else {})}
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=num_clients,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": init_args},
    )
