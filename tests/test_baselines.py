"""The baselines: the registry, shapes, training steps, and each model's defining behaviour."""

from __future__ import annotations

import importlib

import pytest
import torch

from cprl_fast.models import MODELS, build
from cprl_fast.models.baselines import LWTA, DenoisingBlock
from cprl_fast.models.dbcnn import SCNN, distortion_batch, pretrain_scnn
from cprl_fast.models.registry import default_objective
from cprl_fast.train.objectives import emd, gaussian_target, gradient_penalty, make_objective

NAMES = ["resnet", "cprl", "lwta", "denoise", "sat", "nt", "nima", "dbcnn"]


def _batch(seed=0, n=4, size=32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g), torch.rand(n, generator=g)


def _loss(model, x, y, name):
    """The training loss of the model's own objective (for the PNS game: its regression part)."""
    return make_objective(default_objective(name)).loss(model, model, x, y)


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_backward(name):
    torch.manual_seed(0)
    model = build(name, arch="resnet18").train()
    x, y = _batch()
    s = model(x)
    assert s.shape == (4,) and ((s >= 0) & (s <= 1)).all()
    _loss(model, x, y, name).backward()
    assert model.head.weight.grad is not None and model.head.weight.grad.abs().sum() > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in NAMES if n != "cprl"])
def test_a_few_steps_lower_the_loss(name):
    torch.manual_seed(0)
    model = build(name, arch="resnet18").train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = _batch(1)
    with torch.no_grad():
        model.eval()
        before = torch.mean((model(x) - y) ** 2)
        model.train()
    for _ in range(8):
        opt.zero_grad()
        _loss(model, x, y, name).backward()
        opt.step()
    with torch.no_grad():
        model.eval()
        after = torch.mean((model(x) - y) ** 2)
    assert after < before


def test_registry_names_and_errors():
    assert set(NAMES) <= set(MODELS)
    with pytest.raises(ValueError, match="did you mean 'nima'"):
        build("nimа2")  # noqa: RUF001
    with pytest.raises(ValueError, match="did you mean 'lwta'"):
        build("lwtb")


def test_lwta_one_winner_per_group_and_stochastic_in_training():
    act = LWTA(2)
    x = torch.randn(3, 8, 4, 4)
    act.eval()
    y = act(x).view(3, 4, 2, 4, 4)
    groups = x.view(3, 4, 2, 4, 4)
    winners = (y != 0).sum(dim=2)
    assert torch.all(winners == 1)
    assert torch.equal(y.sum(dim=2), groups.max(dim=2).values)  # the strongest unit wins
    act.train()
    torch.manual_seed(0)
    a, b = act(x), act(x)
    assert not torch.equal(a, b)
    assert torch.all((a.view(3, 4, 2, 4, 4) != 0).sum(dim=2) == 1)  # still one winner forward


def test_nima_distribution_and_emd():
    torch.manual_seed(0)
    model = build("nima", arch="resnet18").eval()
    p = model.distribution(torch.rand(3, 3, 32, 32))
    torch.testing.assert_close(p.sum(dim=1), torch.ones(3))
    assert torch.all(emd(p, p) == 0)
    q = gaussian_target(model.centres, torch.tensor([0.2, 0.5, 0.9]), 0.1)
    torch.testing.assert_close(q.sum(dim=1), torch.ones(3))
    assert torch.all(emd(p, q) > 0)
    torch.testing.assert_close(q @ model.centres, torch.tensor([0.2, 0.5, 0.9]), atol=0.03, rtol=0)


def test_denoising_block_is_the_identity_at_init():
    block = DenoisingBlock(16).train()
    x = torch.randn(2, 16, 5, 5)
    torch.testing.assert_close(block(x), x, rtol=0, atol=0)


