"""Offline datasets that ship in packages: Fashion-MNIST (Debian `dataset-fashion-mnist`) and sklearn's digits.

Used by the examples and benchmarks; nothing here downloads anything.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

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
