"""The three fused operations of CPRL, as PyTorch custom ops with autograd.

- :func:`rank_mask`: the CA activation ``relu(f * M)`` (docs/maths.md §1).
- :func:`intervene`: the masked intervention combine (section 2).
- :func:`attack_step` / :func:`attack_step_` / :func:`random_start`: the gradient-sign attack
  step (section 5).

Each op's module holds its Python face, fake kernel, autograd and ``SPEC`` (inputs, reference,
tolerances, bytes moved, and the files of its kernels, tests and benchmark): :data:`SPECS`.
Plain-PyTorch references with the same signatures live in :mod:`cprl_fast.reference`.
"""

from cprl_fast.ops import attack_step as _attack_step_module
from cprl_fast.ops import intervene as _intervene_module
from cprl_fast.ops import rank_mask as _rank_mask_module
from cprl_fast.ops._backend import (
    get_backend,
    load_triton_kernels,
    op_for,
    set_backend,
    triton_usable,
)
from cprl_fast.ops.attack_step import attack_step, attack_step_, random_start
from cprl_fast.ops.intervene import intervene, intervene_op
from cprl_fast.ops.rank_mask import DEFAULT_TAU, ca_activation_op, rank_mask, rank_mask_op

#: op name -> its :class:`cprl_fast.ops.spec.OpSpec`
SPECS = {m.SPEC.name: m.SPEC for m in (_rank_mask_module, _intervene_module, _attack_step_module)}

if triton_usable():  # every op module has registered its autograd by now
    load_triton_kernels()

__all__ = [
    "DEFAULT_TAU",
    "SPECS",
    "attack_step",
    "attack_step_",
    "ca_activation_op",
    "get_backend",
    "intervene",
    "intervene_op",
    "op_for",
    "random_start",
    "rank_mask",
    "rank_mask_op",
    "set_backend",
]
