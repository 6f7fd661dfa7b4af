"""Run the FedPFN / FedPNU Flower app on one machine with Flower's simulation engine (Ray).

    python examples/federated/run_simulation.py --method fedpfn --server fedavgm --num-clients 10 --rounds 20
    python examples/federated/run_simulation.py --quick      # 2 clients, 2 rounds, tiny MLP, synthetic data

The same app runs under `flwr run` / SuperLink / SuperNodes (see README.md); this entry point only builds
the ServerApp around command-line settings, because `run_simulation` passes no run config.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1])]  # tna_fl_app and hf_tna, also for the Ray workers

from flwr.app import Context  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402
from tna_fl_app.client_app import app as client_app  # noqa: E402
from tna_fl_app.server_app import run_experiment  # noqa: E402
from tna_fl_app.task import FLSettings, simulate  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(FLSettings):
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            type=type(f.default),
            default=f.default,
            help=f.metadata["help"] + f" (default: {f.default})",
        )
    parser.add_argument("--num-clients", type=int, default=10, help="simulated SuperNodes (default: 10)")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs Ray may use (default: 2)")
    parser.add_argument("--output", type=Path, default=Path("fl_result.json"), help="where the JSON result goes")
    parser.add_argument("--quick", action="store_true", help="2 clients, 2 rounds, tiny MLP, synthetic data")
    args = parser.parse_args(argv)
    if args.quick:
        args.num_clients, args.rounds, args.model, args.data = 2, 2, "mlp", "synthetic"
        args.train_size, args.test_size = 200, 200
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    settings = FLSettings(**{f.name: getattr(args, f.name) for f in dataclasses.fields(FLSettings)})
    out: dict = {}
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        out.update(run_experiment(grid, settings))

    simulate(server_app, client_app, args.num_clients, args.num_cpus)
    if not out:
        raise SystemExit("the ServerApp produced no result; see the log above")
    args.output.write_text(json.dumps(out, indent=2))
    print(json.dumps({"accuracy": out["accuracy"], "upload_bytes": [h["upload_bytes"] for h in out["bytes"]]}))
    return out


if __name__ == "__main__":
    main()
