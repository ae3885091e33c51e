"""Triton kernels of cprl_fast (installed as ``cprl_fast.kernels``), one module per op, each
wrapped with ``torch.library.triton_op`` so ``torch.compile`` sees through them.

They serve CUDA tensors when the backend is ``triton`` (the backend table of
:mod:`cprl_fast.ops._backend` imports this package on first use and registers the ops'
autograd on these twins), and CPU tensors under ``TRITON_INTERPRET=1`` (set before triton is
imported), which the tests use. ``OPS`` maps each op name of ``torch.ops.cprl_fast`` to its
Triton twin, registered with the native op's schema. Nothing here imports ``cprl_fast.ops``.
"""

import cprl_fast._C  # noqa: F401  (the native schemas the twins copy)
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