@pytest.mark.slow
def test_sat_trains_on_adversarial_batches():
    torch.manual_seed(0)
    model = build("sat", arch="resnet18").train()
    objective = make_objective("sat", {"eps": 2 / 255})
    x, y = _batch(2)
    x_adv = objective.adversarial_batch(model, x, y)
    assert not torch.equal(x_adv, x) and (x_adv - x).abs().max() <= 2 / 255 + 1e-6
    assert model.training  # the attack ran in eval mode and gave the mode back
    assert not any(isinstance(m, torch.nn.ReLU) for m in model.modules())


def test_sat_refuses_a_budget_in_grey_levels():
    with pytest.raises(ValueError, match=r"eps must be at most 1 .* 8 grey levels is 8/255"):
        make_objective("sat", {"eps": 8.0})


def test_nt_penalty_is_zero_for_a_constant_model():
    torch.manual_seed(0)
    model = build("nt", arch="resnet18").train()
    x, y = _batch(3)
    assert default_objective("nt") == "nt"
    assert gradient_penalty(model, x, y) > 0
    with torch.no_grad():
        model.head.weight.zero_()  # the score no longer depends on the image
    assert gradient_penalty(model, x, y) == 0


@pytest.mark.slow
def test_dbcnn_distortion_classes_and_scnn_pretraining():
    x1, l1 = distortion_batch(12, 32, torch.Generator().manual_seed(4))
    x2, l2 = distortion_batch(12, 32, torch.Generator().manual_seed(4))
    assert torch.equal(x1, x2) and torch.equal(l1, l2)  # seeded
    assert x1.shape == (12, 3, 32, 32) and l1.min() >= 0 and l1.max() <= 25
    torch.manual_seed(0)
    scnn = SCNN()
    losses = pretrain_scnn(scnn, steps=40, batch=16, size=32, lr=3e-3)
    assert sum(losses[-8:]) / 8 < sum(losses[:8]) / 8


def test_dbcnn_bilinear_features_are_normalised():
    torch.manual_seed(0)
    model = build("dbcnn").eval()
    z = model.bilinear(torch.rand(2, 3, 32, 32))
    assert z.shape == (2, 128 * 512)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(2))


@pytest.mark.slow  # 7 s: four DBCNNs, each with VGG-16's classifier made and dropped
def test_dbcnn_loads_every_vgg_weight_it_is_given_or_names_the_file(tmp_path, monkeypatch):
    """ImageNet weights (torchvision's, from its cache) and a local VGG-16 state dict both
    reach the VGG stream (ImageNet's were once read and dropped); a file of another layout or
    shape is refused by name rather than leaving VGG-16 at random."""
    import torchvision

    torch.manual_seed(0)
    features = torchvision.models.vgg16().features.state_dict()  # the classifier goes unread
    vgg = {f"features.{k}": v for k, v in features.items()}
    # the module, not the function cprl_fast.models exports under its name
    cprl_resnet = importlib.import_module("cprl_fast.models.cprl_resnet")
    monkeypatch.setattr(cprl_resnet, "imagenet_state", lambda arch: vgg)
    from_cache = build("dbcnn", pretrained="imagenet")
    torch.save(vgg, tmp_path / "vgg16.pt")
    from_file = build("dbcnn", pretrained=str(tmp_path / "vgg16.pt"))
    for model in (from_cache, from_file):
        torch.testing.assert_close(model.vgg[28].weight, vgg["features.28.weight"], rtol=0, atol=0)
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "resnet18.pt")
    with pytest.raises(ValueError, match=r"pretrained weights .*resnet18\.pt are not VGG-16 "
                       r"weights DBCNN can use: it lacks features\.0\.weight \(26 of"):  # fmt: skip
        build("dbcnn", pretrained=str(tmp_path / "resnet18.pt"))
    vgg["features.28.weight"] = vgg["features.28.weight"][:256]
    torch.save(vgg, tmp_path / "narrow.pt")
    with pytest.raises(ValueError, match=r"its features\.28\.weight is not a tensor of shape "
                       r"\[512, 512, 3, 3\]"):  # fmt: skip
        build("dbcnn", pretrained=str(tmp_path / "narrow.pt"))
