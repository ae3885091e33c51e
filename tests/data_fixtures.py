"""Small dataset fixtures in the owners' and pyiqa's formats (DATASETS.md), made by the tests."""

from __future__ import annotations

import csv
import io
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.io import savemat

REALMETA = Path(__file__).resolve().parent / "data" / "koniq10k"  # see tests/data/README.md


def tiny_image(path: Path, seed: int = 0, size: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)


def _cell(strings: list[str]) -> np.ndarray:
    cell = np.empty((1, len(strings)), dtype=object)
    for i, s in enumerate(strings):
        cell[0, i] = s
    return cell


def make_live_official(root: Path, seed: int = 0) -> dict:
    """LIVE release 2: 982 entries, 203 of them reference copies (orgs == 1), 29 scenes."""
    from cprl_fast.data.live import FOLDERS

    rng = np.random.default_rng(seed)
    n = sum(c for _, c in FOLDERS)
    orgs = np.zeros(n)
    orgs[rng.choice(n, 203, replace=False)] = 1
    dmos_new = rng.uniform(-2.6, 111.8, n)
    dmos_old = rng.uniform(0, 100, n)
    scenes = [f"scene{(i * 7) % 29:02d}.bmp" for i in range(n)]
    k = 0
    for folder, count in FOLDERS:
        for i in range(1, count + 1):
            tiny_image(root / folder / f"img{i}.bmp", k)
            k += 1
    savemat(root / "dmos_realigned.mat", {"dmos_new": dmos_new[None], "orgs": orgs[None],
                                          "dmos_std": np.ones((1, n))})  # fmt: skip
    savemat(root / "dmos.mat", {"dmos": dmos_old[None], "orgs": orgs[None]})
    savemat(root / "refnames_all.mat", {"refnames_all": _cell(scenes)})
    return {"dmos_new": dmos_new, "dmos": dmos_old, "orgs": orgs, "scenes": scenes}


def make_live_pyiqa(root: Path, rows: int = 40, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dmos = rng.uniform(10, 90, rows)
    with open(root / "meta_info_LIVEIQADataset.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["ref_name", "dist_name", "mos"])
        for i in range(rows):
            ref = f"refimgs/ref{i % 8}.bmp"
            dist = f"{['jp2k', 'jpeg', 'wn'][i % 3]}/img{i + 1}.bmp"
            tiny_image(root / dist, i)
            w.writerow([ref, dist, f"{dmos[i]:.4f}"])
    return dmos


def vcl_names() -> list[str]:
    return [
        f"IMG_{s:02d}_{t}_{lv}"
        for s in range(1, 24)
        for t in ("AWGN", "BLU", "J2K", "JPG")
        for lv in range(1, 7)
    ]


def make_vcl(root: Path, header: bool = True, seed: int = 2) -> dict[str, float]:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    scores = {n: float(rng.uniform(1.6, 96.5)) for n in vcl_names()}
    for i, n in enumerate(scores):
        tiny_image(root / "images" / (n + (".jpg" if "_JPG_" in n else ".bmp")), i)
    tiny_image(root / "images" / "IMG_01.bmp")  # a reference: not scored
    with open(root / "vcl_mos.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        if header:
            w.writerow(["image_name", "MOS"])
        for n, s in scores.items():
            w.writerow([n + (".jpg" if "_JPG_" in n else ".bmp"), f"{s:.3f}"])
    return scores


def make_livec_official(root: Path, extra: int = 40, seed: int = 3) -> list[str]:
    """ChallengeDB_release nested twice; the 7 training images first."""
    base = root / "ChallengeDB_release" / "ChallengeDB_release"
    rng = np.random.default_rng(seed)
    names = [f"t{i}.bmp" for i in range(1, 8)] + [f"{100 + i}.JPG" for i in range(extra)]
    mos = rng.uniform(3, 92, len(names))
    for i, n in enumerate(names):
        sub = "Images/trainingImages" if n.startswith("t") else "Images"
        tiny_image(base / sub / n, i)
    (base / "Data").mkdir(parents=True)
    cell = np.empty((len(names), 1), dtype=object)
    for i, n in enumerate(names):
        cell[i, 0] = n
    savemat(base / "Data" / "AllImages_release.mat", {"AllImages_release": cell})
    savemat(base / "Data" / "AllMOS_release.mat", {"AllMOS_release": mos[None]})
    savemat(
        base / "Data" / "AllStdDev_release.mat", {"AllStdDev_release": np.ones((1, len(names)))}
    )
    return names


def make_livec_pyiqa(root: Path, extra: int = 30, seed: int = 4) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = [f"t{i}.bmp" for i in range(1, 8)] + [f"{200 + i}.bmp" for i in range(extra)]
    with open(root / "meta_info_LIVEChallengeDataset.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["img_name", "mos", "std"])
        for i, n in enumerate(names):
            tiny_image(root / "Images" / n, i)
            w.writerow([n, f"{rng.uniform(3, 92):.3f}", "10.0"])
    return names


def koniq_placeholders(root: Path, names: list[str], resolution: str = "1024x768") -> None:
    """One tiny JPEG written under every name (the real images are not available)."""
    folder = root / resolution
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), (120, 90, 60)).save(buf, format="JPEG")
    data = buf.getvalue()
    for n in names:
        (folder / n).write_bytes(data)


def koniq_names() -> list[str]:
    with open(REALMETA / "koniq10k_distributions_sets.csv", newline="") as fh:
        return [r["image_name"] for r in csv.DictReader(fh)]


def make_koniq_scores_file(root: Path) -> dict[str, float]:
    """The official scores file rebuilt from the real split file (tests/data/README.md)."""
    out = {}
    with (
        open(REALMETA / "koniq10k_distributions_sets.csv", newline="") as fh,
        open(root / "koniq10k_scores_and_distributions.csv", "w", newline="") as dst,
    ):
        w = csv.writer(dst)
        w.writerow(
            ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD", "MOS_zscore"]
        )
        for r in csv.DictReader(fh):
            c = [float(r[f"c{i}"]) for i in range(1, 6)]
            total = int(r["c_total"])
            mos = sum((i + 1) * ci for i, ci in enumerate(c))
            out[r["image_name"]] = mos
            w.writerow([r["image_name"], *(round(ci * total) for ci in c), total, f"{mos:.6f}",
                        r["SD"], r["MOS"]])  # fmt: skip
    return out


def copy_realmeta(root: Path, name: str) -> Path:
    return Path(shutil.copy(REALMETA / name, root / name))


def shared_builtin_root(tmp_path_factory) -> Path:
    """One folder per test session for the generated built-in datasets: each is generated once
    (under a file lock) and only read after, so every module that just reads it shares it, and
    so do pytest-xdist's workers (the folder is in their common parent)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    root = base / "shared-builtin"
    root.mkdir(exist_ok=True)
    return root


def train_tiny_run(tmp_path_factory, size: int, **config) -> Path:
    """A run folder (best.pt, last.pt) of a ResNet-18 model trained for a step or two on the
    built-in data at ``size`` px; ``config``: the model, objective and steps."""
    from cprl_fast.data import load_splits
    from cprl_fast.train import TrainConfig, Trainer

    root = shared_builtin_root(tmp_path_factory)
    out = tmp_path_factory.mktemp("run")
    sets = load_splits("builtin", root, ("train", "val"), image_size=size)
    cfg = TrainConfig(model_options={"arch": "resnet18"}, image_size=size, batch_size=8,
                      epochs=1, out_dir=str(out), root=str(root), **config)  # fmt: skip
    Trainer(cfg, sets["train"], sets["val"]).fit()
    return out
