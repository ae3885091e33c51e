"""bench.train_step --presets: the study's models' training iterations, timed alternating;
bench.ranking_term: the ranking hinge's batches drawn in process or by a worker."""

from __future__ import annotations

import pytest

from bench import train_step


def test_unknown_preset_is_refused_by_name(capsys):
    with pytest.raises(SystemExit):
        train_step.main(["--presets", "resnet,vgg"])
    assert "--presets: 'vgg' is not one of resnet, ca," in capsys.readouterr().err


@pytest.mark.slow
def test_presets_time_each_model_against_the_first():
    out = train_step.measure_presets(["resnet", "ca"], rounds=1)
    assert (out["batch"], out["side"], out["recipe"]) == (32, 64, "native")
    assert out["resnet"]["ratio"] == 1.0 and out["ca"]["median_s"] > 0
    lo, hi = out["ca"]["ratio_spread"]
    assert lo <= out["ca"]["ratio"] <= hi


@pytest.mark.slow
def test_the_training_iteration_in_the_gpu_setting_times_every_side():
    # bfloat16 autocast and channels_last, as bench/gpu_check.sh runs it on a GPU (tiny here)
    out = train_step.measure("resnet18", 16, 2, "cpu", rounds=1, calls=2, bf16=True,
                             channels_last=True, unshared=False)  # fmt: skip
    assert out["bf16"] and out["channels_last"] and out["calls_per_round"] == 2
    assert not any(k.endswith("_unshared_s") for k in out)
    for side in ("plain", "faithful", "fast"):
        timing = out[f"{side}_timing"]
        assert timing["wall_s"] > 0 and timing["host_s"] > 0
        assert timing["device_s"] is None and timing["gpu_busy"] is None  # the CPU
    assert out["faithful_ratio_spread"][0] <= out["faithful_ratio"]
    assert out["floors"]["faithful_floor"] == pytest.approx(
        (8 - 2 * out["floors"]["prefix_share"]) / 3)


def test_the_pass_count_floor_follows_the_prefix_share():
    # docs/maths.md §4: ResNet-18's stem and layer1 are about 0.3 of its multiply-adds; a
    # deeper network's prefix is a smaller share, so its floors are higher
    r18, r50 = train_step.pass_floors("resnet18", 64), train_step.pass_floors("resnet50", 64)
    assert 0.25 < r18["prefix_share"] < 0.35 and r50["prefix_share"] < r18["prefix_share"]
    for f in (r18, r50):
        p = f["prefix_share"]
        assert f["faithful_floor"] == pytest.approx((8 - 2 * p) / 3)
        assert f["fast_floor"] == pytest.approx((6 - 3 * p) / 3)
    assert r50["faithful_floor"] > r18["faithful_floor"] and r50["gmac"] > r18["gmac"]


@pytest.mark.slow
def test_ranking_term_times_the_three_sides():
    from bench import ranking_term

    out = ranking_term.measure(steps=2, rounds=1, batch=2, crop=32)
    assert set(out["seconds_per_iteration"]) == {"in_process", "worker", "drawn"}
    assert all(s > 0 for s in out["seconds_per_iteration"].values())
    assert out["draw_one_batch_s"] > 0
    spread = out["worker_over_in_process"]
    assert spread["min"] <= spread["median"] <= spread["max"]
