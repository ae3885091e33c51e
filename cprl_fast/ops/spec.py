"""What defines an op for its tests and benchmarks: :class:`OpSpec`, one per op.

Each op module (``rank_mask.py``, ``intervene.py``, ``attack_step.py``) ends with its ``SPEC``:
sample inputs (shapes, layouts, dtypes, option variants), how the public function and the
plain-PyTorch reference are called on them, which inputs take gradients, tolerances, the bytes
each pass must move, the error cases every kernel must report alike, and the files that hold
the op from schema to benchmark. ``tests/test_op_specs.py`` runs forward, backward, gradcheck,
opcheck and error-message parity over every spec; ``bench/cases.py`` builds its cases from the
same specs.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

LAYOUTS = ("contiguous", "channels_last", "strided", "permuted")

#: Tolerances of a kernel against its reference, per dtype of the inputs.
TOLERANCES = {
    torch.float64: {"rtol": 1e-10, "atol": 1e-12},
    torch.float32: {"rtol": 1e-5, "atol": 1e-6},
    torch.float16: {"rtol": 2e-3, "atol": 2e-3},
    torch.bfloat16: {"rtol": 1.6e-2, "atol": 1e-2},
}
DTYPES = tuple(TOLERANCES)


def unaligned(args: tuple) -> tuple:
    """``args`` with each 4-D tensor's values and strides moved into a buffer that starts one
    element into its allocation: still dense, but its data pointer is not 16-byte aligned, so
    the CUDA kernels must read it one element at a time rather than in 16-byte packs."""

    def shifted(x: torch.Tensor) -> torch.Tensor:
        buf = torch.empty(x.numel() + 1, dtype=x.dtype, device=x.device)
        return buf[1:].as_strided(x.shape, x.stride()).copy_(x)

    return tuple(shifted(a) if isinstance(a, torch.Tensor) and a.dim() == 4 else a for a in args)


def seed_of(*parts: object) -> int:
    """A seed that differs between cases and is the same on every run."""
    return zlib.crc32(repr(parts).encode()) % 100_000


def in_layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values as the 4-D tensor ``x``, stored in ``layout`` (one of :data:`LAYOUTS`)."""
    if layout == "contiguous":
        return x.contiguous()
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "strided":  # every other column of a wider buffer: not dense
        n, c, h, w = x.shape
        wide = torch.zeros(n, c, h, 2 * w, dtype=x.dtype, device=x.device)
        wide[..., ::2] = x
        return wide[..., ::2]
    if layout == "permuted":  # stored as [N, H, C, W]: dense but neither layout
        return x.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)
    raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")


def feature(
    shape: Sequence[int],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    seed: int = 0,
    layout: str = "contiguous",
    gap: float = 0.05,
) -> torch.Tensor:
    """Random features whose channel means are at least ``gap`` apart per sample, so that the
    hard rank does not depend on the order of a floating-point sum (ties are tested apart)."""
    g = torch.Generator().manual_seed(seed)
    n, c = shape[0], shape[1]
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    spatial = tuple(range(2, x.dim()))
    if spatial:
        x = x - x.mean(dim=spatial, keepdim=True)
    perms = [torch.randperm(c, generator=g) for _ in range(n)]
    offsets = (torch.stack(perms) if perms else torch.empty(0, c)).to(torch.float64)
    offsets = (offsets - c / 2) * gap
    x = x + offsets.reshape(n, c, *([1] * len(spatial)))
    x = x.to(dtype=dtype, device=device)
    return in_layout(x, layout) if x.dim() == 4 else x


def like(x: torch.Tensor, seed: int, scale: float = 1.0) -> torch.Tensor:
    """A random tensor with the shape, dtype, device and layout of ``x``."""
    g = torch.Generator().manual_seed(seed)
    r = (torch.randn(x.shape, generator=g, dtype=torch.float64) * scale).to(x.dtype).to(x.device)
    return torch.empty_like(x).copy_(r)


@dataclass(frozen=True)
class BadCall:
    """An invalid call every kernel (C++, fake, Triton) must refuse with the same message."""

    what: str  #: a short description, the test id
    args: Callable[[tuple], tuple]  #: valid op arguments -> invalid ones
    error: type[Exception]
    message: str  #: a regular expression the message must match


@dataclass(frozen=True)
class OpSpec:
    """Everything the shared op tests and the benchmarks need to know about one op.

    ``sample(shape, dtype, device, layout, seed, variant)`` returns the raw op arguments, in
    the order of the schema of ``torch.ops.cprl_fast.<name>``. ``call(fn, args)`` calls the
    public function (``fn`` = :mod:`cprl_fast.ops`'s) or the reference (same signature) on
    them and returns a tuple of outputs; gradients flow to ``args[i]`` for ``i`` in
    ``grad_args``. ``backward_op`` names the op autograd calls, and ``backward_sample`` gives
    its arguments from a forward sample.
    """

    name: str
    public: Callable
    reference: Callable
    sample: Callable[..., tuple]
    call: Callable[[Callable, tuple], tuple]
    variants: tuple[dict, ...]  #: option sets of ``sample`` that every check covers
    shapes: tuple[tuple[int, ...], ...]  #: odd test shapes
    bench_shapes: tuple[tuple[int, ...], ...]  #: the shapes users run (bench/)
    small_bench_shapes: tuple[tuple[int, ...], ...]  #: CI's cheap benchmark mode
    passes: tuple[str, ...]  #: "fwd", "bwd", "fwdbwd"
    bytes_moved: dict[str, int]  #: per pass, the minimum bytes as a multiple of numel*itemsize
    bad_calls: tuple[BadCall, ...]
    files: dict[str, str]  #: where the op lives: schema, core, cpu, cuda, triton, reference, ...
    grad_args: tuple[int, ...] = ()
    backward_op: str | None = None
    backward_sample: Callable[[tuple, int], tuple] | None = None
    bench_variant: dict = field(default_factory=dict)
    #: looser tolerances than :data:`TOLERANCES` for some variants (e.g. soft-rank sums)
    tolerance: Callable[[torch.dtype, dict], dict] = lambda dtype, variant: TOLERANCES[dtype]

    @property
    def op(self) -> torch._ops.OpOverloadPacket:
        return getattr(torch.ops.cprl_fast, self.name)
