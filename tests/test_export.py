"""Exporting a trained model: the model-only safetensors file (read everywhere a checkpoint
is, same scores, no pickle) and the pt2 export (torch.export program and AOTInductor
package), each loaded in a fresh process with only cprl_fast imported, giving the eager
scores for a batch size it was not traced with."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import pytest
import torch
from data_fixtures import train_tiny_run

from cprl_fast import load_model
from cprl_fast.export import AOTI_MIN_TORCH, export_pt2, export_weights
from cprl_fast.version import torch_release
from cprl_fast_cli import main

SIZE = 32


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A CA model (its graph holds the custom op), trained for one step."""
    return train_tiny_run(tmp_path_factory, SIZE, model="cprl", objective="regression", max_steps=1)


@pytest.mark.slow
def test_weights_are_safetensors_read_like_the_checkpoint(run, tmp_path, capsys):
    path = tmp_path / "model.safetensors"
    assert main(["export", str(run / "best.pt"), "--out", str(path)]) == 0
    raw = path.read_bytes()
    header = json.loads(raw[8 : 8 + struct.unpack("<Q", raw[:8])[0]])
    assert json.loads(header["__metadata__"]["cprl_fast.config"])  # the card, as JSON
    x = torch.rand(3, 3, SIZE, SIZE)
    assert torch.equal(load_model(path)(x), load_model(run / "best.pt")(x))
    capsys.readouterr()
    assert main(["info", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "cprl"
    with pytest.raises(ValueError, match=r"must end in \.safetensors"):
        export_weights(run / "best.pt", tmp_path / "model.bin")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(RuntimeError, match="without the model card"):
        load_model(tmp_path / "other.safetensors")


@pytest.mark.slow
def test_pt2_program_and_aoti_package_load_in_a_fresh_process(run, tmp_path):
    # the package where this torch compiles it (.ci/compat-torch runs this with older ones)
    aoti = torch_release(torch.__version__) >= AOTI_MIN_TORCH
    paths = export_pt2(run / "best.pt", tmp_path / "model.pt2", aoti=aoti)
    assert set(paths) == {"program", "card"} | ({"aoti"} if aoti else set())
    card = json.loads(paths["card"].read_text())
    assert card["config"]["image_size"] == SIZE and f"[N, 3, {SIZE}, {SIZE}]" in card["input"]
    x = torch.rand(5, 3, SIZE, SIZE)  # traced with 2
    torch.save({"x": x, "eager": load_model(run / "best.pt").model(x).detach()},
               tmp_path / "io.pt")  # fmt: skip
    script = f"""
import torch, cprl_fast
io = torch.load({str(tmp_path / "io.pt")!r})
program = torch.export.load({str(paths["program"])!r})
ops = {{str(n.target) for n in program.graph.nodes if n.op == "call_function"}}
assert "cprl_fast.ca_activation.default" in ops, sorted(ops)
fns = [program.module()]
if {aoti}:
    fns.append(torch._inductor.aoti_load_package({str(paths.get("aoti"))!r}))
with torch.no_grad():
    for fn in fns:
        torch.testing.assert_close(fn(io["x"]), io["eager"], rtol=1e-4, atol=1e-5)
        assert fn(io["x"][:1]).shape == (1,)  # batch 1 is in the exported range
    # every other size is refused by both, never scored from out-of-bounds reads
    for h, w in ({SIZE // 2}, {SIZE // 2}), ({SIZE + 1}, {SIZE}), ({2 * SIZE}, {2 * SIZE}):
        for fn in fns:
            try:
                fn(torch.rand(2, 3, h, w))
            except Exception:
                continue
            raise AssertionError(f"{{fn}} accepted a {{h}} x {{w}} input")
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]
    with pytest.raises(ValueError, match=r"must end in \.pt2"):
        export_pt2(run / "best.pt", tmp_path / "model.pt", aoti=False)


@pytest.mark.slow
def test_cli_pt2_says_what_it_does_before_the_long_part(run, tmp_path, capsys):
    out = tmp_path / "m.pt2"
    assert main(["export", str(run / "best.pt"), "--format", "pt2", "--out", str(out),
                 "--no-aoti"]) == 0  # fmt: skip
    said = capsys.readouterr()
    assert said.err == f"export: tracing {run / 'best.pt'} with torch.export\n"
    assert f"wrote {out} (" in said.out and not (tmp_path / "m.aoti-cpu.pt2").exists()


@pytest.mark.slow
def test_audit_record_writes_its_summary_into_the_model_card(run, tmp_path, capsys):
    import shutil

    best = tmp_path / "best.pt"
    shutil.copy(run / "best.pt", best)
    weights = tmp_path / "best.safetensors"
    export_weights(best, weights)
    for path in (best, weights):
        args = ["audit", "--checkpoint", str(path), "--attack", "fgsm,pgd", "--eps", "4/255",
                "--batch-size", "25", "--out-dir", str(tmp_path / "audit"), "--record"]  # fmt: skip
        assert main(args) == 0
        capsys.readouterr()
        assert main(["info", str(path), "--json"]) == 0
        card = json.loads(capsys.readouterr().out)
        report = json.loads((tmp_path / "audit" / "report.json").read_text())
        worst = report["results"][str(4 / 255)]["worst"]
        assert card["audit"]["worst"]["4/255"]["srcc"] == pytest.approx(worst["srcc"])
        assert card["audit"]["images"] == report["images"] and card["model"] == "cprl"
    x = torch.rand(2, 3, SIZE, SIZE)
    assert torch.equal(load_model(best)(x), load_model(run / "best.pt")(x))  # weights untouched
    assert main(["audit", "--module", "x:y", "--record"]) == 2


@pytest.mark.slow
def test_audit_record_refuses_a_checkpoint_replaced_during_the_audit(run, tmp_path, capsys,
                                                                      monkeypatch):  # fmt: skip
    import shutil

    import cprl_fast.audit
    from cprl_fast.train.checkpoint import load, save_atomic

    best = tmp_path / "best.pt"
    shutil.copy(run / "best.pt", best)
    real_audit = cprl_fast.audit.audit

    def audit_while_training_goes_on(*args, **kwargs):
        report = real_audit(*args, **kwargs)
        state = load(best)  # the trainer saves a better model at the same name
        state["model"] = {k: v + 1 if v.is_floating_point() else v
                          for k, v in state["model"].items()}  # fmt: skip
        save_atomic(state, best)
        return report

    monkeypatch.setattr(cprl_fast.audit, "audit", audit_while_training_goes_on)
    args = ["audit", "--checkpoint", str(best), "--attack", "fgsm", "--eps", "4/255",
            "--out-dir", str(tmp_path / "audit"), "--record"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"checkpoint {best} changed while it was audited" in err and "not recorded" in err
    assert load(best).get("audit") is None and (tmp_path / "audit" / "report.json").is_file()


def test_an_aoti_package_on_a_torch_too_old_for_it_is_refused_before_any_work(
    tmp_path, capsys, monkeypatch
):
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"not read: the torch release is checked first")
    monkeypatch.setattr(torch, "__version__", "2.8.0+cu128")
    out = tmp_path / "m.pt2"
    assert main(["export", str(checkpoint), "--format", "pt2", "--out", str(out)]) == 2
    said = capsys.readouterr()
    assert "needs torch 2.10 or later, this is 2.8.0+cu128" in said.err and "--no-aoti" in said.err
    assert len(said.err.strip().splitlines()) == 1 and "tracing" not in said.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]
    with pytest.raises(RuntimeError, match=r"needs torch 2\.10 or later"):
        export_pt2(checkpoint, out)
