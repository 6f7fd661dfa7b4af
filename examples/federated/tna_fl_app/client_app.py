"""ClientApp: local SGD with hf_tna's AnchoredOptimizer on this node's Dirichlet share of the data."""

from __future__ import annotations

import torch
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from hf_tna.federated.client import read_settings, run_train_message, train_config
from tna_fl_app.task import FLSettings, build_model, client_data

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    torch.set_num_threads(1)
    # Settings travel in the train config (so one simulation can run many experiments); run_config fills gaps.
    settings = read_settings(msg, FLSettings, context.run_config)
    partition_id = int(context.node_config["partition-id"])
    x, y = client_data(settings, partition_id, int(context.node_config["num-partitions"]))
    server_round = int(train_config(msg).get("server-round", 0))
    generator = torch.Generator().manual_seed(settings.seed * 1_000_003 + server_round * 1009 + partition_id)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=settings.batch_size, shuffle=True, generator=generator
    )
    model = build_model(settings.model)  # weights are replaced by the global model
    return run_train_message(
        msg, model, loader, epochs=settings.local_epochs, lr=settings.lr, momentum=settings.momentum
    )
