"""The op benchmarks in both dense layouts (issue 25: kernels at their floor in NCHW and in
channels_last): a case's maps and gradient are stored in its layout, rows of one layout are
compared only with rows of the same layout, and issue 25's GPU targets read each layout's own
rows."""

from __future__ import annotations

import json

import pytest
import torch

from bench.cases import inputs, make_case
from bench.gpu_targets import gpu_targets
from bench.run import add_ratios, main

CPU = torch.device("cpu")
CL = torch.channels_last


@pytest.mark.parametrize("op", ["rank_mask", "intervene"])
def test_a_channels_last_case_hands_the_op_channels_last_maps(op):
    shape = (2, 8, 5, 3)
    assert inputs(op, shape, torch.float32, CPU, layout="channels_last")[0].is_contiguous(
        memory_format=CL)
    nhwc = make_case(op, shape, "native", "fwdbwd", CPU, layout="channels_last")
    nchw = make_case(op, shape, "native", "fwdbwd", CPU)
    assert nhwc.layout == "channels_last" and nhwc.name.endswith("/channels_last/native")
    got, want = nhwc.fn(), nchw.fn()
    # the feature map's gradient comes back in the layout the op was given
    assert got[0].is_contiguous(memory_format=CL) and not want[0].is_contiguous(memory_format=CL)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="layout must be one of contiguous, channels_last"):
        inputs(op, shape, torch.float32, CPU, layout="strided")


def _row(provider, layout, seconds, **extra):
    return {"op": "rank_mask", "shape": [2, 8, 4, 4], "pass": "fwdbwd", "dtype": "float32",
            "provider": provider, "layout": layout, "seconds": seconds, **extra}  # fmt: skip


def test_ratios_compare_rows_of_one_layout():
    rows = [_row("eager", "contiguous", 4.0), _row("native", "contiguous", 1.0),
            _row("eager", "channels_last", 9.0), _row("native", "channels_last", 3.0)]  # fmt: skip
    add_ratios(rows)
    assert rows[1]["speedup_vs_eager"] == 4.0
    assert rows[3]["speedup_vs_eager"] == 3.0


def test_the_layout_option_names_what_it_takes(capsys):
    with pytest.raises(SystemExit, match="--layout: 'nhwc' is not one of contiguous, chan"):
        main(["--device", "cpu", "--layout", "nhwc"])


def test_each_layouts_gpu_targets_read_its_own_rows(tmp_path):
    shape = [16, 256, 80, 80]

    def row(provider, layout, seconds, fraction=None):
        r = _row(provider, layout, seconds, timing="cuda-graph", shape=shape)
        if fraction is not None:
            r["copy_fraction"] = fraction
        return r

    rows = [row("eager", "contiguous", 4.0), row("native", "contiguous", 1.0, 0.9),
            row("eager", "channels_last", 2.0), row("native", "channels_last", 1.0, 0.5)]
    add_ratios(rows)
    (tmp_path / "bench.json").write_text(json.dumps({"rows": rows}))
    t = {x.name: x for x in gpu_targets(tmp_path, host=tmp_path / "none.json")}
    name = "rank_mask fwd+bwd [16, 256, 80, 80] float32"
    assert t[f"{name}, share of copy bandwidth"].passed is True
    assert t[f"{name}, speed-up over eager"].value == 4.0
    assert t[f"{name} channels_last, share of copy bandwidth"].passed is False
    assert t[f"{name} channels_last, speed-up over eager"].value == 2.0
    assert t[f"{name} channels_last, speed-up over torch.compile"].passed is None
    assert t[f"{name} channels_last, share of copy bandwidth"].source == "bench.json (cuda-graph)"
