"""TNATrainer and TNAConfig: a drop-in Trainer whose anchored entries never move."""

import json

import pytest
import torch
from transformers import HfArgumentParser, Trainer, TrainingArguments

from hf_tna import CONFIG_NAME, AnchorSpec, TNAConfig, TNATrainer, verify_anchors
from hf_tna.anchors import anchor_mask, build_layouts
from hf_tna.cli import main as cli_main
from hf_tna.manifest import TNAFileConfig
from tests.common import build_tiny_bert, build_tiny_gpt2, build_tiny_vit, text_dataset


def base_args(tmp_path, **kwargs):
    defaults = dict(
        output_dir=str(tmp_path), per_device_train_batch_size=8, num_train_epochs=1, learning_rate=1e-2,
        weight_decay=0.1, report_to="none", use_cpu=True, save_strategy="no", logging_steps=1, seed=0,
        disable_tqdm=True,
    )
    defaults.update(kwargs)
    return defaults


def assert_anchored(model, base_state, spec):
    moved = False
    for layout, param in build_layouts(model, spec):
        mask = anchor_mask(layout, spec)
        start = base_state[layout.name]
        assert torch.equal(param.detach()[mask], start[mask]), layout.name
        moved |= bool((param.detach()[~mask] != start[~mask]).any())
    assert moved


def checkpoint_state(model):
    from hf_tna.anchors import checkpoint_names

    names = checkpoint_names(model)
    return {names[id(p)]: p.detach().clone() for p in model.parameters()}


def test_ratio_zero_is_trainer_bitwise(tmp_path):
    data = text_dataset()
    models = []
    for cls, extra in ((Trainer, {}), (TNATrainer, {"anchor_spec": AnchorSpec(ratio=0)})):
        model = build_tiny_bert(seed=1)
        args = TrainingArguments(**base_args(tmp_path / cls.__name__, gradient_accumulation_steps=2, max_grad_norm=0.5))
        cls(model=model, args=args, train_dataset=data, **extra).train()
        models.append(model)
    for (name, a), (_, b) in zip(models[0].named_parameters(), models[1].named_parameters()):
        assert torch.equal(a, b), name


def test_anchors_hold_with_accumulation_clipping_bf16_cosine(tmp_path):
    model = build_tiny_bert()
    spec = AnchorSpec(ratio=0.4, seed=3)
    start = checkpoint_state(model)
    args = TNAConfig(
        **base_args(tmp_path, gradient_accumulation_steps=2, max_grad_norm=0.1, bf16=True,
                    lr_scheduler_type="cosine", warmup_steps=1, save_strategy="steps", save_steps=2,
                    num_train_epochs=2),
        anchor_ratio=0.4, anchor_seed=3,
    )
    trainer = TNATrainer(model=model, args=args, train_dataset=text_dataset())
    trainer.train()
    assert trainer.anchor_spec == spec
    assert_anchored(model, start, spec)
    drifts = [log["anchor_drift"] for log in trainer.state.log_history if "anchor_drift" in log]
    assert drifts and set(drifts) == {0.0}
    checkpoint = tmp_path / "checkpoint-2"
    config = TNAFileConfig.load(checkpoint)
    assert config.spec == spec and config.manifest
    assert verify_anchors(checkpoint)["intact"]
    trainer.save_model(str(tmp_path / "final"))
    report = verify_anchors(tmp_path / "final")
    assert report["intact"] and report["num_anchored"] > 0


def test_user_optimizer_is_wrapped_and_plain_args_with_spec(tmp_path):
    model = build_tiny_bert()
    start = checkpoint_state(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1)
    spec = AnchorSpec(ratio=0.3, granularity="neuron", exclude=["classifier"])
    trainer = TNATrainer(
        model=model, args=TrainingArguments(**base_args(tmp_path)), train_dataset=text_dataset(),
        optimizers=(optimizer, None), anchor_spec=spec,
    )
    trainer.train()
    assert trainer.anchored_optimizer.optimizer is optimizer
    assert_anchored(model, start, spec)


