"""The CA module, the CPRL ResNet conversion, and the intervention switch."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torchvision
from op_testing import feature
from torchvision.models.resnet import BasicBlock

import cprl_fast
from cprl_fast import reference
from cprl_fast.models import convert_resnet, cprl_resnet, resnet_iqa
from cprl_fast.nn import CPRLActivation


def _saved(model: torch.nn.Module) -> bytes:
    """``torch.save(model)``'s bytes: the whole module, pickled."""
    buf = io.BytesIO()
    torch.save(model, buf)
    return buf.getvalue()


def _ca(channels=8, **kw) -> CPRLActivation:
    torch.manual_seed(0)
    return CPRLActivation(channels, **kw).eval()


class TestCPRLActivation:
    def test_modes_follow_spec(self):
        ca = _ca(8)
        f = feature((2, 8, 5, 5), seed=1)
        with torch.no_grad():
            _, m = reference.rank_mask(f, ca.b, return_mask=True)
            torch.testing.assert_close(ca(f), reference.rank_mask(f, ca.b))
            ca.set_mode("sf")
            t_phi = ca.fc_phi(f)
            torch.testing.assert_close(ca(f), reference.intervene(f, t_phi, m, "sf"))
            torch.testing.assert_close(
                ca(f), torch.relu(t_phi * (1 - m[..., None, None]) + f * m[..., None, None])
            )
            ca.set_mode("nc")
            t_xi = ca.fc_xi(f)
            torch.testing.assert_close(
                ca(f), torch.relu(t_xi * m[..., None, None] + f * (1 - m[..., None, None]))
            )

    def test_sf_keeps_masked_in_part_and_nc_the_masked_out_part(self):
        f = feature((2, 8, 4, 4), seed=2)
        keep_all = _ca(8, b=50.0)  # M == 1 exactly: every channel is masked in
        keep_none = _ca(8, b=-50.0)  # M == 0 exactly
        with torch.no_grad():
            keep_all.set_mode("sf")
            assert torch.equal(keep_all(f), f.relu())  # SF keeps the masked-in part exactly
            keep_none.set_mode("nc")
            assert torch.equal(keep_none(f), f.relu())  # NC keeps the masked-out part exactly
            keep_none.set_mode("sf")
            assert torch.equal(keep_none(f), keep_none.fc_phi(f).relu())  # all replaced by t

    def test_gradients_reach_b_phi_and_xi(self):
        ca = _ca(8).train()
        f = feature((2, 8, 4, 4), seed=3)
        for mode, net in (("sf", ca.fc_phi), ("nc", ca.fc_xi)):
            ca.zero_grad()
            ca.set_mode(mode)
            ca(f).square().sum().backward()
            assert ca.b.grad is not None and ca.b.grad != 0
            assert net[0].parametrizations.weight.original.grad.abs().sum() > 0

    def test_spectral_norm_at_most_one(self):
        ca = CPRLActivation(16).train()
        opt = torch.optim.SGD(ca.parameters(), lr=0.5)
        for mode in ("sf", "nc") * 10:
            ca.set_mode(mode)
            opt.zero_grad()
            ca(torch.randn(4, 16, 3, 3)).sum().backward()
            opt.step()
        ca.eval()
        for net in (ca.fc_phi, ca.fc_xi):
            w = net[0].weight.reshape(16, 16)
            assert torch.linalg.matrix_norm(w, ord=2) <= 1 + 1e-3

    @pytest.mark.parametrize("training", [False, True])
    def test_a_model_with_it_pickles_whole(self, training):
        """torch.save(model) of a network with CA modules (torch pickles no module with
        parametrizations, and the intervention networks' spectral norm is one): every mode
        gives the same output after, and which parameters train and which modules are in
        training mode are kept; a deep copy is as before."""
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), CPRLActivation(8))
        net.train(training)
        net[1].fc_xi[0].bias.requires_grad_(False)
        net[1].fc_phi.eval()  # modes may differ within one network
        back = torch.load(io.BytesIO(_saved(net)), weights_only=False)
        x = torch.rand(2, 3, 9, 9)
        for mode in ("normal", "sf", "nc"):  # in training mode, the power iteration runs too
            net[1].set_mode(mode), back[1].set_mode(mode)
            assert torch.equal(back(x), net(x)), mode
        assert list(back.state_dict()) == list(net.state_dict())
        assert [m.training for m in back.modules()] == [m.training for m in net.modules()]
        assert [p.requires_grad for p in back.parameters()] == \
            [p.requires_grad for p in net.parameters()]  # fmt: skip
        half = torch.load(io.BytesIO(_saved(copy.deepcopy(net).half())), weights_only=False)
        assert half[1].fc_phi[0].bias.dtype == torch.float16
        assert torch.equal(copy.deepcopy(net)(x), net(x))
        assert copy.copy(net[1]).fc_phi is net[1].fc_phi  # a shallow copy shares, as before

    def test_torch_fx_traces_it_in_every_mode(self):
        """torch.fx's symbolic tracing (torchvision's feature extraction) records the
        dispatcher's ops, which give the module's output and gradients; the shape check, Python
        control flow on a traced value, is left out of the graph."""
        from torchvision.models.feature_extraction import create_feature_extractor

        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), CPRLActivation(8)).eval()
        x = torch.rand(2, 3, 9, 9, requires_grad=True)
        for mode in ("normal", "sf", "nc"):
            net[1].set_mode(mode)
            graph = torch.fx.symbolic_trace(net)
            assert "torch.ops.cprl_fast" in graph.code
            got, want = graph(x), net(x)
            assert torch.equal(got, want), mode
            (g_got,) = torch.autograd.grad(got.sum(), x)
            (g_want,) = torch.autograd.grad(want.sum(), x)
            assert torch.equal(g_got, g_want), mode
        backbone = cprl_resnet("resnet18").eval().backbone
        features = create_feature_extractor(backbone, ["layer1"])
        image = torch.rand(1, 3, 32, 32)
        stem = backbone.maxpool(backbone.relu(backbone.bn1(backbone.conv1(image))))
        assert torch.equal(features(image)["layer1"], backbone.layer1(stem))

    def test_bad_input(self):
        with pytest.raises(ValueError, match=r"expects \[N, 8, H, W\], got \[2, 4, 3, 3\]"):
            _ca(8)(torch.randn(2, 4, 3, 3))
        with pytest.raises(ValueError, match="mode must be one of"):
            _ca(8).set_mode("do")
        assert "b=0.4" in repr(_ca(8))


