"""The PNS game's steps, the trainer, exact resume, DDP against one process, and the CLI."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest
import torch
from data_fixtures import shared_builtin_root
from host_reads import HostReads

from cprl_fast.data import load_dataset
from cprl_fast.models import cprl_resnet
from cprl_fast.nn import intervention
from cprl_fast.train import TrainConfig, Trainer, build_optimizers, param_groups
from cprl_fast.train.pns import (
    fast_step,
    intervention_net_step,
    theta_intervention_step,
    theta_regression_step,
)

SMALL = {"model_options": {"arch": "resnet18"}, "image_size": 32, "batch_size": 4, "lr": 1e-4}


@pytest.fixture(scope="module")
def builtin_sets(tmp_path_factory):
    root = shared_builtin_root(tmp_path_factory)
    train = load_dataset("builtin", root, split="train", image_size=32)
    test = load_dataset("builtin", root, split="test", image_size=32)
    return root, train, test


def _setup(seed=0):
    """A small CPRL model, its optimisers and a fixed batch. The step size is small so that one
    AdamW step (which moves every parameter by about lr) is a first-order move of the loss."""
    torch.manual_seed(seed)
    cfg = TrainConfig(**{**SMALL, "lr": 1e-5})
    model = cprl_resnet("resnet18").train()
    groups = param_groups(model)
    opts = build_optimizers({"theta": groups.theta, "phi": groups.phi, "xi": groups.xi}, cfg)
    g = torch.Generator().manual_seed(seed)
    x, y = torch.rand(4, 3, 32, 32, generator=g), torch.rand(4, generator=g)
    # converge the spectral norms' power iteration (one step per training forward), so that the
    # losses compared below move by the optimiser step alone
    with torch.no_grad():
        for mode in ("sf", "nc") * 15:
            with intervention(model, mode):
                model(x)
    return model, groups, opts, x, y


def _loss(model, x, target, mode="normal"):
    with torch.no_grad(), intervention(model, mode):
        return float(torch.mean((model(x) - target) ** 2))


class TestParamGroups:
    def test_disjoint_and_cover_every_trainable_parameter(self):
        model = cprl_resnet("resnet18")
        g = param_groups(model)
        ids = [set(map(id, ps)) for ps in (g.theta, g.phi, g.xi)]
        assert all(a.isdisjoint(b) for i, a in enumerate(ids) for b in ids[i + 1 :])
        assert set().union(*ids) == {id(p) for p in model.parameters() if p.requires_grad}
        bs = {id(m.b) for m in model.modules() if hasattr(m, "fc_phi")}
        assert bs <= ids[0] and len(bs) == 4


class TestSteps:
    @pytest.mark.slow
    def test_theta_step_lowers_the_regression_loss(self):
        model, groups, opts, x, y = _setup()
        before = _loss(model, x, y)
        theta_regression_step(model, groups, opts, x, y)
        assert _loss(model, x, y) < before

    def test_phi_step_raises_l_sf_and_leaves_theta(self):
        model, groups, opts, x, _y = _setup()
        y_bar = model(x).detach()
        theta = [p.detach().clone() for p in groups.theta]
        before = _loss(model, x, y_bar, "sf")
        intervention_net_step(model, groups, opts, x, y_bar, "sf")
        assert _loss(model, x, y_bar, "sf") > before
        assert all(torch.equal(a, b) for a, b in zip(theta, groups.theta, strict=True))

    def test_xi_step_lowers_l_nc(self):
        model, groups, opts, x, _y = _setup(1)
        y_bar = model(x).detach()
        before = _loss(model, x, y_bar, "nc")
        intervention_net_step(model, groups, opts, x, y_bar, "nc")
        assert _loss(model, x, y_bar, "nc") < before

    @pytest.mark.parametrize(("mode", "direction"), [("sf", -1), ("nc", +1)])
    def test_theta_minimises_l_sf_and_maximises_l_nc(self, mode, direction):
        model, groups, opts, x, _y = _setup(2)
        y_bar = model(x).detach()
        phi = [p.detach().clone() for p in groups.phi + groups.xi]
        before = _loss(model, x, y_bar, mode)
        theta_intervention_step(model, groups, opts, x, y_bar, mode, lam=1.0)
        after = _loss(model, x, y_bar, mode)
        assert (after - before) * direction > 0
        assert all(torch.equal(a, b) for a, b in zip(phi, groups.phi + groups.xi, strict=True))

    def test_fast_step_moves_theta_and_phi_only_on_sf_iterations(self):
        model, groups, opts, x, y = _setup(3)
        xi = [p.detach().clone() for p in groups.xi]
        phi = [p.detach().clone() for p in groups.phi]
        losses = fast_step(model, groups, opts, x, y, t=0, lam=1.0)
        assert set(losses) == {"l_reg", "l_sf"}
        assert all(torch.equal(a, b) for a, b in zip(xi, groups.xi, strict=True))
        assert not all(torch.equal(a, b) for a, b in zip(phi, groups.phi, strict=True))


@pytest.mark.parametrize(
    "step", [pytest.param("faithful", marks=pytest.mark.slow), "fast"]  # faithful: about 5 s
)
def test_a_pns_step_reads_nothing_back_to_the_host(step):
    """Issue 25: no host synchronisation per iteration (the losses come back as tensors and the
    batch norms counted twice are found by hooks, not by reading num_batches_tracked)."""
    from cprl_fast.train.pns import STEPS

    model, groups, opts, x, y = _setup(7)
    for t in (0, 1):  # SF then NC: every optimiser has its state
        STEPS[step](model, groups, opts, x, y, t, 0.5)
    exempt = {id(st["step"]) for opt in opts.values() for st in opt.state.values() if "step" in st}
    with HostReads(exempt) as mode:
        for t in (2, 3):
            losses = STEPS[step](model, groups, opts, x, y, t, 0.5)
    assert mode.reads == []
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in losses.values())


class TestTrainer:
    def test_the_epoch_loader_serves_the_epoch_order_and_pins_memory_for_cuda_only(
        self, builtin_sets, tmp_path
    ):
        """Issue 25: batches come in pinned memory on CUDA (train_step's copy then does not wait
        for the device), in the epoch's fixed order, batches ``start`` to ``end``."""
        from cprl_fast.train.trainer import epoch_order

        train = builtin_sets[1]
        t = Trainer(TrainConfig(**SMALL, model="resnet", out_dir=str(tmp_path)), train)
        loader = t.epoch_loader(epoch=1, start=1, end=3)
        order = epoch_order(len(train), t.cfg.seed, 1)
        assert list(loader.batch_sampler) == [order[4:8], order[8:12]]
        assert loader.pin_memory is False
        t.device = torch.device("cuda")  # (a loader pins when it is iterated, not when made)
        assert t.epoch_loader(epoch=1, start=1, end=3).pin_memory is True

    def test_losses_are_read_in_blocks_and_a_nan_stops_the_run(self, builtin_sets, tmp_path,
                                                               monkeypatch):  # fmt: skip
        """The loop reads the step losses to the host once per LOG_EVERY steps (one transfer),
        writes every step's row, and names the first non-finite step."""
        from cprl_fast.train import trainer as trainer_module

        train = builtin_sets[1]
        monkeypatch.setattr(trainer_module, "LOG_EVERY", 4)
        reads, counting = [], []
        original = torch.Tensor.tolist

        def counting_tolist(self):
            if counting:  # from the first step on (the epoch's order is drawn before it)
                reads.append(self.numel())
            return original(self)

        cfg = TrainConfig(**SMALL, model="resnet", out_dir=str(tmp_path), max_steps=11, epochs=1)
        t = Trainer(cfg, train)

        def fake_step(x, y):
            counting.append(True)
            t.step += 1
            return {"loss": torch.tensor(float("nan") if t.step == 10 else 0.5)}

        monkeypatch.setattr(t, "train_step", fake_step)
        monkeypatch.setattr(torch.Tensor, "tolist", counting_tolist)
        with pytest.raises(FloatingPointError, match="training stopped at iteration 10: loss "
                                                     "loss=nan; no checkpoint was written"):
            t.fit()
        assert reads == [4, 4, 3]  # steps 1-4, 5-8, then 9-11 at the end of the run
        rows = (tmp_path / "log.csv").read_text().splitlines()
        assert rows[0] == "step,epoch,loss" and [r.split(",")[0] for r in rows[1:]] == [
            str(i) for i in range(1, 10)
        ]

    @pytest.mark.slow
    @pytest.mark.parametrize(
        "setting", [{}, {"noise_sigma": 0.1}, {"schedule": "onecycle", "epochs": 1}],
        ids=["plain", "noise-trained", "onecycle"],
    )  # fmt: skip
    def test_resume_is_exact(self, builtin_sets, tmp_path, setting):
        _, train, test = builtin_sets
        small = {**SMALL, **setting}
        full = Trainer(TrainConfig(**small, out_dir=str(tmp_path / "a"), max_steps=4), train, test)
        full.fit()
        Trainer(TrainConfig(**small, out_dir=str(tmp_path / "b"), max_steps=2), train, test).fit()
        resumed = Trainer(
            TrainConfig(**small, out_dir=str(tmp_path / "b"), max_steps=4), train, test
        )
        resumed.fit(resume=True)
        assert resumed.step == full.step == 4
        a, b = full.model.state_dict(), resumed.model.state_dict()
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k
        for name in ("theta", "phi", "xi"):
            sa, sb = full.opts[name].state_dict()["state"], resumed.opts[name].state_dict()["state"]
            assert all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)

    def test_logs_checkpoints_and_metrics(self, builtin_sets, tmp_path):
        _, train, test = builtin_sets
        cfg = TrainConfig(**SMALL, out_dir=str(tmp_path), max_steps=3,
                          objective_options={"mode": "fast"})  # fmt: skip
        result = Trainer(cfg, train, test).fit()
        assert set(result) >= {"srcc", "plcc", "mse"}
        rows = (tmp_path / "log.csv").read_text().splitlines()
        assert rows[0] == "step,epoch,l_reg,l_sf,l_nc" and len(rows) == 4
        assert rows[1].endswith(",") and not rows[2].split(",")[3]  # SF, then NC
        state = torch.load(tmp_path / "last.pt", weights_only=True)
        assert state["step"] == 3
        assert json.loads(state["config"])["objective_options"]["mode"] == "fast"
        assert (tmp_path / "best.pt").is_file()
        assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    def test_a_run_reports_its_test_split_with_intervals(self, builtin_sets, tmp_path):
        from cprl_fast.train.runs import train_and_test

        root, _, _ = builtin_sets
        lines: list[str] = []
        cfg = TrainConfig(**{**SMALL, "model": "resnet"}, root=str(root), max_steps=1,
                          out_dir=str(tmp_path))  # fmt: skip
        summary = train_and_test(cfg, log=lines.append)
        test = summary["test"]
        assert summary["curves"] == str(tmp_path / "curves.png")
        split = load_dataset("builtin", root, split="test", image_size=32)
        assert test["images"] == len(split) and test["model"] == "best.pt"
        assert test["scenes"] == len({it.scene for it in split.items}) >= 2
        for name in ("srcc", "plcc"):
            lo, hi = test[f"{name}_ci"]
            assert -1 <= lo <= test[name] <= hi <= 1 and lo < hi
        assert lines[-1] == (
            f"test (best.pt, {len(split)} images of {test['scenes']} scenes; 95% bootstrap "
            f"intervals over the images): SRCC {test['srcc']:.3f} [{test['srcc_ci'][0]:.3f}, "
            f"{test['srcc_ci'][1]:.3f}], PLCC {test['plcc']:.3f} [{test['plcc_ci'][0]:.3f}, "
            f"{test['plcc_ci'][1]:.3f}]"
        )

    def test_resume_refuses_another_config(self, builtin_sets, tmp_path):
        _, train, test = builtin_sets
        Trainer(TrainConfig(**SMALL, out_dir=str(tmp_path), max_steps=1), train, test).fit()
        other = TrainConfig(**{**SMALL, "batch_size": 8}, out_dir=str(tmp_path), max_steps=2)
        with pytest.raises(ValueError, match="batch_size=4"):
            Trainer(other, train, test).fit(resume=True)

    @pytest.mark.parametrize(
        "change", [{"lr": 1e-3}, {"weight_decay": 0.0}, {"image_size": 24}, {"clip_grad": 1.0},
                   {"freeze_bn": True}],
        ids=["lr", "weight_decay", "image_size", "clip_grad", "freeze_bn"],
    )  # fmt: skip
    def test_resume_refuses_settings_the_run_trained_with(self, builtin_sets, tmp_path, change):
        # the optimisers' saved state holds lr and weight decay: a resume with others trained on
        # with the old ones while the checkpoint's card recorded the new
        _, train, test = builtin_sets
        Trainer(TrainConfig(**SMALL, out_dir=str(tmp_path), max_steps=1), train, test).fit()
        (key, value), = change.items()
        other = TrainConfig(**{**SMALL, **change}, out_dir=str(tmp_path), max_steps=2)
        with pytest.raises(ValueError, match=f"trained with {key}=.*this run has {key}={value}"):
            Trainer(other, train, test).fit(resume=True)
        assert torch.load(tmp_path / "last.pt", weights_only=True)["step"] == 1

    @pytest.mark.slow  # three trainings: about 5.5 s
    def test_resume_may_extend_a_run_but_not_a_schedules_curve(self, builtin_sets, tmp_path):
        _, train, test = builtin_sets
        for schedule, folder in (("constant", "c"), ("onecycle", "o")):
            cfg = TrainConfig(**{**SMALL, "schedule": schedule, "epochs": 1},
                              out_dir=str(tmp_path / folder), max_steps=1)  # fmt: skip
            Trainer(cfg, train, test).fit()
        longer = {"epochs": 2, "max_steps": 2}
        constant = TrainConfig(**{**SMALL, "schedule": "constant", **longer},
                               out_dir=str(tmp_path / "c"))  # fmt: skip
        extended = Trainer(constant, train, test)
        extended.fit(resume=True)
        assert extended.step == 2
        onecycle = TrainConfig(**{**SMALL, "schedule": "onecycle", **longer},
                               out_dir=str(tmp_path / "o"))  # fmt: skip
        with pytest.raises(ValueError, match="epochs=1, this run has epochs=2: the onecycle "
                                             "schedule's curve depends on it"):
            Trainer(onecycle, train, test).fit(resume=True)

    def test_noise_training_trains_on_noisy_images(self, builtin_sets, tmp_path):
        _, train, test = builtin_sets
        x, y = next(iter(torch.utils.data.DataLoader(train, batch_size=4)))
        seen = {}
        for noise in (0.0, 0.1):
            cfg = TrainConfig(**{**SMALL, "noise_sigma": noise}, out_dir=str(tmp_path / str(noise)))
            trainer = Trainer(cfg, train, test)
            inputs: list[torch.Tensor] = []
            hook = trainer.model.register_forward_pre_hook(
                lambda m, a, into=inputs: into.append(a[0])
            )
            trainer.train_step(x, y)
            hook.remove()
            seen[noise] = inputs[0]
        assert torch.equal(seen[0.0], x)
        assert 0.08 < float((seen[0.1] - x).std()) < 0.12
        # each process of a distributed run draws its own noise and global random numbers
        # (SAT's starts, LWTA's samples): once every rank drew the same
        drawn, draws = {}, {}
        for rank in (0, 1, 0):
            trainer.world, trainer.rank, trainer.step = 2, rank, 0
            hook = trainer.model.register_forward_pre_hook(
                lambda m, a, rank=rank: drawn.setdefault(rank, []).append(a[0])
            )
            trainer.train_step(x, y)
            hook.remove()
            draws.setdefault(rank, []).append(torch.rand(4))
        assert not torch.allclose(drawn[0][0] - x, drawn[1][0] - x)
        assert not torch.equal(draws[0][0], draws[1][0])
        torch.testing.assert_close(drawn[0][0], drawn[0][-1], rtol=0, atol=0)  # (seed, step, rank)
        assert torch.equal(draws[0][0], draws[0][1])
        with pytest.raises(ValueError, match="noise_sigma must be a finite number >= 0"):
            TrainConfig(noise_sigma=-0.1)
        with pytest.raises(ValueError, match=r"noise_sigma must be at most 1 .* is 8/255"):
            TrainConfig(noise_sigma=8)

    def test_bf16_off_a_gpu_is_refused_not_ignored(self, builtin_sets, tmp_path):
        _, train, test = builtin_sets
        cfg = TrainConfig(**SMALL, bf16=True, out_dir=str(tmp_path))  # a card may say so
        with pytest.raises(ValueError, match="bf16 autocast is for CUDA devices, and this "
                                             "run's device is cpu: set bf16 false"):
            Trainer(cfg, train, test)

    def test_bad_config(self):
        with pytest.raises(ValueError, match="mode must be one of"):
            TrainConfig(objective_options={"mode": "quick"})
        with pytest.raises(ValueError, match="unknown config option 'epochz'"):
            TrainConfig.from_dict({"epochz": 3})
        with pytest.raises(ValueError, match="objective 'regression' has no option lam"):
            TrainConfig(model="resnet", objective_options={"lam": 1.0})
        with pytest.raises(ValueError, match="model 'resnet' has no option b"):
            TrainConfig(model="resnet", model_options={"b": 0.4})

    def test_the_experiment_counts_options_at_their_defaults(self):
        explicit = TrainConfig(model_options={"arch": "resnet50", "b": 0.4},
                               objective_options={"lam": 1.0})  # fmt: skip
        assert explicit.experiment() == TrainConfig().experiment()
        assert TrainConfig(model_options={"b": 0.3}).experiment() != TrainConfig().experiment()

    def test_flat_options_go_to_the_model_and_the_objective(self):
        cfg = TrainConfig.from_dict({"model": "cprl", "arch": "resnet18", "b": 0.3, "lam": 0.5})
        assert cfg.model_options == {"arch": "resnet18", "b": 0.3}
        assert cfg.objective_options == {"lam": 0.5} and cfg.objective_name == "pns"
        nima = TrainConfig.from_dict({"model": "nima", "sigma": 0.2})
        assert nima.objective_name == "emd" and nima.objective_options == {"sigma": 0.2}


