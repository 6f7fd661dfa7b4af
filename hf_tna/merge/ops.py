"""Fusion math: averaging, interpolation, greedy soups and loss barriers over tensors and state dicts.

Pure functions, no I/O. A *state dict* here is any ``Mapping[str, Tensor]``: a plain dict, or a lazy
mapping that loads one tensor per ``__getitem__`` (``hf_tna.merge.soup`` passes those, so a soup reads one
tensor of one ingredient at a time and its memory does not grow with the number of ingredients).

Exactness: entries bitwise equal in every input come out bitwise equal (anchored entries survive
fusion). Averages are computed as the first input minus the mean deviation from it,
``x0 - sum_i w_i (x0 - x_i)`` with weights normalised up front: where all inputs agree every deviation is
``+0.0`` and ``x0 - 0.0`` is ``x0``, signed zeros included. They run in float32 (float64 for float64 inputs),
as fast as a plain running sum; a float32 ``x0 - x_i`` overflows only for entries beyond 1.7e38 of opposite
signs, and then `finite_or_wide` runs the same computation again in float64 (`wide()`), where it cannot
overflow and the mean of finite values lies between them. Non-floating tensors (counters, position ids) are
taken from the first input. Callers publishing a result check it with `check_output_finite` (weights that
are negative can extrapolate past the output dtype's range).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import torch

from ..errors import option

StateDict = Mapping[str, torch.Tensor]


# --------------------------------------------------------------------------------------------------
# Tensors
# --------------------------------------------------------------------------------------------------
_WIDE = contextvars.ContextVar("hf_tna_wide_math", default=False)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 or _WIDE.get() else torch.float32


@contextlib.contextmanager
def wide():
    """Within the block, averages and interpolations compute in float64."""
    token = _WIDE.set(True)
    try:
        yield
    finally:
        _WIDE.reset(token)


def finite_or_wide(compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    """`compute()`, which must read its (finite) inputs afresh on every call; when its float32 result holds
    NaN or inf (an overflow of ``x0 - x`` for entries beyond 1.7e38), `compute()` again in float64."""
    result = compute()
    if not _WIDE.get() and not all_finite(result):
        with wide():
            result = compute()
    return result


def all_finite(tensor: torch.Tensor) -> bool:
    """Whether a tensor holds no NaN or inf (non-floating tensors always): the sum first, about 15x faster than
    `isfinite` (a NaN or inf anywhere makes it non-finite), `isfinite` only when the sum itself overflowed."""
    if not tensor.is_floating_point() or bool(torch.isfinite(tensor.sum())):
        return True
    return bool(torch.isfinite(tensor).all())


def check_weights(weights: Sequence[float], num: int, normalize: bool = True) -> list[float]:
    """Validated list of `num` finite weights (summing to a finite positive value when `normalize`)."""
    try:
        weights = [float(w) for w in weights]
    except (TypeError, ValueError) as err:
        raise ValueError(f"weights must be numbers: {err}") from None
    if len(weights) != num:
        raise ValueError(f"got {len(weights)} weights for {num} ingredients; give one weight per ingredient")
    bad = [w for w in weights if not math.isfinite(w)]
    if bad:
        raise ValueError(f"weights must be finite numbers, got {bad[0]}")
    try:
        total = math.fsum(weights)
    except OverflowError:
        total = math.inf
    if not math.isfinite(total):
        raise ValueError(f"weights {weights} overflow when summed; scale them down (only their ratios matter)")
    if normalize and not total > 0:
        raise ValueError(f"weights sum to {total}; with normalize=True they must sum to a positive value")
    return weights


def normalized_weights(weights: Sequence[float]) -> list[float]:
    """`weights` divided by their sum (computed without overflow); each is finite."""
    scale = max(abs(w) for w in weights)
    scaled = [w / scale for w in weights]  # |w| <= 1: the sum cannot overflow
    total = math.fsum(scaled)
    if not total > 0:
        raise ValueError(f"weights sum to {math.fsum(weights)}; they must sum to a positive value")
    out = [w / total for w in scaled]
    if not all(math.isfinite(w) for w in out):
        raise ValueError(f"weights {list(weights)} cannot be normalised to finite values")
    return out


def average_tensors(
    tensors: Iterable[torch.Tensor],
    weights: Sequence[float] | None = None,
    normalize: bool = True,
    consume: bool = False,
) -> torch.Tensor:
    """Weighted mean of same-shaped tensors, in the dtype of the first one.

    `tensors` may be a generator (consumed once, one tensor alive at a time besides the first).
    `weights=None` is the uniform mean. `normalize=False` gives the plain weighted sum ``sum_i w_i x_i``
    (task-arithmetic style; no bitwise guarantee). With `normalize=True`, entries equal in every input
    are returned bitwise unchanged. `consume=True` lets float64 inputs' memory be reused for the result
    (pass only tensors nobody else holds, e.g. fresh reads from a file).
    """
    it = iter(tensors)
    try:
        first = next(it)
    except StopIteration:
        raise ValueError("average_tensors needs at least one tensor") from None
    out_dtype = first.dtype
    if not first.is_floating_point():
        for _ in it:  # consume: callers may stream from files
            pass
        return first.clone()
    cdt = _compute_dtype(out_dtype)
    x0 = first if consume and first.dtype == cdt else first.to(cdt, copy=True)
    w = None if weights is None else [float(v) for v in weights]
    if w is not None and len(set(w)) == 1 and normalize:
        w = None  # equal weights: the uniform path is exact and faster
    if not normalize:  # a weighted sum (task arithmetic): rare, so always float64, where weights summing to 1
        # give back equal entries (the anchors) after the cast in practice
        x0 = x0.to(torch.float64)
        cdt = torch.float64
        w = w if w is not None else []
        acc = x0.mul(w[0] if w else 1.0)
        for i, x in enumerate(it, start=1):
            if w and i >= len(w):
                raise ValueError(f"got {len(w)} weights for more tensors")
            acc.add_(x.to(cdt), alpha=w[i] if w else 1.0)
        return acc.to(out_dtype)
    if w is not None:
        w = normalized_weights(w)
    acc = None
    count = 1
    for x in it:
        if x.shape != first.shape:
            raise ValueError(f"cannot average tensors of shapes {tuple(first.shape)} and {tuple(x.shape)}")
        if w is None:  # acc += x0 - x, done in place without a temporary
            if acc is None:
                acc = torch.sub(x0, x, out=x) if consume and x.dtype == cdt else torch.sub(x0, x.to(cdt))
            else:
                acc.add_(x0).sub_(x)
        else:
            if count >= len(w):
                raise ValueError(f"got {len(w)} weights for more tensors")
            diff = torch.sub(x0, x, out=x) if consume and x.dtype == cdt else torch.sub(x0, x.to(cdt))
            acc = diff.mul_(w[count]) if acc is None else acc.add_(diff, alpha=w[count])
        count += 1
    if w is not None and len(w) != count:
        raise ValueError(f"got {len(w)} weights for {count} tensors")
    if acc is None:
        return first.clone()
    if w is None:
        acc.div_(count)
    return x0.sub_(acc).to(out_dtype)


def interpolate_tensors(a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    """``torch.lerp(a, b, alpha)`` with exact endpoints and entries where `a` equals `b` kept bitwise."""
    if a.shape != b.shape:
        raise ValueError(f"cannot interpolate tensors of shapes {tuple(a.shape)} and {tuple(b.shape)}")
    alpha = float(alpha)
    if not math.isfinite(alpha):
        raise ValueError(f"alpha must be a finite number, got {alpha}")
    if not a.is_floating_point():
        return (a if alpha < 0.5 else b).clone()
    if alpha == 0.0:
        return a.clone()
    if alpha == 1.0:
        return b.clone()
    cdt = _compute_dtype(a.dtype)
    a_c, b_c = a.to(cdt), b.to(cdt)
    out = torch.lerp(a_c, b_c, float(alpha))
    out = torch.where(a_c == b_c, a_c, out)
    return out.to(a.dtype)


# --------------------------------------------------------------------------------------------------
# State dicts
# --------------------------------------------------------------------------------------------------
def _compile(patterns: str | Sequence[str] | None) -> list[re.Pattern]:
    if patterns is None:
        return []
    if isinstance(patterns, str):
        patterns = [patterns]
    out = []
    for p in patterns:
        try:
            out.append(re.compile(p))
        except re.error as err:
            raise ValueError(f"exclude pattern {p!r} is not a valid regex: {err}") from None
    return out


def is_excluded(name: str, patterns: str | Sequence[str] | None) -> bool:
    """Whether tensor `name` matches one of the regex `patterns` (``re.search``)."""
    return any(p.search(name) for p in _compile(patterns))


def iter_soup(
    state_dicts: Sequence[StateDict],
    weights: Sequence[float] | None = None,
    normalize: bool = True,
    exclude: str | Sequence[str] | None = None,
    exclude_from: int | None = 0,
    keys: Iterable[str] | None = None,
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(name, averaged tensor)`` one tensor at a time, in `keys` order (default: sorted keys).

    Tensors matching `exclude` are not averaged: copied from ingredient `exclude_from`, or dropped when
    `exclude_from` is None. Keys are taken from the first state dict; run `validate_ingredients` first.
    """
    if not state_dicts:
        raise ValueError("a soup needs at least one ingredient")
    if weights is not None:
        weights = check_weights(weights, len(state_dicts), normalize)
    if exclude_from is not None and not -len(state_dicts) <= exclude_from < len(state_dicts):
        raise ValueError(f"exclude_from={exclude_from} is not an ingredient index (0..{len(state_dicts) - 1})")
    patterns = _compile(exclude)
    for name in sorted(state_dicts[0].keys()) if keys is None else keys:
        if patterns and any(p.search(name) for p in patterns):
            if exclude_from is not None:
                yield name, state_dicts[exclude_from][name].clone()
            continue
        yield name, finite_or_wide(lambda name=name: average_tensors((sd[name] for sd in state_dicts), weights, normalize))


