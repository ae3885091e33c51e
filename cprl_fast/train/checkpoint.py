"""Checkpoints that are written atomically and resume exactly.

A checkpoint holds the model, every optimiser, the iteration, epoch and batch position, the RNG
states (torch CPU and CUDA, numpy, Python), the config, the split's identity and the best metric
so far. It is written to a temporary file beside the target and renamed into place, so a crash
never leaves a half-written checkpoint, and it is read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from torch import nn

from cprl_fast.io import atomic_write, open_regular_file, parse_json, write_bytes_atomic


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


def weights_digest(model: nn.Module) -> str:
    """SHA-256 (hex) of a model's state: every entry's name, dtype, shape and bytes, in order
    (what tells a model trained again, on another machine, from the one a result was of)."""
    h = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        flat = value.detach().cpu().contiguous().reshape(-1)
        h.update(f"{key} {flat.dtype} {tuple(value.shape)}\n".encode())
        h.update(flat.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_atomic(obj: dict, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then an atomic rename."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


#: Prefix of the model card's keys in a safetensors file's metadata (each value JSON).
SAFETENSORS_PREFIX = "cprl_fast."


def save_safetensors(state: dict, path: str | Path) -> None:
    """A model-only checkpoint (``"model"``: the state dict; every other key is the model card,
    JSON in the file's metadata) as safetensors, atomically: no pickle, loadable anywhere."""
    from safetensors.torch import save

    tensors = {k: v.detach().contiguous() for k, v in state["model"].items()}
    meta = {SAFETENSORS_PREFIX + k: json.dumps(v) for k, v in state.items() if k != "model"}
    # serialised in memory and written by atomic_write: the library's own temporary file
    # (safetensors' save_file writes one beside the target) never exists
    write_bytes_atomic(path, save(tensors, metadata=meta))


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
            try:
                state[key[len(SAFETENSORS_PREFIX) :]] = parse_json(value)
            except ValueError as err:
                raise ValueError(f"checkpoint {path}: metadata {key!r} is not JSON "
                                 f"({err})") from None  # fmt: skip
    if "config" not in state:
        raise RuntimeError(f"cannot read checkpoint {path}: a safetensors file without "
                           "the model card of cprl-fast export (no cprl_fast.config "
                           "metadata)")  # fmt: skip
    return state


#: What a checkpoint of this library holds (the one line an unusable file is told).
CHECKPOINT_SHAPE = ("a checkpoint of cprl-fast train or export: a dict with 'model' (the "
                    "state dict: names -> tensors) and 'config' (the model card, a JSON object)")


def load(path: str | Path, map_location="cpu") -> dict:
    """A checkpoint: ``torch.load(weights_only=True)`` (data only: a file holding any other
    Python object is refused, naming the object), or a ``.safetensors`` file of
    :func:`save_safetensors` (same keys). The content is checked to be :data:`CHECKPOINT_SHAPE`.
    Errors say in one line why a file cannot be used."""
    path = Path(path)
    if path.is_dir():
        found = sorted(p.name for p in path.iterdir()
                       if p.suffix in (".pt", ".safetensors") and p.is_file())  # fmt: skip
        listed = f"; it holds {', '.join(found)}" if found else \
            "; it holds no .pt or .safetensors file"  # fmt: skip
        raise IsADirectoryError(f"checkpoint {path} is a folder, not a file{listed}")
    if path.suffix == ".safetensors":
        _open_tensors_file(path, "checkpoint").close()  # missing, or a FIFO: said so
        state = _load_safetensors(path, map_location)
    else:
        state = read_tensors(path, "checkpoint", map_location)
    check_state(state, path)
    return state


def read_tensors(path: str | Path, what: str = "checkpoint", map_location="cpu") -> object:
    """``torch.load(path, weights_only=True)`` of a file of tensors and plain data (a
    checkpoint, pretrained weights), refused before any reading where one of its zip entries
    is compressed: ``torch.save`` stores every entry, and a compressed one inflates past the
    file's size (195 kB of deflate made a 200 MB tensor), so what a file can allocate stays
    bounded by its size. Errors name ``what`` and the file in one line."""
    path = Path(path)
    with _open_tensors_file(path, what) as fh:  # every read below is of this open file
        entries = _entries(fh)
        if _is_pt2_archive(entries):
            raise RuntimeError(f"cannot read {what} {path}: it is a torch.export program or "
                               "AOTInductor package (cprl-fast export --format pt2), not a "
                               "checkpoint or weights file: give best.pt or its .safetensors "
                               "export, or load it with torch.export.load after import "
                               "cprl_fast")  # fmt: skip
        packed = next((i.filename for i in entries if i.compress_type != zipfile.ZIP_STORED),
                      None)  # fmt: skip
        if packed is not None:
            raise RuntimeError(f"cannot read {what} {path}: its entry {packed!r} is compressed, "
                               "which torch.save never does (it could inflate far past the "
                               "file's size)")  # fmt: skip
        try:
            fh.seek(0)
            return torch.load(fh, map_location=map_location, weights_only=True)
        except Exception as err:  # unpickling errors name the file
            raise RuntimeError(f"cannot read {what} {path}: "
                               f"{_why_unreadable(fh, err)}") from None  # fmt: skip


def _open_tensors_file(path: Path, what: str) -> BinaryIO:
    """``path`` open for reading if it is a regular file; else ``FileNotFoundError`` (``<what>
    not found: <path>``) or :class:`~cprl_fast.io.NotARegularFile` for a folder, FIFO, device
    or socket, which is never read (a FIFO would block the reader)."""
    try:
        return open_regular_file(path, what)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None


def _entries(fh: BinaryIO) -> list[zipfile.ZipInfo]:
    """The entries of the zip archive in ``fh`` (none for a file that is no zip archive:
    ``torch.load`` says what it is)."""
    try:
        fh.seek(0)
        with zipfile.ZipFile(fh) as archive:
            return archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return []


def _is_pt2_archive(entries: list[zipfile.ZipInfo]) -> bool:
    """Whether a zip archive of ``entries`` is a PT2 archive (``torch.export.save``,
    AOTInductor's packages): an ``archive_format`` entry in its top folder."""
    return any(i.filename.count("/") == 1 and i.filename.endswith("/archive_format")
               for i in entries)  # fmt: skip


def check_state(state: object, path: str | Path) -> None:
    """Raises ValueError naming ``path`` unless ``state`` is :data:`CHECKPOINT_SHAPE`."""
    if not isinstance(state, dict):
        what = "a tensor" if isinstance(state, torch.Tensor) else f"a {type(state).__name__}"
        raise ValueError(f"checkpoint {path} holds {what}, not {CHECKPOINT_SHAPE}")
    if "model" not in state or "config" not in state:
        plain = state and all(isinstance(v, torch.Tensor) for v in state.values())
        keys = ", ".join(map(str, list(state)[:5]))
        what = "a plain state dict" if plain else f"a dict of {keys}"
        raise ValueError(f"checkpoint {path} holds {what}, not {CHECKPOINT_SHAPE}")
    model = state["model"]
    if not isinstance(model, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items()
    ):
        raise ValueError(f"checkpoint {path}: 'model' is not a state dict (names -> tensors)")
    for key, what in (("config", "model card"), ("split", "split record")):
        value = state.get(key, "{}")
        if isinstance(value, str):
            try:
                value = parse_json(value)
            except ValueError as err:
                raise ValueError(f"checkpoint {path}: its {what} ({key!r}) is not JSON "
                                 f"({err})") from None  # fmt: skip
        if not isinstance(value, dict):
            raise ValueError(f"checkpoint {path}: its {what} ({key!r}) must be a JSON object, "
                             f"got {type(value).__name__}")  # fmt: skip


def card_config(state: dict) -> dict:
    """The model card (``state["config"]``) of a checked state as a dict."""
    return _json_object(state["config"])


def card_split(state: dict) -> dict:
    """The split a checked state's run was trained on (``state["split"]``: dataset, score
    file hash, scenes, counts) as a dict; ``{}`` when it records none."""
    return _json_object(state.get("split", "{}"))


def _json_object(value: str | dict) -> dict:
    """A card entry, JSON text (``.pt``) or already a dict (safetensors metadata), as a dict."""
    return parse_json(value) if isinstance(value, str) else dict(value)


def _why_unreadable(fh: BinaryIO, err: Exception) -> str:
    """One line on why ``torch.load(weights_only=True)`` failed on the file ``fh``. A refused
    object is named; loading it anyway is never suggested (a checkpoint is data, not a
    program)."""
    text = str(err)
    if os.fstat(fh.fileno()).st_size == 0:
        return "the file is empty"
    refused = "not only tensors and plain data (checkpoints are loaded as data, never run)"
    for pattern, what in ((r"GLOBAL (\S+?)(?: whose|\s|$)", "a Python object ({})"),
                          (r"unrecognized function (\S+)", "a call of {}")):
        found = re.search(pattern, text)
        if found:
            return f"refused: it holds {what.format(found.group(1).rstrip('.,'))}, {refused}"
    fh.seek(0)
    if not zipfile.is_zipfile(fh):
        return "not a PyTorch checkpoint (not a zip archive: truncated, or another format)"
    found = re.search(r"Unsupported operand (\S+)", text)
    if found:
        return f"refused: it holds a pickle instruction (opcode {found.group(1)}), {refused}"
    if "Weights only load failed" in text or "weights_only" in text:
        return f"refused: it holds Python objects other than tensors, {refused}"
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(err).__name__)
    return f"damaged or truncated ({first})"
