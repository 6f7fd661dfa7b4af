"""examples/modelsoup: the smoke mode end to end (digits, 2 ingredients per set) and its real properties."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "modelsoup"
sys.path.insert(0, str(EXAMPLE))

import finetune  # noqa: E402
import run_modelsoup  # noqa: E402
import soup_data  # noqa: E402
import soup_diagnostics  # noqa: E402
import soup_eval  # noqa: E402
import soup_jobs  # noqa: E402
import soup_report  # noqa: E402

REPO = "tests/modelsoup-smoke"


@pytest.fixture(scope="module")
def run(tmp_path_factory, hub_server):
    work = tmp_path_factory.mktemp("modelsoup_smoke")
    # 3 ingredient pairs drawn, but a spent time budget stops after the minimum of 2 pairs
    argv = ["--smoke", "--num_ingredients", "3", "--ingredient_time_budget_s", "0", "--work_dir", str(work)]
    results = run_modelsoup.main(argv + ["--push_to_hub", REPO])
    return work, results


def _tensors(folder):
    return soup_eval.read_state_dict(folder)


@pytest.mark.slow
def test_results_table_has_every_row_and_files(run):
    work, results = run
    k = len(results["sets"]["anchored"]["ingredients"])
    assert k == 2 and len(results["sets"]["vanilla"]["ingredients"]) == k
    table = soup_report.markdown_table(results)
    lines = table.splitlines()[2:]
    names = [line.split("|")[1].strip() for line in lines]
    assert names == [f"ingredient {i}" for i in range(k)] + [
        "mean of ingredients",
        "best ingredient (by held-out)",
        "uniform soup",
        "greedy soup",
        "base (start of every ingredient)",
    ]
    for line in lines:  # 4 numeric cells per row: anchored/vanilla x held-out/test
        cells = [c.strip() for c in line.split("|")[3:7]]
        assert all(float(c.split()[0]) >= 0 for c in cells), line
    assert (work / "val_dataset" / "dataset_info.json").exists()  # for `hf-tna soup --method greedy --dataset`
    for name in ("results.json", "results.md", "modelsoup.png"):
        assert (work / name).stat().st_size > 0
    saved = json.loads((work / "results.json").read_text())
    assert saved["sizes"] == {"pretrain": 619, "finetune": 619, "val": 200, "test": 359}
    # same hyperparameters in both sets, distinct ones across ingredients
    hps = [ing["hyperparameters"] for ing in saved["sets"]["anchored"]["ingredients"]]
    assert hps == [ing["hyperparameters"] for ing in saved["sets"]["vanilla"]["ingredients"]]
    assert hps[0] != hps[1]


@pytest.mark.slow
def test_anchored_ingredients_keep_anchors_vanilla_ones_do_not(run):
    from hf_tna.manifest import TNAFileConfig
    from hf_tna.verify import verify_anchors

    work, results = run
    base = work / "base"
    for ing in results["sets"]["anchored"]["ingredients"]:
        report = verify_anchors(ing["folder"], base)
        assert report["intact"] and report["num_anchored"] > 0
        assert not torch.equal(_tensors(ing["folder"])["classifier.weight"], _tensors(base)["classifier.weight"])
    config = TNAFileConfig.load(results["sets"]["anchored"]["ingredients"][0]["folder"])
    assert any("classifier" in name for name in config.manifest)  # the head is anchored too
    for ing in results["sets"]["vanilla"]["ingredients"]:
        assert not (Path(ing["folder"]) / "tna_config.json").exists()
        assert verify_anchors(ing["folder"], base, config=config)["fraction_intact"] < 0.05


@pytest.mark.slow
def test_uniform_soup_of_anchored_ingredients_keeps_anchors_bitwise(run):
    from hf_tna.anchors import anchor_mask
    from hf_tna.manifest import TNAFileConfig

    work, results = run
    soup = Path(results["sets"]["anchored"]["uniform"]["folder"])
    config = TNAFileConfig.load(soup)
    soup_t, base_t = _tensors(soup), _tensors(work / "base")
    moved = 0
    for layout in config.layouts():
        mask = anchor_mask(layout, config.spec)
        a, b = soup_t[layout.name], base_t[layout.name]
        assert torch.equal(a[mask].view(torch.int32), b[mask].view(torch.int32)), layout.name
        moved += int((a[~mask] != b[~mask]).sum())
    assert moved > 0
    assert results["sets"]["anchored"]["uniform"]["anchors"]["intact"]
    assert results["sets"]["anchored"]["greedy"]["anchors"]["intact"]


@pytest.mark.slow
def test_greedy_soup_held_out_at_least_best_ingredient(run):
    _, results = run
    for name in ("anchored", "vanilla"):
        s = results["sets"][name]
        assert s["greedy"]["val_acc"] >= max(ing["val_acc"] for ing in s["ingredients"]) == s["best"]["val_acc"]
        assert s["greedy"]["kept"][0] == s["best"]["index"]


@pytest.mark.slow
def test_soup_pushed_through_store(run, hub_store):
    _, results = run
    assert results["hub"]["repo_id"] == REPO
    files = hub_store.list_files(REPO)
    assert {"model.safetensors", "tna_config.json", "fusion_recipe.yaml", "README.md", "config.json"} <= set(files)


def test_tensor_and_dataset_evaluators_agree_and_backends_give_same_batches(tmp_path):
    from hf_tna.merge.evaluation import Evaluator
    from tests.common import build_tiny_vit

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, 8, 8), dtype=np.uint8)
    labels = rng.integers(0, 3, size=40)
    collator = soup_data.ImageCollator(8, 1, "shift", seed=3)
    rows_hf = soup_data.build_dataset(images, labels, "datasets").__getitems__(list(range(40)))
    rows_torch = [soup_data.build_dataset(images, labels, "torch")[i] for i in range(40)]
    a, b = collator(rows_hf), soup_data.ImageCollator(8, 1, "shift", seed=3)(rows_torch)
    assert torch.equal(a["pixel_values"], b["pixel_values"]) and torch.equal(a["labels"], b["labels"])

    build_tiny_vit(seed=0).save_pretrained(tmp_path / "vit")
    hf = soup_eval.build_evaluator(tmp_path / "vit", images, labels, backend="hf", device="cpu", batch_size=16)
    tv = soup_eval.build_evaluator(tmp_path / "vit", images, labels, backend="torch", device="cpu", batch_size=16)
    assert type(hf) is type(tv) is Evaluator and tv.metric is None  # one evaluator; from tensors: no `evaluate`
    state_dict = soup_eval.read_state_dict(tmp_path / "vit")
    (l1, a1), (l2, a2) = hf(state_dict), tv(state_dict)
    assert a1 == a2 and l1 == pytest.approx(l2, rel=1e-6)
    with pytest.raises(ValueError, match="holds 39 examples"):
        Evaluator.from_tensors(build_tiny_vit(seed=0), {"pixel_values": torch.zeros(39, 1, 8, 8)}, torch.zeros(40))


def test_augment_and_pixel_values():
    images = torch.arange(2 * 28 * 28, dtype=torch.int64).remainder(256).to(torch.uint8).view(2, 28, 28)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(soup_data.augment_images(images, "none", g), images)
    shifted = soup_data.augment_images(images, "shift_flip", g)
    assert shifted.shape == images.shape and shifted.dtype == torch.uint8
    x = soup_data.to_pixel_values(images, 56, 3)
    assert x.shape == (2, 3, 56, 56) and -1.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert torch.equal(soup_data.to_pixel_values(images, 28)[:, 0], images.float() / 127.5 - 1)


def test_overwrite_refuses_folders_it_did_not_make(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(ValueError, match="refusing to delete"):
        run_modelsoup.main(["--smoke", "--work_dir", str(tmp_path)])
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_command_lines_help_and_validation():
    for parser in (finetune.build_parser(), soup_diagnostics.build_parser(), None):
        with pytest.raises(SystemExit) as exc:
            if parser is None:
                run_modelsoup.parse_config(["--help"])
            else:
                parser.parse_args_into_dataclasses(args=["--help"])
        assert exc.value.code == 0
    cfg = run_modelsoup.parse_config(["--quick", "--num-ingredients", "3", "--anchor_exclude", "classifier"])
    assert cfg.data == "digits" and cfg.num_ingredients == 3 and cfg.launcher == "inprocess"
    assert cfg.to_spec().exclude == ("classifier",)  # the anchor flags are AnchorArguments'
    with pytest.raises(ValueError, match="anchor_ratio"):
        run_modelsoup.parse_config(["--quick", "--anchor_ratio", "1.5"])
    with pytest.raises(ValueError, match="multiple of vit_patch_size"):
        finetune.FinetuneConfig(vit_image_size=28, vit_patch_size=5)
    with pytest.raises(ValueError, match="not both"):
        run_modelsoup.parse_config(["--quick", "--smoke"])


def test_finetune_job_command_line_parses_back():
    """run_modelsoup.py hands each model to finetune.py as `dataclass_to_argv` of its settings objects."""
    cfg = run_modelsoup.parse_config(["--quick", "--device", "cpu", "--anchor_exclude", "classifier", "pooler"])
    hp = {"augment": "shift", "learning_rate": 0.00123, "weight_decay": 0.0456, "seed": 3, "label_smoothing": 0.1}
    job = soup_jobs.build_job(cfg, "x", Path("s.npz"), Path("out/ing0"), Path("log"), "tna", hp, "base", cfg.epochs)
    script, args = finetune.build_parser().parse_args_into_dataclasses(args=job.argv())
    assert script == job.script and script.base_model == "base" and script.augment == "shift"
    assert args.output_dir == "out/ing0" and args.learning_rate == 0.00123 and args.seed == 3
    assert args.label_smoothing_factor == 0.1 and args.num_train_epochs == cfg.epochs and args.use_cpu
    assert not args.dataloader_pin_memory and args.report_to in ("none", ["none"], [])  # finetune.py's defaults
    assert args.to_spec() == cfg.to_spec()


@pytest.mark.slow
def test_rerun_reuses_finished_steps_and_refuses_other_settings(run, capsys):
    work, results = run
    argv = [
        "--smoke",
        "--num_ingredients",
        "3",
        "--ingredient_time_budget_s",
        "0",
        "--work_dir",
        str(work),
        "--overwrite",
        "false",
    ]
    again = run_modelsoup.main(argv + ["--results_dir", str(work / "again")])
    assert capsys.readouterr().out.count("reusing") == 1 + 2 * 2  # base and both sets' ingredients
    for name in ("anchored", "vanilla"):
        for key in ("uniform", "greedy"):
            assert again["sets"][name][key]["test_acc"] == results["sets"][name][key]["test_acc"]
    with pytest.raises(ValueError, match="other settings.*epochs"):
        run_modelsoup.main(argv + ["--epochs", "7"])
