"""cprl_fast.models.inputs: the local contrast normalisation against its formula, the tiles
that cover an image, and a ``patch`` model scoring an image as the mean of its tiles' scores."""

from __future__ import annotations

import pytest
import torch

from cprl_fast.models import build
from cprl_fast.models.inputs import LocalContrastNorm, tile_starts, tiles


def test_lcn_is_the_local_mean_and_std_over_the_window_inside_the_image():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 11, 9, dtype=torch.float64)
    out = LocalContrastNorm(k=5, c=0.02)(x)
    i, j = 0, 7  # a corner: the window is cut by the border, padding is not counted
    window = x[:, :, max(i - 2, 0) : i + 3, max(j - 2, 0) : j + 3]
    mean = window.mean((-2, -1))
    std = window.var((-2, -1), unbiased=False).sqrt()
    torch.testing.assert_close(out[:, :, i, j], (x[:, :, i, j] - mean) / (std + 0.02))
    flat = torch.full((1, 3, 8, 8), 0.7, dtype=torch.float64)  # no local structure: zero
    assert LocalContrastNorm()(flat).abs().max() < 1e-6


def test_lcn_gradients_are_finite_on_flat_and_saturated_regions():
    # a window of equal values has variance exactly 0, where sqrt's derivative is infinite:
    # the input gradient (attacks) and the gradient of the input-gradient norm (NT's penalty,
    # a double backward) must stay finite there
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32)
    x[:, :, :16, :16] = 1.0  # saturated
    x[:, :, 16:, 16:] = 0.0
    x.requires_grad_(True)
    model = build("resnet", arch="resnet18", input_norm="lcn", patch=16).eval()
    (g,) = torch.autograd.grad(model(x).sum(), x, create_graph=True)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    penalty = g.pow(2).sum()
    penalty.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(v).all() for v in grads)
    # the forward is the formula's: sqrt of the clamped variance
    y = torch.rand(1, 3, 9, 9, dtype=torch.float64)
    y[..., :5, :5] = 0.5
    k = LocalContrastNorm(k=3)
    mean = torch.nn.functional.avg_pool2d(y, 3, 1, 1, count_include_pad=False)
    square = torch.nn.functional.avg_pool2d(y * y, 3, 1, 1, count_include_pad=False)
    expected = (y - mean) / ((square - mean * mean).clamp(min=0).sqrt() + k.c)
    assert torch.equal(k(y), expected)


@pytest.mark.parametrize(("length", "size", "starts"), [
    (256, 64, [0, 64, 128, 192]), (100, 64, [0, 36]), (64, 64, [0]), (40, 64, [0]),
    (130, 64, [0, 33, 66]),
])  # fmt: skip
def test_tiles_cover_the_image_evenly(length, size, starts):
    assert tile_starts(length, size) == starts
    covered = set()
    for s in starts:
        covered |= set(range(s, min(s + size, length)))
    assert covered == set(range(length))


def test_tiles_are_the_image_crops_in_row_order():
    x = torch.arange(2 * 1 * 6 * 4, dtype=torch.float32).view(2, 1, 6, 4)
    t = tiles(x, 3)  # rows 0, 3; columns 0, 1 (overlapping)
    assert t.shape == (2 * 4, 1, 3, 3)
    torch.testing.assert_close(t[1], x[0, :, 0:3, 1:4])
    torch.testing.assert_close(t[4 + 2], x[1, :, 3:6, 0:3])


def test_a_patch_model_scores_the_mean_of_its_tiles():
    torch.manual_seed(0)
    model = build("resnet", arch="resnet18", input_norm="lcn", patch=32).eval()
    x = torch.rand(2, 3, 64, 48)
    with torch.no_grad():
        whole = model(x)
        by_tile = torch.stack([model.score(x[..., i : i + 32, j : j + 32])
                               for i in (0, 32) for j in (0, 16)], 1).mean(1)  # fmt: skip
        small = torch.rand(3, 3, 32, 20)
        torch.testing.assert_close(model(small), model.score(small))  # no larger than a tile
    torch.testing.assert_close(whole, by_tile)
    x.requires_grad_(True)
    model(x).sum().backward()  # attacks read the gradient through the tiling
    assert x.grad.abs().sum() > 0


def test_lcn_and_patch_reach_every_resnet_family_model():
    x = torch.rand(1, 3, 64, 64)
    for name in ("resnet", "cprl", "lwta", "denoise", "sat", "nt", "nima"):
        model = build(name, arch="resnet18", input_norm="lcn", patch=32).eval()
        assert model.lcn is not None and model.patch == 32
        with torch.no_grad():
            assert model(x).shape == (1,)


def test_the_prefix_of_a_patch_model_refuses_images_larger_than_a_tile():
    model = build("cprl", arch="resnet18", input_norm="lcn", patch=32).eval()
    crop = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.suffix(model.prefix(crop)), model(crop))
    with pytest.raises(ValueError, match=r"patch=32 px.*train_crop <= patch"):
        model.prefix(torch.rand(1, 3, 64, 64))


@pytest.mark.parametrize(("options", "message"), [
    ({"input_norm": "zca"}, "input_norm must be one of imagenet, lcn, got 'zca'"),
    ({"patch": 8}, r"patch must be an integer in \[16, 4096\], got 8"),
    ({"patch": 32.0}, r"patch must be an integer in \[16, 4096\], got 32.0"),
])  # fmt: skip
def test_bad_input_options_are_refused_by_name(options, message):
    with pytest.raises(ValueError, match=message):
        build("resnet", arch="resnet18", **options)
