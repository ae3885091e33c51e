"""Issue 27's ablations: what makes a ResNet-18 trained from scratch rank builtin-v2's held-out
scenes. One run per call: it prints the held-out SRCC five times during training and a JSON line
at the end; ``runs.jsonl`` holds the committed runs' lines and ``--table runs.jsonl`` prints the
table of README.md.

    python results/learning-builtin-v2/ablate.py --fold 0 --steps 600 --test patches

This is the script the committed runs came from, formatted (the computation is unchanged: a
30-step run gives the same SRCC to the last digit).

Data: builtin-v2 (15 scenes x 10 distortions x 5 levels; pseudo-MOS = MS-SSIM, min-max mapped),
5-fold cross-validation by scene (``scene_split``, seed 0, no validation side): 12 training
scenes, 3 test scenes. Model: ``resnet`` of cprl_fast.models (the plain quality ResNet-18),
random initialisation. AdamW (weight decay 1e-4), one-cycle learning rate peaking at ``--lr``,
batches of ``--batch`` random ``--crop`` crops at native resolution (256 px images; horizontal
flips), or of the images resized to ``--resize`` first. Test: the whole image (``--test full``),
the centre crop, or the mean score of the non-overlapping crop-sized patches (``patches``).

The ablations: ``--label score`` (the image's pseudo-MOS, as ``cprl-fast train`` uses) or
``family`` (the mean pseudo-MOS of the image's distortion and level over the training scenes:
the part of the label that does not depend on the scene's content); ``--groups G`` (a batch is G
families, one scene and distortion at its 5 levels, cropped at one place each, and a hinge on
every pair of a family ordered by its labels is added: RankIQA's within-content ranking on the
dataset's own levels); ``--loss`` (mse, or 1 - PLCC plus a pairwise hinge).
"""

import argparse
import json
import time
from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.stats import pearsonr, rankdata, spearmanr

from cprl_fast.data import load_items
from cprl_fast.data.splits import scene_split
from cprl_fast.models.inputs import LocalContrastNorm
from cprl_fast.models.registry import build

p = argparse.ArgumentParser()
p.add_argument("--fold", type=int, default=0)
p.add_argument("--folds", type=int, default=5)
p.add_argument("--crop", type=int, default=64)
p.add_argument("--resize", type=int, default=0)
p.add_argument("--steps", type=int, default=1000)
p.add_argument("--batch", type=int, default=32)
p.add_argument("--lr", type=float, default=1e-3)
p.add_argument("--loss", default="mse")
p.add_argument("--seed", type=int, default=0)
p.add_argument("--test", default="full")
p.add_argument("--arch", default="resnet18")
p.add_argument("--threads", type=int, default=2)
p.add_argument("--label", default="score")
p.add_argument(
    "--groups",
    type=int,
    default=0,
    help="batch = groups x 5 levels of one (scene, type), aligned crops",
)
p.add_argument("--rank_weight", type=float, default=1.0)
p.add_argument("--ema", type=float, default=0.0,
               help="evaluate an exponential moving average of the weights and buffers with "
               "this decay per step (0: the weights as trained)")  # fmt: skip
p.add_argument("--norm", default="none",
               help="input normalisation: none, or lcn (Kang et al. 2014's local contrast "
               "normalisation, per channel, 7x7 window, constant 0.02)")  # fmt: skip
p.add_argument("--aux", type=float, default=0.0,
               help="weight of an auxiliary cross-entropy on the image's (distortion, level), "
               "a 50-way linear head on the pooled features (0: none); the JSON line then also "
               "has srcc_posterior: the expected family label under the head's mean softmax "
               "over the patches")  # fmt: skip
p.add_argument("--aug", default="flip",
               help="flip (horizontal flips) or dihedral (the 8 flips and quarter turns)")
p.add_argument("--dense", type=int, default=0,
               help="K: add K more images per (training scene, distortion type), each at a "
               "parameter drawn between the type's mildest and strongest level (uniform in "
               "the parameter, seeded), labelled by its MS-SSIM to the reference under the "
               "dataset's own min-max map (0: none)")  # fmt: skip