def weighted_soup(
    state_dicts: Sequence[StateDict],
    weights: Sequence[float],
    normalize: bool = True,
    exclude: str | Sequence[str] | None = None,
    exclude_from: int | None = 0,
) -> dict[str, torch.Tensor]:
    """New state dict ``sum_i w_i sd_i / sum_i w_i`` (``sum_i w_i sd_i`` when not `normalize`)."""
    return dict(iter_soup(state_dicts, weights, normalize, exclude, exclude_from))


def uniform_soup(
    state_dicts: Sequence[StateDict], exclude: str | Sequence[str] | None = None, exclude_from: int | None = 0
) -> dict[str, torch.Tensor]:
    """New state dict: the uniform average of the ingredients (Wortsman et al. 2022, uniform soup)."""
    return dict(iter_soup(state_dicts, None, True, exclude, exclude_from))


def interpolate(
    a: StateDict, b: StateDict, alpha: float, exclude: str | Sequence[str] | None = None, exclude_from: int | None = 0
) -> dict[str, torch.Tensor]:
    """New state dict ``(1 - alpha) a + alpha b`` (``torch.lerp``); alpha 0 gives `a`, 1 gives `b`, bitwise."""
    alpha = float(alpha)
    if not math.isfinite(alpha):
        raise ValueError(f"alpha must be a finite number, got {alpha}")
    check_same_keys([a, b], ["a", "b"])
    patterns = _compile(exclude)
    out = {}
    for name in sorted(a.keys()):
        if patterns and any(p.search(name) for p in patterns):
            if exclude_from is not None:
                out[name] = (a, b)[exclude_from][name].clone()
            continue
        out[name] = finite_or_wide(lambda name=name: interpolate_tensors(a[name], b[name], alpha))
    return out


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------
def _names(num: int, names: Sequence[str] | None) -> list[str]:
    return list(names) if names is not None else [f"ingredient {i}" for i in range(num)]


