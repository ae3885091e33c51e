"""Using a model on one device, end to end, for the lent-GPU run (bench/gpu_check.sh): train a
tiny CPRL model there (and check that a training iteration makes no host synchronisation),
certify it (and compare with the same certificate computed on the CPU), export it as a pt2
program and an AOTInductor package for the device, each loaded in a fresh process and compared
with the eager scores, and audit it. Every step prints one line,
``model-check: <step> ok|FAILED ...`` with its time, and a failed step never hides the next.

    python -m bench.model_check --device cuda --out-dir /tmp/model-check
    python -m bench.model_check --device cpu --no-aoti     (the plumbing, on the CPU)
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

SIZE = 32


def _step(name: str, fn, failures: list[str]):
    start = time.perf_counter()
    try:
        detail = fn()
    except Exception as e:  # each step reports, and the next still runs
        failures.append(name)
        lines = traceback.format_exc().strip().splitlines()
        first = str(e).splitlines()[0] if str(e) else ""
        seconds = time.perf_counter() - start
        print(f"model-check: {name} FAILED after {seconds:.1f} s: {type(e).__name__}: {first}",
              flush=True)  # fmt: skip
        print("\n".join("    " + line for line in lines[-20:]), flush=True)
        return None
    print(f"model-check: {name} ok in {time.perf_counter() - start:.1f} s ({detail})", flush=True)
    return detail


def _train(device: str, out: Path) -> str:
    from cprl_fast.data import load_splits
    from cprl_fast.train import TrainConfig, Trainer

    sets = load_splits("builtin", out / "data", ("train", "val"), image_size=SIZE)
    cfg = TrainConfig(model="cprl", model_options={"arch": "resnet18"}, image_size=SIZE,
                      batch_size=8, epochs=1, max_steps=3, device=device,
                      out_dir=str(out / "run"))  # fmt: skip
    Trainer(cfg, sets["train"], sets["val"]).fit()
    return f"3 steps of CPRL (ResNet-18, {SIZE} px) on {device}"


@contextlib.contextmanager
def _sync_errors(cuda: bool):
    """Inside, on CUDA, every synchronising CUDA call raises (``set_sync_debug_mode``)."""
    if not cuda:
        yield
        return
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def _no_sync(device: str, out: Path) -> str:
    """Issue 25: a training iteration makes no host synchronisation. For each PNS mode, two
    iterations to warm up, then two with every synchronising CUDA call an error, each a batch
    from the Trainer's own loader (pinned on CUDA) and :meth:`Trainer.train_step` with
    gradient clipping, training noise and (on CUDA) bf16 autocast. On the CPU nothing waits
    for a device: the same iterations run (the plumbing), and tests/test_train.py counts the
    step's reads to the host instead."""
    from cprl_fast.data import load_splits
    from cprl_fast.train import TrainConfig, Trainer

    cuda = torch.device(device).type == "cuda"
    train = load_splits("builtin", out / "data", ("train",), image_size=SIZE)["train"]
    for mode in ("faithful", "fast"):
        cfg = TrainConfig(model="cprl", model_options={"arch": "resnet18"},
                          objective_options={"mode": mode}, image_size=SIZE, batch_size=4,
                          clip_grad=1.0, noise_sigma=0.01, bf16=cuda, device=device,
                          out_dir=str(out / f"no-sync-{mode}"))  # fmt: skip
        trainer = Trainer(cfg, train)
        batches = iter(trainer.epoch_loader(0, 0, 4))
        for x, y in itertools.islice(batches, 2):
            trainer.train_step(x, y)
        with _sync_errors(cuda):
            for x, y in batches:
                trainer.train_step(x, y)
    checked = "under set_sync_debug_mode('error')" if cuda else "(no check on the CPU)"
    return f"2 + 2 iterations of each PNS mode, the last two {checked}"


def _audit(device: str, out: Path) -> str:
    import io
    import json

    from cprl_fast.reports import AuditReport, eps_label
    from cprl_fast_cli import main

    with contextlib.redirect_stdout(io.StringIO()):  # the report is in the files
        code = main(["audit", "--checkpoint", str(out / "run" / "best.pt"), "--device", device,
                     "--eps", "1/255,4/255", "--attack", "fgsm,pgd,rank,square100",
                     "--certify", "0.1", "--certify-n", "64",
                     "--out-dir", str(out / "audit")])  # fmt: skip
    if code != 0:
        raise RuntimeError(f"audit exited {code}")
    report = AuditReport.from_json(json.loads((out / "audit" / "report.json").read_text()))
    worst = {eps_label(e): round(report.worst(e)["srcc"], 3) for e in report.results}
    failed = sorted(set(report.failed))
    return f"clean SRCC {report.clean['srcc']:.3f}, worst {worst}, failed checks {failed}"


