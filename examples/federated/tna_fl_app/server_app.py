"""ServerApp: the chosen Flower strategy wrapped in hf_tna's AnchoredStrategy (FedPFN / FedPNU)."""

from __future__ import annotations

import json
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from hf_tna.federated.app import run_experiment
from tna_fl_app.task import TASK, FLSettings

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    settings = FLSettings.from_run_config(context.run_config)
    out = run_experiment(grid, TASK, settings)
    path = Path(settings.output)
    path.write_text(json.dumps(out, indent=2))
    print(f"final accuracy {out['accuracy'][-1]:.4f}; results in {path.resolve()}")
