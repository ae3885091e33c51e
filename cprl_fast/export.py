"""Exporting a trained model for distribution and deployment.

- ``weights``: a model-only safetensors file (no pickle: loadable without running code), the
  model card in its metadata; :func:`cprl_fast.load_model` and every command taking a
  checkpoint read it as they read ``best.pt``.
- ``pt2``: ``torch.export`` of the model (the custom CA op is in the graph as
  ``cprl_fast.ca_activation``, ``rank_mask``'s output alone, and in programs exported by
  versions before it as ``cprl_fast.rank_mask``, which load as well; the op's fake kernel is
  what makes tracing possible), saved with
  ``torch.export.save``, and an AOTInductor package compiled from it for the device (CPU here;
  CUDA with ``device="cuda"`` where the CUDA kernels are built). Both take crops
  ``[N, 3, S, S]`` in [0, 1] at the run's image size ``S`` (any N) and return scores ``[N]``;
  the resize and centre crop (docs/maths.md §7) are the caller's, as the card beside them says.
  Loading needs ``import cprl_fast`` first, which registers the op::

      import torch, cprl_fast
      program = torch.export.load("model.pt2").module()
      compiled = torch._inductor.aoti_load_package("model.aoti-cpu.pt2")
"""

from __future__ import annotations

from pathlib import Path

import torch

from cprl_fast.io import atomic_write_set, json_text
from cprl_fast.version import torch_release

#: The export formats of :func:`export`.
FORMATS = ("weights", "pt2")

#: The oldest torch release whose Inductor compiles a CA model into an AOTInductor package:
#: before pytorch/pytorch#167398 it fails on the CA modules' scalar ``b`` ("Cannot access data
#: pointer of Tensor"); with ``.ci/compat-torch``, 2.6, 2.8 and 2.9 fail, 2.10 and 2.11 pass.
AOTI_MIN_TORCH = (2, 10)


def check_aoti_torch() -> None:
    """Raises a one-line error, before any work, where this torch cannot compile the
    AOTInductor package of :func:`export_pt2` (:data:`AOTI_MIN_TORCH`)."""
    if torch_release(torch.__version__) < AOTI_MIN_TORCH:
        need = ".".join(map(str, AOTI_MIN_TORCH))
        raise RuntimeError(f"the AOTInductor package needs torch {need} or later, this is "
                           f"{torch.__version__}: upgrade torch, or export the program alone "
                           f"(--no-aoti, aoti=False)")  # fmt: skip


def _card(state: dict) -> dict:
    return {k: v for k, v in state.items() if k not in ("model", "optimizers", "rng")}


def export_weights(checkpoint: str | Path, out: str | Path) -> Path:
    """``checkpoint`` (best.pt, last.pt) -> a model-only safetensors file at ``out``."""
    from cprl_fast.train.checkpoint import load, save_safetensors

    out = Path(out)
    if out.suffix != ".safetensors":
        raise ValueError(f"--out for --format weights must end in .safetensors, got {out}")
    state = load(checkpoint)
    save_safetensors({"model": state["model"], **_card(state)}, out)
    return out


def pt2_paths(out: str | Path, device: str = "cpu", aoti: bool = True) -> dict[str, Path]:
    """The files :func:`export_pt2` writes for ``out``: program, AOTInductor package, card."""
    out = Path(out)
    paths = {"program": out}
    if aoti:
        paths["aoti"] = out.with_name(f"{out.stem}.aoti-{torch.device(device).type}.pt2")
    paths["card"] = out.with_name(f"{out.stem}.card.json")
    return paths


def export_pt2(checkpoint: str | Path, out: str | Path, device: str = "cpu",
               aoti: bool = True, max_batch: int = 1024) -> dict[str, Path]:  # fmt: skip
    """``checkpoint`` -> ``out`` (a ``torch.export`` program, batch size dynamic from 1 to
    ``max_batch``), with ``aoti`` an AOTInductor package ``<stem>.aoti-<device>.pt2`` beside
    it, and ``<stem>.card.json`` (the model card and the input each expects). Returns the
    paths. Checks that the exported program gives the eager scores before it is kept. The
    files are replaced as one set: each is written to a temporary first, and only when all
    are written are they renamed into place. The AOTInductor package checks its input's shape
    (:func:`_compile_package`)."""
    from cprl_fast.train.checkpoint import card_config, card_split, load
    from cprl_fast.train.runs import load_trained

    out = Path(out)
    if out.suffix != ".pt2":
        raise ValueError(f"--out for --format pt2 must end in .pt2, got {out}")
    if aoti:
        check_aoti_torch()
    trained = load_trained(checkpoint, device)
    size = trained.config.image_size
    example = torch.rand(2, 3, size, size, device=next(trained.model.parameters()).device)
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    with torch.no_grad():
        program = torch.export.export(trained.model, (example,), dynamic_shapes=({0: batch},))
        eager = trained.model(example)
        got = program.module()(example)
    if not torch.allclose(got, eager, rtol=1e-4, atol=1e-5):
        raise RuntimeError(f"the exported program's scores differ from eager by "
                           f"{(got - eager).abs().max().item():.3g}: not written")  # fmt: skip
    paths = pt2_paths(out, device, aoti)
    writes = {paths["program"]: lambda tmp: torch.export.save(program, tmp)}
    if aoti:
        writes[paths["aoti"]] = lambda tmp: _compile_package(program, tmp)
    state = load(checkpoint)
    card = {**_card(state), "input": f"float32 [N, 3, {size}, {size}] in [0, 1] "
            f"(shorter side resized to {size}, centre crop), N in 1..{max_batch}",
            "output": "float32 [N] quality scores in [0, 1], higher is better",
            "files": {k: p.name for k, p in paths.items() if k != "card"}}  # fmt: skip
    card["config"], card["split"] = card_config(state), card_split(state)
    writes[paths["card"]] = lambda tmp: Path(tmp).write_text(json_text(card))
    atomic_write_set(writes, suffix=".pt2")
    return paths


def _compile_package(program, path: str) -> None:
    """AOTInductor package of ``program`` at ``path``. Its generated code checks each input's
    shape, dtype and device against the exported ones when ``AOTI_RUNTIME_CHECK_INPUTS`` is set
    in the process that runs it; ``import cprl_fast`` (needed before loading, for the custom
    op) sets it unless the user has (docs/decisions.md), so a crop of another size raises
    instead of reading out of bounds. Batch size 1 is within the exported range, so the check of
    the batch's lower bound (which torch specialises to 2) is compiled out where torch has that
    setting (``aot_inductor.check_lowerbound``)."""
    from torch._inductor import config

    patch = {"aot_inductor.check_lowerbound": False} \
        if hasattr(config.aot_inductor, "check_lowerbound") else {}  # fmt: skip
    with config.patch(patch):
        torch._inductor.aoti_compile_and_package(program, package_path=path)
