"""The audit's full suite timed against its floor, on any device: issue 25's audit target on a
GPU (ResNet-50, 224 px, 250 built-in images: at most 1.3x its floor and 3 minutes) and issue
16's target 4 on the CPU (``bench/targets.py``).

The floor is the work the suite cannot skip (:func:`suite_passes`: every gradient step and
restart, every query of the gradient-free attack, at every eps, the clean forward and the
unbounded check's steps) times the cost of one pass per image, measured on the same device
just before and just after the audit (a shared machine drifts within minutes): an eval
forward, and a forward + backward to the input, each at the audit's batch size and at
``batch_size x len(eps)`` (the most that running the eps of one suite as one batch could
gain). The audit itself runs on ``--images`` of the 250 built-in images and is scaled
linearly to 250 (its work is per image); the result says so.

    python -m bench.audit_time --device cuda --arch resnet50 --size 224 --images 32 \\
        --out audit.json                                   # the GPU step of gpu_check.sh
    python -m bench.audit_time --device cpu --arch resnet18 --size 32 --images 4 --rounds 3
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Sequence

import torch
from torch import nn

from bench.run import describe_machine
from bench.timing import interleaved
from cprl_fast.io import write_json_atomic

#: The images the audit target is stated for (the built-in set holds 250).
TARGET_IMAGES = 250


@dataclasses.dataclass
class AuditTiming:
    """One timed audit and its floor. Seconds are wall time (the device synchronised), per
    ``TARGET_IMAGES`` images unless the name says otherwise."""

    device: str  #: ``cpu`` or ``cuda``
    machine: dict  #: :func:`bench.run.describe_machine`: torch, CPU, threads, the GPU's name
    model: str  #: e.g. ``"cprl_resnet50"`` (CA activations: the audit adds ``pgd-soft``)
    size: int  #: image side, pixels
    batch_size: int
    eps: list[float]
    attacks: list[str]  #: as the audit runs them (:func:`cprl_fast.audit.audit_attacks`)
    images: int  #: the images timed
    measured_s: float  #: the audit on ``images`` images
    seconds: float  #: ``measured_s`` scaled to ``TARGET_IMAGES`` images
    passes: dict[str, int]  #: per image: ``fb`` forward + backward, ``f`` forward only
    pass_s: dict[str, float]  #: seconds per image of each pass at each batch (before/after mean)
    floor_s: list[float]  #: the floor from the passes measured before and after, low first
    over_floor: float  #: ``seconds`` over the mean floor
    over_floor_range: list[float]  #: ``seconds`` over the high and over the low floor
    eps_batch_gain: float  #: fwd+bwd per image at ``batch_size`` over at ``batch_size x eps``
    timing: str = (
        "wall time (perf_counter, device synchronised); the audit once on `images` images, "
        f"scaled linearly to {TARGET_IMAGES}; each pass's time the median of `rounds` rounds "
        "that alternate the passes and batch sizes"
    )


def suite_passes(attacks: Sequence[str], eps_count: int) -> dict[str, int]:
    """The work the audit suite cannot skip, per image: ``{"fb": forward + input-gradient
    backward passes, "f": forward-only passes}``. Each gradient attack's steps x restarts at
    every eps, each query of the gradient-free one at every eps, the clean forward once, and the
    unbounded check's steps; every loss evaluation and re-scoring beyond these is overhead.
    ``attacks``: as the audit runs them (:func:`cprl_fast.audit.audit_attacks`)."""
    from cprl_fast.attacks import ATTACKS
    from cprl_fast.audit import UNBOUNDED

    fb, f = 0, 1
    for name in attacks:
        settings = ATTACKS.info(name)["settings"]
        if "queries" in settings:
            f += eps_count * settings["queries"]
        else:
            fb += eps_count * settings.get("steps", 1) * settings.get("restarts", 1)
    for name in UNBOUNDED:
        fb += ATTACKS.info(name)["settings"].get("steps", 1)
    return {"fb": fb, "f": f}


def per_image_passes(model: nn.Module, size: int, batches: Sequence[int], rounds: int,
                     device: torch.device) -> dict[str, float]:  # fmt: skip
    """Seconds per image of an eval forward (``"f<n>"``) and of a forward + input-gradient
    backward (``"fb<n>"``) at each batch size ``n`` on ``device`` (the model there already):
    medians of ``rounds`` rounds, all alternating (:func:`bench.timing.interleaved`)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(max(batches), 3, size, size, generator=g).to(device)
    fns = {}
    for n in batches:
        def forward(n=n):
            with torch.no_grad():
                model(x[:n])

        def forward_backward(n=n):
            xr = x[:n].clone().requires_grad_(True)
            torch.autograd.grad(model(xr).sum(), xr)

        fns[f"f{n}"], fns[f"fb{n}"] = forward, forward_backward
    timed = interleaved(fns, device, rounds)
    return {k: v["median_s"] / int(k.lstrip("fb")) for k, v in timed.items()}