p.add_argument("--leaves", type=int, default=0,
               help="K: add K procedural scenes (a dead-leaves image each: discs of power-law "
               "radii in colours drawn from the training references, with 1/f texture, "
               "150-3000 discs and texture 0.01-0.1 drawn per scene; "
               "leaves_scene), each distorted by builtin-v2's ten types at their five levels "
               "and labelled by its MS-SSIM to its clean version under the dataset's own "
               "min-max map (0: none)")  # fmt: skip
p.add_argument("--pretrain", type=int, default=0,
               help="steps of ranking pretraining first (RankIQA's idea, no download): each "
                    "step distorts --pretrain-crops crops of the training scenes' references on "
                    "the fly, one random type each at 4 random strengths between its levels 1 "
                    "and 5 plus the clean crop, and a hinge orders every pair of one crop's "
                    "versions by strength")  # fmt: skip
p.add_argument("--pretrain-crops", type=int, default=8)
p.add_argument("--joint", type=float, default=0.0,
               help="weight of the pretraining's ranking hinge added to every main step (a "
                    "ranking batch of --pretrain-crops crops beside the MOS batch)")  # fmt: skip
p.add_argument("--pretrain-lr", type=float, default=0.0,
               help="peak learning rate of the pretraining (0: --lr)")  # fmt: skip
p.add_argument("--table", help="print the table of these runs' JSON lines and exit")
p.add_argument("--ceiling", action="store_true",
               help="print each fold's SRCC of the distortion-level oracle, exit")  # fmt: skip
p.add_argument("--fr", action="store_true",
               help="also report the held-out SRCC against the labels of --label fr-mean "
               "(srcc_fr; implied by --label fr-mean)")  # fmt: skip
a = p.parse_args()
a.fr = a.fr or a.label == "fr-mean"
if a.ceiling:  # knows each test image's distortion and level, predicts the family label
    items, _ = load_items("builtin-v2")
    for fold in range(a.folds):
        sides = scene_split(items, 0, val_ratio=0.0, folds=a.folds, fold=fold)
        known = defaultdict(list)
        for it in items:
            if it.scene in sides["train"]:
                known[(it.distortion, it.level)].append(it.score)
        test = [it for it in items if it.scene in sides["test"]]
        guess = [np.mean(known[(it.distortion, it.level)]) for it in test]
        print(f"fold {fold} ({', '.join(sides['test'])}): SRCC "
              f"{spearmanr(guess, [it.score for it in test])[0]:.3f}")  # fmt: skip
    raise SystemExit(0)
