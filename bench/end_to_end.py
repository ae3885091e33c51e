"""End-to-end costs: CA-ResNet against ResNet (forward + backward), one CPRL training iteration
(faithful and fast) against a plain-ResNet iteration, and PGD-10 throughput with the fused
attack step against an eager step.

    python -m bench.end_to_end --out bench/results/e2e.json       # CPU defaults: ResNet-18, 128 px
    python -m bench.end_to_end --arch resnet50 --size 320 --device cuda
"""

from __future__ import annotations

import argparse
import json

import torch

from bench.timing import median_seconds
from cprl_fast import ops, reference
from cprl_fast.attacks.common import eval_mode, input_grad
from cprl_fast.attacks.losses import mse_loss
from cprl_fast.models import cprl_resnet, resnet_iqa


def batch(size: int, n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, size, size, generator=g).to(device), torch.rand(n, generator=g).to(
        device
    )


def model_fwd_bwd(model, x, y):
    def run():
        model.zero_grad(set_to_none=True)
        torch.mean((model(x) - y) ** 2).backward()

    return run


def pgd10(model, x, y, eps: float, fused: bool):
    """PGD-10 (no random start) with the fused op or the eager reference step."""

    def run():
        with eval_mode(model):
            xi = x.clone()
            for _ in range(10):
                g = input_grad(model, xi, y, mse_loss)
                if fused:
                    ops.attack_step_(xi, g, x, eps / 4, eps)
                else:
                    xi = reference.attack_step(xi, g, x, eps / 4, eps)
        return xi

    return run


def measure(arch="resnet18", size=128, n=16, device="cpu", eps=1 / 255) -> dict:
    from bench.train_step import measure as train_measure

    device = torch.device(device)
    x, y = batch(size, n, device)
    torch.manual_seed(0)
    plain, cprl = resnet_iqa(arch).to(device).train(), cprl_resnet(arch).to(device).train()
    out = {"arch": arch, "size": size, "batch": n, "device": str(device)}
    out["resnet_fwd_bwd_s"] = median_seconds(model_fwd_bwd(plain, x, y), device, min_time=2.0)
    out["cprl_fwd_bwd_s"] = median_seconds(model_fwd_bwd(cprl, x, y), device, min_time=2.0)
    out["cprl_over_resnet"] = out["cprl_fwd_bwd_s"] / out["resnet_fwd_bwd_s"]
    for fused in (True, False):
        seconds = median_seconds(pgd10(plain, x, y, eps, fused), device, min_time=2.0)
        out[f"pgd10_{'fused' if fused else 'eager'}_images_per_s"] = n / seconds
    out["train_iteration"] = train_measure(arch, size, n, str(device))
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out")
    args = p.parse_args(argv)
    result = measure(args.arch, args.size, args.batch, args.device)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
