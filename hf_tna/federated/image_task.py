"""The image-classification task that examples/federated and benchmarks/fl.py run, as a `FederatedTask`.

The data and the model come from `hf_tna.example_data`:
- Fashion-MNIST from the Debian package `dataset-fashion-mnist` (idx `.gz` files parsed with numpy), or a
  synthetic stand-in (`data="synthetic"`) for smoke tests;
- Dirichlet label skew over clients (per class, client shares drawn from Dir(alpha)) of a seeded subsample;
- the CNN of the TNA-PFN authors' federated code: conv 32, conv 64, conv 64, fc 64, fc 10 (or a tiny MLP).

An app with more settings subclasses `ImageTaskArguments` and puts its class in the task:
`dataclasses.replace(IMAGE_TASK, settings_class=MySettings)`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch

from ..example_data import IMAGE_DATA, accuracy, build_federated_model, federated_test_set, partition_clients
from .app import FederatedTask
from .config import FederatedRunArguments

MODELS = ("cnn", "mlp")

__all__ = ["IMAGE_TASK", "MODELS", "ImageTaskArguments", "build_evaluator", "build_model", "load_partition"]


@dataclass
class ImageTaskArguments(FederatedRunArguments):
    """A federated run of the image task: the fields of `FederatedRunArguments` and `alpha` (Dirichlet label
    skew), `train_size` (training examples shared by all clients), `test_size` (server-side test examples),
    `model` (`cnn`: the authors' FL CNN; `mlp`: tiny) and `data` (`fashion-mnist` or `synthetic`). Model init,
    partition, anchors and batch order all follow `seed`."""

    alpha: float = field(default=0.5, metadata={"help": "Dirichlet concentration of the label skew."})
    train_size: int = field(default=6000, metadata={"help": "Training examples shared by all clients."})
    test_size: int = field(default=2000, metadata={"help": "Test examples for the server-side accuracy."})
    model: str = field(default="cnn", metadata={"help": "cnn (authors' FL CNN) or mlp (tiny).", "choices": MODELS})
    data: str = field(default="fashion-mnist", metadata={"help": "fashion-mnist or synthetic.", "choices": IMAGE_DATA})


def build_model(settings: ImageTaskArguments) -> torch.nn.Module:
    return build_federated_model(settings.model, seed=settings.seed)


@functools.lru_cache(maxsize=1)  # per process (Ray actors serve many clients and runs); one partitioning at a time
def client_partitions(data: str, train_size: int, alpha: float, seed: int, num_partitions: int) -> list:
    return partition_clients(data, train_size, alpha, seed, num_partitions)


def load_partition(settings: ImageTaskArguments, partition_id: int, num_partitions: int):
    """This client's (x, y) as a TensorDataset."""
    parts = client_partitions(settings.data, settings.train_size, settings.alpha, settings.seed, num_partitions)
    return torch.utils.data.TensorDataset(*parts[partition_id])


def build_evaluator(settings: ImageTaskArguments):
    """Top-1 accuracy on a seeded subsample of `test_size` test examples."""
    x_test, y_test = federated_test_set(settings.data, settings.test_size, settings.seed)
    return lambda model: accuracy(model, x_test, y_test)


IMAGE_TASK = FederatedTask(ImageTaskArguments, build_model, load_partition, build_evaluator)
