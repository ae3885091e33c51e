"""End-to-end costs: CA-ResNet against ResNet (forward + backward), one CPRL training iteration
(faithful and fast) against a plain-ResNet iteration, and PGD-10 throughput with the fused
attack step against an eager step (on CUDA also the loop captured in a CUDA graph,
:class:`cprl_fast.attacks.GraphedPGD`; ``--bf16`` runs every PGD's model under autocast).

    python -m bench.end_to_end --out bench/results/e2e.json       # CPU defaults: ResNet-18, 128 px
    python -m bench.end_to_end --arch resnet50 --size 224 --batch 32 --bf16 --channels-last \
        --device cuda                                             # the GPU check's setting
"""

from __future__ import annotations

import argparse
import functools
import json

import torch

from bench.timing import (
    add_rounds_args,
    gpu_busy_fraction,
    interleaved,
    per_call,
    ratio,
    rounds_and_calls,
)
from bench.train_step import CPU_ROUNDS  # the training iteration's rounds are these rows' too
from bench.train_step import measure as train_measure
from cprl_fast import ops, reference
from cprl_fast.attacks import GraphedPGD
from cprl_fast.attacks.common import eval_mode, input_grad
from cprl_fast.attacks.losses import mse_loss
from cprl_fast.io import write_json_atomic
from cprl_fast.models import cprl_resnet, resnet_iqa


def batch(size: int, n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, size, size, generator=g).to(device), torch.rand(n, generator=g).to(
        device
    )


def model_fwd_bwd(model, x, y, bf16: bool = False):
    def run():
        model.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = torch.mean((model(x).float() - y) ** 2)
        loss.backward()

    return run


def pgd10(model, x, y, eps: float, fused: bool, bf16: bool = False):
    """PGD-10 (no random start) with the fused op or the eager reference step, the model under
    bfloat16 autocast with ``bf16``."""

    def run():
        with eval_mode(model):
            xi = x.clone()
            for _ in range(10):
                with torch.autocast(x.device.type, torch.bfloat16, enabled=bf16):
                    g = input_grad(model, xi, y, mse_loss)
                if fused:
                    ops.attack_step_(xi, g, x, eps / 4, eps)
                else:
                    xi = reference.attack_step(xi, g, x, eps / 4, eps)
        return xi

    return run


def measure(arch="resnet18", size=128, n=16, device="cpu", eps=1 / 255, bf16: bool = False,
            channels_last: bool = False, rounds: int | None = None, calls: int | None = None,
            compiled: bool = False) -> dict:  # fmt: skip
    """The drop-in cost (CA-ResNet over ResNet, forward + backward; with ``compiled`` also both
    under torch.compile), PGD-10 throughput (fused step against eager; on CUDA also the loop
    captured in a CUDA graph) and one training iteration (bench/train_step.py), each group
    timed alternating (:func:`interleaved`: ``rounds`` rounds of ``calls`` synchronised calls
    per side; defaults: :func:`rounds_and_calls`, :data:`CPU_ROUNDS` on the CPU), with ``bf16``
    autocast and ``channels_last`` for every case. Per side: wall, host and device seconds per call
    (``*_fwd_bwd_s`` is the wall time) and, on CUDA, torch.profiler's GPU-busy fraction;
    ``cudnn.benchmark`` on for both sides."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    rounds, calls = rounds_and_calls(device, rounds, calls, cpu_rounds=CPU_ROUNDS)
    if cuda:
        torch.backends.cudnn.benchmark = True
    x, y = batch(size, n, device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = x.contiguous(memory_format=fmt)
    torch.manual_seed(0)
    plain = resnet_iqa(arch).to(device, memory_format=fmt).train()
    cprl = cprl_resnet(arch).to(device, memory_format=fmt).train()
    out = {"arch": arch, "size": size, "batch": n, "device": str(device), "bf16": bf16,
           "channels_last": channels_last, "threads": torch.get_num_threads(),
           "rounds": rounds, "calls_per_round": calls, "cudnn_benchmark": cuda,
           "timing": "interleaved rounds; wall and host time per call from perf_counter, "
                     "device time from CUDA events around each round's calls"}  # fmt: skip
    fns = {"resnet": model_fwd_bwd(plain, x, y, bf16), "cprl": model_fwd_bwd(cprl, x, y, bf16)}
    if compiled:
        fns["resnet_compiled"] = model_fwd_bwd(torch.compile(plain), x, y, bf16)
        fns["cprl_compiled"] = model_fwd_bwd(torch.compile(cprl), x, y, bf16)
    timed = interleaved(fns, device, rounds, calls=calls)
    for name, t in timed.items():
        out[f"{name}_fwd_bwd_s"] = t["median_s"]
        out[f"{name}_fwd_bwd_iqr_s"] = t["iqr_s"]
        out[f"{name}_fwd_bwd"] = {**per_call(t), "gpu_busy": gpu_busy_fraction(fns[name], device)}
    pairs = {"cprl_over_resnet": ("cprl", "resnet")}
    if compiled:
        pairs["compiled_cprl_over_resnet"] = ("cprl_compiled", "resnet_compiled")
    for key, (num, den) in pairs.items():
        r = ratio(timed, num, den)
        out[key], out[f"{key}_spread"] = r["median"], [r["min"], r["max"]]
    steps = {"fused": pgd10(plain, x, y, eps, True, bf16),
             "eager": pgd10(plain, x, y, eps, False, bf16)}  # fmt: skip
    if cuda:  # captured once, outside the timing; every call replays 10 steps
        steps["graph"] = functools.partial(GraphedPGD(plain, x, eps, steps=10, bf16=bf16), x, y)
    # a PGD-10 call is ten forward + backward passes: a tenth of the calls (at least 2) gives as
    # many passes per side and round as the other cases
    pgd_calls = max(2, calls // 10) if cuda else 1
    pgd = interleaved(steps, device, rounds if cuda else max(3, rounds // 2), calls=pgd_calls)
    for name, t in pgd.items():
        out[f"pgd10_{name}_images_per_s"] = n / t["median_s"]
        out[f"pgd10_{name}"] = {**per_call(t), "gpu_busy": gpu_busy_fraction(steps[name], device,
                                                                             pgd_calls)}
    out["pgd10_calls_per_round"] = pgd_calls
    out["train_iteration"] = train_measure(arch, size, n, str(device), rounds, calls=calls,
                                           bf16=bf16, channels_last=channels_last)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for the model passes")
    p.add_argument("--channels-last", action="store_true", help="channels_last models and images")
    add_rounds_args(p, cpu_rounds=CPU_ROUNDS)
    p.add_argument("--compiled", action="store_true",
                   help="also the drop-in cost with both models under torch.compile")  # fmt: skip
    p.add_argument("--out")
    args = p.parse_args(argv)
    result = measure(args.arch, args.size, args.batch, args.device, bf16=args.bf16,
                     channels_last=args.channels_last, rounds=args.rounds, calls=args.calls,
                     compiled=args.compiled)  # fmt: skip
    print(json.dumps(result, indent=1))
    if args.out:
        write_json_atomic(args.out, result)


if __name__ == "__main__":
    main()
