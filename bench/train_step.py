"""Cost of one CPRL training iteration against one plain-ResNet iteration on the same batch.

    python -m bench.train_step            # ResNet-18, 128 px, batch 16, CPU (the issue's setting)
    python -m bench.train_step --arch resnet50 --size 320 --device cuda

Prints the median time of: a plain-ResNet regression iteration (one forward + backward + AdamW
step), a faithful PNS iteration (SF and NC alternate, so the two are averaged) and a fast one,
and their ratios to the plain iteration.
"""

from __future__ import annotations

import argparse
import json

import torch

from bench.timing import median_seconds
from cprl_fast.models import cprl_resnet, resnet_iqa
from cprl_fast.train import TrainConfig, build_optimizers, param_groups
from cprl_fast.train.pns import STEPS


def measure(arch="resnet18", size=128, batch=16, device="cpu") -> dict:
    device = torch.device(device)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, size, size, generator=g).to(device)
    y = torch.rand(batch, generator=g).to(device)
    cfg = TrainConfig(arch=arch)
    torch.manual_seed(0)
    plain = resnet_iqa(arch).to(device).train()
    opt = build_optimizers(plain, TrainConfig(arch=arch, model="resnet"))["theta"]

    def plain_step():
        opt.zero_grad(set_to_none=True)
        torch.mean((plain(x) - y) ** 2).backward()
        opt.step()

    out = {"arch": arch, "size": size, "batch": batch, "device": str(device),
           "plain_s": median_seconds(plain_step, device, min_time=3.0)}  # fmt: skip
    for mode, step in STEPS.items():
        torch.manual_seed(0)
        model = cprl_resnet(arch).to(device).train()
        opts, groups = build_optimizers(model, cfg), param_groups(model)
        t = [0]

        def cprl_step(model=model, opts=opts, groups=groups, step=step, t=t):
            step(model, groups, opts, x, y, t[0], 1.0)
            t[0] += 1

        seconds = median_seconds(cprl_step, device, min_time=3.0)
        out[f"{mode}_s"] = seconds
        out[f"{mode}_ratio"] = seconds / out["plain_s"]
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    print(json.dumps(measure(args.arch, args.size, args.batch, args.device), indent=1))


if __name__ == "__main__":
    main()
