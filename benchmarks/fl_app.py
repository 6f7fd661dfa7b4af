"""The Flower app of the federated benchmark (benchmarks/fl.py): run settings, the ClientApp, one run on a grid.

The protocol is the FedPFN / FedPNU example's (examples/federated): Fashion-MNIST with Dirichlet label skew and
the CNN of the TNA-PFN authors' FL code (`hf_tna.example_data`), local SGD with `AnchoredOptimizer` and compact
uploads (`hf_tna.federated.client`), `AnchoredStrategy` around a Flower server strategy
(`hf_tna.federated.server`). Benchmarks import nothing from examples/, so this module assembles the same pieces.
Every run's settings travel to the clients in the train ConfigRecord, so one simulation (one Ray start) serves
every run of the benchmark.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field

import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAdam, FedAvg, FedAvgM, FedProx

from hf_tna.anchors import AnchorSpec
from hf_tna.example_data import IMAGE_DATA, accuracy, build_federated_model, federated_test_set, partition_clients
from hf_tna.federated import FederatedArguments
from hf_tna.federated.client import read_settings, run_train_message, train_config
from hf_tna.federated.server import AnchoredStrategy, anchor_layouts

METHODS = ("fedavg", "fedpfn", "fedpnu")
SERVERS = ("fedavg", "fedavgm", "fedadam", "fedprox")


@dataclass
class RunSettings(FederatedArguments):
    """One federated run of the benchmark: the anchor fields of `FederatedArguments` and the run's own.
    `anchor_seed` follows `seed` unless given; `method="fedavg"` trains without anchors."""

    method: str = field(default="fedpfn", metadata={"help": "fedavg (no anchors), fedpfn or fedpnu."})
    server: str = field(default="fedavg", metadata={"help": "Inner server strategy: " + ", ".join(SERVERS)})
    rounds: int = field(default=10, metadata={"help": "Federated rounds."})
    anchor_seed: int | None = field(default=None, metadata={"help": "Seed of the anchor mask (default: seed)."})
    seed: int = field(default=0, metadata={"help": "Model init, data partition, anchor and batch-order seed."})
    alpha: float = field(default=0.5, metadata={"help": "Dirichlet concentration of the label skew."})
    train_size: int = field(default=6000, metadata={"help": "Training examples shared by all clients."})
    test_size: int = field(default=2000, metadata={"help": "Test examples for the server-side accuracy."})
    local_epochs: int = field(default=1, metadata={"help": "Local epochs per round."})
    lr: float = field(default=0.05, metadata={"help": "Client SGD learning rate."})
    momentum: float = field(default=0.9, metadata={"help": "Client SGD momentum."})
    batch_size: int = field(default=16, metadata={"help": "Client batch size."})
    model: str = field(default="cnn", metadata={"help": "cnn (authors' FL CNN) or mlp (tiny)."})
    data: str = field(default="fashion-mnist", metadata={"help": "fashion-mnist or synthetic."})
    server_lr: float = field(default=1.0, metadata={"help": "FedAvgM server learning rate."})
    server_momentum: float = field(default=0.9, metadata={"help": "FedAvgM server momentum."})
    adam_eta: float = field(default=0.01, metadata={"help": "FedAdam server learning rate eta."})
    proximal_mu: float = field(default=0.01, metadata={"help": "FedProx mu (server=fedprox only)."})

    def __post_init__(self):
        if self.anchor_seed is None:
            self.anchor_seed = self.seed
        if self.method not in METHODS:
            raise ValueError(f"RunSettings.method must be one of {METHODS}, got {self.method!r}")
        if self.server not in SERVERS:
            raise ValueError(f"RunSettings.server must be one of {SERVERS}, got {self.server!r}")
        if self.model not in ("cnn", "mlp") or self.data not in IMAGE_DATA:
            raise ValueError(f"RunSettings: unknown model {self.model!r} or data {self.data!r}")
        if self.rounds < 1 or self.local_epochs < 1:
            raise ValueError("RunSettings.rounds and local_epochs must be >= 1")
        super().__post_init__()  # the anchor fields

    def to_spec(self) -> AnchorSpec:
        """The run's anchors: the anchor fields, with ratio 0 for `method="fedavg"` (no anchors)."""
        spec = super().to_spec()
        return dataclasses.replace(spec, ratio=0.0) if self.method == "fedavg" else spec


