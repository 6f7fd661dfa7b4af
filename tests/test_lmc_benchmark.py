"""Smoke test of the LMC benchmark (`python -m benchmarks.lmc`): a tiny in-process run on synthetic data."""

import json
import shlex

import pytest

from benchmarks import lmc


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lmc")
    argv = [
        "--quick", "--data", "synthetic", "--models", "mlp", "--sections", "main", "width",
        "--train-size", "256", "--test-size", "128", "--grid", "5", "--seeds", "2",
        "--ratios", "0", "0.4", "--prune-ratios", "0.4", "--ks", "2", "4", "--widths", "8", "16",
        "--out-dir", str(out),
    ]  # fmt: skip
    return lmc.main(argv), out


def test_summary_structure(tiny_run):
    summary, out = tiny_run
    assert summary["command"].startswith(f"{lmc.COMMAND} --quick --data synthetic")
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
    saved = json.loads((out / lmc.JSON_NAME).read_text())
    assert saved["seeds_completed"] == 2 and len(saved["rows"]) > 0


def test_self_barrier_is_zero_and_anchors_intact(tiny_run):
    sanity = tiny_run[0]["sanity"]
    assert sanity["self_barrier"]["loss_barrier"] == 0.0
    assert sanity["self_barrier"]["accuracy_barrier"] == 0.0
    assert sanity["max_anchor_drift"] == 0.0


def test_report_and_plots(tiny_run):
    summary, out = tiny_run
    text = (out / lmc.REPORT_NAME).read_text()
    tables = sum(line.startswith("|---") for line in text.splitlines())
    assert tables >= 3  # MLP pairs, K-model fusion, width sweep
    assert text.count(f"Command: `{lmc.COMMAND} --quick") == tables
    for key in ("ratio", "width", "kfusion"):
        assert (out / lmc.PLOT_NAMES[key]).stat().st_size > 0
    assert not list(out.glob("*.tmp*"))
    # a hand-written analysis survives a re-render
    (out / lmc.REPORT_NAME).write_text(text.replace("(to be written after the full run)", "my notes"))
    assert lmc.read_analysis(out / lmc.REPORT_NAME).strip() == "my notes"


def test_help_and_bad_args():
    with pytest.raises(SystemExit) as err:
        lmc.parse_config(["--help"])
    assert err.value.code == 0
    with pytest.raises(ValueError, match="--ratios"):
        lmc.parse_config(["--ratios", "0.2", "0.4"])
    with pytest.raises(ValueError, match="unknown model"):
        lmc.parse_config(["--models", "resnet"])
    cfg, run = lmc.parse_config(["--quick", "--ks", "3"])  # the preset changes defaults, given flags still win
    assert cfg.train_size == lmc.QUICK["train_size"] and cfg.ks == [3] and run.quick


def test_merge_runs(tiny_run, tmp_path):
    summary, out = tiny_run
    args = shlex.split(summary["command"])[len(shlex.split(lmc.COMMAND)) :]
    args = args[: args.index("--out-dir")]  # the run's settings, without its output folder
    merged = lmc.main(args + ["--seeds", "0", "--merge", str(out / lmc.JSON_NAME), "--out-dir", str(tmp_path)])
    assert merged["seeds"] == [0, 1]
    assert [e["acc_barrier"] for e in merged["results"]] == [e["acc_barrier"] for e in summary["results"]]
    assert f"merged by `{lmc.COMMAND}" in (tmp_path / lmc.REPORT_NAME).read_text()
    with pytest.raises(ValueError, match="train_size"):
        lmc.main(
            args
            + ["--train-size", "512", "--seeds", "0", "--merge", str(out / lmc.JSON_NAME), "--out-dir", str(tmp_path)]
        )