def test_every_seed_a_card_allows_derives_seeds_torch_takes():
    """Seeds up to 2**63 - 1 pass the card's check; the epoch order and the per-step seed
    multiplied them past 2**64, and training stopped on "Overflow when unpacking long long"."""
    from cprl_fast.train.trainer import RUN_LIMITS, epoch_order, step_seed

    big = RUN_LIMITS["seed"]
    assert sorted(epoch_order(10, big, 3)) == list(range(10))
    torch.Generator().manual_seed(step_seed(big, 10**9, rank=7, world=8))
    assert step_seed(big, 5, 0, 2) != step_seed(big, 5, 1, 2)
    # smaller seeds derive what they always did: runs resume in the same order
    g = torch.Generator().manual_seed(4 * 1_000_003 + 2)
    assert epoch_order(10, 4, 2) == torch.randperm(10, generator=g).tolist()
    assert step_seed(4, 9) == 4 * 1_000_003 + 9


def _ddp_worker(rank, world, init_file, x, y, out):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                                         world_size=world)  # fmt: skip
    torch.set_num_threads(1)
    cfg = TrainConfig(**{**SMALL, "batch_size": 8}, freeze_bn=True)
    trainer = Trainer(cfg, train_set=None)
    k = x.shape[0] // world
    for _ in range(2):  # an SF and an NC iteration
        trainer.train_step(x[rank * k : (rank + 1) * k], y[rank * k : (rank + 1) * k])
    if rank == 0:
        torch.save(trainer.model.state_dict(), out)
    torch.distributed.destroy_process_group()


