"""Cost of one CPRL training iteration against one plain-ResNet iteration on the same batch.

    python -m bench.train_step            # ResNet-18, 128 px, batch 16, CPU (the issue's setting)
    python -m bench.train_step --arch resnet50 --size 320 --device cuda
    python -m bench.train_step --presets resnet,ca,cprl,sat,nt   # the study's models

With ``--presets``: one training iteration of each named model preset
(:data:`cprl_fast.presets.MODEL_PRESETS`) with ``--recipe``'s settings (default ``native``: a
batch of 32 crops of 64 px), through :meth:`cprl_fast.train.Trainer.train_step` as the study
trains them, timed alternating, and each one's ratio to the first: what a study's models
cost to train relative to each other.

Prints the median time of: a plain-ResNet regression iteration (one forward + backward + AdamW
step), a faithful PNS iteration (SF and NC alternate, so the two are averaged) and a fast one,
each also with ``share_prefix=False`` (``*_unshared``: every forward computes the part before
the first CA module again, as the steps did before it was shared), all alternating, and their
ratios to the plain iteration, beside the ratios the pass count allows (``floors``:
:func:`pass_floors`).
"""

from __future__ import annotations

import argparse
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
from cprl_fast.models import cprl_resnet, resnet_iqa
from cprl_fast.presets import MODEL_PRESETS, preset_config, recipe_settings
from cprl_fast.train import TrainConfig, Trainer, build_optimizers, make_objective
from cprl_fast.train.pns import STEPS, param_groups

#: Rounds on the CPU (one call each).
CPU_ROUNDS = 11


def pass_floors(arch: str, size: int) -> dict:
    """The iteration ratios the pass count allows (docs/maths.md §4): with ``p`` the share of
    the CPRL ResNet's multiply-adds in front of its first CA module (the prefix the steps
    share; ``torch.utils.flop_counter`` on one image of ``size`` px), a faithful iteration
    costs at least ``(8 - 2p) / 3`` plain ones and a fast one ``(6 - 3p) / 3``. A count, not a
    timing: it takes no account of kernels that run below their share of the time."""
    from torch.utils.flop_counter import FlopCounterMode

    model = cprl_resnet(arch).eval()
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        with FlopCounterMode(display=False) as whole:
            model(x)
        with FlopCounterMode(display=False) as prefix:
            model.prefix(x)
    p = prefix.get_total_flops() / whole.get_total_flops()
    return {"prefix_share": p, "faithful_floor": (8 - 2 * p) / 3, "fast_floor": (6 - 3 * p) / 3,
            "gmac": whole.get_total_flops() / 2e9}  # fmt: skip


