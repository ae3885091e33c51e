"""The run layer: what the commands (``cprl-fast train/evaluate/reproduce/demo``) share.

- :func:`load_trained`: a checkpoint written by the trainer -> its model (built from the
  model card in the checkpoint: model, options, objective) and config, named by its run folder.
- :func:`load_run_splits`: the train and test splits of a run's dataset, its score file read
  once.
- :func:`draw_figures`: the figure set (Figs 4-6 of the paper) for a set of models.
- Atomic writes are :mod:`cprl_fast.io`'s.

The command modules (``cli.py``, ``reproduce.py``) only parse, call these and print.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cprl_fast.checks import check_device
from cprl_fast.train import TrainConfig, build_model
from cprl_fast.train.checkpoint import load


@dataclass
class Trained:
    """A trained model as a checkpoint holds it."""

    name: str
    model: nn.Module
    config: TrainConfig
    path: Path


def parse_named_path(text: str) -> tuple[str | None, Path]:
    """``"name=path"`` -> ``(name, path)``; a plain ``"path"`` -> ``(None, path)``."""
    name, sep, path = str(text).partition("=")
    if sep and name and "/" not in name:
        return name, Path(path)
    return None, Path(text)


def load_trained(path: str | Path, device: str | torch.device = "cpu",
                 name: str | None = None) -> Trained:  # fmt: skip
    """The model of a checkpoint written by ``cprl-fast train``, in eval mode on ``device``.

    ``name`` defaults to the run folder's name (``runs/cprl-a/best.pt`` -> ``cprl-a``).
    """
    path = Path(path)
    device = check_device(device)
    state = load(path, map_location=device)
    data = json.loads(state["config"])
    data["model_options"] = {**data.get("model_options", {}), "pretrained": None}
    data["device"] = str(device)  # where it is loaded now, not where it was trained
    cfg = TrainConfig.from_dict(data)
    model = build_model(cfg).to(device)
    model.load_state_dict(state["model"])
    return Trained(name or path.resolve().parent.name, model.eval(), cfg, path)


def load_run_splits(cfg: TrainConfig, splits=("train", "test"), dataset: str | None = None,
                    root: str | None = None) -> dict:  # fmt: skip
    """The splits of the run's dataset (or ``dataset`` under ``root``) with its split file, seed
    and image size."""
    from cprl_fast.data import load_splits

    return load_splits(dataset or cfg.dataset, root or cfg.root, tuple(splits),
                       split_file=cfg.split_file, seed=cfg.split_seed,
                       val_ratio=cfg.val_ratio, folds=cfg.folds, fold=cfg.fold,
                       image_size=cfg.image_size)  # fmt: skip


FIGURES = ("fig4_landscape", "fig5_channels", "fig6_srcc_vs_eps")
#: One caption per figure, written under it in every report.
CAPTIONS = {
    "fig4_landscape": "Fig. 4: predicted quality of one test image moved along its FGSM "
    "direction and a random direction (in grey levels, /255). A flatter surface means the "
    "score moves less under small perturbations.",
    "fig5_channels": "Fig. 5: mean activation per channel of each model's last residual "
    "block (its CA module's output for CPRL) on up to 8 natural test images and on their "
    "PGD versions (eps = 4/255), "
    "channels sorted by their natural activation. Curves that stay together mean the attack "
    "changes the features less.",
    "fig6_srcc_vs_eps": "Fig. 6: test SRCC under 10-step PGD against the budget eps (/255); "
    "lower curves are less robust.",
}


def figure_markdown(folder: str = "figures") -> list[str]:
    """Each figure as a markdown image with its caption, for a report."""
    out = []
    for f in FIGURES:
        out += [f"![{f}]({folder}/{f}.png)", "", f"*{CAPTIONS[f]}*", ""]
    return out


def draw_figures(models: dict[str, nn.Module], dataset, out_dir: str | Path,
                 batch_size: int = 16, device: str | torch.device = "cpu") -> dict:  # fmt: skip
    """Figs 4 (score landscape), 5 (channel activations) and 6 (SRCC vs eps) for ``models`` on
    ``dataset``, as ``out_dir/<figure>.png``; returns Fig. 6's data."""
    from cprl_fast import figures

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    x = dataset[0][0][None].to(device)
    batch = torch.stack([dataset[i][0] for i in range(min(8, len(dataset)))]).to(device)
    figures.score_landscape(models, x, out / "fig4_landscape.png")
    layers = {n: (m, figures.default_layer(m)) for n, m in models.items()}
    figures.channel_activations(layers, batch, out / "fig5_channels.png")
    return figures.srcc_vs_eps(models, dataset, out / "fig6_srcc_vs_eps.png",
                               batch_size=batch_size, device=device)  # fmt: skip
