"""bench.train_step --presets: the study's models' training iterations, timed alternating."""

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
