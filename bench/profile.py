"""What dominates the two slowest things users run, by torch.profiler: one faithful CPRL
training iteration against a plain one (ResNet-18, 128 px, batch 16), and one batch of the
audit's attacks (PGD-10 and Square, ResNet-18, 64 px, batch 16). Writes a markdown summary:
the top operators by self CPU time of each, with their share of the total.

    OMP_NUM_THREADS=2 python -m bench.profile --out bench/results/profile-cpu.md
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from cprl_fast.io import write_text_atomic


def _top(fn, rows: int) -> tuple[float, list[str]]:
    fn()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    lines = ["| operator | self CPU ms | share | calls |", "| --- | ---: | ---: | ---: |"]
    for e in events[:rows]:
        lines.append(f"| `{e.key}` | {e.self_cpu_time_total / 1e3:.1f} | "
                     f"{e.self_cpu_time_total / total:.1%} | {e.count} |")  # fmt: skip
    return total / 1e3, lines


def training(rows: int) -> list[str]:
    from cprl_fast.models import cprl_resnet, resnet_iqa
    from cprl_fast.train import TrainConfig, build_optimizers, make_objective
    from cprl_fast.train.pns import faithful_step, param_groups

    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(16, 3, 128, 128, generator=g), torch.rand(16, generator=g)
    cfg = TrainConfig(model_options={"arch": "resnet18"})
    torch.manual_seed(0)
    plain = resnet_iqa("resnet18").train()
    opt = build_optimizers(make_objective("regression").param_groups(plain), cfg)["theta"]

    def plain_step():
        opt.zero_grad(set_to_none=True)
        torch.mean((plain(x) - y) ** 2).backward()
        opt.step()

    model = cprl_resnet("resnet18").train()
    groups = param_groups(model)
    opts = build_optimizers(vars(groups), cfg)

    def two_faithful():  # an SF and an NC iteration
        for t in (0, 1):
            faithful_step(model, groups, opts, x, y, t, 1.0)

    out = []
    for title, fn in (("Plain iteration", plain_step), ("Two faithful iterations (SF, NC)",
                                                         two_faithful)):  # fmt: skip
        total, lines = _top(fn, rows)
        out += [f"### {title}: {total:.0f} ms of self CPU time", "", *lines, ""]
    return out


def attacks(rows: int) -> list[str]:
    from cprl_fast.attacks import run_attack
    from cprl_fast.models import resnet_iqa

    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(16, 3, 64, 64, generator=g), torch.rand(16, generator=g)
    torch.manual_seed(0)
    model = resnet_iqa("resnet18").eval()
    out = []
    for name in ("pgd", "square"):
        def run(name=name):
            run_attack(name, model, x, y, 4 / 255, torch.Generator().manual_seed(0))

        total, lines = _top(run, rows)
        out += [f"### Attack `{name}` on one batch: {total:.0f} ms of self CPU time", "",
                *lines, ""]  # fmt: skip
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=12)
    p.add_argument("--out", required=True, help="the markdown summary to write")
    args = p.parse_args(argv)
    from cprl_fast.threads import set_threads

    note = set_threads()
    print(note, flush=True)
    lines = ["# Where the time goes (torch.profiler)", "",
             f"torch {torch.__version__}; {note}. Self CPU time per operator (time inside the "
             "operator itself, not its callees), summed over one profiled run after a warm-up.",
             "", "## CPRL training (ResNet-18, 128 px, batch 16)", "", *training(args.rows),
             "## The audit's attacks (ResNet-18, 64 px, batch 16, eps 4/255)", "",
             *attacks(args.rows)]  # fmt: skip
    write_text_atomic(args.out, "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
