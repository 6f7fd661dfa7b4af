"""Anchors in TRL trainers and the other paths a Hugging Face user takes: `hf_tna.trl` (SFT with and without
`peft_config`, DPO), `optimizer_cls_and_kwargs` factories, `TNACallback` on a plain `Trainer`, the LoRA trap."""

import json
import logging

import pytest
import torch
from datasets import Dataset

from hf_tna import AnchorSpec, TNACallback, anchored_optimizer_factory, create_anchored_optimizer, verify_anchors
from hf_tna.anchors import anchor_mask, build_layouts
from hf_tna.manifest import CONFIG_NAME
from tests.common import build_tiny_llama, build_tiny_tokenizer, sentences

pytest.importorskip("trl")

from hf_tna.trl import TNADPOConfig, TNADPOTrainer, TNASFTConfig, TNASFTTrainer  # noqa: E402

COMMON = dict(
    per_device_train_batch_size=4, max_steps=3, learning_rate=1e-2, report_to="none", use_cpu=True,
    logging_steps=1, save_strategy="steps", save_steps=3, disable_tqdm=True, seed=0,
)
SPEC = AnchorSpec(ratio=0.4, seed=2)


def _snapshot(model, spec=SPEC):
    return {layout.name: (layout, p.detach().clone()) for layout, p in build_layouts(model, spec)}


def _assert_anchored(model, start, spec=SPEC):
    moved = 0
    for layout, p in build_layouts(model, spec):
        _, before = start[layout.name]
        mask = anchor_mask(layout, spec)
        assert torch.equal(p.detach()[mask], before[mask]), layout.name
        moved += int(not torch.equal(p.detach()[~mask], before[~mask]))
    assert moved > 0


def test_sft_trainer_holds_anchors_writes_config_and_appends_to_trls_card(tmp_path):
    model, tokenizer = build_tiny_llama(), build_tiny_tokenizer()
    start = _snapshot(model)
    args = TNASFTConfig(output_dir=str(tmp_path), max_length=16, anchor_ratio=0.4, anchor_seed=2, **COMMON)
    trainer = TNASFTTrainer(model=model, args=args, train_dataset=Dataset.from_dict({"text": sentences()}),
                            processing_class=tokenizer)
    assert trainer.anchor_spec == SPEC
    trainer.train()
    _assert_anchored(model, start)
    assert any("anchor_drift" in log for log in trainer.state.log_history)
    checkpoint = tmp_path / "checkpoint-3"
    assert (checkpoint / CONFIG_NAME).exists() and verify_anchors(checkpoint)["intact"]
    card = (tmp_path / "README.md").read_text()
    from hf_tna.card import ANCHOR_SECTION_TITLE

    assert "trl" in card.lower() and card.count(ANCHOR_SECTION_TITLE) == 1


def test_sft_with_peft_config_anchors_the_adapters(tmp_path):
    from peft import LoraConfig

    model, tokenizer = build_tiny_llama(), build_tiny_tokenizer()
    args = TNASFTConfig(output_dir=str(tmp_path), max_length=16, anchor_ratio=0.4, anchor_seed=2, **COMMON)
    peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    trainer = TNASFTTrainer(model=model, args=args, train_dataset=Dataset.from_dict({"text": sentences()}),
                            processing_class=tokenizer, peft_config=peft_config)
    layouts = [layout.name for layout in trainer.anchored_optimizer.anchor_layouts] if trainer.optimizer else None
    assert layouts is None  # built when training starts
    start = _snapshot(trainer.model)
    assert all("lora_" in name for name in start)
    trainer.train()
    _assert_anchored(trainer.model, start)
    manifest = json.loads((tmp_path / "checkpoint-3" / CONFIG_NAME).read_text())["manifest"]
    assert manifest and all("lora_" in name for name in manifest)
    assert verify_anchors(tmp_path / "checkpoint-3")["intact"]


