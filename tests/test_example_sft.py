"""examples/sft: the quick mode end to end, in-process (2 seeds x 2 ingredient pairs of a tiny Llama), and its real
properties: anchors held by TNASFTTrainer and kept by the soups, greedy soups chosen by held-out loss, perplexities
and barriers computed as hf_tna.merge.evaluation defines them, the report holding the numbers."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("trl")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sft"
sys.path.insert(0, str(EXAMPLE))

import run_sft  # noqa: E402
import sft_jobs  # noqa: E402
import sft_report  # noqa: E402
import train_sft  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    work = tmp_path_factory.mktemp("sft_quick")
    return work, run_sft.main(["--quick", "--work_dir", str(work)])


def _tensors(folder):
    return run_sft.read_state_dict(folder)


def _ingredients(results, name):
    return [ing for seed in results["seeds"] for ing in seed["sets"][name]["ingredients"]]


@pytest.mark.slow
def test_anchored_ingredients_hold_their_anchors_vanilla_ones_do_not(run):
    from hf_tna.manifest import TNAFileConfig
    from hf_tna.verify import verify_anchors

    work, results = run
    base = work / "base"
    anchored, vanilla = _ingredients(results, "anchored"), _ingredients(results, "vanilla")
    assert len(anchored) == len(vanilla) == 4
    for ing in anchored:
        report = verify_anchors(ing["folder"], base)
        assert report["intact"] and report["num_anchored"] > 0 and ing["anchors_intact"]
        assert not torch.equal(_tensors(ing["folder"])["model.norm.weight"], _tensors(base)["model.norm.weight"])
    config = TNAFileConfig.load(anchored[0]["folder"])
    assert config.spec.ratio == 0.4 and any("embed_tokens" in name for name in config.manifest)
    for ing in vanilla:
        assert not (Path(ing["folder"]) / "tna_config.json").exists()
        assert verify_anchors(ing["folder"], base, config=config)["fraction_intact"] < 0.05
    # the same draws in both sets
    assert [i["hyperparameters"] for i in anchored] == [i["hyperparameters"] for i in vanilla]
    assert len({i["hyperparameters"]["subset_seed"] for i in anchored}) == 4


@pytest.mark.slow
def test_soups_written_anchored_ones_keep_the_anchors(run):
    from hf_tna.verify import verify_anchors

    work, results = run
    for seed in results["seeds"]:
        for name in ("anchored", "vanilla"):
            entry = seed["sets"][name]
            for method in ("uniform", "greedy"):
                folder = Path(entry[method]["folder"])
                assert (folder / "fusion_recipe.yaml").exists() and (folder / "tokenizer.json").exists()
            # greedy by held-out loss: the best ingredient first, never worse on held-out than it
            best = min(range(len(entry["ingredients"])), key=lambda i: entry["ingredients"][i]["val_loss"])
            assert entry["greedy"]["kept"][0] == best
            assert entry["greedy"]["val_loss"] <= entry["ingredients"][best]["val_loss"] + 1e-9
        anchored = seed["sets"]["anchored"]
        assert verify_anchors(anchored["uniform"]["folder"], work / "base")["intact"]
        assert anchored["uniform"]["anchors_intact"] and anchored["greedy"]["anchors_intact"]


@pytest.mark.slow
def test_numbers_are_the_evaluators_and_the_report_holds_them(run):
    work, results = run
    for name in ("anchored", "vanilla"):
        for ing in _ingredients(results, name):
            assert ing["test_ppl"] == math.exp(ing["test_loss"]) and ing["test_loss"] > 0
        barriers = [b for seed in results["seeds"] for b in seed["sets"][name]["barriers"]]
        assert len(barriers) == 2  # one pair per seed
        for b in barriers:
            losses = b["curve"]["losses"]
            assert b["loss_barrier"] >= 0 and len(losses) == 3
            assert b["loss_barrier_relative"] == pytest.approx(b["loss_barrier"] / ((losses[0] + losses[-1]) / 2))
        summary = results["summary"][name]
        per_seed = [seed["sets"][name]["uniform"]["test_ppl"] for seed in results["seeds"]]
        assert summary["uniform_ppl"]["values"] == per_seed
        assert summary["uniform_ppl"]["mean"] == pytest.approx(sum(per_seed) / 2)
    assert results["summary"]["anchors"] == {"ingredients_intact": 4, "ingredients": 4, "soups_intact": 4, "soups": 4}
    # the base's perplexity on tweets is above the fine-tuned ingredients'
    assert results["base"]["test_ppl"] > max(i["test_ppl"] for i in _ingredients(results, "vanilla"))
    markdown = (work / "results.md").read_text()
    for label, _ in sft_report.ROWS.values():
        assert label in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| test perplexity, uniform soup"))
    assert f"{results['summary']['anchored']['uniform_ppl']['mean']:.2f} ±" in row
    saved = json.loads((work / "results.json").read_text())
    assert saved["summary"]["vanilla"]["barrier"]["values"] == results["summary"]["vanilla"]["barrier"]["values"]
    for png in ("sft.png", "barriers_seed0.png"):
        assert (work / png).stat().st_size > 10_000


def test_command_lines_help_and_job_argv_parse_back():
    for parse in (lambda: run_sft.parse_config(["--help"]),
                  lambda: train_sft.build_parser().parse_args_into_dataclasses(args=["--help"])):
        with pytest.raises(SystemExit) as exc:
            parse()
        assert exc.value.code == 0
    cfg = run_sft.parse_config(["--quick", "--anchor_exclude", "lm_head", "--num-seeds", "3"])
    assert cfg.launcher == "inprocess" and cfg.num_seeds == 3 and cfg.to_spec().exclude == ("lm_head",)
    with pytest.raises(ValueError, match="anchor_ratio"):
        run_sft.parse_config(["--quick", "--anchor_ratio", "0"])
    with pytest.raises(ValueError, match="num_ingredients"):
        run_sft.parse_config(["--quick", "--num_ingredients", "1"])
    hp = run_sft.draw_ingredients(cfg, seed=1)[0]
    job = sft_jobs.build_job(cfg, "x", Path("data"), Path("out/ing0"), Path("log"), "tna", hp, Path("base"))
    script, args = train_sft.build_parser().parse_args_into_dataclasses(args=job.argv())
    assert script == job.script and script.base_model == "base" and script.subset_seed == hp["subset_seed"]
    assert args.learning_rate == hp["learning_rate"] and args.seed == hp["seed"] and args.max_length == cfg.max_length
    assert args.to_spec() == cfg.to_spec() and args.use_cpu  # train_sft.py's defaults


def test_overwrite_refuses_folders_it_did_not_make(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(ValueError, match="refusing to delete"):
        run_sft.main(["--quick", "--work_dir", str(tmp_path)])
    assert (tmp_path / "precious.txt").read_text() == "keep me"
