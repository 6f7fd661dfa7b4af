"""Streamed, validated soups of real (tiny) checkpoints: hf_tna.merge.soup, hf_tna.merge.lora, the soup CLI."""

import json
import os
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open

from hf_tna import cli
from hf_tna.anchors import AnchorSpec, anchor_mask, build_layouts
from hf_tna.io import CheckpointReader
from hf_tna.manifest import TNAFileConfig, manifest_entry
from hf_tna.merge.ingredients import checkpoint_state_dict
from hf_tna.merge.soup import build_soup, interpolate_checkpoints
from hf_tna.verify import verify_anchors
from tests.common import build_tiny_bert, build_tiny_vit

SPEC = AnchorSpec(ratio=0.4, seed=3)
SHARD = "4KB"


def _finetune_like(model, spec, seed):
    """Move the free entries of every anchored parameter (as fine-tuning with anchors would)."""
    g = torch.Generator().manual_seed(seed)
    manifest = {}
    with torch.no_grad():
        for layout, param in build_layouts(model, spec):
            manifest[layout.name] = manifest_entry(param, layout, spec)
            mask = anchor_mask(layout, spec)
            param.add_(torch.where(mask, 0.0, 0.05 * torch.randn(param.shape, generator=g)))
    return manifest


@pytest.fixture(scope="session")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("soup_ckpts")
    out = {}
    for i in range(3):
        model = build_tiny_bert(seed=0)
        manifest = _finetune_like(model, SPEC, seed=10 + i)
        model.save_pretrained(root / f"bert{i}", max_shard_size=SHARD)
        TNAFileConfig(SPEC, manifest, base_model="tiny-bert").save(root / f"bert{i}")
        out[f"bert{i}"] = root / f"bert{i}"
    base = build_tiny_bert(seed=0)
    base.save_pretrained(root / "base")
    out["base"] = root / "base"
    plain = build_tiny_bert(seed=1)
    plain.save_pretrained(root / "plain", max_shard_size=SHARD)
    out["plain"] = root / "plain"
    other = build_tiny_bert(seed=0, num_labels=5)
    other.save_pretrained(root / "other_shape")
    out["other_shape"] = root / "other_shape"
    for i in range(2):
        build_tiny_vit(seed=i).save_pretrained(root / f"vit{i}", max_shard_size=SHARD)
        out[f"vit{i}"] = root / f"vit{i}"
    return out


def _tensors(folder):
    with CheckpointReader(folder) as r:
        return {k: r.get(k) for k in r.keys()}


def _no_leftovers(parent, name):
    assert not (parent / name).exists()
    assert not [p for p in os.listdir(parent) if p.startswith(f".{name}.tmp")]


def test_soup_of_identical_checkpoints_is_the_input_bitwise(ckpts, tmp_path):
    src = ckpts["bert0"]
    report = build_soup([src, src, str(src)], tmp_path / "soup", max_shard_size=SHARD, progress=False)
    out, ref = _tensors(tmp_path / "soup"), _tensors(src)
    assert out.keys() == ref.keys()
    assert all(torch.equal(out[k].view(torch.uint8), ref[k].view(torch.uint8)) for k in ref)
    assert "model.safetensors.index.json" in report.files and "config.json" in report.files
    assert len([f for f in report.files if f.endswith(".safetensors")]) > 1


