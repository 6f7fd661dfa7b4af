"""Data, model and settings of the FedPFN / FedPNU example (used by the ClientApp and the ServerApp).

The data and the model come from `hf_tna.example_data` (shared with benchmarks/fl.py):
- Fashion-MNIST from the Debian package `dataset-fashion-mnist` (idx `.gz` files parsed with numpy), or a
  synthetic stand-in (`data="synthetic"`) for smoke tests;
- Dirichlet label skew over clients (per class, client shares drawn from Dir(alpha));
- the CNN of the TNA-PFN authors' federated code: conv 32, conv 64, conv 64, fc 64, fc 10 (and a tiny MLP).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from hf_tna.anchors import AnchorSpec
from hf_tna.example_data import accuracy, federated_test_set, partition_clients  # noqa: F401  (accuracy: the apps')
from hf_tna.example_data import build_federated_model as build_model  # noqa: F401  (the apps')
from hf_tna.federated import FederatedArguments

METHODS = ("fedavg", "fedpfn", "fedpnu")
SERVER_STRATEGIES = ("fedavg", "fedavgm", "fedadam", "fedprox")


@dataclass
class FLSettings(FederatedArguments):
    """One federated run: the anchor fields of `hf_tna.federated.FederatedArguments` (`anchor_ratio`,
    `anchor_seed`, `anchor_granularity`, `anchor_include`, `anchor_exclude`, `anchor_round`) and this example's.

    Read from the run config (`[tool.flwr.app.config]`, hyphenated keys) with `FLSettings.from_run_config`,
    parsed from the command line by `HfArgumentParser` (run_simulation.py), and sent to the clients in the train
    ConfigRecord (`to_run_config()`), so one simulation can run many experiments. `anchor_seed` defaults to
    `seed`: model init, partition, anchors and batch order all follow the seed. `method="fedavg"` trains without
    anchors whatever `anchor_ratio` says.
    """

    method: str = field(default="fedpfn", metadata={"help": "fedavg (no anchors), fedpfn or fedpnu."})
    server: str = field(default="fedavg", metadata={"help": "Inner server strategy: " + ", ".join(SERVER_STRATEGIES)})
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
    output: str = field(default="fl_result.json", metadata={"help": "Where the ServerApp writes the JSON result."})

    def __post_init__(self):
        if self.anchor_seed is None:
            self.anchor_seed = self.seed
        if self.method not in METHODS:
            raise ValueError(f"FLSettings.method must be one of {METHODS}, got {self.method!r}")
        if self.server not in SERVER_STRATEGIES:
            raise ValueError(f"FLSettings.server must be one of {SERVER_STRATEGIES}, got {self.server!r}")
        if self.model not in ("cnn", "mlp") or self.data not in ("fashion-mnist", "synthetic"):
            raise ValueError(f"FLSettings: unknown model {self.model!r} or data {self.data!r}")
        if self.rounds < 1 or self.local_epochs < 1:
            raise ValueError("FLSettings.rounds and local_epochs must be >= 1")
        super().__post_init__()  # the anchor fields

    def to_spec(self) -> AnchorSpec:
        """The run's anchors: the anchor fields, with ratio 0 for `method="fedavg"` (no anchors)."""
        spec = super().to_spec()
        return dataclasses.replace(spec, ratio=0.0) if self.method == "fedavg" else spec


# --------------------------------------------------------------------------------------------------
# Data and model (hf_tna.example_data, shared with benchmarks/fl.py)
# --------------------------------------------------------------------------------------------------
_CACHE: dict = {}


def client_data(settings: FLSettings, partition_id: int, num_partitions: int):
    """This client's (x, y) tensors; cached per process (Ray actors serve many clients and runs)."""
    key = (settings.data, settings.train_size, settings.alpha, settings.seed, num_partitions)
    if key not in _CACHE:
        _CACHE.clear()  # one partitioning at a time keeps actor memory flat
        _CACHE[key] = partition_clients(settings.data, settings.train_size, settings.alpha, settings.seed,
                                        num_partitions)  # fmt: skip
    return _CACHE[key][partition_id]


def test_data(settings: FLSettings):
    return federated_test_set(settings.data, settings.test_size, settings.seed)


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
