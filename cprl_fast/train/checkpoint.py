"""Checkpoints that are written atomically and resume exactly.

A checkpoint holds the model, every optimiser, the iteration, epoch and batch position, the RNG
states (torch CPU and CUDA, numpy, Python), the config, the split's identity and the best metric
so far. It is written to a temporary file beside the target and renamed into place, so a crash
never leaves a half-written checkpoint, and it is read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import random
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from cprl_fast.io import atomic_write


def rng_state() -> dict:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state(),
        "python": _python_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _numpy_state() -> dict:
    # the global legacy RNG is what third-party code draws from: it is saved as it is
    name, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}  # fmt: skip


def _python_state() -> dict:
    version, internal, gauss = random.getstate()
    return {"version": version, "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss": gauss}  # fmt: skip


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["internal"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(obj: dict, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then an atomic rename."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


#: Prefix of the model card's keys in a safetensors file's metadata (each value JSON).
SAFETENSORS_PREFIX = "cprl_fast."


def save_safetensors(state: dict, path: str | Path) -> None:
    """A model-only checkpoint (``"model"``: the state dict; every other key is the model card,
    JSON in the file's metadata) as safetensors, atomically: no pickle, loadable anywhere."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous() for k, v in state["model"].items()}
    meta = {SAFETENSORS_PREFIX + k: json.dumps(v) for k, v in state.items() if k != "model"}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def _load_safetensors(path: Path, map_location) -> dict:
    from safetensors import SafetensorError, safe_open

    device = str(map_location) if map_location is not None else "cpu"
    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            meta = f.metadata() or {}
            state = {"model": {k: f.get_tensor(k) for k in f.keys()}}
    except (SafetensorError, OSError) as err:
        raise RuntimeError(f"cannot read checkpoint {path}: not a readable safetensors "
                           f"file ({err})") from err  # fmt: skip
    for key, value in meta.items():
        if key.startswith(SAFETENSORS_PREFIX):
            state[key[len(SAFETENSORS_PREFIX) :]] = json.loads(value)
    if "config" not in state:
        raise RuntimeError(f"cannot read checkpoint {path}: a safetensors file without "
                           "the model card of cprl-fast export (no cprl_fast.config "
                           "metadata)")  # fmt: skip
    return state


def load(path: str | Path, map_location="cpu") -> dict:
    """A checkpoint: ``torch.load(weights_only=True)``, or a ``.safetensors`` file of
    :func:`save_safetensors` (same keys). Errors say in one line why a file cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return _load_safetensors(path, map_location)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # unpickling errors name the file
        raise RuntimeError(f"cannot read checkpoint {path}: {_why_unreadable(path, err)}") from err


def _why_unreadable(path: Path, err: Exception) -> str:
    """One line on why ``torch.load(weights_only=True)`` failed on ``path``."""
    text = str(err)
    if path.stat().st_size == 0:
        return "the file is empty"
    unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if unsafe:
        return (f"refused: it holds a Python object ({unsafe.group(1)}) other than tensors and "
                f"plain data, which weights_only=True does not load")  # fmt: skip
    if not zipfile.is_zipfile(path):
        return "not a PyTorch checkpoint (not a zip archive: truncated, or another format)"
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(err).__name__)
    return f"damaged or truncated ({first})"
