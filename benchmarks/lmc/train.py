"""Models, training recipes ("arms"), training with `AnchoredOptimizer`, and evaluation of the LMC benchmark."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hf_tna.anchors import AnchorSpec, anchor_mask, build_layouts
from hf_tna.optimizer import AnchoredOptimizer

from .config import MODELS, LMCConfig


def build_model(kind: str, width: int = 200, depth: int = 2) -> nn.Module:
    """MLP (784 -> width x depth -> 10), small CNN (two stride-2 convs + two linears), or a tiny ViT."""
    if kind == "mlp":
        layers, fan_in = [nn.Flatten()], 28 * 28
        for _ in range(depth):
            layers += [nn.Linear(fan_in, width), nn.ReLU()]
            fan_in = width
        return nn.Sequential(*layers, nn.Linear(fan_in, 10))
    if kind == "cnn":
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10),
        )  # fmt: skip
    if kind == "vit":
        from transformers import ViTConfig, ViTForImageClassification

        config = ViTConfig(
            image_size=28, patch_size=7, num_channels=1, hidden_size=64, num_hidden_layers=2,
            num_attention_heads=4, intermediate_size=128, num_labels=10,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        )  # fmt: skip
        return ViTForImageClassification(config)
    raise ValueError(f"unknown model kind {kind!r}; use one of {MODELS}")


def logits_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if getattr(model, "config", None) is not None:  # transformers model
        return model(pixel_values=x).logits
    return model(x)


def prune_at_init(model: nn.Module, spec: AnchorSpec) -> None:
    """The control of the paper: the anchored entries are set to 0 (and then kept there by the optimizer)."""
    with torch.no_grad():
        for layout, param in build_layouts(model, spec):
            param.masked_fill_(anchor_mask(layout, spec, param.device), 0.0)


@dataclass(frozen=True)
class Arm:
    """One training recipe: anchored ("tna") or pruned ("prune") with a granularity and ratio."""

    variant: str = "tna"
    granularity: str = "element"
    ratio: float = 0.0

    @property
    def label(self) -> str:
        if self.ratio == 0.0:
            return "baseline (ratio 0)"
        return f"{'anchors' if self.variant == 'tna' else 'prune@init'} {self.granularity} {self.ratio:g}"


def train_model(model, init, arm: Arm, seed: int, x, y, order_seed: int, cfg: LMCConfig, opt_name: str, lr: float):
    """Train `model` from `init` under `arm`; returns (state dict copy, largest anchor drift)."""
    model.load_state_dict(init)
    spec = AnchorSpec(ratio=arm.ratio, seed=seed, granularity=arm.granularity)
    if arm.variant == "prune" and arm.ratio > 0:
        prune_at_init(model, spec)
    params = [p for p in model.parameters() if p.requires_grad]
    if opt_name == "sgd":
        inner = torch.optim.SGD(params, lr=lr, momentum=cfg.momentum)
    else:
        inner = torch.optim.Adam(params, lr=lr)
    opt = AnchoredOptimizer(inner, model, spec)
    gen = torch.Generator().manual_seed(order_seed)
    model.train()
    for _ in range(cfg.epochs):
        for idx in torch.randperm(len(y), generator=gen).split(cfg.batch_size):
            loss = F.cross_entropy(logits_of(model, x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.mask_gradients()  # before any clipping (none here), as the API asks
            opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, opt.anchor_drift()


@torch.no_grad()
def evaluate(model, state, x, y, chunk: int = 500) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of `state` loaded into `model` on (x, y)."""
    model.load_state_dict(state)
    model.eval()
    loss, correct = 0.0, 0
    for xs, ys in zip(x.split(chunk), y.split(chunk)):
        out = logits_of(model, xs)
        loss += float(F.cross_entropy(out, ys, reduction="sum"))
        correct += int((out.argmax(1) == ys).sum())
    return loss / len(y), correct / len(y)
