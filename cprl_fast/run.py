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

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cprl_fast.checks import check_device
from cprl_fast.models.cprl_resnet import ARCHS
from cprl_fast.models.registry import option_defaults, option_names, weights_options
from cprl_fast.train import TrainConfig, build_model
from cprl_fast.train.checkpoint import card_config, load


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
    """The model of a checkpoint written by ``cprl-fast train`` (or ``export``), in eval mode on
    ``device``. The checkpoint is data: its card is validated (registered names, every number
    within its documented bounds) and compared with the weights on the meta device before
    anything is allocated; options that only initialise weights (a pretrained file, DBCNN's
    S-CNN pre-training) are not run, since the weights replace what they would make.

    ``name`` defaults to the run folder's name (``runs/cprl-a/best.pt`` -> ``cprl-a``).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"checkpoint not found: {path} (no pretrained weights are distributed: train one "
            "with cprl-fast train and pass its best.pt)"
        )
    device = check_device(device)
    state = load(path, map_location="cpu")
    cfg = card_train_config(state, path)
    weights = state["model"]
    with torch.device("meta"):
        skeleton = build_model(cfg, for_weights=True)
    _check_weights(skeleton, weights, cfg, path)
    model = build_model(cfg, for_weights=True)
    model.load_state_dict(weights)
    cfg = dataclasses.replace(cfg, device=str(device))  # where it is loaded, not where it trained
    return Trained(name or path.resolve().parent.name, model.to(device).eval(), cfg, path)


def card_train_config(state: dict, path: str | Path) -> TrainConfig:
    """The run config of a checkpoint's model card, validated (one line naming the field on
    error); the device is left at ``cpu`` (where a checkpoint is loaded is the caller's)."""
    data = card_config(state)
    data.pop("device", None)
    for key in ("model_options", "objective_options"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise ValueError(f"checkpoint {path}: model card field {key} must be an object, got "
                             f"{type(data[key]).__name__}")  # fmt: skip
    for key in ("dataset", "root", "split_file", "model", "objective", "out_dir"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise ValueError(f"checkpoint {path}: model card field {key} must be a string, got "
                             f"{type(data[key]).__name__}")  # fmt: skip
    try:
        return TrainConfig.from_dict(data)
    except (ValueError, TypeError) as err:
        raise ValueError(f"checkpoint {path}: model card: {err}") from None


def _shapes(state: dict) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def _check_weights(skeleton: nn.Module, weights: dict, cfg: TrainConfig, path: Path) -> None:
    """Refuses weights that are not those of the card's model: naming the card's arch and the
    weights' where another arch fits them, else the first differing key with both shapes and
    the card's fields that decide the architecture (all built on the meta device)."""
    want = _shapes(skeleton.state_dict())
    got = _shapes(weights)
    if want == got:
        return
    arch = cfg.model_options.get("arch", option_defaults(cfg.model).get("arch"))
    for other in (a for a in ARCHS if a != arch and "arch" in option_names(cfg.model)):
        with torch.device("meta"):
            candidate = dataclasses.replace(
                cfg, model_options={**cfg.model_options, "arch": other})
            if _shapes(build_model(candidate, for_weights=True).state_dict()) == got:
                raise ValueError(f"checkpoint {path}: the model card says arch={arch!r}, the "
                                 f"weights are those of arch={other!r}")  # fmt: skip
    card = {"model": cfg.model, **weights_options(cfg.model_options)}
    fields = ", ".join(f"{k}={v!r}" for k, v in card.items())
    first = next((k for k in want if k in got and want[k] != got[k]), None)
    if first is not None:
        what = (f"{first!r}: the card's model has {list(want[first])}, the weights "
                f"{list(got[first])}")  # fmt: skip
    else:
        missing = next((k for k in want if k not in got), None)
        if missing is not None:
            what = f"{missing!r} is in the card's model but not in the weights"
        else:
            extra = next(k for k in got if k not in want)
            what = f"{extra!r} is in the weights but not in the card's model"
    raise ValueError(f"checkpoint {path}: the model card ({fields}) disagrees with the weights: "
                     f"{what}")  # fmt: skip


def load_run_splits(cfg: TrainConfig, splits=("train", "test"), dataset: str | None = None,
                    root: str | None = None, from_card: bool = False) -> dict:  # fmt: skip
    """The splits of the run's dataset (or ``dataset`` under ``root``) with its split file, seed
    and image size. ``from_card``: ``cfg`` comes from a checkpoint's model card, whose paths
    are only read, never written: its split file is used if it exists (else the split is
    recomputed from its seed in memory), and its dataset root only if the dataset is already
    there (a built-in dataset missing there is generated in the default cache instead)."""
    from cprl_fast.data import load_splits
    from cprl_fast.data.builtin import is_generated

    name = dataset or cfg.dataset
    split_file, data_root = cfg.split_file, root or cfg.root
    if from_card:
        if split_file is not None and not Path(split_file).is_file():
            split_file = None
        if root is None and name.startswith("builtin") and cfg.root is not None \
                and not is_generated(name, cfg.root):  # fmt: skip
            data_root = None
    return load_splits(name, data_root, tuple(splits), split_file=split_file,
                       seed=cfg.split_seed, val_ratio=cfg.val_ratio, folds=cfg.folds,
                       fold=cfg.fold, image_size=cfg.image_size)  # fmt: skip


FIGURES = ("fig4_landscape", "fig5_channels", "fig6_srcc_vs_eps")
#: One caption per figure, written under it in every report.
CAPTIONS = {
    "fig4_landscape": "Fig. 4: predicted quality of one test image moved along its FGSM "
    "direction and a random direction (in grey levels, /255; the red point is the clean "
    "image; one z range for all panels). A flatter surface means the score moves less under "
    "small perturbations.",
    "fig5_channels": "Fig. 5: mean activation per channel of each model's last residual "
    "block (its CA module's output for CPRL) on up to 8 natural test images and on their "
    "PGD versions (eps = 4/255), "
    "channels sorted by their natural activation. Curves that stay together mean the attack "
    "changes the features less.",
    "fig6_srcc_vs_eps": "Fig. 6: test SRCC under 10-step PGD against the budget eps (/255), "
    "with 95% bootstrap intervals over the test images as bands; lower curves are less robust.",
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
    figures.score_landscape(models, x, out / "fig4_landscape.png",
                            caption=CAPTIONS["fig4_landscape"])  # fmt: skip
    layers = {n: (m, figures.default_layer(m)) for n, m in models.items()}
    figures.channel_activations(layers, batch, out / "fig5_channels.png",
                                caption=CAPTIONS["fig5_channels"])  # fmt: skip
    return figures.srcc_vs_eps(models, dataset, out / "fig6_srcc_vs_eps.png",
                               batch_size=batch_size, device=device,
                               caption=CAPTIONS["fig6_srcc_vs_eps"])  # fmt: skip
