"""Linear interpolation of two models, ``(1 - alpha) A + alpha B`` (`torch.lerp` in float32, float64 where float32 would overflow): alpha 0 gives A
and 1 gives B bitwise, and entries where A equals B are kept bitwise (`hf_tna.merge.ops.interpolate_tensors`)."""

from __future__ import annotations

from ..ops import interpolate_tensors
from .registry import merge_method


@merge_method("interpolate", "linear interpolation (1 - alpha) A + alpha B of two models' weights (alpha 0 gives A "
              "and 1 gives B, bitwise)", elementwise=True, num_models=2)
def interpolate(tensors, alpha):
    a, b = tensors
    return interpolate_tensors(a, b, alpha)