def check_same_keys(state_dicts: Sequence[Mapping], names: Sequence[str] | None = None) -> None:
    """Raise ValueError naming the ingredient and a tensor when key sets differ from the first one's."""
    names = _names(len(state_dicts), names)
    ref = set(state_dicts[0].keys())
    for sd, name in zip(state_dicts[1:], names[1:]):
        keys = set(sd.keys())
        if keys != ref:
            missing, extra = sorted(ref - keys), sorted(keys - ref)
            what = f"lacks tensor {missing[0]!r}" if missing else f"has extra tensor {extra[0]!r}"
            raise ValueError(
                f"{name} {what} ({len(missing)} missing, {len(extra)} extra vs {names[0]}); ingredients must have "
                f"exactly the same tensors (same architecture and head); exclude differing heads with "
                f"{option('exclude')}"
            )


def check_tensor_specs(
    specs: Sequence[Mapping[str, tuple[tuple[int, ...], str]]],
    names: Sequence[str] | None = None,
    check_dtypes: bool = True,
) -> None:
    """`specs[i]` maps tensor name -> (shape, dtype) of ingredient i; raise ValueError on any mismatch."""
    names = _names(len(specs), names)
    check_same_keys(specs, names)
    ref = specs[0]
    for spec, name in zip(specs[1:], names[1:]):
        for key in sorted(ref):
            shape0, dtype0 = ref[key]
            shape, dtype = spec[key]
            if tuple(shape) != tuple(shape0):
                raise ValueError(
                    f"{name}: tensor {key!r} has shape {tuple(shape)}, {names[0]} has {tuple(shape0)}; "
                    "ingredients must share one architecture"
                )
            if check_dtypes and str(dtype) != str(dtype0):
                raise ValueError(
                    f"{name}: tensor {key!r} has dtype {dtype}, {names[0]} has {dtype0}; "
                    f"save all ingredients in one dtype (or pass {option('dtype')} to cast them)"
                )


