"""Attacks on a small quality model trained in the test: damage, invariants, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from data_fixtures import shared_builtin_root
from torch import nn
from torchvision.transforms import v2

from cprl_fast import attacks, metrics, ops
from cprl_fast.attacks.common import input_grad
from cprl_fast.data import load_dataset
from cprl_fast.models import cprl_resnet


class TinyIQA(nn.Module):
    """A small CNN regressor: images [N, 3, 32, 32] in [0, 1] -> scores in (0, 1)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 1),
        )  # fmt: skip

    def forward(self, x):
        return torch.sigmoid(self.net(x)).squeeze(1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = shared_builtin_root(tmp_path_factory)
    # 40 x 40 centre crops at full resolution, where the distortions are visible
    crop = v2.Compose([v2.ToImage(), v2.CenterCrop(40), v2.ToDtype(torch.float32, scale=True)])
    data = load_dataset("builtin", root, split="all", transform=crop)
    torch.manual_seed(0)
    model = TinyIQA()
    model.net[1].eval()  # BatchNorm as a fixed affine map: no train/eval mismatch to learn around
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x_all, y_all = next(iter(torch.utils.data.DataLoader(data, batch_size=len(data))))
    for _ in range(80):
        for idx in torch.randperm(len(data)).split(32):
            opt.zero_grad()
            torch.mean((model(x_all[idx]) - y_all[idx]) ** 2).backward()
            opt.step()
    model.eval()
    pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:64]
    return model, x_all[pick], y_all[pick]


def _scores(model, x):
    with torch.no_grad():
        return model(x).numpy()


@pytest.mark.slow
def test_the_model_learned(trained):
    model, x, y = trained
    assert metrics.srcc(_scores(model, x), y) > 0.5


@pytest.mark.slow
def test_damage_grows_with_eps(trained):
    model, x, y = trained
    clean = _scores(model, x)
    moves = [
        metrics.score_change(clean, _scores(model, attacks.pgd(model, x, y, eps=e, steps=5))).mean()
        for e in (0.5 / 255, 2 / 255, 8 / 255)
    ]
    assert moves[0] < moves[1] < moves[2]


@pytest.mark.slow
def test_large_eps_breaks_an_undefended_model(trained):
    model, x, y = trained
    clean = metrics.srcc(_scores(model, x), y)
    attacked = metrics.srcc(_scores(model, attacks.pgd(model, x, y, eps=32 / 255, steps=10)), y)
    assert attacked < clean - 0.5


@pytest.mark.slow
def test_pgd_hurts_at_least_as_much_as_fgsm(trained):
    model, x, y = trained
    eps = 2 / 255
    g = torch.Generator().manual_seed(0)
    loss_fgsm = np.mean((_scores(model, attacks.fgsm(model, x, y, eps=eps)) - y.numpy()) ** 2)
    x_pgd = attacks.pgd(model, x, y, eps=eps, steps=10, restarts=2, generator=g)
    loss_pgd = np.mean((_scores(model, x_pgd) - y.numpy()) ** 2)
    assert loss_pgd >= loss_fgsm


@pytest.mark.slow
@pytest.mark.parametrize("steps", [1, 10])
def test_score_reflection_crosses_towards_the_other_side(trained, steps):
    model, x, _y = trained
    clean = _scores(model, x)
    adv = _scores(model, attacks.score_reflection(model, x, torch.from_numpy(clean), eps=4 / 255,
                                                  steps=steps))  # fmt: skip
    away = np.where(clean > 0.5, adv < clean, adv > clean)
    assert away.mean() >= 0.95


