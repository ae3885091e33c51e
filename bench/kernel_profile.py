"""Each kernel of the op rows under Nsight Compute: device time, DRAM bytes read and written,
L2 hit rate and occupancy per kernel, so that one GPU run shows which pass of which op runs
below copy speed and whether a map read twice comes the second time from L2 (issue 25: the
floor of each op first, then the kernels that miss it).

On the GPU machine (``bench/gpu_check.sh`` runs it so)::

    ncu --csv --page raw --print-units base --profile-from-start off --cache-control none \\
        --metrics "$(python -m bench.kernel_profile --print-metrics)" \\
        python -m bench.kernel_profile --device cuda --manifest kernels-manifest.json > kernels.csv
    python -m bench.kernel_profile --summarize kernels.csv --manifest kernels-manifest.json \\
        --markdown kernels.md --out kernels.json

The driver builds each case with :func:`bench.cases.make_case` (forward + backward of rank_mask
and intervene at the benchmark shapes, in each dtype, layout and provider asked for, every case
of the first provider before the next provider's, so a budget cuts Triton's before native's)
and, before the cases of a shape and dtype, a plain copy of a map of that size (its floor). It
calls each case a few times unprofiled, then once between ``cudaProfilerStart`` and
``cudaProfilerStop`` (``torch.cuda.profiler``), right after a one-kernel marker
(``torch.cuda._sleep``, ATen's ``spin_kernel``) that tells the summary where the case's kernels
begin; the manifest lists the cases in that order and is rewritten after each one, and
``--budget`` stops before a case that would start past it, so ncu still writes what was
profiled. ``--cache-control none`` leaves the L2 contents one kernel leaves to the next, as in a
real call (a kernel that reads a map its predecessor just read shows few DRAM bytes); the
durations are ncu's, kernel by kernel, with no launch gaps.

The summary pairs the i-th marker with the i-th case (a count that differs is an error, never
a guess) and gives, per case, every kernel's time, DRAM bytes and their rate against the copy of
the same size, and the case's DRAM bytes over its minimum bytes (the spec's ``bytes_moved``):
the passes over memory it really made.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from bench.cases import LAYOUTS, make_case, option_values, shapes_for
from cprl_fast.io import write_json_atomic, write_text_atomic
from cprl_fast.ops.spec import in_layout

#: ncu's metrics per kernel (one replay pass on sm_90, so that ``--cache-control none`` keeps
#: the L2 state the previous kernel left): device time, DRAM traffic, L2 hit rate, occupancy
#: and registers.
METRICS = (
    "gpu__time_duration.sum",
    "dram__bytes_read.sum",
    "dram__bytes_write.sum",
    "lts__t_sector_hit_rate.pct",
    "sm__warps_active.avg.pct_of_peak_sustained_active",
    "launch__registers_per_thread",
)
MARKER = "spin_kernel"  # the kernel of torch.cuda._sleep: where a case's kernels begin
OPS = ("rank_mask", "intervene")
#: seconds per unit of ncu's time units, bytes per unit of its byte units
_SCALE = {"nsecond": 1e-9, "usecond": 1e-6, "msecond": 1e-3, "second": 1.0, "byte": 1.0,
          "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9, "%": 1.0, "register/thread": 1.0,
          "": 1.0}  # fmt: skip


@dataclass
class ProfileCase:
    """One profiled call: an op's forward + backward (``op`` in :data:`OPS`) or ``copy``, a
    plain copy of one map of ``map_bytes`` (the floor of that shape and dtype)."""

    op: str
    shape: list[int]
    dtype: str
    layout: str
    provider: str  #: native, triton, or torch for the copy
    map_bytes: int  #: bytes of one feature map of this shape and dtype
    min_bytes: int  #: what the call must move at least (the spec's bytes_moved x map_bytes)

    @property
    def name(self) -> str:
        return (f"{self.op} {'x'.join(map(str, self.shape))} {self.dtype} {self.layout} "
                f"{self.provider}")  # fmt: skip


def plan(dtypes: list[torch.dtype], layouts: list[str], providers: list[str]) -> list[tuple]:
    """(op, shape, dtype, layout, provider) in the order they are profiled (a budget cuts the
    last): per provider, per dtype and layout, per shape, each op; with the first provider,
    the copy of that shape before its ops."""
    out = []
    for provider in providers:
        for dtype in dtypes:
            for layout in layouts:
                for shape in shapes_for(OPS[0]):
                    if provider == providers[0]:
                        out.append(("copy", tuple(shape), dtype, layout, "torch"))
                    for op in OPS:
                        if tuple(shape) in map(tuple, shapes_for(op)):
                            out.append((op, tuple(shape), dtype, layout, provider))
    return out


def _callable(op, shape, dtype, layout, provider, device) -> tuple[ProfileCase, object]:
    itemsize = torch.empty((), dtype=dtype).element_size()
    numel = 1
    for s in shape:
        numel *= s
    name = str(dtype).removeprefix("torch.")
    if op == "copy":
        src = in_layout(torch.randn(shape, dtype=dtype, device=device), layout)
        dst = torch.empty_like(src)
        case = ProfileCase(op, list(shape), name, layout, provider, numel * itemsize,
                           2 * numel * itemsize)  # fmt: skip
        return case, lambda: dst.copy_(src)
    c = make_case(op, shape, provider, "fwdbwd", device, dtype, layout=layout)
    case = ProfileCase(op, list(shape), name, layout, provider, numel * itemsize, c.min_bytes)
    return case, c.fn


def drive(device: torch.device, dtypes: list[torch.dtype], layouts: list[str],
          providers: list[str], manifest: str, budget: float | None = None,
          warmup: int = 3) -> list[ProfileCase]:  # fmt: skip
    """Runs every case of :func:`plan` as the module docstring says (on the CPU: the same calls
    with no profiler and no marker, to test the plumbing); returns the cases run, in order."""
    cuda = device.type == "cuda"
    done: list[ProfileCase] = []
    start = time.monotonic()
    for key in plan(dtypes, layouts, providers):
        if budget is not None and time.monotonic() - start > budget:
            print(f"kernel_profile: budget of {budget:.0f} s spent; {len(done)} cases profiled",
                  file=sys.stderr)  # fmt: skip
            break
        case, fn = _callable(*key, device)
        for _ in range(warmup):
            fn()
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.profiler.start()
            torch.cuda._sleep(1000)
        fn()
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.profiler.stop()
        done.append(case)
        write_json_atomic(manifest, {"device": str(device), "cases": [asdict(c) for c in done]})
        print(f"kernel_profile: {case.name}", file=sys.stderr, flush=True)
    return done


@dataclass
class Kernel:
    name: str
    grid: str
    block: str
    seconds: float
    dram_read: float  #: bytes
    dram_write: float  #: bytes
    l2_hit_pct: float | None
    occupancy_pct: float | None
    registers: float | None

    @property
    def dram_bytes(self) -> float:
        return self.dram_read + self.dram_write


def _number(text: str) -> float | None:
    text = text.strip().replace(",", "")
    try:
        return float(text)
    except ValueError:
        return None


def parse_ncu_csv(text: str) -> list[Kernel]:
    """The kernels of ncu's ``--csv --page raw`` output, in launch order. Lines before the
    header (ncu's ``==PROF==`` messages, the driver's output) are skipped; a units row after the
    header scales each metric to seconds and bytes."""
    lines = text.splitlines()
    head = next((i for i, line in enumerate(lines) if line.startswith('"ID"')), None)
    if head is None:
        raise ValueError("no ncu CSV header (a line starting with \"ID\") in the input")
    rows = list(csv.reader(io.StringIO("\n".join(lines[head:]))))
    header, body = rows[0], rows[1:]
    col = {name: i for i, name in enumerate(header)}
    missing = [m for m in ("Kernel Name", *METRICS[:3]) if m not in col]
    if missing:
        raise ValueError(f"ncu CSV lacks the columns {', '.join(missing)}")
    scale = {m: 1.0 for m in METRICS}
    if body and _number(body[0][col["ID"]]) is None:  # the units row
        for m in METRICS:
            if m in col:
                unit = body[0][col[m]].strip()
                if unit not in _SCALE:
                    raise ValueError(f"ncu CSV: unknown unit {unit!r} of {m}")
                scale[m] = _SCALE[unit]
        body = body[1:]

    def metric(row, m):
        if m not in col:
            return None
        v = _number(row[col[m]])
        return None if v is None else v * scale[m]

    out = []
    for row in body:
        if len(row) < len(header) or _number(row[col["ID"]]) is None:
            continue
        out.append(Kernel(
            name=row[col["Kernel Name"]],
            grid=row[col["Grid Size"]] if "Grid Size" in col else "",
            block=row[col["Block Size"]] if "Block Size" in col else "",
            seconds=metric(row, METRICS[0]) or 0.0,
            dram_read=metric(row, METRICS[1]) or 0.0,
            dram_write=metric(row, METRICS[2]) or 0.0,
            l2_hit_pct=metric(row, METRICS[3]),
            occupancy_pct=metric(row, METRICS[4]),
            registers=metric(row, METRICS[5]),
        ))  # fmt: skip
    return out


@dataclass
class CaseProfile:
    case: ProfileCase
    kernels: list[Kernel] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(k.seconds for k in self.kernels)

    @property
    def dram_bytes(self) -> float:
        return sum(k.dram_bytes for k in self.kernels)


def split_cases(kernels: list[Kernel], cases: list[ProfileCase]) -> list[CaseProfile]:
    """The kernels after the i-th marker (up to the next) are the i-th case's."""
    markers = [i for i, k in enumerate(kernels) if MARKER in k.name]
    if len(markers) != len(cases):
        raise ValueError(
            f"{len(markers)} {MARKER} markers in the ncu output but {len(cases)} cases in the "
            "manifest: the profile cannot be matched to its cases"
        )
    if markers and markers[0] != 0:
        raise ValueError(f"{markers[0]} kernels before the first {MARKER} marker")
    ends = [*markers[1:], len(kernels)]
    spans = zip(cases, markers, ends, strict=True)
    return [CaseProfile(c, kernels[m + 1 : e]) for c, m, e in spans]


