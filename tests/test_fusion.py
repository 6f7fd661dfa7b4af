"""Invariants of the pure fusion math (hf_tna.merge.ops)."""

import math

import pytest
import torch

from hf_tna.merge import ops


def _model_sd(seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return {
        "a.weight": torch.randn(8, 5, generator=g).to(dtype),
        "a.bias": torch.randn(8, generator=g).to(dtype),
        "b.weight": torch.randn(3, 8, generator=g).to(dtype),
        "pos_ids": torch.arange(4),
    }


def _bits_equal(x, y):
    if x.dtype != y.dtype or x.shape != y.shape:
        return False
    if not x.is_floating_point():
        return torch.equal(x, y)
    return torch.equal(x.contiguous().view(torch.uint8), y.contiguous().view(torch.uint8))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_soup_of_identical_models_is_the_model_bitwise(dtype):
    sd = _model_sd(0, dtype)
    sd["a.bias"][0] = -0.0
    for soup in (ops.uniform_soup([sd, sd, sd]), ops.weighted_soup([sd, sd, sd], [0.2, 0.3, 0.77])):
        assert set(soup) == set(sd)
        for k in sd:
            assert _bits_equal(soup[k], sd[k]), k


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_entries_equal_in_every_ingredient_survive_bitwise(dtype):
    base = torch.randn(64, 33, dtype=torch.float64).to(dtype)
    base.view(-1)[:5] = -0.0
    mask = torch.rand(base.shape) < 0.4
    mask.view(-1)[:5] = True
    ingredients = []
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        moved = base + 0.01 * torch.randn(base.shape, generator=g).to(dtype)
        ingredients.append({"w": torch.where(mask, base, moved)})
    for soup in (ops.uniform_soup(ingredients), ops.weighted_soup(ingredients, [1, 2, 3, 0.5, 0.1])):
        out = soup["w"]
        assert out.dtype == dtype
        assert _bits_equal(out[mask], base[mask])
        assert not torch.equal(out[~mask], base[~mask])


def test_average_matches_float64_mean():
    xs = [torch.randn(1000) for _ in range(4)]
    ws = [0.1, 0.2, 0.3, 0.4]
    ref = sum(w * x.double() for w, x in zip(ws, xs)) / sum(ws)
    assert torch.allclose(ops.average_tensors(xs, ws).double(), ref, atol=1e-6, rtol=0)
    ref_u = sum(x.double() for x in xs) / 4
    assert torch.allclose(ops.average_tensors(iter(xs)).double(), ref_u, atol=1e-6, rtol=0)
    unnorm = ops.average_tensors(xs, [1, -1, 0, 0], normalize=False)
    assert torch.allclose(unnorm, xs[0] - xs[1], atol=1e-6)


def test_interpolation_endpoints_reproduce_inputs():
    a, b = _model_sd(1, torch.bfloat16), _model_sd(2, torch.bfloat16)
    for alpha, ref in ((0, a), (1, b)):
        out = ops.interpolate(a, b, alpha)
        assert all(_bits_equal(out[k], ref[k]) for k in a)
    mid = ops.interpolate(a, b, 0.25)
    expected = torch.lerp(a["a.weight"].float(), b["a.weight"].float(), 0.25).bfloat16()
    assert torch.equal(mid["a.weight"], expected)
    same = ops.interpolate(a, a, 0.37)
    assert all(_bits_equal(same[k], a[k]) for k in a)


def test_exclude_takes_from_named_ingredient_or_drops():
    sds = [_model_sd(i) for i in range(3)]
    soup = ops.uniform_soup(sds, exclude=r"^b\.", exclude_from=2)
    assert torch.equal(soup["b.weight"], sds[2]["b.weight"])
    assert not torch.equal(soup["a.weight"], sds[2]["a.weight"])
    dropped = ops.weighted_soup(sds, [1, 1, 2], exclude=[r"^b\."], exclude_from=None)
    assert "b.weight" not in dropped and "a.weight" in dropped
    assert "b.weight" not in ops.interpolate(sds[0], sds[1], 0.5, exclude=r"^b\.", exclude_from=None)


def _linear_eval(x, y):
    def eval_fn(sd):
        logits = x @ sd["w"].T + sd["b"]
        return float(torch.nn.functional.cross_entropy(logits, y)), float((logits.argmax(1) == y).float().mean())

    return eval_fn


def test_barrier_of_a_model_with_itself_is_zero():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 6, generator=g), torch.randint(0, 3, (64,), generator=g)
    sd = {"w": torch.randn(3, 6, generator=g), "b": torch.randn(3, generator=g)}
    curve = ops.lmc_curve(sd, {k: v.clone() for k, v in sd.items()}, _linear_eval(x, y), num_points=7)
    assert len(curve["alphas"]) == 7 and curve["alphas"][0] == 0 and curve["alphas"][-1] == 1
    barrier = ops.lmc_barrier(curve)
    assert barrier["loss_barrier"] == 0 and barrier["accuracy_barrier"] == 0
    assert barrier["loss_barrier_relative"] == 0 and barrier["accuracy_barrier_relative"] == 0


