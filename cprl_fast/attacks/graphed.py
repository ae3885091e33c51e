"""PGD with its step captured once in a CUDA graph and replayed (issue 25: the attack loop at GPU
speed). One PGD step is a forward and a backward of the model plus ``attack_step_``: hundreds
of small kernels whose launches, not their work, bound the loop at small batches. A CUDA graph
launches them all at once. The graph reads and writes fixed buffers (the images, the clean
images, the targets) and the model's parameters where they are when it is captured, so an
instance serves one model, one batch shape and dtype and one set of settings; it refuses a
model whose parameters moved since (``.to()``, a reloaded state dict that replaced tensors).
"""

from __future__ import annotations

import torch
from torch import nn

from cprl_fast import ops
from cprl_fast.attacks.common import (
    Loss,
    check_images,
    check_targets,
    eval_mode,
    input_grad,
    targets,
)
from cprl_fast.attacks.losses import mse_loss


class GraphedPGD:
    """PGD (no random start, no restarts) of ``steps`` steps of size ``alpha`` (default
    ``eps / 4``) in the L-infinity ball of ``eps``, the step captured in a CUDA graph.

    Args:
        model: images ``[N, 3, H, W]`` -> scores ``[N]``; attacked in eval mode.
        example: CUDA images of the shape and dtype every call will pass (the graph is captured
            on them: ``warmup`` eager steps on a side stream, then one captured step).
        bf16: run the model under bfloat16 autocast (its weight cache off, as capture needs).
        loss: the per-sample objective to ascend, as :func:`cprl_fast.attacks.pgd`'s.

    Calling it with images ``x`` (the example's shape, dtype and device) and targets ``y``
    ``[N]`` (e.g. the MOS labels; the default, the model's clean scores, only with a loss other
    than the squared error, whose gradient there is 0) returns the adversarial images, a new
    tensor. Each call replays the graph ``steps`` times: the steps of
    :func:`cprl_fast.attacks.pgd` with ``random_start=False``, up to the order of
    floating-point sums, and returns the last step's images (``pgd`` keeps a sample's clean
    image where the steps did not raise its loss).
    """

    def __init__(self, model: nn.Module, example: torch.Tensor, eps: float,
                 alpha: float | None = None, steps: int = 10, loss: Loss = mse_loss,
                 lo: float = 0.0, hi: float = 1.0, bf16: bool = False,
                 warmup: int = 2) -> None:  # fmt: skip
        check_images(example, eps)
        if not example.is_cuda:
            raise ValueError(f"GraphedPGD needs CUDA images (a CUDA graph), got {example.device}")
        if steps < 1 or warmup < 1:
            raise ValueError(f"steps and warmup must be >= 1, got {steps}, {warmup}")
        self.model, self.steps, self.loss = model, steps, loss
        self.x0, self.xi = example.detach().clone(), example.detach().clone()
        self.y = torch.zeros(example.shape[0], device=example.device)
        alpha = eps / 4 if alpha is None else alpha

        def step() -> None:
            with torch.autocast("cuda", torch.bfloat16, enabled=bf16, cache_enabled=False):
                g = input_grad(model, self.xi, self.y, loss)
            ops.attack_step_(self.xi, g, self.x0, alpha, eps, lo, hi)

        with eval_mode(model):
            self.y.copy_(targets(model, self.x0, None))
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # cuDNN's choices and the allocator settle first
                for _ in range(warmup):
                    step()
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                step()
        self._memory = self._parameter_memory()

    def _parameter_memory(self) -> list[int]:
        return [t.data_ptr() for t in (*self.model.parameters(), *self.model.buffers())]

    def __call__(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        check_targets("GraphedPGD", y, self.loss, random_start=False)
        if x.shape != self.x0.shape or x.dtype != self.x0.dtype or x.device != self.x0.device:
            raise ValueError(f"GraphedPGD was captured for {list(self.x0.shape)} "
                             f"{self.x0.dtype} on {self.x0.device}, got {list(x.shape)} "
                             f"{x.dtype} on {x.device}")  # fmt: skip
        if self._parameter_memory() != self._memory:
            raise RuntimeError("the model's parameters moved since GraphedPGD captured it "
                               "(.to(), a replaced tensor): build a new GraphedPGD")  # fmt: skip
        with eval_mode(self.model):
            self.y.copy_(targets(self.model, x, y))
            self.x0.copy_(x)
            self.xi.copy_(x)
            for _ in range(self.steps):
                self.graph.replay()
        return self.xi.clone()
