"""Zero-copy anchored optimizers: no stored anchor state, anchored entries bitwise fixed, free entries exactly
torch's own optimizer on the same masked gradients, and torch-interchangeable state dicts."""

import copy

import pytest
import torch

from hf_tna import AnchorSpec, create_anchored_optimizer
from hf_tna.anchors import anchor_mask, build_layouts
from hf_tna.optimizer import AnchoredOptimizer
from hf_tna.zero_copy import ZeroCopyAdam, ZeroCopyAdamW, ZeroCopySGD
from tests.common import build_mlp

CASES = {
    "adamw": (torch.optim.AdamW, ZeroCopyAdamW, {"lr": 1e-2, "weight_decay": 0.1}),
    "adamw_amsgrad": (torch.optim.AdamW, ZeroCopyAdamW, {"lr": 1e-2, "weight_decay": 0.1, "amsgrad": True}),
    "adam_l2": (torch.optim.Adam, ZeroCopyAdam, {"lr": 1e-2, "weight_decay": 0.05}),
    "sgd_nesterov": (torch.optim.SGD, ZeroCopySGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    "sgd_maximize": (torch.optim.SGD, ZeroCopySGD, {"lr": 0.1, "momentum": 0.5, "weight_decay": 0.01, "maximize": True}),
}


def _masks(model, spec):
    return {id(p): anchor_mask(layout, spec) for layout, p in build_layouts(model, spec)}


def _batches(n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 8, generator=g), torch.randint(0, 3, (16,), generator=g)) for _ in range(n)]


def _train(model, optimizer, steps=20, scheduler=None, reference=None):
    """Train `model`; a `reference` (model, torch optimizer, scheduler, masks) steps on the same masked
    gradients (elementwise optimizers: its free entries must follow exactly, whatever its anchored ones do)."""
    for x, y in _batches(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        if reference is not None:
            ref_model, ref_opt, ref_scheduler, masks = reference
            for p, q in zip(model.parameters(), ref_model.parameters()):
                q.grad = p.grad.masked_fill(masks[id(p)], 0.0)
            ref_opt.step()
            ref_scheduler.step()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()


@pytest.mark.parametrize("granularity", ["element", "neuron"])
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("foreach", [False, True])
def test_anchors_fixed_and_free_entries_equal_torch(case, granularity, foreach):
    torch_cls, zc_cls, kwargs = CASES[case]
    spec = AnchorSpec(ratio=0.4, seed=1, granularity=granularity)
    model = build_mlp(width=24)
    reference = copy.deepcopy(model)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    groups = [  # decay / no-decay groups, as Trainer makes them
        {"params": [p for n, p in model.named_parameters() if n.endswith("weight")]},
        {"params": [p for n, p in model.named_parameters() if n.endswith("bias")], "weight_decay": 0.0},
    ]
    optimizer = create_anchored_optimizer(model, torch_cls, spec, params=groups, zero_copy=True, foreach=foreach,
                                          **kwargs)
    assert type(optimizer) is zc_cls and optimizer.anchor_nbytes() == 0
    ref_groups = [
        {"params": [p for n, p in reference.named_parameters() if n.endswith("weight")]},
        {"params": [p for n, p in reference.named_parameters() if n.endswith("bias")], "weight_decay": 0.0},
    ]
    ref_opt = torch_cls(ref_groups, foreach=foreach, **kwargs)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.5)
    ref_scheduler = torch.optim.lr_scheduler.StepLR(ref_opt, step_size=5, gamma=0.5)
    masks = _masks(model, spec)
    _train(model, optimizer, scheduler=scheduler, reference=(reference, ref_opt, ref_scheduler, masks))
    assert sum(int(m.sum()) for m in masks.values()) > 0
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        mask = masks[id(p)]
        assert torch.equal(p[mask], start[name][mask]), f"{name}: anchored entries moved"
        assert torch.equal(p[~mask], q[~mask]), f"{name}: free entries differ from torch's {torch_cls.__name__}"
        assert not torch.equal(p[~mask], start[name][~mask])
        for key, state in optimizer.state[p].items():  # moments stay exactly 0 at anchored entries
            if torch.is_tensor(state) and state.shape == p.shape:
                assert torch.equal(state[mask], torch.zeros_like(state[mask])), key