def summarize(profiles: list[CaseProfile]) -> dict:
    """Per case: its kernels and totals; rates against the copy of the same shape, dtype and
    layout (``copy_gbps``: the copy's DRAM bytes over its time)."""
    copies = {(tuple(p.case.shape), p.case.dtype, p.case.layout): p
              for p in profiles if p.case.op == "copy"}  # fmt: skip
    out = []
    for p in profiles:
        c = p.case
        copy = copies.get((tuple(c.shape), c.dtype, c.layout))
        copy_bps = copy.dram_bytes / copy.seconds if copy and copy.seconds else None
        kernels = []
        for k in p.kernels:
            bps = k.dram_bytes / k.seconds if k.seconds else None
            kernels.append({**asdict(k), "dram_gbps": None if bps is None else bps / 1e9,
                            "of_copy": bps / copy_bps if bps and copy_bps else None})  # fmt: skip
        seconds = p.seconds
        out.append({
            **asdict(c), "name": c.name, "kernels": kernels, "seconds": seconds,
            "dram_bytes": p.dram_bytes,
            "dram_passes": p.dram_bytes / c.map_bytes,
            "min_passes": c.min_bytes / c.map_bytes,
            "copy_gbps": None if copy_bps is None else copy_bps / 1e9,
            # the share of copy bandwidth the op row would show with no launch gaps
            "of_copy_floor": c.min_bytes / copy_bps / seconds if copy_bps and seconds else None,
        })  # fmt: skip
    return {"cases": out}