def build_model(arch: str, cprl: bool, device: torch.device) -> tuple[nn.Module, str]:
    """A freshly initialised quality model (seed 0) in eval mode on ``device``, and its name:
    the CPRL ResNet (CA activations) or the plain one."""
    from cprl_fast.models import cprl_resnet, resnet_iqa

    torch.manual_seed(0)
    model = cprl_resnet(arch) if cprl else resnet_iqa(arch)
    return model.eval().to(device), f"{'cprl_' if cprl else ''}{arch}"


def time_audit(arch: str = "resnet18", cprl: bool = False, size: int = 64, images: int = 64,
               batch_size: int = 16, eps: Sequence[float] | None = None, rounds: int = 21,
               device: str | torch.device = "cpu") -> AuditTiming:  # fmt: skip
    """The audit's suite (:data:`cprl_fast.audit.SUITE` at ``eps``, default its
    ``DEFAULT_EPS``) on the first ``images`` built-in images at ``size`` px in batches of
    ``batch_size`` (at most ``images``; ``images`` a multiple of it), timed, with its floor
    measured before and after on the same device (see the module docstring)."""
    from cprl_fast.audit import DEFAULT_EPS, SUITE, audit, audit_attacks
    from cprl_fast.data import load_splits

    device = torch.device(device)
    eps = list(DEFAULT_EPS if eps is None else eps)
    if not 1 <= images <= TARGET_IMAGES:
        raise ValueError(f"--images must be 1 to {TARGET_IMAGES}, got {images}")
    batch_size = min(batch_size, images)  # every batch the floor's batch
    if images % batch_size:
        raise ValueError(f"--images must be a multiple of --batch-size ({batch_size}), so that "
                         f"every batch is the one the floor is timed at, got {images}")
    data = load_splits("builtin", None, ("all",), image_size=size)["all"]
    subset = torch.utils.data.Subset(data, range(images))
    model, name = build_model(arch, cprl, device)
    attacks = audit_attacks(model, SUITE)
    wide = batch_size * len(eps)
    batches = (batch_size, wide) if wide != batch_size else (batch_size,)
    before = per_image_passes(model, size, batches, rounds, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    audit(model, subset, eps=eps, attacks=SUITE, batch_size=batch_size, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    measured = time.perf_counter() - start
    after = per_image_passes(model, size, batches, rounds, device)
    passes = suite_passes(attacks, len(eps))
    fb, f = f"fb{batch_size}", f"f{batch_size}"
    floors = sorted(TARGET_IMAGES * (passes["fb"] * u[fb] + passes["f"] * u[f])
                    for u in (before, after))  # fmt: skip
    seconds = measured * TARGET_IMAGES / images
    gain = sum(u[fb] / u[f"fb{wide}"] for u in (before, after)) / 2
    return AuditTiming(
        device=device.type, machine=describe_machine(device), model=name, size=size,
        batch_size=batch_size, eps=eps, attacks=attacks, images=images, measured_s=measured,
        seconds=seconds, passes=passes,
        pass_s={k: (before[k] + after[k]) / 2 for k in before}, floor_s=floors,
        over_floor=seconds / (sum(floors) / 2),
        over_floor_range=[seconds / floors[1], seconds / floors[0]], eps_batch_gain=gain,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--arch", default="resnet50", help="torchvision ResNet (default: resnet50)")
    p.add_argument("--plain", action="store_true",
                   help="the plain ResNet (default: the CPRL ResNet, whose audit adds pgd-soft)")
    p.add_argument("--size", type=int, default=224, help="image side in pixels (default: 224)")
    p.add_argument("--images", type=int, default=32,
                   help=f"built-in images to time, scaled to {TARGET_IMAGES} (default: 32)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--rounds", type=int, default=7,
                   help="rounds of the per-pass timing, before and after (default: 7)")
    p.add_argument("--out", help="write the result as JSON here")
    args = p.parse_args(argv)
    if args.device not in ("cpu", "cuda"):
        p.error(f"--device must be cpu or cuda, got {args.device!r}")
    try:
        t = time_audit(args.arch, not args.plain, args.size, args.images, args.batch_size,
                       rounds=args.rounds, device=args.device)  # fmt: skip
    except ValueError as err:
        p.error(str(err))
    where = t.machine.get("gpu", t.machine["cpu"])
    print(f"audit of {t.model} on {where}, {t.size} px, {len(t.attacks)} attacks x "
          f"{len(t.eps)} eps: {t.measured_s:.1f} s on {t.images} images, {t.seconds:.0f} s "
          f"scaled to {TARGET_IMAGES}; floor {t.floor_s[0]:.0f}-{t.floor_s[1]:.0f} s "
          f"({t.passes['fb']} fwd+bwd + {t.passes['f']} fwd per image): {t.over_floor:.2f}x "
          f"its floor ({t.over_floor_range[0]:.2f}-{t.over_floor_range[1]:.2f})")  # fmt: skip
    if args.out:
        write_json_atomic(args.out, dataclasses.asdict(t))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
