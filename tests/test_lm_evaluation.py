"""Causal-LM evaluation (hf_tna.merge.evaluation with task "causal-lm") and the commands that use it: greedy
`hf-tna soup` by held-out loss and `hf-tna barrier` with several pairs, on tiny Llama models built from configs."""

import json
import math

import pytest
import torch
import yaml

from hf_tna import cli
from hf_tna.io import CheckpointReader
from hf_tna.merge.barrier import measure_barriers
from hf_tna.merge.config import EvaluationArguments
from hf_tna.merge.evaluation import Evaluator, build_evaluator, build_score_fn, detect_task
from tests.common import build_tiny_gpt2, build_tiny_llama, build_tiny_tokenizer, sentences


def _tensors(folder):
    with CheckpointReader(folder) as r:
        return {k: r.get(k) for k in r.keys()}


def _texts(n=12):
    """Sentences of different lengths, so that batches are padded."""
    return [" ".join(s.split()[: 2 + i % 5]) for i, s in enumerate(sentences(n, length=7))]


def _manual_loss(model, tokenizer, texts):
    """Each text alone (no padding) through the model's own loss; the token-weighted mean."""
    total, tokens = 0.0, 0
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, return_tensors="pt")["input_ids"]
            n = ids.shape[1] - 1  # the first token is not predicted
            total += float(model(input_ids=ids, labels=ids).loss) * n
            tokens += n
    return total / tokens, tokens


