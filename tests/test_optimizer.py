"""AnchoredOptimizer: anchored entries stay bitwise, free entries move, whatever wraps or drives it."""

import copy

import pytest
import torch

from hf_tna.anchors import AnchorSpec, anchor_mask, build_layouts
from hf_tna.optimizer import AnchoredOptimizer, create_anchored_optimizer
from tests.common import build_mlp


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def assert_anchors_intact_and_free_moved(model, start, spec):
    moved_any = False
    for layout, param in build_layouts(model, spec):
        mask = anchor_mask(layout, spec)
        before = start[layout.name]
        assert torch.equal(param.detach()[mask], before[mask]), f"anchors of {layout.name} moved"
        moved_any |= bool((param.detach()[~mask] != before[~mask]).any())
    assert moved_any, "no free entry moved: the test would pass vacuously"


def train_steps(model, optimizer, steps=5, seed=0, closure_free=True):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x, y = torch.randn(16, 8, generator=g), torch.randint(0, 3, (16,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _adafactor(params):
    from transformers.optimization import Adafactor

    return Adafactor(params, lr=1e-2, scale_parameter=False, relative_step=False, weight_decay=0.1)


OPTIMIZERS = {
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
    "sgd-nesterov": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    "adam-foreach": lambda p: torch.optim.Adam(p, lr=1e-2, foreach=True, weight_decay=0.01),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=1e-2, weight_decay=0.01),
    "adafactor": _adafactor,
}


@pytest.mark.parametrize("granularity", ["element", "neuron"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_anchors_hold_for_every_optimizer(name, granularity):
    model = build_mlp()
    spec = AnchorSpec(ratio=0.4, granularity=granularity)
    start = snapshot(model)
    optimizer = AnchoredOptimizer(OPTIMIZERS[name](model.parameters()), model, spec)
    train_steps(model, optimizer)
    assert_anchors_intact_and_free_moved(model, start, spec)
    assert optimizer.anchor_drift() == 0.0


def test_anchored_moments_stay_zero():
    model = build_mlp()
    spec = AnchorSpec(ratio=0.4)
    optimizer = AnchoredOptimizer(torch.optim.AdamW(model.parameters(), lr=1e-2), model, spec)
    train_steps(model, optimizer, steps=3)
    for layout, param in build_layouts(model, spec):
        mask = anchor_mask(layout, spec)
        state = optimizer.state[param]
        assert torch.count_nonzero(state["exp_avg"][mask]) == 0
        assert torch.count_nonzero(state["exp_avg_sq"][mask]) == 0
        assert torch.count_nonzero(state["exp_avg"][~mask]) > 0


def test_ratio_zero_is_the_inner_optimizer_bitwise():
    a, b = build_mlp(seed=1), build_mlp(seed=1)
    train_steps(a, torch.optim.AdamW(a.parameters(), lr=1e-2, weight_decay=0.1))
    train_steps(b, AnchoredOptimizer(torch.optim.AdamW(b.parameters(), lr=1e-2, weight_decay=0.1), b, AnchorSpec(ratio=0)))
    for (n, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(pa, pb), n


def test_mask_gradients_before_clipping_counts_free_entries_only():
    model = build_mlp()
    spec = AnchorSpec(ratio=0.5)
    optimizer = create_anchored_optimizer(model, torch.optim.SGD, spec, lr=0.1)
    loss = model(torch.randn(4, 8)).square().sum()
    loss.backward()
    full = torch.sqrt(sum(p.grad.square().sum() for p in model.parameters()))
    free = torch.sqrt(
        sum(p.grad[~anchor_mask(layout, spec)].square().sum() for layout, p in build_layouts(model, spec))
    )
    optimizer.mask_gradients()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1e-3)
    assert torch.allclose(norm, free) and not torch.allclose(norm, full)


def test_state_dict_round_trip_and_scheduler():
    model = build_mlp()
    spec = AnchorSpec()
    optimizer = AnchoredOptimizer(torch.optim.AdamW(model.parameters(), lr=1e-2), model, spec)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
    train_steps(model, optimizer, steps=2)
    scheduler.step()
    assert optimizer.state_dict() == optimizer.optimizer.state_dict()
    state = copy.deepcopy(optimizer.state_dict())  # load_state_dict shares tensors otherwise
    clone = build_mlp()
    clone.load_state_dict(model.state_dict())
    other = AnchoredOptimizer(torch.optim.AdamW(clone.parameters(), lr=1e-2), clone, spec)
    other.load_state_dict(state)
    assert other.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"] < 1e-2
    train_steps(model, optimizer, steps=1, seed=5)
    train_steps(clone, other, steps=1, seed=5)
    for pa, pb in zip(model.parameters(), clone.parameters()):
        assert torch.equal(pa, pb)


PATHS = {  # both anchor paths: the restore wrapper and the zero-copy AdamW
    "restore": lambda model, spec: AnchoredOptimizer(
        torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1), model, spec),
    "zero_copy": lambda model, spec: create_anchored_optimizer(
        model, torch.optim.AdamW, spec, zero_copy=True, lr=1e-2, weight_decay=0.1),
}


@pytest.mark.parametrize("path", sorted(PATHS))
def test_grad_scaler_skipped_steps_keep_anchors(path):
    model = build_mlp()
    spec = AnchorSpec()
    start = snapshot(model)
    optimizer = PATHS[path](model, spec)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    g = torch.Generator().manual_seed(0)
    skipped = 0
    for step in range(6):
        x, y = torch.randn(16, 8, generator=g), torch.randint(0, 3, (16,), generator=g)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        if step % 2 == 0:  # inject an overflow: the scaler must skip this step
            next(model.parameters()).grad[0, 0] = float("inf")
        scaler.unscale_(optimizer)
        optimizer.mask_gradients()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        before = snapshot(model)
        scaler.step(optimizer)
        scaler.update()
        if all(torch.equal(before[n], p) for n, p in model.named_parameters()):
            skipped += 1
    assert skipped == 3
    assert_anchors_intact_and_free_moved(model, start, spec)


@pytest.mark.parametrize("path", sorted(PATHS))
def test_accelerate_loop_with_gradient_accumulation(path):
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=2)
    model = build_mlp()
    spec = AnchorSpec()
    start = snapshot(model)
    anchored = PATHS[path](model, spec)
    model, optimizer = accelerator.prepare(model, anchored)
    assert optimizer.optimizer is anchored
    g = torch.Generator().manual_seed(0)
    changes = []
    for _ in range(4):
        before = snapshot(model)
        with accelerator.accumulate(model):
            x, y = torch.randn(8, 8, generator=g), torch.randint(0, 3, (8,), generator=g)
            accelerator.backward(torch.nn.functional.cross_entropy(model(x), y))
            if accelerator.sync_gradients:
                anchored.mask_gradients()
                accelerator.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
        changes.append(any(not torch.equal(before[n], p) for n, p in model.named_parameters()))
    assert changes == [False, True, False, True]  # only synced steps update
    assert_anchors_intact_and_free_moved(model, start, spec)


def test_bf16_parameters_and_memory_bound():
    model = build_mlp(width=64).to(torch.bfloat16)
    spec = AnchorSpec(ratio=0.4)
    start = snapshot(model)
    optimizer = AnchoredOptimizer(torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9), model, spec)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        x = torch.randn(16, 8, generator=g).to(torch.bfloat16)
        loss = model(x).float().square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert_anchors_intact_and_free_moved(model, start, spec)
    targeted = sum(p.numel() for p in model.parameters())
    anchored = sum(a.num_anchored for a in optimizer.anchors)
    assert optimizer.anchor_nbytes() == targeted * 1 + anchored * 2  # bool mask + compact bf16 values


