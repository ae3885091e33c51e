"""Writes ``fr-labels.json``: seven full-reference scores of every builtin-v2 image against its
scene's reference (piq's implementations, default settings, data range 1), the inputs of the
``--label fr-mean`` ablation of ``ablate.py`` (round 6 of README.md).

    python results/learning-builtin-v2/fr_labels.py

Keys: the image's file name; values: ``{metric: score}``. ``gmsd`` and ``mdsi`` are distances
(lower is better); the others similarities (higher is better).
"""

import json
from pathlib import Path

import numpy as np
import piq
import torch
from PIL import Image

from cprl_fast.data import load_items

#: name -> (piq function, True where lower is better)
METRICS = {
    "ms_ssim": (piq.multi_scale_ssim, False),
    "vif_p": (piq.vif_p, False),
    "fsim": (piq.fsim, False),
    "gmsd": (piq.gmsd, True),
    "haarpsi": (piq.haarpsi, False),
    "mdsi": (piq.mdsi, True),
    "vsi": (piq.vsi, False),
}
OUT = Path(__file__).with_name("fr-labels.json")


def tensor(path) -> torch.Tensor:
    a = np.asarray(Image.open(path).convert("RGB")).copy()
    return torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255


def main() -> None:
    torch.set_num_threads(1)
    items, _ = load_items("builtin-v2")
    refs = {}
    scores = {}
    for k in range(0, len(items), 25):
        chunk = items[k : k + 25]
        x = torch.cat([tensor(it.path) for it in chunk])
        for it in chunk:
            if it.scene not in refs:
                refs[it.scene] = tensor(f"{it.path.rsplit('/images/', 1)[0]}/refs/{it.scene}.png")
        r = torch.cat([refs[it.scene] for it in chunk])
        values = {n: fn(x, r, data_range=1.0, reduction="none").tolist()
                  for n, (fn, _) in METRICS.items()}  # fmt: skip
        for i, it in enumerate(chunk):
            scores[Path(it.path).name] = {n: round(v[i], 6) for n, v in values.items()}
        print(f"{k + len(chunk)} / {len(items)}", flush=True)
    OUT.write_text(json.dumps(scores, indent=0, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
