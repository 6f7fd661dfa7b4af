"""The one anchor verifier (hf_tna.verify): folders, Hub ids, models; several checkpoints at once; manifests
compared symmetrically, so an entry removed from one manifest cannot hide drift (`hf-tna verify`, soups)."""

import shutil

import pytest
import torch
from safetensors.torch import save_file

import hf_tna.verify as verify_module
from hf_tna import cli
from hf_tna.anchors import AnchorSpec, anchor_mask, build_layouts
from hf_tna.io import CheckpointReader
from hf_tna.manifest import CONFIG_NAME, TNAFileConfig, layout_from_manifest, manifest_entry
from hf_tna.merge.soup import build_soup
from hf_tna.verify import check_manifests_agree, verify_anchors, verify_anchors_many
from tests.common import build_tiny_bert

SPEC = AnchorSpec(ratio=0.4, seed=5)
TENSOR = "bert.pooler.dense.weight"


def _tensors(folder):
    with CheckpointReader(folder) as r:
        return {k: r.get(k) for k in r.keys()}


def _save(folder, tensors, config: TNAFileConfig, like):
    """A checkpoint folder: `tensors` as one safetensors file, the config.json of `like`, `config`."""
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "model.safetensors"))
    shutil.copy(like / "config.json", folder / "config.json")
    config.save(folder)
    return folder


def _move_anchors(tensors, manifest, key, by=1.0):
    """A copy of `tensors` whose anchored entries of `key` moved by `by`."""
    out = dict(tensors)
    mask = anchor_mask(layout_from_manifest(key, manifest[key]), SPEC)
    out[key] = torch.where(mask, tensors[key] + by, tensors[key])
    return out


@pytest.fixture(scope="session")
def ckpts(tmp_path_factory):
    """base; ft0, ft1 (free entries moved, anchors kept); drifted (ft0 with the anchors of TENSOR moved);
    doctored (drifted, with TENSOR's entry removed from its manifest)."""
    root = tmp_path_factory.mktemp("verify_ckpts")
    build_tiny_bert(seed=0).save_pretrained(root / "base")
    out = {"base": root / "base"}
    for i in range(2):
        model = build_tiny_bert(seed=0)
        g = torch.Generator().manual_seed(20 + i)
        manifest = {}
        with torch.no_grad():
            for layout, param in build_layouts(model, SPEC):
                manifest[layout.name] = manifest_entry(param, layout, SPEC)
                param.add_(torch.where(anchor_mask(layout, SPEC), 0.0, 0.05 * torch.randn(param.shape, generator=g)))
        model.save_pretrained(root / f"ft{i}", max_shard_size="4KB")
        TNAFileConfig(SPEC, manifest, base_model="tiny-bert").save(root / f"ft{i}")
        out[f"ft{i}"] = root / f"ft{i}"
    config = TNAFileConfig.load(out["ft0"])
    moved = _move_anchors(_tensors(out["ft0"]), config.manifest, TENSOR)
    out["drifted"] = _save(root / "drifted", moved, config, out["ft0"])
    partial = TNAFileConfig(SPEC, {k: v for k, v in config.manifest.items() if k != TENSOR}, "tiny-bert")
    out["doctored"] = _save(root / "doctored", moved, partial, out["ft0"])
    return out


def test_many_checkpoints_draw_each_mask_once_and_match_one_by_one(ckpts, monkeypatch):
    folders = [ckpts["ft0"], ckpts["ft1"], ckpts["drifted"]]
    singles = [verify_anchors(f, ckpts["base"]) for f in folders]
    drawn = []
    real = verify_module.AnchorSelection

    def counting(layout, spec, *args, **kwargs):
        drawn.append(layout.name)
        return real(layout, spec, *args, **kwargs)

    monkeypatch.setattr(verify_module, "AnchorSelection", counting)
    reports = verify_anchors_many(folders, ckpts["base"])
    manifest = TNAFileConfig.load(ckpts["ft0"]).manifest
    assert sorted(drawn) == sorted(manifest)  # one draw per anchored tensor, whatever the number of checkpoints
    assert reports == singles
    assert reports[0]["intact"] and reports[1]["intact"] and reports[0]["num_anchored"] > 0
    assert not reports[2]["intact"]
    assert [k for k, t in reports[2]["tensors"].items() if t["num_drifted"]] == [TENSOR]
    assert reports[2]["tensors"][TENSOR]["max_abs_drift"] == pytest.approx(1.0)
    by_hash = verify_anchors_many(folders)  # no base: the manifest hashes
    assert [r["intact"] for r in by_hash] == [True, True, False]
    assert [k for k, t in by_hash[2]["tensors"].items() if not t["hash_ok"]] == [TENSOR]


