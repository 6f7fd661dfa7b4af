"""benchmarks/fl.py without a simulation: its command line, and the commands its report writes run again."""

import re
import shlex
from pathlib import Path

import pytest

pytest.importorskip("flwr")
from benchmarks import fl  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_help_and_bad_args():
    with pytest.raises(SystemExit) as err:
        fl.parse_args(["--help"])
    assert err.value.code == 0
    with pytest.raises(ValueError, match="anchor_ratio"):
        fl.parse_args(["--anchor_ratio", "1.5"])
    with pytest.raises(ValueError, match="unknown server/method"):
        fl.parse_args(["--methods", "fedsgd"])


def test_report_commands_parse_back_to_the_same_row():
    table = (ROOT / "docs" / "results" / "federated.md").read_text()
    commands = re.findall(r"`(python benchmarks/fl\.py --alphas [^`]+)`", table)
    assert commands
    for command in commands:
        args = fl.parse_args(shlex.split(command)[2:])
        assert fl.row_command(args, args.alphas[0], args.servers[0], args.methods[0]) == command


def test_runs_anchor_with_their_own_seed_unless_told():
    runs = fl.experiments(fl.parse_args(["--quick", "--seeds", "3", "--anchor_granularity", "neuron"]))
    assert {r.method for r in runs} == {"fedavg", "fedpfn", "fedpnu"}
    for run in runs:
        spec = run.to_spec()
        assert spec.seed == run.seed == 3 and spec.granularity == "neuron"
        assert spec.ratio == (0.0 if run.method == "fedavg" else 0.4)
    (pinned,) = fl.experiments(fl.parse_args(["--quick", "--methods", "fedpfn", "--anchor_seed", "7"]))
    assert pinned.to_spec().seed == 7 and pinned.seed == 0