def _certify(device: str, out: Path) -> str:
    """The device's certificate against the CPU's for the same noise: a k-th order statistic
    moves by at most the largest change of any one sample, so the two may differ by no more
    than the model's own largest score difference between the devices on those noisy inputs
    (TF32 convolutions on a GPU differ from the CPU by about 1e-3)."""
    from cprl_fast import load_model
    from cprl_fast.certify import certify, noisy_scores

    images = torch.rand(12, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    model_dev = load_model(out / "run" / "best.pt", device).model.eval()
    model_cpu = load_model(out / "run" / "best.pt", "cpu").model.eval()
    kw = dict(sigma=0.1, n=256, radius=(0.0, 0.05), seed=3, batch_size=len(images))
    start = time.perf_counter()
    got = certify(model_dev, images, progress=False, **kw)
    seconds = time.perf_counter() - start
    want = certify(model_cpu, images, progress=False, **kw)
    diff = max(abs(got.median - want.median).max(), abs(got.lower - want.lower).max(),
               abs(got.upper - want.upper).max())  # fmt: skip
    with torch.no_grad():
        samples = [noisy_scores(m, images.to(d), kw["sigma"], kw["n"], kw["seed"])
                   for m, d in ((model_dev, device), (model_cpu, "cpu"))]  # fmt: skip
    bound = (samples[0] - samples[1]).abs().max().item()
    if diff > bound + 1e-6:
        raise RuntimeError(f"{device} certificate differs from the CPU's by {diff:.3g}, more "
                           f"than any noisy score does ({bound:.3g})")  # fmt: skip
    return (f"{device} vs cpu: largest difference {diff:.2g} (samples differ by up to "
            f"{bound:.2g}); {12 * 256 / seconds:.0f} noisy forwards/s on {device}")  # fmt: skip


def _export(device: str, out: Path, aoti: bool) -> str:
    from cprl_fast import load_model
    from cprl_fast.export import export_pt2

    start = time.perf_counter()
    paths = export_pt2(out / "run" / "best.pt", out / "model.pt2", device, aoti=aoti)
    seconds = time.perf_counter() - start
    x = torch.rand(5, 3, SIZE, SIZE, device=device)  # traced with 2
    with torch.no_grad():
        eager = load_model(out / "run" / "best.pt", device).model(x)
    torch.save({"x": x.cpu(), "eager": eager.cpu()}, out / "io.pt")
    script = f"""
import torch, cprl_fast
io = torch.load({str(out / "io.pt")!r})
x = io["x"].to({device!r})
program = torch.export.load({str(paths["program"])!r})
ops = {{str(n.target) for n in program.graph.nodes if n.op == "call_function"}}
assert "cprl_fast.ca_activation.default" in ops, sorted(ops)
runs = [program.module()]
if {str(paths.get("aoti", ""))!r}:
    runs.append(torch._inductor.aoti_load_package({str(paths.get("aoti", ""))!r}))
with torch.no_grad():
    for run in runs:
        torch.testing.assert_close(run(x).cpu(), io["eager"], rtol=1e-4, atol=1e-5)
print("ok", len(runs))
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    if r.returncode != 0 or not r.stdout.startswith("ok"):
        tail = "\n".join(r.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"the fresh process exited {r.returncode} (negative: the signal), "
                           f"printed {r.stdout.strip()!r}; its stderr ends:\n{tail}")  # fmt: skip
    what = "program and AOTInductor package" if aoti else "program"
    return f"{what} for {device} in {seconds:.0f} s; a fresh process: eager's scores at batch 5"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--out-dir", default=None, help="work folder (default: a temporary one)")
    p.add_argument("--no-aoti", action="store_true", help="skip the AOTInductor compile")
    args = p.parse_args(argv)
    out = Path(args.out_dir or tempfile.mkdtemp(prefix="model-check-"))
    out.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    if _step("train", lambda: _train(args.device, out), failures) is None:
        return 1
    _step("no-sync", lambda: _no_sync(args.device, out), failures)
    _step("certify", lambda: _certify(args.device, out), failures)
    _step("export", lambda: _export(args.device, out, not args.no_aoti), failures)
    _step("audit", lambda: _audit(args.device, out), failures)
    print(f"model-check: {'FAILED ' + ', '.join(failures) if failures else 'all ok'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
