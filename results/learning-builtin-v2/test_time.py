"""Does scoring more of an image raise the held-out SRCC? Test-time variants on the trained
models of results/certified-builtin-v2-native (``--recipe native``, 20 epochs, seed 0; the
models are not committed: that study's command retrains them), each on all 250 images of its
fold's held-out scenes:

- ``16 tiles mean``: the library's scoring (the mean over the 16 non-overlapping 64 px tiles);
- ``16 tiles median``: their median;
- ``49 tiles (stride 32) mean``: overlapping tiles;
- ``49 tiles + hflip mean``: those and their mirror images;
- ``whole image``: the 256 px image in one forward pass (no tiling).

    python results/learning-builtin-v2/test_time.py results/certified-builtin-v2-native resnet,ca
"""

import sys

import numpy as np
import torch
from scipy.stats import spearmanr

from cprl_fast.train.runs import load_run_splits, load_trained

torch.set_num_threads(1)
root, models = sys.argv[1], sys.argv[2].split(",")
PATCH = 64


def tile_scores(net: torch.nn.Module, x: torch.Tensor, stride: int) -> torch.Tensor:
    """[N, T] scores of each image's PATCH px tiles at ``stride`` px."""
    starts = range(0, x.shape[-1] - PATCH + 1, stride)
    t = torch.stack([x[..., i : i + PATCH, j : j + PATCH] for i in starts for j in starts], 1)
    return torch.cat([net.score(c) for c in t.flatten(0, 1).split(256)]).view(len(x), -1)


out = {}
for fold in range(3):
    for m in models:
        trained = load_trained(f"{root}/runs/fold{fold}-seed0/models/{m}/last.pt")
        net = trained.model
        test = load_run_splits(trained.config, ("test",), from_card=True)["test"]
        xs, ys = zip(*[test[i] for i in range(len(test))], strict=True)
        x, y = torch.stack(xs), np.array([float(v) for v in ys])
        with torch.no_grad():
            s16, s49 = tile_scores(net, x, 64), tile_scores(net, x, 32)
            s49_flipped = tile_scores(net, x.flip(-1), 32)
            variants = {
                "16 tiles mean": s16.mean(1),
                "16 tiles median": s16.median(1).values,
                "49 tiles (stride 32) mean": s49.mean(1),
                "49 tiles + hflip mean": (s49.mean(1) + s49_flipped.mean(1)) / 2,
                "whole image": torch.cat([net.score(c) for c in x.split(16)]),
            }
        out[(fold, m)] = {k: spearmanr(v.numpy(), y)[0] for k, v in variants.items()}
        print(fold, m, len(y), {k: round(float(v), 3) for k, v in out[(fold, m)].items()},
              flush=True)  # fmt: skip
for m in models:
    means = {k: round(float(np.mean([out[(f, m)][k] for f in range(3)])), 3) for k in out[(0, m)]}
    print(m, "mean over the folds:", means)
