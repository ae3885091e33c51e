"""cprl_fast.train.schedule and the run settings of the native-crop recipe: ``onecycle`` is
torch's OneCycleLR step by step (learning rate and beta1), the trainer applies it over
``epochs``, and ``train_crop`` / ``hflip`` / ``schedule`` are checked by name."""

from __future__ import annotations

import math

import pytest
import torch

from cprl_fast.data.transforms import train_transform
from cprl_fast.train import TrainConfig
from cprl_fast.train.schedule import onecycle


@pytest.mark.parametrize("total", [2, 6, 11, 37, 612])
def test_onecycle_is_torchs_scheduler_step_by_step(total):
    opt = torch.optim.AdamW(torch.nn.Linear(2, 1).parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 1e-3, total_steps=total, pct_start=0.1)
    for step in range(total):
        lr, beta1 = onecycle(step, total, 1e-3)
        group = opt.param_groups[0]
        assert math.isclose(lr, group["lr"], rel_tol=1e-9), step
        assert math.isclose(beta1, group["betas"][0], rel_tol=1e-9), step
        opt.step()
        if step < total - 1:
            sched.step()


def test_onecycle_has_no_zero_division_where_torchs_has():
    assert onecycle(0, 10, 1e-3) == (1e-3, 0.85)
    assert onecycle(9, 10, 1e-3)[0] == pytest.approx(1e-3 / 25e4)


def test_the_trainer_sets_the_schedules_rate_before_each_step(tmp_path, monkeypatch):
    from cprl_fast.train import Trainer

    data = torch.utils.data.TensorDataset(torch.rand(8, 3, 32, 32), torch.rand(8))
    cfg = TrainConfig(model="resnet", model_options={"arch": "resnet18"}, image_size=32,
                      batch_size=4, lr=1e-3, epochs=3, schedule="onecycle",
                      out_dir=str(tmp_path))  # fmt: skip
    trainer = Trainer(cfg, data)
    seen = []
    original = trainer.train_step

    def step(x, y):
        seen.append(trainer.opts["theta"].param_groups[0]["lr"])
        return original(x, y)

    monkeypatch.setattr(trainer, "train_step", step)
    trainer.fit()
    assert seen == pytest.approx([onecycle(k, 6, 1e-3)[0] for k in range(6)], rel=1e-12)


def test_train_crop_and_hflip_shape_the_training_crops():
    from PIL import Image

    img = Image.new("RGB", (300, 256), (10, 20, 30))
    img.putpixel((0, 0), (255, 255, 255))
    out = train_transform(256, crop=64)(img)
    assert out.shape == (3, 64, 64) and out.dtype == torch.float32
    torch.manual_seed(0)
    strip = Image.new("RGB", (64, 64))
    strip.paste((255, 0, 0), (0, 0, 1, 64))  # a red first column
    flipped = [train_transform(64, hflip=True)(strip)[0, 0, -1].item() for _ in range(40)]
    assert 0 < sum(flipped) < 40  # the column moved to the end in some draws, not in all


@pytest.mark.parametrize(("key", "value", "message"), [
    ("train_crop", 512, r"train_crop must be <= image_size \(320\), got 512"),
    ("train_crop", 0, "train_crop must be >= 1"),
    ("schedule", "cosine", "schedule must be one of constant, onecycle, got 'cosine'"),
    ("hflip", "yes", "hflip must be true or false"),
])  # fmt: skip
def test_the_recipes_settings_are_checked_by_name(key, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict({key: value})
