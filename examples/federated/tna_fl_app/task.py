"""Settings and task of the FedPFN / FedPNU example (used by the ClientApp and the ServerApp).

The task is `hf_tna.federated.image_task` (shared with benchmarks/fl.py): Fashion-MNIST from the Debian package
`dataset-fashion-mnist` (or a synthetic stand-in, `data="synthetic"`), Dirichlet label skew over clients, the CNN
of the TNA-PFN authors' federated code (or a tiny MLP). To run your own model and data, build a
`hf_tna.federated.app.FederatedTask` from your settings class, model builder, data loader and evaluation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from hf_tna.federated.image_task import IMAGE_TASK, ImageTaskArguments


@dataclass
class FLSettings(ImageTaskArguments):
    """One federated run: the fields of `hf_tna.federated.image_task.ImageTaskArguments` (the anchor fields
    `anchor_ratio`, `anchor_seed`, `anchor_granularity`, `anchor_include`, `anchor_exclude`, `anchor_round`;
    `method`, `server`, `rounds`, `seed`, the clients' SGD, the server strategies' settings; the data and model)
    and `output`, where the ServerApp writes the JSON result.

    Read from the run config (`[tool.flwr.app.config]`, hyphenated keys) with `FLSettings.from_run_config`,
    parsed from the command line by `HfArgumentParser` (run_simulation.py), and sent to the clients in the train
    ConfigRecord (`to_run_config()`), so one simulation can run many experiments. `anchor_seed` defaults to
    `seed`: model init, partition, anchors and batch order all follow the seed. `method="fedavg"` trains without
    anchors whatever `anchor_ratio` says.
    """

    output: str = field(default="fl_result.json", metadata={"help": "Where the ServerApp writes the JSON result."})


TASK = dataclasses.replace(IMAGE_TASK, settings_class=FLSettings)
