"""Non-finite is a failure, never a score, and broken models are refused before any attack: the
metric checks the tensors it is called on (float, finite, in [0, 1], with a hint for uint8 and
0-255 input) and keeps gradients with as_loss; certify refuses NaN images, an infinite sigma and
settings such as n=2.5 or an empty radius list; an audit refuses a module whose output has the
wrong shape or dtype, is NaN or constant, or has no gradient, and never reports a NaN SRCC
beside "all passed"."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import cprl_fast
from cprl_fast.audit import audit, check_auditable, diagnose
from cprl_fast.certify import certify


def test_the_metric_checks_the_tensors_it_is_called_on(tiny_run):
    metric = cprl_fast.create_metric(tiny_run / "best.pt")
    with pytest.raises(TypeError, match=r"x.float\(\) / 255"):
        metric(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="divide by 255"):
        metric(torch.full((1, 3, 32, 32), 200.0))
    with pytest.raises(ValueError, match="NaN or infinite"):
        metric(torch.full((1, 3, 32, 32), float("nan")))
    with pytest.raises(ValueError, match="H, W >= 1"):
        metric(torch.zeros(2, 3, 0, 32))
    empty = metric(torch.zeros(0, 3, 32, 32))
    assert empty.shape == (0,)
    one = metric(torch.rand(3, 40, 32))  # one image [3, H, W]
    assert one.shape == (1,)
    loss = cprl_fast.create_metric(tiny_run / "best.pt", as_loss=True)
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    loss(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_certify_refuses_bad_images_and_settings():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 1), nn.Sigmoid(), nn.Flatten(0))
    x = torch.rand(2, 3, 4, 4)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        certify(model, bad, 0.25, n=10, progress=False)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        certify(model, x * 3, 0.25, n=10, progress=False)
    for kwargs, message in (({"sigma": float("inf")}, "sigma must be a finite number > 0"),
                            ({"sigma": 2}, r"sigma must be at most 1 for images in \[0, 1\]"),
                            ({"n": 2.5}, "n .* must be an integer >= 1"),
                            ({"radius": ()}, "radius must hold at least one"),
                            ({"radius": (float("nan"),)}, "every radius must be finite"),
                            ({"batch_size": 0}, "batch_size must be an integer >= 1")):  # fmt: skip
        args = {"sigma": 0.25, "n": 10, **kwargs}
        with pytest.raises(ValueError, match=message):
            certify(model, x, progress=False, **args)


class Scores(nn.Module):
    """Mean brightness, then ``post``: a way to break the output."""

    def __init__(self, post=lambda s: s):
        super().__init__()
        self.post = post

    def forward(self, x):
        return self.post(x.mean(dim=(1, 2, 3)))


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 8, 8, generator=g)
    return torch.utils.data.TensorDataset(x, x.mean(dim=(1, 2, 3)))


@pytest.mark.parametrize("post,message", [
    (lambda s: s[:, None, None], r"shape \[N\] = \[8\]"),
    (lambda s: (s * 100).long(), "float scores"),
    (lambda s: s * float("nan"), "NaN or infinite scores"),
    (lambda s: torch.full_like(s, 0.5), "same score"),
    (lambda s: s.detach(), "no gradient"),
    (lambda s: (s, s), "must return a tensor"),
    # another scale: FGSM's squared error to labels in [0, 1] then pushes every score one way
    (lambda s: 100 * s, r"scores must be in \[0, 1\], higher is better .* got [0-9.]+ for image "
                        r"0 of the first batch: map them into \[0, 1\]"),
    (lambda s: s - 0.5, r"scores must be in \[0, 1\]"),
])  # fmt: skip
def test_an_audit_refuses_a_broken_model_before_any_attack(data, post, message):
    with pytest.raises((ValueError, TypeError), match=message) as err:
        audit(Scores(post), data, eps=(1 / 255,), attacks=("fgsm",), batch_size=8)
    assert "\n" not in str(err.value)


def test_an_audit_refuses_bad_images_and_settings(data):
    x = data.tensors[0].clone()
    x[3] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        check_auditable(Scores(), torch.utils.data.TensorDataset(x, x[:, 0, 0, 0]))
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        audit(Scores(), data, batch_size=0)
    with pytest.raises(ValueError, match="at least one budget"):
        audit(Scores(), data, eps=(), batch_size=8)
    # one result under two columns, or one row for two budgets: each is named once
    with pytest.raises(ValueError, match=r"eps must each be given once, got \['1/255', '1/255'\]"):
        audit(Scores(), data, eps=(1 / 255, 1 / 255), batch_size=8)
    with pytest.raises(ValueError, match="attacks must each be named once, got 'fgsm' 2 times"):
        audit(Scores(), data, eps=(1 / 255,), attacks=("fgsm", "pgd", "fgsm"), batch_size=8)

    class Unread(torch.utils.data.Dataset):  # no image is read before the suite is checked
        def __len__(self):
            return 8

        def __getitem__(self, k):
            raise AssertionError("an image was read")

    with pytest.raises(ValueError, match="attack 'transfer' needs a source model"):
        audit(Scores(), Unread(), eps=(1 / 255,), attacks=("fgsm", "transfer"), batch_size=8)
    # a zero gradient is gradient masking, for the diagnostics to catch: not refused
    check_auditable(Scores(lambda s: torch.round(s * 256) / 256 + 0 * s), data, 8)


def test_a_nan_srcc_never_sits_beside_all_checks_passed():
    labels = np.linspace(0, 1, 8)
    res = {"clean": {"srcc": 0.9, "srcc_ci": [0.7, 1.0], "labels": labels, "mse": 0.0},
           "fgsm": {"srcc": float("nan"), "mse": 0.1, "scores": np.zeros(8)},
           "worst": {"srcc": float("nan")}}  # fmt: skip
    checks = diagnose({1 / 255: res}, {"reflect10": {"srcc": 0.0}}, soft=False)
    failed = [c for c in checks if not c.passed]
    assert any(c.check == "metrics_finite" for c in failed)
    # an unbounded attack whose SRCC is undefined does not hide one that reached chance
    for order in (("reflect10", "pgd"), ("pgd", "reflect10")):
        unbounded = {k: {"srcc": {"reflect10": float("nan"), "pgd": -0.4}[k]} for k in order}
        (check,) = [c for c in diagnose({1 / 255: res}, unbounded, soft=False)
                    if c.check == "unbounded_reaches_chance"]  # fmt: skip
        assert check.passed and "-0.400" in check.detail


def test_a_model_that_ranks_in_reverse_fails_a_check(data):
    """A lower-is-better model (or one that learned the reverse) is audited, but its report
    never says all passed: the attacks push its scores the wrong way."""
    def checks(post):
        report = audit(Scores(post), data, eps=(1 / 255,), attacks=("fgsm",), batch_size=8)
        (check,) = [c for c in report.diagnostics if c.check == "clean_ranking_not_reversed"]
        return check

    assert checks(lambda s: s).passed  # the labels are the mean brightness: SRCC 1
    reversed_ = checks(lambda s: 1 - s)
    assert not reversed_.passed
    assert reversed_.detail.startswith("clean SRCC -1.000 [-1.000, -1.000]: the model ranks")


def test_a_device_or_fifo_is_refused_never_opened(tmp_path):
    import os

    from cprl_fast.images import read_image
    from cprl_fast.score import image_files

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file or folder"):
        image_files([fifo])  # opening it would block forever
    assert image_files([tmp_path]) == [fifo]  # inside a folder: listed, to fail when read
    with pytest.raises(OSError, match=r"pipe\.png is not a regular file"):
        read_image(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        image_files(["/dev/zero"])
