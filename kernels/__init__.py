"""Triton kernels of cprl_fast (installed as ``cprl_fast.kernels``), one module per op, each
wrapped with ``torch.library.triton_op`` so ``torch.compile`` sees through them.

They serve CUDA tensors when the backend is ``triton`` (see :mod:`cprl_fast.ops._backend`), and
CPU tensors under ``TRITON_INTERPRET=1`` (set before triton is imported), which the tests use.
``OPS`` maps each op name of ``torch.ops.cprl_fast`` to its Triton twin.
"""

import torch

from . import attack_step, intervene, rank_mask  # noqa: F401  (registers the triton ops)

OPS = {
    name: getattr(torch.ops.cprl_fast, f"{name}_triton").default
    for name in (
        "rank_mask",
        "rank_mask_backward",
        "intervene",
        "intervene_backward",
        "attack_step",
        "attack_step_out",
    )
}
