"""CUDA-only checks (run on a GPU machine: `python tests/test_cuda.py` or pytest); skipped without CUDA."""

import pytest
import torch

from hf_tna.anchors import AnchorSpec, anchor_mask, build_layouts
from hf_tna.optimizer import AnchoredOptimizer

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _train(model, optimizer, steps):
    g = torch.Generator(device="cuda").manual_seed(0)
    for _ in range(steps):
        x = torch.randn(32, 8, device="cuda", generator=g)
        loss = model(x).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.mask_gradients()
        optimizer.step()


def _assert_intact(model, start, spec):
    moved = False
    for layout, param in build_layouts(model, spec):
        mask = anchor_mask(layout, spec, "cuda")
        assert torch.equal(param.detach()[mask], start[layout.name][mask]), layout.name
        moved |= bool((param.detach()[~mask] != start[layout.name][~mask]).any())
    assert moved


@requires_cuda
@pytest.mark.parametrize("granularity", ["element", "neuron"])
def test_cuda_graph_restore_keeps_anchors_even_after_reallocation(granularity):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.ReLU(), torch.nn.Linear(64, 3)).cuda()
    spec = AnchorSpec(ratio=0.4, granularity=granularity)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = AnchoredOptimizer(torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1), model, spec)
    _train(model, optimizer, 5)
    assert optimizer._restore_graph is not None  # captured after two eager restores
    _assert_intact(model, start, spec)
    for p in model.parameters():  # re-allocate every parameter: the graph must not write stale memory
        p.data = p.data.clone()
    _train(model, optimizer, 5)
    _assert_intact(model, start, spec)
    assert optimizer.anchor_drift() == 0.0


@requires_cuda
def test_cuda_mask_equals_cpu_mask():
    layout = build_layouts(torch.nn.Linear(300, 700), AnchorSpec())[0][0]
    assert torch.equal(anchor_mask(layout, AnchorSpec(), "cuda").cpu(), anchor_mask(layout, AnchorSpec(), "cpu"))


if __name__ == "__main__":
    for granularity in ("element", "neuron"):
        test_cuda_graph_restore_keeps_anchors_even_after_reallocation(granularity)
    test_cuda_mask_equals_cpu_mask()
    print("cuda checks passed")
