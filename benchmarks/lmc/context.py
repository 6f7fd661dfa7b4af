"""The state one benchmark run carries from seed to seed: settings, data, sanity checks and section timings."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch

from hf_tna.example_data import load_fashion_mnist

from .config import LMCConfig


@dataclass
class LMCData:
    """Fixed train / test subsamples (the same for every seed): images (N, 1, 28, 28) standardised, int64 labels."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


@dataclass
class Sanity:
    """Checks every run reports: the largest anchor drift after training (0: anchors intact) and the barrier of
    the first trained model with itself (0 by construction)."""

    max_anchor_drift: float = 0.0
    self_barrier: dict[str, float] | None = None


@dataclass
class LMCContext:
    """What `run_seed` reads (settings, data) and adds to (sanity, seconds per section)."""

    cfg: LMCConfig
    data: LMCData | None = None
    sanity: Sanity = field(default_factory=Sanity)
    section_seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))


def load_data(cfg: LMCConfig, data_seed: int = 0) -> LMCData:
    """`cfg.train_size` / `cfg.test_size` examples of Fashion-MNIST (or of noisy class prototypes, "synthetic")."""
    if cfg.data == "synthetic":
        gen = torch.Generator().manual_seed(data_seed)
        protos = torch.randn(10, 1, 28, 28, generator=gen)

        def draw(n):
            y = torch.randint(0, 10, (n,), generator=gen)
            return protos[y] + 1.5 * torch.randn(n, 1, 28, 28, generator=gen), y

        x_tr, y_tr = draw(cfg.train_size)
        x_te, y_te = draw(cfg.test_size)
        return LMCData(x_tr, y_tr, x_te, y_te)
    splits = load_fashion_mnist()
    (images_train, labels_train), (images_test, labels_test) = splits["train"], splits["test"]
    rng = np.random.default_rng(data_seed)
    tr = rng.permutation(len(labels_train))[: cfg.train_size]
    te = rng.permutation(len(labels_test))[: cfg.test_size]

    def images(a, idx):
        return torch.from_numpy(a[idx].astype(np.float32) / 255.0).unsqueeze(1)

    x_tr, x_te = images(images_train, tr), images(images_test, te)
    mean, std = x_tr.mean(), x_tr.std()
    return LMCData(
        x_train=(x_tr - mean) / std,
        y_train=torch.from_numpy(labels_train[tr].astype(np.int64)),
        x_test=(x_te - mean) / std,
        y_test=torch.from_numpy(labels_test[te].astype(np.int64)),
    )
