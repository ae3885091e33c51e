"""Ranking pretraining (cprl_fast.train.ranking): its batches, its hinge, the weights file every
ResNet model takes as ``pretrained``, and the command line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cprl_fast.models.registry import build
from cprl_fast.train.ranking import (
    VERSIONS,
    RankingConfig,
    pretrain_by_ranking,
    ranking_batch,
    ranking_hinge,
)

SMALL = RankingConfig(steps=2, crops=2, crop=16, kinds=("blur", "noise"))


def _photo(seed: int, size=(40, 36)) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.random((size[1] // 4, size[0] // 4, 3))
    big = np.kron(base, np.ones((4, 4, 1)))[: size[1], : size[0]]  # blocks: some structure
    return Image.fromarray((big * 255).astype(np.uint8))


@pytest.fixture
def refs(tmp_path):
    folder = tmp_path / "refs"
    folder.mkdir()
    for i in range(2):
        _photo(i).save(folder / f"scene{i}.png")
    return folder


def test_batch_shapes_order_and_determinism():
    photos = [_photo(0), _photo(1)]
    x, st = ranking_batch(photos, SMALL, np.random.default_rng(3))
    assert x.shape == (SMALL.crops * VERSIONS, 3, 16, 16) and x.dtype == torch.float32
    assert 0 <= x.min() and x.max() <= 1
    assert st.shape == (SMALL.crops, VERSIONS)
    assert (st[:, 0] == -1).all() and (st[:, 1:] >= 0).all() and (st[:, 1:] <= 4).all()
    assert (st.diff(dim=1) >= 0).all()
    again = ranking_batch(photos, SMALL, np.random.default_rng(3))
    torch.testing.assert_close(again[0], x)
    torch.testing.assert_close(again[1], st)


def test_hinge_is_zero_in_order_and_pushes_toward_it():
    st = torch.tensor([[-1.0, 0.5, 1.0, 2.0, 3.5]])
    ordered = torch.tensor([[0.9, 0.7, 0.5, 0.3, 0.1]])
    assert ranking_hinge(ordered, st, 0.05) == 0
    reversed_ = ordered.flip(1).requires_grad_()
    loss = ranking_hinge(reversed_, st, 0.05)
    loss.backward()
    assert loss > 0
    # descending the hinge raises the clean version's score and lowers the most distorted one
    assert reversed_.grad[0, 0] < 0 < reversed_.grad[0, -1]


def test_weights_file_loads_into_every_resnet_model(refs, tmp_path):
    out = tmp_path / "ranking.pt"
    result = pretrain_by_ranking(refs, out, SMALL, progress=False)
    assert result.path == out and np.isfinite(result.final_hinge)
    saved = torch.load(out, weights_only=True)
    assert saved["meta"]["pretraining"] == "ranking" and saved["meta"]["steps"] == 2
    plain = build("resnet", arch="resnet18", pretrained=str(out), input_norm="lcn")
    for key, value in saved["state_dict"].items():
        torch.testing.assert_close(plain.backbone.state_dict()[key], value)
    build("cprl", arch="resnet18", pretrained=str(out))  # the CA blocks take the same weights
    again = pretrain_by_ranking(refs, tmp_path / "again.pt", SMALL, progress=False)
    assert again.final_hinge == result.final_hinge  # seeded: the same run


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"steps": 0}, "steps must be an integer >= 1"),
        ({"crops": 1.5}, "crops must be an integer >= 1"),
        ({"crop": 8}, "crop must be an integer side >= 16 px"),
        ({"kinds": ("blur", "lens")}, "kinds must name types of .* got lens"),
        ({"lr": float("nan")}, "lr must be a positive finite number"),
        ({"margin": -1.0}, "margin must be a finite number >= 0"),
    ],
)
def test_bad_settings_are_named(change, message):
    with pytest.raises(ValueError, match=message):
        RankingConfig(**change)


def test_references_too_small_are_named(tmp_path):
    _photo(0, size=(20, 20)).save(tmp_path / "tiny.png")
    with pytest.raises(ValueError, match=r"tiny\.png is 20 x 20 px: ranking crops need at least"):
        pretrain_by_ranking(tmp_path / "tiny.png", tmp_path / "w.pt", SMALL, progress=False)
    assert not (tmp_path / "w.pt").exists()


def test_command_line(refs, tmp_path, capsys):
    from cprl_fast_cli import main

    out = tmp_path / "w.pt"
    argv = ["pretrain", str(refs), "--out", str(out), "--steps", "2", "--crops", "2", "--crop",
            "16", "--distortions", "blur,noise"]  # fmt: skip
    assert main(argv) == 0
    assert "--pretrained" in capsys.readouterr().out and out.is_file()
    assert main(argv) == 2  # exists: refused without --overwrite, the file kept
    assert "exists: pass --overwrite" in capsys.readouterr().err
    assert main([*argv[:-2], "--distortions", "lens"]) == 2
    assert "--distortions must name types" in capsys.readouterr().err


def test_weights_for_another_arch_are_refused_by_name(refs, tmp_path):
    out = pretrain_by_ranking(refs, tmp_path / "w.pt", SMALL, progress=False).path
    with pytest.raises(ValueError, match=r"are for resnet18, not resnet34: use arch resnet18"):
        build("resnet", arch="resnet34", pretrained=str(out))
    bare = tmp_path / "bare.pt"  # a state dict without the record: the shapes are compared
    torch.save(torch.load(out, weights_only=True)["state_dict"], bare)
    with pytest.raises(ValueError, match=r"pretrained weights do not fit this resnet50: .* is"):
        build("resnet", arch="resnet50", pretrained=str(bare))
