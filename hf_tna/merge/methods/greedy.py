"""Greedy soup (Wortsman et al., 2022, recipe 1): ingredients sorted by held-out score, each added to the uniform
average only if the held-out score strictly improves (`hf_tna.merge.ops.greedy_soup`).

With `kept` (what a greedy run wrote into its recipe) the evaluation is skipped: the soup is the uniform average
of those ingredients in that order, bitwise the soup the run made.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..ops import average_tensors, finite_or_wide, greedy_soup
from .registry import merge_method


class UniformView(Mapping):
    """Lazy uniform average of some state dicts, one tensor per lookup (in the order given)."""

    def __init__(self, state_dicts):
        self.state_dicts = list(state_dicts)

    def __getitem__(self, key):
        return finite_or_wide(lambda: average_tensors(sd[key] for sd in self.state_dicts))

    def __iter__(self):
        return iter(self.state_dicts[0])

    def __len__(self):
        return len(self.state_dicts[0])


@merge_method("greedy", "greedy soup (Wortsman et al., 2022): ingredients sorted by held-out score, each added to "
              "the average only if the held-out score strictly improves", whole_model=True)
def greedy(state_dicts, score_fn=None, kept=None, exclude=None, exclude_from=0):
    if kept is not None:
        bad = [i for i in kept if not 0 <= i < len(state_dicts)]
        if bad:
            raise ValueError(f"kept names ingredient {bad[0]}, but there are {len(state_dicts)} ingredients")
        return UniformView(state_dicts[i] for i in kept), {"kept": list(kept)}
    if score_fn is None:
        raise ValueError("a greedy soup needs held-out scores: an evaluation set (dataset), a score_fn, or the "
                         "`kept` list of an earlier greedy run")
    from tqdm.auto import tqdm

    bar = tqdm(total=2 * len(state_dicts) - 1, desc="greedy soup", unit="eval", disable=None)  # shown on a terminal

    def scored(state_dict):
        score = score_fn(state_dict)
        bar.update()
        return score

    try:
        soup, kept, seen = greedy_soup(state_dicts, scored, exclude=exclude, exclude_from=exclude_from)
    finally:
        bar.close()
    scores = {"greedy": seen, "ingredient_scores": [s["score"] for s in seen[: len(state_dicts)]],
              "soup_score": max(s["score"] for s in seen if s["kept"])}
    return soup, {"kept": kept, "scores": scores}