def test_anchored_soup_keeps_anchors_and_writes_recipe_card_config(ckpts, tmp_path):
    srcs = [ckpts[f"bert{i}"] for i in range(3)]
    build_soup(srcs, tmp_path / "soup", merge_method="weighted", weights=[1, 2, 3], progress=False)
    out, first = _tensors(tmp_path / "soup"), _tensors(srcs[0])
    assert out.keys() == first.keys() and all(out[k].dtype == first[k].dtype for k in out)
    report = verify_anchors(tmp_path / "soup")
    assert report["intact"] and report["num_anchored"] > 0
    ref = sum(w * _tensors(s)["classifier.weight"].double() for w, s in zip([1, 2, 3], srcs)) / 6
    assert torch.allclose(out["classifier.weight"].double(), ref, atol=1e-6)
    recipe = yaml.safe_load((tmp_path / "soup" / "fusion_recipe.yaml").read_text())  # mergekit's linear format
    assert recipe["merge_method"] == "linear" and [m["parameters"]["weight"] for m in recipe["models"]] == [1, 2, 3]
    assert [m["model"] for m in recipe["models"]] == [str(s.resolve()) for s in srcs]
    assert recipe["dtype"] == "float32" and recipe["parameters"] == {"normalize": True}
    card = (tmp_path / "soup" / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert "base_model" not in meta and "base_model_relation" not in meta  # local folders: named in the body only
    assert all(f"`{s}`" in card for s in srcs)
    assert meta["tags"] == ["hf_tna", "merge", "model-soup", "tna-pfn"] and meta["library_name"] == "transformers"
    assert "ratio 0.4, seed 3" in card and f"hf-tna verify {tmp_path / 'soup'}" in card
    assert TNAFileConfig.load(tmp_path / "soup").spec == SPEC


def test_vit_checkpoint_keys_are_preserved(ckpts, tmp_path):
    build_soup([ckpts["vit0"], ckpts["vit1"]], tmp_path / "soup", progress=False)
    with CheckpointReader(ckpts["vit0"]) as r:
        keys = set(r.keys())
    assert set(_tensors(tmp_path / "soup")) == keys
    from transformers import ViTForImageClassification

    models = [ViTForImageClassification.from_pretrained(ckpts[f"vit{i}"]) for i in range(2)]
    assert set(checkpoint_state_dict(models[0])) == keys
    with pytest.warns(UserWarning, match="un-anchored"):
        build_soup(models, tmp_path / "mem", progress=False)
    a, b = _tensors(tmp_path / "soup"), _tensors(tmp_path / "mem")
    assert all(torch.equal(a[k], b[k]) for k in keys)


@pytest.mark.parametrize("bad", ["other_shape", "nan", "other_spec", "plain_required"])
def test_mismatched_ingredient_refused_and_no_output(ckpts, tmp_path, bad):
    srcs = [ckpts["bert0"], ckpts["bert1"]]
    kwargs = {}
    if bad == "other_shape":
        srcs.append(ckpts["other_shape"])
        match = r"ingredient 2 \(.*other_shape\): tensor 'classifier.bias' has shape \(5,\)"
    elif bad == "nan":
        sd = _tensors(ckpts["bert1"])
        sd["bert.pooler.dense.bias"][2] = float("nan")
        srcs.append(sd)
        match = r"state dict 2: tensor 'bert.pooler.dense.bias' has 1 NaN"
    elif bad == "other_spec":
        bad_dir = tmp_path / "respec"
        bad_dir.mkdir()
        for f in ckpts["bert1"].iterdir():
            (bad_dir / f.name).write_bytes(f.read_bytes())
        cfg = TNAFileConfig.load(bad_dir)
        TNAFileConfig(AnchorSpec(ratio=0.2, seed=3), cfg.manifest).save(bad_dir)
        srcs.append(bad_dir)
        match = r"ingredient 2 \(.*respec\) was anchored with .*one anchor spec"
    else:
        srcs.append(ckpts["plain"])
        kwargs["require_anchors"] = True
        match = r"ingredient 2 \(.*plain\) has no tna_config.json"
    with pytest.raises(ValueError, match=match):
        build_soup(srcs, tmp_path / "soup", progress=False, **kwargs)
    _no_leftovers(tmp_path, "soup")


def test_unanchored_ingredient_warned_by_name(ckpts, tmp_path):
    with pytest.warns(UserWarning, match=r"ingredient 1 \(.*plain\)"):
        report = build_soup([ckpts["bert0"], ckpts["plain"]], tmp_path / "soup", progress=False)
    assert report.anchors is None and not (tmp_path / "soup" / "tna_config.json").exists()


def test_pickle_refused_unless_allowed(ckpts, tmp_path):
    pkl = tmp_path / "pkl"
    pkl.mkdir()
    torch.save(_tensors(ckpts["base"]), pkl / "pytorch_model.bin")
    with pytest.raises(ValueError, match="pickle"):
        build_soup([pkl, ckpts["base"]], tmp_path / "soup", progress=False)
    _no_leftovers(tmp_path, "soup")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_soup([pkl, ckpts["base"]], tmp_path / "soup", allow_pickle=True, progress=False)
    assert all(torch.equal(v, _tensors(ckpts["base"])[k]) for k, v in _tensors(tmp_path / "soup").items())


def test_interpolation_endpoints_and_dtype(ckpts, tmp_path):
    a, b = ckpts["bert0"], ckpts["bert1"]
    for alpha, ref in ((0.0, a), (1.0, b)):
        interpolate_checkpoints(a, b, alpha, tmp_path / f"i{alpha}", progress=False)
        out, want = _tensors(tmp_path / f"i{alpha}"), _tensors(ref)
        assert all(torch.equal(out[k], want[k]) for k in want)
    build_soup([a, b], tmp_path / "bf16", dtype="bfloat16", progress=False)
    assert {t.dtype for t in _tensors(tmp_path / "bf16").values() if t.is_floating_point()} == {torch.bfloat16}
    assert verify_anchors(tmp_path / "bf16")["intact"]


def test_greedy_soup_on_checkpoints(ckpts, tmp_path):
    target = _tensors(ckpts["bert1"])

    def score(sd):  # held-out stand-in: closeness to bert1's classifier
        return -float((sd["classifier.weight"] - target["classifier.weight"]).abs().sum())

    report = build_soup(
        [ckpts[f"bert{i}"] for i in range(3)], tmp_path / "g", merge_method="greedy", score_fn=score, progress=False
    )
    assert report.kept[0] == 1 and report.recipe["kept"] == report.kept
    assert torch.equal(_tensors(tmp_path / "g")["classifier.weight"], target["classifier.weight"])
    assert "greedy" in (tmp_path / "g" / "README.md").read_text()


def _lora_adapters(tmp_path, n=2):
    from peft import LoraConfig, get_peft_model

    folders, merged = [], []
    for i in range(n):
        model = get_peft_model(
            build_tiny_bert(seed=0),
            LoraConfig(r=2, lora_alpha=4, target_modules=["query", "value"], modules_to_save=["classifier"]),
        )
        torch.manual_seed(100 + i)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name or "modules_to_save" in name:
                    p.add_(0.1 * torch.randn_like(p))
        model.save_pretrained(tmp_path / f"lora{i}")
        folders.append(tmp_path / f"lora{i}")
        merged.append(checkpoint_state_dict(model.merge_and_unload()))
    return folders, merged


def test_lora_adapters_souped_as_merged_updates(ckpts, tmp_path):
    folders, merged = _lora_adapters(tmp_path)
    with pytest.raises(ValueError, match="pass base="):
        build_soup(folders, tmp_path / "soup", progress=False)
    build_soup(folders, tmp_path / "soup", base=ckpts["base"], progress=False)
    out = _tensors(tmp_path / "soup")
    assert set(out) == set(_tensors(ckpts["base"]))
    for k in out:
        ref = (merged[0][k].double() + merged[1][k].double()) / 2
        assert torch.allclose(out[k].double(), ref, atol=1e-6), k
    with pytest.warns(UserWarning, match="not the mean"):
        build_soup(folders, tmp_path / "factors", lora_mode="factors", progress=False)
    assert (tmp_path / "factors" / "adapter_config.json").exists()
    with safe_open(str(tmp_path / "factors" / "adapter_model.safetensors"), "pt") as f:
        assert set(f.keys()) == set(_tensors(folders[0]))
    from peft import PeftModel

    in_memory = [PeftModel.from_pretrained(build_tiny_bert(seed=0), f) for f in folders]
    build_soup(in_memory, tmp_path / "mem", base=ckpts["base"], progress=False)
    mem = _tensors(tmp_path / "mem")
    assert all(torch.allclose(mem[k], out[k], atol=1e-6) for k in out)
    with pytest.warns(UserWarning, match="not the mean"):
        build_soup(in_memory, tmp_path / "mem_factors", lora_mode="factors", progress=False)
    assert json.loads((tmp_path / "mem_factors" / "adapter_config.json").read_text())["r"] == 2


@pytest.mark.parametrize("command", ["soup", "interpolate", "barrier"])
def test_cli_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    assert exc.value.code == 0
    assert command in capsys.readouterr().out


def test_cli_soup_from_recipe_and_flags(ckpts, tmp_path, capsys):
    recipe = {
        "models": [
            {"model": str(ckpts["bert0"]), "parameters": {"weight": 1}},
            {"model": str(ckpts["bert1"]), "parameters": {"weight": 3}},
        ],
        "merge_method": "linear",
        "dtype": "float32",
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    assert (
        cli.main(["soup", "--recipe", str(tmp_path / "r.yaml"), "--output", str(tmp_path / "a"), "--no-progress"]) == 0
    )
    assert (
        cli.main(
            [
                "soup",
                str(ckpts["bert0"]),
                str(ckpts["bert1"]),
                "--weights",
                "1",
                "3",
                "--output",
                str(tmp_path / "b"),
                "--no-progress",
            ]
        )
        == 0
    )
    a, b = _tensors(tmp_path / "a"), _tensors(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert Path(printed["output_dir"]) == tmp_path / "b"
    assert (
        cli.main(
            [
                "interpolate",
                str(ckpts["bert0"]),
                str(ckpts["bert1"]),
                "--alpha",
                "0",
                "--output",
                str(tmp_path / "c"),
                "--no-progress",
            ]
        )
        == 0
    )
    assert all(torch.equal(v, _tensors(ckpts["bert0"])[k]) for k, v in _tensors(tmp_path / "c").items())


@pytest.mark.parametrize("which", ["hub_store", "local_store"])
def test_store_push_and_download_round_trip(ckpts, tmp_path, which, request):
    store = request.getfixturevalue(which)
    shas = []
    for i in range(2):
        store.create_repo(f"tna-org/bert{i}", exist_ok=True)
        shas.append(store.upload_folder(f"tna-org/bert{i}", ckpts[f"bert{i}"], "add checkpoint"))
    refs = ["tna-org/bert0", f"tna-org/bert1@{shas[1]}"]
    report = build_soup(
        refs, tmp_path / "soup", store=store, push_to_hub="tna-org/soup", hub_revision="exp", progress=False
    )
    assert report.hub["revision"] == "exp"
    recipe = yaml.safe_load((tmp_path / "soup" / "fusion_recipe.yaml").read_text())
    assert [m["model"] for m in recipe["models"]] == [f"tna-org/bert{i}@{sha}" for i, sha in enumerate(shas)]
    meta = yaml.safe_load((tmp_path / "soup" / "README.md").read_text().split("---")[1])
    assert meta["base_model"] == ["tna-org/bert0", "tna-org/bert1"]
    folder, sha = store.download("tna-org/soup", "exp")
    assert sha == report.hub["sha"]
    pulled, local = _tensors(folder), _tensors(tmp_path / "soup")
    assert pulled.keys() == local.keys() and all(torch.equal(pulled[k], local[k]) for k in local)
    assert verify_anchors(folder)["intact"]


def test_chunked_streaming_equals_whole_tensor_fusion(ckpts, tmp_path, monkeypatch):
    from hf_tna.merge import ops, writer

    monkeypatch.setattr(writer, "CHUNK_ELEMENTS", 37)  # many chunks per tensor, ragged ends
    srcs = [ckpts[f"bert{i}"] for i in range(3)]
    build_soup(srcs, tmp_path / "w", merge_method="weighted", weights=[1, 2, 3], progress=False)
    build_soup([srcs[0]] * 3, tmp_path / "same", progress=False)
    interpolate_checkpoints(srcs[0], srcs[1], 0.3, tmp_path / "i", progress=False)
    sds = [_tensors(s) for s in srcs]
    want = ops.weighted_soup(sds, [1, 2, 3])
    out, same, mid = _tensors(tmp_path / "w"), _tensors(tmp_path / "same"), _tensors(tmp_path / "i")
    assert all(torch.equal(out[k], want[k]) for k in want)
    assert all(torch.equal(same[k], sds[0][k]) for k in want)
    assert all(torch.equal(mid[k], ops.interpolate(sds[0], sds[1], 0.3)[k]) for k in want)


def test_unknown_ingredient_named(ckpts, tmp_path, local_store):
    with pytest.raises(ValueError, match=r"ingredient 1: nobody/nothing is not a local folder"):
        build_soup([ckpts["bert0"], "nobody/nothing"], tmp_path / "soup", store=local_store, progress=False)
    with pytest.raises(FileNotFoundError, match=r"ingredient 1 \(.*\): no safetensors weights"):
        build_soup([ckpts["bert0"], tmp_path], tmp_path / "soup", progress=False)
    with pytest.raises(FileNotFoundError, match="neither a folder nor a Hub repo id"):
        build_soup(["./missing/x/y"], tmp_path / "soup", progress=False)
