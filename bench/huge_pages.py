"""The huge-page hint of the CPU kernels (csrc/cpu/huge_pages.h) end to end: CA-ResNet-50
forward + backward with the hint on (the default) and off (``CPRL_FAST_HUGE_PAGES=0``). At the
paper's training size (320 px, batch 16) the first stage's CA maps are 105 MB, above glibc's
32 MiB ceiling for reusing freed memory, so every one is fresh; at 224 px, batch 8 they are
6-26 MB and mostly come back from the heap already touched. The setting is read once per
process, so each side runs in its own processes, the two alternating; each process reports the
median of its iterations, and the summary the median over its processes.

    OMP_NUM_THREADS=2 python -m bench.huge_pages --size 320 --batch 16 --out huge-pages.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from cprl_fast.io import write_json_atomic

_ONE = """
import json, time, torch
from bench.end_to_end import batch, model_fwd_bwd
from cprl_fast.models import cprl_resnet
torch.manual_seed(0)
x, y = batch({size}, {n}, torch.device("cpu"))
run = model_fwd_bwd(cprl_resnet("{arch}").train(), x, y)
run()
times = []
for _ in range({iters}):
    start = time.perf_counter(); run(); times.append(time.perf_counter() - start)
print(json.dumps(sorted(times)[len(times) // 2]))
"""


def measure(arch: str = "resnet50", size: int = 224, n: int = 8, iters: int = 5,
            processes: int = 3) -> dict:  # fmt: skip
    code = _ONE.format(arch=arch, size=size, n=n, iters=iters)
    runs: dict[str, list[float]] = {"on": [], "off": []}
    for _ in range(processes):
        for side in ("on", "off"):
            env = {**os.environ, "CPRL_FAST_HUGE_PAGES": "1" if side == "on" else "0"}
            out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                 text=True, check=True)  # fmt: skip
            runs[side].append(json.loads(out.stdout.strip().splitlines()[-1]))
    med = {k: statistics.median(v) for k, v in runs.items()}
    return {"arch": arch, "size": size, "batch": n, "iterations": iters, "runs_s": runs,
            "on_s": med["on"], "off_s": med["off"], "off_over_on": med["off"] / med["on"],
            "threads": os.environ.get("OMP_NUM_THREADS")}  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--processes", type=int, default=3)
    p.add_argument("--iters", type=int, default=5, help="timed iterations per process")
    p.add_argument("--out")
    args = p.parse_args(argv)
    res = measure(args.arch, args.size, args.batch, args.iters, args.processes)
    print(f"CA-{args.arch} fwd+bwd {args.size} px x{args.batch}: hint on {res['on_s'] * 1e3:.0f}"
          f" ms, off {res['off_s'] * 1e3:.0f} ms ({res['off_over_on']:.2f}x)")  # fmt: skip
    if args.out:
        write_json_atomic(args.out, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
