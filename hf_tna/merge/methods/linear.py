"""Uniform and weighted soups (Wortsman et al., 2022): the (weighted) mean of the ingredients' weights.

Both are mergekit's `linear` method. Averages are taken as deviations from the first ingredient (float32, float64 where float32 would overflow), so
entries equal in every ingredient (anchors) come out bitwise equal (`hf_tna.merge.ops.average_tensors`).
"""

from __future__ import annotations

from ..ops import average_tensors
from .registry import merge_method


@merge_method("uniform", "uniform soup: the plain average of the ingredients' weights (Wortsman et al., 2022)",
              elementwise=True, mergekit="linear")
def uniform(tensors, consume=False):
    return average_tensors(tensors, None, True, consume=consume)


@merge_method("weighted", "weighted soup: the weighted average of the ingredients' weights (their weighted sum "
              "when not normalized)", elementwise=True, mergekit="linear")
def weighted(tensors, weights, normalize=True, consume=False):
    return average_tensors(tensors, weights, normalize, consume=consume)
