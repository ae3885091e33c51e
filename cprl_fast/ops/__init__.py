"""The three fused operations of CPRL, as PyTorch custom ops with autograd.

- :func:`rank_mask`: the CA activation ``relu(f * M)`` (SPEC section 1).
- :func:`intervene`: the masked intervention combine (SPEC section 2).
- :func:`attack_step` / :func:`attack_step_` / :func:`random_start`: the gradient-sign attack
  step (SPEC section 5).

Plain-PyTorch references with the same signatures live in :mod:`cprl_fast.reference`.
"""

from cprl_fast.ops._backend import get_backend, set_backend
from cprl_fast.ops.attack_step import attack_step, attack_step_, random_start
from cprl_fast.ops.intervene import intervene
from cprl_fast.ops.rank_mask import DEFAULT_TAU, rank_mask

__all__ = [
    "DEFAULT_TAU",
    "attack_step",
    "attack_step_",
    "get_backend",
    "intervene",
    "random_start",
    "rank_mask",
    "set_backend",
]