def check_finite(tensor: torch.Tensor, key: str, name: str = "ingredient", what: str = "") -> None:
    """Raise ValueError when a floating tensor holds NaN or infinite values.

    `what` ends the message: by default it says the input is a diverged model; outputs pass their own."""
    if not all_finite(tensor):
        bad = int((~torch.isfinite(tensor)).sum())
        what = what or "refusing to fuse a diverged model"
        raise ValueError(f"{name}: tensor {key!r} has {bad} NaN/inf value(s); {what}")


def check_output_finite(tensor: torch.Tensor, key: str, where: str = "the result") -> torch.Tensor:
    """Refuse to publish a non-finite fused tensor (finite inputs whose weights extrapolate past the dtype's
    range); returns `tensor` so writers can wrap their output in it."""
    check_finite(tensor, key, where, "nothing is written: use weights that do not extrapolate, or a wider --dtype")
    return tensor


def validate_ingredients(
    state_dicts: Sequence[StateDict],
    names: Sequence[str] | None = None,
    check_dtypes: bool = True,
    finite: bool = True,
) -> None:
    """Same key sets, shapes, dtypes and finite values across in-memory ingredients, else ValueError."""
    if not state_dicts:
        raise ValueError("no ingredients given")
    names = _names(len(state_dicts), names)
    specs = [{k: (tuple(t.shape), str(t.dtype)) for k, t in sd.items()} for sd in state_dicts]
    check_tensor_specs(specs, names, check_dtypes)
    if finite:
        for sd, name in zip(state_dicts, names):
            for key in sorted(sd):
                check_finite(sd[key], key, name)


# --------------------------------------------------------------------------------------------------
# Greedy soup
# --------------------------------------------------------------------------------------------------
def greedy_soup(
    ingredients: Sequence[StateDict],
    score_fn: Callable[[StateDict], float],
    scores: Sequence[float] | None = None,
    exclude: str | Sequence[str] | None = None,
    exclude_from: int | None = 0,
) -> tuple[dict[str, torch.Tensor], list[int], list[dict]]:
    """Greedy soup (Wortsman et al. 2022, Recipe 1): higher `score_fn` (held-out) is better.

    Ingredients are sorted by their own score; the soup starts from the best one and each next one is
    kept only if the held-out score of the uniform average strictly improves. Returns
    ``(soup, kept ingredient indices, scores seen)``, the last a list of
    ``{"indices": [...], "score": s, "kept": bool}`` (single ingredients first, then candidates).
    `scores` may give the ingredients' scores when already known.
    """
    if not ingredients:
        raise ValueError("greedy_soup needs at least one ingredient")
    if scores is None:
        scores = [float(score_fn(sd)) for sd in ingredients]
    elif len(scores) != len(ingredients):
        raise ValueError(f"got {len(scores)} scores for {len(ingredients)} ingredients")
    seen = [{"indices": [i], "score": float(s), "kept": False} for i, s in enumerate(scores)]
    order = sorted(range(len(ingredients)), key=lambda i: (-scores[i], i))
    kept = [order[0]]
    seen[order[0]]["kept"] = True
    best = float(scores[order[0]])
    soup: dict[str, torch.Tensor] = {k: v.clone() for k, v in ingredients[order[0]].items()}
    for i in order[1:]:
        candidate = uniform_soup([ingredients[j] for j in kept + [i]], exclude, exclude_from)
        score = float(score_fn(candidate))
        improved = score > best
        seen.append({"indices": sorted(kept + [i]), "score": score, "kept": improved})
        if improved:
            kept.append(i)
            best, soup = score, candidate
    return soup, kept, seen