if a.table:
    import statistics

    from scipy.stats import t as student_t

    runs = defaultdict(list)
    for line in open(a.table):
        r = json.loads(line)
        if "srcc_label" in r:  # the first fr-mean runs' name of srcc_fr
            r["srcc_fr"] = r.pop("srcc_label")
        groups = f"{r['groups']} (weight {r['rank_weight']:g})" if r.get("groups") else "-"
        norm = r.get("norm", "none") + (f", EMA {r['ema']:g}" if r.get("ema") else "")
        norm += ", dihedral" if r.get("aug") == "dihedral" else ""
        norm += f", aux {r['aux']:g}" if r.get("aux") else ""
        norm += f", {r['dense']} more images per scene and type" if r.get("dense") else ""
        norm += f", {r['leaves']} dead-leaves scenes" if r.get("leaves") else ""
        if r.get("pretrain"):
            norm += f", ranking pretraining {r['pretrain']} steps x {r['pretrain_crops']} crops"
            if r.get("pretrain_lr") and r["pretrain_lr"] != r["lr"]:
                norm += f" (peak lr {r['pretrain_lr']:g})"
        norm += f", peak lr {r['lr']:g}" if r["lr"] != 1e-3 else ""
        if r.get("joint"):
            norm += f", the ranking hinge in every step (weight {r['joint']:g})"
        if r.get("fr") and r["label"] != "fr-mean":  # a re-run that also scores srcc_fr
            norm += " (re-run with --fr)"
        label = r["label"] if r["steps"] else "none (pretraining alone)"
        key = (label, norm, r["resize"], r["crop"], r["batch"], r["test"],
               r["loss"], groups, r["steps"])  # fmt: skip
        runs[key].append(r)
    print("| label | input | norm, weights, augmentation, auxiliary loss | batch | test | loss | "
          "groups | steps | folds | held-out SRCC, mean [95% t-interval] | per fold | "
          "s per run |")  # fmt: skip
    print("| --- | --- | --- | ---: | --- | --- | --- | ---: | --- | --- | --- | ---: |")
    for (label, norm, resize, crop, batch, test, loss, groups, steps), rs in sorted(runs.items()):
        rs.sort(key=lambda r: r["fold"])
        v = [r["srcc"] for r in rs]
        m = statistics.mean(v)
        half = (student_t.ppf(0.975, len(v) - 1) * statistics.stdev(v) / len(v) ** 0.5
                if len(v) > 1 else float("nan"))  # fmt: skip
        size = f"resized to {resize}" if resize else f"{crop} px crops"
        interval = f"[{m - half:.3f}, {m + half:.3f}]" if len(v) > 1 else "(one fold)"
        row = (f"| {label} | {size} | {norm} | {batch} | {test} | {loss} | {groups} | {steps} | "
               f"{','.join(str(r['fold']) for r in rs)} | {m:.3f} {interval} "
               f"| {', '.join(f'{x:.2f}' for x in v)} | "
               f"{statistics.mean(r['seconds'] for r in rs):.0f} |")  # fmt: skip
        print(row)
        # the same runs read out otherwise: by the aux head; by the ranks of the pretrained
        # ranker plus the fine-tuned model's
        for field, name in (("srcc_posterior", "posterior"),
                            ("srcc_ensemble", "ranker + model (ranks)"),
                            ("srcc_fr", "against the fr-mean labels")):  # fmt: skip
            if len(rs) < 2 or not all(field in r for r in rs):
                continue
            v = [r[field] for r in rs]
            m = statistics.mean(v)
            half = student_t.ppf(0.975, len(v) - 1) * statistics.stdev(v) / len(v) ** 0.5
            cells = row.split(" | ")
            cells[0] = f"| {name}"
            cells[-3] = f"{m:.3f} [{m - half:.3f}, {m + half:.3f}]"
            cells[-2] = ", ".join(f"{x:.2f}" for x in v)
            print(" | ".join(cells))
    raise SystemExit(0)
torch.set_num_threads(a.threads)
torch.manual_seed(a.seed)
items, _ = load_items("builtin-v2")
sides = scene_split(items, 0, val_ratio=0.0, folds=a.folds, fold=a.fold)


def load(it):
    img = Image.open(it.path).convert("RGB")
    if a.resize:
        img = img.resize((a.resize, a.resize), Image.BICUBIC)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)


def fr_mean(subset):
    """--label fr-mean: per image, the mean over fr_labels.METRICS of its score min-max mapped
    over all 750 images (distances negated first), as KADIS-700k-style pseudo-MOS from several
    full-reference metrics rather than MS-SSIM alone."""
    from pathlib import Path

    from fr_labels import METRICS, OUT

    table = json.loads(OUT.read_text())
    mapped = {}
    for name, (_, lower_better) in METRICS.items():
        v = np.array([table[Path(it.path).name][name] for it in items])
        v = -v if lower_better else v
        mapped[name] = dict(zip([Path(it.path).name for it in items],
                                (v - v.min()) / (v.max() - v.min()), strict=True))  # fmt: skip
    return [float(np.mean([mapped[n][Path(it.path).name] for n in METRICS])) for it in subset]


tr = [it for it in items if it.scene in set(sides["train"])]
te = [it for it in items if it.scene in set(sides["test"])]
Xtr = torch.stack([load(it) for it in tr])
if (
    a.label == "family"
):  # the mean pseudo-MOS of the image's (distortion, level) over the training scenes
    fam = defaultdict(list)
    for it in tr:
        fam[(it.distortion, it.level)].append(it.score)
    ytr = torch.tensor([np.mean(fam[(it.distortion, it.level)]) for it in tr], dtype=torch.float32)