@pytest.fixture(scope="session")
def lm_dir(tmp_path_factory):
    """Three tiny Llama checkpoints (lm0, lm1 near lm0, lm2 another init) with their tokenizer, and text files."""
    from datasets import Dataset, DatasetDict

    root = tmp_path_factory.mktemp("lm_eval")
    tokenizer = build_tiny_tokenizer()
    base = build_tiny_llama(seed=0)
    near = build_tiny_llama(seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in near.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    for name, model in (("lm0", base), ("lm1", near), ("lm2", build_tiny_llama(seed=2))):
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    texts = _texts()
    DatasetDict({"validation": Dataset.from_dict({"text": texts})}).save_to_disk(root / "data")
    (root / "val.txt").write_text("\n".join(texts) + "\n")
    (root / "val.jsonl").write_text("".join(json.dumps({"sentence": t}) + "\n" for t in texts))
    return root


def test_causal_lms_are_detected():
    assert detect_task(build_tiny_llama()) == "causal-lm"
    assert detect_task(build_tiny_gpt2()) == "causal-lm"


def test_loss_is_token_weighted_and_perplexity_its_exp():
    from datasets import Dataset

    model, tokenizer, texts = build_tiny_llama(seed=3), build_tiny_tokenizer(), _texts()
    expected, tokens = _manual_loss(model, tokenizer, texts)
    scores = Evaluator(model, Dataset.from_dict({"text": texts}), processor=tokenizer, batch_size=5).scores()
    assert scores["tokens"] == tokens and scores["examples"] == len(texts)
    assert scores["loss"] == pytest.approx(expected, rel=1e-5)
    assert scores["perplexity"] == math.exp(scores["loss"])
    # not the mean of per-example means: the texts have different lengths
    per_example = [_manual_loss(model, tokenizer, [t])[0] for t in texts]
    assert abs(sum(per_example) / len(per_example) - expected) > 1e-4


def test_padding_does_not_change_the_loss():
    from datasets import Dataset

    model, tokenizer = build_tiny_llama(seed=4), build_tiny_tokenizer()
    ds = Dataset.from_dict({"text": _texts()})
    alone = Evaluator(model, ds, processor=tokenizer, batch_size=1).scores()  # no padding at all
    padded = Evaluator(model, ds, processor=tokenizer, batch_size=12).scores()  # one batch, padded
    assert padded["tokens"] == alone["tokens"]
    assert padded["loss"] == pytest.approx(alone["loss"], rel=1e-6)
    assert padded["accuracy"] == alone["accuracy"]


def test_masked_labels_and_left_padded_rows_are_not_scored():
    """A pre-tokenised split: -100 labels (a masked prompt) and padding on either side are left out."""
    from datasets import Dataset

    model = build_tiny_llama(seed=5)
    ids = [[2, 5, 6, 7, 8, 9], [2, 10, 11, 12]]
    padded = [ids[0], [0, 0] + ids[1]]  # left padded
    masks = [[1] * 6, [0, 0, 1, 1, 1, 1]]
    labels = [[-100, -100, -100, 7, 8, 9], [0, 0] + ids[1]]
    ds = Dataset.from_dict({"input_ids": padded, "attention_mask": masks, "labels": labels})
    scores = Evaluator(model, ds, batch_size=2).scores()
    with torch.no_grad():
        first = model(input_ids=torch.tensor([ids[0]]), labels=torch.tensor([labels[0]])).loss  # 3 scored tokens
        second = model(input_ids=torch.tensor([ids[1]]), labels=torch.tensor([ids[1]])).loss  # 3 scored tokens
    assert scores["tokens"] == 6
    assert scores["loss"] == pytest.approx(float(first + second) / 2, rel=1e-5)


def test_from_tensors_scores_a_causal_lm_like_the_dataset_path():
    from datasets import Dataset

    model, tokenizer = build_tiny_llama(seed=6), build_tiny_tokenizer()
    evaluator = Evaluator(model, Dataset.from_dict({"text": _texts()}), processor=tokenizer, batch_size=4)
    inputs = {"input_ids": evaluator.inputs["input_ids"], "attention_mask": evaluator.inputs["attention_mask"]}
    labels = inputs["input_ids"].clone()  # padding is masked from the attention mask
    from_tensors = Evaluator.from_tensors(model, inputs, labels, batch_size=4)
    assert from_tensors.task == "causal-lm" and from_tensors.scores() == evaluator.scores()


def test_text_json_and_save_to_disk_splits_agree(lm_dir):
    from_disk = build_evaluator(lm_dir / "lm0", lm_dir / "data").scores()
    from_txt = build_evaluator(lm_dir / "lm0", lm_dir / "val.txt").scores()
    from_json = build_evaluator(lm_dir / "lm0", lm_dir / "val.jsonl", input_column="sentence").scores()
    assert from_disk == from_txt == from_json
    short = build_evaluator(lm_dir / "lm0", lm_dir / "data", max_length=3, max_samples=5).scores()
    assert short["examples"] == 5 and short["tokens"] <= 5 * 2


def test_barrier_of_an_lm_with_itself_is_zero(lm_dir):
    evaluation = EvaluationArguments(dataset=str(lm_dir / "data"))
    report = measure_barriers([(lm_dir / "lm0", lm_dir / "lm0"), (lm_dir / "lm0", lm_dir / "lm2")], evaluation,
                              num_points=5, progress=False)
    same, other = report["pairs"]
    assert same["loss_barrier"] == 0 and same["loss_barrier_relative"] == 0
    assert len(set(same["curve"]["losses"])) == 1
    assert other["curve"]["perplexities"] == [math.exp(v) for v in other["curve"]["losses"]]
    losses = other["curve"]["losses"]
    gaps = [v - ((1 - a) * losses[0] + a * losses[-1]) for a, v in zip(other["curve"]["alphas"], losses)]
    assert other["loss_barrier"] == pytest.approx(max(0.0, *gaps))
    assert other["loss_barrier_relative"] == pytest.approx(other["loss_barrier"] / ((losses[0] + losses[-1]) / 2))
    assert report["task"] == "causal-lm" and report["num_samples"] == len(_texts())


def test_greedy_soup_of_lms_keeps_the_lowest_loss_first(lm_dir, tmp_path, capsys):
    models = [str(lm_dir / f"lm{i}") for i in (2, 0, 1)]
    out = tmp_path / "greedy"
    assert cli.main(["soup", *models, "--method", "greedy", "--metric", "loss", "--dataset", str(lm_dir / "val.txt"),
                     "--max-length", "16", "--output", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    kept = yaml.safe_load((out / "fusion_recipe.yaml").read_text())["kept"]
    evaluator = build_evaluator(lm_dir / "lm0", lm_dir / "val.txt", max_length=16)
    losses = [evaluator(_tensors(m))[0] for m in models]
    assert kept[0] == min(range(3), key=lambda i: losses[i])
    assert evaluator(_tensors(out))[0] <= min(losses)
    score = build_score_fn(evaluator, "loss")
    assert score(_tensors(models[kept[0]])) == -min(losses)  # higher is better: minus the loss


def test_barrier_cli_measures_two_lm_pairs_in_one_figure(lm_dir, tmp_path, capsys):
    a, b, c = (str(lm_dir / f"lm{i}") for i in range(3))
    png, report_file = tmp_path / "barriers.png", tmp_path / "barriers.json"
    assert cli.main(["barrier", "--pair", a, b, "--pair", a, c, "--dataset", str(lm_dir / "val.txt"),
                     "--text-column", "text", "--max-length", "16", "--num-points", "3", "--plot", str(png),
                     "--json", str(report_file)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert json.loads(report_file.read_text()) == report and report["plot"] == str(png)
    assert [p["label"] for p in report["pairs"]] == ["lm0 vs lm1", "lm0 vs lm2"]
    for pair in report["pairs"]:
        assert pair["curve"]["alphas"] == [0, 0.5, 1] and pair["loss_barrier"] >= 0
        assert pair["loss_barrier_relative"] == pytest.approx(
            pair["loss_barrier"] / ((pair["curve"]["losses"][0] + pair["curve"]["losses"][-1]) / 2))
    assert report["task"] == "causal-lm" and report["num_samples"] == len(_texts())
    assert png.stat().st_size > 0
    assert cli.main(["barrier", a, b, c, "--dataset", str(lm_dir / "val.txt"), "--plot", ""]) == 2
    assert "give two checkpoints" in capsys.readouterr().err