class TestIntervention:
    def test_switches_and_restores(self):
        model = cprl_resnet("resnet18")
        cas = [m for m in model.modules() if isinstance(m, CPRLActivation)]
        cas[0].mode = "nc"
        with cprl_fast.intervention(model, "sf"):
            assert all(m.mode == "sf" for m in cas)
        assert [m.mode for m in cas] == ["nc", "normal", "normal", "normal"]

    def test_restores_after_an_error(self):
        model = cprl_resnet("resnet18")
        with pytest.raises(RuntimeError, match="boom"), cprl_fast.intervention(model, "nc"):
            raise RuntimeError("boom")
        assert all(m.mode == "normal" for m in model.modules() if isinstance(m, CPRLActivation))

    def test_needs_ca_modules(self):
        with pytest.raises(ValueError, match="no CPRLActivation"):
            with cprl_fast.intervention(torch.nn.Linear(2, 2), "sf"):
                pass


class TestCPRLResNet:
    @pytest.mark.parametrize(
        ("arch", "channels"),
        [("resnet18", [64, 128, 256, 512]), ("resnet50", [256, 512, 1024, 2048])],
    )
    def test_placement(self, arch, channels):
        model = cprl_resnet(arch)
        cas = [m.channels for m in model.modules() if isinstance(m, CPRLActivation)]
        assert cas == channels

    def test_only_the_final_activation_is_replaced(self):
        # With b = 50 every mask is exactly 1, so CA == ReLU: the converted network must then
        # compute exactly what torchvision's does.
        torch.manual_seed(0)
        plain = torchvision.models.resnet18(weights=None).eval()
        converted = copy.deepcopy(plain)
        names = convert_resnet(converted, "all", b=50.0)
        assert len(names) == 8
        converted.eval()
        x = torch.rand(2, 3, 64, 64)
        with torch.no_grad():
            torch.testing.assert_close(converted(x), plain(x), rtol=0, atol=0)
            converted.layer4[1].ca.b.fill_(0.0)  # now channels are masked: outputs differ
            assert not torch.allclose(converted(x), plain(x))

    def test_conversion_is_in_the_models_dtype_and_all_or_nothing(self):
        model = torchvision.models.resnet18(weights=None).double().eval()
        convert_resnet(model, ["layer4"])
        assert {p.dtype for p in model.parameters()} == {torch.float64}
        model.layer4[1].ca.set_mode("sf")  # its intervention network runs on float64 features
        assert model(torch.rand(1, 3, 32, 32, dtype=torch.float64)).dtype == torch.float64
        before = copy.deepcopy(model.state_dict())
        refused = {"already ends in a CA module": ["layer1", "layer4"],
                   "names block layer2.1 twice": ["layer2", "layer2.1"]}  # fmt: skip
        for match, placement in refused.items():
            with pytest.raises(ValueError, match=match):
                convert_resnet(model, placement)
            assert type(model.layer1[1]) is BasicBlock and type(model.layer2[1]) is BasicBlock
            assert model.state_dict().keys() == before.keys()

    def test_ca_ranks_pre_activation_features(self):
        torch.manual_seed(0)
        model = torchvision.models.resnet18(weights=None).eval()
        convert_resnet(model, ["layer2"])
        block = model.layer2[1]
        seen = {}
        block.ca.register_forward_hook(lambda m, inp, out: seen.setdefault("in", inp[0]))
        x = torch.randn(2, 64, 16, 16)
        with torch.no_grad():
            model.layer2(x)
            h = model.layer2[0](x)
            pre = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(h))))) + h
        torch.testing.assert_close(seen["in"], pre)
        assert (seen["in"] < 0).any()  # pre-activation: not yet rectified

    def test_state_dict_round_trip(self, tmp_path):
        torch.manual_seed(1)
        a = cprl_resnet("resnet18").eval()
        with torch.no_grad():
            for m in a.modules():
                if isinstance(m, CPRLActivation):
                    m.b.fill_(0.3)
        torch.save(a.state_dict(), tmp_path / "m.pt")
        b = cprl_resnet("resnet18").eval()
        b.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
        x = torch.rand(2, 3, 64, 64)
        with torch.no_grad():
            torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
            with cprl_fast.intervention(a, "sf"), cprl_fast.intervention(b, "sf"):
                torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)

    def test_pretrained_from_local_file(self, tmp_path):
        torch.manual_seed(2)
        tv = torchvision.models.resnet18(weights=None)
        torch.save(tv.state_dict(), tmp_path / "resnet18.pth")
        model = cprl_resnet("resnet18", pretrained=tmp_path / "resnet18.pth")
        torch.testing.assert_close(model.backbone.conv1.weight, tv.conv1.weight)
        torch.testing.assert_close(model.backbone.layer4[1].conv2.weight, tv.layer4[1].conv2.weight)
        with pytest.raises(FileNotFoundError, match="pretrained weights file not found"):
            cprl_resnet("resnet18", pretrained=tmp_path / "nope.pth")

    def test_scores_in_unit_interval(self):
        for model in (cprl_resnet("resnet18"), resnet_iqa("resnet18")):
            y = model(torch.rand(3, 3, 64, 64))
            assert y.shape == (3,) and ((0 < y) & (y < 1)).all()

    def test_bad_arguments(self):
        with pytest.raises(ValueError, match="arch must be one of"):
            cprl_resnet("resnet7")
        with pytest.raises(ValueError, match="placement entry 'layer9'"):
            cprl_resnet("resnet18", placement=["layer9"])
        with pytest.raises(ValueError, match="already ends in a CA module"):
            convert_resnet(cprl_resnet("resnet18").backbone)
        with pytest.raises(ValueError, match=r"images must have shape \[N, 3, H, W\]"):
            cprl_resnet("resnet18")(torch.rand(2, 1, 32, 32))


def test_imagenet_weights_come_from_torchs_cache_offline_named(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = torchvision.models.ResNet18_Weights.DEFAULT
    cached = tmp_path / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[-1]

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(FileNotFoundError, match=f"put {weights.url} at {cached}"):
        cprl_resnet("resnet18", pretrained="imagenet")
    torch.manual_seed(3)
    state = torchvision.models.resnet18().state_dict()
    cached.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, cached)
    for build in (cprl_resnet, resnet_iqa):
        model = build("resnet18", pretrained="imagenet")
        got = model.backbone.state_dict()
        assert torch.equal(got["conv1.weight"], state["conv1.weight"])
        assert torch.equal(got["layer4.1.bn2.running_var"], state["layer4.1.bn2.running_var"])