def measure(arch="resnet18", size=128, batch=16, device="cpu", rounds: int | None = None,
            calls: int | None = None, bf16: bool = False, channels_last: bool = False,
            unshared: bool | None = None) -> dict:  # fmt: skip
    """Plain, faithful and fast iterations timed alternating (:func:`interleaved`, ``rounds``
    rounds of ``calls`` calls per side): medians of the rounds (an even number of faithful
    iterations per side and round alternates SF and NC sub-steps fairly), each mode's per-round
    ratio to the plain iteration with its spread, and per side wall, host and device seconds
    per call (``*_timing``) and, on CUDA, torch.profiler's GPU-busy fraction. ``bf16``: every
    step under bfloat16 autocast; ``channels_last``: models and images in that layout.
    ``unshared`` (default: off CUDA only) adds each mode with its prefix not shared."""
    device = torch.device(device)
    rounds, calls = rounds_and_calls(device, rounds, calls, cpu_rounds=CPU_ROUNDS)
    unshared = device.type != "cuda" if unshared is None else unshared
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, size, size, generator=g).to(device).contiguous(memory_format=fmt)
    y = torch.rand(batch, generator=g).to(device)
    cfg = TrainConfig(model_options={"arch": arch})
    torch.manual_seed(0)
    plain = resnet_iqa(arch).to(device, memory_format=fmt).train()
    opt = build_optimizers(make_objective("regression").param_groups(plain), cfg)["theta"]

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    def plain_step():
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = torch.mean((plain(x).float() - y) ** 2)
        loss.backward()
        opt.step()

    fns = {"plain": plain_step}
    for mode in STEPS:
        for share in (True, False) if unshared else (True,):  # unshared: the step before
            torch.manual_seed(0)  # the prefix was shared
            model = cprl_resnet(arch).to(device, memory_format=fmt).train()
            groups = param_groups(model)
            opts = build_optimizers(vars(groups), cfg)
            t = [0]

            def cprl_step(model=model, opts=opts, groups=groups, mode=mode, share=share, t=t):
                with autocast():
                    STEPS[mode](model, groups, opts, x, y, t[0], 1.0, share_prefix=share)
                t[0] += 1

            fns[mode if share else f"{mode}_unshared"] = cprl_step
    timed = interleaved(fns, device, rounds, calls=calls)
    out = {"arch": arch, "size": size, "batch": batch, "device": str(device),
           "threads": torch.get_num_threads(), "rounds": rounds, "calls_per_round": calls,
           "bf16": bf16, "channels_last": channels_last,
           "plain_s": timed["plain"]["median_s"], "floors": pass_floors(arch, size)}  # fmt: skip
    for name, t in timed.items():
        out[f"{name}_timing"] = {**per_call(t), "gpu_busy": gpu_busy_fraction(fns[name], device,
                                                                              calls)}
    for mode in [m for m in fns if m != "plain"]:
        out[f"{mode}_s"] = timed[mode]["median_s"]
        r = ratio(timed, mode, "plain")
        out[f"{mode}_ratio"] = r["median"]
        out[f"{mode}_ratio_spread"] = [r["min"], r["max"]]
    return out


def measure_presets(names: list[str], recipe: str = "native", arch: str = "resnet18",
                    device: str = "cpu", rounds: int | None = None) -> dict:  # fmt: skip
    """One training iteration per model preset in ``names`` under ``recipe``, timed alternating
    (:func:`interleaved`): the median seconds per iteration, and per preset its per-round
    ratio to the first preset's with the spread."""
    rounds, _ = rounds_and_calls(torch.device(device), rounds, 1, cpu_rounds=CPU_ROUNDS)
    settings = recipe_settings(recipe)
    settings["model_options"] = {"arch": arch, **settings.get("model_options", {})}
    base = TrainConfig(**settings, device=device)
    side = base.train_crop or base.image_size
    g = torch.Generator().manual_seed(0)
    x = torch.rand(base.batch_size, 3, side, side, generator=g)
    y = torch.rand(base.batch_size, generator=g)
    fns = {}
    for name in names:
        trainer = Trainer(preset_config(name, base), train_set=None)
        fns[name] = lambda trainer=trainer: trainer.train_step(x, y)
    timed = interleaved(fns, torch.device(device), rounds)
    out = {"recipe": recipe, "arch": arch, "batch": base.batch_size, "side": side,
           "device": device, "threads": torch.get_num_threads(), "rounds": rounds}  # fmt: skip
    for name in names:
        r = ratio(timed, name, names[0])
        out[name] = {"median_s": timed[name]["median_s"], "ratio": r["median"],
                     "ratio_spread": [r["min"], r["max"]]}  # fmt: skip
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--presets", help="comma-separated model presets: time those instead")
    p.add_argument("--recipe", default="native", help="with --presets: the training recipe")
    add_rounds_args(p, cpu_rounds=CPU_ROUNDS)
    p.add_argument("--bf16", action="store_true", help="every step under bfloat16 autocast")
    p.add_argument("--channels-last", action="store_true", help="channels_last models and images")
    args = p.parse_args(argv)
    if args.presets:
        names = [n.strip() for n in args.presets.split(",") if n.strip()]
        for n in names:
            if n not in MODEL_PRESETS:
                p.error(f"--presets: {n!r} is not one of {', '.join(MODEL_PRESETS)}")
        result = measure_presets(names, args.recipe, args.arch, args.device, args.rounds)
    else:
        result = measure(args.arch, args.size, args.batch, args.device, args.rounds,
                         calls=args.calls, bf16=args.bf16, channels_last=args.channels_last)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
