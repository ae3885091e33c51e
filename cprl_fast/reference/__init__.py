"""Plain-PyTorch references of the three ops, with the signatures of :mod:`cprl_fast.ops`.

Tests compare every backend against them; benchmarks time them as the eager baseline (and
``torch.compile`` of them as the compiled baseline). They compute in the op-math dtype
(float32 for float16/bfloat16/float32, float64 for float64) and return the input's dtype.
"""

from cprl_fast.reference.attack_step import attack_step
from cprl_fast.reference.intervene import intervene
from cprl_fast.reference.rank_mask import rank_mask

__all__ = ["attack_step", "intervene", "rank_mask"]
