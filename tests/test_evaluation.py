"""Evaluators (hf_tna.merge.evaluation) and the commands that use them: `hf-tna barrier`, greedy `hf-tna soup`."""

import json

import pytest
import torch
import yaml

from hf_tna import cli
from hf_tna.io import CheckpointReader
from hf_tna.merge.evaluation import (
    Evaluator,
    build_evaluator,
    build_score_fn,
    load_metric,
)
from tests.common import build_tiny_bert, build_tiny_vit, text_dataset

WORDS = ["good", "bad", "fine", "awful", "great", "poor"]


def _tensors(folder):
    with CheckpointReader(folder) as r:
        return {k: r.get(k) for k in r.keys()}


def _image_dataset(n=12, seed=0):
    from datasets import Dataset

    g = torch.Generator().manual_seed(seed)
    return Dataset.from_dict({"pixel_values": torch.randn(n, 1, 8, 8, generator=g).tolist(),
                              "label": torch.randint(0, 3, (n,), generator=g).tolist()})


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory):
    from datasets import Dataset, DatasetDict
    from transformers import BertTokenizer

    root = tmp_path_factory.mktemp("eval")
    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    tokenizer = BertTokenizer(str(vocab))
    for i in range(3):
        model = build_tiny_bert(seed=i)
        model.save_pretrained(root / f"bert{i}")
        tokenizer.save_pretrained(root / f"bert{i}")
    g = torch.Generator().manual_seed(0)
    texts = [" ".join(WORDS[j] for j in torch.randint(0, 6, (4,), generator=g).tolist()) for _ in range(16)]
    DatasetDict({"validation": Dataset.from_dict({"text": texts, "label": [t.count("good") % 2 for t in texts]})}
                ).save_to_disk(root / "data")
    return root


def test_bundled_metric_loads_by_path():
    assert load_metric("accuracy").compute(predictions=[1, 0, 1, 1], references=[1, 1, 1, 0])["accuracy"] == 0.5
    with pytest.raises(ValueError, match="no bundled metric 'bleu'"):
        load_metric("bleu")


def test_evaluator_matches_a_manual_forward():
    model, ds = build_tiny_bert(seed=0), text_dataset(n=20)
    loss, acc = Evaluator(model, ds, batch_size=6)()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(ds["input_ids"])).logits
    labels = torch.tensor(ds["labels"])
    assert loss == pytest.approx(float(torch.nn.functional.cross_entropy(logits, labels)), rel=1e-5)
    assert acc == pytest.approx(float((logits.argmax(-1) == labels).float().mean()))


def test_state_dicts_load_by_checkpoint_names(tmp_path):
    """A ViT skeleton evaluates another ViT's checkpoint tensors exactly like that model (v5 renames)."""
    ds = _image_dataset()
    build_tiny_vit(seed=1).save_pretrained(tmp_path / "vit1")
    other = _tensors(tmp_path / "vit1")
    from transformers import ViTForImageClassification

    expected = Evaluator(ViTForImageClassification.from_pretrained(tmp_path / "vit1"), ds)()
    evaluator = Evaluator(build_tiny_vit(seed=0), ds)
    assert evaluator(other) == expected
    with pytest.raises(ValueError, match="lacks parameter"):
        evaluator({k: v for k, v in other.items() if "classifier" not in k})
    assert build_score_fn(evaluator, "loss")(other) == -expected[0]


def test_text_split_tokenized_from_the_checkpoint_folder(bert_dir):
    evaluator = build_evaluator(bert_dir / "bert0", bert_dir / "data", split="validation", max_samples=10)
    assert evaluator.inputs["input_ids"].shape[0] == 10
    loss, acc = evaluator()
    assert loss > 0 and 0 <= acc <= 1


def test_barrier_cli_prints_json_and_plots(bert_dir, tmp_path, capsys):
    a, b = str(bert_dir / "bert0"), str(bert_dir / "bert1")
    common = ["--dataset", str(bert_dir / "data"), "--num-points", "5"]
    assert cli.main(["barrier", a, b, *common, "--plot", str(tmp_path / "lmc.png"), "--json",
                     str(tmp_path / "lmc.json")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["curve"]["alphas"] == [0, 0.25, 0.5, 0.75, 1]
    assert report["loss_barrier"] >= 0 and report["accuracy_barrier"] >= 0
    assert (tmp_path / "lmc.png").stat().st_size > 0 and json.loads((tmp_path / "lmc.json").read_text()) == report
    assert cli.main(["barrier", a, a, *common, "--plot", ""]) == 0
    same = json.loads(capsys.readouterr().out)
    assert same["loss_barrier"] == 0 and same["accuracy_barrier"] == 0


def test_greedy_soup_cli_evaluates_on_the_split(bert_dir, tmp_path, capsys):
    models = [str(bert_dir / f"bert{i}") for i in range(3)]
    assert cli.main(["soup", *models, "--method", "greedy", "--metric", "loss", "--dataset", str(bert_dir / "data"),
                     "--output", str(tmp_path / "g"), "--no-progress"]) == 0
    recipe = yaml.safe_load((tmp_path / "g" / "fusion_recipe.yaml").read_text())
    kept = recipe["kept"]
    evaluator = build_evaluator(bert_dir / "bert0", bert_dir / "data")
    individual = [evaluator(_tensors(m))[0] for m in models]
    assert kept[0] == min(range(3), key=lambda i: individual[i])
    assert evaluator(_tensors(tmp_path / "g"))[0] <= min(individual)
    assert (tmp_path / "g" / "tokenizer_config.json").exists() and (tmp_path / "g" / "tokenizer.json").exists()
