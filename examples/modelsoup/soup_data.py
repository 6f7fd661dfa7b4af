"""Data of the model-soup example: Fashion-MNIST or sklearn's digits (loaded by `hf_tna.example_data`), split
and batched for a ViT.

Images are kept as uint8 arrays (N, H, W) in [0, 255] until a batch is made; `ImageCollator` turns a batch
into the model's `pixel_values` (scaled to [-1, 1], optionally shifted/flipped, resized to the model's
`image_size`, repeated to its `num_channels`), so one pipeline serves a 28x28 local ViT, an 8x8 one and a
224x224 RGB Hub checkpoint alike.

Splits (seeded, disjoint): `pretrain` (trains the shared base), `finetune` (trains the ingredients),
`val` (held-out, carved from the training set; greedy soups pick by it) and `test` (Fashion-MNIST's
official test set; for digits a seeded 20% carve). They are written once to an `.npz` file that every
fine-tuning process reads, so all processes see the same splits.

`datasets` is used when installed (`build_dataset` returns a `datasets.Dataset`); without it a plain
torch `Dataset` with the same rows is used, so the example also runs where only torch/transformers exist.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hf_tna.example_data import load_digits_uint8, load_fashion_mnist

SPLITS = ("pretrain", "finetune", "val", "test")
AUGMENTS = ("none", "shift", "shift_flip")


# --------------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SplitSizes:
    """Examples per split; None takes all that is left (pretrain, finetune) or all (test)."""

    pretrain: int | None = None
    finetune: int | None = None
    val: int = 5000
    test: int | None = None


def _carve(n: int, sizes: list[int | None], rng: np.random.Generator, what: str) -> list[np.ndarray]:
    order = rng.permutation(n)
    fixed = sum(s for s in sizes if s is not None)
    if fixed > n:
        raise ValueError(f"{what}: asked for {fixed} examples, only {n} exist; lower the split sizes")
    free = [i for i, s in enumerate(sizes) if s is None]
    rest = n - fixed
    resolved = [s if s is not None else rest // len(free) for s in sizes]
    out, start = [], 0
    for s in resolved:
        out.append(order[start : start + s])
        start += s
    return out


def build_splits(name: str, sizes: SplitSizes, seed: int = 0, data_dir: str | None = None) -> dict:
    """Seeded disjoint splits {split: (uint8 images, int64 labels)} of `name` ("fashion_mnist" or "digits")."""
    rng = np.random.default_rng(seed)
    if name == "fashion_mnist":
        raw = load_fashion_mnist(data_dir)
        (x, y), (xt, yt) = raw["train"], raw["test"]
        val, pre, fin = _carve(len(y), [sizes.val, sizes.pretrain, sizes.finetune], rng, "Fashion-MNIST train")
        test = np.arange(len(yt)) if sizes.test is None else rng.permutation(len(yt))[: sizes.test]
        splits = {
            "pretrain": (x[pre], y[pre]),
            "finetune": (x[fin], y[fin]),
            "val": (x[val], y[val]),
            "test": (xt[test], yt[test]),
        }
    elif name == "digits":
        x, y = load_digits_uint8()
        test_n = sizes.test if sizes.test is not None else len(y) // 5
        test, val, pre, fin = _carve(len(y), [test_n, sizes.val, sizes.pretrain, sizes.finetune], rng, "digits")
        splits = {
            "pretrain": (x[pre], y[pre]),
            "finetune": (x[fin], y[fin]),
            "val": (x[val], y[val]),
            "test": (x[test], y[test]),
        }
    else:
        raise ValueError(f"unknown dataset {name!r}: use fashion_mnist, digits or a splits .npz file")
    return {k: (np.ascontiguousarray(a), np.ascontiguousarray(b)) for k, (a, b) in splits.items()}


def save_splits(path: str | Path, splits: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    arrays = {f"{split}_{kind}": arr for split, pair in splits.items() for kind, arr in zip(("x", "y"), pair)}
    np.savez(tmp, **arrays)
    tmp.rename(path)
    return path


def load_splits(path: str | Path) -> dict:
    with np.load(path) as z:
        missing = [s for s in SPLITS if f"{s}_x" not in z]
        if missing:
            raise ValueError(f"{path} lacks split {missing[0]!r}; make it with run_modelsoup.py (save_splits)")
        return {s: (z[f"{s}_x"], z[f"{s}_y"]) for s in SPLITS}


def split_sizes(splits: dict) -> dict[str, int]:
    return {k: int(len(v[1])) for k, v in splits.items()}


# --------------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------------
def to_pixel_values(images: torch.Tensor, image_size: int, num_channels: int = 1) -> torch.Tensor:
    """uint8 (N, H, W) -> float (N, C, S, S) in [-1, 1] (mean 0.5, std 0.5), resized to `image_size`."""
    x = images.to(torch.float32).div_(127.5).sub_(1.0).unsqueeze(1)
    if x.shape[-1] != image_size or x.shape[-2] != image_size:
        x = torch.nn.functional.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return x.expand(-1, num_channels, -1, -1).contiguous() if num_channels != 1 else x


def augment_images(images: torch.Tensor, augment: str, generator: torch.Generator) -> torch.Tensor:
    """Random shifts (pad 2 with background, crop back) and, for "shift_flip", horizontal flips (uint8 N,H,W)."""
    if augment == "none":
        return images
    if augment not in AUGMENTS:
        raise ValueError(f"augment must be one of {AUGMENTS}, got {augment!r}")
    n, h, w = images.shape
    pad = max(1, h // 14)
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, :, None].expand(n, h, w)
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, :].expand(n, h, w)
    out = padded[torch.arange(n)[:, None, None], rows, cols]
    if augment == "shift_flip":
        flip = torch.rand(n, generator=generator) < 0.5
        out[flip] = out[flip].flip(-1)
    return out


class ImageCollator:
    """Turns rows ``{"image": uint8 HxW, "label": int}`` into ``{"pixel_values", "labels"}`` for the ViT."""

    def __init__(self, image_size: int, num_channels: int = 1, augment: str = "none", seed: int = 0):
        if augment not in AUGMENTS:
            raise ValueError(f"augment must be one of {AUGMENTS}, got {augment!r}")
        self.image_size, self.num_channels, self.augment = image_size, num_channels, augment
        self.generator = torch.Generator().manual_seed(seed)
        self._worker_seed = None

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        worker = torch.utils.data.get_worker_info()
        if worker is not None and self._worker_seed != worker.seed:
            # DataLoader workers get copies of this collator: reseed from the worker's seed (distinct per worker
            # and per epoch, derived from the main process's seed) so they do not repeat each other's shifts
            self._worker_seed = worker.seed
            self.generator.manual_seed(worker.seed % 2**63)
        images = np.stack([np.asarray(r["image"], dtype=np.uint8) for r in rows])
        if images.ndim == 2:  # rows of flattened square images (the `datasets` layout, fastest to read)
            side = math.isqrt(images.shape[1])
            images = images.reshape(len(rows), side, side)
        images = torch.as_tensor(images)
        labels = torch.as_tensor(np.asarray([int(r["label"]) for r in rows], dtype=np.int64))
        images = augment_images(images, self.augment, self.generator)
        return {"pixel_values": to_pixel_values(images, self.image_size, self.num_channels), "labels": labels}


class ArrayDataset(torch.utils.data.Dataset):
    """The torch fallback of `datasets.Dataset.from_dict({"image": ..., "label": ...})`."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"image": self.images[i], "label": int(self.labels[i])}