def test_resume_keeps_anchors_and_refuses_tampering(tmp_path):
    spec = AnchorSpec(ratio=0.4)
    model = build_tiny_bert()
    start = checkpoint_state(model)
    kwargs = base_args(tmp_path, save_strategy="steps", save_steps=2, max_steps=4, lr_scheduler_type="cosine")
    TNATrainer(model=model, args=TrainingArguments(**kwargs), train_dataset=text_dataset(), anchor_spec=spec).train()

    resumed = build_tiny_bert(seed=9)  # other init: resume must load the checkpoint's weights
    trainer = TNATrainer(
        model=resumed, args=TrainingArguments(**{**kwargs, "max_steps": 6}), train_dataset=text_dataset(),
        anchor_spec=spec,
    )
    trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    assert trainer.state.global_step == 6
    assert_anchored(resumed, start, spec)

    with pytest.raises(ValueError, match="trained with anchors"):
        TNATrainer(
            model=build_tiny_bert(), args=TrainingArguments(**kwargs), train_dataset=text_dataset(),
            anchor_spec=AnchorSpec(ratio=0.2),
        ).train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))

    # tamper with an anchored entry of the saved weights: resuming must refuse
    from safetensors.torch import load_file, save_file

    path = tmp_path / "checkpoint-4" / "model.safetensors"
    weights = load_file(path)
    name = "bert.encoder.layer.0.attention.self.query.weight"
    layout = next(layout for layout, _ in build_layouts(build_tiny_bert(), spec) if layout.name == name)
    weights[name][anchor_mask(layout, spec)] += 1.0
    save_file(weights, path, metadata={"format": "pt"})
    assert not verify_anchors(tmp_path / "checkpoint-4")["intact"]
    with pytest.raises(ValueError, match=f"tensor '{name}'"):
        TNATrainer(
            model=build_tiny_bert(), args=TrainingArguments(**kwargs), train_dataset=text_dataset(), anchor_spec=spec
        ).train(resume_from_checkpoint=str(tmp_path / "checkpoint-4"))


def test_peft_lora_anchors_adapter_parameters(tmp_path):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(build_tiny_bert(), LoraConfig(r=4, target_modules=["query", "value"], lora_dropout=0.0))
    spec = AnchorSpec(ratio=0.5)
    trainer = TNATrainer(model=model, args=TrainingArguments(**base_args(tmp_path)), train_dataset=text_dataset(),
                         anchor_spec=spec)
    # the adapters are new weights: initialised from the anchor seed (LoRA's own scheme: A random, B zero)
    assert trainer.shared_init and all("lora_" in name for name in trainer.shared_init)
    start = checkpoint_state(model)
    trainer.train()
    layouts = [layout.name for layout, _ in build_layouts(model, spec)]
    assert any("lora_A" in n for n in layouts) and any("lora_B" in n for n in layouts)
    assert all("lora_" in n or "classifier" in n for n in layouts)  # only trainable parameters
    assert_anchored(model, start, spec)
    trainer.save_model(str(tmp_path / "adapter"))
    assert (tmp_path / "adapter" / CONFIG_NAME).exists()
    assert verify_anchors(tmp_path / "adapter")["intact"]


def test_causal_lm_neuron_granularity(tmp_path):
    model = build_tiny_gpt2()
    start = checkpoint_state(model)
    data = text_dataset().map(lambda row: {"labels": row["input_ids"]})
    spec = AnchorSpec(ratio=0.4, granularity="neuron")
    TNATrainer(model=model, args=TrainingArguments(**base_args(tmp_path)), train_dataset=data, anchor_spec=spec).train()
    assert_anchored(model, start, spec)
    layouts = {layout.name: layout for layout, _ in build_layouts(model, spec)}
    assert layouts["transformer.h.0.mlp.c_fc.weight"].unit_dim == 1  # Conv1D: output units are columns


def test_vit_trains_with_anchors_and_model_card(tmp_path):
    from datasets import Dataset

    model = build_tiny_vit()
    start = checkpoint_state(model)
    g = torch.Generator().manual_seed(0)
    data = Dataset.from_dict({"pixel_values": torch.randn(16, 1, 8, 8, generator=g).tolist(),
                              "labels": torch.randint(0, 3, (16,), generator=g).tolist()}).with_format("torch")
    args = TNAConfig(**base_args(tmp_path), anchor_ratio=0.4)
    trainer = TNATrainer(model=model, args=args, train_dataset=data)
    trainer.train()
    assert_anchored(model, start, AnchorSpec())
    trainer.save_model()
    trainer.create_model_card(model_name="tiny-vit")
    card = (tmp_path / "README.md").read_text()
    assert "hf_tna" in card and "ratio 0.4" in card
    saved = TNAFileConfig.load(tmp_path).manifest
    assert "vit.encoder.layer.0.attention.attention.query.weight" in saved