#: every attack at 3/255, small budgets: (model, x, y, generator) -> x_adv
SMALL_ATTACKS = {
    "fgsm": lambda m, x, y, g: attacks.fgsm(m, x, y, eps=3 / 255),
    "pgd": lambda m, x, y, g: attacks.pgd(m, x, y, eps=3 / 255, steps=3, restarts=2, generator=g),
    "reflection": lambda m, x, y, g: attacks.score_reflection(m, x, y, eps=3 / 255, steps=3),
    "square": lambda m, x, y, g: attacks.square(m, x, y, eps=3 / 255, queries=30, generator=g),
    "rank": lambda m, x, y, g: attacks.rank_pgd(m, x, y, eps=3 / 255, steps=3, restarts=2,
                                                generator=g),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("attack", SMALL_ATTACKS.values(), ids=SMALL_ATTACKS.keys())
def test_invariants(trained, attack):
    model, x, y = trained
    model.train()
    for p in model.parameters():
        p.grad = None
    model.net[-1].weight.grad = torch.ones_like(model.net[-1].weight)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x_adv = attack(model, x, y, torch.Generator().manual_seed(1))
    assert (x_adv - x).abs().max() <= 3 / 255 + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert model.training and model.net[1].training  # mode restored, submodules too
    assert torch.equal(model.net[-1].weight.grad, torch.ones_like(model.net[-1].weight))
    assert all(p.grad is None for p in list(model.parameters())[:-2])
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics untouched
    x_again = attack(model, x, y, torch.Generator().manual_seed(1))
    assert torch.equal(x_adv, x_again)
    model.eval()


class Brightness(nn.Module):
    """Scores an image by a steep sigmoid of its mean brightness."""

    def forward(self, x):
        return torch.sigmoid(6 * (x.mean(dim=(1, 2, 3)) - 0.5))


def test_the_rank_attack_lowers_srcc_where_the_score_attack_cannot():
    """Labels = brightness, scores a steep sigmoid of it: every score is already further from
    0.5 than its label, so the per-image squared-error attack pushes good images up and bad
    ones down, widening the scale and keeping the order (SRCC stays 1); the rank-order attack
    attacks the order itself."""
    g = torch.Generator().manual_seed(0)
    y = torch.linspace(0.45, 0.55, 32)  # 8/255 moves a mean across about ten neighbours
    x = (y[:, None, None, None] + 0.01 * torch.randn(32, 3, 8, 8, generator=g)).clamp(0, 1)
    model, eps = Brightness(), 8 / 255
    clean = metrics.srcc(_scores(model, x), y)
    by_mse = metrics.srcc(_scores(model, attacks.pgd(model, x, y, eps=eps, steps=10,
                                                     generator=g)), y)  # fmt: skip
    by_rank = metrics.srcc(_scores(model, attacks.rank_pgd(model, x, y, eps=eps, steps=10,
                                                           generator=g)), y)  # fmt: skip
    assert clean > 0.99 and by_mse > 0.99, (clean, by_mse)
    assert by_rank < 0.7, by_rank


@pytest.mark.slow
def test_the_rank_attack_on_a_trained_model(trained):
    model, x, y = trained
    eps, g = 2 / 255, torch.Generator().manual_seed(0)
    clean = metrics.srcc(_scores(model, x), y)
    by_rank = metrics.srcc(_scores(model, attacks.rank_pgd(model, x, y, eps=eps, steps=10,
                                                           generator=g)), y)  # fmt: skip
    assert by_rank < clean - 0.1, (clean, by_rank)


@pytest.mark.parametrize("attack", SMALL_ATTACKS.values(), ids=SMALL_ATTACKS.keys())
def test_an_attack_reads_nothing_back_to_the_host(attack):
    """Issue 25: on a GPU a read waits for every pass queued before it; the attacks keep their
    choices (the best restart, the temperature, the kept queries) on the device."""
    from host_reads import HostReads

    torch.manual_seed(0)
    model = TinyIQA().eval()
    x = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    y = torch.linspace(0.1, 0.9, 6)
    with HostReads() as mode:
        attack(model, x, y, torch.Generator().manual_seed(1))
    assert mode.reads == []


def test_soft_srcc_approaches_srcc():
    # scores 1/50 apart, so that tau = 1e-6 separates every pair (unseeded uniform draws came
    # within 1e-6 of each other about once in 40 runs and made this test flaky)
    g = torch.Generator().manual_seed(0)
    s = torch.randperm(50, generator=g).to(torch.float64) / 50
    t = torch.rand(50, generator=g, dtype=torch.float64)
    hard = metrics.srcc(s.numpy(), t.numpy())
    assert abs(float(attacks.soft_srcc(s, t, 1e-6)) - hard) < 1e-9
    assert abs(float(attacks.soft_srcc(s, t, 0.05)) - hard) < 0.2


@pytest.mark.slow
def test_seeds_differ(trained):
    model, x, y = trained
    a = attacks.pgd(model, x, y, eps=2 / 255, steps=2, generator=torch.Generator().manual_seed(1))
    b = attacks.pgd(model, x, y, eps=2 / 255, steps=2, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(a, b)


@pytest.mark.slow
def test_square_raises_the_loss(trained):
    model, x, y = trained
    clean = np.mean((_scores(model, x) - y.numpy()) ** 2)
    x_sq = attacks.square(model, x, y, eps=8 / 255, queries=100,
                          generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert np.mean((_scores(model, x_sq) - y.numpy()) ** 2) > clean


def test_square_draws_the_same_numbers_however_many_queries_it_draws_at_once(monkeypatch):
    """Square draws its random numbers in blocks of queries (one copy to the device per block):
    the blocks' size changes nothing, across block boundaries included, and the per-query
    order is the one a draw per query would give (stripes; then rows, columns, signs)."""
    from cprl_fast.attacks import masking

    torch.manual_seed(0)
    model = TinyIQA().eval()
    x = torch.rand(3, 3, 12, 10, generator=torch.Generator().manual_seed(1))

    def run(block):
        monkeypatch.setattr(masking, "SQUARE_DRAW_QUERIES", block)
        return attacks.square(model, x, eps=4 / 255, queries=23,
                              generator=torch.Generator().manual_seed(2))  # fmt: skip

    one = run(1)
    assert torch.equal(run(5), one) and torch.equal(run(256), one)
    assert not torch.equal(one, x)


@pytest.mark.slow
def test_eot_averages_gradients(trained):
    model, x, y = trained
    torch.testing.assert_close(attacks.fgsm(model, x, y, eps=2 / 255, eot=3),
                               attacks.fgsm(model, x, y, eps=2 / 255))  # fmt: skip


def test_soft_rank_surrogate_on_cprl():
    torch.manual_seed(0)
    model = cprl_resnet("resnet18").eval()
    x = torch.rand(2, 3, 32, 32)
    cas = [m for m in model.modules() if hasattr(m, "rank")]
    with attacks.soft_rank(model, tau=0.05):
        assert all(m.rank == "soft" for m in cas)
        x_adv = attacks.pgd(
            model, x, eps=4 / 255, steps=2, generator=torch.Generator().manual_seed(0)
        )
    assert all(m.rank == "hard" for m in cas)
    assert (x_adv - x).abs().max() <= 4 / 255 + 1e-6 and not torch.equal(x_adv, x)
    with pytest.raises(ValueError, match="no CPRLActivation"), attacks.soft_rank(nn.Linear(2, 2)):
        pass


def test_an_attack_that_could_not_move_the_images_is_refused():
    # no labels: the targets are the model's own clean scores, where the squared error and its
    # gradient are exactly 0, so FGSM (and PGD without a random start) would return x unchanged
    torch.manual_seed(0)
    model = cprl_resnet("resnet18").eval()
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match="fgsm needs target scores y"):
        attacks.fgsm(model, x, eps=2 / 255)
    with pytest.raises(ValueError, match="pgd needs target scores y"):
        attacks.pgd(model, x, eps=2 / 255, steps=1, random_start=False)
    # what moves without labels still runs: a random start, another loss, labels given
    g = torch.Generator().manual_seed(0)
    for x_adv in (attacks.pgd(model, x, eps=2 / 255, steps=1, generator=g),
                  attacks.fgsm(model, x, eps=2 / 255, loss=attacks.reflection_loss),
                  attacks.fgsm(model, x, torch.tensor([0.1, 0.9]), eps=2 / 255)):  # fmt: skip
        assert 0 < (x_adv - x).abs().max() <= 2 / 255 + 1e-6


def test_robustness_score():
    clean = np.array([0.9, 0.2])
    attacked = np.array([0.8, 0.2])
    want = np.mean([np.log10(0.9 / (0.1 + 1e-6)), np.log10(0.8 / 1e-6)])
    assert metrics.robustness(clean, attacked) == pytest.approx(want)
    np.testing.assert_allclose(metrics.score_change(clean, attacked), [0.1, 0.0], atol=1e-12)


@pytest.mark.slow
def test_bad_arguments(trained):
    model, x, y = trained
    with pytest.raises(ValueError, match="eps must be finite and >= 0"):
        attacks.pgd(model, x, y, eps=-1)
    with pytest.raises(ValueError, match=r"x must be images \[N, C, H, W\]"):
        attacks.fgsm(model, x[0], y)
    with pytest.raises(ValueError, match=r"y must have shape"):
        attacks.fgsm(model, x, y[:3])


class _NoBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        raise AssertionError("the transfer attack read the target's gradient")


def test_transfer_crafts_on_the_source_only():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 8, 8, generator=g)
    y = torch.rand(6, generator=g)
    source = nn.Sequential(nn.Flatten(), nn.Linear(192, 1), nn.Flatten(0))
    target = nn.Sequential(nn.Flatten(), nn.Linear(192, 1), nn.Flatten(0))
    guarded = nn.Sequential(_Apply(_NoBackward), target)
    adv = attacks.transfer(guarded, x, y, eps=4 / 255, source=source)
    assert torch.equal(adv, attacks.score_reflection(source, x, y, eps=4 / 255, steps=10))
    assert (adv - x).abs().max() <= 4 / 255 + 1e-7 and not torch.equal(adv, x)
    with pytest.raises(ValueError, match="'transfer' needs a source model"):
        attacks.transfer(guarded, x, y, eps=4 / 255)
    with pytest.raises(ValueError, match="'transfer' needs a source model"):
        from cprl_fast.evaluate import evaluate

        evaluate(guarded, torch.utils.data.TensorDataset(x, y), ["fgsm", "transfer"])


class _Apply(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn.apply(x)


class TestGraphedPGD:
    """The attack loop captured in a CUDA graph (attacks.GraphedPGD): the GPU run checks it
    against the eager loop; here, only what it refuses."""

    def _model(self):
        torch.manual_seed(0)
        return cprl_resnet("resnet18", placement="last")

    def test_needs_cuda_images(self):
        with pytest.raises(ValueError, match="GraphedPGD needs CUDA images"):
            attacks.GraphedPGD(self._model(), torch.rand(2, 3, 32, 32), 1 / 255)

    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (a CUDA graph)")
    def test_matches_the_eager_loop_and_refuses_what_it_was_not_captured_for(self):
        model = self._model().cuda().eval()
        x = torch.rand(4, 3, 32, 32, device="cuda")
        y = torch.rand(4, device="cuda")  # labels: at the model's own scores the gradient is 0
        graphed = attacks.GraphedPGD(model, x, 2 / 255, steps=5)
        want = x.clone()  # the same five steps, eager
        for _ in range(5):
            g = input_grad(model, want, y, attacks.mse_loss)
            ops.attack_step_(want, g, x, 2 / 255 / 4, 2 / 255)
        got = graphed(x, y)
        assert (got - x).abs().max() <= 2 / 255 + 1e-6 and (got - x).abs().max() > 1 / 255
        # a few pixels may take the other sign where a gradient is near 0 (sums' order)
        assert ((got - want).abs() > 1e-6).float().mean() < 0.01
        with pytest.raises(ValueError, match="GraphedPGD needs target scores y"):
            graphed(x)
        with pytest.raises(ValueError, match="captured for"):
            graphed(x[:2], y[:2])
        model.load_state_dict({k: v.clone() for k, v in model.state_dict().items()}, assign=True)
        with pytest.raises(RuntimeError, match="parameters moved"):
            graphed(x, y)