def has_datasets() -> bool:
    try:
        import datasets  # noqa: F401
    except ImportError:
        return False
    return True


def build_dataset(images: np.ndarray, labels: np.ndarray, backend: str = "auto"):
    """A `datasets.Dataset` (numpy format) of {"image", "label"}, or the torch fallback ("torch" / no datasets).

    Images are stored flattened (a fixed-length uint8 list): reading a batch of them is ~10x faster than
    reading `Array2D` rows; `ImageCollator` puts the square back.
    """
    if backend not in ("auto", "datasets", "torch"):
        raise ValueError(f"backend must be auto, datasets or torch, got {backend!r}")
    if backend == "torch" or (backend == "auto" and not has_datasets()):
        return ArrayDataset(images, labels)
    import datasets

    if images.shape[1] != images.shape[2]:
        raise ValueError(f"images must be square, got shape {tuple(images.shape[1:])}")
    list_feature = getattr(datasets, "List", None) or datasets.Sequence  # datasets < 4 has only Sequence
    features = datasets.Features(
        {
            "image": list_feature(datasets.Value("uint8"), length=int(images[0].size)),
            "label": datasets.Value("int64"),
        }
    )
    ds = datasets.Dataset.from_dict({"image": images.reshape(len(images), -1), "label": labels}, features=features)
    return ds.with_format("numpy")
