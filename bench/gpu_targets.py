"""Issue 25's GPU targets read from a committed GPU run: every target PASS, FAIL or MISSING
(not measured by that run), with its value, its goal and the file it came from.

    python -m bench.targets --gpu bench/results/h200-2026-11-26
    python -m bench.gpu_targets bench/results/h200-2026-11-26 [--host FILE]

The op targets are per dtype and per layout (NCHW, and channels_last, named so; rows that
predate the ``layout`` column are NCHW). It reads every JSON file under the folder that holds
op rows (``bench.run``'s ``rows``), the end-to-end file (``e2e.json``), the audit's
(``audit.json``, bench/audit_time.py), and the CPU host-time result (``--host``, default the
newest ``bench/results/host-overhead-*.json``). It measures nothing: a target the run did
not measure is MISSING, never a pass. How each number was timed is what the run recorded (its
README says more; a row's ``timing`` says which clock it is read on, ``single calls`` where the run
predates it): the op rows of the runs of 2026-11-26 are CUDA-event medians of single calls,
not CUDA graphs, and their end-to-end numbers timed each side on its own, not interleaved.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

#: The op targets' shapes: ResNet-50's largest CA input at 320 px, batch 16, and its four CA
#: inputs at 224 px, batch 32 (one per stage).
SHAPES = ((16, 256, 80, 80), (32, 256, 56, 56), (32, 512, 28, 28), (32, 1024, 14, 14),
          (32, 2048, 7, 7))  # fmt: skip
OPS = ("rank_mask", "intervene")
DTYPES = ("float32", "bfloat16")
#: NCHW, then NHWC (issue 25: kernels at their floor in both; a target's name says
#: ``channels_last`` where it is that layout's); bench.cases.LAYOUTS, spelt out here as SHAPES
#: is (this module does not import torch; a test keeps them equal)
LAYOUTS = ("contiguous", "channels_last")
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Target:
    """One target: ``passed`` is None when the run did not measure it."""

    name: str
    goal: str
    value: float | None
    passed: bool | None
    source: str

    def line(self) -> str:
        verdict = {True: "PASS", False: "FAIL", None: "MISSING"}[self.passed]
        value = "-" if self.value is None else f"{self.value:.3g}"
        return f"{verdict:7s} {self.name}: {value} (goal {self.goal}) - {self.source}"


def _check(name: str, value: float | None, goal: str, source: str) -> Target:
    if value is None:
        return Target(name, goal, None, None, source)
    sign, bound = goal.split()
    passed = value >= float(bound) if sign == ">=" else value <= float(bound)
    return Target(name, goal, float(value), passed, source)


def op_rows(folder: Path) -> dict[tuple, tuple[dict, str]]:
    """(op, shape, pass, provider, dtype, layout) -> (row, file) over every op-row file under
    ``folder`` (a row measured twice: the later file, in sorted order, wins; rows of runs
    before the layout column are NCHW)."""
    out = {}
    for path in sorted(folder.rglob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError):
            continue
        rows = data.get("rows") if isinstance(data, dict) else None
        for r in rows if isinstance(rows, list) else []:
            if isinstance(r, dict) and "op" in r:
                key = (r["op"], tuple(r["shape"]), r["pass"], r["provider"],
                       r.get("dtype", "float32"), r.get("layout", "contiguous"))  # fmt: skip
                out[key] = (r, str(path.relative_to(folder)))
    return out


def op_targets(folder: Path) -> list[Target]:
    rows = op_rows(folder)
    out = []
    for op, layout, dtype in ((o, lay, d) for o in OPS for lay in LAYOUTS for d in DTYPES):
        for shape in SHAPES:
            name = f"{op} fwd+bwd {list(shape)} {dtype}"
            if layout != "contiguous":
                name += f" {layout}"

            def get(provider, op=op, shape=shape, dtype=dtype, layout=layout):
                return rows.get((op, shape, "fwdbwd", provider, dtype, layout))

            native, compiled, eager = get("native"), get("compile"), get("eager")
            where = "not in any file of the run"
            if native:
                where = f"{native[1]} ({native[0].get('timing', 'single calls')})"
            out.append(_check(f"{name}, share of copy bandwidth",
                              native[0]["copy_fraction"] if native else None, ">= 0.8",
                              where))  # fmt: skip
            for base, goal, label, key in ((compiled, ">= 1.2", "torch.compile", "compile"),
                                           (eager, ">= 3", "eager", "eager")):  # fmt: skip
                value = None
                if native and base:  # the ratio bench.run took on the rows' common clock
                    value = native[0].get(f"speedup_vs_{key}",
                                          base[0]["seconds"] / native[0]["seconds"])
                out.append(_check(f"{name}, speed-up over {label}", value, goal, where))
    return out


def _with_floor(where: str, iteration: dict, mode: str) -> str:
    """``where``, and the ratio the pass count allows the mode where the run recorded it
    (bench/train_step.py ``pass_floors``)."""
    floor = iteration.get("floors", {}).get(f"{mode}_floor")
    return where if floor is None else f"{where} (its pass-count floor: {floor:.2f})"


def e2e_targets(folder: Path) -> list[Target]:
    found = sorted(folder.rglob("e2e.json"))
    if not found:
        data, where = {}, "no e2e.json in the run"
    else:
        data, where = json.loads(found[0].read_text()), str(found[0].relative_to(folder))
    it = data.get("train_iteration", {})
    fused, eager = data.get("pgd10_graph_images_per_s", data.get("pgd10_fused_images_per_s")), \
        data.get("pgd10_eager_images_per_s")  # fmt: skip
    return [
        _check("CA-ResNet-50 / ResNet-50 forward + backward", data.get("cprl_over_resnet"),
               "<= 1.05", where),
        _check("CPRL iteration / plain, faithful", it.get("faithful_ratio"), "<= 3.0",
               _with_floor(where, it, "faithful")),
        _check("CPRL iteration / plain, fast", it.get("fast_ratio"), "<= 2.0",
               _with_floor(where, it, "fast")),
        _check("PGD-10 images/s, graph-captured loop (else the fused loop) / eager loop",
               fused / eager if fused and eager
               else None, ">= 1.3", where),
    ]  # fmt: skip


def audit_targets(folder: Path) -> list[Target]:
    """The audit's two targets from the run's ``audit.json`` (bench/audit_time.py); the source
    says on which model and images (the target is stated for the CPRL ResNet-50 at 224 px)."""
    found = sorted(folder.rglob("audit.json"))
    if not found:
        data, where = {}, "no audit.json in the run"
    else:
        data = json.loads(found[0].read_text())
        where = (f"{found[0].relative_to(folder)}: {data['model']}, {data['size']} px, "
                 f"{data['images']} images timed, scaled to 250")  # fmt: skip
    return [
        _check("audit suite time / its floor", data.get("over_floor"), "<= 1.3", where),
        _check("audit suite time, 250 images, s", data.get("seconds"), "<= 180", where),
    ]


def host_target(host: Path | None) -> Target:
    if host is None or not host.is_file():
        return _check("host time, CPRLActivation / nn.ReLU (CPU)", None, "<= 1.5",
                      "no host-overhead result")  # fmt: skip
    data = json.loads(host.read_text())
    value = data["ratio_to_relu"]["ca"]["median"]
    return _check("host time, CPRLActivation / nn.ReLU (CPU)", value, "<= 1.5", host.name)


def newest_host_result() -> Path | None:
    found = sorted(RESULTS.glob("host-overhead-*.json"))
    return found[-1] if found else None


def gpu_targets(folder: str | Path, host: str | Path | None = None) -> list[Target]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"GPU run folder not found: {folder}")
    return [*op_targets(folder), *e2e_targets(folder), *audit_targets(folder),
            host_target(Path(host) if host else newest_host_result())]  # fmt: skip


def report(folder: str | Path, host: str | Path | None = None) -> str:
    targets = gpu_targets(folder, host)
    lines = [t.line() for t in targets]
    counts = {v: sum(t.passed is k for t in targets)
              for k, v in ((True, "PASS"), (False, "FAIL"), (None, "MISSING"))}  # fmt: skip
    lines.append(f"{folder}: " + ", ".join(f"{n} {v}" for v, n in counts.items()))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", help="a committed GPU run, e.g. bench/results/h200-2026-11-26")
    p.add_argument("--host", help="host-overhead JSON (default: the newest committed one)")
    args = p.parse_args(argv)
    print(report(args.folder, args.host))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