# --------------------------------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------------------------------
_PARTITIONS: dict = {}


def client_data(settings: RunSettings, partition_id: int, num_partitions: int):
    """This client's (x, y) tensors; cached per process (Ray actors serve many clients and runs)."""
    key = (settings.data, settings.train_size, settings.alpha, settings.seed, num_partitions)
    if key not in _PARTITIONS:
        _PARTITIONS.clear()  # one partitioning at a time keeps actor memory flat
        _PARTITIONS[key] = partition_clients(
            settings.data, settings.train_size, settings.alpha, settings.seed, num_partitions
        )
    return _PARTITIONS[key][partition_id]


client_app = ClientApp()


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    """Local SGD with `AnchoredOptimizer` on this node's Dirichlet share of the data."""
    torch.set_num_threads(1)
    settings = read_settings(msg, RunSettings, context.run_config)
    partition_id = int(context.node_config["partition-id"])
    x, y = client_data(settings, partition_id, int(context.node_config["num-partitions"]))
    server_round = int(train_config(msg).get("server-round", 0))
    generator = torch.Generator().manual_seed(settings.seed * 1_000_003 + server_round * 1009 + partition_id)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=settings.batch_size, shuffle=True, generator=generator
    )
    model = build_federated_model(settings.model)  # weights are replaced by the global model
    return run_train_message(
        msg, model, loader, epochs=settings.local_epochs, lr=settings.lr, momentum=settings.momentum
    )


# --------------------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------------------
def build_inner_strategy(settings: RunSettings):
    common = dict(fraction_train=1.0, fraction_evaluate=0.0, min_available_nodes=2)
    if settings.server == "fedavgm":
        return FedAvgM(**common, server_learning_rate=settings.server_lr, server_momentum=settings.server_momentum)
    if settings.server == "fedadam":
        return FedAdam(**common, eta=settings.adam_eta, eta_l=settings.lr)
    if settings.server == "fedprox":
        return FedProx(**common, proximal_mu=settings.proximal_mu)
    return FedAvg(**common)


def run_experiment(grid: Grid, settings: RunSettings) -> dict:
    """One federated run on `grid`: accuracy per round (server-side test set) and upload bytes per round."""
    model = build_federated_model(settings.model, seed=settings.seed)
    initial = ArrayRecord({k: Array(v.detach().numpy()) for k, v in model.state_dict().items()})
    spec = settings.to_spec()
    mode = "fedpnu" if settings.method == "fedpnu" else "fedpfn"
    strategy = AnchoredStrategy(build_inner_strategy(settings), spec, anchor_layouts(model, spec), mode=mode)
    x_test, y_test = federated_test_set(settings.data, settings.test_size, settings.seed)

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model.load_state_dict({k: torch.from_numpy(a.numpy().copy()) for k, a in arrays.items()})
        return MetricRecord({"accuracy": accuracy(model, x_test, y_test)})

    start = time.perf_counter()
    result = strategy.start(
        grid,
        initial,
        num_rounds=settings.rounds,
        train_config=ConfigRecord(settings.to_run_config()),
        evaluate_fn=evaluate_fn,
    )
    metrics = result.evaluate_metrics_serverapp
    return {
        "settings": settings.to_run_config(),
        "accuracy": [float(metrics[r]["accuracy"]) for r in sorted(metrics)],  # index 0 = initial model
        "bytes": strategy.history,
        "seconds": time.perf_counter() - start,
        "num_nodes": len(list(grid.get_node_ids())),
    }


def simulate(server_app, num_clients: int, num_cpus: int, quiet: bool = False) -> None:
    """Run `server_app` with this module's ClientApp on Flower's simulation engine (Ray), one CPU per client."""
    from flwr.simulation import run_simulation

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    init_args = {"num_cpus": num_cpus, **({"logging_level": "ERROR"} if quiet else {})}
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=num_clients,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": init_args},
    )
