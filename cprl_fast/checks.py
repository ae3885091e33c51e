"""Argument checks, each written once and naming the argument: the ops' Python entry points,
their fake (meta) kernels, the Triton kernels, the CA module and the attacks all call these.

The op checks mirror ``csrc/checks.h`` message for message, so that a bad call fails the same
way under ``torch.compile`` tracing as in eager mode (``tests/test_op_specs.py`` checks the
parity): ``ValueError`` for a wrong shape, device or value, ``TypeError`` for a wrong dtype or a
non-tensor. This module imports nothing from the package: ``cprl_fast.ops`` and
``cprl_fast.kernels`` both depend on it, never on each other at import time.
"""

from __future__ import annotations

import math
import numbers

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Op-math dtype: float64 for float64 inputs, float32 for float32/float16/bfloat16."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def dense_format(x: torch.Tensor) -> torch.memory_format:
    """Memory format the kernels compute in and return: channels_last for a dense
    channels_last 4-D tensor that is not also contiguous, else contiguous."""
    if (
        x.dim() == 4
        and not x.is_contiguous()
        and x.is_contiguous(memory_format=torch.channels_last)
    ):
        return torch.channels_last
    return torch.contiguous_format


def check_device(device: str | torch.device, name: str = "device") -> torch.device:
    """A device a user named (an option, a config value): parsed, and there on this machine."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{name} must be cpu, cuda or cuda:N, got {device!r}") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"{name} is {device!r}, but no GPU is visible to torch here")
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"{name} is {device!r}, but only {count} GPU(s) are visible")
    elif dev.type != "cpu":
        raise ValueError(f"{name} must be cpu, cuda or cuda:N, got {device!r}")
    return dev


def check_count(value: object, name: str) -> int:
    """A count a user gave (a batch size, workers, steps, a pixel limit): an integer >= 1
    (Python's or NumPy's; not a bool), returned as an ``int``; else a ValueError naming
    ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def check_named_once(names: list[str], what: str) -> None:
    """Raises a ValueError naming the first of ``names`` given more than once (``what``: the
    option, e.g. ``"attacks"``; a result keyed by name would hold one under two)."""
    twice = [n for n in dict.fromkeys(names) if names.count(n) > 1]
    if twice:
        raise ValueError(f"{what} must each be named once, got {twice[0]!r} "
                         f"{names.count(twice[0])} times")  # fmt: skip


def check_rankable(count: int, what: str) -> None:
    """Raises a ValueError naming ``what`` (``"evaluate"``, ``"an audit"``) where ``count``
    images are fewer than the 2 that SRCC needs to rank."""
    if count < 2:
        raise ValueError(f"{what} needs at least 2 images (SRCC ranks them), got {count}")


#: The largest seed a run takes (a model card's bound, ``TrainConfig.seed``; torch and NumPy
#: take every seed from 0 to it).
MAX_SEED = 2**63 - 1


