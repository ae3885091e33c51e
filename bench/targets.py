"""Issue 16's performance targets in one run on this machine: each measured (alternating what
it compares, medians and spread), with its ratio and PASS/FAIL against the target.

    OMP_NUM_THREADS=2 python -m bench.targets --out bench/results/targets-cpu.json
    python -m bench.targets --quick          # small shapes: checks the plumbing only

1. drop-in cost: CA-ResNet-18 over ResNet-18, forward + backward (128 px, batch 16), eager
   and both under torch.compile: at most 1.05x.
2. CPRL training: one faithful iteration at most 2.2x a plain one, one fast at most 1.8x.
3. allocator: rank_mask forward + backward in a training loop at [16, 256, 80, 80] (the
   previous iteration's outputs freed before the next) at least 3x eager.
4. audit: the full suite on 250 built-in images (64 px, ResNet-18) in at most 5 minutes
   (measured on ``--audit-images`` images and scaled linearly; said so in the row).
5. threads: the count the CLI would pick, printed.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from bench.timing import interleaved, ratio
from cprl_fast import ops, reference
from cprl_fast.io import write_json_atomic


def _row(name: str, value: float, target: float, better: str, detail: str) -> dict:
    ok = value <= target if better == "lower" else value >= target
    sign = "<=" if better == "lower" else ">="
    return {"target": name, "value": value, "goal": f"{sign} {target:g}", "pass": ok,
            "detail": detail}  # fmt: skip


def drop_in(size: int, n: int, rounds: int, compiled: bool) -> list[dict]:
    from bench.end_to_end import batch, model_fwd_bwd
    from cprl_fast.models import cprl_resnet, resnet_iqa

    x, y = batch(size, n, torch.device("cpu"))
    torch.manual_seed(0)
    plain, cprl = resnet_iqa("resnet18").train(), cprl_resnet("resnet18").train()
    fns = {"resnet": model_fwd_bwd(plain, x, y), "cprl": model_fwd_bwd(cprl, x, y)}
    if compiled:
        fns["resnet_c"] = model_fwd_bwd(torch.compile(plain), x, y)
        fns["cprl_c"] = model_fwd_bwd(torch.compile(cprl), x, y)
    timed = interleaved(fns, torch.device("cpu"), rounds)
    rows = []
    for label, num, den in (("eager", "cprl", "resnet"), ("compiled", "cprl_c", "resnet_c")):
        if num in timed:
            r = ratio(timed, num, den)
            rows.append(_row(f"1. drop-in cost, {label}", r["median"], 1.05, "lower",
                             f"CA-ResNet-18 {timed[num]['median_s'] * 1e3:.0f} ms vs ResNet-18 "
                             f"{timed[den]['median_s'] * 1e3:.0f} ms, fwd+bwd {size} px x{n}; "
                             f"per-round ratios {r['min']:.2f}-{r['max']:.2f}"))  # fmt: skip
    return rows


def training(size: int, n: int, rounds: int) -> list[dict]:
    from bench.train_step import measure

    m = measure("resnet18", size, n, "cpu", rounds)
    return [_row(f"2. CPRL iteration, {mode}", m[f"{mode}_ratio"], goal, "lower",
                 f"{m[f'{mode}_s'] * 1e3:.0f} ms vs plain {m['plain_s'] * 1e3:.0f} ms "
                 f"(ResNet-18 {size} px x{n}); per-round ratios "
                 f"{m[f'{mode}_ratio_spread'][0]:.2f}-{m[f'{mode}_ratio_spread'][1]:.2f}")
            for mode, goal in (("faithful", 2.2), ("fast", 1.8))]  # fmt: skip


def allocator(shape: tuple[int, ...], rounds: int) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    f = torch.randn(shape, generator=g).requires_grad_(True)
    b = torch.tensor(0.4).requires_grad_(True)  # one offset per CA module
    grad = torch.randn(shape, generator=g)

    def loop(fn):
        def run():
            out = fn(f, b)
            out.backward(grad)
            f.grad = b.grad = None
            del out  # the previous iteration's output is freed before the next

        return run

    timed = interleaved({"native": loop(ops.rank_mask), "eager": loop(reference.rank_mask)},
                        torch.device("cpu"), rounds)  # fmt: skip
    r = ratio(timed, "eager", "native")
    return [_row("3. rank_mask fwd+bwd in a training loop, x eager", r["median"], 3.0, "higher",
                 f"{list(shape)}: native {timed['native']['median_s'] * 1e3:.0f} ms, eager "
                 f"{timed['eager']['median_s'] * 1e3:.0f} ms; per-round {r['min']:.2f}-"
                 f"{r['max']:.2f}")]  # fmt: skip


def audit_time(images: int) -> list[dict]:
    from cprl_fast.audit import SUITE, audit
    from cprl_fast.data import load_splits
    from cprl_fast.models import resnet_iqa

    data = load_splits("builtin", None, ("all",), image_size=64)["all"]
    subset = torch.utils.data.Subset(data, range(min(images, len(data))))
    torch.manual_seed(0)
    model = resnet_iqa("resnet18").eval()
    start = time.perf_counter()
    audit(model, subset, attacks=SUITE, batch_size=16)
    seconds = time.perf_counter() - start
    scaled = seconds * 250 / len(subset)
    return [_row("4. audit, full suite, 250 images (s)", scaled, 300.0, "lower",
                 f"{seconds:.0f} s on {len(subset)} images x 4 eps x {len(SUITE)} attacks, "
                 f"scaled to 250; eps and restarts are not yet batched together")]  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small shapes, no compile, no audit")
    p.add_argument("--rounds", type=int, default=11)
    p.add_argument("--audit-images", type=int, default=50)
    p.add_argument("--out", help="write the rows as JSON here")
    args = p.parse_args(argv)
    from cprl_fast.threads import set_threads

    note = set_threads()
    print(note, flush=True)
    rounds = 3 if args.quick else args.rounds
    rows = drop_in(32 if args.quick else 128, 2 if args.quick else 16, rounds, not args.quick)
    rows += training(32 if args.quick else 128, 2 if args.quick else 16, rounds)
    rows += allocator((2, 8, 9, 9) if args.quick else (16, 256, 80, 80), rounds)
    if not args.quick:
        rows += audit_time(args.audit_images)
    for r in rows:
        print(f"{'PASS' if r['pass'] else 'FAIL'}  {r['target']}: {r['value']:.3g} "
              f"(goal {r['goal']}) - {r['detail']}", flush=True)  # fmt: skip
    if args.out:
        write_json_atomic(args.out, {"threads": note, "torch": torch.__version__, "rows": rows})
    print(json.dumps({"passed": sum(r["pass"] for r in rows), "of": len(rows)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
