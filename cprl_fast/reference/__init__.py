"""Plain-PyTorch references of the three ops, with the signatures of :mod:`cprl_fast.ops`.

Tests compare every backend against them; benchmarks time them as the eager baseline (and
``torch.compile`` of them as the compiled baseline). They compute in the op-math dtype
(float32 for float16/bfloat16/float32, float64 for float64) and return the input's dtype.
:func:`rank_mask_vjp` and :func:`intervene_vjp` write out the two ops' gradients in
differentiable ops: they serve second-order gradients (``cprl_fast::<op>_vjp``, which the
ops' autograd calls under ``create_graph``).
"""

from cprl_fast.reference.attack_step import attack_step
from cprl_fast.reference.intervene import intervene, intervene_vjp
from cprl_fast.reference.rank_mask import rank_mask, rank_mask_vjp

__all__ = ["attack_step", "intervene", "intervene_vjp", "rank_mask", "rank_mask_vjp"]
