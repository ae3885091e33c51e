"""bench.kernel_profile: the driver runs its cases in the manifest's order (here on the CPU,
without ncu), and the summary of an ncu CSV (ncu's raw page, written here by hand in its
format) gives each case its kernels, its DRAM passes and its rate against the copy of the same
map, or refuses a profile whose markers do not match the manifest."""

from __future__ import annotations

import json

import pytest
import torch

from bench.kernel_profile import (
    MARKER,
    METRICS,
    ProfileCase,
    drive,
    main,
    parse_ncu_csv,
    split_cases,
    summarize,
)

HEADER = ('"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream",'
          '"Block Size","Grid Size","Device","CC",'
          + ",".join(f'"{m}"' for m in METRICS))  # fmt: skip
UNITS = '"","","","","","","","","","","","nsecond","Kbyte","byte","%","%","register/thread"'


def _row(i: int, name: str, ns: float, read_kb: float, write_b: float) -> str:
    return (f'"{i}","42","python3","host","{name}","1","7","(256, 1, 1)","(64, 1, 1)","0",'
            f'"9.0","{ns:,.0f}","{read_kb}","{write_b:,.0f}","50","80","32"')  # fmt: skip


def test_the_driver_runs_the_plan_in_order_and_writes_the_manifest(tmp_path, monkeypatch):
    monkeypatch.setenv("CPRL_BENCH_SMALL", "1")
    manifest = tmp_path / "m.json"
    done = drive(torch.device("cpu"), [torch.float32], ["contiguous", "channels_last"],
                 ["native"], str(manifest), warmup=1)  # fmt: skip
    names = [c.name for c in done]
    assert names[:3] == ["copy 2x32x8x8 float32 contiguous torch",
                         "rank_mask 2x32x8x8 float32 contiguous native",
                         "intervene 2x32x8x8 float32 contiguous native"]  # fmt: skip
    assert len(done) == 2 * 2 * 3 and names[-1] == "intervene 2x64x4x4 float32 channels_last native"
    assert [c["op"] for c in json.loads(manifest.read_text())["cases"]] == [c.op for c in done]
    rank = done[1]
    assert rank.map_bytes == 2 * 32 * 8 * 8 * 4 and rank.min_bytes == 5 * rank.map_bytes
    assert drive(torch.device("cpu"), [torch.float32], ["contiguous"], ["native"],
                 str(tmp_path / "none.json"), budget=-1) == []  # fmt: skip


def _cases():
    mb = 1_000_000
    copy = ProfileCase("copy", [4, 8, 5, 5], "float32", "contiguous", "torch", mb, 2 * mb)
    rank = ProfileCase("rank_mask", [4, 8, 5, 5], "float32", "contiguous", "native", mb, 5 * mb)
    return copy, rank


def test_the_summary_pairs_markers_with_cases_and_scales_units(tmp_path):
    copy, rank = _cases()
    lines = ["==PROF== Connected to process 42", HEADER, UNITS,
             _row(0, MARKER, 1000, 0, 0),
             _row(1, "copy_kernel", 1000, 1000, 1_000_000),  # 2 MB in 1 us: 2000 GB/s
             _row(2, MARKER, 1000, 0, 0),
             _row(3, "nc_reduce_nchw_kernel", 1000, 1000, 0),  # 1 MB in 1 us: half copy speed
             _row(4, "sorted_mask_kernel", 3000, 0, 0),
             _row(5, "nc_map_kernel", 1000, 500, 1_000_000)]  # fmt: skip
    kernels = parse_ncu_csv("\n".join(lines))
    assert [k.name for k in kernels][1] == "copy_kernel"
    assert kernels[1].seconds == pytest.approx(1e-6) and kernels[1].dram_read == 1e6
    summary = summarize(split_cases(kernels, [copy, rank]))
    c, r = summary["cases"]
    assert c["dram_passes"] == pytest.approx(2.0) and c["copy_gbps"] == pytest.approx(2000)
    assert [k["name"] for k in r["kernels"]] == ["nc_reduce_nchw_kernel", "sorted_mask_kernel",
                                                 "nc_map_kernel"]  # fmt: skip
    assert r["kernels"][0]["of_copy"] == pytest.approx(0.5)
    assert r["dram_passes"] == pytest.approx(2.5) and r["min_passes"] == 5
    assert r["seconds"] == pytest.approx(5e-6)
    # 5 MB at copy speed takes 2.5 us; the case's kernels took 5 us
    assert r["of_copy_floor"] == pytest.approx(0.5)
    (tmp_path / "k.csv").write_text("\n".join(lines))
    (tmp_path / "m.json").write_text(json.dumps({"cases": [vars(copy), vars(rank)]}))
    assert main(["--summarize", str(tmp_path / "k.csv"), "--manifest", str(tmp_path / "m.json"),
                 "--markdown", str(tmp_path / "k.md")]) == 0  # fmt: skip
    assert "| rank_mask 4x8x5x5 float32 contiguous native | 3 | 5.0 | 2.50 | 5 | 0.50 |" in (
        tmp_path / "k.md").read_text()


def test_a_profile_that_does_not_match_its_manifest_is_refused():
    copy, rank = _cases()
    kernels = parse_ncu_csv("\n".join([HEADER, UNITS, _row(0, MARKER, 1, 0, 0),
                                       _row(1, "copy_kernel", 1, 1, 1)]))  # fmt: skip
    with pytest.raises(ValueError, match="1 spin_kernel markers in the ncu output but 2 cases"):
        split_cases(kernels, [copy, rank])
    with pytest.raises(ValueError, match="no ncu CSV header"):
        parse_ncu_csv("==PROF== No kernels were profiled.")
    with pytest.raises(ValueError, match="unknown unit 'furlong'"):
        parse_ncu_csv("\n".join([HEADER, UNITS.replace("nsecond", "furlong")]))


def test_it_prints_the_metrics_ncu_collects(capsys):
    assert main(["--print-metrics"]) == 0
    assert capsys.readouterr().out.strip() == ",".join(METRICS)


def test_the_plan_profiles_every_native_case_before_the_triton_ones(monkeypatch):
    from bench.kernel_profile import plan

    monkeypatch.setenv("CPRL_BENCH_SMALL", "1")
    cases = plan([torch.float32, torch.bfloat16], ["contiguous", "channels_last"],
                 ["native", "triton"])  # fmt: skip
    providers = [c[4] for c in cases]
    last_native = max(i for i, p in enumerate(providers) if p == "native")
    assert providers.index("triton") > last_native
    copies = [c for c in cases if c[0] == "copy"]
    assert len(copies) == 2 * 2 * 2 and all(cases.index(c) < last_native for c in copies)
    assert len(cases) == len(copies) + 2 * len(copies) * 2  # two ops per copy, per provider