elif a.label == "fr-mean":  # the mean of seven full-reference scores (fr_labels.py)
    ytr = torch.tensor(fr_mean(tr), dtype=torch.float32)
else:
    ytr = torch.tensor([getattr(it, a.label) for it in tr], dtype=torch.float32)


def training_references() -> dict:
    """The training scenes' reference photographs, by scene name."""
    ref_dir = tr[0].path.rsplit("/images/", 1)[0] + "/refs"
    return {s: Image.open(f"{ref_dir}/{s}.png").convert("RGB")
            for s in sorted({it.scene for it in tr})}  # fmt: skip


def add_to_training(made: list[tuple]) -> None:
    """Appends ``(image, reference)`` pairs to the training set, each labelled by its MS-SSIM
    to the reference under builtin-v2's own min-max map."""
    global Xtr, ytr
    from cprl_fast.data.distortions import ms_ssim

    lo, hi = min(it.raw_score for it in items), max(it.raw_score for it in items)
    y = [(ms_ssim(img, ref) - lo) / (hi - lo) for img, ref in made]
    x = [torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1) for img, _ in made]
    Xtr = torch.cat([Xtr, torch.stack(x)])
    ytr = torch.cat([ytr, torch.tensor(y, dtype=torch.float32)])


if a.dense:  # more images of the training scenes, at parameters between the dataset's levels
    from cprl_fast.data.distortions import LEVELS_V2, distort_by

    rng = np.random.default_rng(1000 + a.seed)
    made = []
    t_gen = time.time()
    for ref in training_references().values():
        for kind, params in LEVELS_V2.items():
            for _ in range(a.dense):
                value = rng.uniform(min(params), max(params))
                made.append((distort_by(ref, kind, value, seed=int(rng.integers(2**31))), ref))
    add_to_training(made)
    print(f"dense: {len(made)} images in {time.time() - t_gen:.0f}s", flush=True)


def leaves_scene(rng, palette, size=256, discs=3000, r_min=2.0, r_max=96.0, texture=0.06):
    """One dead-leaves image (Lee, Mumford and Huang 2001's occlusion model; Baradad et al.
    2021 pretrain on such images): ``discs`` discs, later ones on top, radii drawn from
    p(r) ~ r^-3 on [r_min, r_max] px, each one colour drawn from ``palette`` ([K, 3] uint8),
    then a 1/f noise field of standard deviation ``texture`` (on [0, 1]) multiplied in."""
    from PIL import ImageDraw

    img = Image.new("RGB", (size, size), tuple(int(v) for v in palette[rng.integers(len(palette))]))
    draw = ImageDraw.Draw(img)
    u = rng.random(discs)
    radii = (r_min**-2 - u * (r_min**-2 - r_max**-2)) ** -0.5
    centres = rng.random((discs, 2)) * size
    for (cx, cy), r in zip(centres, radii, strict=True):
        colour = tuple(int(v) for v in palette[rng.integers(len(palette))])
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    fy, fx = np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size), indexing="ij")
    amp = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / size)
    field = np.real(np.fft.ifft2(amp * np.exp(2j * np.pi * rng.random((size, size)))))
    field = field / field.std() * texture
    arr = np.asarray(img, dtype=np.float64) / 255 * (1 + field[..., None])
    return Image.fromarray(np.round(np.clip(arr, 0, 1) * 255).astype(np.uint8))


if a.leaves:  # procedural scenes, distorted at the dataset's own levels
    from cprl_fast.data.distortions import LEVELS_V2, distort

    palette = np.concatenate([np.asarray(ref).reshape(-1, 3)[::97]
                              for ref in training_references().values()])  # fmt: skip
    rng = np.random.default_rng(2000 + a.seed)
    made = []
    t_gen = time.time()
    for _ in range(a.leaves):
        discs = int(np.exp(rng.uniform(np.log(150), np.log(3000))))  # sparse to busy
        ref = leaves_scene(rng, palette, discs=discs, texture=rng.uniform(0.01, 0.1))
        for kind in LEVELS_V2:
            for level in range(1, 6):
                made.append((distort(ref, kind, level, seed=int(rng.integers(2**31))), ref))
    add_to_training(made)
    print(f"leaves: {len(made)} images of {a.leaves} scenes in {time.time() - t_gen:.0f}s",
          flush=True)  # fmt: skip
