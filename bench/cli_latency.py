"""How long ``cprl-fast`` takes to answer ``--help``, each command's ``--help`` and an argument
error, as a user meets it: a fresh process each time, wall time from start to exit.

    python -m bench.cli_latency                   # 11 interleaved rounds
    python -m bench.cli_latency --json out.json

The front end (``cprl_fast_cli``) parses against a static listing of the registries and imports
torch only when a command runs, so these answers cost an interpreter start and argparse. For
scale, the same rounds time ``python -c pass`` (the floor: an interpreter start) and
``python -c "import torch"`` (what every answer cost when the parser was built from the
registries). Each round runs every case once, the order rotating (:func:`bench.timing.interleaved`).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

import torch

from bench.timing import interleaved
from cprl_fast_cli import COMMANDS

#: The installed console script beside this interpreter (else the same entry point via -m).
SCRIPT = [str(p)] if (p := Path(sys.executable).with_name("cprl-fast")).is_file() else \
    [sys.executable, "-m", "cprl_fast_cli"]  # fmt: skip
#: case -> the command line
CASES: dict[str, list[str]] = {
    "python -c pass (floor)": [sys.executable, "-c", "pass"],
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    "cprl-fast --help": [*SCRIPT, "--help"],
    **{f"cprl-fast {c} --help": [*SCRIPT, c, "--help"] for c in COMMANDS},
    "cprl-fast train --epochz 3 (error)": [*SCRIPT, "train", "--epochz", "3"],
}


def _runner(args: list[str]):
    def run() -> None:
        subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)

    return run


def measure(rounds: int = 11) -> dict:
    """Seconds per answer of each case: median over rounds, with min and max."""
    timed = interleaved({k: _runner(v) for k, v in CASES.items()}, torch.device("cpu"),
                        rounds=rounds, warmup=1)  # fmt: skip
    return {
        "rounds": rounds,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "timing": "wall time of a fresh process per answer, cases interleaved per round",
        "script": SCRIPT,
        "seconds": {k: {"median": v["median_s"], "min": v["min_s"], "max": v["max_s"]}
                    for k, v in timed.items()},
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args(argv)
    result = measure(args.rounds)
    for name, s in result["seconds"].items():
        print(f"{name:42s} {s['median']:6.3f} s  [{s['min']:.3f}, {s['max']:.3f}]")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
