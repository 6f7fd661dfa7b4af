"""ServerApp: the chosen Flower strategy wrapped in hf_tna's AnchoredStrategy (FedPFN / FedPNU)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAdam, FedAvg, FedAvgM, FedProx

from hf_tna.federated.server import AnchoredStrategy, anchor_layouts
from tna_fl_app.task import FLSettings, accuracy, build_model, test_data

app = ServerApp()


def build_inner_strategy(settings: FLSettings):
    common = dict(fraction_train=1.0, fraction_evaluate=0.0, min_available_nodes=2)
    if settings.server == "fedavgm":
        return FedAvgM(**common, server_learning_rate=settings.server_lr, server_momentum=settings.server_momentum)
    if settings.server == "fedadam":
        return FedAdam(**common, eta=settings.adam_eta, eta_l=settings.lr)
    if settings.server == "fedprox":
        return FedProx(**common, proximal_mu=settings.proximal_mu)
    return FedAvg(**common)


def run_experiment(grid: Grid, settings: FLSettings) -> dict:
    """One federated run on `grid`: returns accuracy per round (server-side test set) and bytes per round."""
    model = build_model(settings.model, seed=settings.seed)
    initial = ArrayRecord({k: Array(v.detach().numpy()) for k, v in model.state_dict().items()})
    spec = settings.to_spec()  # ratio 0 for method fedavg
    mode = "fedpnu" if settings.method == "fedpnu" else "fedpfn"
    strategy = AnchoredStrategy(build_inner_strategy(settings), spec, anchor_layouts(model, spec), mode=mode)
    x_test, y_test = test_data(settings)

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


@app.main()
def main(grid: Grid, context: Context) -> None:
    settings = FLSettings.from_run_config(context.run_config)
    out = run_experiment(grid, settings)
    path = Path(settings.output)
    path.write_text(json.dumps(out, indent=2))
    print(f"final accuracy {out['accuracy'][-1]:.4f}; results in {path.resolve()}")
