"""Run the FedPFN / FedPNU Flower app on one machine with Flower's simulation engine (Ray).

    python examples/federated/run_simulation.py --method fedpfn --server fedavgm --num_clients 10 --rounds 20
    python examples/federated/run_simulation.py --quick      # 2 clients, 2 rounds, tiny MLP, synthetic data
    python examples/federated/run_simulation.py --anchor_ratio 0.2 --anchor_exclude fc2 --output out.json

The same app runs under `flwr run` / SuperLink / SuperNodes (see README.md); this entry point only builds
the ServerApp around command-line settings, because `run_simulation` passes no run config. The flags are the
`FLSettings` fields (the run config's keys, with underscores; dashed spellings work too) parsed by
`HfArgumentParser`, plus the simulation's own.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1])]  # tna_fl_app and hf_tna, also for the Ray workers

from flwr.app import Context  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402
from tna_fl_app.client_app import app as client_app  # noqa: E402
from tna_fl_app.task import TASK, FLSettings  # noqa: E402
from transformers import HfArgumentParser  # noqa: E402

from hf_tna.federated.app import run_experiment, simulate  # noqa: E402


@dataclass
class SimulationArguments:
    """How the simulation engine runs the app on this machine."""

    num_clients: int = field(default=10, metadata={"help": "Simulated SuperNodes."})
    num_cpus: int = field(default=2, metadata={"help": "CPUs Ray may use."})
    quick: bool = field(default=False, metadata={"help": "2 clients, 2 rounds, tiny MLP, synthetic data."})


QUICK = {"rounds": 2, "model": "mlp", "data": "synthetic", "train_size": 200, "test_size": 200}


def parse_args(argv=None) -> tuple[FLSettings, SimulationArguments]:
    """The run's `FLSettings` (every field a flag: `--anchor_ratio`, `--method`, ...) and the simulation's."""
    parser = HfArgumentParser((FLSettings, SimulationArguments), description=__doc__.split("\n\n")[0])
    settings, simulation = parser.parse_args_into_dataclasses(argv, look_for_args_file=False)
    if simulation.quick:
        settings = dataclasses.replace(settings, **QUICK)
        simulation = dataclasses.replace(simulation, num_clients=2)
    return settings, simulation


def main(argv=None) -> dict:
    settings, simulation = parse_args(argv)
    out: dict = {}
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        out.update(run_experiment(grid, TASK, settings))

    simulate(server_app, client_app, simulation.num_clients, simulation.num_cpus)
    if not out:
        raise SystemExit("the ServerApp produced no result; see the log above")
    Path(settings.output).write_text(json.dumps(out, indent=2))
    print(json.dumps({"accuracy": out["accuracy"], "upload_bytes": [h["upload_bytes"] for h in out["bytes"]]}))
    return out


if __name__ == "__main__":
    main()
