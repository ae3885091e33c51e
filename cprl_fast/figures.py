"""The paper's figures as PNG files (matplotlib, headless), each also returning its data.

- :func:`score_landscape` (Fig. 4): a model's score over the plane ``x + a*d1 + b*d2`` spanned by
  the FGSM direction ``d1 = sign(grad)`` and a random sign direction ``d2``, for two models side by
  side.
- :func:`channel_activations` (Fig. 5): the per-channel mean activation of one layer for natural
  and attacked inputs, channels sorted by their natural magnitude.
- :func:`srcc_vs_eps` (Fig. 6): SRCC against attack strength for several models (its data
  from :func:`srcc_vs_eps_data`, drawn by :func:`plot_srcc_vs_eps`).
- :func:`draw_figures`: the three for a set of models, as a report's figure set with
  :data:`CAPTIONS` (:func:`figure_markdown` writes them into the report).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from cprl_fast import attacks, metrics
from cprl_fast.attacks.common import eval_mode, input_grad, targets
from cprl_fast.attacks.losses import mse_loss
from cprl_fast.io import atomic_write
from cprl_fast.reports import eps_label

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from cprl_fast.evaluate import PredictionMemo, Progress

#: Fig. 6's budgets (pixel units) and attack.
FIG6_EPS = (0, 1 / 255, 2 / 255, 4 / 255, 8 / 255)
FIG6_ATTACK = "pgd"


def new_figure(**figure) -> Figure:
    """A matplotlib figure of its own (``figure``: :class:`matplotlib.figure.Figure`'s options,
    such as ``figsize`` in inches), written by :func:`save_figure` and never shown. pyplot is
    not used: it would switch the process's backend (a notebook's inline one) to draw files and
    keep every figure in its global list until closed."""
    from matplotlib.figure import Figure

    return Figure(**figure)


def save_figure(fig, path: str | Path, **savefig) -> None:
    """Writes ``fig`` (at 120 dpi, cropped to its contents, then ``savefig``'s options) to
    ``path`` atomically (:func:`~cprl_fast.io.atomic_write`: processes sharing a study may
    write the same figure, and a link at ``path`` is replaced, never written through)."""
    options = {"dpi": 120, "bbox_inches": "tight", **savefig}
    atomic_write(path, lambda tmp: fig.savefig(tmp, **options), Path(path).suffix)


def landscape(model: nn.Module, x: torch.Tensor, extent: float, steps: int = 21,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Scores ``[steps, steps]`` of ``model`` at ``clip(x + a*d1 + b*d2, 0, 1)`` for ``a, b`` in
    ``[-extent, extent]`` (rows: a along the FGSM direction), for one image ``x [1, 3, H, W]``."""
    with eval_mode(model):
        y = targets(model, x, None)
        d1 = torch.sign(input_grad(model, x, y + 0.5, mse_loss))  # away from the clean score
        g = torch.Generator().manual_seed(seed)
        d2 = (torch.rand(x.shape, generator=g) < 0.5).to(x.dtype).to(x.device) * 2 - 1
        grid = np.linspace(-extent, extent, steps)
        out = np.zeros((steps, steps))
        with torch.no_grad():
            for i, a in enumerate(grid):
                batch = torch.cat([(x + a * d1 + b * d2).clamp(0, 1) for b in grid])
                out[i] = model(batch).float().cpu().numpy()
    return grid, out


def caption_title(fig, caption: str | None) -> None:
    """The figure's caption as its title (wrapped), so the image says what it shows alone."""
    if caption:
        import textwrap

        fig.suptitle(textwrap.fill(caption, 110), fontsize=8, y=1.0, va="bottom")


def score_landscape(models: dict[str, nn.Module], x: torch.Tensor, path: str | Path,
                    extent: float = 8 / 255, steps: int = 21,
                    caption: str | None = None) -> dict:  # fmt: skip
    """Fig. 4: one surface per model, side by side, on one z range (the panels compare), with
    the clean image marked (a red point at the centre)."""
    from matplotlib.ticker import MaxNLocator

    data = {name: landscape(m, x, extent, steps) for name, m in models.items()}
    lo = min(float(z.min()) for _, z in data.values())
    hi = max(float(z.max()) for _, z in data.values())
    pad = max(1e-3, 0.05 * (hi - lo))
    fig = new_figure(figsize=(5 * len(models), 4.4))
    for k, (name, (grid, z)) in enumerate(data.items()):
        # drawn in call order (the clean point stays on top of the surface)
        ax = fig.add_subplot(1, len(models), k + 1, projection="3d", computed_zorder=False)
        a, b = np.meshgrid(grid * 255, grid * 255, indexing="ij")
        ax.plot_surface(a, b, z, cmap="viridis", vmin=lo, vmax=hi, alpha=0.85, zorder=1)
        centre = len(grid) // 2
        ax.scatter([0], [0], [z[centre, centre]], color="red", s=40, depthshade=False,
                   edgecolors="white", zorder=10, label="clean image")  # fmt: skip
        ax.set_zlim(lo - pad, hi + pad)
        for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
            axis.set_major_locator(MaxNLocator(4))
        ax.tick_params(labelsize=7)
        ax.set(title=name, xlabel="FGSM direction (/255)", ylabel="random direction (/255)",
               zlabel="predicted quality")  # fmt: skip
        ax.set_box_aspect(None, zoom=0.85)  # room for the axis labels inside the frame
        if k == 0:
            ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    caption_title(fig, caption)
    save_figure(fig, path, pad_inches=0.3)
    return {name: {"grid": grid.tolist(), "scores": z.tolist()} for name, (grid, z) in data.items()}


def default_layer(model: nn.Module) -> nn.Module:
    """The layer Fig. 5 shows: the last residual block of a ResNet-based model (its CA module's
    output for CPRL), else the model's last convolutional stage."""
    backbone = getattr(model, "backbone", None)
    if backbone is not None and hasattr(backbone, "layer4"):
        return backbone.layer4[-1]
    if hasattr(model, "vgg"):
        return model.vgg
    raise ValueError(f"no default layer for Fig. 5 in a {type(model).__name__}")


def layer_means(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> np.ndarray:
    """Mean output of ``layer`` per channel (over batch and space) when ``model`` sees ``x``."""
    seen = {}
    handle = layer.register_forward_hook(lambda m, i, o: seen.__setitem__("out", o.detach()))
    try:
        with torch.no_grad(), eval_mode(model):
            model(x)
    finally:
        handle.remove()
    return seen["out"].float().mean(dim=(0, 2, 3)).cpu().numpy()


def channel_activations(models: dict[str, tuple[nn.Module, nn.Module]], x: torch.Tensor,
                        path: str | Path, eps: float = 4 / 255,
                        caption: str | None = None) -> dict:  # fmt: skip
    """Fig. 5: for each ``name -> (model, layer)``, the layer's channel means for natural images
    and for their PGD versions, channels sorted by natural magnitude (descending); the panels
    share their y axis, and the attacked curve is drawn dashed over the natural one."""
    out = {}
    fig = new_figure(figsize=(5 * len(models), 3.6))
    axes = fig.subplots(1, len(models), squeeze=False, sharey=True)
    for ax, (name, (model, layer)) in zip(axes[0], models.items(), strict=True):
        x_adv = attacks.pgd(model, x, eps=eps, steps=10, generator=torch.Generator().manual_seed(0))
        natural, attacked = layer_means(model, layer, x), layer_means(model, layer, x_adv)
        order = np.argsort(-np.abs(natural), kind="stable")
        out[name] = {"natural": natural[order].tolist(), "attacked": attacked[order].tolist()}
        ax.plot(natural[order], label="natural", lw=2.5, color="tab:blue")
        ax.plot(attacked[order], label=f"PGD, eps={eps_label(eps)}", lw=1, ls="--",
                color="tab:red")  # fmt: skip
        ax.set(title=name, xlabel="channel (sorted by natural activation)")
        ax.legend(fontsize=7, loc="upper right")
    axes[0][0].set_ylabel("mean activation")
    fig.tight_layout()
    caption_title(fig, caption)
    save_figure(fig, path)
    return out


def srcc_vs_eps(models: dict[str, nn.Module], dataset, path: str | Path,
                eps_values: Sequence[float] = FIG6_EPS, attack: str = FIG6_ATTACK,
                batch_size: int = 16, device="cpu", caption: str | None = None,
                memo: PredictionMemo | None = None,
                progress: Progress | None = None) -> dict:  # fmt: skip
    """Fig. 6: SRCC of each model on ``dataset`` under ``attack`` at each eps, with its 95%
    bootstrap interval over the images as a band (``ci`` in the returned data):
    :func:`srcc_vs_eps_data`, then :func:`plot_srcc_vs_eps` to ``path``."""
    data = srcc_vs_eps_data(models, dataset, eps_values, attack, batch_size, device, memo,
                            progress)  # fmt: skip
    plot_srcc_vs_eps(data, path, attack, caption)
    return data


def srcc_vs_eps_data(models: dict[str, nn.Module], dataset,
                     eps_values: Sequence[float] = FIG6_EPS, attack: str = FIG6_ATTACK,
                     batch_size: int = 16, device="cpu", memo: PredictionMemo | None = None,
                     progress: Progress | None = None) -> dict:  # fmt: skip
    """Fig. 6's data: ``{"eps": [...], "srcc": {model: [SRCC per eps]}, "ci": {model: [[low,
    high] per eps]}}``, SRCC of each model on ``dataset`` under ``attack`` (pixel units, [0,
    1] images) and its 95% bootstrap interval over the images. ``memo``: predictions a run
    already made, ``progress``: told of each batch scored (both as
    :func:`cprl_fast.evaluate.predictions` takes them). Each image is decoded once for every
    model and eps (:func:`cprl_fast.data.decoded_once`)."""
    from cprl_fast.data.decoded import decoded_once
    from cprl_fast.evaluate import predictions

    dataset = decoded_once(dataset)
    curves, bands = {}, {}
    for name, model in models.items():
        curves[name], bands[name] = [], []
        for eps in eps_values:
            pred, y = predictions(model, dataset, attack, eps, batch_size, device, memo=memo,
                                  progress=progress)  # fmt: skip
            curves[name].append(metrics.srcc(pred, y))
            bands[name].append(list(metrics.confidence_interval(pred, y)))
    return {"eps": list(eps_values), "srcc": curves, "ci": bands}


def plot_srcc_vs_eps(data: dict, path: str | Path, attack: str = FIG6_ATTACK,
                     caption: str | None = None) -> None:  # fmt: skip
    """Draws Fig. 6 from :func:`srcc_vs_eps_data`'s ``data`` (or its JSON, where an undefined
    SRCC is ``null``) to ``path``."""
    fig = new_figure(figsize=(6.5, 3.8))
    ax = fig.subplots()
    x = [e * 255 for e in data["eps"]]
    for name, values in data["srcc"].items():
        (line,) = ax.plot(x, np.array(values, dtype=float), marker="o", label=name)
        band = np.array(data["ci"][name], dtype=float).reshape(-1, 2)
        ax.fill_between(x, band[:, 0], band[:, 1], color=line.get_color(), alpha=0.15)
    ax.set(xlabel=f"{attack} budget eps (/255)", ylabel="SRCC (band: 95% interval)",
           title="SRCC against attack strength")  # fmt: skip
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # off the data
    fig.tight_layout()
    caption_title(fig, caption)
    save_figure(fig, path)


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


def _number(v: object) -> bool:
    return v is None or (isinstance(v, int | float) and not isinstance(v, bool))


def check_fig6_data(data: object, models: list[str]) -> None:
    """Raises ``ValueError`` unless ``data`` is Fig. 6's data of exactly ``models`` at
    :data:`FIG6_EPS` (:func:`srcc_vs_eps_data`'s form, or its JSON: per model and eps an SRCC,
    or null, and a [low, high] pair), naming what differs."""

    def fail(what: str) -> None:
        raise ValueError(f"Fig. 6's data {what}; expected that of {sorted(models)} at eps "
                         f"{list(FIG6_EPS)} (srcc_vs_eps_data)")  # fmt: skip

    if not isinstance(data, dict) or data.get("eps") != list(FIG6_EPS):
        fail("is for other eps")
    each = {
        "srcc": _number,
        "ci": lambda v: isinstance(v, list) and len(v) == 2 and all(map(_number, v)),
    }
    for key, ok in each.items():
        part = data.get(key)
        if not isinstance(part, dict) or sorted(part) != sorted(models):
            fail(f"has {key} of other models")
        for name, values in part.items():
            if not (isinstance(values, list) and len(values) == len(FIG6_EPS)
                    and all(map(ok, values))):  # fmt: skip
                fail(f"has a malformed {key} of {name!r}")


def draw_figures(models: dict[str, nn.Module], dataset, out_dir: str | Path,
                 batch_size: int = 16, device: str | torch.device = "cpu",
                 memo: PredictionMemo | None = None, progress: bool = True,
                 fig6: dict | None = None) -> dict:  # fmt: skip
    """Figs 4 (score landscape), 5 (channel activations) and 6 (SRCC vs eps) for ``models`` on
    ``dataset``, as ``out_dir/<figure>.png``; returns Fig. 6's data. ``memo``: predictions the
    run already made (:func:`cprl_fast.evaluate.predictions`), reused by Fig. 6. ``progress``:
    a bar that names the figure being drawn and counts Fig. 6's images still to score (its
    passes that ``memo`` does not hold). ``fig6``: Fig. 6's data from an earlier run of the
    same models (:func:`srcc_vs_eps_data`'s, keyed by :data:`FIG6_ATTACK` and
    :data:`FIG6_EPS`), drawn instead of attacking again: its PGD passes are most of the
    figures' work."""
    from tqdm import tqdm

    from cprl_fast.data.decoded import decoded_once
    from cprl_fast.evaluate import bar_progress, passes_to_score

    if fig6 is not None:
        check_fig6_data(fig6, list(models))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dataset, memo = decoded_once(dataset), {} if memo is None else memo
    planned = [(FIG6_ATTACK, e) for e in FIG6_EPS] if fig6 is None else []
    passes = sum(passes_to_score(m, dataset, planned, batch_size, device, memo=memo)
                 for m in models.values())  # fmt: skip
    with tqdm(total=passes * len(dataset), desc="figures: Fig. 4", unit="img",
              disable=not progress) as bar:  # fmt: skip
        x = dataset[0][0][None].to(device)
        batch = torch.stack([dataset[i][0] for i in range(min(8, len(dataset)))]).to(device)
        score_landscape(models, x, out / "fig4_landscape.png", caption=CAPTIONS["fig4_landscape"])
        bar.set_description("figures: Fig. 5")
        layers = {n: (m, default_layer(m)) for n, m in models.items()}
        channel_activations(layers, batch, out / "fig5_channels.png",
                            caption=CAPTIONS["fig5_channels"])  # fmt: skip
        bar.set_description("figures: Fig. 6")
        if fig6 is None:
            told = bar_progress(bar, "figures: Fig. 6")
            fig6 = srcc_vs_eps_data(models, dataset, batch_size=batch_size, device=device,
                                    memo=memo, progress=told)  # fmt: skip
        plot_srcc_vs_eps(fig6, out / "fig6_srcc_vs_eps.png", caption=CAPTIONS["fig6_srcc_vs_eps"])
        return fig6