def test_barrier_formula_on_a_known_curve():
    curve = {"alphas": [0, 0.5, 1], "losses": [1.0, 3.0, 2.0], "accuracies": [0.8, 0.5, 0.6]}
    b = ops.lmc_barrier(curve)
    assert b["loss_barrier"] == pytest.approx(1.5) and b["loss_barrier_alpha"] == 0.5
    assert b["loss_barrier_relative"] == pytest.approx(1.0)
    assert b["accuracy_barrier"] == pytest.approx(0.2)
    assert b["accuracy_barrier_relative"] == pytest.approx(0.2 / 0.7)
    assert ops.multi_model_barrier([0.8, 0.6], 0.5) == pytest.approx(0.2)
    assert ops.multi_model_barrier([1.0, 2.0], 2.0, higher_is_better=False) == pytest.approx(0.5)


def test_greedy_soup_never_worse_than_best_ingredient():
    g = torch.Generator().manual_seed(0)
    true_w = torch.randn(4, generator=g)
    x_val = torch.randn(50, 4, generator=g)
    y_val = x_val @ true_w

    def score(sd):
        return -float(((x_val @ sd["w"] - y_val) ** 2).mean())

    noise = [0.05, 0.1, 3.0, 0.08, 5.0]
    ingredients = [{"w": true_w + s * torch.randn(4, generator=g)} for s in noise]
    soup, kept, seen = ops.greedy_soup(ingredients, score)
    individual = [score(sd) for sd in ingredients]
    assert score(soup) >= max(individual)
    assert kept[0] == max(range(5), key=lambda i: individual[i])
    assert 2 not in kept and 4 not in kept  # the far-off ingredients only hurt
    assert len(seen) == 5 + 4 and all("score" in s for s in seen)
    assert math.isclose(score(soup), max(s["score"] for s in seen if s["kept"]))


def test_mismatched_keys_shapes_dtypes_nan_refused_with_names():
    a, b = _model_sd(0), _model_sd(1)
    missing = dict(b)
    del missing["b.weight"]
    with pytest.raises(ValueError, match=r"ingredient 1 lacks tensor 'b\.weight'"):
        ops.validate_ingredients([a, missing])
    with pytest.raises(ValueError, match=r"second has extra tensor 'x'"):
        ops.validate_ingredients([a, {**b, "x": torch.zeros(1)}], names=["first", "second"])
    with pytest.raises(ValueError, match=r"ingredient 1: tensor 'a\.weight' has shape \(5, 8\)"):
        ops.validate_ingredients([a, {**b, "a.weight": torch.zeros(5, 8)}])
    with pytest.raises(ValueError, match=r"ingredient 1: tensor 'a\.bias' has dtype torch.float16"):
        ops.validate_ingredients([a, {**b, "a.bias": b["a.bias"].half()}])
    nan = {**b, "a.bias": b["a.bias"].clone()}
    nan["a.bias"][3] = float("nan")
    with pytest.raises(ValueError, match=r"ingredient 1: tensor 'a\.bias' has 1 NaN/inf"):
        ops.validate_ingredients([a, nan])
    ops.validate_ingredients([a, b])


def test_bad_arguments_refused():
    sds = [_model_sd(0), _model_sd(1)]
    with pytest.raises(ValueError, match="2 ingredients"):
        ops.weighted_soup(sds, [1.0])
    with pytest.raises(ValueError, match="sum to"):
        ops.weighted_soup(sds, [1.0, -1.0])
    with pytest.raises(ValueError, match="not a valid regex"):
        ops.uniform_soup(sds, exclude="(")
    with pytest.raises(ValueError, match="exclude_from"):
        ops.uniform_soup(sds, exclude="a", exclude_from=5)
    with pytest.raises(ValueError, match="num_points"):
        ops.lmc_curve(sds[0], sds[1], lambda sd: (0.0, 0.0), num_points=1)


def test_consume_reuses_inputs_and_gives_the_same_result():
    xs = [torch.randn(100) for _ in range(3)]
    ref_u, ref_w = ops.average_tensors(xs), ops.average_tensors(xs, [1, 2, 3])
    assert torch.equal(ops.average_tensors([x.clone() for x in xs], consume=True), ref_u)
    assert torch.equal(ops.average_tensors([x.clone() for x in xs], [1, 2, 3], consume=True), ref_w)
    big = torch.full((4,), 3e38)
    ops.check_finite(big, "big")  # the sum overflows, the values are finite
    with pytest.raises(ValueError, match="1 NaN/inf"):
        ops.check_finite(torch.tensor([1.0, float("inf")]), "x")
