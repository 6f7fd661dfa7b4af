"""Shared initialisation of new weights: contributors with different seeds start their fresh heads, new embedding
rows and adapters from the same values, so their anchored runs fuse (and are verified) like everything else."""

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, TrainingArguments

from hf_tna import AnchorSpec, TNATrainer, verify_anchors
from hf_tna.manifest import CONFIG_NAME, FORMAT_VERSION, TNAFileConfig
from hf_tna.merge.soup import build_soup
from hf_tna.shared_init import find_new_weights, shared_initialize
from tests.common import build_tiny_bert, build_tiny_llama, text_dataset

SPEC = AnchorSpec(ratio=0.4, seed=7)


@pytest.fixture(scope="module")
def body(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shared") / "body"
    build_tiny_bert(num_labels=2).bert.save_pretrained(folder)  # a pretrained body, no head
    return folder


def _args(out, seed, **extra):
    return TrainingArguments(output_dir=str(out), per_device_train_batch_size=8, max_steps=3, learning_rate=1e-2,
                             report_to="none", use_cpu=True, save_strategy="no", seed=seed, **extra)


def _run(body, out, seed, **trainer_kwargs):
    torch.manual_seed(seed)  # each contributor's own seed: its fresh head differs before shared init
    model = AutoModelForSequenceClassification.from_pretrained(body, num_labels=3)
    head_before = model.classifier.weight.detach().clone()
    trainer = TNATrainer(model=model, args=_args(out, seed), train_dataset=text_dataset(num_labels=3),
                         anchor_spec=SPEC, **trainer_kwargs)
    head_start = model.classifier.weight.detach().clone()
    trainer.train()
    trainer.save_model(str(out))
    return trainer, head_before, head_start, model


def test_fresh_heads_start_equal_and_their_runs_fuse(body, tmp_path):
    t1, before1, start1, m1 = _run(body, tmp_path / "run1", seed=1)
    t2, before2, start2, m2 = _run(body, tmp_path / "run2", seed=2)
    assert not torch.equal(before1, before2)  # the global RNG gave two heads
    assert torch.equal(start1, start2)  # shared initialisation gave one
    assert sorted(t1.shared_init) == ["classifier.bias", "classifier.weight"]
    config = json.loads((tmp_path / "run1" / CONFIG_NAME).read_text())
    assert config["format_version"] == FORMAT_VERSION == 2
    assert config["shared_init"] == {"classifier.bias": None, "classifier.weight": None}
    assert not torch.equal(m1.classifier.weight, m2.classifier.weight)  # both heads trained
    build_soup([tmp_path / "run1", tmp_path / "run2"], tmp_path / "soup", progress=False)
    assert verify_anchors(tmp_path / "soup")["intact"]
    from safetensors.torch import load_file

    soup = load_file(tmp_path / "soup" / "model.safetensors")
    mean = (m1.classifier.weight.double() + m2.classifier.weight.double()) / 2
    assert torch.allclose(soup["classifier.weight"].double(), mean, atol=1e-7)


def test_without_shared_init_the_soup_is_refused_naming_the_flag(body, tmp_path):
    from hf_tna import TNAConfig

    for seed in (1, 2):
        torch.manual_seed(seed)
        model = AutoModelForSequenceClassification.from_pretrained(body, num_labels=3)
        args = TNAConfig(output_dir=str(tmp_path / f"r{seed}"), max_steps=1, report_to="none", use_cpu=True,
                         save_strategy="no", anchor_ratio=0.4, anchor_seed=7, anchor_shared_init=False)
        trainer = TNATrainer(model=model, args=args, train_dataset=text_dataset(num_labels=3))
        assert trainer.shared_init == {}
        trainer.train()
        trainer.save_model(str(tmp_path / f"r{seed}"))
    with pytest.raises(ValueError, match="anchor_shared_init"):
        build_soup([tmp_path / "r1", tmp_path / "r2"], tmp_path / "soup", progress=False)


def test_lora_contributors_share_their_adapter_init(body, tmp_path):
    from peft import LoraConfig, get_peft_model

    starts = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        base = AutoModelForSequenceClassification.from_pretrained(body, num_labels=3)
        model = get_peft_model(base, LoraConfig(r=4, target_modules=["query", "value"], lora_dropout=0.0))
        trainer = TNATrainer(model=model, args=_args(tmp_path / f"l{seed}", seed), anchor_spec=SPEC,
                             train_dataset=text_dataset(num_labels=3))
        starts.append({n: p.detach().clone() for n, p in model.named_parameters() if "lora_A" in n})
        assert any("lora_A" in name for name in trainer.shared_init)
        trainer.train()
        trainer.save_model(str(tmp_path / f"l{seed}"))
    assert starts[0].keys() == starts[1].keys() and all(torch.equal(starts[0][k], starts[1][k]) for k in starts[0])
    for seed in (1, 2):
        assert verify_anchors(tmp_path / f"l{seed}")["intact"]


def test_resized_embeddings_reinitialise_only_the_new_rows(tmp_path):
    from transformers import AutoModelForCausalLM

    build_tiny_llama().save_pretrained(tmp_path / "lm")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "lm")
    old = model.model.embed_tokens.weight.detach().clone()
    model.resize_token_embeddings(old.shape[0] + 4, mean_resizing=False)
    shared = shared_initialize(model, SPEC)
    assert shared["model.embed_tokens.weight"] == [old.shape[0], old.shape[0] + 4]
    weight = model.model.embed_tokens.weight.detach()
    assert torch.equal(weight[: old.shape[0]], old)  # loaded rows untouched
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "lm")
    again.resize_token_embeddings(old.shape[0] + 4, mean_resizing=False)
    shared_initialize(again, SPEC)
    assert torch.equal(again.model.embed_tokens.weight, weight)  # the same new rows in every run


