"""Smoke test of benchmarks/lmc.py: a tiny in-process run on synthetic data (a few seconds)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lmc():
    spec = importlib.util.spec_from_file_location("lmc_benchmark", ROOT / "benchmarks" / "lmc.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_run(lmc, tmp_path_factory):
    out = tmp_path_factory.mktemp("lmc")
    argv = [
        "--quick", "--data", "synthetic", "--models", "mlp", "--sections", "main,width",
        "--train-size", "256", "--test-size", "128", "--grid", "5", "--seeds", "2",
        "--ratios", "0,0.4", "--prune-ratios", "0.4", "--ks", "2,4", "--widths", "8,16",
        "--out-dir", str(out),
    ]  # fmt: skip
    return lmc.main(argv), out


def test_summary_structure(tiny_run):
    summary, out = tiny_run
    assert summary["command"].startswith("python benchmarks/lmc.py --quick --data synthetic")
    assert summary["seeds_completed"] == 2
    assert summary["config"]["train_size"] == 256 and summary["config"]["grid"] == 5
    results = summary["results"]
    main = [e for e in results if e["section"] == "main"]
    arms = {(e["setting"], e["variant"], e["granularity"], e["ratio"]) for e in main}
    assert ("order", "tna", "element", 0.0) in arms and ("disjoint", "tna", "neuron", 0.4) in arms
    assert ("order", "prune", "element", 0.4) in arms
    for e in main:
        assert e["acc_barrier"]["n"] == 2 and e["acc_barrier"]["mean"] >= 0.0
        assert e["loss_barrier"]["mean"] >= 0.0
        assert 0.0 <= e["acc_mean"]["mean"] <= 1.0
    kf = [e for e in main if "kfusion" in e]
    assert kf and all(set(e["kfusion"]) == {"2", "4"} for e in kf)
    assert {e["width"] for e in results if e["section"] == "width"} == {8, 16}
    saved = json.loads((out / "lmc.json").read_text())
    assert saved["seeds_completed"] == 2 and len(saved["rows"]) > 0


def test_self_barrier_is_zero_and_anchors_intact(tiny_run):
    sanity = tiny_run[0]["sanity"]
    assert sanity["self_barrier"]["loss_barrier"] == 0.0
    assert sanity["self_barrier"]["accuracy_barrier"] == 0.0
    assert sanity["max_anchor_drift"] == 0.0


def test_report_and_plots(tiny_run, lmc):
    summary, out = tiny_run
    text = (out / "lmc.md").read_text()
    tables = sum(line.startswith("|---") for line in text.splitlines())
    assert tables >= 3  # MLP pairs, K-model fusion, width sweep
    assert text.count("Command: `python benchmarks/lmc.py --quick") == tables
    for key in ("ratio", "width", "kfusion"):
        assert (out / lmc.PLOT_NAMES[key]).stat().st_size > 0
    assert not list(out.glob("*.tmp*"))
    # a hand-written analysis survives a re-render
    (out / "lmc.md").write_text(text.replace("(to be written after the full run)", "my notes"))
    assert lmc.read_analysis(out / "lmc.md").strip() == "my notes"


def test_help_and_bad_args(lmc):
    with pytest.raises(SystemExit) as err:
        lmc.build_parser().parse_args(["--help"])
    assert err.value.code == 0
    with pytest.raises(ValueError, match="--ratios"):
        lmc.parse_config(lmc.build_parser().parse_args(["--ratios", "0.2,0.4"]))
    with pytest.raises(ValueError, match="unknown model"):
        lmc.parse_config(lmc.build_parser().parse_args(["--models", "resnet"]))


def test_merge_runs(tiny_run, lmc, tmp_path):
    summary, out = tiny_run
    args = summary["command"].split()[2:]
    args = [a for a in args if a != str(out)]
    args = [a for a in args if a != "--out-dir"]
    merged = lmc.main(args + ["--seeds", "0", "--merge", str(out / "lmc.json"), "--out-dir", str(tmp_path)])
    assert merged["seeds"] == [0, 1]
    assert [e["acc_barrier"] for e in merged["results"]] == [e["acc_barrier"] for e in summary["results"]]
    assert "merged by `python benchmarks/lmc.py" in (tmp_path / "lmc.md").read_text()
    with pytest.raises(ValueError, match="train_size"):
        lmc.main(
            args
            + ["--train-size", "512", "--seeds", "0", "--merge", str(out / "lmc.json"), "--out-dir", str(tmp_path)]
        )