def _fmt(v, spec: str) -> str:
    return "" if v is None else format(v, spec)


def markdown(summary: dict) -> str:
    lines = [
        "Per case (ncu, kernel by kernel, no launch gaps; DRAM passes = DRAM bytes / one map):",
        "",
        "| case | kernels | device us | DRAM passes | minimum passes | share of copy |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in summary["cases"]:
        lines.append(f"| {c['name']} | {len(c['kernels'])} | {c['seconds'] * 1e6:.1f} "
                     f"| {c['dram_passes']:.2f} | {c['min_passes']:.0f} "
                     f"| {_fmt(c['of_copy_floor'], '.2f')} |")  # fmt: skip
    lines += ["", "Per kernel:", "",
              "| case | kernel | grid | block | us | DRAM read MB | DRAM write MB | GB/s "
              "| of copy | L2 hit % | occupancy % | registers |",
              "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
              "| ---: |"]  # fmt: skip
    for c in summary["cases"]:
        for k in c["kernels"]:
            name = k["name"] if len(k["name"]) <= 60 else k["name"][:57] + "..."
            lines.append(
                f"| {c['name']} | `{name}` | {k['grid']} | {k['block']} "
                f"| {k['seconds'] * 1e6:.1f} | {k['dram_read'] / 1e6:.1f} "
                f"| {k['dram_write'] / 1e6:.1f} | {_fmt(k['dram_gbps'], '.0f')} "
                f"| {_fmt(k['of_copy'], '.2f')} | {_fmt(k['l2_hit_pct'], '.0f')} "
                f"| {_fmt(k['occupancy_pct'], '.0f')} | {_fmt(k['registers'], '.0f')} |"
            )
    return "\n".join(lines) + "\n"


def load_manifest(path: str) -> list[ProfileCase]:
    data = json.loads(Path(path).read_text())
    return [ProfileCase(**c) for c in data["cases"]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--print-metrics", action="store_true", help="print ncu's --metrics value")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="float32,bfloat16", help="comma-separated")
    p.add_argument("--layout", default=",".join(LAYOUTS), help="comma-separated")
    p.add_argument("--provider", default="native", help="comma-separated: native, triton")
    p.add_argument("--budget", type=float, help="seconds after which no case starts")
    p.add_argument("--manifest", default="kernels-manifest.json")
    p.add_argument("--summarize", metavar="CSV", help="summarize ncu's CSV of a driver run")
    p.add_argument("--markdown", help="the summary's tables (with --summarize)")
    p.add_argument("--out", help="the summary as JSON (with --summarize)")
    args = p.parse_args(argv)
    if args.print_metrics:
        print(",".join(METRICS))
        return 0
    if args.summarize:
        summary = summarize(split_cases(parse_ncu_csv(Path(args.summarize).read_text()),
                                        load_manifest(args.manifest)))  # fmt: skip
        if args.out:
            write_json_atomic(args.out, summary)
        text = markdown(summary)
        if args.markdown:
            write_text_atomic(args.markdown, text)
        print(text)
        return 0
    try:
        dtypes = [getattr(torch, d) for d in
                  option_values("--dtype", args.dtype, ("float32", "bfloat16", "float16"))]
        layouts = option_values("--layout", args.layout, LAYOUTS)
        providers = option_values("--provider", args.provider, ("native", "triton"))
    except ValueError as err:
        p.error(str(err))
    drive(torch.device(args.device), dtypes, layouts, providers, args.manifest, args.budget)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