def test_models_built_from_a_config_are_left_alone():
    model = build_tiny_bert()
    assert find_new_weights(model) == {} and shared_initialize(model, SPEC) == {}


def test_version_1_files_still_read(tmp_path):
    config = TNAFileConfig(SPEC, {}).to_dict()
    config["format_version"] = 1
    del config["shared_init"]
    (tmp_path / CONFIG_NAME).write_text(json.dumps(config))
    assert TNAFileConfig.load(tmp_path).shared_init == {}


def test_ffa_lora_freezes_shared_a_and_the_soup_of_bs_is_the_mean_update(body, tmp_path):
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file

    from hf_tna import TNAConfig

    folders, a_start = [], []
    for seed in (1, 2):
        torch.manual_seed(seed)
        base = AutoModelForSequenceClassification.from_pretrained(body, num_labels=3)
        model = get_peft_model(base, LoraConfig(r=4, target_modules=["query", "value"], lora_dropout=0.0))
        args = TNAConfig(output_dir=str(tmp_path / f"fa{seed}"), per_device_train_batch_size=8, max_steps=3,
                         learning_rate=1e-2, report_to="none", use_cpu=True, save_strategy="no", seed=seed,
                         anchor_ratio=0.0, anchor_seed=7, anchor_lora_fa=True)
        trainer = TNATrainer(model=model, args=args, train_dataset=text_dataset(num_labels=3))
        a_start.append({n: p.detach().clone() for n, p in model.named_parameters() if "lora_A" in n})
        assert a_start[-1] and all(not p.requires_grad for n, p in model.named_parameters() if "lora_A" in n)
        trainer.train()
        trainer.save_model(str(tmp_path / f"fa{seed}"))
        folders.append(tmp_path / f"fa{seed}")
        for name, start in a_start[-1].items():  # A never moved
            assert torch.equal(dict(model.named_parameters())[name], start)
    assert all(torch.equal(a_start[0][k], a_start[1][k]) for k in a_start[0])  # one shared A
    manifest = json.loads((folders[0] / CONFIG_NAME).read_text())["manifest"]
    whole = [name for name, entry in manifest.items() if entry.get("whole")]
    assert whole and all("lora_A" in name for name in whole)
    assert verify_anchors(folders[0])["intact"]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # exact with one shared A: no "factors are not exact" warning
        build_soup(folders, tmp_path / "soup", lora_mode="factors", progress=False)
    soup = load_file(tmp_path / "soup" / "adapter_model.safetensors")
    ing = [load_file(f / "adapter_model.safetensors") for f in folders]
    for name in soup:
        if "lora_B" in name:  # mean(B) @ A == mean(B @ A): the factors soup is exact with one A
            a_name = name.replace("lora_B", "lora_A")
            mean_update = (ing[0][name] @ ing[0][a_name] + ing[1][name] @ ing[1][a_name]) / 2
            assert torch.allclose(soup[name] @ soup[a_name], mean_update, atol=1e-6)
        if "lora_A" in name:
            assert torch.equal(soup[name], ing[0][name])