Xte = torch.stack([load(it) for it in te])
yte = np.array([it.score for it in te])


# LocalContrastNorm: the library's (cprl_fast.models.inputs), the same formula these runs used


classes = sorted({(it.distortion, it.level) for it in items})
cls_tr = torch.tensor([classes.index((it.distortion, it.level)) for it in tr])
if a.dense or a.leaves:  # added images: no class (cross-entropy ignores -100)
    cls_tr = torch.cat([cls_tr, torch.full((len(Xtr) - len(tr),), -100)])
fam_mean = defaultdict(list)
for it in tr:
    fam_mean[(it.distortion, it.level)].append(it.score)
table = torch.tensor([np.mean(fam_mean[c]) for c in classes], dtype=torch.float32)


class WithAux(torch.nn.Module):
    """The quality model plus a linear (distortion, level) head on its pooled features; the
    forward returns the scores ``[N]`` (the quality head, unchanged) and the logits."""

    def __init__(self, quality, norm):
        super().__init__()
        self.quality, self.norm = quality, norm
        self.aux = torch.nn.Linear(quality.head.in_features, len(classes))

    def forward(self, x):
        f = self.quality.features(self.norm(x))
        return torch.sigmoid(self.quality.head(f)).squeeze(1), self.aux(f)


model = build("resnet", arch=a.arch)
if a.aux:
    model = WithAux(model, LocalContrastNorm() if a.norm == "lcn" else torch.nn.Identity())
elif a.norm == "lcn":
    model = torch.nn.Sequential(LocalContrastNorm(), model)
trained = model
if a.ema:
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(a.ema), use_buffers=True)
opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=1e-4)
sched = (torch.optim.lr_scheduler.OneCycleLR(opt, a.lr, total_steps=a.steps, pct_start=0.1)
         if a.steps else None)  # --steps 0: the pretraining alone  # fmt: skip
g = torch.Generator().manual_seed(a.seed)
H = Xtr.shape[-1]
families = defaultdict(list)
for k, it in enumerate(tr):
    families[(it.scene, it.distortion)].append(k)
families = [torch.tensor(v) for v in families.values()]


def batch():
    if a.groups:
        fam = torch.randint(len(families), (a.groups,), generator=g)
        idx = torch.cat([families[f] for f in fam])
        ij = torch.randint(H - a.crop + 1, (2, a.groups), generator=g)
        sizes = torch.tensor([len(families[f]) for f in fam])
        i, j = ij[0].repeat_interleave(sizes), ij[1].repeat_interleave(sizes)
        group = torch.arange(a.groups).repeat_interleave(sizes)
        x = torch.stack(
            [Xtr[k, :, u : u + a.crop, v : v + a.crop] for k, u, v in zip(idx, i, j, strict=True)]
        )
        return x.float() / 255, ytr[idx], group
    idx = torch.randint(len(Xtr), (a.batch,), generator=g)
    i, j = torch.randint(H - a.crop + 1, (2, a.batch), generator=g)
    x = torch.stack(
        [Xtr[k, :, u : u + a.crop, v : v + a.crop] for k, u, v in zip(idx, i, j, strict=True)]
    )
    flip = torch.rand(a.batch, generator=g) < 0.5
    x[flip] = x[flip].flip(-1)
    if a.aug == "dihedral":  # and a quarter turn k = 0..3 each (with the flip: all 8)
        turns = torch.randint(4, (a.batch,), generator=g)
        x = torch.stack([xi.rot90(int(k), (-2, -1)) for xi, k in zip(x, turns, strict=True)])
    return x.float() / 255, ytr[idx], cls_tr[idx]