def test_state_dicts_interchange_with_torch_both_ways():
    spec = AnchorSpec(ratio=0.4)
    model = build_mlp()
    zc = create_anchored_optimizer(model, torch.optim.AdamW, spec, zero_copy=True, lr=1e-2)
    _train(model, zc, steps=3)
    plain = torch.optim.AdamW(model.parameters(), lr=1e-2)
    plain.load_state_dict(zc.state_dict())
    assert plain.state_dict()["state"].keys() == zc.state_dict()["state"].keys()
    back = create_anchored_optimizer(model, torch.optim.AdamW, spec, zero_copy=True, lr=1e-2)
    back.load_state_dict(plain.state_dict())
    for p in model.parameters():
        assert torch.equal(back.state[p]["exp_avg"], zc.state[p]["exp_avg"])
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    _train(model, back, steps=2)
    for layout, p in build_layouts(model, spec):
        mask = anchor_mask(layout, spec)
        assert torch.equal(p[mask], start[layout.name][mask])


def test_no_anchor_state_is_kept():
    model = build_mlp(width=64)
    optimizer = create_anchored_optimizer(model, torch.optim.SGD, AnchorSpec(), zero_copy=True, lr=0.1, momentum=0.9)
    _train(model, optimizer, steps=2)
    held = [v for v in vars(optimizer).values() if torch.is_tensor(v)]
    held += [v for v in optimizer._masked.values() if torch.is_tensor(v)]
    assert held == [] and optimizer.anchor_nbytes() == 0
    assert all(isinstance(t, torch.Tensor) is False for row in optimizer._layouts for t in row)


def test_manifest_and_drift_match_the_restore_path():
    spec = AnchorSpec(ratio=0.3, seed=4)
    model = build_mlp()
    restore = AnchoredOptimizer(torch.optim.AdamW(model.parameters(), lr=1e-2), model, spec)
    zc = create_anchored_optimizer(model, torch.optim.AdamW, spec, zero_copy=True, lr=1e-2)
    assert zc.manifest() == restore.manifest()
    _train(model, zc, steps=3)
    assert zc.anchor_drift() == 0.0
    with torch.no_grad():
        next(model.parameters())[0, 0] += 1.0  # anchored? make sure by moving every entry of one tensor
        next(model.parameters()).add_(1.0)
    assert zc.anchor_drift() == 1.0


def test_param_groups_added_later_are_anchored():
    spec = AnchorSpec(ratio=0.5)
    model = build_mlp()
    first, second = list(model.parameters())[:2], list(model.parameters())[2:]
    optimizer = create_anchored_optimizer(model, torch.optim.AdamW, spec, params=first, zero_copy=True, lr=1e-2)
    optimizer.add_param_group({"params": second, "lr": 5e-3})
    assert [layout.name for layout in optimizer.anchor_layouts] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    _train(model, optimizer, steps=3)
    for layout, p in build_layouts(model, spec):
        mask = anchor_mask(layout, spec)
        assert torch.equal(p[mask], start[layout.name][mask]) and not torch.equal(p, start[layout.name])


def test_bf16_parameters_keep_anchors_bitwise():
    spec = AnchorSpec(ratio=0.4)
    model = build_mlp().to(torch.bfloat16)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = create_anchored_optimizer(model, torch.optim.AdamW, spec, zero_copy=True, lr=1e-2, weight_decay=0.1)
    for x, y in _batches(5):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x.to(torch.bfloat16)).float(), y).backward()
        optimizer.step()
    for layout, p in build_layouts(model, spec):
        mask = anchor_mask(layout, spec)
        assert torch.equal(p[mask], start[layout.name][mask])


def test_path_choice_and_refusals(caplog):
    import logging

    model = build_mlp()
    with caplog.at_level(logging.INFO, logger="hf_tna"):
        restore = create_anchored_optimizer(model, torch.optim.AdamW, AnchorSpec(), lr=1e-3)
    assert isinstance(restore, AnchoredOptimizer)  # CPU: the restore path by default
    assert "restore-path anchors" in caplog.text
    assert isinstance(create_anchored_optimizer(model, torch.optim.RMSprop, AnchorSpec(), lr=1e-3), AnchoredOptimizer)
    with pytest.raises(ValueError, match="RMSprop"):
        create_anchored_optimizer(model, torch.optim.RMSprop, AnchorSpec(), zero_copy=True, lr=1e-3)


