"""The huge-page hint of the CPU kernels (csrc/cpu/huge_pages.h), on (``CPRL_FAST_HUGE_PAGES=1``)
against off (the default), in a loop: CA-ResNet-50 forward + backward (``--workload model``) or
rank_mask forward + backward alone on one map (``--workload op``). At the paper's training size
(320 px, batch 16) the first stage's CA maps are 105 MB, above glibc's 32 MiB ceiling for reusing
freed memory, so every one is fresh; at 224 px, batch 8 they are 6-26 MB and mostly come back
from the heap already touched. The setting is read once per process, so each side runs in its
own processes, the two alternating. Each process reports every iteration's wall time; the
summary gives, per side, the mean (what a training run's total time follows) and the median and
slowest iteration over all its processes: the hint's cost comes as rare stalls of hundreds of
milliseconds, which a median does not show.

    OMP_NUM_THREADS=2 python -m bench.huge_pages --size 320 --batch 16 --out huge-pages.json
    OMP_NUM_THREADS=2 python -m bench.huge_pages --workload op --shape 16,256,80,80
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from cprl_fast.io import write_json_atomic

_MODEL = """
import json, time, torch
from bench.end_to_end import batch, model_fwd_bwd
from cprl_fast.models import cprl_resnet
torch.manual_seed(0)
x, y = batch({size}, {n}, torch.device("cpu"))
run = model_fwd_bwd(cprl_resnet("{arch}").train(), x, y)
"""

_OP = """
import json, time, torch
from cprl_fast import ops
g = torch.Generator().manual_seed(0)
f = torch.randn({shape}, generator=g).requires_grad_(True)
dy = torch.randn({shape}, generator=g)
b = torch.zeros(())
def run():
    y = ops.rank_mask(f, b)
    (df,) = torch.autograd.grad(y, f, dy)
"""

_LOOP = """
run()
times = []
for _ in range({iters}):
    start = time.perf_counter(); run(); times.append(time.perf_counter() - start)
print(json.dumps(times))
"""


def _summary(times: list[list[float]]) -> dict[str, float]:
    flat = [t for run in times for t in run]
    return {"mean_s": statistics.mean(flat), "median_s": statistics.median(flat),
            "max_s": max(flat)}  # fmt: skip


def measure(code: str, processes: int = 3) -> dict:
    """Runs ``code`` (which prints a JSON list of iteration times) in ``processes`` alternating
    pairs of fresh processes, hint on and off; per side every time and its summary, and the
    off/on ratios of the means and of the medians (above 1: the hint is faster)."""
    runs: dict[str, list[list[float]]] = {"on": [], "off": []}
    for _ in range(processes):
        for side in ("on", "off"):
            env = {**os.environ, "CPRL_FAST_HUGE_PAGES": "1" if side == "on" else "0"}
            out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                 text=True, check=True)  # fmt: skip
            runs[side].append(json.loads(out.stdout.strip().splitlines()[-1]))
    on, off = _summary(runs["on"]), _summary(runs["off"])
    return {"times_s": runs, "on": on, "off": off,
            "off_over_on_mean": off["mean_s"] / on["mean_s"],
            "off_over_on_median": off["median_s"] / on["median_s"],
            "threads": os.environ.get("OMP_NUM_THREADS"),
            "timing": "wall time per iteration, sides in alternating fresh processes"}  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workload", choices=("model", "op"), default="model")
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--shape", default="16,256,80,80", help="op: the map's shape N,C,H,W")
    p.add_argument("--processes", type=int, default=3)
    p.add_argument("--iters", type=int, default=5, help="timed iterations per process")
    p.add_argument("--out")
    args = p.parse_args(argv)
    if args.workload == "model":
        setup = _MODEL.format(size=args.size, n=args.batch, arch=args.arch)
        what = f"CA-{args.arch} fwd+bwd {args.size} px x{args.batch}"
        params = {"arch": args.arch, "size": args.size, "batch": args.batch}
    else:
        shape = [int(s) for s in args.shape.split(",")]
        setup = _OP.format(shape=tuple(shape))
        what = f"rank_mask fwd+bwd {'x'.join(map(str, shape))}"
        params = {"shape": shape}
    res = {"workload": args.workload, **params, "iterations": args.iters,
           **measure(setup + _LOOP.format(iters=args.iters), args.processes)}  # fmt: skip
    on, off = res["on"], res["off"]
    print(f"{what}, mean (median, slowest) per iteration: hint on "
          f"{on['mean_s'] * 1e3:.0f} ms ({on['median_s'] * 1e3:.0f}, {on['max_s'] * 1e3:.0f}), "
          f"off {off['mean_s'] * 1e3:.0f} ms ({off['median_s'] * 1e3:.0f}, "
          f"{off['max_s'] * 1e3:.0f}); off/on {res['off_over_on_mean']:.2f}x by the means, "
          f"{res['off_over_on_median']:.2f}x by the medians")  # fmt: skip
    if args.out:
        write_json_atomic(args.out, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