class TestDistributed:
    @pytest.mark.slow
    def test_two_gloo_processes_match_one(self, tmp_path):
        g = torch.Generator().manual_seed(5)
        x, y = torch.rand(8, 3, 32, 32, generator=g), torch.rand(8, generator=g)
        out = tmp_path / "ddp.pt"
        torch.multiprocessing.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), x, y, str(out)),
                                    nprocs=2, join=True)  # fmt: skip
        torch.set_num_threads(1)
        single = Trainer(TrainConfig(**{**SMALL, "batch_size": 8}, freeze_bn=True), train_set=None)
        for _ in range(2):
            single.train_step(x, y)
        ddp = torch.load(out, weights_only=True)
        ref = single.model.state_dict()
        for k in ref:
            torch.testing.assert_close(ddp[k], ref[k], rtol=1e-5, atol=1e-6, msg=k)


class TestCli:
    def _run(self, *args, env=None):
        return subprocess.run([sys.executable, "-m", "cprl_fast_cli", *args], capture_output=True,
                              text=True, env={**os.environ, **(env or {})})  # fmt: skip

    @pytest.mark.slow
    def test_help(self):
        r = self._run("train", "--help")
        assert r.returncode == 0 and "--lam" in r.stdout and "--mode" in r.stdout
        # choices come from the registries: every model is listed
        from cprl_fast.models import MODELS

        assert all(name in r.stdout for name in MODELS)

    @pytest.mark.slow
    def test_the_papers_setting_on_a_cpu_says_it_takes_hours(self, tmp_path):
        r = self._run("train", "--dataset", "live", "--root", str(tmp_path / "none"))
        assert r.returncode == 2 and "trains for hours on a CPU" in r.stdout
        assert len(r.stderr.splitlines()) == 1  # errors stay one line
        quick = self._run("train", "--dataset", "live", "--root", str(tmp_path / "none"),
                          "--arch", "resnet18", "--image-size", "64")  # fmt: skip
        assert quick.returncode == 2 and "hours" not in quick.stdout

    @pytest.mark.slow
    def test_unknown_option(self):
        r = self._run("train", "--epochz", "3")
        assert r.returncode == 2 and "unrecognized arguments: --epochz" in r.stderr

    @pytest.mark.slow
    def test_bad_value(self):
        r = self._run("train", "--batch-size", "many")
        assert r.returncode == 2 and "--batch-size" in r.stderr and "many" in r.stderr

    @pytest.mark.slow
    def test_missing_dataset(self, tmp_path):
        r = self._run("train", "--dataset", "live", "--root", str(tmp_path / "none"))
        assert r.returncode == 2 and "dataset root of 'live' not found" in r.stderr

    @pytest.mark.slow
    def test_bad_mode_in_config_file(self, tmp_path):
        (tmp_path / "c.json").write_text(json.dumps({"mode": "turbo"}))
        r = self._run("train", "--config", str(tmp_path / "c.json"))
        assert r.returncode == 2 and "mode must be one of" in r.stderr

    @pytest.mark.slow
    def test_trains_from_a_config_file(self, builtin_sets, tmp_path):
        root, _, _ = builtin_sets
        cfg = {**SMALL, "root": str(root), "max_steps": 2, "out_dir": str(tmp_path / "run")}
        cfg.pop("model_options")
        cfg["arch"] = "resnet18"  # a flat model option, as users write it
        (tmp_path / "c.json").write_text(json.dumps(cfg))
        r = self._run("train", "--config", str(tmp_path / "c.json"), "--lam", "0.5")
        assert r.returncode == 0, r.stderr
        state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
        saved = json.loads(state["config"])
        assert saved["objective_options"]["lam"] == 0.5 and state["step"] == 2


