"""`hf-tna` console script: every subcommand is reachable and documents itself."""

import pytest

from hf_tna.cli import SUBCOMMANDS, main


def test_top_level_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in out


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_each_subcommand_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    assert name in capsys.readouterr().out


def test_unknown_subcommand_is_an_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["nonsense"])
    assert exit_info.value.code == 2


# --------------------------------------------------------------------------------------------------
# hf-tna coldfuse: one anchor vocabulary (AnchorArguments) and every TrainingArguments flag
# --------------------------------------------------------------------------------------------------
def test_coldfuse_contribute_help_lists_training_arguments(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["coldfuse", "contribute", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--bf16", "--gradient_accumulation_steps", "--per_device_train_batch_size", "--max_train_samples",
                 "--contributor", "--train_data", "--train-data"):
        assert flag in out, flag
    assert "--anchor_ratio" not in out  # a contribution's anchors are the round's, read from the base


@pytest.mark.parametrize("action", ["init", "run"])
@pytest.mark.parametrize("spelling", ["--anchor_ratio", "--anchor-ratio"])
def test_coldfuse_refuses_a_bad_anchor_ratio_before_any_work(action, spelling, tmp_path, capsys):
    store = tmp_path / "store"
    argv = ["coldfuse", action, "--store", str(store), "--base", "org/base", "--model", str(tmp_path / "model"),
            spelling, "1.5"]
    if action == "run":
        argv += ["--task", f"a={tmp_path / 'a.csv'}"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"hf-tna coldfuse {action}: error:") and "anchor_ratio" in err and "1.5" in err
    assert len(err.splitlines()) == 1
    assert not store.exists()


def test_coldfuse_anchor_flags_build_the_spec(tmp_path, monkeypatch):
    import hf_tna.coldfuse.cli as coldfuse_cli
    from hf_tna.anchors import AnchorSpec

    calls = []
    monkeypatch.setattr(coldfuse_cli, "init_coldfuse", lambda *args, **kwargs: calls.append((args, kwargs)) or {})
    assert main(["coldfuse", "init", "--store", str(tmp_path / "store"), "--base", "org/base", "--model", "m",
                 "--anchor-ratio", "0.25", "--anchor_seed", "7", "--anchor_granularity", "neuron",
                 "--anchor_exclude", "pooler", "classifier", "--redraw-anchors", "--weighting", "examples"]) == 0
    (_, _, model), kwargs = calls[0]
    assert model == "m"
    assert kwargs["anchor_spec"] == AnchorSpec(ratio=0.25, seed=7, granularity="neuron",
                                               exclude=("pooler", "classifier"))
    assert kwargs["redraw_anchors"] is True and kwargs["weighting"] == "examples"


def test_coldfuse_contribute_training_flags_reach_the_trainer_config(tmp_path, monkeypatch):
    import hf_tna.coldfuse.cli as coldfuse_cli
    from hf_tna.anchors import AnchorSpec
    from hf_tna.coldfuse.contributor import ContributionConfig
    from hf_tna.tna_config import TNAConfig

    (tmp_path / "train.csv").write_text("text,label\n" + "\n".join(f"row {i},{i % 2}" for i in range(10)) + "\n")
    calls = []
    monkeypatch.setattr(coldfuse_cli, "contribute", lambda *args: calls.append(args) or {"status": "published"})
    assert main(["coldfuse", "contribute", "--store", str(tmp_path / "store"), "--base", "org/base", "--contributor",
                 "ann", "--task", "t", "--train-data", str(tmp_path / "train.csv"), "--bf16", "--use_cpu",
                 "--gradient_accumulation_steps", "3", "--per-device-train-batch-size", "4", "--max_steps", "5",
                 "--lr_scheduler_type", "cosine", "--max_length", "8", "--seed", "2"]) == 0
    _, base, task, contributor, round_, training, *_ = calls[0]
    assert (base, task.name, contributor, round_) == ("org/base", "t", "ann", None)
    assert len(task.train) == 8 and len(task.eval) == 2  # the default eval_fraction, split with --seed
    assert isinstance(training, ContributionConfig)
    assert training.to_dict() == ContributionConfig(
        bf16=True, use_cpu=True, gradient_accumulation_steps=3, per_device_train_batch_size=4, max_steps=5,
        lr_scheduler_type="cosine", max_length=8, seed=2).to_dict()
    spec = AnchorSpec(ratio=0.3, seed=1)
    args = TNAConfig.from_spec(spec, **{**training.training_kwargs(), "output_dir": str(tmp_path / "out")})
    assert args.anchor_spec == spec and args.bf16 and args.gradient_accumulation_steps == 3
    assert args.per_device_train_batch_size == 4 and args.lr_scheduler_type == "cosine"
    assert args.save_strategy == "no" and args.disable_tqdm  # ColD fusion's defaults