def test_the_lora_trap_is_refused_before_training(tmp_path):
    from peft import LoraConfig

    model, tokenizer = build_tiny_llama(), build_tiny_tokenizer()
    optimizer = create_anchored_optimizer(model, torch.optim.AdamW, SPEC, lr=1e-2)  # the base's weights
    args = TNASFTConfig(output_dir=str(tmp_path), max_length=16, **COMMON)
    with pytest.raises(ValueError, match="holds none of the .* parameters being trained"):
        TNASFTTrainer(model=model, args=args, train_dataset=Dataset.from_dict({"text": sentences()}),
                      processing_class=tokenizer, optimizers=(optimizer, None),
                      peft_config=LoraConfig(r=4, target_modules=["q_proj"], lora_dropout=0.0))


def _dpo_data():
    prompts, chosen, rejected = sentences(8, 1, 3), sentences(8, 2, 3), sentences(8, 3, 3)
    return Dataset.from_dict({"prompt": prompts, "chosen": chosen, "rejected": rejected})


@pytest.mark.parametrize("reference", ["explicit", "from_folder"])
def test_dpo_trainer_holds_anchors(tmp_path, reference):
    tokenizer = build_tiny_tokenizer()
    if reference == "explicit":
        model, ref_model = build_tiny_llama(), build_tiny_llama()
    else:  # TRL loads its reference copy from the folder the model came from
        from transformers import AutoModelForCausalLM

        build_tiny_llama().save_pretrained(tmp_path / "base")
        model, ref_model = AutoModelForCausalLM.from_pretrained(tmp_path / "base"), None
    start = _snapshot(model)
    args = TNADPOConfig(output_dir=str(tmp_path / "out"), max_length=16, anchor_ratio=0.4, anchor_seed=2, **COMMON)
    trainer = TNADPOTrainer(model, ref_model, args=args, train_dataset=_dpo_data(), processing_class=tokenizer)
    assert trainer.args is args  # the second positional argument is ref_model, not the training arguments
    trainer.train()
    _assert_anchored(model, start)
    assert verify_anchors(tmp_path / "out" / "checkpoint-3")["intact"]


def test_plain_trainer_with_a_factory_and_the_callback(tmp_path, caplog):
    from transformers import Trainer, TrainingArguments

    from tests.common import build_tiny_bert, text_dataset

    model = build_tiny_bert()
    start = _snapshot(model)
    args = TrainingArguments(output_dir=str(tmp_path), **{**COMMON, "max_grad_norm": 1.0})
    factory = anchored_optimizer_factory(torch.optim.AdamW, SPEC, args)
    trainer = Trainer(model=model, args=args, train_dataset=text_dataset(),
                      optimizer_cls_and_kwargs=(factory, {"betas": (0.9, 0.95)}), callbacks=[TNACallback()])
    with caplog.at_level(logging.WARNING):
        trainer.train()
    _assert_anchored(model, start)
    assert "counts them" in caplog.text  # the clipped norm included anchored gradients: said once
    groups = trainer.optimizer.optimizer.param_groups if hasattr(trainer.optimizer, "optimizer") else None
    assert groups is not None and trainer.optimizer.param_groups[0]["lr"] <= 1e-2
    assert {g["weight_decay"] for g in trainer.optimizer.param_groups} == {0.0}  # decay / no-decay groups
    for folder in (tmp_path / "checkpoint-3", tmp_path):
        assert (folder / CONFIG_NAME).exists()
    assert verify_anchors(tmp_path / "checkpoint-3")["intact"]


def test_dpo_without_a_reference_for_a_config_built_model_is_refused_clearly(tmp_path):
    args = TNADPOConfig(output_dir=str(tmp_path), max_length=16, **COMMON)
    with pytest.raises(ValueError, match="pass ref_model="):
        TNADPOTrainer(build_tiny_llama(), args=args, train_dataset=_dpo_data(), processing_class=build_tiny_tokenizer())
