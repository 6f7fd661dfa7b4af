"""The Flower app glue of FedPFN / FedPNU: a ClientApp, one run on a ServerApp's grid, the simulation engine.

An app brings what is its own as a `FederatedTask`: its settings (a `FederatedRunArguments` subclass), its model
builder, its data loader and its evaluation. This module builds the rest from the settings:

    TASK = FederatedTask(MySettings, build_model, load_partition, build_evaluator)
    client_app = build_client_app(TASK)  # local SGD with AnchoredOptimizer, compact uploads

    server_app = ServerApp()

    @server_app.main()
    def main(grid, context):
        result = run_experiment(grid, TASK, MySettings.from_run_config(context.run_config))

`run_experiment` sends the settings to the clients in the train ConfigRecord, so one ServerApp (one simulation,
one Ray start) can run many experiments on the same grid. `simulate` runs a ServerApp and a ClientApp on
Flower's simulation engine. Needs Flower (`pip install "hf_tna[fl]"`); transformers is not imported.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAdam, FedAvg, FedAvgM, FedProx, Strategy

from .client import load_arrays, read_settings, run_train_message, train_config
from .config import FederatedRunArguments
from .server import AnchoredStrategy, anchor_layouts

__all__ = ["FederatedTask", "build_client_app", "build_inner_strategy", "run_experiment", "simulate"]


@dataclass(frozen=True)
class FederatedTask:
    """What an app brings to the glue; every callable takes the run's settings first.

    Args:
        settings_class: the app's `FederatedRunArguments` subclass; clients read the server's settings into it.
        build_model: `(settings) -> torch.nn.Module`, initialised from `settings.seed` (the server's initial
            global model; a client's weights are replaced by the global arrays).
        load_partition: `(settings, partition_id, num_partitions) -> torch.utils.data.Dataset`, this client's
            training data (the node config's `partition-id` and `num-partitions`).
        build_evaluator: `(settings) -> (model -> accuracy)`, the server-side evaluation of the global model,
            called once per run (load the test set there) and then every round.
    """

    settings_class: type[FederatedRunArguments]
    build_model: Callable[[Any], torch.nn.Module]
    load_partition: Callable[[Any, int, int], torch.utils.data.Dataset]
    build_evaluator: Callable[[Any], Callable[[torch.nn.Module], float]]


# --------------------------------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------------------------------
def run_client_train(task: FederatedTask, msg: Message, context: Context) -> Message:
    """A ClientApp's train handler: the server's settings, this node's data in a seeded order, local SGD with
    `AnchoredOptimizer` (`run_train_message`), the reply."""
    torch.set_num_threads(1)
    # Settings travel in the train config (so one simulation can run many experiments); run_config fills gaps.
    settings = read_settings(msg, task.settings_class, context.run_config)
    partition_id = int(context.node_config["partition-id"])
    dataset = task.load_partition(settings, partition_id, int(context.node_config["num-partitions"]))
    server_round = int(train_config(msg).get("server-round", 0))
    generator = torch.Generator().manual_seed(settings.seed * 1_000_003 + server_round * 1009 + partition_id)
    loader = torch.utils.data.DataLoader(dataset, batch_size=settings.batch_size, shuffle=True, generator=generator)
    model = task.build_model(settings)  # weights are replaced by the global model
    return run_train_message(
        msg, model, loader, epochs=settings.local_epochs, lr=settings.lr, momentum=settings.momentum
    )


def build_client_app(task: FederatedTask) -> ClientApp:
    """A ClientApp whose train handler is `run_client_train(task, ...)` (no evaluate handler: the server
    evaluates the global model)."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        return run_client_train(task, msg, context)

    return app


# --------------------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------------------
def build_inner_strategy(settings: FederatedRunArguments) -> Strategy:
    """The Flower strategy `settings.server` names, sampling every node for training and none for evaluation."""
    common = dict(fraction_train=1.0, fraction_evaluate=0.0, min_available_nodes=2)
    if settings.server == "fedavgm":
        return FedAvgM(**common, server_learning_rate=settings.server_lr, server_momentum=settings.server_momentum)
    if settings.server == "fedadam":
        return FedAdam(**common, eta=settings.adam_eta, eta_l=settings.lr)
    if settings.server == "fedprox":
        return FedProx(**common, proximal_mu=settings.proximal_mu)
    return FedAvg(**common)


def run_experiment(grid: Grid, task: FederatedTask, settings: FederatedRunArguments) -> dict:
    """One federated run on `grid`: returns accuracy per round (index 0: the initial model), the upload bytes per
    round (`AnchoredStrategy.history`), the settings, the seconds and the number of nodes."""
    model = task.build_model(settings)
    initial = ArrayRecord({k: Array(v.detach().numpy()) for k, v in model.state_dict().items()})
    spec = settings.to_spec()  # ratio 0 for method fedavg
    strategy = AnchoredStrategy(build_inner_strategy(settings), spec, anchor_layouts(model, spec), mode=settings.mode)
    evaluate = task.build_evaluator(settings)

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        load_arrays(model, arrays)
        return MetricRecord({"accuracy": evaluate(model)})

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


def simulate(server_app: ServerApp, client_app: ClientApp, num_clients: int, num_cpus: int, quiet: bool = False):
    """Run a ServerApp and a ClientApp on Flower's simulation engine (Ray), one CPU per client."""
    from flwr.simulation import run_simulation

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    init_args = {"num_cpus": num_cpus, **({"logging_level": "ERROR"} if quiet else {})}
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=num_clients,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": init_args},
    )