# --------------------------------------------------------------------------------------------------
# Linear mode connectivity
# --------------------------------------------------------------------------------------------------
def lmc_curve(
    a: StateDict,
    b: StateDict,
    eval_fn: Callable[[StateDict], tuple[float, float | None]],
    num_points: int = 25,
) -> dict[str, list]:
    """Evaluate ``interpolate(a, b, alpha)`` on `num_points` evenly spaced alphas in [0, 1].

    `eval_fn(state_dict)` returns ``(loss, accuracy)`` (accuracy may be None). Returns
    ``{"alphas": [...], "losses": [...], "accuracies": [...]}``.
    """
    if num_points < 2:
        raise ValueError(f"num_points must be >= 2 (the two endpoints), got {num_points}")
    alphas = [i / (num_points - 1) for i in range(num_points)]
    losses, accuracies = [], []
    for alpha in alphas:
        result = eval_fn(interpolate(a, b, alpha))
        loss, acc = result if isinstance(result, (tuple, list)) else (result, None)
        losses.append(float(loss))
        accuracies.append(None if acc is None else float(acc))
    return {"alphas": alphas, "losses": losses, "accuracies": accuracies}


def _barrier(alphas: Sequence[float], values: Sequence[float], sign: float) -> tuple[float, float]:
    """max over alpha of sign * (value(alpha) - linear interpolation of the endpoint values)."""
    v0, v1 = values[0], values[-1]
    best, at = 0.0, alphas[0]
    for alpha, v in zip(alphas, values):
        gap = sign * (v - (v0 + alpha * (v1 - v0)))  # v0 + alpha * 0 == v0 exactly when v0 == v1
        if gap > best:
            best, at = gap, alpha
    return best, at


def _relative(barrier: float, v0: float, v1: float) -> float:
    mean = (v0 + v1) / 2
    if mean == 0:
        return 0.0 if barrier == 0 else math.inf
    return barrier / abs(mean)


def lmc_barrier(curve: Mapping[str, Sequence]) -> dict[str, float | None]:
    """Loss and accuracy barriers of an `lmc_curve` (0 for a model with itself).

    loss barrier = max_alpha [L(alpha) - ((1 - alpha) L(0) + alpha L(1))]; accuracy barrier is its mirror,
    max_alpha [((1 - alpha) A(0) + alpha A(1)) - A(alpha)]. Both are >= 0 (the endpoints give 0); the
    relative forms divide by the mean of the endpoint values.
    """
    alphas, losses = list(curve["alphas"]), list(curve["losses"])
    if len(alphas) != len(losses) or len(alphas) < 2:
        raise ValueError("curve needs matching 'alphas' and 'losses' lists of at least two points")
    loss_b, loss_at = _barrier(alphas, losses, 1.0)
    out: dict[str, float | None] = {
        "loss_barrier": loss_b,
        "loss_barrier_relative": _relative(loss_b, losses[0], losses[-1]),
        "loss_barrier_alpha": loss_at,
        "accuracy_barrier": None,
        "accuracy_barrier_relative": None,
        "accuracy_barrier_alpha": None,
    }
    accs = curve.get("accuracies")
    if accs and all(a is not None for a in accs):
        acc_b, acc_at = _barrier(alphas, accs, -1.0)
        out.update(
            accuracy_barrier=acc_b,
            accuracy_barrier_relative=_relative(acc_b, accs[0], accs[-1]),
            accuracy_barrier_alpha=acc_at,
        )
    return out


def multi_model_barrier(individual_scores: Sequence[float], soup_score: float, higher_is_better: bool = True) -> float:
    """Mean individual score minus the soup's score (for losses, pass ``higher_is_better=False``).

    Positive means the soup is worse than its average ingredient.
    """
    if not individual_scores:
        raise ValueError("individual_scores is empty")
    mean = sum(float(s) for s in individual_scores) / len(individual_scores)
    return mean - float(soup_score) if higher_is_better else float(soup_score) - mean