def test_copy_of_a_model_trains_independently():
    model, groups, opts, x, y = _setup()
    twin = copy.deepcopy(model)
    theta_regression_step(model, groups, opts, x, y)
    assert not torch.equal(twin.head.weight, model.head.weight)


@pytest.mark.parametrize("t", [0, 1], ids=["sf", "nc"])
@pytest.mark.parametrize("step", ["faithful", "fast"])
def test_sharing_the_prefix_changes_nothing_computed(step, t):
    """The part before the first CA module computed once (its backward shared, its batch norms
    counting the batch twice) against the old step that computed it in every forward, from the
    same state after ``t`` old iterations: the same losses, parameters, optimiser states and
    batch-norm buffers, to the order of floating-point sums. (One iteration at a time: over
    several, a last-bit difference can swap two activations' ranks in the hard CA mask and
    grow. SGD with momentum: AdamW would turn a sign flip of a near-zero gradient into a
    full step.)"""
    from cprl_fast.train.pns import STEPS

    runs = []
    for share in (True, False):
        model, groups, _, x, y = _setup(5)
        opts = {n: torch.optim.SGD(getattr(groups, n), lr=1e-2, momentum=0.9)
                for n in ("theta", "phi", "xi")}  # fmt: skip
        for u in range(t):
            STEPS[step](model, groups, opts, x, y, u, 0.5, share_prefix=False)
        losses = STEPS[step](model, groups, opts, x, y, t, 0.5, share_prefix=share)
        runs.append((losses, model.state_dict(), opts))
    (la, sa, oa), (lb, sb, ob) = runs
    assert la.keys() == lb.keys()
    assert all(float(la[k]) == pytest.approx(float(lb[k]), rel=1e-5) for k in la)
    for k in sa:
        if sa[k].is_floating_point():
            torch.testing.assert_close(sa[k], sb[k], rtol=1e-5, atol=1e-7)
        else:
            assert torch.equal(sa[k], sb[k]), k
    for name in ("theta", "phi", "xi"):
        for pa, pb in zip(oa[name].state_dict()["state"].values(),
                          ob[name].state_dict()["state"].values(), strict=True):  # fmt: skip
            a, b = pa["momentum_buffer"], pb["momentum_buffer"]  # the gradients: sums over the
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))  # batch