def lossf(s, y, group=None, cls=None):
    if a.aux:  # s = (scores, logits)
        s, logits = s
        return F.mse_loss(s, y) + a.aux * F.cross_entropy(logits, cls)
    if group is not None:  # MSE + a hinge on every pair of one group ordered by its labels
        same = group[:, None] == group[None]
        d, dy = s[:, None] - s[None], y[:, None] - y[None]
        pairs = same & (dy > 0)
        rank = F.relu(0.02 - d[pairs]).mean()
        return F.mse_loss(s, y) + a.rank_weight * rank
    if a.loss == "mse":
        return F.mse_loss(s, y)
    sc, yc = s - s.mean(), y - y.mean()
    plcc = (sc * yc).sum() / (sc.norm() * yc.norm() + 1e-8)
    d, dy = s[:, None] - s[None], y[:, None] - y[None]
    rank = F.relu(-d * torch.sign(dy)).sum() / (dy != 0).sum().clamp(min=1)
    out = (1 - plcc) + rank
    if a.loss == "plcc+rank+mse":
        out = out + F.mse_loss(s, y)
    return out


def evaluate(X=None, y=None):
    X = Xte if X is None else X
    y = yte if y is None else y
    model = averaged.module if a.ema else trained
    model.eval()
    out, post = [], []
    with torch.no_grad():
        for k in range(0, len(X), 25):
            x = X[k : k + 25].float() / 255
            if a.test == "center":
                o = (H - a.crop) // 2
                x = x[..., o : o + a.crop, o : o + a.crop]
            if a.test == "patches":  # mean score over the non-overlapping crop-sized patches
                n, c = x.shape[0], a.crop
                x = x.unfold(2, c, c).unfold(3, c, c).permute(0, 2, 3, 1, 4, 5).reshape(-1, 3, c, c)
            else:
                n = x.shape[0]
            o = model(x)
            if a.aux:
                o, logits = o
                post.append(logits.softmax(1).view(n, -1, len(classes)).mean(1) @ table)
            out.append(o.view(n, -1).mean(1))
    model.train()
    s = torch.cat(out).numpy()
    result = [spearmanr(s, y)[0], pearsonr(s, y)[0]]
    if a.aux:
        result.append(spearmanr(torch.cat(post).numpy(), y)[0])
    return result