def check_seed(value: object, name: str = "seed") -> int:
    """A seed a user gave: an integer from 0 to :data:`MAX_SEED` (not a bool), returned as an
    ``int``; else a ValueError naming ``name`` (NumPy's own says "expected non-negative
    integer", torch's "Overflow when unpacking long long")."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
            or not 0 <= value <= MAX_SEED):  # fmt: skip
        raise ValueError(f"{name} must be an integer from 0 to 2**63 - 1, got {value!r}")
    return int(value)


def check_tensor(x: object, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")


def check_float(x: torch.Tensor, name: str) -> None:
    check_tensor(x, name)
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got {x.dtype}")


def check_feature(x: torch.Tensor, name: str) -> None:
    check_tensor(x, name)
    if x.dim() != 4:
        raise ValueError(
            f"{name} must have shape [N, C, H, W], "
            f"got a {x.dim()}-d tensor of shape {list(x.shape)}"
        )
    if min(x.shape[1:]) < 1:
        raise ValueError(f"{name} must have C, H, W >= 1, got shape {list(x.shape)}")
    check_float(x, name)


def check_same_device(a: torch.Tensor, an: str, b: torch.Tensor, bn: str) -> None:
    if a.device != b.device:
        raise ValueError(f"{bn} must be on the same device as {an} ({a.device}), got {b.device}")


def check_same_shape(a: torch.Tensor, an: str, b: torch.Tensor, bn: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{bn} must have the shape of {an} {list(a.shape)}, got {list(b.shape)}")


def check_same_dtype(a: torch.Tensor, an: str, b: torch.Tensor, bn: str) -> None:
    if a.dtype != b.dtype:
        raise TypeError(f"{bn} must have the dtype of {an} ({a.dtype}), got {b.dtype}")


def check_mask(f: torch.Tensor, mask: torch.Tensor, name: str) -> None:
    check_tensor(mask, name)
    if mask.dim() != 2 or tuple(mask.shape) != tuple(f.shape[:2]):
        raise ValueError(
            f"{name} must have shape [N, C] = {list(f.shape[:2])}, got {list(mask.shape)}"
        )
    check_float(mask, name)
    check_same_device(f, "f", mask, name)


def check_offset(f: torch.Tensor, b: torch.Tensor) -> None:
    check_tensor(b, "b")
    if b.numel() != 1:
        raise ValueError(f"b must be a tensor with one element, got shape {list(b.shape)}")
    check_float(b, "b")
    check_same_device(f, "f", b, "b")


def check_temperature(temperature: float) -> None:
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a positive finite number, got {temperature:g}")


def check_tau(tau: float) -> None:
    if not (tau > 0 and math.isfinite(tau)):
        raise ValueError(f"tau must be a positive finite number for the soft rank, got {tau:g}")


def check_eps(eps: float) -> None:
    """The L-infinity budget of an attack: finite and ``>= 0`` (pixel units)."""
    if not isinstance(eps, (int, float)) or isinstance(eps, bool):
        raise TypeError(f"eps must be a number, got {type(eps).__name__}")
    if not (eps >= 0 and math.isfinite(eps)):
        raise ValueError(f"eps must be finite and >= 0, got {eps:g}")


def _grey_levels_hint(value: float) -> str:
    """``"; 8 grey levels is 8/255"`` for a whole number up to 255 (what a pixel-unit value
    above 1 most likely meant), else ``""``."""
    return f"; {value:g} grey levels is {value:g}/255" if value == int(value) <= 255 else ""


def check_image_eps(eps: float) -> None:
    """The budget of an attack on images in [0, 1] (every dataset's, every command's): finite
    and in [0, 1], 1 being unbounded; a larger one is a budget in grey levels by mistake."""
    check_eps(eps)
    if eps > 1:
        raise ValueError(f"eps must be at most 1 for images in [0, 1] (1/255 is one grey level, "
                         f"1 is unbounded), got {eps:g}{_grey_levels_hint(eps)}")  # fmt: skip


def check_noise_sigma(sigma: object, name: str, pixel_units: bool = True,
                      zero_ok: bool = False) -> float:
    """A Gaussian noise level (noise training, randomized smoothing): finite and ``> 0``
    (``>= 0`` where ``zero_ok``: 0 is off); in pixel units for images in [0, 1] also at most 1,
    a larger one drowning the image (a level in grey levels by mistake); in feature units
    (``pixel_units`` False) uncapped. Returns it as a float."""
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not (
        math.isfinite(sigma) and (sigma >= 0 if zero_ok else sigma > 0)
    ):
        raise ValueError(f"{name} must be a finite number {'>=' if zero_ok else '>'} 0, "
                         f"got {sigma!r}")  # fmt: skip
    if pixel_units and sigma > 1:
        raise ValueError(f"{name} must be at most 1 for images in [0, 1] (pixel units: 1/255 is "
                         f"one grey level), got {sigma:g}{_grey_levels_hint(sigma)}")  # fmt: skip
    return float(sigma)


def check_range(lo: float, hi: float) -> None:
    """The valid pixel range of an attack: ``lo <= hi``."""
    if not lo <= hi:
        raise ValueError(f"lo must be <= hi, got lo={lo:g} hi={hi:g}")


def check_rank_mask_args(
    f: torch.Tensor, b: torch.Tensor, temperature: float, soft: bool, tau: float
) -> None:
    check_feature(f, "f")
    check_offset(f, b)
    check_temperature(temperature)
    if soft:
        check_tau(tau)


def check_intervene_args(f: torch.Tensor, t: torch.Tensor, mask: torch.Tensor, mode: str) -> None:
    check_feature(f, "f")
    check_tensor(t, "t")
    check_same_device(f, "f", t, "t")
    check_same_shape(f, "f", t, "t")
    check_same_dtype(f, "f", t, "t")
    check_mask(f, mask, "mask")
    if mode not in ("sf", "nc"):
        raise ValueError(f"mode must be 'sf' or 'nc', got '{mode}'")


def check_attack_step_args(
    x: torch.Tensor,
    grad: torch.Tensor,
    x0: torch.Tensor,
    alpha: float,
    eps: float,
    lo: float,
    hi: float,
) -> None:
    check_float(x, "x")
    check_tensor(grad, "grad")
    check_tensor(x0, "x0")
    check_same_device(x, "x", grad, "grad")
    check_same_device(x, "x", x0, "x0")
    check_same_shape(x, "x", grad, "grad")
    check_same_shape(x, "x", x0, "x0")
    check_same_dtype(x, "x", grad, "grad")
    check_same_dtype(x, "x", x0, "x0")
    if not math.isfinite(alpha):
        raise ValueError(f"alpha must be finite, got {alpha:g}")
    check_eps(eps)
    check_range(lo, hi)


def check_output_grad(f: torch.Tensor, grad: torch.Tensor, name: str) -> None:
    """The incoming gradient of an op output shaped like ``f``."""
    check_tensor(grad, name)
    check_same_shape(f, "f", grad, name)
    check_same_dtype(f, "f", grad, name)
    check_same_device(f, "f", grad, name)


def check_optional_mask_grad(f: torch.Tensor, grad_mask: torch.Tensor | None) -> None:
    if grad_mask is not None:
        check_mask(f, grad_mask, "grad_mask")


def _has_memory(t: torch.Tensor) -> bool:
    """Whether ``t.data_ptr()`` names real memory: a plain tensor (or parameter) on a device, not
    a tracing stand-in (FakeTensor, FunctionalTensor) or another subclass."""
    return type(t) in (torch.Tensor, torch.nn.Parameter) and t.device.type != "meta"


def _byte_span(t: torch.Tensor) -> tuple[int, int] | None:
    """[first, last) byte of a tensor whose elements are dense in its span, else None."""
    if t.numel() == 0 or not _dense_in_span(t):
        return None
    start = t.data_ptr()
    return start, start + t.numel() * t.element_size()


def _dense_in_span(t: torch.Tensor) -> bool:
    strides = sorted((st, sz) for st, sz in zip(t.stride(), t.shape, strict=True) if sz > 1)
    expected = 1
    for stride, size in strides:
        if stride != expected:
            return False
        expected *= size
    return True


def check_no_overlap(out: torch.Tensor, inputs: tuple[torch.Tensor, ...]) -> None:
    """As ATen's out= ops: no element of ``out`` written twice, and ``out`` shares memory with
    an input only exactly (the same elements), never in part. Dense tensors are compared by
    their byte spans; other layouts, and tensors whose memory cannot be read (meta, fake and
    functional tensors while tracing, other subclasses), are not checked (as ATen's "too
    hard")."""
    if not _has_memory(out):
        return
    if any(st == 0 and sz > 1 for st, sz in zip(out.stride(), out.shape, strict=True)):
        raise RuntimeError(
            "unsupported operation: more than one element of the written-to tensor refers to a "
            "single memory location. Please clone() the tensor before performing the operation."
        )
    span = _byte_span(out)
    for t in inputs:
        other = _byte_span(t) if _has_memory(t) else None
        if span is None or other is None or (span == other and t.stride() == out.stride()):
            continue
        if span[0] < other[1] and other[0] < span[1]:
            raise RuntimeError(
                "unsupported operation: some elements of the input tensor and the written-to "
                "tensor refer to a single memory location. Please clone() the tensor before "
                "performing the operation."
            )


def check_out(x: torch.Tensor, grad: torch.Tensor, x0: torch.Tensor, out: torch.Tensor) -> None:
    """``out`` of attack_step: like ``x``, and overlapping no input in part (csrc/checks.h)."""
    check_tensor(out, "out")
    check_same_device(x, "x", out, "out")
    check_same_shape(x, "x", out, "out")
    check_same_dtype(x, "x", out, "out")
    check_no_overlap(out, (x, grad, x0))


def check_images(x: object, name: str = "images") -> torch.Tensor:
    """Images a model scores: a float tensor ``[N, 3, H, W]`` (or one image ``[3, H, W]``,
    returned with a batch dimension) with ``H, W >= 1``, finite values in [0, 1]. ``N`` may be
    0. The message says how to fix uint8 or 0-255 input. Reads the values (no autograd)."""
    check_tensor(x, name)
    if not x.is_floating_point():
        hint = " (for uint8 images use x.float() / 255)" if x.dtype == torch.uint8 else ""
        raise TypeError(f"{name} must be a float tensor with values in [0, 1], got {x.dtype}"
                        f"{hint}")  # fmt: skip
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"{name} must have shape [N, 3, H, W] or [3, H, W], got {list(x.shape)}")
    if min(x.shape[2:]) < 1:
        raise ValueError(f"{name} must have H, W >= 1, got shape {list(x.shape)}")
    if x.numel():
        v = x.detach()
        if not bool(torch.isfinite(v).all()):
            raise ValueError(f"NaN or infinite values in {name}: pixels must be finite, in "
                             f"[0, 1]")  # fmt: skip
        lo, hi = float(v.min()), float(v.max())
        if lo < 0 or hi > 1:
            hint = " (0-255 values: divide by 255)" if hi <= 255 and lo >= 0 else ""
            raise ValueError(f"{name} must be in [0, 1], got values in [{lo:g}, {hi:g}]{hint}")
    return x
