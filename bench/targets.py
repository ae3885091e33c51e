"""Issue 16's performance targets in one run on this machine: each measured (alternating what
it compares, medians and spread), with its ratio and PASS/FAIL against the target.

    OMP_NUM_THREADS=2 python -m bench.targets --out bench/results/targets-cpu.json
    python -m bench.targets --quick          # small shapes: checks the plumbing only
    python -m bench.targets --gpu bench/results/h200-2026-11-26   # issue 25's GPU targets,
                                             # read from a committed GPU run (bench/gpu_targets.py)

1. drop-in cost: CA-ResNet-18 over ResNet-18, forward + backward (128 px, batch 16), eager
   and both under torch.compile: at most 1.05x.
2. CPRL training: one faithful iteration at most 2.2x a plain one, one fast at most 1.8x.
3. allocator: rank_mask forward + backward in a training loop at [16, 256, 80, 80] (the
   previous iteration's outputs freed before the next) at least 3x eager, by the loop's total
   time.
4. audit: the full suite on 250 built-in images (64 px, ResNet-18) in at most 5 minutes
   (measured on ``--audit-images`` images and scaled linearly; said so in the row), beside its
   floor (the suite's gradient steps and queries times the measured cost of one pass) and the
   most that batching the eps into one pass could gain over a loop of single-eps calls.
5. threads: the count the CLI would pick, printed.
"""

from __future__ import annotations

import argparse
import json

import torch

from bench.timing import interleaved, ratio
from cprl_fast import cpu_huge_pages, ops, reference
from cprl_fast.io import write_json_atomic

#: Target 3's shape, full and quick (keyed by ``--quick``).
ALLOCATOR_SHAPE = {False: (16, 256, 80, 80), True: (2, 8, 9, 9)}


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


def training_loop(fn, shape: tuple[int, ...]):
    """One iteration of a training loop through the CA activation ``fn`` (``ops.rank_mask`` or
    its reference): forward, backward, gradients dropped, so that every iteration's outputs are
    fresh allocations and the previous one's are freed before the next."""
    g = torch.Generator().manual_seed(0)
    f = torch.randn(shape, generator=g).requires_grad_(True)
    b = torch.tensor(0.4).requires_grad_(True)  # one offset per CA module
    grad = torch.randn(shape, generator=g)

    def run():
        out = fn(f, b)
        out.backward(grad)
        f.grad = b.grad = None
        del out

    return run


def allocator(shape: tuple[int, ...], rounds: int) -> list[dict]:
    """Target 3, read on the loop's total time (the ratio of the two sides' mean times): a
    stall now and then (a huge-page fault on a VM, CPRL_FAST_HUGE_PAGES=1) costs the loop what
    it costs, where a median of per-round ratios would not show it (the detail gives both)."""
    timed = interleaved({"native": training_loop(ops.rank_mask, shape),
                         "eager": training_loop(reference.rank_mask, shape)},
                        torch.device("cpu"), rounds)  # fmt: skip
    r = ratio(timed, "eager", "native")
    mean = {k: v["mean_s"] for k, v in timed.items()}
    hint = "on" if cpu_huge_pages() else "off"
    return [_row("3. rank_mask fwd+bwd in a training loop, x eager", mean["eager"] / mean["native"],
                 3.0, "higher",
                 f"{list(shape)}, huge-page hint {hint}: mean native {mean['native'] * 1e3:.0f} "
                 f"ms, eager {mean['eager'] * 1e3:.0f} ms; per-round ratio median "
                 f"{r['median']:.2f}, {r['min']:.2f}-{r['max']:.2f}")]  # fmt: skip


def audit_rows(images: int, rounds: int) -> list[dict]:
    """Target 4 (bench/audit_time.py): the audit of a plain ResNet-18 on ``images`` built-in
    images at 64 px, scaled to 250, beside its floor and the most that batching eps gains."""
    from bench.audit_time import TARGET_IMAGES, time_audit

    t = time_audit("resnet18", cprl=False, size=64, images=images, rounds=rounds)
    unit, wide = t.pass_s, t.batch_size * len(t.eps)
    square = TARGET_IMAGES * (t.passes["f"] - 1) * unit[f"f{t.batch_size}"]
    return [
        _row(f"4. audit, full suite, {TARGET_IMAGES} images (s)", t.seconds, 300.0, "lower",
             f"{t.measured_s:.0f} s on {t.images} images x {len(t.eps)} eps x "
             f"{len(t.attacks)} attacks, scaled to {TARGET_IMAGES}; "
             f"{t.over_floor_range[0]:.2f}-{t.over_floor_range[1]:.2f}x its floor"),
        _row(f"4. audit floor, {TARGET_IMAGES} images (s)", sum(t.floor_s) / 2, 300.0, "lower",
             f"{t.floor_s[0]:.0f}-{t.floor_s[1]:.0f} s (before and after the audit): "
             f"{t.passes['fb']} fwd+bwd ({unit[f'fb{t.batch_size}'] * 1e3:.2f} ms/image) + "
             f"{t.passes['f']} fwd ({unit[f'f{t.batch_size}'] * 1e3:.2f} ms/image) per image "
             f"at batch {t.batch_size}, the suite's steps and queries alone; Square's queries "
             f"are {square:.0f} s of it"),
        _row(f"4. batching the {len(t.eps)} eps, per-image gain (x)", t.eps_batch_gain, 3.0,
             "higher",
             f"fwd+bwd per image at batch {t.batch_size} over batch {wide}, alternating (mean "
             f"of before and after the audit): the most that batching eps (or restarts) into "
             f"one pass could gain over a loop of single-eps calls here"),
    ]  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small shapes, no compile, no audit")
    p.add_argument("--rounds", type=int, default=21)
    p.add_argument("--audit-images", type=int, default=64)
    p.add_argument("--out", help="write the rows as JSON here")
    p.add_argument("--gpu", metavar="RUN_FOLDER",
                   help="measure nothing: print issue 25's GPU targets from a committed GPU "
                   "run")  # fmt: skip
    args = p.parse_args(argv)
    if args.gpu:
        from bench.gpu_targets import report

        print(report(args.gpu))
        return 0
    from cprl_fast.threads import set_threads

    note = set_threads()
    print(note, flush=True)
    rounds = 3 if args.quick else args.rounds
    rows = drop_in(32 if args.quick else 128, 2 if args.quick else 16, rounds, not args.quick)
    rows += training(32 if args.quick else 128, 2 if args.quick else 16, rounds)
    rows += allocator(ALLOCATOR_SHAPE[args.quick], rounds)
    if not args.quick:
        rows += audit_rows(args.audit_images, rounds)
    for r in rows:
        print(f"{'PASS' if r['pass'] else 'FAIL'}  {r['target']}: {r['value']:.3g} "
              f"(goal {r['goal']}) - {r['detail']}", flush=True)  # fmt: skip
    if args.out:
        write_json_atomic(args.out, {"threads": note, "torch": torch.__version__, "rows": rows})
    print(json.dumps({"passed": sum(r["pass"] for r in rows), "of": len(rows)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