def test_tna_trainer_takes_the_zero_copy_path_when_asked(tmp_path):
    from hf_tna import TNAConfig, TNATrainer, verify_anchors
    from hf_tna.zero_copy import ZeroCopyMixin
    from tests.common import build_tiny_bert, text_dataset

    reports = {}
    for zero_copy in (True, False):
        model = build_tiny_bert()
        args = TNAConfig(output_dir=str(tmp_path / str(zero_copy)), per_device_train_batch_size=8, max_steps=3,
                         learning_rate=1e-2, weight_decay=0.1, report_to="none", use_cpu=True, save_strategy="no",
                         logging_steps=1, anchor_zero_copy=zero_copy, optim="adamw_torch")
        trainer = TNATrainer(model=model, args=args, train_dataset=text_dataset())
        trainer.train()
        assert isinstance(trainer.anchored_optimizer, ZeroCopyMixin) == zero_copy
        assert all(log.get("anchor_drift", 0.0) == 0.0 for log in trainer.state.log_history)
        trainer.save_model(str(tmp_path / f"out{zero_copy}"))
        assert verify_anchors(tmp_path / f"out{zero_copy}", build_tiny_bert())["intact"]
        reports[zero_copy] = trainer.anchored_optimizer.manifest()
    assert reports[True] == reports[False]  # one manifest whichever path


@pytest.mark.slow
def test_compiled_kernel_matches_torch_without_recompiling():
    """The one compile test: the fused kernel (hash in-kernel) over 20 steps with a changing learning rate holds
    the anchors bitwise, follows torch's AdamW within 1e-5 relative per tensor, and compiles its graph once."""
    from torch._dynamo.utils import counters

    spec = AnchorSpec(ratio=0.4, seed=1, granularity="element")
    model = build_mlp(width=24)
    neuron_model = build_mlp(width=24)
    reference = copy.deepcopy(model)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = create_anchored_optimizer(model, torch.optim.AdamW, spec, zero_copy=True, compiled=True,
                                          lr=1e-2, weight_decay=0.1)
    ref_opt = torch.optim.AdamW(reference.parameters(), lr=1e-2, weight_decay=0.1, foreach=False)
    masks = _masks(model, spec)
    graphs = []
    for step, (x, y) in enumerate(_batches(20)):
        for group in (*optimizer.param_groups, *ref_opt.param_groups):
            group["lr"] = 1e-2 / (1 + step)  # changes every step: passed to the kernel as a tensor
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        for p, q in zip(model.parameters(), reference.parameters()):
            q.grad = p.grad.masked_fill(masks[id(p)], 0.0)
        optimizer.mask_gradients()
        optimizer.step()
        ref_opt.step()
        graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[-1] == graphs[0] > 0, f"recompiled: {graphs}"
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        mask = masks[id(p)]
        assert torch.equal(p[mask], start[name][mask])
        assert ((p[~mask] - q[~mask]).abs().max() / q[~mask].abs().max()) <= 1e-5, name
        state = optimizer.state[p]
        assert torch.equal(state["exp_avg"][mask], torch.zeros_like(state["exp_avg"][mask]))
    plain = torch.optim.AdamW(model.parameters(), lr=1e-2)
    plain.load_state_dict(optimizer.state_dict())  # torch's own state layout
    # a neuron layout through the same graph
    nspec = AnchorSpec(ratio=0.4, seed=1, granularity="neuron")
    nstart = {n: p.detach().clone() for n, p in neuron_model.named_parameters()}
    nopt = create_anchored_optimizer(neuron_model, torch.optim.AdamW, nspec, zero_copy=True, compiled=True, lr=1e-2)
    _train(neuron_model, nopt, steps=3)
    for layout, p in build_layouts(neuron_model, nspec):
        mask = anchor_mask(layout, nspec)
        assert torch.equal(p[mask], nstart[layout.name][mask])
