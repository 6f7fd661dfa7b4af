"""Model cards (hf_tna.card): every card hf_tna writes (soups, ColD fusion bases, trainers) passes the loopback Hub's
metadata rules (`ModelCard.validate()` against tests/fixtures/hub_server.py) and carries the one anchor section."""

import pytest
import torch
import yaml
from huggingface_hub import ModelCard

from hf_tna.anchors import AnchorSpec
from hf_tna.card import ANCHOR_SECTION_TITLE, anchor_section, append_anchor_section, build_card, hub_model_ids
from hf_tna.manifest import TNAFileConfig
from hf_tna.merge.soup import build_soup
from tests.common import build_tiny_bert
from tests.test_soup import SPEC, _finetune_like


def _meta(path):
    return yaml.safe_load(path.read_text().split("---")[1])


@pytest.fixture(scope="module")
def anchored(tmp_path_factory):
    root = tmp_path_factory.mktemp("card_ckpts")
    for i in range(2):
        model = build_tiny_bert(seed=0)
        manifest = _finetune_like(model, SPEC, seed=40 + i)
        model.save_pretrained(root / f"bert{i}")
        TNAFileConfig(SPEC, manifest, base_model="tiny/bert").save(root / f"bert{i}")
    return [root / "bert0", root / "bert1"]


@pytest.mark.parametrize("meta, match", [
    ("base_model: org/a@main", r"\"base_model\" must be a list of valid model ids, got 'org/a@main'"),
    ("base_model:\n- /tmp/local/folder", "valid model ids"),
    ("base_model:\n- ./folder/x", "valid model ids"),
    ("base_model: org/a\nbase_model_relation: fork", r"\"base_model_relation\" must be one of adapter, merge"),
    ("base_model_relation: merge", r"\"base_model_relation\" needs \"base_model\""),
    ("tags:\n- 1\n- two", r"\"tags\" must be a list of strings"),
])
def test_loopback_hub_enforces_the_metadata_rules(hub_server, meta, match):
    with pytest.raises(ValueError, match=match):
        ModelCard(f"---\n{meta}\n---\n\n# A model\n").validate()


def test_built_cards_keep_only_hub_ids_in_base_model(hub_server, tmp_path):
    (tmp_path / "org" / "local").mkdir(parents=True)
    refs = ["org/a@0123abc", str(tmp_path), "org/a", "bad id!", None, "other/b", str(tmp_path / "org" / "local")]
    assert hub_model_ids(refs) == ["org/a", "other/b"]
    card = build_card("# Soup", base_model=refs, base_model_relation="merge", tags=["hf_tna", "merge"])
    card.validate()
    assert card.data.base_model == ["org/a", "other/b"] and card.data.base_model_relation == "merge"
    alone = build_card("# Soup", base_model=[str(tmp_path)], base_model_relation="merge")
    alone.validate()  # no Hub id: neither base_model nor its relation is written
    assert alone.data.base_model is None and alone.data.to_dict().get("base_model_relation") is None
    with pytest.raises(ValueError, match="base_model_relation must be one of"):
        build_card("# x", base_model=["org/a"], base_model_relation="fork")


def test_anchor_section_is_written_for_people():
    spec = AnchorSpec(ratio=0.25, seed=7, granularity="neuron", include=("encoder",), exclude=("classifier",))
    text = anchor_section(spec, verify="org/my soup", base_model="org/base", base_revision="abc123", num_tensors=12)
    assert text.startswith(ANCHOR_SECTION_TITLE)
    assert "25% of the output units of tensors matching `encoder`, except those matching `classifier` (a row" in text
    assert "ratio 0.25, seed 7, granularity `neuron`, round 0" in text
    assert "`org/base` at revision `abc123`" in text and "the 12 anchored tensors" in text
    assert "hf-tna verify 'org/my soup'" in text
    assert "None" not in anchor_section(AnchorSpec())


def test_local_soup_card(hub_server, anchored, tmp_path):
    build_soup(anchored, tmp_path / "soup", weights=[1, 3], exclude=["pooler"], progress=False)
    path = tmp_path / "soup" / "README.md"
    ModelCard.load(path).validate()
    meta = _meta(path)
    assert "base_model" not in meta and meta["tags"] == ["hf_tna", "merge", "model-soup", "tna-pfn"]
    text = path.read_text()
    assert f"| 0 | `{anchored[0]}` | local folder | 1 |" in text
    assert "Tensors matching `pooler` were not fused but copied from ingredient 0." in text
    assert text.count(ANCHOR_SECTION_TITLE) == 1 and "ratio 0.4, seed 3" in text and "`tiny/bert`" in text
    assert f"hf-tna verify {tmp_path / 'soup'}" in text
    assert "None" not in text


def test_pushed_soup_card_names_hub_ids_and_the_repo_to_verify(hub_server, hub_store, anchored, tmp_path):
    shas = []
    for i, folder in enumerate(anchored):
        hub_store.create_repo(f"card-org/bert{i}", exist_ok=True)
        shas.append(hub_store.upload_folder(f"card-org/bert{i}", folder, "add"))
    refs = ["card-org/bert0", f"card-org/bert1@{shas[1]}"]
    result = build_soup(refs, tmp_path / "soup", store=hub_store, push_to_hub="card-org/soup", progress=False)
    path = tmp_path / "soup" / "README.md"
    ModelCard.load(path).validate()
    meta = _meta(path)
    assert meta["base_model"] == ["card-org/bert0", "card-org/bert1"] and meta["base_model_relation"] == "merge"
    text = path.read_text()
    assert all(f"`{sha}`" in text for sha in shas) and "hf-tna verify card-org/soup\n" in text
    pushed = hub_store.read_file("card-org/soup", "README.md", result.hub["sha"]).decode()
    ModelCard(pushed).validate()


