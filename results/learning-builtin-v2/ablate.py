"""Issue 27's ablations: what makes a ResNet-18 trained from scratch rank builtin-v2's
held-out scenes. One run per call; prints the held-out SRCC during training and a JSON line at
the end (append those lines to ``runs.jsonl``; ``python results/learning-builtin-v2/ablate.py
--table runs.jsonl`` prints the table of README.md).

    python results/learning-builtin-v2/ablate.py --fold 0 --steps 600 --test patches --label family

Data: builtin-v2 (15 scenes x 10 distortions x 5 levels, pseudo-MOS = MS-SSIM min-max mapped),
5-fold cross-validation by scene (``cprl_fast.data.splits.scene_split``, seed 0, no validation
side): 12 training scenes, 3 test scenes per fold. Model: ``resnet`` (the plain quality
ResNet-18 of ``cprl_fast.models``, random initialisation). AdamW (weight decay 1e-4), one-cycle
learning rate, batch of random crops at native resolution (``--crop``, horizontal flips), or of
the whole image resized (``--resize``). Test: the whole image (``--test full``), its centre crop
or the mean score of its non-overlapping crop-sized patches (``--test patches``).

Options that are the ablations:
  --label score   the image's pseudo-MOS (as cprl-fast train does)
  --label family  the mean pseudo-MOS of the image's (distortion, level) over the training
                  scenes: the part of the label a no-reference model can know (the rest
                  depends on the scene's content)
  --groups G      a batch is G families (one scene and distortion, its 5 levels) cropped at one
                  place each, and the loss adds a hinge on every pair of a family ordered by its
                  labels (RankIQA's within-content ranking on the dataset's own levels)
  --loss          mse, plcc+rank (1 - PLCC plus a pairwise hinge) or plcc+rank+mse
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.stats import pearsonr, spearmanr, t

from cprl_fast.data import load_items
from cprl_fast.data.splits import scene_split
from cprl_fast.models.registry import build


def arguments(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--crop", type=int, default=64, help="training crop side, px")
    p.add_argument("--resize", type=int, default=0, help="resize images to this side first")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--loss", default="mse", choices=("mse", "plcc+rank", "plcc+rank+mse"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test", default="full", choices=("full", "center", "patches"))
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--label", default="score", choices=("score", "family"))
    p.add_argument("--groups", type=int, default=0)
    p.add_argument("--rank-weight", type=float, default=1.0)
    p.add_argument("--table", help="print the table of the JSON lines in this file and exit")
    return p.parse_args(argv)


def table(path: str) -> None:
    """Mean held-out SRCC per setting over its folds, with a 95% t-interval."""
    runs = defaultdict(list)
    for line in open(path):
        r = json.loads(line)
        key = (r["label"], r["test"], r["crop"], r["resize"], r["loss"], r["groups"], r["steps"])
        runs[key].append(r)
    print("| label | test | crop | loss | groups | steps | folds | held-out SRCC [95% CI] "
          "| s/run |")  # fmt: skip
    print("| --- | --- | ---: | --- | ---: | ---: | --- | --- | ---: |")
    for (label, test, crop, resize, loss, groups, steps), rs in sorted(runs.items()):
        v = [r["srcc"] for r in rs]
        m = statistics.mean(v)
        half = t.ppf(0.975, len(v) - 1) * statistics.stdev(v) / len(v) ** 0.5 if len(v) > 1 else 0
        folds = ",".join(str(r["fold"]) for r in rs)
        size = f"{crop} of {resize}" if resize else str(crop)
        secs = statistics.mean(r["seconds"] for r in rs)
        print(f"| {label} | {test} | {size} | {loss} | {groups} | {steps} | {folds} | "
              f"{m:.3f} [{m - half:.3f}, {m + half:.3f}] | {secs:.0f} |")  # fmt: skip


def main(argv=None) -> None:
    a = arguments(argv)
    if a.table:
        table(a.table)
        return
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    items, _ = load_items("builtin-v2")
    sides = scene_split(items, 0, val_ratio=0.0, folds=a.folds, fold=a.fold)

    def load(it):
        img = Image.open(it.path).convert("RGB")
        if a.resize:
            img = img.resize((a.resize, a.resize), Image.BICUBIC)
        return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)

    tr = [it for it in items if it.scene in set(sides["train"])]
    te = [it for it in items if it.scene in set(sides["test"])]
    x_tr, x_te = torch.stack([load(it) for it in tr]), torch.stack([load(it) for it in te])
    y_te = np.array([it.score for it in te])
    if a.label == "family":
        fam = defaultdict(list)
        for it in tr:
            fam[(it.distortion, it.level)].append(it.score)
        y_tr = torch.tensor([np.mean(fam[(it.distortion, it.level)]) for it in tr])
    else:
        y_tr = torch.tensor([it.score for it in tr])
    y_tr = y_tr.float()
    families = defaultdict(list)
    for k, it in enumerate(tr):
        families[(it.scene, it.distortion)].append(k)
    families = [torch.tensor(v) for v in families.values()]

    model = build("resnet", arch=a.arch)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.lr, total_steps=a.steps, pct_start=0.1)
    g = torch.Generator().manual_seed(a.seed)
    side = x_tr.shape[-1]

    def crops(idx, i, j):
        return torch.stack([x_tr[k, :, u : u + a.crop, v : v + a.crop]
                            for k, u, v in zip(idx, i, j, strict=True)])  # fmt: skip

    def batch():
        if a.groups:
            fam_ids = torch.randint(len(families), (a.groups,), generator=g)
            idx = torch.cat([families[f] for f in fam_ids])
            sizes = torch.tensor([len(families[f]) for f in fam_ids])
            ij = torch.randint(side - a.crop + 1, (2, a.groups), generator=g)
            i, j = ij[0].repeat_interleave(sizes), ij[1].repeat_interleave(sizes)
            group = torch.arange(a.groups).repeat_interleave(sizes)
            return crops(idx, i, j).float() / 255, y_tr[idx], group
        idx = torch.randint(len(x_tr), (a.batch,), generator=g)
        i, j = torch.randint(side - a.crop + 1, (2, a.batch), generator=g)
        x = crops(idx, i, j)
        flip = torch.rand(a.batch, generator=g) < 0.5
        x[flip] = x[flip].flip(-1)
        return x.float() / 255, y_tr[idx], None

    def loss_of(s, y, group):
        if group is not None:
            same = group[:, None] == group[None]
            d, dy = s[:, None] - s[None], y[:, None] - y[None]
            return F.mse_loss(s, y) + a.rank_weight * F.relu(0.02 - d[same & (dy > 0)]).mean()
        if a.loss == "mse":
            return F.mse_loss(s, y)
        sc, yc = s - s.mean(), y - y.mean()
        plcc = (sc * yc).sum() / (sc.norm() * yc.norm() + 1e-8)
        d, dy = s[:, None] - s[None], y[:, None] - y[None]
        out = (1 - plcc) + F.relu(-d * torch.sign(dy)).sum() / (dy != 0).sum().clamp(min=1)
        return out + F.mse_loss(s, y) if a.loss == "plcc+rank+mse" else out

    def evaluate(x_all, y_all):
        model.eval()
        out = []
        with torch.no_grad():
            for k in range(0, len(x_all), 25):
                x = x_all[k : k + 25].float() / 255
                if a.test == "center":
                    o = (side - a.crop) // 2
                    x = x[..., o : o + a.crop, o : o + a.crop]
                if a.test == "patches":
                    n, c = x.shape[0], a.crop
                    p = x.unfold(2, c, c).unfold(3, c, c).permute(0, 2, 3, 1, 4, 5)
                    out.append(model(p.reshape(-1, 3, c, c)).view(n, -1).mean(1))
                    continue
                out.append(model(x))
        model.train()
        s = torch.cat(out).numpy()
        return spearmanr(s, y_all)[0], pearsonr(s, y_all)[0]

    t0, log = time.time(), []
    for step in range(1, a.steps + 1):
        x, y, group = batch()
        loss = loss_of(model(x), y, group)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % max(a.steps // 5, 1) == 0 or step == a.steps:
            srcc, plcc = evaluate(x_te, y_te)
            sub = torch.arange(0, len(x_tr), 4)
            fit = evaluate(x_tr[sub], y_tr[sub].numpy())[0]
            log.append((step, round(time.time() - t0), round(srcc, 3), round(fit, 3)))
            print(f"step {step} ({time.time() - t0:.0f} s): loss {loss.item():.3f}, held-out "
                  f"SRCC {srcc:.3f} PLCC {plcc:.3f}, training-scene SRCC {fit:.3f}",
                  flush=True)  # fmt: skip
    out = {k: v for k, v in vars(a).items() if k != "table"}
    print(json.dumps({**out, "srcc": srcc, "plcc": plcc, "seconds": time.time() - t0,
                      "log": log}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