def pretrain_by_ranking():
    """--pretrain: RankIQA-style ranking of on-the-fly distortions of the training references.
    Its own generators, optimiser and one-cycle schedule, so that the main phase draws the same
    batches as a run without it."""
    lr = a.pretrain_lr or a.lr
    popt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    psched = torch.optim.lr_scheduler.OneCycleLR(popt, lr, total_steps=a.pretrain,
                                                 pct_start=0.1)  # fmt: skip
    t_start = time.time()
    for step in range(1, a.pretrain + 1):
        loss = ranking_loss()
        popt.zero_grad()
        loss.backward()
        popt.step()
        psched.step()
        if step % max(a.pretrain // 5, 1) == 0:
            srcc = evaluate()[0]
            print(f"pretrain {step} {time.time() - t_start:.0f}s hinge {loss.item():.4f} "
                  f"held-out srcc {srcc:.3f}", flush=True)  # fmt: skip


_rank_state = {}


def ranking_loss():
    """One ranking batch: --pretrain-crops crops of the training references, each distorted
    by one random type at 4 random strengths between its levels 1 and 5, plus the clean crop;
    a hinge (margin 0.05) on every pair of one crop's versions ordered by strength."""
    from cprl_fast.data.distortions import LEVELS_V2, distort_by

    if not _rank_state:
        scenes = sorted({it.scene for it in tr})
        root = tr[0].path.rsplit("/images/", 1)[0]
        _rank_state["refs"] = [Image.open(f"{root}/refs/{s}.png").convert("RGB") for s in scenes]
        _rank_state["rng"] = np.random.default_rng(2000 + a.seed)
    refs, rng, kinds = _rank_state["refs"], _rank_state["rng"], sorted(LEVELS_V2)
    c, pad = a.crop, a.crop // 4  # distort a larger crop, keep its centre: no border effects
    xs, strength = [], []
    for _ in range(a.pretrain_crops):
        ref = refs[rng.integers(len(refs))]
        u, v = rng.integers(0, ref.size[0] - c - 2 * pad + 1, size=2)
        big = ref.crop((int(u), int(v), int(u) + c + 2 * pad, int(v) + c + 2 * pad))
        kind = kinds[rng.integers(len(kinds))]
        levels = LEVELS_V2[kind]
        ts = np.sort(rng.uniform(0, 4, size=4))  # strength: 0 = level 1, 4 = level 5
        versions = [big] + [distort_by(big, kind, float(np.interp(t, range(5), levels)),
                                       seed=int(rng.integers(2**31))) for t in ts]  # fmt: skip
        for img in versions:
            arr = np.asarray(img)[pad : pad + c, pad : pad + c]
            xs.append(torch.from_numpy(arr.copy()).permute(2, 0, 1))
        strength.append(np.concatenate([[-1.0], ts]))
    x = torch.stack(xs).float() / 255
    if rng.random() < 0.5:
        x = x.flip(-1)
    out = model(x)
    scores = (out[0] if isinstance(out, tuple) else out).view(a.pretrain_crops, 5)
    st = torch.tensor(np.stack(strength), dtype=torch.float32)
    d = scores[:, :, None] - scores[:, None, :]  # d[i, j] = s_i - s_j
    weaker = st[:, :, None] < st[:, None, :]  # version i is less distorted than j
    return F.relu(0.05 - d[weaker]).mean()


def test_scores(m):
    """The held-out images' scores by model ``m`` (no auxiliary head), as ``--test`` scores."""
    m.eval()
    out = []
    with torch.no_grad():
        for k in range(0, len(Xte), 25):
            x = Xte[k : k + 25].float() / 255
            n = x.shape[0]
            if a.test == "patches":
                c = a.crop
                x = x.unfold(2, c, c).unfold(3, c, c).permute(0, 2, 3, 1, 4, 5).reshape(-1, 3, c, c)
            out.append(m(x).view(n, -1).mean(1))
    return torch.cat(out).numpy()


pretrained_scores = None
if a.pretrain:
    pretrain_by_ranking()
    if not a.aux:  # kept for the ensemble of the ranker and the fine-tuned model (JSON line)
        pretrained_scores = test_scores(model)
        model.train()
t0 = time.time()
log = []
if not a.steps:  # the pretrained model as it is (its score head ranks; no label was seen)
    srcc, plcc, *posterior = evaluate()
for step in range(1, a.steps + 1):
    x, y, extra = batch()
    if a.groups:
        loss = lossf(model(x), y, group=extra)
    else:
        loss = lossf(model(x), y, cls=extra)
    if a.joint:
        loss = loss + a.joint * ranking_loss()
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()
    if a.ema:
        averaged.update_parameters(model)
    if step % max(a.steps // 5, 1) == 0 or step == a.steps:
        srcc, plcc, *posterior = evaluate()
        sub = torch.arange(0, len(Xtr), 4)
        tr_srcc = evaluate(Xtr[sub], ytr[sub].numpy())[0]
        log.append((step, round(time.time() - t0), round(srcc, 3)))
        print(
            step,
            f"{time.time() - t0:.0f}s loss {loss.item():.3f} srcc {srcc:.3f} plcc {plcc:.3f} "
            f"train {tr_srcc:.3f}" + (f" posterior {posterior[0]:.3f}" if posterior else ""),
            flush=True,
        )
ensemble = {}
if a.fr and not a.aux:  # the same model against the labels of --label fr-mean
    ensemble["srcc_fr"] = spearmanr(test_scores(trained), fr_mean(te))[0]
    ensemble["labels_srcc"] = spearmanr(fr_mean(te), yte)[0]  # fr-mean against MS-SSIM
if pretrained_scores is not None and a.steps:  # the ranker alone, and its ranks + the model's
    ensemble = {"srcc_pretrained": spearmanr(pretrained_scores, yte)[0],
                "srcc_ensemble": spearmanr(rankdata(pretrained_scores)
                                           + rankdata(test_scores(trained)), yte)[0]}  # fmt: skip
print(
    json.dumps(
        {
            **{k: v for k, v in vars(a).items() if k != "table"},
            "srcc": srcc,
            "plcc": plcc,
            **({"srcc_posterior": posterior[0]} if posterior else {}),
            **ensemble,
            "seconds": time.time() - t0,
            "log": log,
        }
    ),
    flush=True,
)