def test_greedy_and_adapter_soup_cards(hub_server, anchored, tmp_path):
    target = torch.zeros(2, 16)

    def score(sd):
        return -float((sd["classifier.weight"] - target).abs().sum())

    build_soup(anchored, tmp_path / "greedy", merge_method="greedy", score_fn=score, progress=False)
    ModelCard.load(tmp_path / "greedy" / "README.md").validate()
    text = (tmp_path / "greedy" / "README.md").read_text()
    assert "## Scores" in text and "| kept |" in text and "Soup score:" in text

    from tests.test_soup import _lora_adapters

    folders, _ = _lora_adapters(tmp_path)
    with pytest.warns(UserWarning, match="not the mean"):
        build_soup(folders, tmp_path / "factors", lora_mode="factors", progress=False)
    card = ModelCard.load(tmp_path / "factors" / "README.md")
    card.validate()
    assert card.data.library_name == "peft" and "A and B factors were fused separately" in card.text


def test_coldfuse_base_card(hub_server, tmp_path):
    from hf_tna.coldfuse.card import model_card

    state = {"round": 2, "weighting": "examples", "base_model": str(tmp_path), "parent_revision": "f" * 40,
             "round_anchor_spec": AnchorSpec(ratio=0.3, seed=1, round=2).to_dict(), "redraw_anchors": True,
             "contributions": [
                 {"contributor": "ann", "task": "sst2", "num_labels": 2, "num_examples": 10, "weight": 0.5,
                  "metrics": {"eval_accuracy": 0.75}, "ingredient": f"org/cold@{'a' * 40}"},
                 {"contributor": "bob", "task": "a|b", "num_labels": 3, "num_examples": 10, "weight": 0.5,
                  "metrics": None, "ingredient": f"bob/contrib@{'b' * 40}"}],
             "rejected": [{"contributor": "eve", "ingredient": "eve/x@c", "reason": "drifted | badly"}],
             "history": [{"round": 1, "revision": "d" * 40, "contributions": ["org/cold@e"]}]}
    card = ModelCard(model_card("org/cold", state))
    card.validate()
    assert card.data.base_model == ["bob/contrib"] and card.data.base_model_relation == "merge"
    assert f"`{tmp_path}` (not on the Hub)" in card.text and "| a/b |" in card.text
    assert card.text.count(ANCHOR_SECTION_TITLE) == 1 and "ratio 0.3, seed 1" in card.text
    assert "re-drawn each round" in card.text and "hf-tna verify org/cold" in card.text
    state["base_model"] = "tiny/bert"
    assert ModelCard(model_card("org/cold", state)).data.base_model == ["tiny/bert", "bob/contrib"]


def test_trainer_card_gets_one_anchor_section_and_only_hub_ids(hub_server, tmp_path):
    from transformers import TrainingArguments

    from hf_tna import TNATrainer

    spec = AnchorSpec(ratio=0.4, seed=5)
    args = TrainingArguments(output_dir=str(tmp_path / "run"), report_to="none", use_cpu=True)
    trainer = TNATrainer(model=build_tiny_bert(), args=args, anchor_spec=spec)
    local_base = tmp_path / "pretrained"
    local_base.mkdir()
    trainer.create_model_card(model_name="tiny", finetuned_from=str(local_base))
    trainer.create_model_card(model_name="tiny", finetuned_from=str(local_base))  # again: still one section
    path = tmp_path / "run" / "README.md"
    card = ModelCard.load(path)
    card.validate()
    assert not card.data.base_model and f"`{local_base}` (not on the Hub)" in card.text
    assert {"hf_tna", "tna-pfn"} <= set(card.data.tags)
    assert card.text.count(ANCHOR_SECTION_TITLE) == 1 and "ratio 0.4, seed 5" in card.text
    assert f"hf-tna verify {tmp_path / 'run'}" in card.text
    trainer.args.push_to_hub, trainer.hub_model_id = True, "me/tiny-run"  # as after init_hf_repo
    trainer.create_model_card(model_name="tiny", finetuned_from="google/bert-tiny@main")
    card = ModelCard.load(path)
    card.validate()
    assert card.data.base_model == "google/bert-tiny" or card.data.base_model == ["google/bert-tiny"]
    assert "hf-tna verify me/tiny-run\n" in card.text and f"hf-tna verify {tmp_path}" not in card.text


def test_section_appended_to_another_librarys_card(hub_server, tmp_path):
    path = tmp_path / "README.md"
    path.write_text("---\nlibrary_name: transformers\ntags:\n- trl\n- sft\nbase_model: org/m\n---\n\n# Model trained "
                    "with TRL\n\n## Quick start\n\ntext\n\n## Citations\n\ncite\n")
    for _ in range(2):  # TRL writes its card at every checkpoint; the section is replaced, never repeated
        append_anchor_section(path, SPEC, verify="org/run")
    card = ModelCard.load(path)
    card.validate()
    assert card.data.tags == ["trl", "sft", "hf_tna", "tna-pfn"] and card.data.base_model == ["org/m"]
    assert card.text.count(ANCHOR_SECTION_TITLE) == 1 and "## Quick start" in card.text and "## Citations" in card.text
    assert append_anchor_section(tmp_path / "missing.md", SPEC) is None