def test_tna_config_parser_and_validation(capsys):
    parser = HfArgumentParser(TNAConfig)
    (args,) = parser.parse_args_into_dataclasses(
        ["--output_dir", "out", "--anchor_ratio", "0.2", "--anchor_granularity", "neuron",
         "--anchor_exclude", "classifier", "pooler", "--use_cpu", "--report_to", "none"]
    )
    assert args.anchor_spec == AnchorSpec(ratio=0.2, granularity="neuron", exclude=("classifier", "pooler"))
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args_into_dataclasses(["--help"])
    assert exit_info.value.code == 0
    assert "--anchor_ratio" in capsys.readouterr().out
    with pytest.raises(ValueError, match="anchor_ratio"):
        TNAConfig(output_dir="out", anchor_ratio=1.5, use_cpu=True, report_to="none")


def test_bad_patterns_fail_at_construction(tmp_path):
    with pytest.raises(ValueError, match="matches no trainable parameter"):
        TNATrainer(model=build_tiny_bert(), args=TrainingArguments(**base_args(tmp_path)),
                   anchor_spec=AnchorSpec(include=["decoder"]))


@pytest.mark.parametrize("field, value", [("fsdp", "full_shard"), ("deepspeed", "ds_config.json")])
def test_fsdp_and_deepspeed_are_refused_before_training(tmp_path, field, value):
    args = TrainingArguments(**base_args(tmp_path))
    setattr(args, field, value)  # as a launcher config would set it (no GPU here to build the real plugin)
    with pytest.raises(ValueError, match="does not support FSDP or DeepSpeed.*DDP"):
        TNATrainer(model=build_tiny_bert(), args=args)


def test_verify_cli(tmp_path, capsys):
    spec = AnchorSpec()
    model = build_tiny_bert()
    model.save_pretrained(tmp_path / "base")
    trainer = TNATrainer(model=model, args=TrainingArguments(**base_args(tmp_path / "run")),
                         train_dataset=text_dataset(), anchor_spec=spec)
    trainer.train()
    trainer.save_model(str(tmp_path / "tuned"))
    assert cli_main(["verify", str(tmp_path / "tuned"), "--base", str(tmp_path / "base")]) == 0
    assert "anchors intact" in capsys.readouterr().out
    # an untrained-from-this-base model: every anchored entry differs
    other = build_tiny_bert(seed=5)
    other.save_pretrained(tmp_path / "other")
    (tmp_path / "other" / CONFIG_NAME).write_text((tmp_path / "tuned" / CONFIG_NAME).read_text())
    assert cli_main(["verify", str(tmp_path / "other"), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["intact"] is False and report["fraction_intact"] < 0.5
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["verify", "--help"])
    assert exit_info.value.code == 0


def test_anchor_arguments_validate_through_tna_config_and_the_parser(tmp_path):
    from hf_tna import AnchorArguments

    with pytest.raises(ValueError, match=r"TNAConfig.anchor_ratio must be in \[0, 1\), got 1.5"):
        TNAConfig(output_dir=str(tmp_path), anchor_ratio=1.5)
    with pytest.raises(ValueError, match=r"TNAConfig.anchor_ratio must be in \[0, 1\), got 1.5"):
        HfArgumentParser(TNAConfig).parse_args_into_dataclasses(["--output_dir", str(tmp_path), "--anchor_ratio", "1.5"])
    with pytest.raises(ValueError, match="lr_scheduler_type|SchedulerType"):  # TrainingArguments' own checks still run
        TNAConfig(output_dir=str(tmp_path), lr_scheduler_type="no-such-schedule")
    assert issubclass(TNAConfig, AnchorArguments)
    (args,) = HfArgumentParser(AnchorArguments).parse_args_into_dataclasses(["--anchor_seed", "3"])
    assert args.to_spec() == AnchorSpec(seed=3)


def test_hf_tna_logs_follow_transformers_verbosity(tmp_path, caplog):
    import logging

    from transformers.utils import logging as transformers_logging

    before = transformers_logging.get_verbosity()
    try:
        transformers_logging.set_verbosity_info()
        assert logging.getLogger("hf_tna.tna_trainer").getEffectiveLevel() == logging.INFO
        with caplog.at_level(logging.INFO, logger="hf_tna"):
            trainer = TNATrainer(model=build_tiny_bert(), args=TrainingArguments(**base_args(tmp_path)),
                                 train_dataset=text_dataset(), anchor_spec=AnchorSpec(ratio=0.4))
            trainer.train()
        line = next(r.getMessage() for r in caplog.records if "anchoring" in r.getMessage())
        assert "ratio 0.4" in line and "path: restore" in line and "of" in line
        transformers_logging.set_verbosity_warning()
        assert logging.getLogger("hf_tna.optimizer").getEffectiveLevel() == logging.WARNING
    finally:
        transformers_logging.set_verbosity(before)