def test_neuron_memory_is_anchored_rows_only():
    model = build_mlp(width=64)
    spec = AnchorSpec(ratio=0.4, granularity="neuron")
    optimizer = create_anchored_optimizer(model, torch.optim.SGD, spec, lr=0.1)
    anchored = sum(a.num_anchored for a in optimizer.anchors)
    assert anchored < 0.6 * sum(p.numel() for p in model.parameters())
    assert all(a.layout.granularity == "neuron" for a in optimizer.anchors)
    index_bytes = sum(a.selection.units.numel() * 8 for a in optimizer.anchors)
    assert optimizer.anchor_nbytes() == anchored * 4 + index_bytes


def test_refuses_double_wrap_and_non_optimizers():
    model = build_mlp()
    optimizer = create_anchored_optimizer(model, torch.optim.SGD, AnchorSpec(), lr=0.1)
    with pytest.raises(TypeError, match="already an AnchoredOptimizer"):
        AnchoredOptimizer(optimizer, model, AnchorSpec())
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        AnchoredOptimizer(object(), model, AnchorSpec())


def test_mask_is_reapplied_after_every_gradient_write():
    """mask_gradients() skips a gradient it already masked, but never one written since."""
    model = build_mlp()
    spec = AnchorSpec()
    optimizer = create_anchored_optimizer(model, torch.optim.SGD, spec, lr=0.1)
    layout, param = build_layouts(model, spec)[0]
    mask = anchor_mask(layout, spec)
    for _ in range(2):  # gradient accumulation: the second backward adds into the masked gradient
        model(torch.randn(4, 8)).sum().backward()
        optimizer.mask_gradients()
        assert torch.count_nonzero(param.grad[mask]) == 0
    param.grad.add_(1.0)  # any in-place write bumps the version
    optimizer.mask_gradients()
    assert torch.count_nonzero(param.grad[mask]) == 0
    param.grad = torch.ones_like(param)  # a new gradient tensor
    optimizer.mask_gradients()
    assert torch.count_nonzero(param.grad[mask]) == 0 and torch.count_nonzero(param.grad[~mask]) > 0