def test_in_memory_model_state_dict_and_folder_agree(ckpts):
    from transformers import BertForSequenceClassification

    config = TNAFileConfig.load(ckpts["ft0"])
    from_folder = verify_anchors(ckpts["ft0"], ckpts["base"])
    model = BertForSequenceClassification.from_pretrained(ckpts["ft0"])
    base = BertForSequenceClassification.from_pretrained(ckpts["base"])
    assert verify_anchors(model, base, config=config) == from_folder
    assert verify_anchors(_tensors(ckpts["ft0"]), ckpts["base"], config=config) == from_folder
    by_spec = verify_anchors(model, base, spec=SPEC)  # no manifest: the layouts come from the model
    assert by_spec["intact"] and by_spec["num_anchored"] == from_folder["num_anchored"]
    with pytest.raises(ValueError, match=rf"anchored tensor '{TENSOR}' is missing from the state dict"):
        verify_anchors({k: v for k, v in _tensors(ckpts["ft0"]).items() if k != TENSOR}, config=config)
    with pytest.raises(ValueError, match=rf"tensor '{TENSOR}' has shape .* in the base"):
        verify_anchors(ckpts["ft0"], {**_tensors(ckpts["base"]), TENSOR: torch.zeros(3)})


def test_folder_or_hub_id_through_the_store(ckpts, local_store, tmp_path, monkeypatch):
    local_store.create_repo("tna-org/ft0")
    sha = local_store.upload_folder("tna-org/ft0", ckpts["ft0"], "add checkpoint")
    by_folder = verify_anchors(ckpts["ft0"], ckpts["base"])
    assert verify_anchors(f"tna-org/ft0@{sha}", ckpts["base"], store=local_store) == by_folder
    assert verify_anchors("tna-org/ft0", store=str(local_store.root))["intact"]
    assert cli.main(["verify", f"tna-org/ft0@{sha}", "--store", str(local_store.root)]) == 0
    # a local folder at the path wins over the Hub id spelled the same
    cwd = tmp_path / "cwd"
    shutil.copytree(ckpts["drifted"], cwd / "tna-org" / "ft0")
    monkeypatch.chdir(cwd)
    assert not verify_anchors("tna-org/ft0", store=local_store)["intact"]
    with pytest.raises(FileNotFoundError, match="the folder ./missing/model does not exist"):
        verify_anchors("./missing/model")
    with pytest.raises(ValueError, match="nobody/nothing is not a local folder"):
        verify_anchors("nobody/nothing", store=local_store)


def test_manifests_compared_symmetrically(ckpts):
    full = TNAFileConfig.load(ckpts["ft0"])
    key = sorted(full.manifest)[0]
    missing = TNAFileConfig(SPEC, {k: v for k, v in full.manifest.items() if k != key})
    changed = TNAFileConfig(SPEC, {**full.manifest, key: {**full.manifest[key], "sha256": "0" * 64}})
    assert check_manifests_agree([full, TNAFileConfig.load(ckpts["ft1"])], ["a", "b"]) is full
    for order in ([full, missing], [missing, full]):
        names = ["full", "partial"] if order[0] is full else ["partial", "full"]
        with pytest.raises(ValueError, match=rf"^partial: {CONFIG_NAME} does not list anchored tensor '{key}'"):
            check_manifests_agree(order, names)
    for order in ([full, changed], [changed, full]):
        with pytest.raises(ValueError, match=rf"anchored tensor '{key}' has other anchor values"):
            check_manifests_agree(order, ["x", "y"])
    other_spec = TNAFileConfig(AnchorSpec(ratio=0.2, seed=5), full.manifest)
    with pytest.raises(ValueError, match="y was anchored with .*one anchor spec"):
        check_manifests_agree([full, other_spec], ["x", "y"])


def test_entry_removed_from_one_manifest_cannot_hide_drift(ckpts, tmp_path, capsys):
    doctored, clean = ckpts["doctored"], ckpts["ft1"]
    for order, index in (([doctored, clean], 0), ([clean, doctored], 1)):
        with pytest.raises(ValueError, match=rf"ingredient {index} \(.*doctored\): {CONFIG_NAME} does not list "
                                             rf"anchored tensor '{TENSOR}'"):
            build_soup(order, tmp_path / "soup", progress=False)
        assert not (tmp_path / "soup").exists()
    # with the base, the unlisted tensor is compared with it: its moved anchors make the checkpoint not intact
    report = verify_anchors(doctored, ckpts["base"])
    assert not report["intact"] and report["unlisted"] == report["unlisted_changed"] == [TENSOR]
    assert TENSOR not in report["tensors"] and report["fraction_intact"] == 1.0
    # without a base it cannot be told from a frozen parameter: it is reported, not judged
    alone = verify_anchors(doctored)
    assert alone["unlisted"] == [TENSOR] and alone["unlisted_changed"] == []
    clean_report = verify_anchors(clean, ckpts["base"])
    assert clean_report["intact"] and clean_report["unlisted"] == []
    capsys.readouterr()
    assert cli.main(["verify", str(doctored), "--base", str(ckpts["base"])]) == 1
    out = capsys.readouterr().out
    assert "anchors intact" not in out and "ANCHORS UNVERIFIED" in out and f"not in the manifest: {TENSOR}" in out
    assert cli.main(["verify", str(doctored)]) == 0
    assert "pass --base to compare them" in capsys.readouterr().out
    assert cli.main(["verify", str(ckpts["drifted"])]) == 1
    assert "ANCHORS DRIFTED" in capsys.readouterr().out
    assert cli.main(["verify", str(clean), "--base", str(ckpts["base"])]) == 0
    assert "anchors intact" in capsys.readouterr().out
